"""The model sets the backends can use: exact Hugging Face repositories, what they are for, how big they are.

A ``ModelSet`` is what one backend configuration needs (e.g. a VLM + a SAM for ``segmenter: vlm_sam``); each of
its ``Component`` s is one repository. Facts are split by how sure we are:

* **Computed here, exact**: parameter counts, from the model class built on PyTorch's meta device (no memory, no
  download) with the architecture configuration written below (``config``). GPU memory for the weights follows
  from the count and the dtype; the KV cache for a typical prompt from the text configuration.
* **Stated, not verified from this machine**: licence and gating, as the model cards said when this catalog was
  written (``card_*`` fields); file sizes are *estimates* (parameter count x the stored dtype's bytes) until
  ``reasonvos weights verify`` reads the real sizes and checksums from the hub. ``revision`` is "main" unless a
  commit is pinned here; a download records the commit it got in ``reasonvos_weights.json``, and later
  downloads/verifications of that directory use it.

Other helpers' backends add their sets by appending ``ModelSet`` entries to ``MODEL_SETS`` (e.g. tracker sets
for SAM 2.1 tiny/small/base+/large, EdgeTAM and the SAM 3 tracker, with ``role="tracker"``).
The architecture numbers are those of each repository's ``config.json``; published total parameter counts
(``card_params_b``) are kept next to them and compared by the tests.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

DTYPE_BYTES = {"bfloat16": 2, "float16": 2, "float32": 4}


@dataclass(frozen=True)
class Component:
    """One repository of a set."""

    role: str  # "vlm", "sam", "tracker", ...
    repo_id: str
    model_class: str  # transformers class the backend loads it with
    config_class: str
    config: dict[str, Any]  # architecture (from the repository's config.json) to count parameters
    option: str  # backend option that receives the local directory
    stored_dtype: str = "bfloat16"  # dtype of the safetensors files (for the size estimate)
    revision: str = "main"
    card_licence: str = ""
    card_gated: bool = False
    card_params_b: float | None = None  # total parameters the card states, in billions (cross-check)
    allow_patterns: tuple[str, ...] = ("*.json", "*.safetensors", "*.txt", "*.jinja", "*.model")
    note: str = ""
    # Exact count computed by the backend that owns the architecture (its tests build the config and check it);
    # None with an empty config_class: not countable here (e.g. a backbone that needs timm).
    parameters: int | None = None


@dataclass(frozen=True)
class ModelSet:
    name: str
    summary: str
    backend_role: str  # "segmenter", "sampler", "tracker"
    backend: str  # registry name, e.g. "vlm_sam"
    components: tuple[Component, ...]
    options: dict[str, Any] = field(default_factory=dict)  # backend options besides the component paths
    downloadable: bool = True
    note: str = ""


# ---- architecture configurations (from each repository's config.json) --------------------------------------------
def _qwen25_vl(hidden, intermediate, layers, heads, kv_heads, vocab, tie) -> dict[str, Any]:
    return {
        "text_config": {
            "hidden_size": hidden,
            "intermediate_size": intermediate,
            "num_hidden_layers": layers,
            "num_attention_heads": heads,
            "num_key_value_heads": kv_heads,
            "vocab_size": vocab,
            "tie_word_embeddings": tie,
            "rope_parameters": {"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [16, 24, 24]},
        },
        "vision_config": {
            "depth": 32,
            "hidden_size": 1280,
            "intermediate_size": 3420,
            "num_heads": 16,
            "out_hidden_size": hidden,
            "patch_size": 14,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
            "window_size": 112,
            "fullatt_block_indexes": [7, 15, 23, 31],
        },
        "tie_word_embeddings": tie,
    }


def _qwen3_vl(hidden, intermediate, layers, heads, kv_heads, tie, vision) -> dict[str, Any]:
    depth, width, mlp, deepstack = vision
    return {
        "text_config": {
            "hidden_size": hidden,
            "intermediate_size": intermediate,
            "num_hidden_layers": layers,
            "num_attention_heads": heads,
            "num_key_value_heads": kv_heads,
            "head_dim": 128,
            "vocab_size": 151936,
            "tie_word_embeddings": tie,
            "rope_parameters": {
                "rope_type": "default",
                "rope_theta": 5000000.0,
                "mrope_section": [24, 20, 20],
                "mrope_interleaved": True,
            },
        },
        "vision_config": {
            "depth": depth,
            "hidden_size": width,
            "intermediate_size": mlp,
            "num_heads": 16,
            "out_hidden_size": hidden,
            "patch_size": 16,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
            "num_position_embeddings": 2304,
            "deepstack_visual_indexes": list(deepstack),
        },
        "tie_word_embeddings": tie,
    }


def _sam2(hidden, blocks, heads, channels) -> dict[str, Any]:
    return {
        "vision_config": {
            "backbone_config": {
                "model_type": "sam2_hiera_det_model",
                "hidden_size": hidden,
                "num_attention_heads": heads,
                "blocks_per_stage": blocks,
                "embed_dim_per_stage": [hidden, 2 * hidden, 4 * hidden, 8 * hidden],
                "num_attention_heads_per_stage": [heads, 2 * heads, 4 * heads, 8 * heads],
            },
            "backbone_channel_list": channels,
        }
    }


QWEN_LICENCE_APACHE = "Apache-2.0"
SAM2_COMPONENT_NOTE = "transformers-format SAM 2.1 checkpoint (Sam2Model); the original .pt release is not loaded"


def _qwen3_component(size: str, config: dict[str, Any], params_b: float) -> Component:
    return Component(
        role="vlm",
        repo_id=f"Qwen/Qwen3-VL-{size}-Instruct",
        model_class="Qwen3VLForConditionalGeneration",
        config_class="Qwen3VLConfig",
        config=config,
        option="model_dir",
        card_licence=QWEN_LICENCE_APACHE,
        card_params_b=params_b,
    )


def _sam21_component(size: str, config: dict[str, Any], card_total: str) -> Component:
    return Component(
        role="sam",
        repo_id=f"facebook/sam2.1-hiera-{size}",
        model_class="Sam2Model",
        config_class="Sam2Config",
        config=config,
        option="sam_dir",
        stored_dtype="float32",
        card_licence="Apache-2.0",
        note=f"{SAM2_COMPONENT_NOTE}; the card's {card_total} counts the video memory modules (~7.5M) Sam2Model lacks",
    )


SAM21_LARGE = _sam21_component("large", _sam2(144, [2, 6, 36, 4], 2, [1152, 576, 288, 144]), "224.4M")
SAM21_SMALL = _sam21_component("small", _sam2(96, [1, 2, 11, 2], 1, [768, 384, 192, 96]), "46M")
SAM3 = Component(
    role="sam",
    repo_id="facebook/sam3",
    model_class="Sam3TrackerModel",
    config_class="Sam3TrackerConfig",
    config={},  # the class defaults are SAM 3's
    option="sam_dir",
    stored_dtype="float32",
    card_licence="SAM License (Meta, custom; read it before use)",
    card_gated=True,
    note="gated: accept the licence on the model page and log in (hf auth login) before downloading; the repository "
    "holds all of SAM 3 (detector + tracker), the tracker image model loads its part",
)

QWEN3_VL_8B = _qwen3_component("8B", _qwen3_vl(4096, 12288, 36, 32, 8, False, (27, 1152, 4304, (8, 16, 24))), 8.77)


def _vlm_sam_set(name: str, summary: str, *components: Component) -> ModelSet:
    return ModelSet(name=name, summary=summary, backend_role="segmenter", backend="vlm_sam", components=components)


MODEL_SETS: tuple[ModelSet, ...] = (
    _vlm_sam_set(
        "qwen3vl-8b-sam2.1-large",
        "strongest open set that fits a 24 GB GPU: Qwen3-VL-8B reasons, SAM 2.1 large masks",
        QWEN3_VL_8B,
        SAM21_LARGE,
    ),
    _vlm_sam_set(
        "qwen3vl-4b-sam2.1-large",
        "mid-size: Qwen3-VL-4B + SAM 2.1 large (Jetson Orin 32/64 GB, 16 GB desktop GPUs)",
        _qwen3_component("4B", _qwen3_vl(2560, 9728, 36, 32, 8, True, (24, 1024, 4096, (5, 11, 17))), 4.44),
        SAM21_LARGE,
    ),
    _vlm_sam_set(
        "qwen3vl-2b-sam2.1-small",
        "smallest: Qwen3-VL-2B + SAM 2.1 small (Jetson Orin 16 GB)",
        _qwen3_component("2B", _qwen3_vl(2048, 6144, 28, 16, 8, True, (24, 1024, 4096, (5, 11, 17))), 2.13),
        SAM21_SMALL,
    ),
    _vlm_sam_set(
        "qwen2.5vl-7b-sam2.1-large",
        "Qwen2.5-VL-7B (absolute-pixel grounding) + SAM 2.1 large",
        Component(
            role="vlm",
            repo_id="Qwen/Qwen2.5-VL-7B-Instruct",
            model_class="Qwen2_5_VLForConditionalGeneration",
            config_class="Qwen2_5_VLConfig",
            config=_qwen25_vl(3584, 18944, 28, 28, 4, 152064, False),
            option="model_dir",
            card_licence=QWEN_LICENCE_APACHE,
            card_params_b=8.29,
        ),
        SAM21_LARGE,
    ),
    _vlm_sam_set(
        "qwen3vl-8b-sam3",
        "Qwen3-VL-8B + the SAM 3 tracker image model (gated SAM 3 weights)",
        QWEN3_VL_8B,
        SAM3,
    ),
    ModelSet(
        name="visa-7b",
        summary="VISA-7B for segmenter: visa (the paper's model)",
        backend_role="segmenter",
        backend="visa",
        components=(),
        downloadable=False,
        note=(
            "not on the Hugging Face hub. The only released VISA checkpoint is an unofficial 7B link (OneDrive / "
            "Baidu) posted in the VISA repository's issue tracker; its author is not sure it matches the paper, a "
            "user reports J&F 12.6 with it, and no 13B exists. It has never been run in this repository. If you "
            "still want it: download the merged directory by hand and set segmenter_options visa_dir, plus "
            "sam_checkpoint (sam_vit_h_4b8939.pth, Segment Anything release) and clip_dir "
            "(openai/clip-vit-large-patch14). Prefer an open set above."
        ),
    ),
)


def _tracker_sets() -> tuple[ModelSet, ...]:
    """The sam2_video tracker's model sets (its backend module owns the table and the parameter counts)."""
    from reasonvos_ros.backends.sam2_video_tracker import TRACKER_MODEL_SETS

    classes = {"sam3_tracker": "Sam3TrackerVideoModel", "edgetam": "EdgeTamVideoModel"}
    sets = []
    for entry in TRACKER_MODEL_SETS:
        component = Component(
            role="tracker",
            repo_id=entry["repo_id"],
            model_class=classes.get(entry["config"], "Sam2VideoModel"),
            config_class="",
            config={},
            option="model_dir",
            stored_dtype="float32",
            card_licence=entry["licence"],
            card_gated="gated" in entry["licence"].lower(),
            note="; ".join(part for part in (entry["verified"], entry["notes"]) if part),
            parameters=entry["parameters"],
        )
        sets.append(
            ModelSet(
                name=f"tracker-{entry['name']}",
                summary=f"tracker: sam2_video with {entry['repo_id']}",
                backend_role="tracker",
                backend=entry["backend"],
                components=(component,),
            )
        )
    return tuple(sets)


