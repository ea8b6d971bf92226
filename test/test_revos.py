"""ReVOS-format reader and evaluator on the composited mini dataset (real cut-outs over real frames, exact GT)."""

from __future__ import annotations

import csv
import json
import pathlib
import shutil

import cv2
import numpy as np
import pytest

from reasonvos_ros.data.media import media_available
from reasonvos_ros.evaluation import metrics
from reasonvos_ros.evaluation.dataset import EvaluationError, ReVOSDataset, ReVOSFormatError
from reasonvos_ros.evaluation.minidataset import (
    MiniExpression,
    MiniVideo,
    build_mini_dataset,
    encode_rle,
    write_revos_folder,
)
from reasonvos_ros.evaluation.report import summarize, write_prediction_masks, write_report
from reasonvos_ros.evaluation.scoring import evaluate_predictions

pytestmark = pytest.mark.skipif(
    not media_available("dog.jpg", "person.jpg", "vtest.avi"),
    reason="needs the darknet photos and opencv-doc's vtest.avi (see reasonvos_ros.data.media)",
)


@pytest.fixture(scope="module")
def mini_root(tmp_path_factory) -> pathlib.Path:
    return build_mini_dataset(tmp_path_factory.mktemp("revos") / "mini", n_frames=8)


@pytest.fixture(scope="module")
def dataset(mini_root) -> ReVOSDataset:
    return ReVOSDataset.from_folder(mini_root)


def write_predictions(dataset: ReVOSDataset, root: pathlib.Path, make_masks) -> pathlib.Path:
    """``make_masks(expression, gt (T,H,W) bool) -> list of masks`` for every expression."""
    for exp in dataset.expressions():
        masks = make_masks(exp, dataset.gt_masks(exp))
        write_prediction_masks(root, exp.video, exp.exp_id, dataset.videos[exp.video].frames, masks)
    return root


def test_reader_structure(dataset):
    assert set(dataset.videos) == {"dog_walk", "person_exit", "dog_and_person"}
    types = [e.type_id for e in dataset.expressions()]
    assert types.count(0) == 5 and types.count(1) == 3 and types.count(2) == 2
    assert dataset.frame_size("dog_walk") == (240, 320)
    assert dataset.videos["dog_walk"].frames[:3] == ("00000", "00005", "00010")
    frames = dataset.read_frames("dog_walk")
    assert len(frames) == 8 and frames[0].shape == (240, 320, 3) and frames[0].dtype == np.uint8


def test_ground_truth_semantics(dataset):
    for exp in dataset.expressions(types=[2]):
        assert not dataset.gt_masks(exp).any(), "no-target expressions have empty ground truth"
    leaving = dataset.gt_masks(dataset.expression("person_exit", "0"))
    areas = leaving.reshape(len(leaving), -1).sum(axis=1)
    assert areas[0] > 0 and areas[-1] == 0, "the person leaves the view: empty ground truth at the end"
    dog = dataset.gt_masks(dataset.expression("dog_and_person", "0"))
    person = dataset.gt_masks(dataset.expression("dog_and_person", "1"))
    both = dataset.gt_masks(dataset.expression("dog_and_person", "3"))
    np.testing.assert_array_equal(both, dog | person)
    assert not (dog & person).any()
    np.testing.assert_array_equal(dataset.foreground_masks("dog_and_person"), dog | person)
    # The foreground of a one-object video is that object.
    np.testing.assert_array_equal(dataset.foreground_masks("person_exit"), leaving)


def test_frames_show_the_composited_object(dataset):
    # The JPEG frames carry the cut-out where the ground truth says: its pixels differ from the plain background
    # of the other video at the same place much more than elsewhere (a check that masks and frames line up).
    frames = np.stack(dataset.read_frames("dog_walk")).astype(np.int16)
    gt = dataset.gt_masks(dataset.expression("dog_walk", "0"))
    median = np.median(frames, axis=0)
    change = np.abs(frames - median).sum(axis=3)
    moving = gt & ~gt.all(axis=0)  # object pixels that are background in some other frame
    assert change[moving].mean() > 3 * change[~gt].mean()


def test_perfect_predictions_score_100(dataset, tmp_path):
    pred = write_predictions(dataset, tmp_path / "pred", lambda exp, gt: list(gt))
    report = evaluate_predictions(dataset, pred, workers=1, progress=False)
    for score in report.per_expression:
        assert (score.j, score.f, score.a, score.r) == (1.0, 1.0, 1.0, 1.0), score
    summary = report.summary
    assert summary["overall"]["JF"] == 100.0 and summary["overall"]["count"] == 8
    assert summary["no_target"]["count"] == 2


