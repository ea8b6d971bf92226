"""SAM 2.1 / EdgeTAM / SAM 3 tracker video models (stock transformers) as the pipeline's tracker backend.

``tracker: sam2_video`` with ``tracker_options: '{"model_dir": "/path/to/sam2.1-hiera-small"}'``. The directory is a
Hugging Face model directory (``config.json`` + ``*.safetensors``, e.g. a download of ``facebook/sam2.1-hiera-small``);
its ``model_type`` picks the family (``Sam2VideoModel``, ``EdgeTamVideoModel`` or ``Sam3TrackerVideoModel``). Loading
is local only, without remote code, and strict: missing, unexpected or mis-shaped weights are an error.

Each ``new_session()`` is one streaming inference session of the library (its own memory bank), fed one frame per
``step`` (see ``models/sam2_video/streaming.py`` for the session-local time, the preprocessing and the memory caps:
stored per-frame state stays bounded however long the session runs). Several objects per session; objects are
seeded with masks (``step(frame, {id: mask})``, what the segmenters give), or with a box and/or points
(``step(frame, new_boxes={id: (x0, y0, x1, y1)}, new_points={id: ([(x, y), ...], [1, 0, ...])})``), and may be
re-seeded at any step. A mask-seeded object returns its seed on the seeding frame (confidence 1, or 0
for an empty seed).

``TrackedMask.confidence`` = sigmoid(object score logit) x clip(predicted IoU, 0, 1), and 0 for an empty mask: the
first factor is the model's own "the object is visible" probability (the same logit that blanks the mask when it
is negative), the second its estimate of the chosen mask's quality. Both drop when the tracker loses the object,
which is what the pipeline's drift monitor needs.

The options are ``Sam2VideoOptions`` (``model_dir`` is required).
"""

from __future__ import annotations

import threading
import weakref
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from reasonvos_ros.core.interfaces import Tracker, TrackerSession, checked_seed_masks
from reasonvos_ros.core.options import (
    OptionSet,
    device_option,
    dtype_option,
    num_threads_option,
    option,
    weights_path,
)
from reasonvos_ros.core.types import Frame, TrackedMask
from reasonvos_ros.models.sam2_video.families import (
    FAMILIES,
    Family,
    Normalisation,
    family_for_model_type,
    load_model,
    read_normalisation,
)
from reasonvos_ros.models.sam2_video.streaming import (
    StepOutput,
    StreamingVideoSession,
    logits_to_masks,
    preprocess_frame,
)
from reasonvos_ros.models.weights import read_hf_config, resolve_device_dtype

