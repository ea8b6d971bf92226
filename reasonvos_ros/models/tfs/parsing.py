"""Reading a position in the video out of a video LLM's free-text answer, and averaging K such answers.

VISA's text-guided frame sampler asks "which percentage mark of the video should I check?" K times with sampling,
parses each answer for a percentage, averages the parsed values (0.5 when none parse) and takes frame
``min(int(T * p), T - 1)`` of the T-frame window. Real answers are messy, so ``parse_percentage`` reads, in order:

1. **Percentages** -- ``40%``, ``40 %``, ``50 percent``, ``forty-five per cent``, ``the 70th percentile``. A range
   (``between 40% and 60%``, ``40-60%``, ``from 30 to 50 percent``) counts as its midpoint. Qualifiers:
   ``last/final X%`` and ``X% from/before the end`` mean ``100 - X`` (VISA's TFS rule); ``first X%`` means ``X``.
   One or two values: their mean (``30% or 40%`` -> 35%). Three or more different values (e.g. the model echoing
   the option list ``0%, 10%, 20% ...``) are ambiguous -> ``None``.
2. **Fractions** -- ``0.3``, ``.75``, ``1/3``, ``2 out of 5``, ``half``, ``a third``, ``two thirds``,
   ``three quarters`` (``last quarter`` -> 0.75, like percentages).
3. **A single bare number** -- ``40``, ``Answer: 70`` -> percent (0..100). Not when it counts seconds, minutes or
   frames, and not when the text holds several different numbers.
4. **Position words** -- ``beginning/start`` 0.0, ``near the beginning/early`` 0.1, ``middle/halfway`` 0.5,
   ``near/towards the end`` 0.9, ``at the (very) end/last frame`` 1.0. Skipped when the answer is a refusal
   ("I'm sorry, I cannot ...") or names more than one of these places ("from beginning to end").

Anything else gives ``None``: empty text, refusals, and byte garbage -- an answer holding undecodable bytes (U+FFFD)
or control characters is rejected whole, since digits inside broken output are not an answer. Parsed values are
clamped to [0, 1] (``150%`` -> 1.0). Signs are not read (``-10%`` reads as 10%).
"""

from __future__ import annotations

import math
import re
import statistics
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

FALLBACK_POSITION = 0.5

_UNITS = {
    "zero": 0,
    "one": 1,
    "two": 2,
    "three": 3,
    "four": 4,
    "five": 5,
    "six": 6,
    "seven": 7,
    "eight": 8,
    "nine": 9,
    "ten": 10,
    "eleven": 11,
    "twelve": 12,
    "thirteen": 13,
    "fourteen": 14,
    "fifteen": 15,
    "sixteen": 16,
    "seventeen": 17,
    "eighteen": 18,
    "nineteen": 19,
}
_TENS = {
    "twenty": 20,
    "thirty": 30,
    "forty": 40,
    "fourty": 40,
    "fifty": 50,
    "sixty": 60,
    "seventy": 70,
    "eighty": 80,
    "ninety": 90,
}
_NUMBER_WORD = "(?:" + "|".join(sorted([*_UNITS, *_TENS, "hundred"], key=len, reverse=True)) + ")"
_NUMBER_WORDS = rf"\b{_NUMBER_WORD}(?:[\s-]+(?:and[\s-]+)?{_NUMBER_WORD})*"
_PERCENT_WORD = r"(?:per\s*cent(?:age)?s?|percent(?:age|ile)?s?|pct)\b"
_NUM = r"(\d+(?:\.\d+)?)"
_RANGE_LINK = r"(?:-|–|—|~|\bto\b|\band\b|\bthrough\b)"

