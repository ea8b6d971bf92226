"""The "opencv" tracker on composited clips with exact ground truth: forward, backward, occlusion, two objects,
leaving the view."""

from __future__ import annotations

import time

import numpy as np
import pytest

from reasonvos_ros.backends.lite.tracker import OpenCVTracker, OpenCVTrackerSession
from reasonvos_ros.core.registry import build_backend
from reasonvos_ros.core.types import Frame
from reasonvos_ros.data.composite import make_composite_clip, make_two_object_clip, mask_iou
from reasonvos_ros.data.media import media_available

pytestmark = pytest.mark.skipif(
    not media_available("dog.jpg", "person.jpg", "vtest.avi", "building.jpg"),
    reason="needs the Debian packages darknet and opencv-doc",
)

# Measured with the default options on these clips (benchmarks/bench_lite.py prints the same figures): mean IoU
# 0.939 forward and 0.891 backward through the pillar occlusion, 0.865 with stride 3; two objects: dog 0.985,
# person 0.84 (frames 1-11). The floors leave a margin for other OpenCV builds.
TRACK_IOU_FLOOR = 0.85
TWO_OBJECT_IOU_FLOOR = {"dog": 0.9, "person": 0.75}


@pytest.fixture(scope="module")
def clip():
    # 30 frames at 320x240; the dog (108 px tall) passes behind a 19 px pillar around frames 10-20.
    return make_composite_clip(n_frames=30, path=((0.15, 0.6), (0.85, 0.6)))


def track(session: OpenCVTrackerSession, frames, masks, order, obj_id="dog"):
    """Seed on the first frame of ``order``, step through the rest; (IoUs, confidences)."""
    ious, confidences = [], []
    for step, position in enumerate(order):
        out = session.step(frames[position], {obj_id: masks[position]} if step == 0 else None)
        if step == 0:
            np.testing.assert_array_equal(out[obj_id].mask, masks[position])  # the seed comes back unchanged
            continue
        ious.append(mask_iou(out[obj_id].mask, masks[position]))
        confidences.append(out[obj_id].confidence)
    return np.array(ious), np.array(confidences)


def test_forward_through_occlusion(clip):
    assert any(clip.occluded)
    ious, confidences = track(OpenCVTracker().new_session(), clip.as_frames(), clip.masks, range(len(clip)))
    assert ious.mean() > TRACK_IOU_FLOOR, ious.round(2)
    assert ious[-5:].mean() > TRACK_IOU_FLOOR  # recovered the whole dog after the pillar
    assert np.all((confidences >= 0) & (confidences <= 1))


def test_backward_pass(clip):
    """Frames given newest first, as the pipeline's backward pass does."""
    order = list(range(len(clip)))[::-1]
    ious, _ = track(OpenCVTracker().new_session(), clip.as_frames(), clip.masks, order)
    assert ious.mean() > TRACK_IOU_FLOOR, ious.round(2)


def test_strided_pass(clip):
    """The pipeline skips frames to fit its time budget: motion per step is then larger."""
    order = list(range(0, len(clip), 3))
    ious, _ = track(OpenCVTracker().new_session(), clip.as_frames(), clip.masks, order)
    assert ious.mean() > 0.75, ious.round(2)


def test_two_objects():
    frames, dog_masks, person_masks, _, _ = make_two_object_clip(
        {"n_frames": 16, "path": ((0.2, 0.62), (0.5, 0.62)), "occluder_x": None},
        {"cutout": "person", "path": ((0.8, 0.5), (0.6, 0.5)), "scale": 0.55},
    )
    frames = [Frame(i, i / 10, image=image) for i, image in enumerate(frames)]
    session = build_backend("tracker", "opencv").new_session()
    out = session.step(frames[0], {"dog": dog_masks[0], "person": person_masks[0]})
    assert list(out) == ["dog", "person"]
    ious = {"dog": [], "person": []}
    for i in range(1, 12):
        out = session.step(frames[i])
        ious["dog"].append(mask_iou(out["dog"].mask, dog_masks[i]))
        ious["person"].append(mask_iou(out["person"].mask, person_masks[i]))
    assert np.mean(ious["dog"]) > TWO_OBJECT_IOU_FLOOR["dog"], np.round(ious["dog"], 2)
    assert np.mean(ious["person"]) > TWO_OBJECT_IOU_FLOOR["person"], np.round(ious["person"], 2)
    out = session.step(frames[12])
    assert list(out) == ["dog", "person"]
    assert mask_iou(out["dog"].mask, dog_masks[12]) > TWO_OBJECT_IOU_FLOOR["dog"]
    # Re-seeding one object on a later frame returns that seed.
    out = session.step(frames[13], {"person": person_masks[13]})
    np.testing.assert_array_equal(out["person"].mask, person_masks[13])
    assert out["person"].confidence == 1.0 and "dog" in out


