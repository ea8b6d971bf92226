"""``reasonvos segment`` and ``reasonvos eval`` end to end on composited clips (real cut-outs, exact GT).

The pipeline runs with the scripted TEST DOUBLE backends (a colour-matching segmenter/tracker, not models): they
find the person cut-out's blue jacket, which is part of the ground truth, so the masks are measurable. The lite
backends are exercised by the slow test at the end when they are installed.
"""

from __future__ import annotations

import csv
import json
import pathlib

import cv2
import numpy as np
import pytest

from reasonvos_ros.cli import main
from reasonvos_ros.data.media import media_available
from reasonvos_ros.evaluation import metrics
from reasonvos_ros.evaluation.dataset import ReVOSDataset
from reasonvos_ros.evaluation.minidataset import MiniExpression, MiniVideo, build_mini_dataset, write_revos_folder
from reasonvos_ros.evaluation.report import write_prediction_masks

pytestmark = pytest.mark.skipif(
    not media_available("dog.jpg", "person.jpg", "vtest.avi"),
    reason="needs the darknet photos and opencv-doc's vtest.avi (see reasonvos_ros.data.media)",
)
SCRIPTED = ["--sampler", "scripted", "--segmenter", "scripted", "--tracker", "scripted"]


@pytest.fixture(scope="module")
def person_clip():
    from reasonvos_ros.data.composite import make_composite_clip

    return make_composite_clip(
        10, (320, 240), path=((0.3, 0.55), (0.7, 0.55)), cutout="person", scale=0.6, occluder_x=None
    )


@pytest.fixture(scope="module")
def person_video(person_clip, tmp_path_factory) -> pathlib.Path:
    path = tmp_path_factory.mktemp("video") / "person.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (320, 240))
    for frame in person_clip.frames:
        writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    writer.release()
    return path


@pytest.fixture(scope="module")
def mini_root(tmp_path_factory) -> pathlib.Path:
    return build_mini_dataset(tmp_path_factory.mktemp("revos") / "mini", n_frames=8)


def test_segment_video_writes_masks_overlay_and_record(person_clip, person_video, tmp_path, capsys):
    out = tmp_path / "seg"
    assert main(["segment", str(person_video), "the blue one", "--out", str(out), *SCRIPTED]) == 0
    names = [f"{i:05d}" for i in range(10)]
    assert sorted(p.stem for p in (out / "masks").glob("*.png")) == names
    for name, gt in zip(names, person_clip.masks):
        mask = cv2.imread(str(out / "masks" / f"{name}.png"), cv2.IMREAD_UNCHANGED)
        assert mask.shape == (240, 320) and set(np.unique(mask)) <= {0, 255}
        mask = mask > 0
        # The jacket: nearly all predicted pixels lie on the person, and it is a real part of it.
        assert np.count_nonzero(mask & gt) / max(np.count_nonzero(mask), 1) > 0.9
        assert 0.3 < metrics.region_similarity(gt, mask) < 0.9
    record = json.loads((out / "result.json").read_text())
    assert record["status"] == "TRACKING" and record["key_index"] == 9 and record["key_frame"] == "00009"
    assert record["backends"]["segmenter"]["name"] == "scripted"
    assert len(record["mask_area_px"]) == 10 and min(record["mask_area_px"]) > 500
    video = cv2.VideoCapture(str(out / "overlay.mp4"))
    count = 0
    while True:
        ok, frame = video.read()
        if not ok:
            break
        assert frame.shape == (240, 320, 3)
        count += 1
    assert count == 10
    assert "TRACKING: key frame 00009" in capsys.readouterr().out


