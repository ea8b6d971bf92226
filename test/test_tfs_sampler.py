"""The "vlm" sampler's model-independent parts: frame subsampling, the question, the answer_fn plug-in and errors.

The answer generators here are small test doubles that return fixed texts; they exercise the sampler's contract
(what it shows the generator and how it turns answers into a key frame), not a model. The real model path is
tested in test_tfs_qwen.py.
"""

import json
import sys
import types

import numpy as np
import pytest

from reasonvos_ros.core.errors import BackendFailure, BackendUnavailable, ConfigError
from reasonvos_ros.core.interfaces import FrameSampler
from reasonvos_ros.core.registry import build_backend
from reasonvos_ros.core.types import Frame
from reasonvos_ros.models.tfs.sampler import (
    QUESTION_TEMPLATES,
    VideoLLMFrameSampler,
    format_question,
    resolve_answer_fn,
    subsample_positions,
)


def make_frames(count: int) -> list[Frame]:
    # each frame's pixels hold its position, so the test can see which frames the generator was shown
    return [Frame(1000 + i, 5.0 + 0.2 * i, image=np.full((4, 6, 3), i % 256, np.uint8)) for i in range(count)]


class RecordingAnswers:
    """Returns fixed answers and records what it was asked."""

    def __init__(self, answers):
        self.answers = list(answers)
        self.calls = []

    def __call__(self, frames, question, *, k, seed, stamps):
        self.calls.append({"frames": frames, "question": question, "k": k, "seed": seed, "stamps": stamps})
        return self.answers[:k]


@pytest.mark.parametrize(
    ("count", "max_frames", "expected"),
    [
        (5, 16, [0, 1, 2, 3, 4]),
        (16, 16, list(range(16))),
        (30, 4, [0, 10, 19, 29]),
        (100, 5, [0, 25, 50, 74, 99]),
        (10, 1, [9]),
        (1, 8, [0]),
    ],
)
def test_subsample_positions(count, max_frames, expected):
    assert subsample_positions(count, max_frames) == expected


@pytest.mark.parametrize("count", [2, 3, 17, 33, 64, 301])
@pytest.mark.parametrize("max_frames", [2, 3, 8, 16])
def test_subsample_positions_are_distinct_sorted_and_span_the_window(count, max_frames):
    positions = subsample_positions(count, max_frames)
    assert positions == sorted(set(positions))
    assert len(positions) == min(count, max_frames)
    assert positions[0] == 0 and positions[-1] == count - 1


def test_question_templates():
    assert format_question("paper", "the red ball.") == (
        "To find the red ball, which percentage mark of the video should I check? Please respond with a number "
        "between 0% and 100%."
    )
    released = format_question("released", "which ball should be hit first?")
    assert released.startswith("If I want to find 'which ball should be hit first?', which percentage mark")
    assert released.endswith("90% and 100%.")
    assert format_question("Where is {instruction}? Answer in percent.", "the cup") == (
        "Where is the cup? Answer in percent."
    )
    assert format_question("paper", "a {weird} name") == QUESTION_TEMPLATES["paper"].replace(
        "{instruction}", "a {weird} name"
    )
    with pytest.raises(ConfigError, match="instruction"):
        format_question("no placeholder here", "x")


def test_sampler_averages_answers_and_maps_to_the_window():
    answers = RecordingAnswers(["40%", "the last 40%", "garbage", "50 percent"] + ["I can't tell"] * 6)
    sampler = VideoLLMFrameSampler(answer_fn=answers, k=10, max_frames=8, seed=7)
    frames = make_frames(40)
    choice = sampler.sample(frames, "the red ball")
    # parsed: 0.4, 0.6, 0.5 -> mean 0.5 -> min(int(40 * 0.5), 39) = 20
    assert choice.key == 20
    assert choice.references == []
    assert choice.details["parsed"][:4] == [0.4, 0.6, None, 0.5]
    assert choice.details["parsed_count"] == 3 and not choice.details["fallback"]
    assert choice.confidence == pytest.approx(3 / 10 * (1 - 2 * np.std([0.4, 0.6, 0.5])))
    (call,) = answers.calls
    assert call["k"] == 10 and call["seed"] == 7
    assert call["question"] == format_question("paper", "the red ball")
    shown = choice.details["shown_positions"]
    assert shown == subsample_positions(40, 8)
    assert [int(f[0, 0, 0]) for f in call["frames"]] == shown  # the frames shown are those positions, in order
    assert call["stamps"] == pytest.approx([frames[i].stamp for i in shown])
    assert choice.details["answers"] == answers.answers


