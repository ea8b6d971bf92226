"""SAM image encoder (ViT with windowed/global attention and relative positions, plus the 256-channel neck).

The computation is transformers' ``SamVisionEncoder`` (no torchvision needed); this module configures it from a
``SamConfig`` and maps the ORIGINAL segment-anything key layout (``image_encoder.*`` in ``sam_vit_*.pth``) onto it.
"""

from __future__ import annotations

import torch
from torch import nn

from .config import SamConfig
from .key_rules import compile_key_rules, rename_key

# original name (after "image_encoder.") -> transformers SamVisionEncoder name
_KEY_RULES = compile_key_rules(
    (
        (r"^pos_embed$", "pos_embed"),
        (r"^patch_embed\.proj\.(weight|bias)$", r"patch_embed.projection.\1"),
        (r"^blocks\.(\d+)\.norm([12])\.(weight|bias)$", r"layers.\1.layer_norm\2.\3"),
        (r"^blocks\.(\d+)\.attn\.(qkv|proj)\.(weight|bias)$", r"layers.\1.attn.\2.\3"),
        (r"^blocks\.(\d+)\.attn\.(rel_pos_h|rel_pos_w)$", r"layers.\1.attn.\2"),
        (r"^blocks\.(\d+)\.mlp\.(lin[12])\.(weight|bias)$", r"layers.\1.mlp.\2.\3"),
        (r"^neck\.0\.weight$", "neck.conv1.weight"),
        (r"^neck\.1\.(weight|bias)$", r"neck.layer_norm1.\1"),
        (r"^neck\.2\.weight$", "neck.conv2.weight"),
        (r"^neck\.3\.(weight|bias)$", r"neck.layer_norm2.\1"),
    )
)


def internal_key(original_key: str) -> str | None:
    """Map an original key (without the ``image_encoder.`` part prefix) to this module's name, None if unknown."""
    return rename_key(_KEY_RULES, original_key)


def original_key_shapes(config: SamConfig) -> dict[str, tuple[int, ...]]:
    """Keys and shapes of the original ``image_encoder`` state dict for ``config`` (without the part prefix)."""
    dim, grid = config.encoder_embed_dim, config.image_embedding_size
    head_dim = dim // config.encoder_num_heads
    shapes: dict[str, tuple[int, ...]] = {
        "pos_embed": (1, grid, grid, dim),
        "patch_embed.proj.weight": (dim, config.in_channels, config.patch_size, config.patch_size),
        "patch_embed.proj.bias": (dim,),
    }
    for index in range(config.encoder_depth):
        span = grid if index in config.encoder_global_attn_indexes else config.window_size
        block = f"blocks.{index}."
        shapes[block + "norm1.weight"] = (dim,)
        shapes[block + "norm1.bias"] = (dim,)
        shapes[block + "attn.rel_pos_h"] = (2 * span - 1, head_dim)
        shapes[block + "attn.rel_pos_w"] = (2 * span - 1, head_dim)
        shapes[block + "attn.qkv.weight"] = (3 * dim, dim)
        if config.qkv_bias:
            shapes[block + "attn.qkv.bias"] = (3 * dim,)
        shapes[block + "attn.proj.weight"] = (dim, dim)
        shapes[block + "attn.proj.bias"] = (dim,)
        shapes[block + "norm2.weight"] = (dim,)
        shapes[block + "norm2.bias"] = (dim,)
        shapes[block + "mlp.lin1.weight"] = (config.encoder_mlp_dim, dim)
        shapes[block + "mlp.lin1.bias"] = (config.encoder_mlp_dim,)
        shapes[block + "mlp.lin2.weight"] = (dim, config.encoder_mlp_dim)
        shapes[block + "mlp.lin2.bias"] = (dim,)
    out = config.prompt_embed_dim
    shapes.update(
        {
            "neck.0.weight": (out, dim, 1, 1),
            "neck.1.weight": (out,),
            "neck.1.bias": (out,),
            "neck.2.weight": (out, out, 3, 3),
            "neck.3.weight": (out,),
            "neck.3.bias": (out,),
        }
    )
    return shapes


def _vision_config(config: SamConfig, attn_implementation: str):
    from transformers import SamVisionConfig

    vision_config = SamVisionConfig(
        hidden_size=config.encoder_embed_dim,
        output_channels=config.prompt_embed_dim,
        num_hidden_layers=config.encoder_depth,
        num_attention_heads=config.encoder_num_heads,
        num_channels=config.in_channels,
        image_size=config.image_size,
        patch_size=config.patch_size,
        hidden_act="gelu",  # exact (erf) GELU, as nn.GELU in the original
        layer_norm_eps=config.encoder_layer_norm_eps,
        qkv_bias=config.qkv_bias,
        mlp_ratio=config.mlp_ratio,
        use_abs_pos=True,
        use_rel_pos=config.use_rel_pos,
        window_size=config.window_size,
        global_attn_indexes=list(config.encoder_global_attn_indexes),
        num_pos_feats=config.prompt_embed_dim // 2,
        mlp_dim=config.encoder_mlp_dim,
    )
    vision_config._attn_implementation = attn_implementation
    return vision_config


class SamImageEncoder(nn.Module):
    """Padded, normalised 1x3xSxS images -> image embeddings (B, prompt_embed_dim, S/16, S/16)."""

    def __init__(self, config: SamConfig, attn_implementation: str = "sdpa"):
        super().__init__()
        from transformers.models.sam.modeling_sam import SamVisionEncoder

        self.config = config
        self.vision = SamVisionEncoder(_vision_config(config, attn_implementation))

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        expected = (self.config.in_channels, self.config.image_size, self.config.image_size)
        if pixel_values.ndim != 4 or tuple(pixel_values.shape[1:]) != expected:
            raise ValueError(
                f"pixel_values must be (B, {expected[0]}, {expected[1]}, {expected[2]}) (use preprocess()), "
                f"got {tuple(pixel_values.shape)}"
            )
        return self.vision(pixel_values).last_hidden_state
