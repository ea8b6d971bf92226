"""A tiny VISA checkpoint written in the real on-disk layout, for tests and CPU benchmarks (random weights).

``write_tiny_visa(root)`` creates, under ``root``:

* ``visa/``: ``config.json`` (Chat-UniVi/VISA fields: LLaMA sizes, ``mm_hidden_size``, ``mm_vision_select_layer``,
  ``config.use_cluster`` with the 64/32/16 spatial rates, ``out_dim``), a tokenizer with ``[SEG]`` added (ids 0/1/2 =
  <unk>/<s>/</s> like LLaMA, ``[SEG]`` the last id) -- by default like VISA's own files: a small sentencepiece BPE
  model trained offline on VISA's prompt text with LLaMA's normaliser settings (``tokenizer.model``,
  ``tokenizer_config.json`` of a slow ``LlamaTokenizer``, ``special_tokens_map.json``, ``added_tokens.json``); without
  the ``sentencepiece`` package, a byte-level BPE ``tokenizer.json`` instead -- and the weights split in two
  safetensors shards with
  ``model.safetensors.index.json``. Keys are VISA's: LLaMA (``model.embed_tokens/layers/norm``, ``lm_head``) incl.
  the ``rotary_emb.inv_freq`` constants, ``model.mm_projector``, ``model.text_hidden_fcs``, and the SAM weights
  under ``model.visual_model.`` whose mask decoder differs from the SAM file (as VISA's fine-tuned decoder does);
  no ``model.vision_tower`` keys (VISA's merge drops them).
* ``sam_tiny.pth``: the SAM weights in the original segment-anything layout (``torch.save`` of a tensor dict).
* ``clip/``: ``config.json`` of a ``CLIPVisionModel`` and ``model.safetensors`` with ``vision_model.*`` keys.

The weights come from the deterministic golden generator, so they are random: the masks mean nothing; only shapes,
names, the loading path and the computation are real.
"""

from __future__ import annotations

import json
import pathlib
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from .prompt import LONG_QUESTION_TEMPLATE, SEG_TOKEN, SHORT_QUESTION_TEMPLATE, SYSTEM_PROMPT

TINY_LLAMA: dict[str, Any] = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "max_position_embeddings": 2048,
    "rms_norm_eps": 1e-6,
    "hidden_act": "silu",
    "bos_token_id": 1,
    "eos_token_id": 2,
    "pad_token_id": 0,
    "tie_word_embeddings": False,
}
TINY_CLIP: dict[str, Any] = {
    "image_size": 224,
    "patch_size": 14,
    "hidden_size": 32,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "hidden_act": "quick_gelu",
    "layer_norm_eps": 1e-5,
    "projection_dim": 32,
}
TINY_SAM: dict[str, Any] = {
    "encoder_embed_dim": 64,
    "encoder_depth": 2,
    "encoder_num_heads": 2,
    "encoder_global_attn_indexes": (1,),
}

_CORPUS_EXTRA = (
    "It is [SEG]. USER: ASSISTANT: the a an of in on to and which what where who is are object person people "
    "walking man woman child dog cat car bicycle ball red blue green left right front behind first last moving "
    "keeps room cool summer should be hit? Please find it. (0) (1) (2) (3) (4) (5) (6) (7) (8) (9) (10),"
)


@dataclass
class TinyVisaPaths:
    visa_dir: pathlib.Path
    sam_checkpoint: pathlib.Path
    clip_dir: pathlib.Path


