"""Wake phrase handling on transcripts: "robot, pick up the cup" -> "pick up the cup".

The phrase is matched at the start of the transcript, case-insensitively and ignoring punctuation between its
words (Whisper writes "Robot, ..." or "Robot. ..." or "robot ..."), optionally after a greeting such as "hey" or
"okay". Alternatives are separated by "|" (e.g. "robot|robo") to absorb consistent mis-transcriptions of a name.
"""

from __future__ import annotations

import re

from ..core.errors import ConfigError

_GREETINGS = ("hey", "hi", "hello", "ok", "okay", "o\\.k\\.")


class WakePhrase:
    """``extract(text)`` returns the instruction without the wake phrase, or None when the utterance is to be ignored.

    With ``required`` (default), transcripts that do not start with the phrase are ignored; otherwise they pass
    through unchanged. A transcript that is only the wake phrase ("Robot.") is ignored either way: it holds no
    instruction.
    """

    def __init__(self, phrase: str, required: bool = True):
        alternatives = [alt.strip() for alt in phrase.split("|") if alt.strip()]
        word_lists = [re.findall(r"[a-z0-9']+", alt.lower()) for alt in alternatives]
        if not alternatives or not all(word_lists):
            raise ConfigError(f"wake phrase {phrase!r} has no words")
        self.phrase = phrase
        self.required = required
        phrases = "|".join(r"[\W_]+".join(re.escape(word) for word in words) for words in word_lists)
        greeting = "|".join(_GREETINGS)
        self._pattern = re.compile(rf"^[\W_]*(?:(?:{greeting})[\W_]+)?(?:{phrases})\b[\W_]*", re.IGNORECASE)

    def extract(self, text: str) -> str | None:
        match = self._pattern.match(text)
        if match is None:
            return None if self.required else (text.strip() or None)
        rest = text[match.end() :].strip()
        return rest or None
