"""Tiny random checkpoints of every model class the VLM segmenter uses, in the Hugging Face on-disk layout.

* ``build_tiny_qwen_vl(path, family)``: Qwen2.5-VL (``models.tfs.tiny``'s writer) or Qwen3-VL (here), with a small
  byte-level BPE tokenizer carrying Qwen's special tokens, ``config.json`` + ``model.safetensors`` +
  ``generation_config.json`` + ``preprocessor_config.json``.
* ``build_tiny_sam(path, kind)``: ``Sam2Model`` ("sam2"), ``Sam3TrackerModel`` ("sam3_tracker") or the
  text-prompted ``Sam3Model`` ("sam3", with a small tokenizer) at a small
  image size with few, narrow layers, saved with ``save_pretrained`` (config.json + model.safetensors) and a
  ``preprocessor_config.json`` giving the image size and normalisation like the real repositories do.

Weights are random from a fixed seed: outputs are meaningless, the loading and inference paths are the real ones.
"""

from __future__ import annotations

import json
from pathlib import Path

VLM_FAMILIES = ("qwen2_5_vl", "qwen3_vl")
SAM_KINDS = ("sam2", "sam3_tracker", "sam3")


def build_tiny_qwen_vl(path: str | Path, family: str = "qwen3_vl", seed: int = 0, hidden_size: int = 64) -> Path:
    """Write a tiny random Qwen2.5-VL or Qwen3-VL checkpoint to ``path``; return the path."""
    import torch

    if family not in VLM_FAMILIES:
        raise ValueError(f"unknown tiny VLM family {family!r}; expected one of {', '.join(VLM_FAMILIES)}")
    path = Path(path)
    if family == "qwen2_5_vl":
        from ..tfs.tiny import build_tiny_video_llm

        return build_tiny_video_llm(path, family="qwen2_5_vl", seed=seed, hidden_size=hidden_size)
    from transformers import Qwen3VLConfig, Qwen3VLForConditionalGeneration

    from ..tfs.tiny import build_tiny_tokenizer, save_tiny_checkpoint, tiny_text_config, vision_token_ids

    path.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tiny_tokenizer(path)
    head_dim = 16
    text_config = tiny_text_config(tokenizer, hidden_size, num_layers=2, num_heads=4, head_dim=head_dim)
    # Qwen3-VL states the head width (it need not be hidden / heads) and interleaves the M-RoPE sections.
    text_config["head_dim"] = head_dim
    text_config["rope_parameters"]["mrope_interleaved"] = True
    vision_config = {
        "depth": 2,
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_heads": 2,
        "patch_size": 16,
        "spatial_merge_size": 2,
        "temporal_patch_size": 2,
        "out_hidden_size": hidden_size,
        "num_position_embeddings": 144,
        "deepstack_visual_indexes": [0],
    }
    config = Qwen3VLConfig(text_config=text_config, vision_config=vision_config, **vision_token_ids(tokenizer))
    torch.manual_seed(seed)
    model = Qwen3VLForConditionalGeneration(config).eval()
    preprocessor = {
        "patch_size": 16,
        "temporal_patch_size": 2,
        "merge_size": 2,
        "image_mean": [0.5, 0.5, 0.5],
        "image_std": [0.5, 0.5, 0.5],
        "image_processor_type": "Qwen2VLImageProcessorFast",
        "processor_class": "Qwen3VLProcessor",
    }
    return save_tiny_checkpoint(model, tokenizer, path, preprocessor)


