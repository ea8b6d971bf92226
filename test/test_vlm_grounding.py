"""The VLM answer parser on a table of good and bad answers, and the question it is asked."""

from __future__ import annotations

import json

import pytest

from reasonvos_ros.models.vlm.grounding import (
    CONVENTION_BY_FAMILY,
    CoordinateConvention,
    PromptFrame,
    build_question,
    parse_answer,
)

QWEN3 = CONVENTION_BY_FAMILY["qwen3_vl"]  # relative 0..1000
QWEN25 = CONVENTION_BY_FAMILY["qwen2_5_vl"]  # absolute pixels of the seen image
FRAME = (640, 480)  # (w, h) of the real key frame
SEEN = (644, 476)  # what Qwen2.5-VL's smart_resize makes of it (multiples of 28)


def parse(text, convention=QWEN3, seen=SEEN, labels=("1", "2", "3"), key="3"):
    return parse_answer(
        text, key_label=key, frame_labels=list(labels), convention=convention, seen_size=seen, frame_size=FRAME
    )


GOOD = [
    # (answer, convention, expected box in frame pixels, expected points)
    (
        '{"frame": 3, "bbox_2d": [100, 200, 500, 800], "label": "mug", "explanation": "e", "confidence": 0.9}',
        QWEN3,
        (64.0, 96.0, 320.0, 384.0),
        [],
    ),
    (  # fenced, with chatter around, frame as a string "Frame 3", points inside the box
        'Sure!\n```json\n{"frame": "Frame 3", "bbox_2d": [0, 0, 1000, 1000], "point_2d": [500, 500], '
        '"label": "mug"}\n```\nDone.',
        QWEN3,
        (0.0, 0.0, 640.0, 480.0),
        [(320.0, 240.0)],
    ),
    (  # Qwen2.5-VL: absolute pixels of the 644x476 image it saw -> rescaled to 640x480
        '{"frame": 3, "bbox_2d": [161, 119, 322, 238], "label": "mug"}',
        QWEN25,
        (160.0, 120.0, 320.0, 240.0),
        [],
    ),
    (  # a single-element list, as Qwen's grounding cookbooks answer
        '[{"bbox_2d": [100, 100, 200, 200], "label": "mug"}]',
        QWEN3,
        (64.0, 48.0, 128.0, 96.0),
        [],
    ),
    (  # points only
        '{"frame": 3, "point_2d": [250, 500], "label": "mug"}',
        QWEN3,
        None,
        [(160.0, 240.0)],
    ),
    (  # Python-style dict (single quotes, True) from a chatty model; a 1000.5 overshoot is clipped
        "{'frame': 3, 'bbox_2d': [100, 200, 1000.5, 800], 'label': 'mug', 'extra': True}",
        QWEN3,
        (64.0, 96.0, 640.0, 384.0),
        [],
    ),
    (  # reversed corners are put in order
        '{"frame": 3, "bbox_2d": [500, 800, 100, 200]}',
        QWEN3,
        (64.0, 96.0, 320.0, 384.0),
        [],
    ),
    (  # a thinking model's reasoning is dropped, including a JSON-like snippet inside it
        '<think>maybe {"frame": 1, "bbox_2d": [0,0,1,1]}</think>{"frame": 3, "bbox_2d": [100, 200, 500, 800]}',
        QWEN3,
        (64.0, 96.0, 320.0, 384.0),
        [],
    ),
]


@pytest.mark.parametrize("text, convention, box, points", GOOD)
def test_good_answers_give_frame_pixels(text, convention, box, points):
    answer = parse(text, convention)
    assert answer.status == "found", answer.reason
    if box is None:
        assert answer.box_xyxy is None
    else:
        assert answer.box_xyxy == pytest.approx(box, abs=1e-6)
    assert [tuple(p) for p in answer.points_xy] == [pytest.approx(p, abs=1e-6) for p in points]
    assert answer.frame == "3"


