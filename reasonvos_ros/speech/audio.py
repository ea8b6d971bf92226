"""Raw audio chunks -> float32 mono at 16 kHz: byte decoding, down-mixing and streaming resampling.

Everything here works on plain bytes and numpy arrays (no ROS), so the speech node stays a thin adapter and the
conversions are unit-testable. Malformed chunks raise ``AudioFormatError`` with a message that says what is wrong;
the node logs those (rate-limited) and drops the chunk.
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np

# The values of AudioChunk.FORMAT_* (msg/AudioChunk.msg); duplicated so this module needs no generated messages.
FORMAT_S16LE = 0
FORMAT_F32LE = 1
FORMAT_NAMES = {FORMAT_S16LE: "S16LE", FORMAT_F32LE: "F32LE"}
_BYTES_PER_SAMPLE = {FORMAT_S16LE: 2, FORMAT_F32LE: 4}

# Whisper and Silero VAD both work on 16 kHz mono.
TARGET_SAMPLE_RATE = 16000

# Refuse absurd rates early: they are almost always a mis-filled message, and a huge ratio would make the
# polyphase filter enormous.
MIN_SAMPLE_RATE = 1000
MAX_SAMPLE_RATE = 384000


class AudioFormatError(ValueError):
    """An audio chunk cannot be decoded (unknown format, inconsistent byte count, bad rate or channel count)."""


def decode_chunk(
    data: bytes | bytearray | memoryview, sample_rate: int, channels: int, sample_format: int
) -> np.ndarray:
    """Decode interleaved little-endian PCM bytes into a float32 mono signal in [-1, 1].

    Channels are averaged (down-mix). Raises ``AudioFormatError`` for an unknown ``sample_format``, a zero or
    implausible ``sample_rate``, zero ``channels``, a byte count that is not a whole number of frames, or
    non-finite float samples.
    """
    if sample_format not in _BYTES_PER_SAMPLE:
        known = ", ".join(f"{code} ({name})" for code, name in FORMAT_NAMES.items())
        raise AudioFormatError(f"unknown sample_format {sample_format}; expected one of {known}")
    if not MIN_SAMPLE_RATE <= sample_rate <= MAX_SAMPLE_RATE:
        raise AudioFormatError(
            f"sample_rate {sample_rate} Hz is outside the supported {MIN_SAMPLE_RATE}..{MAX_SAMPLE_RATE} Hz"
        )
    if channels < 1:
        raise AudioFormatError(f"channels must be >= 1, got {channels}")
    frame_bytes = _BYTES_PER_SAMPLE[sample_format] * channels
    if len(data) % frame_bytes:
        raise AudioFormatError(
            f"{len(data)} bytes is not a whole number of {FORMAT_NAMES[sample_format]} frames with {channels} "
            f"channel(s) ({frame_bytes} bytes per frame)"
        )
    if sample_format == FORMAT_S16LE:
        samples = np.frombuffer(data, dtype="<i2").astype(np.float32) / 32768.0
    else:
        samples = np.frombuffer(data, dtype="<f4").astype(np.float32)
        if not np.isfinite(samples).all():
            raise AudioFormatError("F32LE chunk contains NaN or infinite samples")
        samples = np.clip(samples, -1.0, 1.0)
    if channels > 1:
        samples = samples.reshape(-1, channels).mean(axis=1, dtype=np.float32)
    return samples


def encode_chunk(samples: np.ndarray, sample_format: int) -> bytes:
    """Encode float samples in [-1, 1] (shape (frames,) or (frames, channels)) as interleaved PCM bytes."""
    samples = np.asarray(samples, dtype=np.float32)
    if sample_format == FORMAT_S16LE:
        return np.round(np.clip(samples, -1.0, 32767 / 32768) * 32768.0).astype("<i2").tobytes()
    if sample_format == FORMAT_F32LE:
        return np.clip(samples, -1.0, 1.0).astype("<f4").tobytes()
    raise AudioFormatError(f"unknown sample_format {sample_format}")


class StreamingResampler:
    """Polyphase resampling of a stream that arrives in arbitrary chunks, identical to resampling it in one go.

    ``scipy.signal.resample_poly`` on each chunk alone would put filter edge effects (clicks) at every chunk
    boundary. Instead the input is kept with enough context on both sides of the filter: shifting the input by a
    multiple of ``down`` samples shifts the output by exactly ``up`` samples, so blocks that start on such
    multiples can be computed separately and concatenated. The price is a delay of a few dozen input samples
    (the filter's half length), released by ``flush()`` at the end of a stream.
    """

    def __init__(self, input_rate: int, output_rate: int = TARGET_SAMPLE_RATE):
        # Imported here: scipy.signal takes seconds to import, and decoding/encoding (e.g. the WAV publisher)
        # does not need it.
        from scipy.signal import firwin, resample_poly

        if input_rate <= 0 or output_rate <= 0:
            raise ValueError(f"sample rates must be positive, got {input_rate} -> {output_rate}")
        ratio = Fraction(output_rate, input_rate)
        self.input_rate = input_rate
        self.output_rate = output_rate
        self.up, self.down = ratio.numerator, ratio.denominator
        self._resample_poly = resample_poly
        # resample_poly's own default filter, designed once: re-designing it on every chunk (thousands of taps for
        # 44.1 kHz -> 16 kHz) cost more than the filtering itself.
        max_rate = max(self.up, self.down)
        if max_rate > 1:
            self._filter = firwin(2 * 10 * max_rate + 1, 1.0 / max_rate, window=("kaiser", 5.0)).astype(np.float32)
        # resample_poly's default filter spans 10 * max(up, down) upsampled samples each side of its centre.
        half_len_input = math.ceil(10 * max(self.up, self.down) / self.up) + 1
        self._context = math.ceil(half_len_input / self.down) * self.down
        self._history = np.zeros(0, dtype=np.float32)
        self._history_start = 0  # absolute input index of _history[0]; always a multiple of down
        self._next_input = 0  # absolute input index (multiple of down) of the first output not yet emitted

    @property
    def passthrough(self) -> bool:
        return self.up == self.down == 1

    def push(self, samples: np.ndarray) -> np.ndarray:
        """Feed input samples; returns the output samples that are final so far (possibly none)."""
        samples = np.asarray(samples, dtype=np.float32)
        if self.passthrough:
            return samples
        self._history = np.concatenate([self._history, samples])
        available_end = self._history_start + len(self._history)
        safe_end = (available_end - self._context) // self.down * self.down
        if safe_end <= self._next_input:
            return np.zeros(0, dtype=np.float32)
        return self._emit(safe_end, available_end)

    def flush(self) -> np.ndarray:
        """Emit the held-back tail (as if the stream ended with silence) and start a new stream."""
        if self.passthrough:
            return np.zeros(0, dtype=np.float32)
        available_end = self._history_start + len(self._history)
        out = self._emit(available_end, available_end) if available_end > self._next_input else np.zeros(0, np.float32)
        self._history = np.zeros(0, dtype=np.float32)
        self._history_start = self._next_input = 0
        return out

    def _emit(self, emit_end: int, input_end: int) -> np.ndarray:
        block_start = max(self._history_start, self._next_input - self._context)
        block = self._history[block_start - self._history_start : input_end - self._history_start]
        resampled = self._resample_poly(block, self.up, self.down, window=self._filter).astype(np.float32)
        first = (self._next_input - block_start) * self.up // self.down
        if emit_end == input_end:  # end of stream: everything up to the (zero-padded) end is final
            out = resampled[first:]
        else:
            out = resampled[first : (emit_end - block_start) * self.up // self.down]
        self._next_input = emit_end
        keep_from = max(self._history_start, emit_end - self._context)
        keep_from -= (keep_from - self._history_start) % self.down
        self._history = self._history[keep_from - self._history_start :]
        self._history_start = keep_from
        return out