_RE_DIGIT_PERCENT_WORD = re.compile(rf"(\d)(?:st|nd|rd|th)?\s*{_PERCENT_WORD}")
_RE_WORDS_PERCENT = re.compile(rf"({_NUMBER_WORDS})\s*(?:%|{_PERCENT_WORD})")
_RE_RANGE = re.compile(rf"(?<![\d.]){_NUM}\s*%?\s*{_RANGE_LINK}\s*{_NUM}\s*%")
_RE_PERCENT = re.compile(rf"(?<![\d.]){_NUM}\s*%")
_RE_FROM_END = re.compile(r"^\s*(?:from|before|prior\s+to|until)\s+the\s+(?:very\s+)?end")
_RE_LAST_BEFORE = re.compile(
    r"\b(?:last|final|latter|closing|ending|remaining)\s+(?:about\s+|around\s+|approximately\s+|roughly\s+|~\s*)?$"
)
_RE_FRACTION = re.compile(r"(?<![\d.])(\d+)\s*(?:/|\bout\s+of\b)\s*(\d+)(?![\d.])")
_RE_DECIMAL = re.compile(r"(?<![\d.])(0?\.\d+|1\.0*)(?![\d.])")
_RE_FRACTION_WORD = re.compile(
    r"\b(?:(?:(?P<mult>a|one|two|three)[\s-]+|(?P<qual>first|last|final|latter|closing|opening)\s+)"
    r"(?P<part>thirds?|quarters?|fourths?)|(?P<half>half(?:[\s-]?way)?))\b"
)
_RE_BARE_NUMBER = re.compile(
    r"(?<![\w.])(\d+(?:\.\d+)?)\b(?![\w.]*\d)"
    r"(?!\s*(?:s\b|secs?\b|seconds?\b|mins?\b|minutes?\b|frames?\b|fps\b|hours?\b|h\b|x\b))"
)
_RE_FRAME_BEFORE = re.compile(r"\b(?:frame|second|minute|sec|min)s?\s*(?:#|no\.?|number)?\s*$")
_RE_REFUSAL = re.compile(
    r"\b(?:sorry|cannot|can't|can not|unable|not able|as an ai|i don't know|do not know|don't have access|"
    r"not possible|impossible to|no way to)\b"
)
# Position words: (pattern, value); the first matching group of each place counts, checked most specific first.
_PLACES: tuple[tuple[str, float, re.Pattern[str]], ...] = tuple(
    (place, value, re.compile(pattern))
    for place, value, pattern in (
        ("near_end", 0.9, r"\b(?:near|towards?|close\s+to|approaching)\s+the\s+(?:very\s+)?end\b|\blate\s+in\b"),
        (
            "near_start",
            0.1,
            r"\b(?:near|towards?|close\s+to|shortly\s+after)\s+the\s+(?:very\s+)?(?:beginning|start)\b",
        ),
        ("near_start", 0.1, r"\bearly\s+(?:in|on|part|stage|portion|section)\b"),
        ("end", 1.0, r"\b(?:at|in|by)\s+the\s+(?:very\s+)?end\b|\bend\s+of\s+the\s+(?:video|clip)\b"),
        ("end", 1.0, r"\b(?:last|final|closing|ending)\s+(?:frame|moment|scene|part|segment|section|seconds?)\b"),
        ("end", 1.0, r"\bthe\s+(?:very\s+)?end\b"),
        ("start", 0.0, r"\b(?:at|in|from)\s+the\s+(?:very\s+)?(?:beginning|start|outset)\b"),
        ("start", 0.0, r"\b(?:first|opening|initial)\s+(?:frame|moment|scene|part|segment|section|seconds?)\b"),
        ("start", 0.0, r"\bthe\s+(?:very\s+)?(?:beginning|start)\b"),
        ("middle", 0.5, r"\b(?:middle|midway|mid-?point|halfway|half\s+way|cent(?:er|re))\b"),
    )
)


def _words_to_int(words: str) -> int | None:
    """ "forty-five" -> 45, "one hundred" -> 100; None if the words do not form a number up to 100."""
    total = 0
    for word in re.split(r"[\s-]+", words):
        if word == "and" or not word:
            continue
        if word == "hundred":
            total = (total or 1) * 100
        elif word in _TENS:
            total += _TENS[word]
        elif word in _UNITS:
            total += _UNITS[word]
        else:
            return None
    return total if total <= 100 else None


def _normalise(answer: str) -> str:
    text = unicodedata.normalize("NFKC", answer).lower()
    text = text.replace("\u2212", "-")
    text = _RE_DIGIT_PERCENT_WORD.sub(r"\1%", text)

    def words(match: re.Match[str]) -> str:
        value = _words_to_int(match.group(1))
        return match.group(0) if value is None else f"{value}%"

    return _RE_WORDS_PERCENT.sub(words, text)


def _collapse_ranges(text: str) -> str:
    def midpoint(match: re.Match[str]) -> str:
        low, high = sorted((float(match.group(1)), float(match.group(2))))
        if low <= 0 and high >= 100:
            return " "  # "between 0% and 100%": the question echoed back, no position in it
        return f"{(low + high) / 2:g}%"

    return _RE_RANGE.sub(midpoint, text)


def _percent_values(text: str) -> list[float]:
    values = []
    for match in _RE_PERCENT.finditer(text):
        percent = float(match.group(1))
        before = text[max(0, match.start() - 40) : match.start()]
        after = text[match.end() : match.end() + 40]
        if _RE_LAST_BEFORE.search(before) or _RE_FROM_END.match(after):
            percent = 100.0 - percent  # in percent units, so "last 90%" is exactly 0.1, not 0.0999...
        values.append(percent / 100.0)
    return values


def _combine(values: Sequence[float]) -> float | None:
    """One or two readings -> their mean; three or more different readings are ambiguous."""
    if not values:
        return None
    distinct = list({round(v, 9): v for v in values}.values())
    if len(distinct) > 2:
        return None
    return sum(distinct) / len(distinct)


