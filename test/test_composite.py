"""The composited ground-truth clips: determinism, exactness of the masks, occlusion, leaving the view."""

from __future__ import annotations

import numpy as np
import pytest

from reasonvos_ros.data import media
from reasonvos_ros.data.composite import load_cutout, make_composite_clip, mask_iou
from reasonvos_ros.data.media import MediaNotFound, media_available, media_path

pytestmark = pytest.mark.skipif(
    not media_available("dog.jpg", "person.jpg", "vtest.avi", "building.jpg"),
    reason="needs the Debian packages darknet and opencv-doc",
)


@pytest.fixture(scope="module")
def clip():
    return make_composite_clip(n_frames=24, path=((0.2, 0.6), (0.8, 0.6), (1.4, 0.55)))


def test_shapes_and_types(clip):
    assert len(clip) == 24 and clip.category == "dog"
    for frame, mask in zip(clip.frames, clip.masks):
        assert frame.shape == (240, 320, 3) and frame.dtype == np.uint8
        assert mask.shape == (240, 320) and mask.dtype == bool
    frames = clip.as_frames(start_index=5)
    assert [f.index for f in frames] == list(range(5, 29))
    assert frames[0].image is clip.frames[0]


def test_deterministic(clip):
    load_cutout.cache_clear()  # also re-runs GrabCut, whose k-means uses OpenCV's global RNG
    again = make_composite_clip(n_frames=24, path=((0.2, 0.6), (0.8, 0.6), (1.4, 0.55)))
    for a, b in zip(clip.frames, again.frames):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(clip.masks, again.masks):
        np.testing.assert_array_equal(a, b)


def test_mask_marks_exactly_the_pasted_pixels(clip):
    """Where the GT mask is False the frame shows the background (or occluder); where True, cut-out pixels."""
    plain = make_composite_clip(n_frames=24, path=((0.5, 0.5), (0.5, 0.5)), scale=1e-3, occluder_x=None)
    background = plain.frames[3]  # a tiny object hardly covers anything: this is ~ the raw background
    tiny = plain.masks[3]
    frame, mask = clip.frames[3], clip.masks[3]
    outside = ~mask & ~clip.occluder_mask & ~tiny
    np.testing.assert_array_equal(frame[outside], background[outside])
    changed = np.any(frame != background, axis=2)
    # Pasted colour equals the background colour only by chance: nearly every GT pixel must differ.
    assert changed[mask].mean() > 0.95


def test_occlusion_and_boxes(clip):
    occluded = np.array(clip.occluded)
    assert occluded.any() and not occluded.all()
    vis = np.array(clip.visible_fraction)
    assert np.all(vis[occluded] < 1.0)
    assert np.all(vis[~occluded & (vis > 0)] <= 1.0)
    for mask, box in zip(clip.masks, clip.boxes):
        if box is None:
            assert not mask.any()
            continue
        x0, y0, x1, y1 = box
        assert mask[y0:y1, x0:x1].sum() == mask.sum()
        assert mask[y0, x0:x1].any() and mask[y1 - 1, x0:x1].any()
    for mask in clip.masks:
        assert not (mask & clip.occluder_mask).any()


def test_leaves_the_view(clip):
    assert clip.boxes[-1] is None and not clip.masks[-1].any()
    assert clip.visible_fraction[-1] == 0.0
    assert clip.full_boxes[-1][0] >= 320  # really outside, to the right


def test_scale_ramp_and_person_cutout():
    growing = make_composite_clip(n_frames=5, cutout="person", scale=(0.3, 0.6), occluder_x=None)
    assert growing.category == "person"
    heights = [box[3] - box[1] for box in growing.boxes]
    assert heights == sorted(heights) and heights[-1] > 1.7 * heights[0]


def test_still_background_and_bad_inputs():
    still = np.full((100, 120, 3), 90, np.uint8)
    clip = make_composite_clip(n_frames=3, size=(160, 120), background=still, occluder_x=None)
    assert np.all(clip.frames[0][~clip.masks[0]] == 90)
    with pytest.raises(ValueError, match="RGB uint8"):
        make_composite_clip(n_frames=2, background=np.zeros((10, 10), np.uint8))
    with pytest.raises(ValueError, match="waypoints"):
        make_composite_clip(n_frames=2, path=(0.1, 0.2, 0.3))
    with pytest.raises(KeyError, match="unknown cut-out"):
        make_composite_clip(n_frames=2, cutout="unicorn")


def test_mask_iou():
    a = np.zeros((4, 4), bool)
    b = np.zeros((4, 4), bool)
    assert mask_iou(a, b) == 1.0
    a[0, :2] = True
    b[0, 1:3] = True
    assert mask_iou(a, b) == pytest.approx(1 / 3)
    with pytest.raises(ValueError, match="shapes differ"):
        mask_iou(a, np.zeros((3, 3), bool))


def test_missing_media_names_the_debian_package(monkeypatch, tmp_path):
    monkeypatch.setitem(media._MEDIA, "dog.jpg", ("darknet", (str(tmp_path),)))
    monkeypatch.delenv("REASONVOS_MEDIA_DIR", raising=False)
    with pytest.raises(MediaNotFound, match="apt-get install darknet"):
        media_path("dog.jpg")
    assert not media_available("dog.jpg")
    monkeypatch.setenv("REASONVOS_MEDIA_DIR", "/usr/share/darknet/data")
    assert media_path("dog.jpg").is_file()
