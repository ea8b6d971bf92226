"""The sam2_video tracker backend (SAM 2.1 / SAM 3 tracker video models of transformers, streamed frame by frame).

Tiny random configurations are saved in the Hugging Face layout (``save_pretrained``) and loaded through the real
path (registry -> ``from_pretrained`` on the directory). The reference is the library itself: a session created with
the whole video and ``propagate_in_video_iterator`` must give the same mask logits as our frame-by-frame session with
its stores pruned, forward and backward, with one and with two objects. The random weights are not meaningful
segmenters; the object-score head's bias is raised so that objects count as visible and masks are not trivially empty.
"""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys
import types

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from reasonvos_ros.backends.scripted import ScriptedSampler, ScriptedSegmenter
from reasonvos_ros.core.config import PipelineConfig
from reasonvos_ros.core.errors import BackendUnavailable, ConfigError
from reasonvos_ros.core.interfaces import Tracker
from reasonvos_ros.core.pipeline import Pipeline, Propagated, complete
from reasonvos_ros.core.registry import build_backend
from reasonvos_ros.core.types import Frame
from reasonvos_ros.models.sam2_video.families import FAMILIES, Normalisation, tiny_config, tiny_head_settings
from reasonvos_ros.models.sam2_video.streaming import preprocess_frame

pytestmark = pytest.mark.usefixtures("torch_one_thread")

SIZE = 64  # tiny model input size; test frames are SIZE x SIZE so no resize happens between us and the reference


def save_tiny(directory: pathlib.Path, family: str = "sam2", size: int = SIZE, object_bias: float = 4.0, **kw):
    torch.manual_seed(3)
    model_class, _, _ = FAMILIES[family].classes()
    model = model_class(tiny_config(family, size, **kw)).eval()
    with torch.no_grad():
        model.mask_decoder.pred_obj_score_head.proj_out.bias.fill_(object_bias)
    model.save_pretrained(directory)
    return directory


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> pathlib.Path:
    return save_tiny(tmp_path_factory.mktemp("sam2_tiny") / "model")


def make_tracker(model_dir, **options):
    return build_backend("tracker", "sam2_video", {"model_dir": str(model_dir), "device": "cpu", **options})


def video(count, size=SIZE, seed=0, start=0):
    """A bright square drifting right over a fixed textured background, plus a dark disc drifting down."""
    rng = np.random.default_rng(seed)
    background = rng.integers(0, 140, (size, size, 3), dtype=np.uint8)
    yy, xx = np.mgrid[:size, :size]
    frames = []
    for t in range(count):
        image = background.copy()
        left = 4 + (t % 30)
        image[10:26, left : left + 16] = (250, 230, 40)
        disc = (yy - (36 + t % 12)) ** 2 + (xx - 20) ** 2 < 64
        image[disc] = (20, 40, 220)
        frames.append(Frame(start + t, 0.1 * t, image))
    return frames


def square_mask(size=SIZE, left=4):
    mask = np.zeros((size, size), bool)
    mask[10:26, left : left + 16] = True
    return mask


def disc_mask(size=SIZE, t=0):
    yy, xx = np.mgrid[:size, :size]
    return (yy - (36 + t % 12)) ** 2 + (xx - 20) ** 2 < 64


def library_reference(tracker, frames, seeds, seed_frame, reverse=False):
    """The library's own propagation: a session holding the whole video, mask inputs on ``seed_frame``,
    ``propagate_in_video_iterator``. Returns {frame position: (object ids, low-res logits)}."""
    _, _, session_class = tracker.family.classes()
    pixels = torch.stack([preprocess_frame(f.image, tracker.norm, tracker.device, tracker.dtype) for f in frames])
    session = session_class(video=pixels, video_height=SIZE, video_width=SIZE, dtype=torch.float32)
    for key, mask in seeds.items():
        index = session.obj_id_to_idx(key)
        session.add_mask_inputs(index, seed_frame, torch.from_numpy(mask).float()[None, None])
    session.obj_with_new_inputs = list(seeds)
    outputs = tracker.model.propagate_in_video_iterator(session, start_frame_idx=seed_frame, reverse=reverse)
    return {out.frame_idx: (list(out.object_ids), out.pred_masks.float().clone()) for out in outputs}


