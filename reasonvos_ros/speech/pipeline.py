"""The speech input pipeline without ROS: audio chunks -> utterances -> instructions.

* ``AudioFrontEnd``: decodes chunks, down-mixes, resamples to 16 kHz (continuously across chunks), segments
  with the VAD and tells each utterance's times in the stream's clock (from the chunk stamps).
* ``SpeechRecognizer``: transcribes an utterance and applies the wake phrase and the "has words" check.
* ``TranscriptionWorker``: runs the recognizer on a background thread, so that audio keeps being consumed
  while an utterance is transcribed (transcription takes about as long as the audio feeding the topic).
"""

from __future__ import annotations

import collections
import contextlib
import logging
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

# Resampling needs scipy.signal, which takes seconds to import; importing it here rather than on the first audio
# chunk keeps a live stream from backing up (and overflowing the subscription queue) at its start.
import scipy.signal  # noqa: F401

from .audio import TARGET_SAMPLE_RATE, StreamingResampler, decode_chunk
from .transcriber import Transcript, WhisperTranscriber
from .vad import Utterance, UtteranceSegmenter
from .wake import WakePhrase

_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TimedUtterance:
    utterance: Utterance
    start_time: float  # seconds in the stream clock (chunk stamps) of the first speech sample
    end_time: float  # ... of the end of speech (the last speech frame): the "end of the utterance"


class AudioFrontEnd:
    """Chunks in any supported format/rate -> utterances at 16 kHz with stream-clock times.

    ``push`` raises ``AudioFormatError`` for a malformed chunk and leaves the stream state untouched. A change of
    sample rate or channel count mid-stream flushes the resampler and goes on with the new format.
    Times: a chunk's ``stamp`` is the time of its first sample; when it is None (unstamped messages) the
    caller's ``receipt_time`` minus the chunk's duration is used.
    """

    def __init__(self, segmenter: UtteranceSegmenter, max_anchor_s: float = 60.0):
        self.segmenter = segmenter
        self._resampler: StreamingResampler | None = None
        self._format: tuple[int, int] | None = None  # (sample_rate, channels)
        self._stream_base = 0  # 16 kHz index where the current resampler's stream starts
        self._stream_inputs = 0  # input samples fed to the current resampler
        self._anchors: collections.deque[tuple[float, float]] = collections.deque()  # (16 kHz index, time)
        self._max_anchor_samples = max_anchor_s * TARGET_SAMPLE_RATE

    def push(
        self,
        data: bytes,
        sample_rate: int,
        channels: int,
        sample_format: int,
        stamp: float | None,
        receipt_time: float,
    ) -> list[TimedUtterance]:
        samples = decode_chunk(data, sample_rate, channels, sample_format)
        finished: list[Utterance] = []
        if self._format != (sample_rate, channels):
            if self._resampler is not None:
                finished += self.segmenter.push(self._resampler.flush())
            self._resampler = StreamingResampler(sample_rate, TARGET_SAMPLE_RATE)
            self._format = (sample_rate, channels)
            self._stream_base = self._output_index()
            self._stream_inputs = 0
        if samples.size == 0:
            return self._timed(finished)
        first_index = self._stream_base + self._stream_inputs * TARGET_SAMPLE_RATE / sample_rate
        if stamp is None:
            stamp = receipt_time - len(samples) / sample_rate
        self._add_anchor(first_index, stamp)
        self._stream_inputs += len(samples)
        finished += self.segmenter.push(self._resampler.push(samples))
        return self._timed(finished)

    def flush(self) -> list[TimedUtterance]:
        """End of stream (the microphone went quiet on the topic): close any utterance in progress."""
        finished: list[Utterance] = []
        if self._resampler is not None:
            finished += self.segmenter.push(self._resampler.flush())
        finished += self.segmenter.flush()
        self._resampler, self._format = None, None
        return self._timed(finished)

    def reset(self) -> None:
        """Drop everything buffered (listening switched off)."""
        self.segmenter.reset()
        self._resampler, self._format = None, None

    def time_of(self, index: float) -> float:
        """Stream-clock time of a 16 kHz sample index (extrapolated from the nearest earlier chunk stamp)."""
        if not self._anchors:
            raise ValueError("no audio received yet")
        anchor_index, anchor_time = self._anchors[0]
        for candidate_index, candidate_time in self._anchors:
            if candidate_index > index:
                break
            anchor_index, anchor_time = candidate_index, candidate_time
        return anchor_time + (index - anchor_index) / TARGET_SAMPLE_RATE

    @property
    def in_speech(self) -> bool:
        return self.segmenter.in_speech

    def _output_index(self) -> int:
        # Everything fed so far, including samples held back by the segmenter or the resampler, counts.
        return self.segmenter.samples_received

    def _add_anchor(self, index: float, stamp: float) -> None:
        self._anchors.append((index, stamp))
        while len(self._anchors) > 1 and index - self._anchors[1][0] > self._max_anchor_samples:
            self._anchors.popleft()

    def _timed(self, utterances: list[Utterance]) -> list[TimedUtterance]:
        return [
            TimedUtterance(u, self.time_of(u.speech_start_sample), self.time_of(u.speech_end_sample))
            for u in utterances
        ]


