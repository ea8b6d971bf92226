"""The three SAM 2-style video model families of transformers, how to load them, and their configurations.

transformers ships three video trackers with the same streaming inference-session API: ``Sam2VideoModel`` (SAM 2 and
SAM 2.1, Hiera backbone), ``EdgeTamVideoModel`` (EdgeTAM: RepViT backbone through timm, 2D spatial perceiver memory)
and ``Sam3TrackerVideoModel`` (the tracker half of SAM 3, ViT backbone). A model directory in the Hugging Face layout
(``config.json`` + ``*.safetensors``) is mapped to its family by the ``model_type`` of its config: the image-model
types (``sam2``, ``edgetam``, ``sam3``) are accepted too, because the published repositories hold one checkpoint
that both the image and the video classes load.

The families' processors (``Sam2VideoProcessor`` ...) need torchvision, which this project must not install (it
breaks transformers on CPU torch builds), so ``streaming`` does their documented steps itself. The normalisation
constants come from the directory's ``video_preprocessor_config.json`` / ``preprocessor_config.json`` when present,
else from the family's defaults below (the processors' own defaults).
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import pathlib
from dataclasses import dataclass

import torch

from reasonvos_ros.core.errors import BackendUnavailable, ConfigError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
HALF_MEAN_STD = (0.5, 0.5, 0.5)


@dataclass(frozen=True)
class Family:
    """One transformers video-tracker family: class names (imported lazily) and preprocessing defaults."""

    name: str
    model_class: str
    config_class: str
    session_class: str
    module: str  # transformers.models.<module>.modeling_<module>
    model_types: tuple[str, ...]  # config.json model_type values this family loads
    image_mean: tuple[float, float, float]
    image_std: tuple[float, float, float]
    needs_timm: bool = False

    def classes(self) -> tuple[type, type, type]:
        """(model class, config class, inference-session class)."""
        modeling = importlib.import_module(f"transformers.models.{self.module}.modeling_{self.module}")
        configuration = importlib.import_module(f"transformers.models.{self.module}.configuration_{self.module}")
        return (
            getattr(modeling, self.model_class),
            getattr(configuration, self.config_class),
            getattr(modeling, self.session_class),
        )


FAMILIES: dict[str, Family] = {
    "sam2": Family(
        "sam2",
        "Sam2VideoModel",
        "Sam2VideoConfig",
        "Sam2VideoInferenceSession",
        "sam2_video",
        ("sam2_video", "sam2"),
        IMAGENET_MEAN,
        IMAGENET_STD,
    ),
    "edgetam": Family(
        "edgetam",
        "EdgeTamVideoModel",
        "EdgeTamVideoConfig",
        "EdgeTamVideoInferenceSession",
        "edgetam_video",
        ("edgetam_video", "edgetam"),
        IMAGENET_MEAN,
        IMAGENET_STD,
        needs_timm=True,
    ),
    "sam3_tracker": Family(
        "sam3_tracker",
        "Sam3TrackerVideoModel",
        "Sam3TrackerVideoConfig",
        "Sam3TrackerVideoInferenceSession",
        "sam3_tracker_video",
        ("sam3_tracker_video", "sam3_tracker", "sam3_video", "sam3"),
        HALF_MEAN_STD,
        HALF_MEAN_STD,
    ),
}


@dataclass(frozen=True)
class Normalisation:
    """What the family's video processor does to a frame before the model: resize to ``size`` x ``size``
    (bilinear, antialiased, back to uint8), multiply by ``rescale_factor``, subtract ``mean``, divide by ``std``."""

    size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    rescale_factor: float = 1.0 / 255.0


def family_for_model_type(model_type: str | None, where: str) -> Family:
    for family in FAMILIES.values():
        if model_type in family.model_types:
            return family
    known = sorted(t for f in FAMILIES.values() for t in f.model_types)
    raise ConfigError(f"{where}: model_type {model_type!r} is not a SAM 2-style video tracker (known: {known})")


def read_normalisation(model_dir: pathlib.Path, family: Family, image_size: int) -> Normalisation:
    """Normalisation from the directory's processor files where present, else the family's defaults."""
    mean, std, rescale = family.image_mean, family.image_std, 1.0 / 255.0
    for name in ("video_preprocessor_config.json", "preprocessor_config.json"):
        path = model_dir / name
        if not path.is_file():
            continue
        try:
            data = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise BackendUnavailable(f"cannot read {path}: {exc}") from exc
        mean = tuple(float(v) for v in data.get("image_mean", mean))
        std = tuple(float(v) for v in data.get("image_std", std))
        rescale = float(data.get("rescale_factor", rescale))
        size = data.get("size") or {}
        if isinstance(size, dict) and size.get("height") not in (None, image_size):
            raise ConfigError(f"{path}: processor size {size} disagrees with the model's image_size {image_size}")
        break
    if len(mean) != 3 or len(std) != 3 or min(std) <= 0:
        raise ConfigError(f"{model_dir}: bad image_mean/image_std {mean} / {std}")
    return Normalisation(int(image_size), mean, std, rescale)


def load_model(model_dir: pathlib.Path, family: Family, device: torch.device, dtype: torch.dtype):
    """``from_pretrained`` on a local directory (never the hub, no remote code), strict about the weights."""
    if family.needs_timm and importlib.util.find_spec("timm") is None:
        # an optional package of GPU environments only: not a dependency of this project (it needs torchvision)
        raise BackendUnavailable(
            "EdgeTAM's RepViT backbone is built by timm, which is not installed (timm needs torchvision; "
            "install both only in a CUDA environment where torchvision matches torch)"
        )
    model_class, _, _ = family.classes()
    try:
        model, info = model_class.from_pretrained(
            str(model_dir),
            dtype=dtype,
            local_files_only=True,
            trust_remote_code=False,
            output_loading_info=True,
        )
    except (OSError, ValueError) as exc:
        raise BackendUnavailable(f"cannot load a {family.model_class} from {model_dir}: {exc}") from exc
    problems = []
    for title in ("missing_keys", "unexpected_keys", "mismatched_keys"):
        names = sorted(str(k) for k in info.get(title) or ())
        if names:
            shown = ", ".join(names[:8]) + (f" ... and {len(names) - 8} more" if len(names) > 8 else "")
            problems.append(f"  {title.replace('_', ' ')}: {shown}")
    if problems:
        raise BackendUnavailable(f"the weights in {model_dir} do not fit {family.model_class}:\n" + "\n".join(problems))
    return model.to(device).eval()


# ---- configurations --------------------------------------------------------------------------------------------------

# Hiera trunks of the SAM 2.1 checkpoints (the official configs: sam2.1_hiera_{t,s,b+,l}.yaml).
_HIERA = {
    "tiny": dict(
        hidden_size=96,
        num_attention_heads=1,
        blocks_per_stage=[1, 2, 7, 2],
        global_attention_blocks=[5, 7, 9],
        window_size_per_stage=[8, 4, 14, 7],
        window_positional_embedding_background_size=[7, 7],
    ),
    "small": dict(
        hidden_size=96,
        num_attention_heads=1,
        blocks_per_stage=[1, 2, 11, 2],
        global_attention_blocks=[7, 10, 13],
        window_size_per_stage=[8, 4, 14, 7],
        window_positional_embedding_background_size=[7, 7],
    ),
    "base_plus": dict(
        hidden_size=112,
        num_attention_heads=2,
        blocks_per_stage=[2, 3, 16, 3],
        global_attention_blocks=[12, 16, 20],
        window_size_per_stage=[8, 4, 14, 7],
        window_positional_embedding_background_size=[14, 14],
    ),
    "large": dict(
        hidden_size=144,
        num_attention_heads=2,
        blocks_per_stage=[2, 6, 36, 4],
        global_attention_blocks=[23, 33, 43],
        window_size_per_stage=[8, 4, 16, 8],
        window_positional_embedding_background_size=[7, 7],
    ),
}


def sam21_config(variant: str):
    """Full-size ``Sam2VideoConfig`` of a SAM 2.1 checkpoint (random weights when built from it)."""
    from transformers import Sam2VideoConfig

    if variant not in _HIERA:
        raise ConfigError(f"unknown SAM 2.1 variant {variant!r}; known: {', '.join(_HIERA)}")
    trunk = dict(_HIERA[variant])
    width = trunk["hidden_size"]
    heads = trunk["num_attention_heads"]
    trunk.update(
        model_type="sam2_hiera_det_model",
        embed_dim_per_stage=[width, 2 * width, 4 * width, 8 * width],
        num_attention_heads_per_stage=[heads, 2 * heads, 4 * heads, 8 * heads],
    )
    vision = dict(
        model_type="sam2_vision_model",
        backbone_config=trunk,
        backbone_channel_list=[8 * width, 4 * width, 2 * width, width],
    )
    return Sam2VideoConfig(vision_config=vision)


def full_size_config(name: str):
    """Full-size configuration by catalogue name: sam2.1_tiny/small/base_plus/large, edgetam, sam3_tracker."""
    if name.startswith("sam2.1_"):
        return FAMILIES["sam2"], sam21_config(name.removeprefix("sam2.1_"))
    if name == "edgetam":
        from transformers import EdgeTamVideoConfig

        # The default config's backbone entry carries a misspelled key ("archirecture") that timm rejects: name the
        # backbone explicitly. The timm name is EdgeTAM's RepViT-M1; not run here (timm needs torchvision), so the
        # --full-size benchmark skips EdgeTAM where timm is missing.
        vision = dict(
            model_type="edgetam_vision_model",
            backbone_config=dict(
                model_type="timm_wrapper",
                architecture="repvit_m1.dist_in1k",
                model_args={"in_chans": 3, "features_only": True, "out_indices": [0, 1, 2, 3]},
            ),
        )
        return FAMILIES["edgetam"], EdgeTamVideoConfig(vision_config=vision)
    if name == "sam3_tracker":
        from transformers import Sam3TrackerVideoConfig

        return FAMILIES["sam3_tracker"], Sam3TrackerVideoConfig()
    raise ConfigError(f"unknown full-size tracker config {name!r}")


FULL_SIZE_NAMES = ("sam2.1_tiny", "sam2.1_small", "sam2.1_base_plus", "sam2.1_large", "edgetam", "sam3_tracker")


def count_parameters(family: Family, config) -> int:
    """Parameters of the model built from ``config``, counted on the meta device (no memory, no weights)."""
    model_class, _, _ = family.classes()
    with torch.device("meta"):
        model = model_class(config)
    return sum(p.numel() for p in model.parameters())


def tiny_head_settings(image_size: int, grid: int, num_maskmem: int = 7, max_object_pointers: int = 16) -> dict:
    """The tiny configurations' settings besides the vision backbone: prompt encoder, mask decoder, memory attention,
    memory encoder and fuser (``grid``: side of the image-embedding grid). See ``tiny_config`` for the widths."""
    return dict(
        image_size=image_size,
        num_maskmem=num_maskmem,
        max_object_pointers_in_encoder=max_object_pointers,
        prompt_encoder_config=dict(hidden_size=128, image_size=image_size, patch_size=16, mask_input_channels=4),
        mask_decoder_config=dict(hidden_size=128, mlp_dim=64, num_attention_heads=2, iou_head_hidden_dim=32),
        memory_attention_hidden_size=128,
        memory_attention_num_layers=1,
        memory_attention_feed_forward_hidden_size=64,
        memory_attention_rope_feat_sizes=[grid, grid],
        memory_encoder_hidden_size=128,
        memory_encoder_output_channels=64,
        mask_downsampler_embed_dim=128,
        memory_fuser_embed_dim=128,
        memory_fuser_intermediate_dim=64,
        memory_fuser_num_layers=1,
    )


def tiny_config(family_name: str, image_size: int = 128, num_maskmem: int = 7, max_object_pointers: int = 16):
    """A tiny configuration of the family (about 1-2 M parameters) for tests and CPU benchmarks.

    Two widths are fixed by the library: the memory attention reads 64-channel memories (``kv_in_dim=64``) and the
    object pointers are split into ``hidden / memory channels`` tokens, so the hidden width must be a multiple of 64
    and larger than it (128 here). ``image_size`` must be a multiple of 32 (four stride-2 stages after a stride-4
    patch embedding for Hiera; patch 16 for the prompt grid)."""
    grid = image_size // (14 if family_name == "sam3_tracker" else 16)
    common = tiny_head_settings(image_size, grid, num_maskmem, max_object_pointers)
    if family_name == "sam2":
        from transformers import Sam2VideoConfig

        if image_size % 32:
            raise ConfigError(f"tiny SAM 2 image_size must be a multiple of 32, got {image_size}")

        trunk = dict(
            model_type="sam2_hiera_det_model",
            hidden_size=16,
            num_attention_heads=1,
            image_size=[image_size, image_size],
            blocks_per_stage=[1, 2, 2, 1],
            embed_dim_per_stage=[16, 32, 64, 128],
            num_attention_heads_per_stage=[1, 1, 2, 2],
            window_size_per_stage=[4, 4, 4, 2],
            global_attention_blocks=[4],
            window_positional_embedding_background_size=[4, 4],
        )
        vision = dict(
            model_type="sam2_vision_model",
            backbone_config=trunk,
            backbone_channel_list=[128, 64, 32, 16],
            backbone_feature_sizes=[[4 * grid, 4 * grid], [2 * grid, 2 * grid], [grid, grid]],
            fpn_hidden_size=128,
        )
        return Sam2VideoConfig(vision_config=vision, **common)
    if family_name == "sam3_tracker":
        from transformers import Sam3TrackerVideoConfig

        # SAM 3's ViT has patch 14 and an FPN with scale factors 4, 2, 1 (0.5 dropped by the tracker's 3 levels).
        patches = image_size // 14
        if image_size % 14:
            raise ConfigError(f"tiny SAM 3 tracker image_size must be a multiple of 14, got {image_size}")
        backbone = dict(
            model_type="sam3_vit_model",
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=2,
            image_size=image_size,
            patch_size=14,
            window_size=patches // 2 if patches % 2 == 0 else patches,
            global_attn_indexes=[1],
            pretrain_image_size=image_size,
        )
        vision = dict(
            model_type="sam3_vision_model",
            backbone_config=backbone,
            fpn_hidden_size=128,
            backbone_feature_sizes=[[4 * patches, 4 * patches], [2 * patches, 2 * patches], [patches, patches]],
        )
        common["prompt_encoder_config"] = dict(
            hidden_size=128, image_size=image_size, patch_size=14, mask_input_channels=4
        )
        common["memory_attention_rope_feat_sizes"] = [patches, patches]
        return Sam3TrackerVideoConfig(vision_config=vision, **common)
    raise ConfigError(f"no tiny configuration for family {family_name!r} (EdgeTAM's backbone needs timm)")
