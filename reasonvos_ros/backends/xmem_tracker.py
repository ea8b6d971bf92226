"""XMem as the pipeline's tracker backend (``tracker: {name: xmem, options: {...}}``).

``XMemTracker(checkpoint=...)`` loads the published ``XMem.pth`` layout (weights-only, strict; dimensions read
from the file) and hands out independent sessions; each session is one XMem inference pass (its own working,
long-term and sensory memory), so the pipeline's backward pass over stored frames and its forward/online pass
never share memory. What the sessions share is the network and a bounded cache of key-encoder features keyed by
``Frame.uid``: an LRU of the last ``feature_cache_size`` frames plus the last two frames on which objects were
seeded (both passes start at the key frame, and a long backward pass must not evict it), so a frame visited by
both passes is encoded once. ``feature_cache_size: 0`` disables caching.

Per step: the frame is resized so that its shorter side is ``size`` (None keeps the input size), normalised,
padded to a multiple of 16, processed, and the probabilities are brought back to the input size. Each object's
mask is the argmax of the soft-aggregated probabilities; a seeded object returns its seed mask on the seeding
frame. ``TrackedMask.confidence`` = mean, over the returned mask's pixels, of the object's soft-aggregated
probability (so in [0, 1]; 0 for an empty mask). It is high when the prediction is decisive and drops when the
object's pixels are contested by the background or other objects, which is what the pipeline's lost check needs.

The options are ``XMemOptions`` (``checkpoint``, the path of ``XMem.pth``, is required).
"""

from __future__ import annotations

import contextlib
import threading
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from reasonvos_ros.core.errors import BackendUnavailable, ConfigError
from reasonvos_ros.core.interfaces import Tracker, TrackerSession, checked_seed_masks
from reasonvos_ros.core.options import OptionSet, device_option, num_threads_option, option, weights_path
from reasonvos_ros.core.types import Frame, TrackedMask
from reasonvos_ros.models.weights import resolve_device, resolve_dtype
from reasonvos_ros.models.xmem.checkpoint import CheckpointError, load_network
from reasonvos_ros.models.xmem.inference import FrameGeometry, InferenceSettings, XMemInference
from reasonvos_ros.models.xmem.network import KeyFeatures, XMemNetwork

_SEED_CACHE_SIZE = 2


_AUTO_FLAG = (True, False, "auto")


def _auto_flag(value: bool | str, on_cuda: bool) -> bool:
    return on_cuda if value == "auto" else bool(value)


@dataclass(frozen=True)
class XMemOptions(OptionSet):
    checkpoint: str | None = option(None, "path of XMem.pth (required; published with XMem's releases)")
    device: str = device_option()
    size: int | None = option(480, "frames are resized so that their shorter side is this (null: input size)", low=16)
    mem_every: int = option(5, "every n-th frame becomes a memory frame", low=1)
    top_k: int = option(30, "memory readout keeps the top k matches", low=1)
    deep_update_every: int = option(-1, "deep update of the sensory memory every n frames (-1: with memory frames)")
    enable_long_term: bool = option(True, "use the long-term memory (consolidated prototypes)")
    min_mid_term_frames: int = option(5, "working-memory frames kept when consolidating", low=1)
    max_mid_term_frames: int = option(10, "working-memory frames that trigger a consolidation", low=1)
    num_prototypes: int = option(128, "long-term prototypes made per consolidation", low=1)
    max_long_term_elements: int = option(10000, "long-term memory size bound", low=1)
    count_long_term_usage: bool = option(True, "bound the long-term memory by usage (else oldest first)")
    autocast: bool | str = option(
        "auto", "mixed precision (auto: on CUDA only; true on CPU uses bfloat16)", choices=_AUTO_FLAG
    )
    autocast_dtype: str = option("float16", "autocast dtype on CUDA: float16 or bfloat16")
    channels_last: bool | str = option("auto", "channels-last memory format (auto: on CUDA)", choices=_AUTO_FLAG)
    feature_cache_size: int = option(
        4, "key-encoder features of this many recent frames shared between sessions (0: no sharing)", low=0
    )
    num_threads: int | None = num_threads_option()