# Published checkpoints this backend loads, for `reasonvos weights` (one row per model set). ``parameters`` is counted
# from the configuration families.py builds (count_parameters on the meta device; test_sam2_video_tracker checks the
# table against it): the SAM 2.1 counts equal the sizes the Hub lists (39 M, 46.1 M, 80.9 M, 0.2 B); the SAM 3 row
# counts the tracker only (SAM 3's detector is not loaded). EdgeTAM's backbone comes from timm, which cannot be
# installed here, so its count is left empty. ``memory_mb_bf16`` is the weights alone in bf16 (MB = 10^6 bytes);
# activations and the capped memory bank come on top (see benchmarks/bench_video_tracker.py --full-size).
TRACKER_MODEL_SETS: tuple[dict, ...] = (
    {
        "name": "sam2.1-tiny",
        "config": "sam2.1_tiny",  # families.full_size_config name
        "repo_id": "facebook/sam2.1-hiera-tiny",
        "backend": "sam2_video",
        "tracker_options": '{"model_dir": "<download dir>", "dtype": "auto"}',
        "parameters": 38_962_498,
        "memory_mb_bf16": 78,
        "licence": "Apache-2.0",
        "verified": "repo id listed on the Hub (facebook/sam2.1-*); parameters counted from the built config",
        "notes": "fastest SAM 2.1; DAVIS-17 J&F 89.2 (SAM 2.1 paper table)",
    },
    {
        "name": "sam2.1-small",
        "config": "sam2.1_small",  # families.full_size_config name
        "repo_id": "facebook/sam2.1-hiera-small",
        "backend": "sam2_video",
        "tracker_options": '{"model_dir": "<download dir>", "dtype": "auto"}',
        "parameters": 46_060_354,
        "memory_mb_bf16": 92,
        "licence": "Apache-2.0",
        "verified": "repo id listed on the Hub (facebook/sam2.1-*); parameters counted from the built config",
        "notes": "",
    },
    {
        "name": "sam2.1-base-plus",
        "config": "sam2.1_base_plus",  # families.full_size_config name
        "repo_id": "facebook/sam2.1-hiera-base-plus",
        "backend": "sam2_video",
        "tracker_options": '{"model_dir": "<download dir>", "dtype": "auto"}',
        "parameters": 80_850_178,
        "memory_mb_bf16": 162,
        "licence": "Apache-2.0",
        "verified": "repo id listed on the Hub (facebook/sam2.1-*); parameters counted from the built config",
        "notes": "DAVIS-17 J&F 90.2 (SAM 2.1 table of the SAM 2 repository)",
    },
    {
        "name": "sam2.1-large",
        "config": "sam2.1_large",  # families.full_size_config name
        "repo_id": "facebook/sam2.1-hiera-large",
        "backend": "sam2_video",
        "tracker_options": '{"model_dir": "<download dir>", "dtype": "auto"}',
        "parameters": 224_446_642,
        "memory_mb_bf16": 449,
        "licence": "Apache-2.0",
        "verified": "repo id listed on the Hub (facebook/sam2.1-*); parameters counted from the built config",
        "notes": "",
    },
    {
        "name": "edgetam",
        "config": "edgetam",  # families.full_size_config name
        "repo_id": "yonigozlan/EdgeTAM-hf",
        "backend": "sam2_video",
        "tracker_options": '{"model_dir": "<download dir>", "dtype": "auto"}',
        "parameters": None,
        "memory_mb_bf16": None,
        "licence": "Apache-2.0",
        "verified": (
            "UNVERIFIED: the id transformers' EdgeTamVideo config docstring names (an HF staff conversion); "
            "facebook/EdgeTAM holds the original weights, its transformers weights only in a pull request branch. "
            "Parameters not counted here: the RepViT backbone needs timm (which needs torchvision)"
        ),
        "notes": "needs timm + torchvision in the environment; DAVIS-17 J&F 87.7 (EdgeTAM paper)",
    },
    {
        "name": "sam3-tracker",
        "config": "sam3_tracker",  # families.full_size_config name
        "repo_id": "facebook/sam3",
        "backend": "sam2_video",
        "tracker_options": '{"model_dir": "<download dir>", "dtype": "auto"}',
        "parameters": 465_782_146,
        "memory_mb_bf16": 932,
        "licence": "SAM License (gated on the Hub: accept the terms first)",
        "verified": (
            "repo id in the transformers Sam3TrackerVideo docs; parameters counted from the default "
            "Sam3TrackerVideoConfig (tracker only); loading the full SAM 3 checkpoint into the tracker class "
            "not tried here (no hub access)"
        ),
        "notes": "the repository also holds the SAM 3 detector, which this backend does not load",
    },
)


@dataclass(frozen=True)
class Sam2VideoOptions(OptionSet):
    model_dir: str | None = option(
        None,
        "Hugging Face model directory (config.json + *.safetensors), e.g. a download of facebook/sam2.1-hiera-small "
        "(required)",
    )
    device: str = device_option()
    dtype: str = dtype_option()
    max_conditioning_frames: int = option(4, "seeds kept per object, newest first", low=1)
    mask_threshold: float = option(0.0, "threshold on the mask logits")
    feature_cache_size: int = option(
        1,
        "image-encoder outputs of this many recent frames shared between sessions (0: no sharing; the last two "
        "seeding frames are kept apart)",
        low=0,
    )
    num_threads: int | None = num_threads_option()