def test_leaving_the_view_collapses_the_mask():
    clip = make_composite_clip(n_frames=24, path=((0.5, 0.6), (1.5, 0.6)), occluder_x=None)
    gone = [i for i, m in enumerate(clip.masks) if not m.any()]
    assert gone, "the dog must leave the view"
    session = OpenCVTracker().new_session()
    frames = clip.as_frames()
    seed_area = clip.masks[0].sum()
    areas, confidences = [], []
    session.step(frames[0], {"dog": clip.masks[0]})
    for i in range(1, len(clip)):
        tracked = session.step(frames[i])["dog"]
        areas.append(tracked.area)
        confidences.append(tracked.confidence)
    # Once the dog is gone, what is left is small next to the seed (the pipeline's drift check uses 15%).
    assert max(areas[i - 1] for i in gone) < 0.15 * seed_area
    assert all(c == 0.0 for a, c in zip(areas, confidences) if a == 0)


def test_confidence_drops_when_the_object_is_replaced():
    """Cut to an unrelated scene: the tracker must not stay confident."""
    clip = make_composite_clip(n_frames=30, occluder_x=None)  # ~7 px per frame
    other = make_composite_clip(n_frames=2, occluder_x=None, background_start=400, cutout="person", scale=0.2)
    session = OpenCVTracker().new_session()
    session.step(clip.as_frames()[0], {"dog": clip.masks[0]})
    steady = [session.step(frame)["dog"].confidence for frame in clip.as_frames()[1:8]]
    jump = session.step(Frame(99, 9.9, image=other.frames[1]))["dog"].confidence
    assert min(steady) > 0.8 and jump < min(steady) - 0.2, (steady, jump)


@pytest.mark.parametrize("box_tracker", ["kcf", "mosse", "medianflow", "none"])
def test_other_box_trackers_run(clip, box_tracker):
    session = OpenCVTracker(box_tracker=box_tracker).new_session()
    ious, confidences = track(session, clip.as_frames(), clip.masks, range(6))
    assert ious.mean() > 0.8 and np.all((confidences >= 0) & (confidences <= 1))


def test_auto_box_tracker_picks_kcf_live_and_csrt_for_strided_or_backward_steps(clip, monkeypatch):
    """``box_tracker="auto"``: the cheap KCF on forward steps one frame apart (live), CSRT on the strided and
    backward steps of the budgeted passes, where KCF loses the dog behind the pillar; both keep the floors."""
    import reasonvos_ros.backends.lite.tracker as tracker_module

    made = []
    make = tracker_module.make_box_tracker

    def recording_make(kind, *args):
        made.append(kind)
        return make(kind, *args)

    monkeypatch.setattr(tracker_module, "make_box_tracker", recording_make)
    tracker = OpenCVTracker(box_tracker="auto")
    made.clear()  # the constructor makes one of each to check that this OpenCV build has them
    frames = clip.as_frames()  # 10 fps
    ious, _ = track(tracker.new_session(), frames, clip.masks, range(len(clip)))
    assert made == ["kcf"]  # made once, at the first step (none at the seed)
    assert ious.mean() > TRACK_IOU_FLOOR, ious.round(2)
    made.clear()
    ious, _ = track(tracker.new_session(), frames, clip.masks, range(0, len(clip), 3))
    assert made == ["csrt"]
    assert ious.mean() > 0.75, ious.round(2)
    made.clear()
    ious, _ = track(tracker.new_session(), frames, clip.masks, range(len(clip))[::-1])
    assert made == ["csrt"]
    assert ious.mean() > TRACK_IOU_FLOOR, ious.round(2)
    # A strided catch-up that goes live: CSRT while strided, then KCF from the previous frame's mask.
    made.clear()
    session = tracker.new_session()
    ious, _ = track(session, frames, clip.masks, [0, 3, 6, 9, 10, 11, 12])
    assert made == ["csrt", "kcf"] and session._objects["dog"].box_kind == "kcf"
    assert ious.mean() > TRACK_IOU_FLOOR, ious.round(2)


