"""What a camera frame of another size than the current timeline's means (ROS-free).

Tracker sessions and the rolling window hold frames of one size. A frame of another size is either a stray
(a glitch, a 1x1 test image, another camera publishing on the topic): it is rejected and counted, and tracking
goes on; or the camera changed resolution (a driver reconfigure): after ``confirm_frames`` consecutive frames of
the same new size a new timeline starts at that size (the caller clears the window and re-acquires every target).
The frames of the new size before the confirmation are rejected too (a stray cannot be told from a change
before the next frames arrive).
"""

from __future__ import annotations

from enum import Enum

__all__ = ["FrameSizeGate", "SizeDecision"]


class SizeDecision(Enum):
    ACCEPT = "accept"  # same size as the timeline (or the first frame)
    REJECT = "reject"  # another size, not (yet) confirmed: drop the frame
    NEW_TIMELINE = "new_timeline"  # the camera changed resolution: start over at this size


class FrameSizeGate:
    def __init__(self, confirm_frames: int = 3) -> None:
        if confirm_frames < 1:
            raise ValueError(f"confirm_frames must be >= 1, got {confirm_frames}")
        self.confirm_frames = confirm_frames
        self.size: tuple[int, int] | None = None  # (height, width) of the current timeline
        self._candidate: tuple[int, int] | None = None
        self._candidate_count = 0

    def check(self, size: tuple[int, int]) -> SizeDecision:
        """Decide about a frame of ``size`` = (height, width), in arrival order."""
        size = (int(size[0]), int(size[1]))
        if self.size is None or size == self.size:
            self.size = size
            self._candidate, self._candidate_count = None, 0
            return SizeDecision.ACCEPT
        if size == self._candidate:
            self._candidate_count += 1
        else:
            self._candidate, self._candidate_count = size, 1
        if self._candidate_count >= self.confirm_frames:
            self.size = size
            self._candidate, self._candidate_count = None, 0
            return SizeDecision.NEW_TIMELINE
        return SizeDecision.REJECT

    def reset(self) -> None:
        """Forget the size (a new timeline for another reason, e.g. time jumped back)."""
        self.size, self._candidate, self._candidate_count = None, None, 0
