"""A box / point prompt -> mask on one frame, with a SAM-family image model from stock transformers.

Supported checkpoint directories (``config.json`` ``model_type``):

* ``sam2`` -> ``Sam2Model`` (SAM 2 / 2.1, e.g. ``facebook/sam2.1-hiera-large``): the frame is resized to a square
  ``image_size`` (1024) ignoring the aspect ratio, scaled to [0, 1], normalised with ImageNet mean/std -- what
  ``Sam2ImageProcessor`` does (size {"height": 1024, "width": 1024}, bilinear, IMAGENET_DEFAULT_MEAN/STD); prompt
  coordinates are scaled per axis by the same factors (``Sam2Processor._normalize_coordinates``).
* ``sam3_tracker`` (or the whole-SAM-3 ``sam3`` / ``sam3_video`` of ``facebook/sam3``) -> ``Sam3TrackerModel``
  (the SAM 3 tracker's image path): the same with image size 1008 and mean/std 0.5.

The processors are not used because they need torchvision (see ``chat.py``); a ``preprocessor_config.json`` in the
directory overrides size and normalisation. The decoder's single best mask (``multimask_output=False``) is
upsampled bilinearly to the frame and thresholded at 0; its IoU prediction is the score. The image embedding of the
last frame is cached, so a second prompt on the same frame costs only the decoder.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from ...core.errors import BackendFailure, BackendUnavailable, ConfigError
from ..weights import free_device_memory, read_hf_config, resolve_device, resolve_dtype

SAM_MODEL_TYPES = {
    "sam2": {"class": "Sam2Model", "size": 1024, "mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225)},
    "sam3_tracker": {"class": "Sam3TrackerModel", "size": 1008, "mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5)},
}
# The facebook/sam3 repository holds the whole of SAM 3; Sam3TrackerModel builds from its ``tracker_config``
# (transformers' Sam3TrackerModel.__init__ unwraps it). Not run here with the real files (no hub access).
SAM_MODEL_TYPES["sam3_video"] = SAM_MODEL_TYPES["sam3"] = SAM_MODEL_TYPES["sam3_tracker"]


def read_image_processor(
    model_dir: Path, size: int, mean: tuple[float, ...], std: tuple[float, ...]
) -> tuple[int, np.ndarray, np.ndarray]:
    """A SAM image processor's square input size and mean/std (1x1x3 float32, for pixels scaled to [0, 1]): from
    the directory's ``preprocessor_config.json`` where it has them, else the given defaults."""
    processor_path = model_dir / "preprocessor_config.json"
    if processor_path.is_file():
        processor = json.loads(processor_path.read_text())
        size_entry = processor.get("size") or {}
        size = int(size_entry.get("height", size)) if isinstance(size_entry, dict) else size
        mean = processor.get("image_mean", mean)
        std = processor.get("image_std", std)
    return int(size), np.asarray(mean, np.float32).reshape(1, 1, 3), np.asarray(std, np.float32).reshape(1, 1, 3)