class Sam2VideoTracker(Tracker):
    """Tracker backend over transformers' SAM 2-style video models; see the module docstring, and
    ``Sam2VideoOptions`` for the options."""

    Options = Sam2VideoOptions

    def __init__(self, options: Sam2VideoOptions | None = None, /, **values: Any) -> None:
        options = Sam2VideoOptions.build(options, values)
        self.model_dir = weights_path(
            options.model_dir,
            option_name="model_dir",
            backend="sam2_video",
            role="tracker",
            label="sam2_video",
            what="a Hugging Face model directory such as a download of facebook/sam2.1-hiera-small "
            "(see `reasonvos weights`)",
        )
        device_, dtype_ = resolve_device_dtype(options.device, options.dtype, option_prefix="sam2_video option ")
        config = read_hf_config(self.model_dir, "tracker", " (set the tracker's options.model_dir)")
        family = family_for_model_type(config.get("model_type"), str(self.model_dir / "config.json"))
        model = load_model(self.model_dir, family, device_, dtype_)
        norm = read_normalisation(self.model_dir, family, int(model.config.image_size))
        self._setup(model, family, norm, device_, dtype_, options)

    @classmethod
    def from_model(
        cls, model, family: Family, options: Sam2VideoOptions | None = None, /, **values: Any
    ) -> Sam2VideoTracker:
        """A tracker over a model built in memory (benchmarks of full-size configurations with random weights);
        the family's default normalisation; ``model_dir`` is not used. Production code loads from a directory with
        ``Sam2VideoTracker(...)``."""
        options = Sam2VideoOptions.build(options, values)
        device_, dtype_ = resolve_device_dtype(options.device, options.dtype, option_prefix="sam2_video option ")
        tracker = cls.__new__(cls)
        tracker.model_dir = None
        norm = Normalisation(int(model.config.image_size), family.image_mean, family.image_std)
        model = model.to(device=device_, dtype=dtype_).eval()
        tracker._setup(model, family, norm, device_, dtype_, options)
        return tracker

    def _setup(self, model, family, norm, device, dtype, options: Sam2VideoOptions) -> None:
        if options.num_threads is not None:
            torch.set_num_threads(options.num_threads)
        self.options = options
        self.model, self.family, self.norm = model, family, norm
        self.device, self.dtype = device, dtype
        self.max_conditioning_frames = options.max_conditioning_frames
        self.mask_threshold = options.mask_threshold
        self.feature_cache_size = options.feature_cache_size
        # Image-encoder outputs shared between sessions, keyed by (Frame.uid, frame size): the recent frames
        # (every target's session steps the newest frame) and, apart, the last two seeding frames (both pipeline
        # passes start at the key frame, and a long backward pass must not evict it).
        self._features: OrderedDict[tuple, dict] = OrderedDict()
        self._seed_features: OrderedDict[tuple, dict] = OrderedDict()
        self.cache_hits = 0
        self.cache_misses = 0
        self.lock = threading.RLock()
        self._sessions: weakref.WeakSet[Sam2VideoSession] = weakref.WeakSet()

    def cached_features(self, key: tuple) -> dict | None:
        for cache in (self._seed_features, self._features):
            if key in cache:
                cache.move_to_end(key)
                self.cache_hits += 1
                # the sessions' code treats them as read-only, but a copy keeps one session from ever altering
                # another's input
                return {k: _clone(v) for k, v in cache[key].items()}
        self.cache_misses += 1
        return None

    def remember_features(self, key: tuple, features: dict | None, seeding: bool) -> None:
        if features is None or self.feature_cache_size == 0:
            return
        cache, capacity = (self._seed_features, 2) if seeding else (self._features, self.feature_cache_size)
        cache[key] = features
        cache.move_to_end(key)
        while len(cache) > capacity:
            cache.popitem(last=False)

    def new_session(self) -> Sam2VideoSession:
        session = Sam2VideoSession(self)
        self._sessions.add(session)
        return session

    def release(self) -> None:
        """Drop every open session's memory and move the model off the GPU (it comes back on the next step)."""
        with self.lock:
            for session in list(self._sessions):
                session.close()
            self._features.clear()
            self._seed_features.clear()
            if self.device.type == "cuda":
                self.model.to("cpu")
                torch.cuda.empty_cache()

    def _place_model(self) -> None:
        if next(self.model.parameters()).device != self.device:
            self.model.to(self.device)

    def streaming_session(self) -> StreamingVideoSession:
        return StreamingVideoSession(
            self.model, self.family, self.norm, self.device, self.dtype, self.max_conditioning_frames
        )


