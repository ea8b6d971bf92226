"""Voice-activity detection and streaming segmentation of 16 kHz mono audio into utterances.

Two frame classifiers score 32 ms frames (512 samples) with a speech probability:

* ``SileroVad``: the Silero VAD v6 ONNX model that the faster-whisper package ships in ``faster_whisper/assets``
  (real pretrained weights, offline), run frame by frame with its recurrent state carried between calls; the
  scores equal those of faster-whisper's own whole-file VAD pass on the same audio.
* ``EnergyVad``: a weights-free fallback from frame energy against an adaptive noise floor, gated by the
  zero-crossing rate (broadband noise crosses zero far more often than voiced speech). Cruder: use it only where
  onnxruntime is missing. Known limitation: a steady low-pitched sound that starts abruptly (mains hum, a motor)
  passes as speech until the noise floor catches up; Whisper then usually returns no words for it.

``UtteranceSegmenter`` turns the scores into utterances with hysteresis (start at ``threshold``, count silence
below ``neg_threshold``), a hangover (``min_silence_ms`` of silence ends an utterance), padding on both sides,
a minimum speech length and a maximum utterance length.
"""

from __future__ import annotations

import collections
import functools
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from ..core.errors import BackendUnavailable, ConfigError

SAMPLE_RATE = 16000
FRAME_SAMPLES = 512  # Silero's window at 16 kHz (32 ms)
_SILERO_CONTEXT = 64  # samples of the previous window that Silero v5/v6 prepend to each window


class FrameClassifier(Protocol):
    def __call__(self, frame: np.ndarray) -> float:
        """Speech probability in [0, 1] of one FRAME_SAMPLES-long float32 frame."""

    def reset(self) -> None:
        """Forget the stream so far (start of a new, unrelated stream)."""


def silero_model_path() -> Path:
    """Path of the Silero VAD ONNX model shipped inside the installed faster-whisper package."""
    try:
        from faster_whisper.utils import get_assets_path
    except ImportError as exc:
        raise BackendUnavailable(
            "the Silero VAD needs the Python package 'faster-whisper' (pip install 'faster-whisper>=1.0'), "
            "which ships the model; or set the VAD backend to 'energy'"
        ) from exc
    assets = Path(get_assets_path())
    candidates = sorted(assets.glob("silero_vad*.onnx"))
    if not candidates:
        raise BackendUnavailable(f"no silero_vad*.onnx in faster-whisper's assets folder {assets}")
    return candidates[-1]


@functools.lru_cache(maxsize=4)
def _silero_session(path: str):
    try:
        import onnxruntime
    except ImportError as exc:
        raise BackendUnavailable(
            "the Silero VAD needs the Python package 'onnxruntime' (pip install onnxruntime); "
            "or set the VAD backend to 'energy'"
        ) from exc
    options = onnxruntime.SessionOptions()
    # One frame is a tiny matrix product: extra threads only add contention with the transcriber.
    options.inter_op_num_threads = 1
    options.intra_op_num_threads = 1
    options.log_severity_level = 4
    return onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"], sess_options=options)


class SileroVad:
    """Streaming Silero VAD (v5/v6 ONNX interface: input [n, 64 + 512], recurrent state h and c)."""

    def __init__(self, model_path: str | Path | None = None):
        path = Path(model_path) if model_path else silero_model_path()
        if not path.is_file():
            raise BackendUnavailable(f"Silero VAD model file not found: {path}")
        self._session = _silero_session(str(path))
        input_names = {i.name for i in self._session.get_inputs()}
        if not {"input", "h", "c"} <= input_names:
            raise BackendUnavailable(
                f"{path} is not a Silero VAD v5/v6 model (inputs {sorted(input_names)}, expected input, h, c)"
            )
        self.reset()

    def reset(self) -> None:
        self._h = np.zeros((1, 1, 128), dtype=np.float32)
        self._c = np.zeros((1, 1, 128), dtype=np.float32)
        self._context = np.zeros(_SILERO_CONTEXT, dtype=np.float32)

    def __call__(self, frame: np.ndarray) -> float:
        window = np.concatenate([self._context, frame.astype(np.float32, copy=False)])[None, :]
        prob, self._h, self._c = self._session.run(None, {"input": window, "h": self._h, "c": self._c})
        self._context = window[0, -_SILERO_CONTEXT:].copy()
        return float(np.asarray(prob).ravel()[0])