class BoxPromptSam:
    """``segment(image, box_xyxy, points_xy) -> (mask HxW bool, iou_prediction, stats)``."""

    def __init__(self, model_dir: str | Path, device: str | None = "auto", dtype: str | None = "auto") -> None:
        self.model_dir = Path(model_dir).expanduser()
        config_path = self.model_dir / "config.json"
        self.model_type = read_hf_config(self.model_dir, "SAM", " (sam_dir option)").get("model_type")
        if self.model_type not in SAM_MODEL_TYPES:
            raise ConfigError(
                f"{config_path}: model_type {self.model_type!r} is not a supported SAM image model "
                f"(supported: {', '.join(SAM_MODEL_TYPES)})"
            )
        self.device = resolve_device(device)
        self.dtype = resolve_dtype(dtype, self.device)
        settings = SAM_MODEL_TYPES[self.model_type]
        self.image_size, self.mean, self.std = read_image_processor(
            self.model_dir, settings["size"], settings["mean"], settings["std"]
        )
        self.model = None
        self._cached: tuple[Any, Any] | None = None  # (frame fingerprint, image embeddings)
        self.load()

    def load(self) -> None:
        import transformers

        cls = getattr(transformers, SAM_MODEL_TYPES[self.model_type]["class"])
        try:
            model = cls.from_pretrained(str(self.model_dir), dtype=self.dtype, local_files_only=True)
        except (OSError, ValueError) as exc:
            raise BackendUnavailable(f"cannot load the SAM model from {self.model_dir}: {exc}") from exc
        self.model = model.to(self.device).eval()

    def release(self) -> None:
        self.model = None
        self._cached = None
        free_device_memory(self.device)

    def preprocess(self, image: np.ndarray):
        import torch

        resized = cv2.resize(image, (self.image_size, self.image_size), interpolation=cv2.INTER_LINEAR)
        normalised = (resized.astype(np.float32) / 255.0 - self.mean) / self.std
        tensor = torch.from_numpy(np.ascontiguousarray(normalised.transpose(2, 0, 1)))[None]
        return tensor.to(self.device, self.dtype)

    def segment(
        self,
        image: np.ndarray,
        box_xyxy: tuple[float, float, float, float] | None,
        points_xy: list[tuple[float, float]] | None = None,
        cache_key: Any = None,
    ) -> tuple[np.ndarray, float, dict[str, float]]:
        """Mask for one box and/or positive points given in ``image`` pixels. ``cache_key`` (e.g. the frame index
        and a pixel fingerprint) reuses the previous image embedding when it matches."""
        import torch
        import torch.nn.functional as F

        if box_xyxy is None and not points_xy:
            raise ValueError("SAM needs a box or at least one point")
        if self.model is None:
            self.load()
        height, width = image.shape[:2]
        sx, sy = self.image_size / width, self.image_size / height
        stats: dict[str, float] = {}
        with torch.inference_mode():
            start = time.perf_counter()
            if cache_key is not None and self._cached is not None and self._cached[0] == cache_key:
                embeddings = self._cached[1]
                stats["sam_encode_cached"] = 1.0
            else:
                embeddings = self.model.get_image_embeddings(self.preprocess(image))
                self._cached = (cache_key, embeddings) if cache_key is not None else None
            stats["sam_encode_s"] = time.perf_counter() - start
            start = time.perf_counter()
            prompt: dict[str, Any] = {}
            if box_xyxy is not None:
                x1, y1, x2, y2 = box_xyxy
                prompt["input_boxes"] = torch.tensor([[[x1 * sx, y1 * sy, x2 * sx, y2 * sy]]], device=self.device)
            if points_xy:
                coords = [[px * sx, py * sy] for px, py in points_xy]
                prompt["input_points"] = torch.tensor([[coords]], dtype=torch.float32, device=self.device)
                prompt["input_labels"] = torch.ones((1, 1, len(coords)), dtype=torch.long, device=self.device)
            output = self.model(image_embeddings=embeddings, multimask_output=False, **prompt)
            low_res = output.pred_masks[0, 0, :1].float()  # (1, h, w)
            logits = F.interpolate(low_res[None], size=(height, width), mode="bilinear", align_corners=False)[0, 0]
            iou = float(output.iou_scores.float().reshape(-1)[0])
            stats["sam_decode_s"] = time.perf_counter() - start
        logits = logits.cpu().numpy()
        if not np.all(np.isfinite(logits)) or not np.isfinite(iou):
            raise BackendFailure("SAM produced non-finite mask logits (NaN/Inf); check the weights and dtype")
        return logits > 0, iou, stats