def _fraction_values(text: str) -> list[float]:
    values = []
    for match in _RE_FRACTION.finditer(text):
        numerator, denominator = int(match.group(1)), int(match.group(2))
        if denominator > 0 and numerator <= denominator:
            values.append(numerator / denominator)
    for match in _RE_DECIMAL.finditer(text):
        values.append(float(match.group(1)))
    for match in _RE_FRACTION_WORD.finditer(text):
        if match.group("half"):
            values.append(0.5)  # "first/second/last half" also read 0.5: the boundary, like "last 50%"
            continue
        count = {"a": 1, "one": 1, "two": 2, "three": 3}.get(match.group("mult") or "", 1)
        part = 3 if match.group("part").startswith("third") else 4
        if count >= part:
            continue
        value = count / part
        if match.group("qual") in ("last", "final", "latter", "closing"):
            value = 1.0 - value
        values.append(value)
    return values


def _bare_number(text: str) -> float | None:
    numbers = []
    for match in _RE_BARE_NUMBER.finditer(text):
        if _RE_FRAME_BEFORE.search(text[max(0, match.start() - 20) : match.start()]):
            return None  # "frame 12", "second 3": not a position in percent
        numbers.append(float(match.group(1)))
    if len(set(numbers)) != 1 or len(re.findall(r"\d+(?:\.\d+)?", text)) != len(numbers):
        return None
    value = numbers[0]
    return value / 100.0 if value <= 100 else None


def _place(text: str) -> float | None:
    if _RE_REFUSAL.search(text):
        return None
    found: dict[str, float] = {}
    masked = text
    for place, value, pattern in _PLACES:
        if pattern.search(masked):
            found.setdefault(place, value)
            masked = pattern.sub(" ", masked)  # "near the end" must not also count as "the end"
    if len(found) != 1:
        return None
    return next(iter(found.values()))


def _looks_like_byte_garbage(answer: str) -> bool:
    """Undecodable bytes (U+FFFD) or control characters: broken decoding, not an answer to read numbers from."""
    return any(ch == "\ufffd" or (unicodedata.category(ch) == "Cc" and ch not in "\t\n\r") for ch in answer)


def parse_percentage(answer: object) -> float | None:
    """The position in [0, 1] that one answer names, or None if it names none (see module docstring)."""
    if not isinstance(answer, str) or not answer.strip() or _looks_like_byte_garbage(answer):
        return None
    text = _collapse_ranges(_normalise(answer))
    if _RE_PERCENT.search(text):
        # percentages outrank every weaker reading, even when they are ambiguous
        value = _combine(_percent_values(text))
        return None if value is None else clamp01(value)
    fractions = _fraction_values(text)
    if fractions:
        value = _combine(fractions)
        return None if value is None else clamp01(value)
    value = _bare_number(text)
    if value is not None:
        return clamp01(value)
    return _place(text)


def clamp01(value: float) -> float:
    if math.isnan(value):
        raise ValueError("position is NaN")
    return min(1.0, max(0.0, float(value)))


@dataclass
class PositionEstimate:
    """The averaged answer: ``position`` in [0, 1] plus how much the K answers agreed."""

    position: float
    parsed: list[float | None] = field(default_factory=list)  # one entry per answer, None = not parsed
    spread: float = 0.0  # population standard deviation of the parsed values (0 .. 0.5)
    confidence: float = 0.0  # parsed fraction x (1 - 2 * spread); 0 when nothing parsed

    @property
    def parsed_count(self) -> int:
        return sum(value is not None for value in self.parsed)


def aggregate_answers(answers: Iterable[object]) -> PositionEstimate:
    """Parse every answer and average the parsed positions (``FALLBACK_POSITION`` when none parse)."""
    parsed = [parse_percentage(answer) for answer in answers]
    return aggregate_positions(parsed)


def aggregate_positions(parsed: Sequence[float | None]) -> PositionEstimate:
    """Mean of the non-None values, clamped to [0, 1]; spread and confidence as in ``PositionEstimate``."""
    values = [clamp01(v) for v in parsed if v is not None]
    if not values:
        return PositionEstimate(position=FALLBACK_POSITION, parsed=list(parsed), spread=0.0, confidence=0.0)
    mean = statistics.fmean(values)
    spread = statistics.pstdev(values)  # exact arithmetic: identical answers give exactly 0
    confidence = (len(values) / len(parsed)) * max(0.0, 1.0 - 2.0 * spread)
    return PositionEstimate(position=clamp01(mean), parsed=list(parsed), spread=spread, confidence=confidence)


def position_to_index(position: float, num_frames: int) -> int:
    """VISA's mapping of a position in [0, 1] to a frame of a ``num_frames`` window: ``min(int(T*p), T-1)``."""
    if num_frames < 1:
        raise ValueError(f"need at least one frame, got {num_frames}")
    return min(int(num_frames * clamp01(position)), num_frames - 1)
