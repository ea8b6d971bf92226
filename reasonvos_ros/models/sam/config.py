"""SAM configuration: the hyper-parameters of segment-anything's ``Sam`` (image encoder, prompt encoder, mask decoder).

``SamConfig.from_state_dict`` infers a configuration from the tensor shapes of a checkpoint in the ORIGINAL
segment-anything layout (keys ``image_encoder.*``, ``prompt_encoder.*``, ``mask_decoder.*``, optionally behind a
prefix such as VISA's ``model.visual_model.``). What shapes determine: encoder width/depth/patch/image size, the
head count (from the relative-position tables, whose width is the head dimension), the global-attention blocks and
the window size (from the length of each block's relative-position table), MLP ratio, neck channels, the mask
decoder's depth/MLP width/attention down-sampling/number of mask tokens and the IoU head. What shapes cannot show,
the mask decoder's head count (8 in every SAM), is taken from the argument ``decoder_num_heads``.

Presets (``SAM_PRESETS``, from the segment-anything paper/code): ViT-B 768 wide, 12 blocks, 12 heads, global
attention in blocks 2/5/8/11; ViT-L 1024, 24, 16, 5/11/17/23; ViT-H 1280, 32, 16, 7/15/23/31
(``sam_vit_h_4b8939.pth``, the one VISA uses). All share image size 1024, patch 16, window 14, MLP ratio 4,
prompt dimension 256 and the same prompt encoder / mask decoder.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..weights import WeightsError

PIXEL_MEAN = (123.675, 116.28, 103.53)
PIXEL_STD = (58.395, 57.12, 57.375)


class SamCheckpointError(WeightsError):
    """A state dict that is not a SAM checkpoint in the original layout (or does not fit the configuration)."""


@dataclass
class SamConfig:
    """Hyper-parameters of a SAM model; defaults are ViT-H (``sam_vit_h_4b8939.pth``)."""

    encoder_embed_dim: int = 1280
    encoder_depth: int = 32
    encoder_num_heads: int = 16
    encoder_global_attn_indexes: tuple[int, ...] = (7, 15, 23, 31)
    image_size: int = 1024
    patch_size: int = 16
    in_channels: int = 3
    window_size: int = 14
    mlp_ratio: float = 4.0
    qkv_bias: bool = True
    use_rel_pos: bool = True
    encoder_layer_norm_eps: float = 1e-6
    prompt_embed_dim: int = 256
    mask_in_chans: int = 16
    decoder_depth: int = 2
    decoder_mlp_dim: int = 2048
    decoder_num_heads: int = 8
    attention_downsample_rate: int = 2
    num_multimask_outputs: int = 3
    iou_head_depth: int = 3
    iou_head_hidden_dim: int = 256
    pixel_mean: tuple[float, float, float] = field(default=PIXEL_MEAN)
    pixel_std: tuple[float, float, float] = field(default=PIXEL_STD)

    def __post_init__(self) -> None:
        self.encoder_global_attn_indexes = tuple(int(i) for i in self.encoder_global_attn_indexes)
        problems = []
        if self.image_size % self.patch_size:
            problems.append(f"image_size {self.image_size} is not a multiple of patch_size {self.patch_size}")
        if self.encoder_embed_dim % self.encoder_num_heads:
            problems.append(
                f"encoder_embed_dim {self.encoder_embed_dim} not divisible by {self.encoder_num_heads} heads"
            )
        bad = [i for i in self.encoder_global_attn_indexes if not 0 <= i < self.encoder_depth]
        if bad:
            problems.append(f"global attention indexes {bad} outside 0..{self.encoder_depth - 1}")
        internal = self.prompt_embed_dim // self.attention_downsample_rate
        if self.prompt_embed_dim % self.decoder_num_heads or internal % self.decoder_num_heads:
            problems.append(
                f"prompt_embed_dim {self.prompt_embed_dim} (and /{self.attention_downsample_rate}) not divisible by "
                f"{self.decoder_num_heads} decoder heads"
            )
        if self.prompt_embed_dim % 8:
            problems.append(f"prompt_embed_dim {self.prompt_embed_dim} must be a multiple of 8 (mask upscaling)")
        if self.iou_head_depth < 2:
            problems.append(f"iou_head_depth must be >= 2, got {self.iou_head_depth}")
        if problems:
            raise ValueError("invalid SamConfig: " + "; ".join(problems))

    @property
    def image_embedding_size(self) -> int:
        """Side of the image-embedding grid (64 for 1024 / 16)."""
        return self.image_size // self.patch_size

    @property
    def encoder_mlp_dim(self) -> int:
        return int(self.encoder_embed_dim * self.mlp_ratio)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def preset(cls, name: str) -> SamConfig:
        """``"vit_b"``, ``"vit_l"`` or ``"vit_h"``."""
        key = name.lower().replace("-", "_")
        if key not in SAM_PRESETS:
            raise ValueError(f"unknown SAM preset {name!r}; known: {', '.join(sorted(SAM_PRESETS))}")
        return cls(**SAM_PRESETS[key])

    @classmethod
    def from_state_dict(cls, state_dict: Mapping[str, Any], prefix: str = "", decoder_num_heads: int = 8) -> SamConfig:
        """Infer the configuration from the shapes of an original-layout state dict (values: tensors, arrays or
        plain shape tuples) whose SAM keys start with ``prefix``; other keys are ignored."""
        shapes = {}
        for key, value in state_dict.items():
            if not key.startswith(prefix):
                continue
            shape = value if isinstance(value, (tuple, list)) else getattr(value, "shape", None)
            if shape is None:
                raise SamCheckpointError(f"value of {key!r} is neither a tensor/array nor a shape")
            shapes[key[len(prefix) :]] = tuple(int(s) for s in shape)
        return cls._from_shapes(shapes, prefix, decoder_num_heads)

    @classmethod
    def _from_shapes(cls, shapes: dict[str, tuple[int, ...]], prefix: str, decoder_num_heads: int) -> SamConfig:
        def need(key: str, ndim: int) -> tuple[int, ...]:
            if key not in shapes:
                hint = ""
                if not shapes:
                    hint = f" (no key starts with the prefix {prefix!r})"
                raise SamCheckpointError(f"SAM state dict lacks {prefix + key!r}{hint}")
            if len(shapes[key]) != ndim:
                raise SamCheckpointError(f"{prefix + key!r} has shape {shapes[key]}, expected {ndim} dimensions")
            return shapes[key]

        embed_dim, in_channels, patch_size, _ = need("image_encoder.patch_embed.proj.weight", 4)
        _, grid_h, grid_w, _ = need("image_encoder.pos_embed", 4)
        if grid_h != grid_w:
            raise SamCheckpointError(f"non-square position embedding grid {grid_h}x{grid_w} is not supported")
        depth = 0
        while f"image_encoder.blocks.{depth}.norm1.weight" in shapes:
            depth += 1
        if depth == 0:
            raise SamCheckpointError(f"SAM state dict has no {prefix}image_encoder.blocks.0.* keys")
        rel_lengths = []
        head_dim = None
        for index in range(depth):
            key = f"image_encoder.blocks.{index}.attn.rel_pos_h"
            if key not in shapes:
                raise SamCheckpointError(
                    f"{prefix + key!r} missing: only SAM encoders with relative positions (all released SAMs) are "
                    "supported, and the head count is read from these tables"
                )
            length, width = need(key, 2)
            rel_lengths.append(length)
            head_dim = width
        global_length = 2 * grid_h - 1
        global_indexes = tuple(i for i, n in enumerate(rel_lengths) if n == global_length)
        window_lengths = {n for n in rel_lengths if n != global_length}
        if len(window_lengths) > 1:
            raise SamCheckpointError(f"blocks use different window sizes (rel-pos lengths {sorted(window_lengths)})")
        window_size = (window_lengths.pop() + 1) // 2 if window_lengths else 14
        mlp_dim = need("image_encoder.blocks.0.mlp.lin1.weight", 2)[0]
        prompt_dim = need("image_encoder.neck.0.weight", 4)[0]
        decoder_depth = 0
        while f"mask_decoder.transformer.layers.{decoder_depth}.norm1.weight" in shapes:
            decoder_depth += 1
        iou_depth = 0
        while f"mask_decoder.iou_prediction_head.layers.{iou_depth}.weight" in shapes:
            iou_depth += 1
        internal_dim = need("mask_decoder.transformer.final_attn_token_to_image.q_proj.weight", 2)[0]
        return cls(
            encoder_embed_dim=embed_dim,
            encoder_depth=depth,
            encoder_num_heads=embed_dim // head_dim,
            encoder_global_attn_indexes=global_indexes,
            image_size=grid_h * patch_size,
            patch_size=patch_size,
            in_channels=in_channels,
            window_size=window_size,
            mlp_ratio=mlp_dim / embed_dim,
            qkv_bias="image_encoder.blocks.0.attn.qkv.bias" in shapes,
            prompt_embed_dim=prompt_dim,
            mask_in_chans=need("prompt_encoder.mask_downscaling.3.weight", 4)[0],
            decoder_depth=decoder_depth,
            decoder_mlp_dim=need("mask_decoder.transformer.layers.0.mlp.lin1.weight", 2)[0],
            decoder_num_heads=decoder_num_heads,
            attention_downsample_rate=prompt_dim // internal_dim,
            num_multimask_outputs=need("mask_decoder.mask_tokens.weight", 2)[0] - 1,
            iou_head_depth=iou_depth,
            iou_head_hidden_dim=need("mask_decoder.iou_prediction_head.layers.0.weight", 2)[0],
        )


_SHARED: dict[str, Any] = {"image_size": 1024, "patch_size": 16, "window_size": 14, "prompt_embed_dim": 256}
SAM_PRESETS: dict[str, dict[str, Any]] = {
    "vit_b": {
        **_SHARED,
        "encoder_embed_dim": 768,
        "encoder_depth": 12,
        "encoder_num_heads": 12,
        "encoder_global_attn_indexes": (2, 5, 8, 11),
    },
    "vit_l": {
        **_SHARED,
        "encoder_embed_dim": 1024,
        "encoder_depth": 24,
        "encoder_num_heads": 16,
        "encoder_global_attn_indexes": (5, 11, 17, 23),
    },
    "vit_h": {
        **_SHARED,
        "encoder_embed_dim": 1280,
        "encoder_depth": 32,
        "encoder_num_heads": 16,
        "encoder_global_attn_indexes": (7, 15, 23, 31),
    },
}