def reference_masks(logits):
    """Low-res logits -> masks at SIZE (bilinear, threshold 0): what the processors' post_process_masks does."""
    return F.interpolate(logits, size=(SIZE, SIZE), mode="bilinear", align_corners=False)[:, 0] > 0


# ---- construction and loading -------------------------------------------------------------------------------------


def test_registry_loads_the_hf_directory(model_dir):
    tracker = make_tracker(model_dir)
    assert isinstance(tracker, Tracker)
    assert tracker.family.name == "sam2" and type(tracker.model).__name__ == "Sam2VideoModel"
    assert tracker.dtype == torch.float32 and tracker.device == torch.device("cpu")  # "auto" = float32 on CPU
    assert tracker.norm == Normalisation(SIZE, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


def test_missing_or_wrong_weights_are_reported(tmp_path, model_dir):
    with pytest.raises(BackendUnavailable, match=r"needs options\.model_dir"):
        build_backend("tracker", "sam2_video", {})
    with pytest.raises(BackendUnavailable, match="not found"):
        make_tracker(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(BackendUnavailable, match=r"no config\.json"):
        make_tracker(tmp_path / "empty")
    # A checkpoint lacking a tensor is an error naming it, not a silently re-initialised layer.
    from safetensors.torch import load_file, save_file

    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text((model_dir / "config.json").read_text())
    state = load_file(model_dir / "model.safetensors")
    del state["memory_encoder.projection.weight"]
    save_file(state, broken / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(BackendUnavailable, match=r"missing keys: memory_encoder\.projection\.weight"):
        make_tracker(broken)
    other = tmp_path / "other"
    other.mkdir()
    (other / "config.json").write_text('{"model_type": "llama"}')
    with pytest.raises(ConfigError, match="not a SAM 2-style video tracker"):
        make_tracker(other)
    with pytest.raises(ConfigError, match="dtype"):
        make_tracker(model_dir, dtype="int8")
    with pytest.raises(ConfigError, match="max_conditioning_frames"):
        make_tracker(model_dir, max_conditioning_frames=0)


def test_normalisation_comes_from_the_processor_files(tmp_path, model_dir):
    """A directory's video_preprocessor_config.json (what the Hub repositories ship) sets mean, std and rescale;
    a processor size that disagrees with the model's input size is an error, not a silent mis-scaling."""
    import shutil

    directory = tmp_path / "with_processor"
    shutil.copytree(model_dir, directory)
    processor = {"image_mean": [0.5, 0.4, 0.3], "image_std": [0.2, 0.2, 0.2], "size": {"height": SIZE, "width": SIZE}}
    (directory / "video_preprocessor_config.json").write_text(json.dumps(processor))
    tracker = make_tracker(directory)
    assert tracker.norm == Normalisation(SIZE, (0.5, 0.4, 0.3), (0.2, 0.2, 0.2))
    processor["size"] = {"height": 1024, "width": 1024}
    (directory / "video_preprocessor_config.json").write_text(json.dumps(processor))
    with pytest.raises(ConfigError, match="disagrees with the model's image_size"):
        make_tracker(directory)


def test_preprocessing_matches_a_pil_bilinear_resize():
    """The processors resize with antialiased bilinear filtering to uint8, then rescale and normalise; PIL's
    bilinear resize is an independent implementation of the same filter."""
    from PIL import Image

    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, (90, 120, 3), dtype=np.uint8)
    image[20:60, 30:90] = (200, 30, 90)  # edges, where filters differ most
    norm = Normalisation(64, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    ours = preprocess_frame(image, norm, torch.device("cpu"), torch.float32).numpy()
    pil = np.asarray(Image.fromarray(image).resize((64, 64), Image.BILINEAR), dtype=np.float32) / 255.0
    expected = ((pil - np.array(norm.mean)) / np.array(norm.std)).transpose(2, 0, 1)
    # within 2 grey levels everywhere (rounding of two uint8 implementations), equal on most pixels
    assert np.abs(ours - expected).max() <= 2.0 / 255 / min(norm.std) + 1e-6
    assert np.mean(np.abs(ours - expected) < 1e-5) > 0.5


# ---- the library is the reference --------------------------------------------------------------------------------


def test_streaming_forward_equals_the_library_propagation(model_dir):
    tracker = make_tracker(model_dir)
    frames = video(24)  # > 16 frames: past the object-pointer window, so pruning is exercised
    reference = library_reference(tracker, frames, {1: square_mask()}, seed_frame=0)
    session = tracker.new_session()
    seed = square_mask()
    first = session.step(frames[0], {"sq": seed})
    assert np.array_equal(first["sq"].mask, seed) and first["sq"].confidence == 1.0
    nonempty = 0
    for position, frame in enumerate(frames[1:], start=1):
        out = session.step(frame)
        ids, logits = reference[position]
        assert ids == [1]
        torch.testing.assert_close(session.last_output.low_res_logits, logits, rtol=1e-4, atol=1e-4)
        expected = reference_masks(logits)[0].numpy()
        assert np.mean(out["sq"].mask != expected) < 0.002  # only pixels with logits at 0 may flip
        nonempty += bool(expected.any())
    assert nonempty >= 20  # the comparison is about real masks, not empty ones
    counts = session.stored_counts()
    assert counts["tracked_outputs"] == 15 and counts["processed_frames"] == 0


def test_backward_pass_equals_the_library_reverse_propagation(model_dir):
    """Our backward pass is a session fed the stored frames newest to oldest; the library's equivalent is
    ``reverse=True`` propagation from the key frame over the whole video."""
    tracker = make_tracker(model_dir)
    frames = video(22)
    last = len(frames) - 1
    seed = square_mask(left=4 + last)
    reference = library_reference(tracker, frames, {1: seed}, seed_frame=last, reverse=True)
    session = tracker.new_session()
    session.step(frames[last], {"sq": seed})
    for position in range(last - 1, -1, -1):
        session.step(frames[position])
        torch.testing.assert_close(session.last_output.low_res_logits, reference[position][1], rtol=1e-4, atol=1e-4)


def test_two_objects_equal_the_library(model_dir):
    tracker = make_tracker(model_dir)
    frames = video(20)
    seeds = {1: square_mask(), 2: disc_mask()}
    reference = library_reference(tracker, frames, seeds, seed_frame=0)
    session = tracker.new_session()
    out = session.step(frames[0], {"sq": seeds[1], "disc": seeds[2]})
    assert list(out) == ["sq", "disc"]
    for position in range(1, 20):
        out = session.step(frames[position])
        assert list(out) == ["sq", "disc"]
        torch.testing.assert_close(session.last_output.low_res_logits, reference[position][1], rtol=1e-4, atol=1e-4)


def test_sam3_tracker_family_streams_like_its_library_propagation(tmp_path):
    size = 112  # SAM 3's ViT has 14-pixel patches
    directory = save_tiny(tmp_path / "sam3", family="sam3_tracker", size=size)
    tracker = make_tracker(directory)
    assert tracker.family.name == "sam3_tracker" and tracker.norm.mean == (0.5, 0.5, 0.5)
    frames = video(18, size=size)
    seed = square_mask(size)
    _, _, session_class = tracker.family.classes()
    pixels = torch.stack([preprocess_frame(f.image, tracker.norm, tracker.device, tracker.dtype) for f in frames])
    reference_session = session_class(video=pixels, video_height=size, video_width=size, dtype=torch.float32)
    reference_session.add_mask_inputs(reference_session.obj_id_to_idx(1), 0, torch.from_numpy(seed).float()[None, None])
    reference_session.obj_with_new_inputs = [1]
    reference = {
        o.frame_idx: o.pred_masks.float().clone()
        for o in tracker.model.propagate_in_video_iterator(reference_session, start_frame_idx=0)
    }
    session = tracker.new_session()
    session.step(frames[0], {"sq": seed})
    for position in range(1, len(frames)):
        session.step(frames[position])
        torch.testing.assert_close(session.last_output.low_res_logits, reference[position], rtol=1e-4, atol=1e-4)


def test_bfloat16_runs_end_to_end(model_dir):
    """The GPU default dtype, here on the CPU: weights, pixels and memories in bf16, masks back as bool. (With
    random tiny weights the mask logits are ~1e-3, below bf16's resolution, so fp32 and bf16 masks are not
    compared.)"""
    tracker = make_tracker(model_dir, dtype="bfloat16")
    assert next(tracker.model.parameters()).dtype == torch.bfloat16
    session = tracker.new_session()
    frames = video(20)
    session.step(frames[0], {"sq": square_mask()})
    for frame in frames[1:]:
        tracked = session.step(frame)["sq"]
        assert tracked.mask.dtype == bool and tracked.mask.shape == (SIZE, SIZE)
        assert 0.0 <= tracked.confidence <= 1.0
    assert session.stored_counts()["tracked_outputs"] == 15


# ---- prompts, confidence, errors ----------------------------------------------------------------------------------


def test_box_and_point_seeds_are_scaled_like_the_processor(model_dir):
    """Box corners become points labelled 2 and 3, coordinates scaled from frame pixels to the model size (the
    processor's ``process_new_points_or_boxes_for_video_frame``, whose coordinate code runs here without its
    torchvision-bound image processor)."""
    from transformers import Sam2VideoProcessor

    tracker = make_tracker(model_dir)
    frames = video(4, size=96)  # frame 96 px, model 64 px: coordinates must be scaled by 2/3
    box, points, labels = (10.0, 12.0, 50.0, 40.0), [[30.0, 20.0], [80.0, 80.0]], [1, 0]
    processor = Sam2VideoProcessor.__new__(Sam2VideoProcessor)
    processor.target_size, processor.point_pad_value = SIZE, -10
    _, _, session_class = tracker.family.classes()
    reference = session_class(dtype=torch.float32)
    processor.process_new_points_or_boxes_for_video_frame(
        reference, 0, [7], input_points=[[points]], input_labels=[[labels]], input_boxes=[[list(box)]],
        original_size=(96, 96),
    )  # fmt: skip
    expected = reference.point_inputs_per_obj[0][0]
    session = tracker.new_session()
    out = session.step(frames[0], new_boxes={"b": box}, new_points={"b": (points, labels)})
    assert set(out) == {"b"} and out["b"].mask.shape == (96, 96)
    assert 0.0 <= out["b"].confidence <= 1.0
    # the inputs were consumed by the step and pruned; check what was given through a fresh session
    core = tracker.streaming_session()
    core.set_frame_size(96, 96)
    core.add_prompts(1, box=box, points=points, labels=labels)
    given = core.session.point_inputs_per_obj[0][0]
    torch.testing.assert_close(given["point_coords"], expected["point_coords"])
    assert given["point_labels"].tolist() == expected["point_labels"].tolist()
    with pytest.raises(ValueError, match="x1 > x0"):
        core.add_prompts(2, box=(5, 5, 5, 9))
    out = session.step(frames[1], new_points={"p": ([[40.0, 60.0]], None)})
    assert set(out) == {"b", "p"}


def test_confidence_follows_the_object_score(tmp_path):
    """An object score far below 0 means "not visible": the library blanks the mask, and confidence is 0; far
    above 0 the confidence is the predicted IoU (in [0, 1])."""
    frames = video(6)
    for bias, visible in ((-20.0, False), (20.0, True)):
        tracker = make_tracker(save_tiny(tmp_path / f"bias{bias}", object_bias=bias))
        session = tracker.new_session()
        session.step(frames[0], {"sq": square_mask()})
        for frame in frames[1:]:
            tracked = session.step(frame)["sq"]
            assert 0.0 <= tracked.confidence <= 1.0
            if visible:
                assert tracked.area > 0
                iou = session.last_output.predicted_iou[0].clamp(0, 1).item()
                assert tracked.confidence == pytest.approx(iou, abs=1e-6)
            else:
                assert tracked.area == 0 and tracked.confidence == 0.0


def test_bad_inputs_are_clear_errors(model_dir):
    tracker = make_tracker(model_dir)
    session = tracker.new_session()
    frames = video(3)
    assert session.step(frames[0]) == {}  # nothing seeded: nothing to do
    with pytest.raises(ValueError, match="seed mask"):
        session.step(frames[0], {"sq": np.ones((10, 10), bool)})
    with pytest.raises(ValueError, match="both a mask and a box"):
        session.step(frames[0], {"sq": square_mask()}, new_boxes={"sq": (1, 1, 9, 9)})
    with pytest.raises(ValueError, match="RGB uint8"):
        session.step(Frame(9, 0.0, np.zeros((SIZE, SIZE), np.uint8)), {"sq": square_mask()})
    session.step(frames[0], {"sq": square_mask()})
    with pytest.raises(ValueError, match="start a new session"):
        session.step(Frame(10, 1.0, np.zeros((32, 32, 3), np.uint8)))
    session.close()
    with pytest.raises(RuntimeError, match="closed"):
        session.step(frames[1])


def test_release_frees_open_sessions(model_dir):
    tracker = make_tracker(model_dir)
    session = tracker.new_session()
    session.step(video(1)[0], {"sq": square_mask()})
    assert session.memory_bytes() > 0
    tracker.release()
    assert session.memory_bytes() == 0
    with pytest.raises(RuntimeError, match="release"):
        session.step(video(2)[1])
    fresh = tracker.new_session()  # the tracker itself stays usable
    assert set(fresh.step(video(1)[0], {"sq": square_mask()})) == {"sq"}


# ---- memory bounds ------------------------------------------------------------------------------------------------


def test_stored_state_stays_bounded_over_hundreds_of_frames(model_dir):
    """Every per-frame store of the library session stays capped: no processed frames or vision features kept
    after a step, tracked outputs only as far back as the model reads (15 pointer frames, of which 6 keep their
    memory features), conditioning frames capped per object even when re-seeded over and over."""
    tracker = make_tracker(model_dir, max_conditioning_frames=3)
    session = tracker.new_session()
    frames = video(300)
    session.step(frames[0], {"sq": square_mask(), "disc": disc_mask()})
    sizes = []
    for position, frame in enumerate(frames[1:], start=1):
        reseed = {"disc": disc_mask(t=position)} if position % 25 == 0 else None
        session.step(frame, reseed)
        counts = session.stored_counts()
        assert counts["processed_frames"] == 0 and counts["vision_features"] == 0
        assert counts["tracked_flags"] == 0 and counts["inputs"] == 0
        assert counts["tracked_outputs"] <= 2 * 15
        assert counts["conditioning_outputs"] <= 1 + 3
        sizes.append(session.memory_bytes())
    core = session.core
    spatial = [
        f for f, e in core.session.output_dict_per_obj[0]["non_cond_frame_outputs"].items() if "maskmem_features" in e
    ]
    assert len(spatial) == 6  # num_maskmem - 1
    # flat once the windows are full and the conditioning cap is reached (3 re-seeds: frame 75)
    assert max(sizes[150:]) <= max(sizes[75:150])
    assert max(sizes) < 2 * min(sizes[20:])
    assert len(core.session.output_dict_per_obj[1]["cond_frame_outputs"]) == 3


# ---- through the pipeline -------------------------------------------------------------------------------------------


def test_backward_and_forward_through_the_pipeline(model_dir):
    tracker = make_tracker(model_dir)
    pipeline = Pipeline(
        ScriptedSampler(position=0.5),
        ScriptedSegmenter(),
        tracker,
        PipelineConfig(backward_budget_s=0, catchup_budget_s=0),
    )
    frames = []
    for frame in video(16, start=100):
        image = frame.image.copy()
        image[image[..., 0] > 240] = (255, 0, 0)  # the square is red for the scripted segmenter
        frames.append(Frame(frame.index, frame.stamp, image))
    events = list(pipeline.acquire("t", "the red one", frames))
    emitted = [(e.frame.index, e.tracked, e.pass_name) for e in events if isinstance(e, Propagated)]
    acquisition = complete(events)
    key = acquisition.key_frame.index
    assert key == 108
    assert [i for i, _, p in emitted if p == "backward"] == list(range(107, 99, -1))
    assert [i for i, _, p in emitted if p == "catchup"] == list(range(109, 116))
    for _, tracked, _ in emitted:
        assert tracked.mask.shape == (SIZE, SIZE) and 0.0 <= tracked.confidence <= 1.0
    # the forward session stays open for live tracking, with the frames it saw counted in session time
    live = acquisition.session
    assert live.frame_indices[-1] == 115
    out = live.step(Frame(116, 1.6, frames[-1].image))
    assert set(out) == {"t"}
    # backward masks are those of a session fed the same frames newest to oldest
    check = tracker.new_session()
    check.step(frames[8], {"t": acquisition.segmentation.mask})
    for index, tracked, name in emitted:
        if name == "backward":
            assert np.array_equal(check.step(frames[index - 100])["t"].mask, tracked.mask)
    live.close()


@pytest.mark.slow
def test_rss_stays_flat_over_ten_thousand_frames(model_dir):
    """10,000 frames through one session (about 4 minutes on the shared 2-core machine): the process RSS, sampled every 500
    frames after a 1,000-frame warm-up, must not grow: least-squares slope under 200 bytes per frame (2 MB per
    10,000 frames). Keeping one 64x64 processed frame per step (48 kB) or one memory entry (about 5 kB) would
    exceed it many times over. ``benchmarks/bench_video_tracker.py --stream-frames 10000`` prints the same run."""

    def rss_bytes() -> int:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        raise RuntimeError("no VmRSS in /proc/self/status")

    tracker = make_tracker(model_dir)
    session = tracker.new_session()
    frames = video(30)
    session.step(frames[0], {"sq": square_mask()})
    samples = []
    for position in range(1, 10_001):
        session.step(Frame(position, position / 30, frames[position % 30].image))
        if position % 500 == 0 and position >= 1000:
            samples.append((position, rss_bytes()))
    x = np.array([p for p, _ in samples], float)
    y = np.array([r for _, r in samples], float)
    slope = np.polyfit(x, y, 1)[0]
    assert slope < 200, f"RSS grows by {slope:.0f} bytes per frame: {samples}"
    assert session.stored_counts()["tracked_outputs"] == 15


def test_model_sets_state_the_parameters_of_the_configs_we_build():
    from reasonvos_ros.backends.sam2_video_tracker import TRACKER_MODEL_SETS
    from reasonvos_ros.models.sam2_video.families import count_parameters, full_size_config

    assert {row["backend"] for row in TRACKER_MODEL_SETS} == {"sam2_video"}
    for row in TRACKER_MODEL_SETS:
        assert json.loads(row["tracker_options"])["model_dir"]
        if row["config"] == "edgetam":  # RepViT backbone needs timm: not counted here, and said so
            assert row["parameters"] is None and "UNVERIFIED" in row["verified"]
            continue
        family, config = full_size_config(row["config"])
        assert count_parameters(family, config) == row["parameters"], row["name"]
        assert row["memory_mb_bf16"] == round(2 * row["parameters"] / 1e6)


def test_benchmark_refuses_full_size_on_the_cpu():
    script = pathlib.Path(__file__).parents[1] / "benchmarks" / "bench_video_tracker.py"
    done = subprocess.run(
        [sys.executable, str(script), "--full-size", "--device", "cpu"], capture_output=True, text=True, timeout=120
    )
    assert done.returncode != 0 and "refused" in done.stderr


class _StandInBackbone(torch.nn.Module):
    """Replaces EdgeTAM's timm RepViT backbone (timm needs torchvision, which cannot be installed here): four
    strided convolutions giving the same outputs the EdgeTAM vision model reads (NCHW maps at strides 4..32)."""

    def __init__(self, channels=(8, 16, 32, 64)):
        super().__init__()
        sizes = [3, *channels]
        self.stages = torch.nn.ModuleList(
            torch.nn.Conv2d(sizes[i], sizes[i + 1], 3, stride=4 if i == 0 else 2, padding=1) for i in range(4)
        )

    def forward(self, pixel_values, **kwargs):
        outputs, hidden = [], pixel_values
        for stage in self.stages:
            hidden = torch.relu(stage(hidden))
            outputs.append(hidden)
        return types.SimpleNamespace(last_hidden_state=outputs, hidden_states=None)


def test_edgetam_family_streams_like_its_library_propagation(monkeypatch):
    """EdgeTAM's memory path (2D spatial perceiver, per-object memory encoding) with a stand-in backbone: the
    pruned streaming session gives the library's own propagation logits."""
    import transformers.models.edgetam.modeling_edgetam as edgetam_modeling
    from transformers import EdgeTamVideoConfig

    from reasonvos_ros.backends.sam2_video_tracker import Sam2VideoTracker

    build = edgetam_modeling.AutoModel.from_config
    monkeypatch.setattr(
        edgetam_modeling.AutoModel,
        "from_config",
        lambda config, **kw: _StandInBackbone() if config.model_type == "sam2_hiera_det_model" else build(config, **kw),
    )
    grid = SIZE // 16
    heads = tiny_head_settings(SIZE, grid)
    # EdgeTAM names the memory attention's MLP width differently and compresses memories with a 2D perceiver.
    heads["memory_attention_mlp_hidden_size"] = heads.pop("memory_attention_feed_forward_hidden_size")
    config = EdgeTamVideoConfig(
        vision_config=dict(
            model_type="edgetam_vision_model",
            backbone_config=dict(model_type="sam2_hiera_det_model"),  # intercepted above
            backbone_channel_list=[64, 32, 16, 8],
            backbone_feature_sizes=[[4 * grid, 4 * grid], [2 * grid, 2 * grid], [grid, grid]],
            fpn_hidden_size=128,
        ),
        memory_attention_rope_k_sizes=[grid // 2, grid // 2],
        perceiver_resampler_num_latents=8,
        perceiver_resampler_num_latents_2d=4,
        perceiver_resampler_mlp_intermediate_size=64,
        perceiver_resampler_num_layers=1,
        **heads,
    )
    torch.manual_seed(3)
    model_class, _, _ = FAMILIES["edgetam"].classes()
    model = model_class(config).eval()
    with torch.no_grad():
        model.mask_decoder.pred_obj_score_head.proj_out.bias.fill_(4.0)
    tracker = Sam2VideoTracker.from_model(model, FAMILIES["edgetam"], device="cpu")
    frames = video(22)
    reference = library_reference(tracker, frames, {1: square_mask(), 2: disc_mask()}, seed_frame=0)
    session = tracker.new_session()
    session.step(frames[0], {"sq": square_mask(), "disc": disc_mask()})
    for position in range(1, len(frames)):
        session.step(frames[position])
        torch.testing.assert_close(session.last_output.low_res_logits, reference[position][1], rtol=1e-4, atol=1e-4)
    assert session.stored_counts()["tracked_outputs"] == 2 * 15


def test_sessions_share_the_image_encoder_output_of_a_frame(model_dir):
    """Two targets' sessions stepping the same frames run the image encoder once per frame, and give exactly what
    they give without sharing; the pipeline's two passes encode the key frame once."""
    shared, alone = make_tracker(model_dir), make_tracker(model_dir, feature_cache_size=0)
    frames = video(10)
    results = {}
    for name, tracker in (("shared", shared), ("alone", alone)):
        calls = []
        tracker.model.vision_encoder.register_forward_hook(lambda *args, calls=calls: calls.append(1))
        first, second = tracker.new_session(), tracker.new_session()
        first.step(frames[0], {"sq": square_mask()})
        second.step(frames[0], {"disc": disc_mask()})
        logits = []
        for frame in frames[1:]:
            first.step(frame)
            second.step(frame)
            logits.append(second.last_output.low_res_logits)
        results[name] = (len(calls), logits)
    assert results["shared"][0] == 10 and results["alone"][0] == 20
    for a, b in zip(results["shared"][1], results["alone"][1]):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)
    calls = []
    tracker = make_tracker(model_dir)
    tracker.model.vision_encoder.register_forward_hook(lambda *args: calls.append(1))
    pipeline = Pipeline(
        ScriptedSampler(position=0.5),
        ScriptedSegmenter(),
        tracker,
        PipelineConfig(backward_budget_s=0, catchup_budget_s=0),
    )
    red = [
        Frame(f.index, f.stamp, np.where(f.image[..., :1] > 240, [255, 0, 0], f.image).astype(np.uint8)) for f in frames
    ]
    complete(pipeline.acquire("t", "the red one", red)).session.close()
    assert len(calls) == len(frames)  # the key frame, seeded in both passes, is encoded once
