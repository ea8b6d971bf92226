"""SAM (segment-anything) with VISA's text prompt, loading the original ``sam_vit_*.pth`` key layout.

Public API: ``SamConfig`` (dimensions, presets, inference from checkpoint shapes), ``SamTextPromptModel``
(preprocess / encode_image / decode / postprocess_masks / segment), ``load_sam_checkpoint`` and
``SamCheckpointError``. The network layers are transformers' SAM modules; see each part's module.
"""

from .checkpoint import load_sam_checkpoint, original_key_shapes, random_original_state_dict
from .config import SAM_PRESETS, SamCheckpointError, SamConfig
from .model import SamTextPromptModel

__all__ = [
    "SAM_PRESETS",
    "SamCheckpointError",
    "SamConfig",
    "SamTextPromptModel",
    "load_sam_checkpoint",
    "original_key_shapes",
    "random_original_state_dict",
]
