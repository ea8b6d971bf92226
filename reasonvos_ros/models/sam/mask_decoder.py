"""SAM mask decoder (two-way transformer, mask upscaling, hypernetwork MLPs, IoU head).

The computation is transformers' ``SamMaskDecoder``; this module configures it from a ``SamConfig`` (with the
original decoder's LayerNorm epsilon of 1e-5 inside the two-way transformer, where transformers defaults to 1e-6),
maps the ORIGINAL ``mask_decoder.*`` keys onto it, and exposes the original calling convention: one prompt set per
batch row, the image embedding either shared by all rows (batch 1) or one per row.
"""

from __future__ import annotations

import re

import torch
from torch import nn

from .config import SamConfig
from .key_rules import compile_key_rules, rename_key

# The original two-way transformer and its final norm use torch's default LayerNorm epsilon.
_TRANSFORMER_LAYER_NORM_EPS = 1e-5
_HYPERNETWORK_DEPTH = 3

_FIXED_RULES = compile_key_rules(
    (
        (
            r"^transformer\.layers\.(\d+)\.(self_attn|cross_attn_token_to_image|cross_attn_image_to_token)\."
            r"(q_proj|k_proj|v_proj|out_proj)\.(weight|bias)$",
            r"transformer.layers.\1.\2.\3.\4",
        ),
        (r"^transformer\.layers\.(\d+)\.norm([1-4])\.(weight|bias)$", r"transformer.layers.\1.layer_norm\2.\3"),
        (r"^transformer\.layers\.(\d+)\.mlp\.(lin[12])\.(weight|bias)$", r"transformer.layers.\1.mlp.\2.\3"),
        (
            r"^transformer\.final_attn_token_to_image\.(q_proj|k_proj|v_proj|out_proj)\.(weight|bias)$",
            r"transformer.final_attn_token_to_image.\1.\2",
        ),
        (r"^transformer\.norm_final_attn\.(weight|bias)$", r"transformer.layer_norm_final_attn.\1"),
        (r"^(iou_token|mask_tokens)\.weight$", r"\1.weight"),
        (r"^output_upscaling\.0\.(weight|bias)$", r"upscale_conv1.\1"),
        (r"^output_upscaling\.1\.(weight|bias)$", r"upscale_layer_norm.\1"),
        (r"^output_upscaling\.3\.(weight|bias)$", r"upscale_conv2.\1"),
    )
)
_MLP_RULE = re.compile(r"^(output_hypernetworks_mlps\.\d+|iou_prediction_head)\.layers\.(\d+)\.(weight|bias)$")


def _mlp_layer_name(layer: int, depth: int) -> str | None:
    """The original MLP keeps all its linears in ``layers``; transformers splits them into proj_in/layers/proj_out."""
    if layer == 0:
        return "proj_in"
    if layer == depth - 1:
        return "proj_out"
    if 0 < layer < depth - 1:
        return f"layers.{layer - 1}"
    return None


def internal_key(original_key: str, config: SamConfig) -> str | None:
    """Map an original key (without the ``mask_decoder.`` part prefix) to this module's name, None if unknown."""
    name = rename_key(_FIXED_RULES, original_key)
    if name is not None:
        return name
    match = _MLP_RULE.match(original_key)
    if match:
        owner, layer, leaf = match.group(1), int(match.group(2)), match.group(3)
        depth = config.iou_head_depth if owner == "iou_prediction_head" else _HYPERNETWORK_DEPTH
        name = _mlp_layer_name(layer, depth)
        return None if name is None else f"{owner}.{name}.{leaf}"
    return None


