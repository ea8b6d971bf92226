"""``SamTextPromptModel``: SAM driven by one text embedding per prompt, as in VISA.

Pipeline (VISA's evaluation path): ``preprocess`` (longest side -> image size with Pillow-exact bilinear, normalise,
zero-pad) -> ``encode_image`` -> ``decode`` (the text embedding h_seg, (B, n, 256), is the only sparse prompt; the
dense prompt is the no-mask embedding; ``multimask_output=False``) -> ``postprocess_masks`` (upsample, crop the
padding, resize to the frame); mask = logits > 0. Weights come from the ORIGINAL segment-anything layout
(``load_original_state_dict``), optionally behind a prefix such as VISA's ``model.visual_model.``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import nn

from ..weights import LoadReport
from .checkpoint import convert_original_state_dict
from .config import SamCheckpointError, SamConfig
from .image_encoder import SamImageEncoder
from .mask_decoder import SamMaskDecoderModule
from .preprocess import postprocess_masks, preprocess_image
from .prompt_encoder import SamTextPromptEncoder


class SamTextPromptModel(nn.Module):
    """SAM image encoder + text-prompt encoder + mask decoder. Call ``eval()`` and use under ``torch.no_grad()``
    for inference (``segment`` does both for you)."""

    def __init__(self, config: SamConfig, attn_implementation: str = "sdpa"):
        super().__init__()
        if attn_implementation not in ("sdpa", "eager"):
            raise ValueError(f"attn_implementation must be 'sdpa' or 'eager', got {attn_implementation!r}")
        self.config = config
        self.image_encoder = SamImageEncoder(config, attn_implementation)
        self.prompt_encoder = SamTextPromptEncoder(config)
        self.mask_decoder = SamMaskDecoderModule(config, attn_implementation)

    @classmethod
    def from_original_state_dict(
        cls,
        state_dict: Mapping[str, Any],
        prefix: str = "",
        strict: bool = True,
        dtype: torch.dtype = torch.float32,
        decoder_num_heads: int = 8,
        **kwargs: Any,
    ) -> SamTextPromptModel:
        """Build with the configuration inferred from the checkpoint's shapes, load it, return it in eval mode.

        A complete checkpoint is loaded without first initialising random weights (the modules are built on the
        meta device and take the checkpoint's tensors, cast to ``dtype``): ViT-H builds in well under a second
        instead of ~10 s. An incomplete one (only with ``strict=False``) is loaded over a random initialisation.
        Tensors that need no cast are used as they are (shared with ``state_dict``, not copied: a ViT-H checkpoint
        is 2.6 GB). ``decoder_num_heads`` is the one setting shapes cannot reveal (8 in every released SAM).
        """
        config = SamConfig.from_state_dict(state_dict, prefix, decoder_num_heads=decoder_num_heads)
        converted, report = convert_original_state_dict(state_dict, config, prefix)
        if report.ok:
            with torch.device("meta"):
                model = cls(config, **kwargs)
            tensors = {name: tensor.to(dtype) for name, tensor in converted.items()}
            model.load_state_dict(tensors, strict=True, assign=True)
            return model.eval()
        if strict:
            raise SamCheckpointError(str(report))
        model = cls(config, **kwargs).to(dtype)
        model.load_original_state_dict(state_dict, prefix=prefix, strict=False)
        return model.eval()

    def load_original_state_dict(
        self, state_dict: Mapping[str, Any], prefix: str = "", strict: bool = True
    ) -> LoadReport:
        """Load original-layout SAM weights found under ``prefix``; keys outside the prefix are ignored (so a whole
        VISA checkpoint can be passed). ``strict`` raises ``SamCheckpointError`` with the report when any key is
        missing, unexpected or mis-shaped; otherwise what matches is loaded and the report says what did not."""
        converted, report = convert_original_state_dict(state_dict, self.config, prefix)
        if strict and not report.ok:
            raise SamCheckpointError(str(report))
        if not converted and not strict:
            raise SamCheckpointError(f"no SAM weights under the prefix {prefix!r}\n{report}")
        result = self.load_state_dict(converted, strict=False)
        # Either list being non-empty for a complete checkpoint is a bug in the key mapping, not in the file.
        if result.unexpected_keys or (report.ok and result.missing_keys):
            raise RuntimeError(
                "SAM key mapping does not match the modules: "
                f"unknown {result.unexpected_keys[:5]}, not filled {result.missing_keys[:5]}"
            )
        return report

    def preprocess(self, image_rgb_uint8: np.ndarray) -> tuple[torch.Tensor, tuple[int, int]]:
        """HxWx3 uint8 RGB -> (pixel_values 1x3xSxS float32, input_size (h, w) of the resized, unpadded image)."""
        pixel_values, input_size = preprocess_image(image_rgb_uint8, self.config.image_size)
        return pixel_values.to(self._device), input_size

    def encode_image(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) -> image embeddings (B, 256, S/16, S/16)."""
        return self.image_encoder(pixel_values.to(self._device, self._dtype))

    def decode(self, image_embeddings: torch.Tensor, text_embeds: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Image embeddings (1 or B, 256, g, g) + text embeddings (B, n, 256) -> (low-res logits (B, 1, 4g, 4g),
        IoU predictions (B, 1)). A batch-1 image embedding is shared by all B prompts."""
        sparse, dense = self.prompt_encoder(text_embeds.to(self._device, self._dtype))
        return self.mask_decoder(
            image_embeddings=image_embeddings.to(self._device, self._dtype),
            image_pe=self.prompt_encoder.get_dense_pe(),
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            multimask_output=False,
        )

    def postprocess_masks(
        self, low_res_logits: torch.Tensor, input_size: tuple[int, int], original_size: tuple[int, int]
    ) -> torch.Tensor:
        """Low-res logits -> logits at the original frame size (float32)."""
        return postprocess_masks(low_res_logits, input_size, original_size, self.config.image_size)

    @torch.no_grad()
    def segment(self, image_rgb_uint8: np.ndarray, text_embeds: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Whole pipeline for one frame: -> (mask logits (B, 1, H, W) at the frame size, IoU (B, 1)).
        ``mask = logits > 0``."""
        was_training = self.training
        self.eval()
        try:
            image = np.asarray(image_rgb_uint8)
            pixel_values, input_size = self.preprocess(image)
            embeddings = self.encode_image(pixel_values)
            low_res, iou = self.decode(embeddings, text_embeds)
            return self.postprocess_masks(low_res, input_size, image.shape[:2]), iou
        finally:
            self.train(was_training)

    @property
    def _device(self) -> torch.device:
        return self.prompt_encoder.prompt.no_mask_embed.weight.device

    @property
    def _dtype(self) -> torch.dtype:
        return self.prompt_encoder.prompt.no_mask_embed.weight.dtype