def test_empty_and_wrong_object_predictions(dataset, tmp_path):
    def make(exp, gt):
        if (exp.video, exp.exp_id) == ("dog_and_person", "0"):  # "the dog": predict the person instead
            return list(dataset.gt_masks(dataset.expression("dog_and_person", "1")))
        if exp.type_id == 2:  # no-target: predict the video's foreground (all false positives)
            return list(dataset.foreground_masks(exp.video))
        return [np.zeros_like(m) for m in gt]

    pred = write_predictions(dataset, tmp_path / "pred", make)
    report = evaluate_predictions(dataset, pred, workers=2, progress=False)
    scores = {(s.video, s.exp_id): s for s in report.per_expression}

    # Empty prediction where the person has left the view: J = F = 1 on those frames, 0 elsewhere.
    leaving = scores[("person_exit", "0")]
    gt = dataset.gt_masks(dataset.expression("person_exit", "0"))
    empty_frames = int((gt.reshape(len(gt), -1).sum(axis=1) == 0).sum())
    assert 0 < empty_frames < len(gt)
    assert leaving.j == pytest.approx(empty_frames / len(gt))
    assert leaving.f == pytest.approx(empty_frames / len(gt))
    assert leaving.r == 1.0

    # Wrong object: no overlap, R = mean(1 - |person| / |dog or person|), computed here from the masks.
    wrong = scores[("dog_and_person", "0")]
    dog = dataset.gt_masks(dataset.expression("dog_and_person", "0"))
    person = dataset.gt_masks(dataset.expression("dog_and_person", "1"))
    expected_r = np.mean([1 - p.sum() / ((d | p).sum() + 1e-6) for d, p in zip(dog, person)])
    assert wrong.j == 0.0
    assert wrong.r == pytest.approx(expected_r, abs=1e-12)
    assert 0 < wrong.r < 1

    # A no-target expression answered with every object: J = F = 0, R = 0 (false positives = whole foreground).
    for key in [("dog_walk", "2"), ("dog_and_person", "4")]:
        assert scores[key].j == 0.0 and scores[key].f == 0.0
        assert scores[key].r == pytest.approx(0.0, abs=1e-6)

    # Type means and "overall" follow the spec (no-target kept out of overall).
    summary = report.summary
    referring = [s for s in report.per_expression if s.type_id == 0]
    assert summary["referring"]["J"] == pytest.approx(100 * np.mean([s.j for s in referring]))
    assert summary["referring"]["JF"] == pytest.approx((summary["referring"]["J"] + summary["referring"]["F"]) / 2)
    for key in ("J", "F", "JF", "R"):
        assert summary["overall"][key] == pytest.approx((summary["referring"][key] + summary["reasoning"][key]) / 2)


def test_shifted_predictions_against_direct_metrics_and_parallel_equals_serial(dataset, tmp_path):
    def shifted(exp, gt):
        return [np.roll(m, (3, 6), axis=(0, 1)) for m in gt]

    pred = write_predictions(dataset, tmp_path / "pred", shifted)
    serial = evaluate_predictions(dataset, pred, workers=1, progress=False)
    parallel = evaluate_predictions(dataset, pred, workers=2, progress=False)
    assert [(s.video, s.exp_id, s.j, s.f, s.a, s.r) for s in serial.per_expression] == [
        (s.video, s.exp_id, s.j, s.f, s.a, s.r) for s in parallel.per_expression
    ]
    exp = dataset.expression("dog_walk", "0")
    gt = dataset.gt_masks(exp)
    fg = dataset.foreground_masks("dog_walk")
    score = next(s for s in serial.per_expression if (s.video, s.exp_id) == ("dog_walk", "0"))
    assert score.j == pytest.approx(np.mean([metrics.region_similarity(g, p) for g, p in zip(gt, shifted(exp, gt))]))
    assert score.f == pytest.approx(np.mean([metrics.boundary_f_measure(g, p) for g, p in zip(gt, shifted(exp, gt))]))
    assert score.r == pytest.approx(np.mean([metrics.robustness(g, p, f) for g, p, f in zip(gt, shifted(exp, gt), fg)]))
    assert 0.3 < score.j < 0.95 and 0 < score.f < 1


