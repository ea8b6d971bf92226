"""Streaming XMem inference for one video pass, plus the frame geometry (resize, normalise, pad, restore).

``XMemInference.step`` follows the reference ``InferenceCore.step`` semantics:

* a frame becomes a memory frame when ``mem_every`` frames have passed since the last one, or when masks are given,
  never on an ``end`` frame;
* with ``deep_update_every < 0`` the sensory memory gets the value encoder's deep update on memory frames and the
  decoder's update on the other frames (none on ``end``); otherwise deep updates follow their own period;
* given masks seed new objects or overwrite existing ones; objects without a mask on that frame are predicted from
  memory and lose the pixels covered by the given masks; the memory value is encoded from the soft-aggregated
  probabilities, not the raw masks;
* the output is a background-first (num_objects + 1) x H x W probability map at the (padded) network resolution.

Objects carry caller-chosen hashable ids; ``remove`` forgets one object without touching the others' memory.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Hashable, Mapping
from dataclasses import dataclass, field, fields

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from .memory import MemorySettings, MemoryStore
from .network import KeyFeatures, XMemNetwork, soft_aggregate

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass
class InferenceSettings:
    mem_every: int = 5
    deep_update_every: int = -1  # < 0: deep update on every memory frame
    memory: MemorySettings = field(default_factory=MemorySettings)

    @classmethod
    def from_options(cls, **options) -> InferenceSettings:
        """Flat options (``mem_every``, ``top_k``, ``max_mid_term_frames``, ...) -> settings; unknown names raise."""
        memory_names = {f.name for f in fields(MemorySettings)}
        own = {k: v for k, v in options.items() if k in ("mem_every", "deep_update_every")}
        memory = {k: v for k, v in options.items() if k in memory_names}
        unknown = set(options) - set(own) - set(memory)
        if unknown:
            raise TypeError(f"unknown XMem inference option(s): {', '.join(sorted(unknown))}")
        settings = cls(memory=MemorySettings(**memory), **own)
        if settings.mem_every < 1:
            raise ValueError(f"mem_every must be >= 1, got {settings.mem_every}")
        settings.memory.validate()
        return settings


class XMemInference:
    """One pass of XMem through a video (the reference ``InferenceCore``), on pre-encoded frames."""

    def __init__(self, network: XMemNetwork, settings: InferenceSettings | None = None) -> None:
        self.network = network
        self.settings = settings or InferenceSettings()
        self.memory = MemoryStore(self.settings.memory)
        self.clear()

    def clear(self) -> None:
        """Forget everything (a new target)."""
        self.memory.clear()
        self.objects: list[Hashable] = []
        self.hidden: Tensor | None = None  # num_objects x hidden_dim x h x w
        self.frame_count = -1
        self.last_memory_frame = 0
        self.last_deep_update = -self.settings.deep_update_every
        # Frame counters of the latest memory frames (tests and logs); bounded for endless streams.
        self.memory_frames: deque[int] = deque(maxlen=256)

    def step(
        self,
        image: Tensor,
        features: KeyFeatures,
        masks: Mapping[Hashable, Tensor] | None = None,
        end: bool = False,
    ) -> tuple[list[Hashable], Tensor]:
        """Process one frame. ``image``: 1 x 3 x H x W normalised and padded (multiple of 16); ``features``: its
        ``network.encode_key``; ``masks``: id -> H x W float (0/1 or soft). Returns (object ids, probabilities
        (len(ids) + 1) x H x W, background first)."""
        masks = dict(masks or {})
        self.frame_count += 1
        height, width = image.shape[-2:]
        for obj_id, mask in masks.items():
            if tuple(mask.shape) != (height, width):
                raise ValueError(f"mask for {obj_id!r} has shape {tuple(mask.shape)}, frame is {(height, width)}")
        if not self.objects and not masks:
            return [], torch.ones((1, height, width), device=image.device)
        if end and any(obj_id not in self.objects for obj_id in masks):
            raise ValueError("new objects cannot be seeded on an end frame (it is never memorised)")

        mem_every, deep_every = self.settings.mem_every, self.settings.deep_update_every
        deep_sync = deep_every < 0
        is_memory_frame = (self.frame_count - self.last_memory_frame >= mem_every or bool(masks)) and not end
        need_segment = any(obj_id not in masks for obj_id in self.objects)
        is_deep_update = (
            (deep_sync and is_memory_frame)
            or (not deep_sync and self.frame_count - self.last_deep_update >= deep_every)
        ) and not end
        is_normal_update = (not deep_sync or not is_deep_update) and not end

        predicted: Tensor | None = None
        if need_segment:
            readout = self.memory.read(features.key, features.selection)
            readout = torch.stack([readout[obj_id] for obj_id in self.objects]).to(features.f16.dtype)
            hidden, prob = self.network.segment(features, readout, self.hidden, update_hidden=is_normal_update)
            if is_normal_update and hidden is not None:
                self.hidden = hidden.float()
            predicted = prob[1:]

        if masks:
            new_ids = [obj_id for obj_id in masks if obj_id not in self.objects]
            given = {k: v.to(device=image.device, dtype=torch.float32) for k, v in masks.items()}
            if predicted is not None:
                covered = torch.stack(list(given.values())).sum(dim=0) > 0.5
                predicted = predicted.masked_fill(covered[None], 0)
            channels = [
                given[obj_id] if obj_id in given else predicted[index] for index, obj_id in enumerate(self.objects)
            ]
            channels += [given[obj_id] for obj_id in new_ids]
            self.objects = self.objects + new_ids
            prob = soft_aggregate(torch.stack(channels))
            self._add_hidden(len(new_ids), features.key)

        if is_memory_frame:
            values, hidden = self.network.encode_value(
                image, features.f16, self.hidden, prob[1:], deep_update=is_deep_update
            )
            self.memory.add(
                features.key,
                features.shrinkage,
                features.selection,
                {obj_id: values[index] for index, obj_id in enumerate(self.objects)},
            )
            self.last_memory_frame = self.frame_count
            self.memory_frames.append(self.frame_count)
            if is_deep_update:
                if hidden is not None:
                    self.hidden = hidden.float()
                self.last_deep_update = self.frame_count
        return list(self.objects), prob

    def _add_hidden(self, count: int, key: Tensor) -> None:
        hidden_dim = self.network.config.hidden_dim
        if count == 0 or hidden_dim <= 0:
            return
        zeros = torch.zeros((count, hidden_dim, *key.shape[-2:]), device=key.device)
        self.hidden = zeros if self.hidden is None else torch.cat([self.hidden, zeros])


@dataclass(frozen=True)
class FrameGeometry:
    """How an input frame maps to the network input: optional resize (shorter side), then zero padding (after
    normalisation, as the reference) split evenly to a multiple of 16."""

    input_hw: tuple[int, int]
    resized_hw: tuple[int, int]
    pad: tuple[int, int, int, int]  # left, right, top, bottom

    @classmethod
    def for_input(cls, height: int, width: int, shorter_side: int | None = 480, multiple: int = 16) -> FrameGeometry:
        if height < 1 or width < 1:
            raise ValueError(f"frame has no pixels: {height}x{width}")
        if shorter_side:
            scale = shorter_side / min(height, width)
            resized = (max(1, round(height * scale)), max(1, round(width * scale)))
        else:
            resized = (height, width)
        pad_h = (-resized[0]) % multiple
        pad_w = (-resized[1]) % multiple
        return cls((height, width), resized, (pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2))

    @property
    def padded_hw(self) -> tuple[int, int]:
        return (self.resized_hw[0] + self.pad[2] + self.pad[3], self.resized_hw[1] + self.pad[0] + self.pad[1])

    @property
    def resizes(self) -> bool:
        return self.resized_hw != self.input_hw

    def _resize(self, array: np.ndarray) -> np.ndarray:
        if not self.resizes:
            return array
        shrinking = self.resized_hw[0] < self.input_hw[0]
        interpolation = cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
        return cv2.resize(array, (self.resized_hw[1], self.resized_hw[0]), interpolation=interpolation)

    def image_tensor(self, image: np.ndarray, device: torch.device | str = "cpu") -> Tensor:
        """RGB uint8 H x W x 3 -> 1 x 3 x Hp x Wp float32, ImageNet-normalised, zero-padded."""
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"expected an RGB uint8 HxWx3 image, got {image.dtype} {image.shape}")
        if tuple(image.shape[:2]) != self.input_hw:
            raise ValueError(f"image is {image.shape[:2]}, geometry expects {self.input_hw}")
        x = torch.from_numpy(np.ascontiguousarray(self._resize(image))).to(device)
        x = x.permute(2, 0, 1).float() / 255
        mean = torch.tensor(IMAGENET_MEAN, device=x.device)[:, None, None]
        std = torch.tensor(IMAGENET_STD, device=x.device)[:, None, None]
        x = (x - mean) / std
        return F.pad(x, self.pad)[None]

    def mask_tensor(self, mask: np.ndarray, device: torch.device | str = "cpu") -> Tensor:
        """Mask H x W (bool or 0..1) -> Hp x Wp float32 0/1 (resized masks are re-thresholded at 0.5)."""
        if mask.shape != self.input_hw:
            raise ValueError(f"mask has shape {mask.shape}, frame is {self.input_hw}")
        m = self._resize(np.asarray(mask, dtype=np.float32))
        m = torch.from_numpy((m >= 0.5).astype(np.float32)).to(device)
        return F.pad(m, self.pad)

    def restore(self, prob: Tensor) -> Tensor:
        """C x Hp x Wp -> C x H x W at the input size (crop the padding, bilinear resize back)."""
        left, right, top, bottom = self.pad
        prob = prob[:, top : prob.shape[1] - bottom, left : prob.shape[2] - right]
        if self.resizes:
            prob = F.interpolate(prob[None], size=self.input_hw, mode="bilinear", align_corners=False)[0]
        return prob