class XMemTracker(Tracker):
    """XMem tracker backend; see the module docstring, and ``XMemOptions`` for the options."""

    Options = XMemOptions

    def __init__(self, options: XMemOptions | None = None, /, **values: Any) -> None:
        self.options = options = XMemOptions.build(options, values)
        path = weights_path(
            options.checkpoint,
            option_name="checkpoint",
            backend="xmem",
            role="tracker",
            label="XMem",
            what="the path to XMem.pth (published with XMem's releases)",
            kind="file",
        )
        try:
            self.settings = InferenceSettings.from_options(
                mem_every=options.mem_every,
                deep_update_every=options.deep_update_every,
                top_k=options.top_k,
                enable_long_term=options.enable_long_term,
                count_long_term_usage=options.count_long_term_usage,
                min_mid_term_frames=options.min_mid_term_frames,
                max_mid_term_frames=options.max_mid_term_frames,
                num_prototypes=options.num_prototypes,
                max_long_term_elements=options.max_long_term_elements,
            )
        except ValueError as exc:
            raise ConfigError(f"bad XMem option: {exc}") from exc
        self.device = resolve_device(options.device, option="XMem option device")
        on_cuda = self.device.type == "cuda"
        self.autocast = _auto_flag(options.autocast, on_cuda)
        half = (torch.float16, torch.bfloat16)
        gpu_dtype = resolve_dtype(
            options.autocast_dtype, self.device, option="XMem option autocast_dtype", allowed=half
        )
        # CPU autocast runs in bfloat16 only.
        self.autocast_dtype = gpu_dtype if on_cuda else torch.bfloat16
        self.channels_last = _auto_flag(options.channels_last, on_cuda)
        if options.num_threads is not None:
            torch.set_num_threads(options.num_threads)
        try:
            network = load_network(path)
        except CheckpointError as exc:
            raise BackendUnavailable(f"unusable XMem checkpoint: {exc}") from exc
        self.checkpoint = path
        self.size = options.size
        self.network: XMemNetwork = network
        self.feature_cache_size = options.feature_cache_size
        self._cache: OrderedDict[tuple, tuple[torch.Tensor, KeyFeatures]] = OrderedDict()
        self._seed_cache: OrderedDict[tuple, tuple[torch.Tensor, KeyFeatures]] = OrderedDict()
        self.cache_hits = 0
        self.cache_misses = 0
        self.lock = threading.RLock()
        self.network.to(self.device)
        if self.channels_last:
            self.network.to(memory_format=torch.channels_last)

    # ---- Tracker API ---------------------------------------------------------------------------------------------

    def new_session(self) -> XMemSession:
        return XMemSession(self)

    def release(self) -> None:
        """Drop the feature cache and move the network off the GPU (it comes back on the next step)."""
        with self.lock:
            self._cache.clear()
            self._seed_cache.clear()
            if self.device.type == "cuda":
                self.network.to("cpu")
                torch.cuda.empty_cache()

    # ---- shared helpers ----------------------------------------------------------------------------------------

    @property
    def config(self):
        return self.network.config

    def _place_network(self) -> None:
        if next(self.network.parameters()).device != self.device:
            self.network.to(self.device)
            if self.channels_last:
                self.network.to(memory_format=torch.channels_last)

    def amp_context(self):
        if not self.autocast:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.autocast_dtype)

    def encode(
        self, frame: Frame, image: np.ndarray, geometry: FrameGeometry, seeding: bool = False
    ) -> tuple[torch.Tensor, KeyFeatures]:
        """Normalised padded image and key features of ``frame``, from the cache when it was seen before.

        Frames on which a session seeds objects go to a separate two-entry cache: the pipeline's passes all start
        at the key frame, and a backward pass longer than the recent-frame cache must not evict it."""
        cache_key = (frame.uid, geometry)
        for cache in (self._seed_cache, self._cache):
            cached = cache.get(cache_key)
            if cached is not None:
                cache.move_to_end(cache_key)
                self.cache_hits += 1
                if seeding and cache is self._cache:
                    self._remember(self._seed_cache, cache_key, cached, _SEED_CACHE_SIZE)
                return cached
        self.cache_misses += 1
        self._place_network()
        tensor = geometry.image_tensor(image, self.device)
        if self.channels_last:
            tensor = tensor.contiguous(memory_format=torch.channels_last)
        entry = (tensor, self.network.encode_key(tensor))
        if seeding:
            self._remember(self._seed_cache, cache_key, entry, _SEED_CACHE_SIZE)
        else:
            self._remember(self._cache, cache_key, entry, self.feature_cache_size)
        return entry

    def _remember(self, cache: OrderedDict, cache_key: tuple, entry: tuple, capacity: int) -> None:
        if self.feature_cache_size <= 0:
            return
        cache[cache_key] = entry
        cache.move_to_end(cache_key)
        while len(cache) > capacity:
            cache.popitem(last=False)

    def cached_frames(self) -> int:
        return len(self._cache) + len(self._seed_cache)