def test_authors_compat_counts_false_positives_255_times(dataset, tmp_path):
    def one_false_positive(exp, gt):
        masks = [m.copy() for m in gt]
        for m in masks:
            ys, xs = np.nonzero(~m)
            m[ys[0], xs[0]] = True
        return masks

    pred = write_predictions(dataset, tmp_path / "pred", one_false_positive)
    exps = [dataset.expression("dog_walk", "0")]
    binary = evaluate_predictions(dataset, pred, expressions=exps, workers=1, progress=False).per_expression[0]
    compat = evaluate_predictions(
        dataset, pred, expressions=exps, workers=1, progress=False, authors_compat=True
    ).per_expression[0]
    areas = dataset.foreground_masks("dog_walk").reshape(8, -1).sum(axis=1)
    assert binary.r == pytest.approx(np.mean([1 - 1 / (a + 1e-6) for a in areas]))
    assert compat.r == pytest.approx(np.mean([max(1 - 255 / (a + 1e-6), 0) for a in areas]))
    assert binary.j == compat.j and binary.f == compat.f
    # Rounding to 2 decimals per expression happens only in compat mode.
    rounded = summarize([compat], authors_compat=True)["referring"]["J"]
    assert rounded == round(100 * compat.j, 2)
    assert summarize([binary])["referring"]["J"] == 100 * binary.j


def test_missing_predictions(dataset, tmp_path):
    pred = write_predictions(dataset, tmp_path / "pred", lambda exp, gt: list(gt))
    (pred / "person_exit" / "0" / "00010.png").unlink()
    shutil.rmtree(pred / "dog_walk")
    with pytest.raises(EvaluationError, match=r"prediction PNGs are missing .*dog_walk"):
        evaluate_predictions(dataset, pred, workers=1, progress=False)
    empty = evaluate_predictions(dataset, pred, workers=1, progress=False, missing="empty")
    zero = evaluate_predictions(dataset, pred, workers=1, progress=False, missing="zero")
    by_key_empty = {(s.video, s.exp_id): s for s in empty.per_expression}
    by_key_zero = {(s.video, s.exp_id): s for s in zero.per_expression}
    assert by_key_empty[("dog_walk", "0")].j == 0.0
    assert by_key_empty[("dog_walk", "2")].j == 1.0  # no-target: an empty answer is right
    assert by_key_zero[("dog_walk", "2")].j == 0.0 and "missing" in by_key_zero[("dog_walk", "2")].note
    assert by_key_empty[("person_exit", "0")].j == pytest.approx(7 / 8)
    assert by_key_empty[("dog_and_person", "0")].j == 1.0
    with pytest.raises(EvaluationError, match="prediction folder not found"):
        evaluate_predictions(dataset, tmp_path / "nowhere", progress=False)


def test_size_mismatch_and_unreadable_prediction(dataset, tmp_path):
    pred = write_predictions(dataset, tmp_path / "pred", lambda exp, gt: list(gt))
    exps = [dataset.expression("dog_walk", "0")]
    bad = pred / "dog_walk" / "0" / "00005.png"
    cv2.imwrite(str(bad), np.zeros((120, 160), np.uint8))
    with pytest.raises(EvaluationError, match=r"00005.png is 160x120 \(WxH\) but the ground truth is 320x240"):
        evaluate_predictions(dataset, pred, expressions=exps, workers=1, progress=False)
    bad.write_bytes(b"not a png")
    with pytest.raises(EvaluationError, match="cannot read prediction"):
        evaluate_predictions(dataset, pred, expressions=exps, workers=2, progress=False)