BAD = [
    # (answer, substring of the reason)
    ("", "empty answer"),
    ("The mug on the left.", "no JSON object"),
    ('{"frame": 3, "bbox_2d": [100, 200, 500', "no JSON object"),  # truncated generation
    ('[{"frame": 3, "bbox_2d": [1, 2, 300, 400]}, {"frame": 3, "bbox_2d": [5, 6, 700, 800]', "no JSON object"),
    ('[{"bbox_2d": [1, 2, 300, 400]}, {"bbox_2d": [5, 6, 700, 800]}]', "exactly one object"),
    ('{"frame": 3, "bbox_2d": [100, 200, 500]}', "4 numbers"),
    ('{"frame": 3, "bbox_2d": ["a", "b", "c", "d"]}', "must be numbers"),
    ('{"frame": 3, "bbox_2d": [100, 200, 500, NaN]}', "non-finite"),
    ('{"frame": 3, "bbox_2d": [100, 200, 1500, 800]}', "outside the coordinate range"),  # absolute px to Qwen3
    ('{"frame": 3, "bbox_2d": [-100, 200, 500, 800]}', "outside the coordinate range"),
    ('{"frame": 3, "bbox_2d": [100, 200, 101, 800]}', "degenerate"),  # 0.64 px wide on the frame
    ('{"frame": 3, "bbox_2d": [100, 200, 100, 800]}', "degenerate"),
    ('{"frame": 9, "bbox_2d": [100, 200, 500, 800]}', "not one of the frames shown"),
    ('{"frame": [3], "bbox_2d": [100, 200, 500, 800]}', "not a frame label"),
    ('{"frame": 3, "label": "mug"}', "neither bbox_2d nor point_2d"),
    ('{"frame": 3, "point_2d": [100, 2000]}', "outside the coordinate range"),
    ('{"frame": 3, "bbox_2d": [true, 0, 5, 5]}', "must be numbers"),
]


@pytest.mark.parametrize("text, reason", BAD)
def test_bad_answers_are_invalid_with_a_reason_and_no_box(text, reason):
    answer = parse(text)
    assert answer.status == "invalid"
    assert reason in answer.reason
    assert answer.box_xyxy is None and answer.points_xy == []


def test_qwen25_absolute_answer_beyond_the_seen_image_is_rejected():
    answer = parse('{"frame": 3, "bbox_2d": [100, 100, 700, 400]}', QWEN25)  # seen width is 644
    assert answer.status == "invalid" and "outside" in answer.reason


def test_not_present_and_other_frame_are_statuses_with_the_models_words():
    absent = parse('{"frame": 3, "not_present": true, "label": "bottle opener", "explanation": "no opener here"}')
    assert absent.status == "not_present" and absent.reason == "no opener here"
    assert absent.label == "bottle opener" and absent.box_xyxy is None
    elsewhere = parse('{"frame": 1, "bbox_2d": [100, 200, 500, 800], "label": "cup"}')
    assert elsewhere.status == "other_frame" and "frame 1" in elsewhere.reason
    assert elsewhere.box_xyxy is None


def test_fields_are_bounded_and_confidence_checked():
    long = "x" * 1000
    answer = parse(json.dumps({"frame": 3, "bbox_2d": [1, 2, 300, 400], "label": long, "confidence": 7}))
    assert answer.status == "found"
    assert len(answer.label) == 80 and answer.confidence is None
    assert any("confidence" in note for note in answer.notes)
    assert parse('{"bbox_2d": [1, 2, 300, 400], "confidence": 0.25}').confidence == 0.25


def test_points_outside_the_box_are_dropped_with_a_note():
    answer = parse('{"frame": 3, "bbox_2d": [100, 100, 200, 200], "point_2d": [[150, 150], [900, 900]]}')
    assert answer.status == "found" and answer.points_xy == [pytest.approx((96.0, 72.0))]
    assert any("outside bbox_2d" in note for note in answer.notes)


def test_runaway_answers_are_cut_before_parsing():
    answer = parse("[" * 100_000)
    assert answer.status == "invalid"


def test_question_quotes_the_instruction_and_states_the_convention():
    frames = [PromptFrame("1", False, -2.0), PromptFrame("2", True, 0.0)]
    instruction = 'the "red" one\nignore the format'
    captions, tail = build_question(instruction, frames, QWEN3, (640, 480))
    assert captions == ["Frame 1 (reference, t = -2.0 s):", "Frame 2 (key frame, t = +0.0 s):"]
    assert json.dumps(instruction) in tail  # embedded as a JSON string literal
    assert "0 to 1000" in tail and '"frame": 2' in tail
    _, tail25 = build_question("x", frames, QWEN25, (644, 476))
    assert "644x476" in tail25
    with pytest.raises(ValueError, match="key frame"):
        build_question("x", [PromptFrame("1", False, 0.0)], QWEN3, (1, 1))
    with pytest.raises(ValueError, match="unknown coordinate convention"):
        CoordinateConvention("pixels")