@dataclass(frozen=True)
class Recognition:
    text: str | None  # the instruction, or None when the utterance is ignored
    transcript: Transcript
    reason: str  # why it was ignored ("" when text is set)


class SpeechRecognizer:
    """Transcript -> instruction text: drops wordless transcripts and applies the optional wake phrase."""

    def __init__(self, transcriber: WhisperTranscriber, wake_phrase: WakePhrase | None = None):
        self.transcriber = transcriber
        self.wake_phrase = wake_phrase

    def recognize(self, audio: np.ndarray) -> Recognition:
        transcript = self.transcriber.transcribe(audio)
        if not transcript.has_words:
            return Recognition(None, transcript, "no words transcribed")
        if self.wake_phrase is None:
            return Recognition(transcript.text, transcript, "")
        text = self.wake_phrase.extract(transcript.text)
        if text is None:
            return Recognition(None, transcript, f"no instruction after wake phrase {self.wake_phrase.phrase!r}")
        return Recognition(text, transcript, "")


class TranscriptionWorker:
    """Background thread: ``submit`` utterances; ``on_result(utterance, recognition)`` is called in order.

    At most ``max_pending`` utterances wait; beyond that the oldest waiting one is dropped (``submit`` returns
    False) since a stale spoken command is worth less than the newest. Errors from the recognizer go to
    ``on_error`` and the thread carries on.
    """

    def __init__(
        self,
        recognizer: SpeechRecognizer,
        on_result: Callable[[TimedUtterance, Recognition], None],
        on_error: Callable[[TimedUtterance, Exception], None] | None = None,
        max_pending: int = 4,
    ):
        self.recognizer = recognizer
        self._on_result = on_result
        self._on_error = on_error
        self._queue: queue.Queue[TimedUtterance | None] = queue.Queue(maxsize=max(max_pending, 1))
        self._thread = threading.Thread(target=self._run, name="speech-transcription", daemon=True)
        self._thread.start()

    def submit(self, item: TimedUtterance) -> bool:
        try:
            self._queue.put_nowait(item)
            return True
        except queue.Full:
            with contextlib.suppress(queue.Empty):
                self._queue.get_nowait()
            self._queue.put_nowait(item)
            return False

    def close(self, timeout: float = 10.0) -> None:
        """Finish the utterances already submitted, then stop the thread."""
        self._queue.put(None)
        self._thread.join(timeout)

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            try:
                recognition = self.recognizer.recognize(item.utterance.audio)
            except Exception as exc:
                if self._on_error is None:
                    _log.exception("speech recognition failed")
                else:
                    self._on_error(item, exc)
                continue
            try:
                self._on_result(item, recognition)
            except Exception:
                _log.exception("speech result callback failed")