def test_report_files(dataset, tmp_path):
    pred = write_predictions(dataset, tmp_path / "pred", lambda exp, gt: list(gt))
    report = evaluate_predictions(dataset, pred, workers=1, progress=False)
    write_report(report, tmp_path / "out" / "summary.json", tmp_path / "out" / "per_expression.csv")
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert set(summary) == {"referring", "reasoning", "overall", "no_target", "settings"}
    assert summary["settings"]["mode"] == "binary"
    with open(tmp_path / "out" / "per_expression.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 10
    assert rows[0]["video"] == "dog_walk" and rows[0]["type"] == "referring" and float(rows[0]["JF"]) == 100.0


def test_summary_with_one_type_only(dataset, tmp_path):
    pred = write_predictions(dataset, tmp_path / "pred", lambda exp, gt: list(gt))
    report = evaluate_predictions(dataset, pred, expressions=dataset.expressions(types=[0]), progress=False)
    assert report.summary["referring"]["count"] == 5
    assert report.summary["reasoning"]["J"] is None
    assert report.summary["overall"]["J"] is None


def test_format_errors(mini_root, tmp_path):
    root = tmp_path / "broken"
    shutil.copytree(mini_root, root)
    meta_path = root / "meta_expressions_valid_.json"
    meta = json.loads(meta_path.read_text())

    meta_path.write_text('{"videos": {')
    with pytest.raises(ReVOSFormatError, match=r"meta_expressions_valid_.json is not valid JSON"):
        ReVOSDataset.from_folder(root)

    broken = json.loads(json.dumps(meta))
    broken["videos"]["dog_walk"]["expressions"]["0"]["anno_id"] = [999]
    meta_path.write_text(json.dumps(broken))
    with pytest.raises(ReVOSFormatError, match=r"'dog_walk' expression '0': anno_id 999 is not in the mask dict"):
        ReVOSDataset.from_folder(root)

    broken = json.loads(json.dumps(meta))
    broken["videos"]["dog_walk"]["frames"].pop()
    meta_path.write_text(json.dumps(broken))
    with pytest.raises(ReVOSFormatError, match="has 8 frames, the video has 7"):
        ReVOSDataset.from_folder(root)

    broken = json.loads(json.dumps(meta))
    broken["videos"]["dog_walk"]["expressions"]["0"]["type_id"] = 5
    meta_path.write_text(json.dumps(broken))
    with pytest.raises(ReVOSFormatError, match="type_id 5"):
        ReVOSDataset.from_folder(root)

    meta_path.write_text(json.dumps(meta))
    (root / "mask_dict.json").unlink()
    with pytest.raises(ReVOSFormatError, match=r"mask dict not found: .*mask_dict.json"):
        ReVOSDataset.from_folder(root)
    with pytest.raises(ReVOSFormatError, match="dataset folder not found"):
        ReVOSDataset.from_folder(tmp_path / "absent")


def test_frame_errors(mini_root, tmp_path):
    root = tmp_path / "frames"
    shutil.copytree(mini_root, root)
    dataset = ReVOSDataset.from_folder(root)
    (root / "JPEGImages" / "dog_walk" / "00010.jpg").unlink()
    with pytest.raises(ReVOSFormatError, match=r"frame not found: .*dog_walk/00010.jpg"):
        dataset.read_frames("dog_walk")
    small = np.zeros((100, 100, 3), np.uint8)
    cv2.imwrite(str(root / "JPEGImages" / "person_exit" / "00005.jpg"), small)
    with pytest.raises(ReVOSFormatError, match=r"00005.jpg is 100x100 \(WxH\) but the annotations .* are 320x240"):
        dataset.read_frames("person_exit")


def test_writer_roundtrip_without_foreground_file(tmp_path):
    # A hand-made video: RLEs decode back to the exact masks; without mask_dict_foreground.json the reader uses
    # the union of the annotated objects.
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 255, (30, 40, 3), dtype=np.uint8) for _ in range(3)]
    a = [np.zeros((30, 40), bool) for _ in range(3)]
    b = [np.zeros((30, 40), bool) for _ in range(3)]
    a[0][2:9, 3:7] = True
    a[2][10:20, 0:40] = True
    b[1][0:30, 35:40] = True
    video = MiniVideo("v", frames, {3: a, 7: b}, [MiniExpression("a", [3], 0), MiniExpression("b", [7], 1)])
    root = write_revos_folder(tmp_path / "hand", [video])
    mask_dict = json.loads((root / "mask_dict.json").read_text())
    assert mask_dict["0"][1] is None and mask_dict["1"][0] is None  # absent -> null
    (root / "mask_dict_foreground.json").unlink()
    dataset = ReVOSDataset.from_folder(root)
    np.testing.assert_array_equal(dataset.gt_masks(dataset.expression("v", "0")), np.stack(a))
    np.testing.assert_array_equal(dataset.foreground_masks("v"), np.stack(a) | np.stack(b))
    assert encode_rle(np.zeros((4, 4), bool)) is None
    with pytest.raises(ValueError, match="unknown objects"):
        write_revos_folder(tmp_path / "bad", [MiniVideo("w", frames, {}, [MiniExpression("x", [1], 0)])])
