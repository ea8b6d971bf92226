"""SAM prompt encoder as VISA uses it: the text embedding is the only sparse prompt, the dense prompt is "no mask".

VISA's vendored segment_anything adds a ``text_embeds`` argument to the prompt encoder; with no points, boxes or
masks the sparse embedding is exactly ``text_embeds`` and the dense embedding is the ``no_mask_embed`` vector
broadcast over the image-embedding grid. The module also provides the dense positional encoding of that grid
(``get_dense_pe``: random-Fourier features of the cell centres) that the mask decoder needs.

The parameters live in transformers' ``SamPromptEncoder`` (so point/box/mask embeddings of a full checkpoint load
too), but only the text path is implemented here: point, box and mask prompts are not supported by this class.
"""

from __future__ import annotations

import torch
from torch import nn

from .config import SamConfig
from .key_rules import compile_key_rules, rename_key

_KEY_RULES = compile_key_rules(
    (
        (r"^pe_layer\.positional_encoding_gaussian_matrix$", "shared_embedding.positional_embedding"),
        (r"^point_embeddings\.(\d+)\.weight$", r"point_embed.\1.weight"),
        (r"^not_a_point_embed\.weight$", "not_a_point_embed.weight"),
        (r"^no_mask_embed\.weight$", "no_mask_embed.weight"),
        (r"^mask_downscaling\.0\.(weight|bias)$", r"mask_embed.conv1.\1"),
        (r"^mask_downscaling\.1\.(weight|bias)$", r"mask_embed.layer_norm1.\1"),
        (r"^mask_downscaling\.3\.(weight|bias)$", r"mask_embed.conv2.\1"),
        (r"^mask_downscaling\.4\.(weight|bias)$", r"mask_embed.layer_norm2.\1"),
        (r"^mask_downscaling\.6\.(weight|bias)$", r"mask_embed.conv3.\1"),
    )
)

_NUM_POINT_EMBEDDINGS = 4  # positive point, negative point, box corner 1, box corner 2


def internal_key(original_key: str) -> str | None:
    """Map an original key (without the ``prompt_encoder.`` part prefix) to this module's name, None if unknown."""
    return rename_key(_KEY_RULES, original_key)


def original_key_shapes(config: SamConfig) -> dict[str, tuple[int, ...]]:
    """Keys and shapes of the original ``prompt_encoder`` state dict (without the part prefix)."""
    dim, mask_chans = config.prompt_embed_dim, config.mask_in_chans
    shapes: dict[str, tuple[int, ...]] = {"pe_layer.positional_encoding_gaussian_matrix": (2, dim // 2)}
    for index in range(_NUM_POINT_EMBEDDINGS):
        shapes[f"point_embeddings.{index}.weight"] = (1, dim)
    shapes["not_a_point_embed.weight"] = (1, dim)
    quarter = mask_chans // 4
    shapes.update(
        {
            "mask_downscaling.0.weight": (quarter, 1, 2, 2),
            "mask_downscaling.0.bias": (quarter,),
            "mask_downscaling.1.weight": (quarter,),
            "mask_downscaling.1.bias": (quarter,),
            "mask_downscaling.3.weight": (mask_chans, quarter, 2, 2),
            "mask_downscaling.3.bias": (mask_chans,),
            "mask_downscaling.4.weight": (mask_chans,),
            "mask_downscaling.4.bias": (mask_chans,),
            "mask_downscaling.6.weight": (dim, mask_chans, 1, 1),
            "mask_downscaling.6.bias": (dim,),
            "no_mask_embed.weight": (1, dim),
        }
    )
    return shapes


def _hf_config(config: SamConfig):
    from transformers import SamConfig as HFSamConfig
    from transformers import SamPromptEncoderConfig, SamVisionConfig

    # The prompt encoder reads only the positional-feature count from the vision config.
    vision = SamVisionConfig(
        hidden_size=config.prompt_embed_dim,
        num_hidden_layers=1,
        num_attention_heads=1,
        output_channels=config.prompt_embed_dim,
        num_pos_feats=config.prompt_embed_dim // 2,
        image_size=config.image_size,
        patch_size=config.patch_size,
        global_attn_indexes=[0],
    )
    prompt = SamPromptEncoderConfig(
        hidden_size=config.prompt_embed_dim,
        image_size=config.image_size,
        patch_size=config.patch_size,
        mask_input_channels=config.mask_in_chans,
        num_point_embeddings=_NUM_POINT_EMBEDDINGS,
        hidden_act="gelu",
        layer_norm_eps=1e-6,
    )
    return HFSamConfig(vision_config=vision.to_dict(), prompt_encoder_config=prompt.to_dict())


class SamTextPromptEncoder(nn.Module):
    """Text embeddings (B, n, D) -> (sparse (B, n, D), dense (B, D, g, g)); ``get_dense_pe()`` -> (1, D, g, g)."""

    def __init__(self, config: SamConfig):
        super().__init__()
        from transformers.models.sam.modeling_sam import SamPromptEncoder

        self.config = config
        self.prompt = SamPromptEncoder(_hf_config(config))

    def forward(self, text_embeds: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        dim, grid = self.config.prompt_embed_dim, self.config.image_embedding_size
        if text_embeds.ndim != 3 or text_embeds.shape[-1] != dim:
            raise ValueError(f"text_embeds must be (B, n, {dim}), got {tuple(text_embeds.shape)}")
        no_mask = self.prompt.no_mask_embed.weight
        sparse = text_embeds.to(no_mask.dtype)
        dense = no_mask.reshape(1, dim, 1, 1).expand(text_embeds.shape[0], dim, grid, grid)
        return sparse, dense

    def get_dense_pe(self) -> torch.Tensor:
        """Positional encoding of the image-embedding grid at the cell centres, (1, D, g, g)."""
        grid = self.config.image_embedding_size
        gaussian = self.prompt.shared_embedding.positional_embedding
        centres = (torch.arange(grid, dtype=gaussian.dtype, device=gaussian.device) + 0.5) / grid
        rows, cols = torch.meshgrid(centres, centres, indexing="ij")
        coordinates = torch.stack([cols, rows], dim=-1)  # (x, y) per cell
        encoding = self.prompt.shared_embedding(coordinates[None, None])[0, 0]  # (g, g, D)
        return encoding.permute(2, 0, 1).unsqueeze(0)
