"""TFS answer parsing: a table of realistic video-LLM answers, averaging, clamping and the frame mapping."""

import math

import pytest

from reasonvos_ros.models.tfs.parsing import (
    FALLBACK_POSITION,
    aggregate_answers,
    aggregate_positions,
    parse_percentage,
    position_to_index,
)

ECHO_PAPER = (
    "To find the red ball, which percentage mark of the video should I check? Please respond with a number "
    "between 0% and 100%."
)
ECHO_RELEASED = (
    "If I want to find 'the dog', which percentage mark of the video should I check? Please choose one answer from "
    "0%, 10%, 20%, 30%, 40%, 50%, 60%, 70%, 80%, 90% and 100%."
)

# (answer, expected position or None)
TABLE = [
    # plain percentages
    ("40%", 0.4),
    ("40 %", 0.4),
    ("40%.", 0.4),
    ("0%", 0.0),
    ("100%", 1.0),
    ("12.5%", 0.125),
    ("50％", 0.5),  # full-width percent sign
    ("The object appears at around 40% of the video.", 0.4),
    ("I would check the 80% mark.", 0.8),
    ("Answer: 30%", 0.3),
    ("You should check at 65% of the video", 0.65),
    # spelled-out percent
    ("50 percent", 0.5),
    ("I think it's 60 per cent", 0.6),
    ("around 35 pct", 0.35),
    ("the 70th percentile", 0.7),
    ("forty-five percent", 0.45),
    ("one hundred percent", 1.0),
    ("twenty percent into the clip", 0.2),
    # qualifiers
    ("the last 20%", 0.8),
    ("the last 90%", 0.1),
    ("In the final 10 percent of the clip.", 0.9),
    ("20% from the end", 0.8),
    ("the first 30%", 0.3),
    ("the remaining 25%", 0.75),
    # ranges and pairs
    ("between 40% and 60%", 0.5),
    ("40-60%", 0.5),
    ("40%-60%", 0.5),
    ("from 30 to 50 percent", 0.4),
    ("It happens at approximately 35 - 45 %.", 0.4),
    ("between 40 and 60 percent", 0.5),
    ("30% or 40%", 0.35),
    ("the last 10-20%", 0.85),
    # fractions and decimals
    ("around 0.3 of the video", 0.3),
    ("0.75", 0.75),
    (".5", 0.5),
    ("1.0", 1.0),
    ("1/4", 0.25),
    ("2 out of 5", 0.4),
    ("two thirds of the way through", 2 / 3),
    ("about a quarter of the way in", 0.25),
    ("three quarters", 0.75),
    ("the last quarter", 0.75),
    ("halfway through", 0.5),
    ("in the second half", 0.5),
    # a single bare number means percent
    ("40", 0.4),
    ("Answer: 70", 0.7),
    ("70.", 0.7),
    # position words
    ("at the very end", 1.0),
    ("At the end of the video.", 1.0),
    ("The red ball is visible in the last frame.", 1.0),
    ("near the end", 0.9),
    ("towards the end of the video", 0.9),
    ("late in the video", 0.9),
    ("in the middle", 0.5),
    ("at the beginning", 0.0),
    ("in the first frame", 0.0),
    ("towards the beginning", 0.1),
    ("early in the video", 0.1),
    # out of range -> clamped
    ("150%", 1.0),
    ("about 120 percent", 1.0),
    # refusals, garbage, ambiguity -> None
    ("I'm sorry, but I can't watch videos.", None),
    ("As an AI language model, I cannot view the video.", None),
    ("I cannot determine this from the video. The beginning maybe.", None),
    ("Sorry, I'm not sure, maybe 50%?", 0.5),  # a refusal that still gives a number counts
    ("", None),
    ("   ", None),
    ("asdf qwer zxcv", None),
    ("ntee 4L video t", None),  # digits inside words are not numbers
    ("9 percentag \ufffd a9\x07", None),  # undecodable bytes / control characters: byte garbage
    ("eg\ufffd and\x10 which 50\ufffdneatmber", None),
    ("0%, 10%, 20%, 30%", None),  # the option list echoed back
    (ECHO_PAPER, None),
    (ECHO_RELEASED, None),
    ("from beginning to end", None),
    ("It starts at the beginning and lasts until the end.", None),
    ("at 3 seconds", None),  # a time, not a percentage of the video
    ("frame 12", None),
    ("12 frames", None),
    ("3 or 7", None),
    ("the 3rd clip", None),
    ("twenty", None),
    ("1234", None),
]