def build_tiny_sam(path: str | Path, kind: str = "sam2", seed: int = 0, image_size: int = 256) -> Path:
    """Write a tiny random ``Sam2Model`` or ``Sam3TrackerModel`` checkpoint to ``path``; return the path."""
    import torch

    if kind not in SAM_KINDS:
        raise ValueError(f"unknown tiny SAM kind {kind!r}; expected one of {', '.join(SAM_KINDS)}")
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    if kind == "sam2":
        from transformers import Sam2Config, Sam2Model

        backbone = {
            "model_type": "sam2_hiera_det_model",
            "hidden_size": 16,
            "num_attention_heads": 1,
            "image_size": [image_size, image_size],
            "blocks_per_stage": [1, 1, 2, 1],
            "embed_dim_per_stage": [16, 32, 64, 128],
            "num_attention_heads_per_stage": [1, 1, 2, 2],
            "window_size_per_stage": [8, 4, 4, 4],
            "global_attention_blocks": [3],  # not a stage's first block (q-pooling + global crashes)
            "window_positional_embedding_background_size": [4, 4],
        }
        quarter = image_size // 4
        config = Sam2Config(
            vision_config={
                "backbone_config": backbone,
                "backbone_channel_list": [128, 64, 32, 16],
                "backbone_feature_sizes": [[quarter, quarter], [quarter // 2, quarter // 2], [quarter // 4] * 2],
                "fpn_hidden_size": 32,
            },
            prompt_encoder_config={"hidden_size": 32, "image_size": image_size, "patch_size": 16},
            mask_decoder_config={"hidden_size": 32, "mlp_dim": 64, "num_attention_heads": 2, "iou_head_hidden_dim": 32},
        )
        model = Sam2Model(config).eval()
        mean, std = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
    elif kind == "sam3":
        from transformers import Sam3Config, Sam3Model

        from ..tfs.tiny import build_tiny_tokenizer

        tokenizer = build_tiny_tokenizer(path)
        grid = image_size // 14
        image_size = grid * 14
        small = {"hidden_size": 32, "num_attention_heads": 2, "intermediate_size": 64}
        config = Sam3Config(
            vision_config={
                "model_type": "sam3_vision_model",
                "backbone_config": {
                    "model_type": "sam3_vit_model",
                    **small,
                    "num_hidden_layers": 2,
                    "image_size": image_size,
                    "patch_size": 14,
                    "window_size": 3,
                    "global_attn_indexes": [1],
                    "pretrain_image_size": image_size,
                },
                "fpn_hidden_size": 32,
                "backbone_feature_sizes": [[grid * 4] * 2, [grid * 2] * 2, [grid] * 2],
            },
            text_config={
                "model_type": "clip_text_model",
                **small,
                "num_hidden_layers": 1,
                "vocab_size": len(tokenizer),
                "max_position_embeddings": 32,
                "projection_dim": 32,
                "bos_token_id": tokenizer.convert_tokens_to_ids("<|endoftext|>"),
                "eos_token_id": tokenizer.convert_tokens_to_ids("<|im_end|>"),
                "pad_token_id": tokenizer.convert_tokens_to_ids("<|endoftext|>"),
            },
            geometry_encoder_config={**small, "num_layers": 1},
            detr_encoder_config={**small, "num_layers": 1},
            detr_decoder_config={**small, "num_layers": 1, "num_queries": 20},
            mask_decoder_config={"hidden_size": 32, "num_attention_heads": 2},
        )
        model = Sam3Model(config).eval()
        mean, std = [0.5, 0.5, 0.5], [0.5, 0.5, 0.5]
    else:
        from transformers import Sam3TrackerConfig, Sam3TrackerModel

        grid = image_size // 14  # SAM 3's ViT has 14-pixel patches: the image side must be a multiple of 14
        sam3_size = grid * 14

        config = Sam3TrackerConfig(
            vision_config={
                "model_type": "sam3_vision_model",
                "backbone_config": {
                    "model_type": "sam3_vit_model",
                    "hidden_size": 32,
                    "intermediate_size": 64,
                    "num_hidden_layers": 2,
                    "num_attention_heads": 2,
                    "image_size": sam3_size,
                    "patch_size": 14,
                    "window_size": 3,
                    "global_attn_indexes": [1],
                    "pretrain_image_size": sam3_size,
                },
                "fpn_hidden_size": 32,
                "backbone_feature_sizes": [[grid * 4] * 2, [grid * 2] * 2, [grid] * 2],
            },
            prompt_encoder_config={"hidden_size": 32, "image_size": sam3_size, "patch_size": 14},
            mask_decoder_config={"hidden_size": 32, "mlp_dim": 64, "num_attention_heads": 2, "iou_head_hidden_dim": 32},
        )
        model = Sam3TrackerModel(config).eval()
        mean, std = [0.5, 0.5, 0.5], [0.5, 0.5, 0.5]
        image_size = sam3_size
    model.save_pretrained(str(path), safe_serialization=True)
    preprocessor = {
        "size": {"height": image_size, "width": image_size},
        "image_mean": mean,
        "image_std": std,
        "do_rescale": True,
        "rescale_factor": 1 / 255,
    }
    (path / "preprocessor_config.json").write_text(json.dumps(preprocessor, indent=2))
    return path


def force_answer(chat, text) -> None:
    """Constrain an in-process ``QwenImageChat``'s greedy decoding to produce exactly ``text`` (then end of turn).

    For tests and benchmarks with random-weight models, whose own answers are noise: the real prompt, vision
    encoder, prefill and token-by-token decoding all run; only the choice of each next token is restricted (through
    ``generate``'s ``prefix_allowed_tokens_fn``). A list of texts is used one per call (the last one repeats);
    ``force_answer(chat, None)`` lifts the constraint."""
    if text is None:
        chat.generate_kwargs.pop("prefix_allowed_tokens_fn", None)
        chat.generate_kwargs_reset = None
        return
    texts = [text] if isinstance(text, str) else list(text)
    encoded = [chat.tokenizer(t, add_special_tokens=False)["input_ids"] + [chat.eos_token_ids[0]] for t in texts]
    state = {"call": -1, "prompt_length": None}

    def next_call():  # called by QwenImageChat.chat before each generate
        state["call"] += 1
        state["prompt_length"] = None

    def allowed(batch_id, input_ids):
        forced = encoded[min(max(state["call"], 0), len(encoded) - 1)]
        if state["prompt_length"] is None:  # first call of a generate: the prompt alone
            state["prompt_length"] = len(input_ids)
        step = len(input_ids) - state["prompt_length"]
        return [forced[min(step, len(forced) - 1)]]

    chat.generate_kwargs["prefix_allowed_tokens_fn"] = allowed
    chat.generate_kwargs_reset = next_call
