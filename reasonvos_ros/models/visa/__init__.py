"""VISA (reasoning video object segmentation): Chat-UniVi LLaMA + CLIP/CTM visual tokens + [SEG] -> SAM.

Modules: ``ctm`` (Chat-UniVi density-peak token merging), ``vision`` (CLIP preprocessing, tower, merging,
projector), ``prompt`` (llava_v1 prompt, image placeholders, [SEG] position), ``tokenizer`` (LLaMA tokenisation with
transformers 4.31 slow-tokenizer semantics), ``modeling`` (``VisaModel``), ``checkpoint`` (loading a merged VISA
directory + ``sam_vit_h_4b8939.pth`` + a CLIP directory), ``tiny`` (a random-weight checkpoint in the same on-disk
layout, for tests and benchmarks). The pipeline backend is ``reasonvos_ros.backends.visa_segmenter``.
"""
