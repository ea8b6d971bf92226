"""The live ingest policy without ROS (core/ingest.py): stamps and time lines, depth synchronisation and the depth
cache, frame sizes, and what is rejected with which category."""

from __future__ import annotations

import numpy as np
import pytest

from reasonvos_ros.core.ingest import (
    DEPTH_CACHE_FRAMES,
    DepthSyncSettings,
    FrameMeta,
    RgbdIngest,
    UnreadableInput,
    jumped_back,
)
from reasonvos_ros.core.rejections import RejectionCounter
from reasonvos_ros.core.window import RollingWindow

HEIGHT, WIDTH = 12, 16
K = [100.0, 0.0, 8.0, 0.0, 100.0, 6.0, 0.0, 0.0, 1.0]
P_UNSET = [0.0] * 12


class Lines:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def warning(self, text: str, **_) -> None:
        self.lines.append(text)


class Harness:
    """An ingest feeding a real window, with every callback recorded."""

    def __init__(self, depth: bool = False, queue_size: int = 5, slop_s: float = 0.01) -> None:
        self.rejections = RejectionCounter(Lines())
        self.frames = []
        self.timelines: list[str] = []
        self.jumps: list[tuple[str, float]] = []
        self.window = RollingWindow(max_duration_s=100.0)
        self.ingest = RgbdIngest(
            self.rejections,
            self.frames.append,
            self.timelines.append,
            lambda stream, back: self.jumps.append((stream, back)),
        )
        settings = DepthSyncSettings(queue_size, slop_s, "/cam/depth", "/cam/info") if depth else None
        self.ingest.open(self.window, settings)

    def image(self, stamp: float, shape=(HEIGHT, WIDTH), value: int = 90, header="h") -> None:
        """As the node hands over a colour message: counted on arrival, then added."""
        started = self.ingest.image_arrived()
        self.ingest.add_image(header, stamp, np.full((*shape, 3), value, np.uint8))
        self.ingest.image_done(started)

    def depth(self, stamp: float, metres=1.5, shape=(HEIGHT, WIDTH)) -> None:
        self.ingest.add_depth(stamp, lambda: np.full(shape, metres, np.float32))

    def info(self, stamp: float, k=K, p=P_UNSET) -> None:
        self.ingest.add_camera_info(stamp, k, p)

    def rgbd(self, stamp: float, **depth) -> None:
        self.image(stamp)
        self.depth(stamp, **depth)
        self.info(stamp)


def test_the_jump_back_rule_is_strictly_more_than_one_second():
    assert not jumped_back(99.0, 100.0)  # exactly 1 s back: a late message, not a new time line
    assert jumped_back(98.9, 100.0)
    assert not jumped_back(100.5, 100.0)
    assert not jumped_back(5.0, -np.inf)  # nothing seen yet


def test_duplicate_and_out_of_order_stamps_are_rejected_per_stream():
    h = Harness()
    h.image(10.0)
    h.image(10.0)  # duplicate
    h.image(9.5)  # out of order
    h.image(9.0)  # exactly 1 s back: still out of order
    h.image(10.1)
    assert h.rejections.counts == {"image": 3}
    assert [f.stamp for f in h.frames] == [10.0, 10.1]
    assert h.ingest.time_jumps == 0 and not h.jumps
    assert "not newer than the previous image message (10.000 s)" in h.rejections.logger.lines[0]


def test_a_jump_back_of_more_than_a_second_starts_a_new_time_line_and_clears_the_window():
    h = Harness()
    for t in range(5):
        h.image(20.0 + t / 10)
    assert len(h.window) == 5
    h.image(3.0)  # bag loop
    assert h.ingest.time_jumps == 1
    assert h.jumps == [("image", pytest.approx(17.4))]
    assert [f.stamp for f in h.window.snapshot()] == [3.0]
    assert h.window.stats().resets_total == 1
    assert not h.rejections.counts
    h.image(3.1)  # the new time line goes on
    assert len(h.window) == 2 and h.ingest.time_jumps == 1


def test_after_a_jump_back_the_synchroniser_delivers_again_and_the_other_streams_catch_up():
    h = Harness(depth=True)
    for t in range(5):
        h.rgbd(50.0 + t / 10)
    assert len(h.frames) == 5
    for t in range(3):  # every stream goes back 40 s; only the first to arrive counts as the jump
        h.rgbd(10.0 + t / 10)
    assert h.ingest.time_jumps == 1 and [stream for stream, _ in h.jumps] == ["image"]
    assert [f.stamp for f in h.window.snapshot()] == [10.0, 10.1, 10.2]
    assert not h.rejections.counts


