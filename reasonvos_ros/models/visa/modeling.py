"""The VISA model (Chat-UniVi LLaMA + CLIP/CTM visual tokens + text_hidden_fcs + SAM) for key-frame segmentation.

Inference path (VISA ``model/VISA.py``, ``inference=True``), one prompt per call:

1. every frame (references, then the target) -> CLIP patch tokens -> three-stage spatial merging -> mm_projector
   -> ``tokens_per_image`` (112) embeddings, see ``vision.VisualTokenizer``;
2. the prompt's token embeddings with each ``IMAGE_TOKEN_INDEX`` placeholder replaced by its frame's embeddings
   (frame k feeds the k-th placeholder) -> LLaMA (transformers ``LlamaForCausalLM``; full causal attention, no
   padding) -> last-layer hidden states after the final RMSNorm;
3. the hidden state at the position that predicts ``[SEG]`` -> ``text_hidden_fcs`` (Linear-ReLU-Linear-Dropout(0))
   -> ``h_seg`` (256-d);
4. SAM (``reasonvos_ros.models.sam.SamTextPromptModel``) on the target frame with ``h_seg`` as the only sparse
   prompt -> mask logits at the frame size.

Parameters are held by ``llm`` (keys exactly as VISA's ``model.embed_tokens/layers/norm`` and ``lm_head``),
``visual`` (CLIP tower + mm_projector), ``text_hidden_fcs`` and ``sam``; ``checkpoint.py`` maps VISA's key names onto
them. All modules are meant for inference (``eval()``, ``torch.no_grad()``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from ..sam import SamConfig, SamTextPromptModel
from .ctm import DEFAULT_STAGES
from .prompt import IMAGE_TOKEN_INDEX, PromptLayout, prompt_layout
from .vision import VisualTokenizer, VisualTokens


@dataclass
class VisaConfig:
    """Everything needed to build the module tree (no weights)."""

    llama: Any  # transformers.LlamaConfig
    clip: Any  # transformers.CLIPVisionConfig
    sam: SamConfig
    seg_token_id: int
    select_layer: int = -2
    cluster_stages: tuple[tuple[float, int], ...] = DEFAULT_STAGES
    out_dim: int = 256
    image_token_index: int = IMAGE_TOKEN_INDEX
    extras: dict[str, Any] = field(default_factory=dict)


@dataclass
class PromptOutput:
    """What the language side produced for one prompt."""

    visual: VisualTokens | None  # None when the visual tokens were given (see encode_prompt_with_tokens)
    layout: PromptLayout
    last_hidden_state: torch.Tensor  # (L_expanded, H) after the final norm
    seg_hidden: torch.Tensor  # (H,)
    h_seg: torch.Tensor  # (out_dim,)


@dataclass
class MaskOutput:
    low_res_logits: torch.Tensor  # (1, 1, 256, 256)
    iou_predictions: torch.Tensor  # (1, 1)
    mask_logits: torch.Tensor  # (H, W) float32 at the frame size
    input_size: tuple[int, int]


def _text_projection(hidden_size: int, out_dim: int) -> nn.ModuleList:
    return nn.ModuleList(
        [
            nn.Sequential(
                nn.Linear(hidden_size, hidden_size), nn.ReLU(), nn.Linear(hidden_size, out_dim), nn.Dropout(0.0)
            )
        ]
    )


class VisaModel(nn.Module):
    """VISA for inference. ``llm_on_meta=True`` builds the language model without allocating its weights (the loader
    then assigns the checkpoint tensors), which is what makes a 7B model loadable without a second copy."""

    def __init__(self, config: VisaConfig, llm_on_meta: bool = False) -> None:
        super().__init__()
        from transformers import LlamaForCausalLM

        self.config = config
        hidden = config.llama.hidden_size
        if llm_on_meta:
            with torch.device("meta"):
                self.llm = LlamaForCausalLM(config.llama)
        else:
            self.llm = LlamaForCausalLM(config.llama)
        self.visual = VisualTokenizer(config.clip, hidden, config.select_layer, config.cluster_stages)
        self.text_hidden_fcs = _text_projection(hidden, config.out_dim)
        self.sam = SamTextPromptModel(config.sam)
        self.eval()

    @property
    def tokens_per_image(self) -> int:
        return self.visual.tokens_per_image

    @property
    def device(self) -> torch.device:
        return self.text_hidden_fcs[0][0].weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.text_hidden_fcs[0][0].weight.dtype

    def layout(self, input_ids: torch.Tensor | Sequence[int]) -> PromptLayout:
        return prompt_layout(input_ids, self.config.seg_token_id, self.tokens_per_image, self.config.image_token_index)

    def embed_prompt(self, layout: PromptLayout, image_embeds: torch.Tensor) -> torch.Tensor:
        """(1, L_expanded, H) inputs_embeds: text embeddings with placeholder k replaced by ``image_embeds[k]``."""
        num_images = len(layout.image_positions)
        if image_embeds.shape[0] != num_images:
            raise ValueError(
                f"the prompt has {num_images} image placeholders but {image_embeds.shape[0]} frames were given"
            )
        if image_embeds.shape[1] != layout.tokens_per_image:
            raise ValueError(f"expected {layout.tokens_per_image} tokens per frame, got {image_embeds.shape[1]}")
        embed = self.llm.get_input_embeddings()
        ids = layout.input_ids.to(embed.weight.device)
        vocab = embed.weight.shape[0]
        text = ids[ids != self.config.image_token_index]
        if text.numel() and (int(text.min()) < 0 or int(text.max()) >= vocab):
            raise ValueError(f"token ids outside the vocabulary 0..{vocab - 1}")
        pieces = []
        start = 0
        for frame, position in enumerate(layout.image_positions):
            pieces.append(embed(ids[start:position]))
            pieces.append(image_embeds[frame].to(embed.weight.dtype))
            start = position + 1
        pieces.append(embed(ids[start:]))
        return torch.cat(pieces, dim=0).unsqueeze(0)

    def language_hidden_states(self, inputs_embeds: torch.Tensor) -> torch.Tensor:
        """Last-layer hidden states (after the final RMSNorm) for a (1, L, H) embedded prompt."""
        out = self.llm.model(inputs_embeds=inputs_embeds, use_cache=False)
        return out.last_hidden_state

    def project_seg_hidden(self, seg_hidden: torch.Tensor) -> torch.Tensor:
        return self.text_hidden_fcs[0](seg_hidden.to(self.dtype))

    @torch.no_grad()
    def encode_prompt(
        self,
        clip_pixel_values: torch.Tensor,
        input_ids: torch.Tensor | Sequence[int],
        noise_fn: Callable[[int, int, torch.Size, torch.Tensor], torch.Tensor] | None = None,
    ) -> PromptOutput:
        """Frames (F, 3, 224, 224) CLIP pixel values, target frame last; ``input_ids`` with F placeholders.
        ``noise_fn(frame, stage, shape, like)`` may supply the clustering's density noise (default torch.rand)."""
        layout = self.layout(input_ids)  # validate the prompt before the vision work
        visual = self.visual(clip_pixel_values.to(self.device), noise_fn)
        return self.encode_prompt_with_tokens(layout, visual.projected, visual)

    @torch.no_grad()
    def encode_prompt_with_tokens(
        self,
        input_ids: torch.Tensor | Sequence[int] | PromptLayout,
        image_embeds: torch.Tensor,
        visual: VisualTokens | None = None,
    ) -> PromptOutput:
        """Language side only, from already projected visual tokens (F, tokens_per_image, H) (e.g. cached per
        frame)."""
        layout = input_ids if isinstance(input_ids, PromptLayout) else self.layout(input_ids)
        inputs_embeds = self.embed_prompt(layout, image_embeds)
        hidden = self.language_hidden_states(inputs_embeds)[0]
        seg_hidden = hidden[layout.seg_hidden_index]
        return PromptOutput(visual, layout, hidden, seg_hidden, self.project_seg_hidden(seg_hidden))

    @torch.no_grad()
    def logits_at(self, hidden: torch.Tensor) -> torch.Tensor:
        """lm_head on hidden state(s) (not needed for masks; exposed for checks)."""
        return self.llm.lm_head(hidden)

    @torch.no_grad()
    def encode_keyframe(self, image_rgb_uint8: np.ndarray) -> tuple[torch.Tensor, tuple[int, int]]:
        """SAM image embeddings of the key frame (computed once per key frame), and its resized input size."""
        pixel_values, input_size = self.sam.preprocess(image_rgb_uint8)
        return self.sam.encode_image(pixel_values), input_size

    @torch.no_grad()
    def decode_mask(
        self,
        image_embeddings: torch.Tensor,
        h_seg: torch.Tensor,
        input_size: tuple[int, int],
        original_size: tuple[int, int],
    ) -> MaskOutput:
        """h_seg (out_dim,) as the single sparse prompt -> mask logits at ``original_size``."""
        low_res, iou = self.sam.decode(image_embeddings, h_seg.reshape(1, 1, -1))
        logits = self.sam.postprocess_masks(low_res, input_size, original_size)[0, 0]
        return MaskOutput(low_res, iou, logits.float(), input_size)
