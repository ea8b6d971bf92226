"""Model-free frame samplers for robots without the compute for a video LLM.

* ``"latest"`` -- ``LatestFrameSampler``: the newest frame of the window (index ``T - 1``). The live default: the
  segmentation lands on the frame the robot sees now, so tracking starts from the present.
* ``"uniform"`` -- ``UniformFrameSampler``: a fixed fraction of the window, ``min(int(T * position), T - 1)`` (the
  same mapping the TFS uses for its averaged answer). ``position=0.5`` (default) picks the middle of the window --
  what the TFS falls back to when none of its answers parse; ``position=1.0`` equals ``"latest"``, ``0.0`` the
  oldest frame.

Both return empty ``references`` (the pipeline fills them) and ``confidence=None`` (no notion of confidence).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..core.interfaces import FrameSampler
from ..core.options import OptionSet, option
from ..core.types import Frame, KeyframeChoice


def _check_frames(frames: Sequence[Frame], name: str) -> int:
    if len(frames) == 0:
        raise ValueError(f"the {name!r} sampler needs at least one frame")
    return len(frames)


@dataclass(frozen=True)
class LatestOptions(OptionSet):
    """The "latest" sampler has no options."""


class LatestFrameSampler(FrameSampler):
    """Key frame = the newest frame of the window."""

    Options = LatestOptions

    def __init__(self, options: LatestOptions | None = None, /, **values: Any) -> None:
        self.options = LatestOptions.build(options, values)

    def sample(self, frames: Sequence[Frame], instruction: str) -> KeyframeChoice:
        count = _check_frames(frames, "latest")
        return KeyframeChoice(key=count - 1, references=[], confidence=None, details={"sampler": "latest"})


@dataclass(frozen=True)
class UniformOptions(OptionSet):
    position: float = option(
        0.5, "fraction of the window where the key frame is (0 = oldest, 0.5 = middle, 1 = newest)", low=0.0, high=1.0
    )


class UniformFrameSampler(FrameSampler):
    """Key frame = the frame at a fixed fraction ``position`` of the window (0.5: the middle)."""

    Options = UniformOptions

    def __init__(self, options: UniformOptions | None = None, /, **values: Any) -> None:
        self.options = UniformOptions.build(options, values)
        self.position = self.options.position

    def sample(self, frames: Sequence[Frame], instruction: str) -> KeyframeChoice:
        count = _check_frames(frames, "uniform")
        key = min(int(count * self.position), count - 1)
        return KeyframeChoice(
            key=key, references=[], confidence=None, details={"sampler": "uniform", "position": self.position}
        )
