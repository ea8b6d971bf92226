"""VISA (reasoning video object segmentation): Chat-UniVi LLaMA + CLIP/CTM visual tokens + [SEG] -> SAM.

Modules: ``ctm`` (Chat-UniVi density-peak token merging), ``vision`` (CLIP preprocessing, tower, merging,
projector), ``prompt`` (llava_v1 prompt, image placeholders, [SEG] position), ``modeling`` (``VisaModel``),
``checkpoint`` (loading a merged VISA directory + ``sam_vit_h_4b8939.pth`` + a CLIP directory).
"""