def build_tiny_tokenizer(vocab_size: int = 400):
    """Byte-level BPE tokenizer trained on VISA's prompt text, with <unk>/<s>/</s> = 0/1/2 and BOS added, and
    ``[SEG]`` added as a normal (non-special) token, as VISA does. Needs only the ``tokenizers`` package."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<unk>", "<s>", "</s>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    corpus = [SYSTEM_PROMPT, SHORT_QUESTION_TEMPLATE, LONG_QUESTION_TEMPLATE, _CORPUS_EXTRA]
    core.train_from_iterator(corpus, trainer=trainer)
    core.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core, bos_token="<s>", eos_token="</s>", unk_token="<unk>", model_max_length=4096
    )
    tokenizer.add_tokens([SEG_TOKEN])
    return tokenizer


def write_sentencepiece_tokenizer(directory: str | pathlib.Path, vocab_size: int = 500) -> int:
    """Write a LLaMA-style sentencepiece tokenizer directory (as transformers 4.31 saved VISA's) with ``[SEG]``
    added after the ``vocab_size`` pieces; returns the [SEG] id. Needs the ``sentencepiece`` package."""
    import io

    import sentencepiece

    directory = pathlib.Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    model = io.BytesIO()
    corpus = [SYSTEM_PROMPT, SHORT_QUESTION_TEMPLATE, LONG_QUESTION_TEMPLATE, _CORPUS_EXTRA] * 20
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(corpus),
        model_writer=model,
        vocab_size=vocab_size,
        model_type="bpe",
        unk_id=0,
        bos_id=1,
        eos_id=2,
        pad_id=-1,
        byte_fallback=True,  # LLaMA's settings: byte fallback, dummy prefix, no whitespace folding, split digits
        add_dummy_prefix=True,
        remove_extra_whitespaces=False,
        normalization_rule_name="identity",
        split_digits=True,
        character_coverage=1.0,
        num_threads=1,
        minloglevel=2,
    )
    (directory / "tokenizer.model").write_bytes(model.getvalue())

    def special(content: str) -> dict[str, Any]:
        return {"__type": "AddedToken", "content": content, "lstrip": False, "normalized": True, "rstrip": False,
                "single_word": False}  # fmt: skip

    config = {
        "tokenizer_class": "LlamaTokenizer",
        "add_bos_token": True,
        "add_eos_token": False,
        "bos_token": special("<s>"),
        "eos_token": special("</s>"),
        "unk_token": special("<unk>"),
        "pad_token": None,
        "clean_up_tokenization_spaces": False,
        "legacy": True,
        "model_max_length": 2048,
        "padding_side": "right",
        "sp_model_kwargs": {},
    }
    (directory / "tokenizer_config.json").write_text(json.dumps(config, indent=1))
    specials = {
        "bos_token": special("<s>"),
        "eos_token": special("</s>"),
        "unk_token": special("<unk>"),
        "pad_token": "<unk>",
    }
    (directory / "special_tokens_map.json").write_text(json.dumps(specials, indent=1))
    (directory / "added_tokens.json").write_text(json.dumps({SEG_TOKEN: vocab_size}))
    return vocab_size


def _has_sentencepiece() -> bool:
    try:
        import sentencepiece  # noqa: F401
    except ImportError:
        return False
    return True


def _visa_config_json(vocab_size: int, clip_hidden: int) -> dict[str, Any]:
    return {
        "architectures": ["VISAForCausalLM"],
        "model_type": "ChatUniVi",
        **TINY_LLAMA,
        "vocab_size": vocab_size,
        "mm_hidden_size": clip_hidden,
        "mm_vision_select_layer": -2,
        "mm_vision_select_feature": "patch",
        "mm_use_im_start_end": False,
        "mm_vision_tower": "openai/clip-vit-large-patch14",
        "vision_tower": "openai/clip-vit-large-patch14",
        "config": {
            "use_cluster": True,
            "spatial_cluster_rate0": 64,
            "spatial_cluster_rate1": 32,
            "spatial_cluster_rate2": 16,
            "temporal_cluster_rate": 0.0625,
        },
        "out_dim": 256,
        "train_mask_decoder": True,
        "torch_dtype": "float32",
    }


def _llama_key_shapes(vocab_size: int) -> dict[str, tuple[int, ...]]:
    from transformers import LlamaConfig, LlamaForCausalLM

    with torch.device("meta"):
        llm = LlamaForCausalLM(LlamaConfig(**TINY_LLAMA, vocab_size=vocab_size))
    return {k: tuple(v.shape) for k, v in llm.state_dict().items()}


def _clip_key_shapes() -> dict[str, tuple[int, ...]]:
    from transformers import CLIPVisionConfig, CLIPVisionModel

    with torch.device("meta"):
        tower = CLIPVisionModel(CLIPVisionConfig(**TINY_CLIP))
    shapes = {}
    for key, value in tower.state_dict().items():
        if key.endswith("position_ids"):
            continue
        name = key if key.startswith("vision_model.") else "vision_model." + key
        shapes[name] = tuple(value.shape)
    return shapes


def write_tiny_visa(
    root: str | pathlib.Path, seed: int = 7, sam_image_size: int = 1024, tokenizer: str = "auto"
) -> TinyVisaPaths:
    """Write the tiny VISA/SAM/CLIP files under ``root`` (see the module docstring) and return their paths.
    ``tokenizer``: "sentencepiece" (VISA's layout), "bpe" (tokenizer.json), or "auto" (sentencepiece if installed)."""
    from safetensors.torch import save_file

    from ...golden.golden_weights import golden_state_dict
    from ..sam import SamConfig, original_key_shapes

    root = pathlib.Path(root)
    visa_dir, clip_dir = root / "visa", root / "clip"
    visa_dir.mkdir(parents=True, exist_ok=True)
    clip_dir.mkdir(parents=True, exist_ok=True)

    if tokenizer == "auto":
        tokenizer = "sentencepiece" if _has_sentencepiece() else "bpe"
    if tokenizer == "sentencepiece":
        vocab_size = write_sentencepiece_tokenizer(visa_dir) + 1
    elif tokenizer == "bpe":
        bpe = build_tiny_tokenizer()
        bpe.save_pretrained(str(visa_dir))
        vocab_size = len(bpe)
    else:
        raise ValueError(f"tokenizer must be 'auto', 'sentencepiece' or 'bpe', got {tokenizer!r}")

    def tensors(shapes: dict[str, tuple[int, ...]], weight_seed: int) -> dict[str, torch.Tensor]:
        return {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in golden_state_dict(shapes, weight_seed).items()}

    sam_config = SamConfig(**TINY_SAM, image_size=sam_image_size)
    sam_shapes = original_key_shapes(sam_config)
    sam_file = tensors(sam_shapes, seed)
    sam_path = root / "sam_tiny.pth"
    torch.save(sam_file, sam_path)

    llm = tensors(_llama_key_shapes(vocab_size), seed)
    hidden = TINY_LLAMA["hidden_size"]
    head_dim = hidden // TINY_LLAMA["num_attention_heads"]
    inv_freq = 1.0 / (10000.0 ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))
    for layer in range(TINY_LLAMA["num_hidden_layers"]):
        llm[f"model.layers.{layer}.self_attn.rotary_emb.inv_freq"] = inv_freq.clone()
    heads = tensors(
        {
            "model.mm_projector.weight": (hidden, TINY_CLIP["hidden_size"]),
            "model.mm_projector.bias": (hidden,),
            "model.text_hidden_fcs.0.0.weight": (hidden, hidden),
            "model.text_hidden_fcs.0.0.bias": (hidden,),
            "model.text_hidden_fcs.0.2.weight": (256, hidden),
            "model.text_hidden_fcs.0.2.bias": (256,),
        },
        seed,
    )
    # VISA's checkpoint carries the whole SAM; its mask decoder was fine-tuned, so it differs from the SAM file.
    tuned_decoder = tensors({k: s for k, s in sam_shapes.items() if k.startswith("mask_decoder.")}, seed + 1)
    visa_sam = {"model.visual_model." + k: (tuned_decoder.get(k, v)).clone() for k, v in sam_file.items()}

    shard_one = dict(llm)
    shard_two = {**heads, **visa_sam}
    index: dict[str, Any] = {"metadata": {"total_size": 0}, "weight_map": {}}
    for number, shard in enumerate((shard_one, shard_two), start=1):
        name = f"model-{number:05d}-of-00002.safetensors"
        save_file(shard, str(visa_dir / name), metadata={"format": "pt"})
        for key, value in shard.items():
            index["weight_map"][key] = name
            index["metadata"]["total_size"] += value.numel() * value.element_size()
    (visa_dir / "model.safetensors.index.json").write_text(json.dumps(index, indent=1))
    (visa_dir / "config.json").write_text(json.dumps(_visa_config_json(vocab_size, TINY_CLIP["hidden_size"]), indent=1))

    save_file(tensors(_clip_key_shapes(), seed), str(clip_dir / "model.safetensors"), metadata={"format": "pt"})
    clip_config = {"architectures": ["CLIPVisionModel"], "model_type": "clip_vision_model", **TINY_CLIP}
    (clip_dir / "config.json").write_text(json.dumps(clip_config, indent=1))
    return TinyVisaPaths(visa_dir, sam_path, clip_dir)