def test_depth_is_kept_for_the_newest_frames_only_and_never_in_the_window():
    h = Harness(depth=True)
    for t in range(20):
        h.rgbd(1.0 + t / 30, metres=1.0 + t)
    frames = h.window.snapshot()
    assert len(frames) == 20 and all(isinstance(f.meta, FrameMeta) and vars(f.meta) == {"header": "h"} for f in frames)
    assert h.ingest.depth_frames() == DEPTH_CACHE_FRAMES
    kept = [f for f in frames if h.ingest.depth_for(f) is not None]
    assert [f.index for f in kept] == [f.index for f in frames[-DEPTH_CACHE_FRAMES:]]
    newest = h.ingest.depth_for(frames[-1])
    assert newest.depth_m.shape == (HEIGHT, WIDTH) and float(newest.depth_m[0, 0]) == 20.0
    assert (newest.intrinsics.fx, newest.intrinsics.cx, newest.intrinsics.cy) == (100.0, 8.0, 6.0)
    h.ingest.close()
    assert h.ingest.depth_frames() == 0


def test_rectified_projection_p_is_preferred_over_k():
    h = Harness(depth=True)
    p = [200.0, 0.0, 7.5, 0.0, 0.0, 210.0, 5.5, 0.0, 0.0, 0.0, 1.0, 0.0]
    h.image(1.0)
    h.depth(1.0)
    h.info(1.0, p=p)
    intrinsics = h.ingest.depth_for(h.frames[0]).intrinsics
    assert (intrinsics.fx, intrinsics.fy, intrinsics.cx, intrinsics.cy) == (200.0, 210.0, 7.5, 5.5)


def test_unusable_depth_or_camera_info_is_rejected_but_the_colour_frame_is_kept():
    h = Harness(depth=True)

    def unreadable():
        raise UnreadableInput("encoding 'bgr8' is not a depth image")

    h.image(1.0)
    h.ingest.add_depth(1.0, unreadable)
    h.info(1.0)
    h.rgbd(2.0, shape=(HEIGHT // 2, WIDTH))  # not registered to the colour image
    h.image(3.0)
    h.depth(3.0)
    h.info(3.0, k=[0.0] * 9)  # focal length 0
    h.rgbd(4.0, metres=np.nan)  # no valid pixel: kept, but said
    assert len(h.frames) == 4
    assert h.rejections.counts == {"depth": 3, "camera_info": 1}
    assert h.ingest.depth_for(h.frames[0]) is None and h.ingest.depth_for(h.frames[1]) is None
    no_intrinsics = h.ingest.depth_for(h.frames[2])
    assert no_intrinsics.depth_m is not None and no_intrinsics.intrinsics is None
    assert h.ingest.depth_for(h.frames[3]).intrinsics is not None


def test_depth_is_decoded_only_for_matched_frames_of_an_accepted_size():
    h = Harness(depth=True)
    decoded = []

    def load(stamp):
        decoded.append(stamp)
        return np.ones((HEIGHT, WIDTH), np.float32)

    h.image(1.0)
    h.ingest.add_depth(1.0, lambda: load(1.0))
    h.info(1.0)
    h.ingest.add_depth(1.5, lambda: load(1.5))  # no colour frame of that stamp
    h.image(2.0, shape=(4, 4))  # a stray of another size
    h.ingest.add_depth(2.0, lambda: load(2.0))
    h.info(2.0)
    assert decoded == [1.0] and h.rejections.counts == {"frame_size": 1}


def test_frames_of_another_size_are_strays_until_confirmed_as_a_new_resolution():
    h = Harness()
    h.image(1.0)
    h.image(1.1, shape=(6, 8))  # stray
    h.image(1.2)
    assert h.rejections.counts == {"frame_size": 1} and len(h.window) == 2
    for t in range(3):
        h.image(2.0 + t / 10, shape=(6, 8))
    assert h.rejections.counts == {"frame_size": 3}  # the first two of the new size were not yet confirmed
    assert h.timelines == ["camera resolution changed to 8x6"]
    assert [f.image.shape for f in h.window.snapshot()] == [(6, 8, 3)]


def test_a_run_of_unmatched_colour_frames_is_reported_once_per_run_not_single_drops():
    h = Harness(depth=True, queue_size=5)
    for t in range(30):
        h.image(1.0 + t / 10)
        if t % 3:
            h.depth(1.0 + t / 10)
        h.info(1.0 + t / 10)
    assert "unsynchronised_image" not in h.rejections.counts
    for t in range(30, 41):  # depth stops: 11 colour frames without a match is over 2 * queue_size
        h.image(1.0 + t / 10)
        h.info(1.0 + t / 10)
    assert h.rejections.counts["unsynchronised_image"] == 1
    line = h.rejections.logger.lines[-1]
    assert "'/cam/depth' and '/cam/info'" in line and "image 5.000 s" in line and "camera_info 4.900 s" in line


def test_stats_count_every_colour_message_and_closing_keeps_the_counters():
    h = Harness()
    assert h.ingest.stats().ingest_s_median is None
    for t in range(3):
        h.image(1.0 + t)
    h.image(2.5)  # out of order: rejected, but received
    h.image(0.0)  # a jump back
    stats = h.ingest.stats()
    assert stats.frames_received == 5 and stats.time_jumps == 1
    assert stats.input_rate_hz > 0 and stats.ingest_s_median >= 0
    h.ingest.close()
    assert h.ingest.stats().time_jumps == 1 and not h.ingest.uses_depth