def test_segment_image_folder_stride_and_absent_object(person_clip, tmp_path):
    folder = tmp_path / "frames"
    folder.mkdir()
    for i, frame in enumerate(person_clip.frames):
        cv2.imwrite(str(folder / f"img_{i:03d}.png"), cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    out = tmp_path / "seg"
    args = ["segment", str(folder), "the giraffe", "--out", str(out), "--start", "1", "--stride", "2"]
    assert main([*args, "--max-frames", "3", "--no-overlay", *SCRIPTED]) == 0
    assert sorted(p.name for p in (out / "masks").iterdir()) == ["img_001.png", "img_003.png", "img_005.png"]
    assert not (out / "overlay.mp4").exists()
    record = json.loads((out / "result.json").read_text())
    assert record["status"] == "NOT_PRESENT" and record["mask_area_px"] == [0, 0, 0]


def test_segment_errors(person_clip, tmp_path, capsys):
    def fails(args, message):
        assert main(["segment", *args]) == 2
        assert message in capsys.readouterr().err

    fails([str(tmp_path / "absent.mp4"), "the dog"], "video not found")
    (tmp_path / "corrupt.mp4").write_bytes(b"\x00" * 1000)
    fails([str(tmp_path / "corrupt.mp4"), "the dog"], "cannot open")
    (tmp_path / "empty").mkdir()
    fails([str(tmp_path / "empty"), "the dog"], "contains no images")
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    cv2.imwrite(str(mixed / "a.png"), np.zeros((20, 30, 3), np.uint8))
    cv2.imwrite(str(mixed / "b.png"), np.zeros((21, 30, 3), np.uint8))
    fails([str(mixed), "the dog", *SCRIPTED], "all frames must have one size")
    fails([str(mixed), "  "], "instruction is empty")
    fails([str(mixed), "the dog", "--option", "segmenter:x"], "expected ROLE.KEY=VALUE")
    good = tmp_path / "good"
    good.mkdir()
    cv2.imwrite(str(good / "a.png"), np.zeros((20, 30, 3), np.uint8))
    fails([str(good), "the dog", *SCRIPTED, "--segmenter", "nope"], "unknown segmenter backend 'nope'; available:")
    fails([str(good), "the dog", "--option", "segmenter.bogus=1", *SCRIPTED], "bad options for segmenter")
    (tmp_path / "bad.yaml").write_text("sampler: [unclosed")
    fails([str(mixed), "the dog", "--backends", str(tmp_path / "bad.yaml")], "is not valid YAML")
    (tmp_path / "role.yaml").write_text("detector: {name: lite}")
    fails([str(mixed), "the dog", "--backends", str(tmp_path / "role.yaml")], "unknown role 'detector'")


def test_backends_file_and_options(person_video, tmp_path):
    config = tmp_path / "backends.yaml"
    config.write_text("sampler: {name: scripted, options: {position: first}}\nsegmenter: scripted\ntracker: scripted\n")
    out = tmp_path / "seg"
    args = ["segment", str(person_video), "the blue one", "--out", str(out), "--backends", str(config)]
    assert main([*args, "--option", "tracker.confidence=0.8", "--no-overlay"]) == 0
    record = json.loads((out / "result.json").read_text())
    assert record["key_index"] == 0  # position: first
    assert record["backends"]["sampler"] == {"name": "scripted", "options": {"position": "first"}}
    assert record["backends"]["tracker"] == {"name": "scripted", "options": {"confidence": 0.8}}


def test_eval_runs_pipeline_and_scores(mini_root, tmp_path, capsys):
    out = tmp_path / "eval"
    assert main(["eval", str(mini_root), "--out", str(out), "--no-progress", *SCRIPTED]) == 0
    printed = capsys.readouterr().out
    assert "no_target" in printed and "wrote" in printed
    summary = json.loads((out / "summary.json").read_text())
    with open(out / "runs.csv", newline="") as handle:
        status = {(r["video"], r["exp_id"]): r["status"] for r in csv.DictReader(handle)}
    # The scripted segmenter only knows colour words: the two "blue jacket" expressions of dog_and_person are
    # found; on person_exit the (latest) key frame no longer shows the man, so that one is "not present" too.
    tracked = {("dog_and_person", "1"), ("dog_and_person", "3")}
    assert {k for k, v in status.items() if v == "TRACKING"} == tracked
    assert {v for k, v in status.items() if k not in tracked} == {"NOT_PRESENT"} and len(status) == 10
    with open(out / "per_expression.csv", newline="") as handle:
        rows = {(r["video"], r["exp_id"]): r for r in csv.DictReader(handle)}
    dataset = ReVOSDataset.from_folder(mini_root)
    for exp in dataset.expressions():
        row = rows[(exp.video, exp.exp_id)]
        if (exp.video, exp.exp_id) in tracked:
            continue
        # Empty masks: J = F = the fraction of frames whose ground truth is empty, R = 100 (no false positive).
        gt = dataset.gt_masks(exp)
        empty_fraction = 100 * float(np.mean(~gt.reshape(len(gt), -1).any(axis=1)))
        assert float(row["J"]) == pytest.approx(empty_fraction) and float(row["F"]) == pytest.approx(empty_fraction)
        assert float(row["R"]) == pytest.approx(100.0)
    assert float(rows[("person_exit", "0")]["J"]) == pytest.approx(37.5)  # out of view on 3 of 8 frames
    # The jacket is part of the man: a partial but clean mask, poorer against the dog-and-man union.
    jacket, union = rows[("dog_and_person", "1")], rows[("dog_and_person", "3")]
    assert 30 < float(jacket["J"]) < 80 and float(jacket["R"]) > 99
    assert float(union["J"]) < float(jacket["J"])
    assert summary["no_target"]["J"] == 100.0 and summary["no_target"]["count"] == 2
    referring = [float(r["J"]) for r in rows.values() if r["type"] == "referring"]
    assert summary["referring"]["J"] == pytest.approx(np.mean(referring)) and len(referring) == 5
    assert summary["settings"]["run"]["backends"]["tracker"]["name"] == "scripted"
    assert len(list((out / "Annotations").glob("*/*/*.png"))) == 10 * 8


def test_eval_filters_and_prediction_folder(mini_root, tmp_path, capsys):
    out = tmp_path / "eval"
    args = ["eval", str(mini_root), "--out", str(out), "--no-progress", "--videos", "dog_and_person"]
    assert main([*args, "--types", "referring,no_target", "--subset", "3", *SCRIPTED]) == 0
    with open(out / "per_expression.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [(r["video"], r["exp_id"]) for r in rows] == [
        ("dog_and_person", "0"),
        ("dog_and_person", "1"),
        ("dog_and_person", "3"),
    ]

    # Score an existing prediction folder: the ground truth itself scores 100 in both modes.
    dataset = ReVOSDataset.from_folder(mini_root)
    pred = tmp_path / "pred"
    for exp in dataset.expressions():
        write_prediction_masks(pred, exp.video, exp.exp_id, dataset.videos[exp.video].frames, dataset.gt_masks(exp))
    for extra in ([], ["--authors-compat", "--workers", "1"]):
        out2 = tmp_path / f"scored{len(extra)}"
        assert (
            main(["eval", str(mini_root), "--predictions", str(pred), "--out", str(out2), "--no-progress", *extra]) == 0
        )
        summary = json.loads((out2 / "summary.json").read_text())
        assert summary["overall"]["JF"] == 100.0 and summary["overall"]["R"] == 100.0
        assert not (out2 / "runs.csv").exists()
    capsys.readouterr()

    next(pred.glob("dog_walk/0/*.png")).unlink()
    assert (
        main(["eval", str(mini_root), "--predictions", str(pred), "--out", str(tmp_path / "x"), "--no-progress"]) == 2
    )
    assert "prediction PNGs are missing" in capsys.readouterr().err
    args = ["eval", str(mini_root), "--predictions", str(pred), "--out", str(tmp_path / "y"), "--no-progress"]
    assert main([*args, "--missing", "empty"]) == 0


def test_eval_errors(mini_root, tmp_path, capsys):
    def fails(args, message):
        assert main(["eval", *args, "--out", str(tmp_path / "out"), "--no-progress"]) == 2
        assert message in capsys.readouterr().err

    fails([str(tmp_path / "absent")], "dataset folder not found")
    fails([str(mini_root), "--videos", "nope"], "--videos: nope not in the dataset")
    fails([str(mini_root), "--types", "funny"], "--types: unknown funny")
    fails([str(mini_root), "--predictions", str(tmp_path / "nowhere")], "prediction folder not found")


def test_eval_frame_size_mismatch_and_pipeline_failures(tmp_path, capsys):
    rng = np.random.default_rng(1)
    frames = [rng.integers(0, 255, (40, 60, 3), dtype=np.uint8) for _ in range(4)]
    masks = [np.zeros((40, 60), bool) for _ in range(4)]
    for m in masks:
        m[10:20, 10:30] = True
    video = MiniVideo(
        "v", frames, {0: masks}, [MiniExpression("the blue one", [0], 0), MiniExpression("fail here", [0], 1)]
    )
    root = write_revos_folder(tmp_path / "ds", [video])
    out = tmp_path / "out"
    # The scripted segmenter raises BackendFailure on the word "fail" (fault injection).
    assert main(["eval", str(root), "--out", str(out), "--no-progress", *SCRIPTED]) == 2
    err = capsys.readouterr().err
    assert "the pipeline failed on v/1 ('fail here')" in err and "--keep-going" in err
    assert main(["eval", str(root), "--out", str(out), "--no-progress", "--keep-going", *SCRIPTED]) == 0
    assert "failed on 1 expressions" in capsys.readouterr().out
    with open(out / "runs.csv", newline="") as handle:
        runs = list(csv.DictReader(handle))
    assert runs[1]["status"] == "ERROR" and "fault injection" in runs[1]["error"]

    cv2.imwrite(str(root / "JPEGImages" / "v" / "00002.jpg"), np.zeros((30, 60, 3), np.uint8))
    assert main(["eval", str(root), "--out", str(out), "--no-progress", *SCRIPTED]) == 2
    assert "00002.jpg is 60x30 (WxH) but the annotations of video 'v' are 60x40" in capsys.readouterr().err


@pytest.mark.slow
def test_eval_with_default_lite_backends(mini_root, tmp_path, capsys):
    """The default (lite CPU) backends on the mini dataset: runs end to end and prints the scores."""
    from reasonvos_ros.core.errors import BackendUnavailable
    from reasonvos_ros.core.offline import build_pipeline

    try:
        build_pipeline(None)
    except BackendUnavailable as exc:
        pytest.skip(f"lite backends unavailable: {exc}")
    out = tmp_path / "eval"
    assert main(["eval", str(mini_root), "--out", str(out), "--no-progress"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    print(json.dumps({k: summary[k] for k in ("referring", "reasoning", "overall", "no_target")}, indent=1))
    assert summary["overall"]["count"] == 8


def test_a_reader_that_goes_away_ends_the_command_without_a_traceback():
    """`reasonvos weights list | head -0`: the pipe is closed before the command prints."""
    import os
    import subprocess
    import sys

    command = [sys.executable, "-m", "reasonvos_ros.cli", "weights", "list"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}  # each line written as printed: the first meets the closed pipe
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    proc.stdout.close()  # the reader is gone before the interpreter has even started
    stderr = proc.stderr.read().decode()
    assert proc.wait(timeout=60) == 0
    assert "Traceback" not in stderr and "BrokenPipeError" not in stderr