def test_sampler_falls_back_to_the_middle_when_nothing_parses():
    sampler = VideoLLMFrameSampler(answer_fn=RecordingAnswers(["no idea"] * 10))
    choice = sampler.sample(make_frames(31), "the cup")
    assert choice.key == 15  # min(int(31 * 0.5), 30)
    assert choice.confidence == 0.0
    assert choice.details["fallback"] is True


def test_sampler_result_is_always_a_valid_index():
    for answer, count, key in [("100%", 12, 11), ("0%", 12, 0), ("150%", 3, 2), ("at the very end", 1, 0)]:
        sampler = VideoLLMFrameSampler(answer_fn=RecordingAnswers([answer] * 10))
        assert sampler.sample(make_frames(count), "x").key == key


def test_answer_fn_by_import_path(monkeypatch):
    module = types.ModuleType("fake_tfs_plugin")

    class Plugin:
        def __init__(self, answer="70%"):
            self.answer = answer

        def __call__(self, frames, question, *, k, seed, stamps):
            return [self.answer] * k

    module.Plugin = Plugin
    module.always_thirty = lambda frames, question, *, k, seed, stamps: ["30%"] * k
    monkeypatch.setitem(sys.modules, "fake_tfs_plugin", module)
    frames = make_frames(10)
    assert build_backend("sampler", "vlm", {"answer_fn": "fake_tfs_plugin:Plugin"}).sample(frames, "x").key == 7
    built = build_backend(
        "sampler", "vlm", {"answer_fn": "fake_tfs_plugin:Plugin", "answer_fn_options": {"answer": "the last 90%"}}
    )
    assert built.sample(frames, "x").key == 1
    assert isinstance(built, FrameSampler)
    assert VideoLLMFrameSampler(answer_fn="fake_tfs_plugin:always_thirty").sample(frames, "x").key == 3
    with pytest.raises(ConfigError, match="has no 'missing'"):
        resolve_answer_fn("fake_tfs_plugin:missing")
    with pytest.raises(ConfigError, match="cannot import module"):
        resolve_answer_fn("no_such_module_for_tfs:thing")
    with pytest.raises(ConfigError, match=r"package\.module:attribute"):
        resolve_answer_fn("just_a_name")
    with pytest.raises(ConfigError, match="callable"):
        resolve_answer_fn(42)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({}, "exactly one of model_dir"),
        ({"model_dir": "/x", "answer_fn": print}, "exactly one of model_dir"),
        ({"answer_fn": print, "k": 0}, "k must be"),
        ({"answer_fn": print, "max_frames": 0}, "max_frames"),
        ({"answer_fn": print, "question": "no placeholder"}, "instruction"),
    ],
)
def test_bad_options(options, message):
    with pytest.raises(ConfigError, match=message):
        VideoLLMFrameSampler(**options)


def test_missing_model_dir_names_the_path(tmp_path):
    missing = tmp_path / "no" / "such" / "qwen2-vl"
    with pytest.raises(BackendUnavailable, match=str(missing)):
        build_backend("sampler", "vlm", {"model_dir": str(missing)})
    (tmp_path / "empty").mkdir()
    with pytest.raises(BackendUnavailable, match=r"config\.json"):
        VideoLLMFrameSampler(model_dir=tmp_path / "empty")


def test_unsupported_model_type_points_to_answer_fn(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llava_llama"}))
    with pytest.raises(ConfigError, match="answer_fn"):
        VideoLLMFrameSampler(model_dir=tmp_path)


def test_bad_inputs_and_bad_generator_output():
    sampler = VideoLLMFrameSampler(answer_fn=RecordingAnswers(["40%"] * 10))
    with pytest.raises(ValueError, match="at least one frame"):
        sampler.sample([], "x")
    with pytest.raises(ValueError, match="instruction"):
        sampler.sample(make_frames(3), "  ")
    broken = VideoLLMFrameSampler(answer_fn=lambda frames, question, *, k, seed, stamps: "40%")
    with pytest.raises(BackendFailure, match="list of strings"):
        broken.sample(make_frames(3), "x")