class EnergyVad:
    """Weights-free speech score from frame level (dBFS) over an adaptive noise floor, gated by zero crossings.

    ``threshold_db`` is an absolute level below which nothing counts as speech; ``margin_db`` is how far above
    the running noise floor a frame must be; frames whose zero-crossing rate exceeds ``max_zero_crossing_rate``
    (fraction of sample pairs changing sign; white noise ~0.5, voiced speech ~0.02-0.2) score 0.
    """

    def __init__(self, threshold_db: float = -45.0, margin_db: float = 12.0, max_zero_crossing_rate: float = 0.3):
        self.threshold_db = threshold_db
        self.margin_db = margin_db
        self.max_zero_crossing_rate = max_zero_crossing_rate
        self.reset()

    def reset(self) -> None:
        self._noise_floor_db: float | None = None

    def __call__(self, frame: np.ndarray) -> float:
        rms = float(np.sqrt(np.mean(np.square(frame, dtype=np.float64))))
        level_db = 20.0 * math.log10(rms + 1e-9)
        if self._noise_floor_db is None or level_db < self._noise_floor_db:
            self._noise_floor_db = level_db
        else:
            # Rise slowly (~3 s time constant) so that speech itself barely lifts the floor.
            self._noise_floor_db += 0.01 * (level_db - self._noise_floor_db)
        signs = np.signbit(frame)
        zero_crossing_rate = float(np.count_nonzero(signs[1:] != signs[:-1])) / max(len(frame) - 1, 1)
        if zero_crossing_rate > self.max_zero_crossing_rate:
            return 0.0
        required_db = max(self.threshold_db, self._noise_floor_db + self.margin_db)
        # 0.5 exactly at the required level, saturating 3 dB either side.
        return float(np.clip(0.5 + (level_db - required_db) / 6.0, 0.0, 1.0))


def make_vad(backend: str, **options) -> FrameClassifier:
    """Build a frame classifier by name: "silero" (default) or "energy" (options go to EnergyVad)."""
    if backend == "silero":
        return SileroVad(**options)
    if backend == "energy":
        return EnergyVad(**options)
    raise ConfigError(f"unknown VAD backend {backend!r}; expected 'silero' or 'energy'")


@dataclass(frozen=True)
class SegmenterConfig:
    threshold: float = 0.5  # a frame scoring at least this starts (or continues) speech
    neg_threshold: float = 0.35  # during speech, frames below this count as silence (hysteresis band between)
    min_speech_ms: float = 250.0  # shorter bursts (clicks, coughs) are dropped
    min_silence_ms: float = 600.0  # hangover: this much silence ends an utterance
    speech_pad_ms: float = 200.0  # audio kept before the first and after the last speech frame
    max_utterance_s: float = 15.0  # longer speech is cut into pieces of this length

    def validate(self) -> None:
        if not 0.0 < self.threshold <= 1.0:
            raise ConfigError(f"VAD threshold must be in (0, 1], got {self.threshold}")
        if not 0.0 <= self.neg_threshold <= self.threshold:
            raise ConfigError(f"VAD neg_threshold must be in [0, threshold={self.threshold}], got {self.neg_threshold}")
        for name in ("min_speech_ms", "min_silence_ms", "speech_pad_ms"):
            if getattr(self, name) < 0:
                raise ConfigError(f"VAD {name} must be >= 0, got {getattr(self, name)}")
        if self.max_utterance_s <= 0.5:
            raise ConfigError(f"max_utterance_s must be > 0.5 s, got {self.max_utterance_s}")


@dataclass(frozen=True)
class Utterance:
    """A stretch of speech cut from the stream. Sample indices count 16 kHz samples since the segmenter started."""

    audio: np.ndarray  # float32 mono 16 kHz, padding included
    start_sample: int  # index of audio[0]
    speech_start_sample: int  # first sample of the first speech frame
    speech_end_sample: int  # one past the last sample of the last speech frame: "end of utterance"
    truncated: bool = False  # cut at max_utterance_s while speech went on

    @property
    def end_sample(self) -> int:
        return self.start_sample + len(self.audio)

    @property
    def speech_duration_s(self) -> float:
        return (self.speech_end_sample - self.speech_start_sample) / SAMPLE_RATE