class OriginalSamBoxPrompter:
    """The fallback: the project's own SAM (``models.sam``) with an ORIGINAL segment-anything checkpoint
    (``sam_vit_h_4b8939.pth`` -- the one VISA users already have) prompted with a box and/or points.

    Same contract as ``BoxPromptSam.segment``. Preprocessing is segment-anything's (longest side -> 1024 with
    Pillow-exact bilinear, normalise, pad); prompt coordinates are scaled by the same longest-side factor (its
    ``ResizeLongestSide.apply_coords``); the point/box embeddings come from transformers' ``SamPromptEncoder``
    holding the checkpoint's prompt-encoder weights (points get SAM's padding point when no box is given), the
    mask decoder is the project's (``multimask_output=False``), masks are post-processed to the frame size."""

    def __init__(self, checkpoint: str | Path, device: str | None = "auto", dtype: str | None = "auto") -> None:
        from ..sam import SamCheckpointError, SamTextPromptModel, load_sam_checkpoint

        self.checkpoint = Path(checkpoint).expanduser()
        self.device = resolve_device(device)
        self.dtype = resolve_dtype(dtype, self.device)
        self.model_type = "sam_original"
        try:
            state = load_sam_checkpoint(self.checkpoint)
            self.model = SamTextPromptModel.from_original_state_dict(state, dtype=self.dtype).to(self.device)
        except FileNotFoundError as exc:
            raise BackendUnavailable(f"{exc} (sam_checkpoint option)") from exc
        except SamCheckpointError as exc:
            raise BackendUnavailable(f"cannot load the SAM checkpoint {self.checkpoint}: {exc}") from exc
        self._cached: tuple[Any, Any] | None = None

    def release(self) -> None:
        self._cached = None

    def segment(self, image, box_xyxy, points_xy=None, cache_key=None):
        import torch

        from ..sam.preprocess import longest_side_size

        if box_xyxy is None and not points_xy:
            raise ValueError("SAM needs a box or at least one point")
        height, width = image.shape[:2]
        size = self.model.config.image_size
        new_h, new_w = longest_side_size(height, width, size)
        sx, sy = new_w / width, new_h / height
        stats: dict[str, float] = {}
        with torch.inference_mode():
            start = time.perf_counter()
            if cache_key is not None and self._cached is not None and self._cached[0] == cache_key:
                embeddings, input_size = self._cached[1]
                stats["sam_encode_cached"] = 1.0
            else:
                pixel_values, input_size = self.model.preprocess(image)
                embeddings = self.model.encode_image(pixel_values)
                self._cached = (cache_key, (embeddings, input_size)) if cache_key is not None else None
            stats["sam_encode_s"] = time.perf_counter() - start
            start = time.perf_counter()
            prompt = self.model.prompt_encoder.prompt
            weight = prompt.no_mask_embed.weight
            points = labels = boxes = None
            if points_xy:
                points = torch.tensor([[[[px * sx, py * sy] for px, py in points_xy]]], dtype=weight.dtype)
                labels = torch.ones(points.shape[:3], dtype=torch.long)
                points, labels = points.to(weight.device), labels.to(weight.device)
            if box_xyxy is not None:
                x1, y1, x2, y2 = box_xyxy
                boxes = torch.tensor([[[x1 * sx, y1 * sy, x2 * sx, y2 * sy]]], dtype=weight.dtype, device=weight.device)
            sparse, dense = prompt(points, labels, boxes, None)
            sparse = sparse.reshape(1, -1, sparse.shape[-1])  # (1, point batch x tokens, D)
            low_res, iou = self.model.mask_decoder(
                image_embeddings=embeddings,
                image_pe=self.model.prompt_encoder.get_dense_pe(),
                sparse_prompt_embeddings=sparse,
                dense_prompt_embeddings=dense.reshape(1, *dense.shape[-3:]),
                multimask_output=False,
            )
            logits = self.model.postprocess_masks(low_res, input_size, (height, width))[0, 0]
            iou_value = float(iou.float().reshape(-1)[0])
            stats["sam_decode_s"] = time.perf_counter() - start
        logits = logits.float().cpu().numpy()
        if not np.all(np.isfinite(logits)) or not np.isfinite(iou_value):
            raise BackendFailure("SAM produced non-finite mask logits (NaN/Inf); check the weights and dtype")
        return logits > 0, iou_value, stats
