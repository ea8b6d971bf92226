"""Tiny random Qwen2-VL / Qwen2.5-VL checkpoints for tests and benchmarks (no download, no pretrained weights).

``build_tiny_video_llm(path)`` writes a directory laid out like a real Hugging Face checkpoint of the chosen family:
``config.json`` + ``model.safetensors`` (random weights from a fixed seed), ``generation_config.json``, a byte-level
BPE tokenizer trained here on a few sentences (``tokenizer.json`` / ``tokenizer_config.json``, with Qwen's special
tokens ``<|im_start|>``, ``<|video_pad|>``...) and a ``preprocessor_config.json`` with Qwen's pixel settings. The
sampler loads it through exactly the same code path as a real checkpoint. The weights are random: the model's
answers are mostly garbage, which is what the tests expect.
"""

from __future__ import annotations

import json
from pathlib import Path

# Special tokens of the Qwen2-VL tokenizer that the sampler's prompt uses.
QWEN_SPECIAL_TOKENS = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
)

_TOKENIZER_CORPUS = (
    "To find the red ball, which percentage mark of the video should I check? Please respond with a number between "
    "0% and 100%.",
    "If I want to find 'the dog', which percentage mark of the video should I check? Please choose one answer from "
    "0%, 10%, 20%, 30%, 40%, 50%, 60%, 70%, 80%, 90% and 100%.",
    "You are a helpful assistant. system user assistant",
    "The object appears at around 40% of the video. The last 20 percent. Between 30% and 60%. At the very end.",
    "I'm sorry, I cannot determine that. In the middle, at the beginning, near the end, halfway through.",
    "0 1 2 3 4 5 6 7 8 9 10 20 30 40 50 60 70 80 90 100 0.3 0.5 one third a quarter",
)

FAMILIES = ("qwen2_vl", "qwen2_5_vl")


def build_tiny_tokenizer(path: str | Path, vocab_size: int = 400):
    """Train a small byte-level BPE tokenizer offline and save it (Hugging Face fast-tokenizer files) in ``path``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(QWEN_SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(_TOKENIZER_CORPUS, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=list(QWEN_SPECIAL_TOKENS[1:]),
    )
    fast.save_pretrained(str(path))
    return fast


def tiny_text_config(tokenizer, hidden_size: int, num_layers: int, num_heads: int, head_dim: int) -> dict:
    """Language-model part of a tiny Qwen-VL config: a 2x wide MLP, 2 key/value heads, and the special tokens of
    ``build_tiny_tokenizer``'s ``tokenizer`` as bos/eos/pad."""
    token_id = tokenizer.convert_tokens_to_ids
    # M-RoPE splits the rotary half-dimension into (time, height, width) sections.
    half = head_dim // 2
    return {
        "vocab_size": len(tokenizer),
        "hidden_size": hidden_size,
        "intermediate_size": 2 * hidden_size,
        "num_hidden_layers": num_layers,
        "num_attention_heads": num_heads,
        "num_key_value_heads": 2,
        "max_position_embeddings": 4096,
        "rope_parameters": {
            "rope_type": "default",
            "rope_theta": 10000.0,
            "mrope_section": [half - 2 * (half // 3), half // 3, half // 3],
        },
        "bos_token_id": token_id("<|endoftext|>"),
        "eos_token_id": token_id("<|im_end|>"),
        "pad_token_id": token_id("<|endoftext|>"),
    }


def vision_token_ids(tokenizer) -> dict[str, int]:
    """The top-level config fields that name Qwen's image/video placeholders and vision delimiters."""
    token_id = tokenizer.convert_tokens_to_ids
    return {
        "image_token_id": token_id("<|image_pad|>"),
        "video_token_id": token_id("<|video_pad|>"),
        "vision_start_token_id": token_id("<|vision_start|>"),
        "vision_end_token_id": token_id("<|vision_end|>"),
    }


def save_tiny_checkpoint(model, tokenizer, path: Path, preprocessor: dict) -> Path:
    """Write ``model`` (its generation stopping at ``<|im_end|>`` or ``<|endoftext|>``, padding with the latter)
    and ``preprocessor`` (as ``preprocessor_config.json``) to ``path``, where the tokenizer already is."""
    token_id = tokenizer.convert_tokens_to_ids
    model.generation_config.eos_token_id = [token_id("<|im_end|>"), token_id("<|endoftext|>")]
    model.generation_config.pad_token_id = token_id("<|endoftext|>")
    model.save_pretrained(str(path), safe_serialization=True)
    (path / "preprocessor_config.json").write_text(json.dumps(preprocessor, indent=2))
    return path


def build_tiny_video_llm(
    path: str | Path,
    family: str = "qwen2_vl",
    seed: int = 0,
    hidden_size: int = 64,
    num_layers: int = 2,
    vision_depth: int = 2,
) -> Path:
    """Write a tiny random checkpoint of ``family`` ("qwen2_vl" or "qwen2_5_vl") to ``path``; return the path."""
    import torch

    if family not in FAMILIES:
        raise ValueError(f"unknown tiny model family {family!r}; expected one of {', '.join(FAMILIES)}")
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tiny_tokenizer(path)
    num_heads = 4
    text_config = tiny_text_config(tokenizer, hidden_size, num_layers, num_heads, hidden_size // num_heads)
    vision_config = {
        "depth": vision_depth,
        "num_heads": 2,
        "patch_size": 14,
        "spatial_merge_size": 2,
        "temporal_patch_size": 2,
        "in_channels": 3,
    }
    if family == "qwen2_vl":
        from transformers import Qwen2VLConfig as ConfigClass
        from transformers import Qwen2VLForConditionalGeneration as ModelClass

        vision_config.update(embed_dim=32, hidden_size=hidden_size, mlp_ratio=2)
    else:
        from transformers import Qwen2_5_VLConfig as ConfigClass
        from transformers import Qwen2_5_VLForConditionalGeneration as ModelClass

        vision_config.update(
            hidden_size=32,
            intermediate_size=64,
            out_hidden_size=hidden_size,
            window_size=56,
            fullatt_block_indexes=[vision_depth - 1],
            tokens_per_second=2,
        )
    config = ConfigClass(text_config=text_config, vision_config=vision_config, **vision_token_ids(tokenizer))
    torch.manual_seed(seed)
    model = ModelClass(config).eval()
    # Near-greedy defaults like those instruct checkpoints ship: the sampler must override them, or its K
    # "sampled" answers would all be the same.
    model.generation_config.do_sample = True
    model.generation_config.top_k = 1
    model.generation_config.top_p = 0.001
    model.generation_config.temperature = 0.01
    preprocessor = {
        "min_pixels": 56 * 56,
        "max_pixels": 28 * 28 * 1280,
        "patch_size": 14,
        "temporal_patch_size": 2,
        "merge_size": 2,
        "image_mean": [0.48145466, 0.4578275, 0.40821073],
        "image_std": [0.26862954, 0.26130258, 0.27577711],
        "image_processor_type": "Qwen2VLImageProcessor",
        "processor_class": "Qwen2_5_VLProcessor" if family == "qwen2_5_vl" else "Qwen2VLProcessor",
    }
    return save_tiny_checkpoint(model, tokenizer, path, preprocessor)
