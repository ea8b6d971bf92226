"""One transformers video-tracker inference session, fed one frame at a time, with every per-frame store capped.

The library's streaming mode (``model(session, frame_idx=i, frame=pixels)`` on a session created without a video)
keeps everything it ever saw: each processed frame (3 x 1024 x 1024 floats, 12 MB), each frame's outputs per
object (full-resolution mask logits, 4 MB at 1024, plus memory features), each conditioning frame and its inputs, and
a per-frame "tracked" flag. That is the unbounded growth users report. The model itself reads only:

* the conditioning (seeded) frames, all of them unless ``max_cond_frame_num`` limits the choice;
* the non-conditioning outputs of the last ``num_maskmem - 1`` frames (spatial memory: ``maskmem_features`` and
  ``maskmem_pos_enc``), found by frame index ``t - 1 ... t - (num_maskmem - 1)``;
* the object pointers of the last ``max_object_pointers_in_encoder - 1`` frames (``object_pointer``);
* the current frame's pixels and vision features, during the current step only.

``StreamingVideoSession.prune`` (run after every step) keeps exactly that: non-conditioning entries inside the
spatial window keep their memory features and pointer, entries further back but inside the pointer window keep only
the pointer, older ones are dropped; the full-resolution logits of every entry, the processed frames, the vision
feature cache, the tracked flags and the consumed inputs are dropped; at most ``max_conditioning_frames`` conditioning
frames are kept per object (the newest). With one seed per object this changes nothing the model computes (tested
against the library's own propagation); beyond the cap the oldest seeds are forgotten.

Session time is a local counter: each ``step`` is the next frame index, whatever order the caller visits frames in
(the pipeline's backward pass visits stored frames newest to oldest, which for the model is simply a video played
backwards, like the library's ``reverse=True`` propagation). Skipped frames therefore do not leave holes in the
memory window.

Preprocessing (what the families' processors do; they need torchvision, which this project cannot install): the
RGB frame is resized to ``image_size`` x ``image_size`` (bilinear, antialiased, rounded back to uint8), scaled by
``rescale_factor`` and normalised with the model directory's mean/std. Seed masks are resized the same way and
thresholded at 0.5; boxes and points are scaled from frame pixels to the model's input size. Output masks are the
low-resolution logits resized to ``image_size`` and then to the frame size (bilinear) and thresholded at
``mask_threshold`` (the processors' ``post_process_masks``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from .families import Family, Normalisation

# Keys of a stored per-frame output that the model reads again (everything else is dropped by prune).
_SPATIAL_KEYS = ("maskmem_features", "maskmem_pos_enc", "object_pointer", "object_score_logits")
_POINTER_KEYS = ("object_pointer",)
# Conditioning entries also keep the low-resolution masks, which the library reuses when the same frame is run again.
_CONDITIONING_KEYS = (*_SPATIAL_KEYS, "pred_masks")


@dataclass
class StepOutput:
    """What one step computed, per object in ``object_keys`` order (the session's object order)."""

    object_keys: list[int]
    low_res_logits: torch.Tensor  # (objects, 1, h, w) float32 mask logits at the model's mask resolution
    object_score_logits: torch.Tensor  # (objects,) float32: > 0 means "the object is visible"
    predicted_iou: torch.Tensor | None  # (objects,) float32 decoder IoU estimate of the chosen mask, None if unknown


def preprocess_frame(image: np.ndarray, norm: Normalisation, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """HxWx3 uint8 RGB -> (3, size, size) normalised pixels on ``device`` in ``dtype``."""
    pixels = torch.from_numpy(np.ascontiguousarray(image)).to(device).permute(2, 0, 1)[None].float()
    resized = F.interpolate(pixels, size=(norm.size, norm.size), mode="bilinear", align_corners=False, antialias=True)
    resized = resized.round_().clamp_(0, 255) * norm.rescale_factor
    mean = torch.tensor(norm.mean, device=device).view(1, 3, 1, 1)
    std = torch.tensor(norm.std, device=device).view(1, 3, 1, 1)
    return ((resized - mean) / std)[0].to(dtype)


def resize_seed_mask(mask: np.ndarray, size: int, device: torch.device) -> torch.Tensor:
    """HxW bool -> (1, 1, size, size) float {0, 1}: antialiased bilinear resize, threshold 0.5 (the processor's)."""
    tensor = torch.from_numpy(np.ascontiguousarray(mask, dtype=np.float32)).to(device)[None, None]
    if tuple(tensor.shape[-2:]) != (size, size):
        tensor = F.interpolate(tensor, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
        tensor = (tensor >= 0.5).float()
    return tensor


def logits_to_masks(low_res: torch.Tensor, size: int, height: int, width: int, threshold: float) -> torch.Tensor:
    """(objects, 1, h, w) logits -> (objects, height, width) bool, as the processors' ``post_process_masks``."""
    logits = F.interpolate(low_res.float(), size=(size, size), mode="bilinear", align_corners=False)
    logits = F.interpolate(logits, size=(height, width), mode="bilinear", align_corners=False)
    return logits[:, 0] > threshold


class StreamingVideoSession:
    """A library inference session stepped one frame at a time, with its stores capped (see the module docstring).

    Objects are identified by integer keys (the caller maps its own ids). Inputs given with ``add_*`` apply to the
    next ``step``."""

    def __init__(
        self,
        model,
        family: Family,
        norm: Normalisation,
        device: torch.device,
        dtype: torch.dtype,
        max_conditioning_frames: int = 4,
    ) -> None:
        if max_conditioning_frames < 1:
            raise ValueError(f"max_conditioning_frames must be >= 1, got {max_conditioning_frames}")
        _, _, session_class = family.classes()
        self.model = model
        self.norm = norm
        self.device = device
        self.dtype = dtype
        self.max_conditioning_frames = int(max_conditioning_frames)
        config = model.config
        # How far back the model reads (see the module docstring): spatial memories and object pointers.
        self.spatial_window = max(0, int(config.num_maskmem) - 1)
        self.pointer_window = max(0, int(config.max_object_pointers_in_encoder) - 1)
        self.session = session_class(
            inference_device=device,
            inference_state_device=device,
            video_storage_device=device,
            dtype=dtype,
            max_vision_features_cache_size=1,
        )
        self.next_frame = 0  # session-local frame index of the next step
        self.frame_size: tuple[int, int] | None = None
        self._new_inputs: list[int] = []
        self.last_vision_features: dict | None = None

    # ---- objects and inputs ---------------------------------------------------------------------------------------

    @property
    def object_keys(self) -> list[int]:
        return list(self.session._obj_id_to_idx)

    def _object_index(self, key: int) -> int:
        index = self.session.obj_id_to_idx(key)
        if key not in self._new_inputs:
            self._new_inputs.append(key)
        return index

    def set_frame_size(self, height: int, width: int) -> None:
        if self.frame_size is not None and self.frame_size != (height, width):
            raise ValueError(
                f"frame is {height}x{width} but this session started at {self.frame_size[0]}x{self.frame_size[1]}; "
                "start a new session for a new size"
            )
        self.frame_size = (height, width)
        self.session.video_height, self.session.video_width = height, width

    def add_mask(self, key: int, mask: np.ndarray) -> None:
        """Seed (or re-seed) object ``key`` with a mask of the frame size on the next step."""
        index = self._object_index(key)
        self.session.add_mask_inputs(index, self.next_frame, resize_seed_mask(mask, self.norm.size, self.device))
        self.session.remove_point_inputs(index, self.next_frame)

    def add_prompts(
        self,
        key: int,
        box: Sequence[float] | None = None,
        points: Sequence[Sequence[float]] | None = None,
        labels: Sequence[int] | None = None,
    ) -> None:
        """Seed object ``key`` with a box (x0, y0, x1, y1) and/or points ((x, y), label 1 = object, 0 = background)
        in frame pixels, on the next step. Needs ``set_frame_size`` first."""
        if self.frame_size is None:
            raise ValueError("set the frame size before adding box or point prompts")
        height, width = self.frame_size
        scale = torch.tensor([self.norm.size / width, self.norm.size / height])
        coords, point_labels = [], []
        if box is not None:
            x0, y0, x1, y1 = (float(v) for v in box)
            if not (x1 > x0 and y1 > y0):
                raise ValueError(f"box {tuple(box)} must have x1 > x0 and y1 > y0")
            coords += [[x0, y0], [x1, y1]]
            point_labels += [2, 3]  # SAM's box-corner labels
        if points is not None:
            points = [list(map(float, p)) for p in points]
            labels = [1] * len(points) if labels is None else [int(v) for v in labels]
            if len(labels) != len(points) or any(len(p) != 2 for p in points):
                raise ValueError("points must be (x, y) pairs with one label each")
            coords += points
            point_labels += labels
        if not coords:
            raise ValueError("add_prompts needs a box or points")
        index = self._object_index(key)
        point_coords = (torch.tensor(coords, dtype=torch.float32) * scale)[None, None]
        point_labels_tensor = torch.tensor(point_labels, dtype=torch.int32)[None, None]
        self.session.add_point_inputs(
            index, self.next_frame, {"point_coords": point_coords, "point_labels": point_labels_tensor}
        )
        self.session.remove_mask_inputs(index, self.next_frame)

    # ---- stepping -------------------------------------------------------------------------------------------------

    def step(self, pixels: torch.Tensor, vision_features: dict | None = None) -> StepOutput:
        """Run the model on the next frame (``preprocess_frame`` output); returns every object's outputs.

        ``vision_features``: the frame's image-encoder outputs from another session (``last_vision_features`` of
        a session that stepped the same frame), so that the encoder does not run again. After the step,
        ``last_vision_features`` holds this frame's features until the next step (then they are dropped)."""
        session = self.session
        if not session._obj_id_to_idx:
            raise ValueError("no objects to track: add a mask or prompts first")
        session.obj_with_new_inputs = list(self._new_inputs)
        self._new_inputs = []
        self.last_vision_features = None
        if vision_features is not None:
            session.cache.cache_vision_features(self.next_frame, vision_features)
        ious: list[torch.Tensor] = []

        def keep_iou(module, args, output):
            # The mask decoder runs once per object per step (tracking, box/point seeds, and the object pointer
            # of a mask seed); its second output is (batch, point batch, masks) IoU estimates.
            ious.append(output[1].detach().float().amax(dim=-1).reshape(-1))

        hook = self.model.mask_decoder.register_forward_hook(keep_iou)
        try:
            with torch.inference_mode():
                out = self.model(session, frame_idx=self.next_frame, frame=pixels)
        finally:
            hook.remove()
        self.last_vision_features = session.cache._vision_features.get(self.next_frame)
        self.next_frame += 1
        self.prune()
        predicted_iou = torch.cat(ious).cpu() if ious and sum(t.numel() for t in ious) == len(out.object_ids) else None
        return StepOutput(
            list(out.object_ids),
            out.pred_masks.float(),
            out.object_score_logits.detach().float().reshape(-1).cpu(),
            predicted_iou,
        )

    # ---- memory bounds ----------------------------------------------------------------------------------------------

    def prune(self) -> None:
        """Drop every stored item the model will not read again (see the module docstring)."""
        session = self.session
        current = self.next_frame - 1
        for outputs in session.output_dict_per_obj.values():
            conditioning = outputs["cond_frame_outputs"]
            for frame in sorted(conditioning)[: max(0, len(conditioning) - self.max_conditioning_frames)]:
                del conditioning[frame]
            for entry in conditioning.values():
                _keep_only(entry, _CONDITIONING_KEYS)
            tracked = outputs["non_cond_frame_outputs"]
            for frame in list(tracked):
                age = current - frame  # the next step reads ages 0 .. window - 1
                if age < self.spatial_window:
                    _keep_only(tracked[frame], _SPATIAL_KEYS)
                elif age < self.pointer_window:
                    _keep_only(tracked[frame], _POINTER_KEYS)
                else:
                    del tracked[frame]
        for store in (session.frames_tracked_per_obj, session.point_inputs_per_obj, session.mask_inputs_per_obj):
            for per_frame in store.values():
                per_frame.clear()
        if session.processed_frames is not None:
            session.processed_frames.clear()
        session.cache.clear_all()

    def stored_counts(self) -> dict[str, int]:
        """How many per-frame items the library session holds now (tests and logs watch these stay bounded)."""
        session = self.session
        outputs = session.output_dict_per_obj.values()
        return {
            "processed_frames": len(session.processed_frames or {}),
            "vision_features": len(session.cache._vision_features),
            "conditioning_outputs": sum(len(o["cond_frame_outputs"]) for o in outputs),
            "tracked_outputs": sum(len(o["non_cond_frame_outputs"]) for o in outputs),
            "tracked_flags": sum(len(v) for v in session.frames_tracked_per_obj.values()),
            "inputs": sum(len(v) for v in session.point_inputs_per_obj.values())
            + sum(len(v) for v in session.mask_inputs_per_obj.values()),
        }

    def stored_bytes(self) -> int:
        """Bytes of the tensors the session holds (memory bank, pointers, conditioning masks)."""
        total = 0
        for outputs in self.session.output_dict_per_obj.values():
            for store in outputs.values():
                for entry in store.values():
                    total += sum(v.numel() * v.element_size() for v in entry.values() if isinstance(v, torch.Tensor))
        return total

    def close(self) -> None:
        self.last_vision_features = None
        self.session.reset_inference_session()
        if self.session.processed_frames is not None:
            self.session.processed_frames.clear()


def _keep_only(entry: dict, keys: Sequence[str]) -> None:
    for name in [k for k in entry if k not in keys]:
        del entry[name]