class Sam2VideoSession(TrackerSession):
    """One streaming pass; string object ids are mapped to the library's integer ids."""

    def __init__(self, tracker: Sam2VideoTracker) -> None:
        self.tracker = tracker
        self.core: StreamingVideoSession | None = None
        self._keys: dict[str, int] = {}
        self._next_key = 1
        self.closed = False
        self.frame_indices: list[int] = []  # our Frame.index of each session step, most recent last (bounded)
        self.last_output: StepOutput | None = None  # raw outputs of the last step (logits, scores), for inspection

    def step(
        self,
        frame: Frame,
        new_masks: Mapping[str, np.ndarray] | None = None,
        *,
        new_boxes: Mapping[str, Sequence[float]] | None = None,
        new_points: Mapping[str, tuple[Sequence[Sequence[float]], Sequence[int] | None]] | None = None,
    ) -> dict[str, TrackedMask]:
        if self.closed:
            raise RuntimeError("step on a closed sam2_video session (closed, or freed by the tracker's release())")
        new_masks, new_boxes, new_points = dict(new_masks or {}), dict(new_boxes or {}), dict(new_points or {})
        if not self._keys and not (new_masks or new_boxes or new_points):
            return {}
        image = frame.image
        if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"frame {frame.index}: expected an RGB uint8 HxWx3 image, got {_describe(image)}")
        height, width = image.shape[:2]
        seeds = checked_seed_masks(new_masks, height, width)
        both = sorted(set(seeds) & (set(new_boxes) | set(new_points)))
        if both:
            raise ValueError(f"objects {both} are given both a mask and a box/points; seed each with one kind")
        tracker = self.tracker
        with tracker.lock:
            tracker._place_model()
            if self.core is None:
                self.core = tracker.streaming_session()
            core = self.core
            core.set_frame_size(height, width)
            for obj_id, mask in seeds.items():
                core.add_mask(self._key(obj_id), mask)
            for obj_id, box in new_boxes.items():
                points, labels = new_points.pop(obj_id, (None, None))
                core.add_prompts(self._key(obj_id), box=box, points=points, labels=labels)
            for obj_id, (points, labels) in new_points.items():
                core.add_prompts(self._key(obj_id), points=points, labels=labels)
            pixels = preprocess_frame(image, tracker.norm, tracker.device, tracker.dtype)
            cache_key = (frame.uid, height, width)  # process-unique: clips that restart indices never collide
            out = core.step(pixels, tracker.cached_features(cache_key))
            seeding = bool(seeds or new_boxes or new_points)
            tracker.remember_features(cache_key, core.last_vision_features, seeding)
            core.last_vision_features = None
            self.last_output = out
            masks = logits_to_masks(out.low_res_logits, tracker.norm.size, height, width, tracker.mask_threshold)
            masks = masks.cpu().numpy()
        self.frame_indices = [*self.frame_indices, frame.index][-64:]
        presence = torch.sigmoid(out.object_score_logits)
        quality = torch.ones_like(presence) if out.predicted_iou is None else out.predicted_iou.clamp(0.0, 1.0)
        by_key = {key: position for position, key in enumerate(out.object_keys)}
        result: dict[str, TrackedMask] = {}
        for obj_id, key in self._keys.items():
            position = by_key[key]
            if obj_id in seeds:  # the seed is the answer on its frame (an empty seed is no evidence of anything)
                result[obj_id] = TrackedMask(seeds[obj_id], 1.0 if seeds[obj_id].any() else 0.0)
                continue
            mask = masks[position]
            confidence = float(presence[position] * quality[position]) if mask.any() else 0.0
            result[obj_id] = TrackedMask(mask, min(max(confidence, 0.0), 1.0))
        return result

    def _key(self, obj_id: str) -> int:
        if obj_id not in self._keys:
            self._keys[obj_id] = self._next_key
            self._next_key += 1
        return self._keys[obj_id]

    def close(self) -> None:
        if self.core is not None:
            with self.tracker.lock:
                self.core.close()
        self.core = None
        self._keys.clear()
        self.closed = True

    # ---- introspection (tests, benchmarks, logs) ------------------------------------------------------------------

    def stored_counts(self) -> dict[str, int]:
        return {} if self.core is None else self.core.stored_counts()

    def memory_bytes(self) -> int:
        return 0 if self.core is None else self.core.stored_bytes()


def _clone(value):
    if isinstance(value, torch.Tensor):
        return value.clone()
    if isinstance(value, (list, tuple)):
        return [_clone(v) for v in value]
    return value


def _describe(image) -> str:
    if isinstance(image, np.ndarray):
        return f"{image.dtype} array of shape {image.shape}"
    return type(image).__name__


__all__ = ["FAMILIES", "TRACKER_MODEL_SETS", "Sam2VideoSession", "Sam2VideoTracker"]