class XMemSession(TrackerSession):
    """One XMem pass. Objects are seeded with ``step(frame, {id: mask})`` and tracked on every later step."""

    def __init__(self, tracker: XMemTracker) -> None:
        self.tracker = tracker
        self.core = XMemInference(tracker.network, tracker.settings)
        self.geometry: FrameGeometry | None = None
        self.closed = False

    def step(self, frame: Frame, new_masks: Mapping[str, np.ndarray] | None = None) -> dict[str, TrackedMask]:
        if self.closed:
            raise RuntimeError("step on a closed XMem session")
        new_masks = dict(new_masks or {})
        if not self.core.objects and not new_masks:
            return {}
        image = frame.image
        if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"frame {frame.index}: expected an RGB uint8 HxWx3 image, got {_describe(image)}")
        height, width = image.shape[:2]
        if self.geometry is not None and self.geometry.input_hw != (height, width):
            raise ValueError(
                f"frame {frame.index} is {height}x{width} but this XMem session started at "
                f"{self.geometry.input_hw[0]}x{self.geometry.input_hw[1]}; start a new session for a new size"
            )
        seeds = checked_seed_masks(new_masks, height, width)
        if self.geometry is None:
            self.geometry = FrameGeometry.for_input(height, width, self.tracker.size)
        geometry = self.geometry
        tracker = self.tracker
        with tracker.lock, torch.inference_mode(), tracker.amp_context():
            image_tensor, features = tracker.encode(frame, image, geometry, seeding=bool(seeds))
            masks = {k: geometry.mask_tensor(v, tracker.device) for k, v in seeds.items()}
            ids, prob = self.core.step(image_tensor, features, masks)
            prob = geometry.restore(prob.float())
            labels = prob.argmax(dim=0)
            out: dict[str, TrackedMask] = {}
            for channel, obj_id in enumerate(ids, start=1):
                if obj_id in seeds:
                    mask = torch.from_numpy(seeds[obj_id]).to(prob.device)
                else:
                    mask = labels == channel
                area = int(mask.sum())
                confidence = float(prob[channel][mask].mean()) if area else 0.0
                out[obj_id] = TrackedMask(mask.cpu().numpy(), min(max(confidence, 0.0), 1.0))
        return out

    def clear(self) -> None:
        """Forget every object and all memory; the session stays usable (a new target, any frame size)."""
        self.core.clear()
        self.geometry = None

    def close(self) -> None:
        self.clear()
        self.closed = True

    # ---- introspection (tests, benchmarks, logs) ------------------------------------------------------------------

    @property
    def memory(self):
        return self.core.memory

    def memory_bytes(self) -> int:
        """Bytes held by this session's memory (keys, values, usage, sensory state)."""
        hidden = self.core.hidden
        return self.core.memory.nbytes() + (0 if hidden is None else hidden.numel() * hidden.element_size())


def _describe(image) -> str:
    if isinstance(image, np.ndarray):
        return f"{image.dtype} array of shape {image.shape}"
    return type(image).__name__
