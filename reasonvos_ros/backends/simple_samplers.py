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

from ..core.errors import ConfigError
from ..core.interfaces import FrameSampler
from ..core.types import Frame, KeyframeChoice


def _check_frames(frames: Sequence[Frame], name: str) -> int:
    if len(frames) == 0:
        raise ValueError(f"the {name!r} sampler needs at least one frame")
    return len(frames)


class LatestFrameSampler(FrameSampler):
    """Key frame = the newest frame of the window."""

    def sample(self, frames: Sequence[Frame], instruction: str) -> KeyframeChoice:
        count = _check_frames(frames, "latest")
        return KeyframeChoice(key=count - 1, references=[], confidence=None, details={"sampler": "latest"})


class UniformFrameSampler(FrameSampler):
    """Key frame = the frame at a fixed fraction ``position`` of the window (0.5: the middle)."""

    def __init__(self, position: float = 0.5) -> None:
        try:
            position = float(position)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"uniform sampler: position must be a number in [0, 1], got {position!r}") from exc
        if not 0.0 <= position <= 1.0:
            raise ConfigError(f"uniform sampler: position must be in [0, 1], got {position}")
        self.position = position

    def sample(self, frames: Sequence[Frame], instruction: str) -> KeyframeChoice:
        count = _check_frames(frames, "uniform")
        key = min(int(count * self.position), count - 1)
        return KeyframeChoice(
            key=key, references=[], confidence=None, details={"sampler": "uniform", "position": self.position}
        )