def test_table_is_large_enough():
    assert len(TABLE) >= 30
    assert sum(expected is None for _, expected in TABLE) >= 10


@pytest.mark.parametrize(("answer", "expected"), TABLE, ids=[repr(a)[:40] for a, _ in TABLE])
def test_parse_table(answer, expected):
    got = parse_percentage(answer)
    if expected is None:
        assert got is None
    else:
        assert got is not None and math.isclose(got, expected, abs_tol=1e-9)


@pytest.mark.parametrize("answer", [None, 40, 0.4, b"40%", ["40%"]])
def test_non_strings_do_not_parse(answer):
    assert parse_percentage(answer) is None


def test_mean_of_parsed_answers():
    estimate = aggregate_answers(["40%", "garbage", "60%", "the last 50%", "I'm sorry, I can't"])
    assert estimate.parsed == [0.4, None, 0.6, 0.5, None]
    assert estimate.parsed_count == 3
    assert math.isclose(estimate.position, 0.5)
    spread = math.sqrt(((0.4 - 0.5) ** 2 + (0.6 - 0.5) ** 2 + 0) / 3)
    assert math.isclose(estimate.spread, spread)
    assert math.isclose(estimate.confidence, 3 / 5 * (1 - 2 * spread))


def test_no_parsed_answer_falls_back_to_the_middle_with_zero_confidence():
    estimate = aggregate_answers(["blah", "", "I cannot see videos"])
    assert estimate.position == FALLBACK_POSITION == 0.5
    assert estimate.parsed_count == 0
    assert estimate.confidence == 0.0
    assert aggregate_answers([]).position == 0.5


def test_unanimous_answers_have_full_confidence():
    estimate = aggregate_answers(["70%"] * 10)
    assert math.isclose(estimate.position, 0.7)
    assert estimate.spread == 0.0
    assert estimate.confidence == 1.0


def test_maximal_disagreement_has_zero_confidence():
    estimate = aggregate_answers(["0%", "100%"] * 5)
    assert math.isclose(estimate.position, 0.5)
    assert math.isclose(estimate.spread, 0.5)
    assert estimate.confidence == 0.0


def test_out_of_range_values_are_clamped_before_averaging():
    # 150% counts as 100%, not 150%: the mean is (1.0 + 0.5) / 2, not (1.5 + 0.5) / 2 clamped.
    assert math.isclose(aggregate_answers(["150%", "50%"]).position, 0.75)
    assert math.isclose(aggregate_positions([1.7, -0.3]).position, 0.5)
    assert aggregate_positions([2.0, 3.0]).position == 1.0
    assert aggregate_positions([-1.0]).position == 0.0
    with pytest.raises(ValueError, match="NaN"):
        aggregate_positions([float("nan")])


@pytest.mark.parametrize(
    ("position", "num_frames", "index"),
    [
        (0.0, 10, 0),
        (0.5, 10, 5),
        (0.99, 10, 9),
        (1.0, 10, 9),  # min(int(T * p), T - 1)
        (0.3, 10, 3),
        (0.7, 10, 7),
        (0.5, 1, 0),
        (1.0, 1, 0),
        (0.5, 31, 15),
        (1.5, 8, 7),
        (-0.2, 8, 0),
    ],
)
def test_position_to_index(position, num_frames, index):
    assert position_to_index(position, num_frames) == index


def test_position_to_index_needs_frames():
    with pytest.raises(ValueError, match="at least one frame"):
        position_to_index(0.5, 0)