MODEL_SETS = MODEL_SETS + _tracker_sets()


def find_set(name: str) -> ModelSet:
    for model_set in MODEL_SETS:
        if model_set.name == name:
            return model_set
    raise KeyError(f"unknown model set {name!r}; known: {', '.join(s.name for s in MODEL_SETS)}")


_PARAM_CACHE: dict[tuple[str, str], int] = {}


def build_config(component: Component):
    import transformers

    return getattr(transformers, component.config_class)(**component.config)


def parameter_count(component: Component) -> int | None:
    """Exact parameter count of the component's architecture (built on the meta device; tied weights once), or
    None where it cannot be counted here."""
    if component.parameters is not None or not component.config_class:
        return component.parameters
    key = (component.repo_id, component.model_class)
    if key not in _PARAM_CACHE:
        import torch
        import transformers

        config = build_config(component)
        with torch.device("meta"):
            model = getattr(transformers, component.model_class)(config)
        _PARAM_CACHE[key] = sum(p.numel() for p in model.parameters())
    return _PARAM_CACHE[key]


def kv_cache_bytes(component: Component, tokens: int, dtype: str = "bfloat16") -> int:
    """KV cache of a VLM's language model for ``tokens`` tokens (keys + values, every layer)."""
    text = component.config.get("text_config")
    if not text:
        return 0
    heads = text["num_attention_heads"]
    head_dim = text.get("head_dim", text["hidden_size"] // heads)
    return 2 * text["num_hidden_layers"] * text["num_key_value_heads"] * head_dim * tokens * DTYPE_BYTES[dtype]


# A typical vlm_sam prompt: the key frame at 1280 tokens, 4 references at 256, ~400 text and answer tokens.
TYPICAL_PROMPT_TOKENS = 1280 + 4 * 256 + 400


def memory_estimate(model_set: ModelSet, dtype: str = "bfloat16") -> dict[str, float]:
    """GiB: weights (every component in ``dtype``) and the KV cache of a typical prompt. Activations, the CUDA
    context and the allocator's slack come on top: measure them with benchmarks/gpu_stages.py."""
    counts = [parameter_count(c) for c in model_set.components]
    if any(count is None for count in counts):
        return {}
    weights = sum(counts) * DTYPE_BYTES[dtype]
    kv = sum(kv_cache_bytes(c, TYPICAL_PROMPT_TOKENS, dtype) for c in model_set.components)
    gib = 1024**3
    return {"weights_gib": weights / gib, "kv_cache_gib": kv / gib, "total_gib": (weights + kv) / gib}