def original_key_shapes(config: SamConfig) -> dict[str, tuple[int, ...]]:
    """Keys and shapes of the original ``mask_decoder`` state dict (without the part prefix)."""
    dim = config.prompt_embed_dim
    internal = dim // config.attention_downsample_rate
    shapes: dict[str, tuple[int, ...]] = {}

    def attention(name: str, inner: int) -> None:
        for proj in ("q_proj", "k_proj", "v_proj"):
            shapes[f"{name}.{proj}.weight"] = (inner, dim)
            shapes[f"{name}.{proj}.bias"] = (inner,)
        shapes[f"{name}.out_proj.weight"] = (dim, inner)
        shapes[f"{name}.out_proj.bias"] = (dim,)

    def norm(name: str, width: int) -> None:
        shapes[f"{name}.weight"] = (width,)
        shapes[f"{name}.bias"] = (width,)

    for index in range(config.decoder_depth):
        layer = f"transformer.layers.{index}"
        attention(f"{layer}.self_attn", dim)
        norm(f"{layer}.norm1", dim)
        attention(f"{layer}.cross_attn_token_to_image", internal)
        norm(f"{layer}.norm2", dim)
        shapes[f"{layer}.mlp.lin1.weight"] = (config.decoder_mlp_dim, dim)
        shapes[f"{layer}.mlp.lin1.bias"] = (config.decoder_mlp_dim,)
        shapes[f"{layer}.mlp.lin2.weight"] = (dim, config.decoder_mlp_dim)
        shapes[f"{layer}.mlp.lin2.bias"] = (dim,)
        norm(f"{layer}.norm3", dim)
        norm(f"{layer}.norm4", dim)
        attention(f"{layer}.cross_attn_image_to_token", internal)
    attention("transformer.final_attn_token_to_image", internal)
    norm("transformer.norm_final_attn", dim)
    num_mask_tokens = config.num_multimask_outputs + 1
    shapes["iou_token.weight"] = (1, dim)
    shapes["mask_tokens.weight"] = (num_mask_tokens, dim)
    shapes["output_upscaling.0.weight"] = (dim, dim // 4, 2, 2)
    shapes["output_upscaling.0.bias"] = (dim // 4,)
    norm("output_upscaling.1", dim // 4)
    shapes["output_upscaling.3.weight"] = (dim // 4, dim // 8, 2, 2)
    shapes["output_upscaling.3.bias"] = (dim // 8,)
    for token in range(num_mask_tokens):
        widths = [dim] * _HYPERNETWORK_DEPTH + [dim // 8]
        for layer in range(_HYPERNETWORK_DEPTH):
            shapes[f"output_hypernetworks_mlps.{token}.layers.{layer}.weight"] = (widths[layer + 1], widths[layer])
            shapes[f"output_hypernetworks_mlps.{token}.layers.{layer}.bias"] = (widths[layer + 1],)
    widths = [dim] + [config.iou_head_hidden_dim] * (config.iou_head_depth - 1) + [num_mask_tokens]
    for layer in range(config.iou_head_depth):
        shapes[f"iou_prediction_head.layers.{layer}.weight"] = (widths[layer + 1], widths[layer])
        shapes[f"iou_prediction_head.layers.{layer}.bias"] = (widths[layer + 1],)
    return shapes


def _hf_config(config: SamConfig, attn_implementation: str):
    from transformers import SamMaskDecoderConfig

    decoder_config = SamMaskDecoderConfig(
        hidden_size=config.prompt_embed_dim,
        hidden_act="relu",
        mlp_dim=config.decoder_mlp_dim,
        num_hidden_layers=config.decoder_depth,
        num_attention_heads=config.decoder_num_heads,
        attention_downsample_rate=config.attention_downsample_rate,
        num_multimask_outputs=config.num_multimask_outputs,
        iou_head_depth=config.iou_head_depth,
        iou_head_hidden_dim=config.iou_head_hidden_dim,
        layer_norm_eps=_TRANSFORMER_LAYER_NORM_EPS,
    )
    decoder_config._attn_implementation = attn_implementation
    return decoder_config


class SamMaskDecoderModule(nn.Module):
    """(image embeddings, dense PE, sparse/dense prompts) -> (mask logits (B, m, 4g, 4g), IoU predictions (B, m)).

    ``m`` is 1 with ``multimask_output=False`` (mask token 0, as VISA uses it) and ``num_multimask_outputs``
    otherwise.
    """

    def __init__(self, config: SamConfig, attn_implementation: str = "sdpa"):
        super().__init__()
        from transformers.models.sam.modeling_sam import SamMaskDecoder

        self.config = config
        self.decoder = SamMaskDecoder(_hf_config(config, attn_implementation))

    def forward(
        self,
        image_embeddings: torch.Tensor,
        image_pe: torch.Tensor,
        sparse_prompt_embeddings: torch.Tensor,
        dense_prompt_embeddings: torch.Tensor,
        multimask_output: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        dim, grid = self.config.prompt_embed_dim, self.config.image_embedding_size
        if sparse_prompt_embeddings.ndim != 3 or sparse_prompt_embeddings.shape[-1] != dim:
            raise ValueError(
                f"sparse prompt embeddings must be (B, n, {dim}), got {tuple(sparse_prompt_embeddings.shape)}"
            )
        batch = sparse_prompt_embeddings.shape[0]
        grid_shape = (dim, grid, grid)
        if image_embeddings.ndim != 4 or tuple(image_embeddings.shape[1:]) != grid_shape:
            raise ValueError(
                f"image embeddings must be (B, {dim}, {grid}, {grid}), got {tuple(image_embeddings.shape)}"
            )
        if image_embeddings.shape[0] not in (1, batch):
            raise ValueError(
                f"image embeddings batch {image_embeddings.shape[0]} must be 1 (shared) or match the {batch} prompts"
            )
        if tuple(dense_prompt_embeddings.shape[1:]) != grid_shape or dense_prompt_embeddings.shape[0] not in (1, batch):
            raise ValueError(
                f"dense prompt embeddings must be (1 or {batch}, {dim}, {grid}, {grid}), "
                f"got {tuple(dense_prompt_embeddings.shape)}"
            )
        # One prompt set per batch row: transformers' layout is (batch, point_batch=1, tokens, dim); a shared image
        # embedding is expanded to every row, as the original repeats it per prompt.
        image_embeddings = image_embeddings.expand(batch, *grid_shape)
        masks, iou = self.decoder(
            image_embeddings=image_embeddings,
            image_positional_embeddings=image_pe,
            sparse_prompt_embeddings=sparse_prompt_embeddings.unsqueeze(1),
            dense_prompt_embeddings=dense_prompt_embeddings,
            multimask_output=multimask_output,
        )
        return masks.squeeze(1), iou.squeeze(1)