def test_still_pixels_erase_an_occluder_not_the_whole_object(clip):
    """The graph cut treats still pixels as a static occluder in front of an object that moved. When they are
    (almost) all of the object's pixels, the object itself did not move (the box tracker's 2-3 px were jitter,
    as on slowly walking pedestrians): the mask must not be erased."""
    from reasonvos_ros.backends.lite.tracker import _StepFlow

    session = OpenCVTracker().new_session()
    frame = clip.as_frames()[0]
    session.step(frame, {"dog": clip.masks[0]})
    state = session._objects["dog"]
    small = session._prepare_frame(frame).small
    mask = state.mask
    height, width = mask.shape
    xs, ys = np.meshgrid(np.arange(width, dtype=np.float32), np.arange(height, dtype=np.float32))

    def flow_with_still(still):
        return _StepFlow(xs, ys, np.zeros((height, width, 2), np.float32), np.ones_like(mask), still)

    everything_still = session._graph_cut(state, small, mask, mask, flow_with_still(np.ones_like(mask)), 3.0)
    assert mask_iou(everything_still, mask) > 0.8
    # A still part (a pillar in front of the left half) is still cut away.
    columns = np.flatnonzero(mask.any(axis=0))
    pillar = np.zeros_like(mask)
    pillar[:, : (columns[0] + columns[-1]) // 2] = True
    occluded = session._graph_cut(state, small, mask, mask, flow_with_still(pillar), 3.0)
    assert occluded.any() and not (occluded & pillar).any()


def test_errors(clip):
    session = OpenCVTracker(max_side=160).new_session()  # processing below frame size: masks come back full size
    out = session.step(clip.as_frames()[0], {"dog": clip.masks[0]})
    assert out["dog"].mask.shape == (240, 320)
    assert session.step(clip.as_frames()[1])["dog"].mask.shape == (240, 320)
    with pytest.raises(ValueError, match="frame size changed"):
        session.step(Frame(5, 0.5, image=np.zeros((100, 100, 3), np.uint8)))
    with pytest.raises(ValueError, match="seed mask"):
        session.step(clip.as_frames()[2], {"cat": np.ones((10, 10), bool)})
    session.close()
    with pytest.raises(RuntimeError, match="closed"):
        session.step(clip.as_frames()[3])
    with pytest.raises(ValueError, match="box_tracker"):
        OpenCVTracker(box_tracker="goturn")
    with pytest.raises(ValueError, match="flow_preset"):
        OpenCVTracker(flow_preset="slow")


def test_missing_contrib_names_the_package(monkeypatch):
    import cv2

    from reasonvos_ros.backends.lite.tracker import make_box_tracker
    from reasonvos_ros.core.errors import BackendUnavailable

    monkeypatch.delattr(cv2, "TrackerCSRT_create")
    with pytest.raises(BackendUnavailable, match="opencv-contrib-python-headless"):
        OpenCVTracker(box_tracker="csrt")
    with pytest.raises(ValueError, match="unknown box tracker"):
        make_box_tracker("none")


def test_sessions_of_one_tracker_share_the_per_frame_work():
    """Targets tracked live step the same frame pairs in separate sessions: the second session takes the resized
    frame and the dense flow the first computed (the frame is decoded once) and gets exactly the masks it would
    compute alone; a session coming from another previous frame computes its own flow."""
    frames, dog_masks, person_masks, _, _ = make_two_object_clip(
        {"n_frames": 8, "path": ((0.2, 0.62), (0.5, 0.62)), "occluder_x": None},
        {"cutout": "person", "path": ((0.8, 0.5), (0.6, 0.5)), "scale": 0.55},
    )
    decodes = [0] * len(frames)

    def decoder(i):
        def decode():
            decodes[i] += 1
            return frames[i]

        return decode

    shared_frames = [Frame(i, i / 10, decode=decoder(i)) for i in range(len(frames))]
    tracker = OpenCVTracker()
    dog, person = tracker.new_session(), tracker.new_session()
    alone_dog, alone_person = OpenCVTrackerSession(tracker.options), OpenCVTrackerSession(tracker.options)
    for i in range(len(frames)):
        own_frame = Frame(i, i / 10, image=frames[i])  # another uid: nothing cached for it
        pairs = ((dog, alone_dog, "dog", dog_masks), (person, alone_person, "person", person_masks))
        for shared, alone, obj_id, masks in pairs:
            seed = {obj_id: masks[0]} if i == 0 else None
            got = shared.step(shared_frames[i], seed)[obj_id]
            expected = alone.step(own_frame, seed)[obj_id]
            np.testing.assert_array_equal(got.mask, expected.mask)
            assert got.confidence == pytest.approx(expected.confidence, abs=1e-9)
    assert decodes == [1] * len(frames)  # the second session never decoded a frame
    assert (tracker.shared.flow_misses, tracker.shared.flow_hits) == (len(frames) - 1, len(frames) - 1)
    # A session that skipped a frame steps another pair: no flow of the others fits it.
    skipper = tracker.new_session()
    skipper.step(shared_frames[0], {"dog": dog_masks[0]})
    skipper.step(shared_frames[2])
    assert tracker.shared.flow_misses == len(frames)


def test_cheaper_csrt_settings_reach_the_box_tracker(clip, monkeypatch):
    """CSRT's template size and segmentation switch are passed to OpenCV; the cheaper setting still tracks."""
    import cv2

    made = []
    create = cv2.TrackerCSRT_create

    def recording_create(params):
        made.append((params.template_size, params.use_segmentation))
        return create(params)

    monkeypatch.setattr(cv2, "TrackerCSRT_create", recording_create)
    session = OpenCVTracker(csrt_template_size=100, csrt_segmentation=False).new_session()
    ious, _ = track(session, clip.as_frames(), clip.masks, range(len(clip)))
    assert made[-1] == (100.0, False)
    assert ious.mean() > TRACK_IOU_FLOOR, ious.round(2)
    with pytest.raises(ValueError, match="csrt_template_size"):
        OpenCVTracker(csrt_template_size=8)


def test_shared_work_is_computed_once_when_two_threads_miss_it_together():
    import threading
    from collections import OrderedDict

    from reasonvos_ros.backends.lite.tracker import SharedFrameWork

    shared, table = SharedFrameWork(), OrderedDict()
    started, release, calls = threading.Event(), threading.Event(), []

    def slow():
        calls.append(threading.current_thread().name)
        started.set()
        release.wait(5)
        return "flow"

    results = {}
    first = threading.Thread(target=lambda: results.update(first=shared.once(table, ("k",), slow)), name="first")
    first.start()
    started.wait(5)
    second = threading.Thread(target=lambda: results.update(second=shared.once(table, ("k",), slow)), name="second")
    second.start()
    time.sleep(0.05)  # the second thread now waits for the first one's result
    release.set()
    first.join(5)
    second.join(5)
    assert calls == ["first"] and results == {"first": ("flow", False), "second": ("flow", True)}

    # The computing thread fails: the error stays in its thread and a waiter computes the value itself.
    started.clear()
    release.clear()

    def failing():
        started.set()
        release.wait(5)
        raise RuntimeError("flow failed")

    errors = []

    def run_failing():
        try:
            shared.once(table, ("j",), failing)
        except RuntimeError as exc:
            errors.append(str(exc))

    failer = threading.Thread(target=run_failing)
    failer.start()
    started.wait(5)
    waiter = threading.Thread(target=lambda: results.update(waiter=shared.once(table, ("j",), lambda: "again")))
    waiter.start()
    time.sleep(0.05)
    release.set()
    failer.join(5)
    waiter.join(5)
    assert errors == ["flow failed"] and results["waiter"] == ("again", False)
