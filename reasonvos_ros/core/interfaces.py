"""The three model roles of the pipeline, as small abstract interfaces.

Backends (lite OpenCV/SSD, VISA, XMem, video-LLM sampler, and the scripted test doubles) implement these; the
pipeline only talks to them through these methods. All images are RGB ``uint8`` and all masks ``bool``.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping, Sequence

import numpy as np

from .types import Evidence, Frame, KeyframeChoice, Segmentation, TrackedMask


class FrameSampler(abc.ABC):
    """Chooses the key frame of a window for an instruction (VISA's text-guided frame sampler)."""

    @abc.abstractmethod
    def sample(self, frames: Sequence[Frame], instruction: str) -> KeyframeChoice:
        """Return the key frame position in ``frames`` (``0 <= key < len(frames)``).

        ``references`` may be left empty: the pipeline then fills them with its configured strategy
        (see ``core.references``)."""

    def release(self) -> None:  # noqa: B027 - optional hook, default no-op
        """Free accelerator memory (lifecycle deactivate). Default: nothing to free."""


class KeyframeSegmenter(abc.ABC):
    """Segments the instructed object on the key frame, given reference frames for temporal context."""

    @abc.abstractmethod
    def segment(self, frames: Sequence[Frame], key: int, references: Sequence[int], instruction: str) -> Segmentation:
        """Mask on ``frames[key]`` (its size), or ``present=False`` with an empty mask."""

    def verify(
        self,
        frame: Frame,
        mask: np.ndarray,
        segmentation: Segmentation,
        predicted_box: tuple[float, float, float, float] | None = None,
    ) -> Evidence | None:
        """Independent evidence that ``mask`` (a tracked mask on ``frame``) still shows the target that
        ``segmentation`` found on the key frame; ``predicted_box`` is where the target's recent motion says it
        should be (None when unknown). None when this backend has no such check (default). Called by live
        tracking every ``redetect_interval_s``; it must be much cheaper than ``segment``."""
        return None

    def refind(
        self,
        frame: Frame,
        expected_box: tuple[float, float, float, float],
        segmentation: Segmentation,
        predicted_box: tuple[float, float, float, float] | None = None,
    ) -> Evidence | None:
        """Where the target is on ``frame`` now that its track looks lost (the tracker's mask vanished, collapsed
        or is contradicted): ``expected_box`` is where it was last seen (moved along its motion when known),
        ``predicted_box`` as in ``verify``. An ``Evidence`` whose ``correction`` is the target's mask when this
        backend finds it there unambiguously, else None (default: no such search; the target is re-acquired)."""
        return None

    def release(self) -> None:  # noqa: B027 - optional hook, default no-op
        """Free accelerator memory (lifecycle deactivate). Default: nothing to free."""


class TrackerSession(abc.ABC):
    """One pass of a tracker through time (forward, or backward over reversed stored frames).

    Objects are identified by string ids. ``step`` consumes frames in the order the pass visits them; giving
    ``new_masks`` on a step seeds (or re-seeds) those objects on that frame, like XMem's ``step(image, mask)``.
    """

    @abc.abstractmethod
    def step(self, frame: Frame, new_masks: Mapping[str, np.ndarray] | None = None) -> dict[str, TrackedMask]:
        """Advance to ``frame``; return every tracked object's mask on it (seeded objects return their seed)."""

    def close(self) -> None:  # noqa: B027 - optional hook, default no-op
        """Drop the session's memory."""


class Tracker(abc.ABC):
    """A tracker backend: a factory of independent sessions that may share caches (e.g. encoder features)."""

    #: True when different sessions may be stepped at the same time from different threads (each one by one
    #: thread at a time): they share no mutable state, or only thread-safe caches. The engine then locks per
    #: session instead of serialising every step of every target behind one tracker lock.
    concurrent_sessions: bool = False

    @abc.abstractmethod
    def new_session(self) -> TrackerSession: ...

    def release(self) -> None:  # noqa: B027 - optional hook, default no-op
        """Free accelerator memory and caches."""


def check_positions(frames: Sequence[Frame], key: int, references: Sequence[int]) -> None:
    """ValueError unless ``key`` and every reference are positions in ``frames`` (what ``segment`` receives)."""
    if not 0 <= key < len(frames):
        raise ValueError(f"key frame {key} outside the {len(frames)} frames given")
    bad = [r for r in references if not 0 <= r < len(frames)]
    if bad:
        raise ValueError(f"reference positions {bad} outside the {len(frames)} frames given")


def checked_seed_masks(new_masks: Mapping[str, np.ndarray], height: int, width: int) -> dict[str, np.ndarray]:
    """The seed masks of a ``TrackerSession.step`` as bool arrays; ValueError for one not of the frame's size."""
    seeds: dict[str, np.ndarray] = {}
    for obj_id, mask in new_masks.items():
        mask = np.asarray(mask)
        if mask.shape != (height, width):
            raise ValueError(f"seed mask for {obj_id!r} has shape {mask.shape}, frame is {(height, width)}")
        seeds[obj_id] = mask.astype(bool, copy=False)
    return seeds
