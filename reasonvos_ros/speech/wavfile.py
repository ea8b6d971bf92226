"""WAV files as audio-chunk payloads (for the WAV publisher, tests and benchmarks).

``scipy.io.wavfile`` reads PCM 8/16/24/32-bit and float WAVs; 16-bit files are published as S16LE unchanged,
everything else as F32LE.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.io import wavfile

from .audio import FORMAT_F32LE, FORMAT_S16LE, encode_chunk


@dataclass(frozen=True)
class WavAudio:
    samples: np.ndarray  # float32 in [-1, 1], shape (frames, channels)
    sample_rate: int
    sample_format: int  # the chunk format that represents the file without loss (FORMAT_S16LE or FORMAT_F32LE)

    @property
    def channels(self) -> int:
        return self.samples.shape[1]

    @property
    def duration_s(self) -> float:
        return self.samples.shape[0] / self.sample_rate


def read_wav(path: str | Path) -> WavAudio:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"WAV file not found: {path}")
    try:
        sample_rate, data = wavfile.read(path)
    except ValueError as exc:
        raise ValueError(f"cannot read {path} as a WAV file: {exc}") from exc
    if data.ndim == 1:
        data = data[:, None]
    if data.dtype == np.int16:
        samples, sample_format = data.astype(np.float32) / 32768.0, FORMAT_S16LE
    elif data.dtype == np.uint8:
        samples, sample_format = (data.astype(np.float32) - 128.0) / 128.0, FORMAT_F32LE
    elif data.dtype == np.int32:  # 24- and 32-bit PCM, left-aligned in int32 by scipy
        samples, sample_format = (data.astype(np.float64) / 2**31).astype(np.float32), FORMAT_F32LE
    elif data.dtype.kind == "f":
        samples, sample_format = np.clip(data, -1.0, 1.0).astype(np.float32), FORMAT_F32LE
    else:
        raise ValueError(f"{path}: unsupported WAV sample type {data.dtype}")
    if sample_rate <= 0 or samples.shape[0] == 0:
        raise ValueError(f"{path}: empty WAV or bad sample rate {sample_rate}")
    return WavAudio(samples=samples, sample_rate=int(sample_rate), sample_format=sample_format)


def write_wav(path: str | Path, samples: np.ndarray, sample_rate: int, sample_format: int = FORMAT_S16LE) -> None:
    """Write float samples in [-1, 1] (shape (frames,) or (frames, channels)) as 16-bit PCM or float WAV."""
    samples = np.clip(np.asarray(samples, dtype=np.float32), -1.0, 1.0)
    if sample_format == FORMAT_S16LE:
        wavfile.write(path, sample_rate, np.round(np.clip(samples, -1.0, 32767 / 32768) * 32768.0).astype(np.int16))
    else:
        wavfile.write(path, sample_rate, samples)


def iter_chunks(audio: WavAudio, chunk_frames: int, sample_format: int | None = None) -> Iterator[tuple[int, bytes]]:
    """Yield (first frame index, interleaved chunk bytes) in ``sample_format`` (default: the file's own)."""
    if chunk_frames < 1:
        raise ValueError(f"chunk_frames must be >= 1, got {chunk_frames}")
    sample_format = audio.sample_format if sample_format is None else sample_format
    for start in range(0, audio.samples.shape[0], chunk_frames):
        yield start, encode_chunk(audio.samples[start : start + chunk_frames], sample_format)