class UtteranceSegmenter:
    """Streaming segmentation: ``push()`` 16 kHz samples in chunks of any size, get finished utterances back.

    Results do not depend on how the stream is chunked. ``flush()`` ends the stream (closing an utterance in
    progress, e.g. when the microphone stops sending) and ``reset()`` drops it.
    """

    def __init__(self, classifier: FrameClassifier, config: SegmenterConfig | None = None):
        self.classifier = classifier
        self.config = config or SegmenterConfig()
        self.config.validate()
        ms = SAMPLE_RATE / 1000.0
        self._pad_frames = math.ceil(self.config.speech_pad_ms * ms / FRAME_SAMPLES)
        self._min_speech_samples = self.config.min_speech_ms * ms
        self._min_silence_samples = self.config.min_silence_ms * ms
        self._max_samples = int(self.config.max_utterance_s * SAMPLE_RATE)
        self._pad_samples = int(self.config.speech_pad_ms * ms)
        self.samples_seen = 0  # samples consumed into frames or flushed
        self._partial = np.zeros(0, dtype=np.float32)
        self._preroll: collections.deque[np.ndarray] = collections.deque(maxlen=max(self._pad_frames, 1))
        self._speech_frames: list[np.ndarray] | None = None
        self._start_sample = self._speech_start = self._speech_end = 0
        self.last_probability = 0.0

    @property
    def in_speech(self) -> bool:
        return self._speech_frames is not None

    @property
    def samples_received(self) -> int:
        """All samples pushed so far, including those waiting to complete a frame."""
        return self.samples_seen + len(self._partial)

    def reset(self) -> None:
        """Drop the stream and any utterance in progress (e.g. listening was switched off)."""
        self.samples_seen += len(self._partial)
        self._partial = np.zeros(0, dtype=np.float32)
        self._preroll.clear()
        self._speech_frames = None
        self.classifier.reset()

    def push(self, samples: np.ndarray) -> list[Utterance]:
        samples = np.asarray(samples, dtype=np.float32)
        if self._partial.size:
            samples = np.concatenate([self._partial, samples])
        whole = len(samples) // FRAME_SAMPLES * FRAME_SAMPLES
        self._partial = samples[whole:].copy()
        finished = []
        for offset in range(0, whole, FRAME_SAMPLES):
            utterance = self._step(samples[offset : offset + FRAME_SAMPLES])
            if utterance is not None:
                finished.append(utterance)
        return finished

    def flush(self) -> list[Utterance]:
        """End of stream: close the utterance in progress (if long enough) and start afresh."""
        finished = []
        if self._speech_frames is not None:
            if self._partial.size:
                self._speech_frames.append(self._partial)
            utterance = self._close(truncated=False)
            if utterance is not None:
                finished.append(utterance)
        self.reset()
        return finished

    def _step(self, frame: np.ndarray) -> Utterance | None:
        frame_start = self.samples_seen
        self.samples_seen += FRAME_SAMPLES
        probability = self.classifier(frame)
        self.last_probability = probability
        config = self.config
        if self._speech_frames is None:
            if probability >= config.threshold:
                self._speech_frames = list(self._preroll) if self._pad_frames else []
                self._start_sample = frame_start - sum(len(f) for f in self._speech_frames)
                self._speech_start = frame_start
                self._speech_end = frame_start + FRAME_SAMPLES
                self._speech_frames.append(frame.copy())
                self._preroll.clear()
            else:
                self._preroll.append(frame.copy())
            return None
        self._speech_frames.append(frame.copy())
        if probability >= config.neg_threshold:
            self._speech_end = frame_start + FRAME_SAMPLES
        if self.samples_seen - self._speech_end >= self._min_silence_samples:
            return self._close(truncated=False)
        if self.samples_seen - self._start_sample >= self._max_samples:
            return self._close(truncated=True)
        return None

    def _close(self, truncated: bool) -> Utterance | None:
        frames, self._speech_frames = self._speech_frames, None
        audio = np.concatenate(frames)
        if truncated:
            keep = len(audio)
        else:
            keep = min(len(audio), self._speech_end + self._pad_samples - self._start_sample)
        # The tail after the kept part is silence: it may serve as the next utterance's pre-roll.
        # Frames are taken aligned to the tail's end so that the pre-roll stays contiguous with the next frame.
        tail = audio[keep:]
        for offset in range(len(tail) % FRAME_SAMPLES, len(tail), FRAME_SAMPLES):
            self._preroll.append(tail[offset : offset + FRAME_SAMPLES])
        if self._speech_end - self._speech_start < self._min_speech_samples:
            return None
        return Utterance(
            audio=audio[:keep],
            start_sample=self._start_sample,
            speech_start_sample=self._speech_start,
            speech_end_sample=self._speech_end,
            truncated=truncated,
        )
