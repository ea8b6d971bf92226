"""End-to-end speech input over real ROS 2: espeak-ng speech in a WAV -> ``reasonvos publish-wav`` (one process)
-> ``reasonvos_speech_node`` (another process) -> ``Instruction`` received here.

One speech node (wake phrase "robot", target "left_arm") serves the whole module. Every run gets its own
``ROS_DOMAIN_ID`` and topic names, localhost-only discovery and a log folder under tmp; the node is stopped with
SIGINT so Fast DDS removes its shared-memory files.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from scipy.signal import resample_poly

pytest.importorskip("rclpy", reason="needs rclpy (ros-jazzy-rclpy) and the built reasonvos_ros interfaces")

import rclpy
from rclpy.executors import SingleThreadedExecutor
from rclpy.qos import QoSProfile, ReliabilityPolicy
from std_srvs.srv import SetBool

from reasonvos_ros.msg import AudioChunk, Instruction
from reasonvos_ros.speech.audio import FORMAT_F32LE, FORMAT_S16LE
from reasonvos_ros.speech.wavfile import read_wav, write_wav

pytestmark = pytest.mark.ros

REPO = Path(__file__).resolve().parents[1]
TARGET = "left_arm"
LEAD_S = 0.5


def espeak(path: Path, text: str) -> Path:
    if shutil.which("espeak-ng") is None:
        pytest.fail("espeak-ng is not installed (apt-get install espeak-ng; tools/setup.sh installs it)")
    subprocess.run(["espeak-ng", "-w", str(path), text], check=True, capture_output=True)
    return path


def words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9']+", text.lower())


def word_error_rate(reference: str, hypothesis: str) -> float:
    ref, hyp = words(reference), words(hypothesis)
    distances = list(range(len(hyp) + 1))
    for i, ref_word in enumerate(ref, 1):
        previous, distances = distances, [i] + [0] * len(hyp)
        for j, hyp_word in enumerate(hyp, 1):
            distances[j] = min(previous[j] + 1, distances[j - 1] + 1, previous[j - 1] + (ref_word != hyp_word))
    return distances[-1] / max(len(ref), 1)


class Harness:
    """The speech node process plus, in this process, an instruction/audio listener and an audio publisher."""

    def __init__(self, tmp: Path):
        self.tmp = tmp
        tag = f"speech_test_{os.getpid()}"
        self.audio_topic, self.instruction_topic = f"/{tag}/audio", f"/{tag}/instruction"
        self.env = dict(
            os.environ,
            ROS_DOMAIN_ID=str(1 + os.getpid() % 100),
            ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST",
            AMENT_PREFIX_PATH=os.environ.get("VIRTUAL_ENV", sys.prefix),
            ROS_LOG_DIR=str(tmp / "ros_log"),
            RCUTILS_LOGGING_BUFFERED_STREAM="0",
            PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
        )
        self.log_path = tmp / "speech_node.log"
        self.instructions: list[tuple[Instruction, float]] = []
        self.audio_stamps: list[float] = []
        self.lock = threading.Lock()

    def start(self) -> None:
        self._saved_env = {
            k: os.environ.get(k) for k in ("ROS_DOMAIN_ID", "ROS_AUTOMATIC_DISCOVERY_RANGE", "ROS_LOG_DIR")
        }
        for key in self._saved_env:
            os.environ[key] = self.env[key]
        self.node_process = subprocess.Popen(
            [sys.executable, "-m", "reasonvos_ros.ros.speech_node", "--ros-args"]
            + [
                arg
                for name, value in {
                    "audio_topic": self.audio_topic,
                    "instruction_topic": self.instruction_topic,
                    "target_id": TARGET,
                    "wake_phrase": "robot",
                    "cpu_threads": "2",
                }.items()
                for arg in ("-p", f"{name}:={value}")
            ],
            env=self.env,
            cwd=REPO,
            stdout=self.log_path.open("w"),
            stderr=subprocess.STDOUT,
        )
        self.context = rclpy.Context()
        rclpy.init(context=self.context)
        self.node = rclpy.create_node("speech_test_listener", context=self.context)
        self.node.create_subscription(Instruction, self.instruction_topic, self._on_instruction, 10)
        self.node.create_subscription(
            AudioChunk,
            self.audio_topic,
            self._on_audio,
            QoSProfile(depth=200, reliability=ReliabilityPolicy.BEST_EFFORT),
        )
        self.audio_pub = self.node.create_publisher(AudioChunk, self.audio_topic, 50)
        self.listen_client = self.node.create_client(SetBool, "/reasonvos_speech_node/listen")
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self.spin_thread = threading.Thread(target=self.executor.spin, daemon=True)
        self.spin_thread.start()
        deadline = time.monotonic() + 90
        while not (self.node.count_publishers(self.instruction_topic) and self.audio_pub.get_subscription_count() >= 1):
            if self.node_process.poll() is not None:
                pytest.fail(f"speech node exited with {self.node_process.returncode}:\n{self.log()}")
            if time.monotonic() > deadline:
                pytest.fail(f"speech node not ready after 90 s:\n{self.log()}")
            time.sleep(0.1)

    def stop(self) -> None:
        self.executor.shutdown()
        self.node.destroy_node()
        rclpy.try_shutdown(context=self.context)
        if self.node_process.poll() is None:
            self.node_process.send_signal(signal.SIGINT)
            try:
                self.node_process.wait(15)
            except subprocess.TimeoutExpired:
                self.node_process.kill()
                self.node_process.wait()
        for key, value in self._saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def _on_instruction(self, msg: Instruction) -> None:
        with self.lock:
            self.instructions.append((msg, time.time()))

    def _on_audio(self, msg: AudioChunk) -> None:
        with self.lock:
            self.audio_stamps.append(msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9)

    def clear(self) -> None:
        with self.lock:
            self.instructions.clear()
            self.audio_stamps.clear()

    def publish_wav(self, path: Path, *extra: str) -> None:
        command = [sys.executable, "-m", "reasonvos_ros.cli", "publish-wav", str(path), "--topic", self.audio_topic]
        result = subprocess.run(
            # Two subscribers: the speech node and this test's audio listener (which reads the chunk stamps).
            [*command, "--lead-silence", str(LEAD_S), "--trail-silence", "0.8", "--min-subscribers", "2", *extra],
            env=self.env,
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 0, result.stdout + result.stderr

    def wait_instructions(self, count: int, timeout: float = 20.0) -> list[tuple[Instruction, float]]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if len(self.instructions) >= count:
                    return list(self.instructions)
            time.sleep(0.05)
        with self.lock:
            return list(self.instructions)

    def wait_log(self, pattern: str, count: int = 1, timeout: float = 20.0) -> int:
        deadline = time.monotonic() + timeout
        while True:
            found = len(re.findall(pattern, self.log()))
            if found >= count or time.monotonic() >= deadline:
                return found
            time.sleep(0.05)


@pytest.fixture(scope="module")
def harness(tmp_path_factory):
    h = Harness(tmp_path_factory.mktemp("speech_ros"))
    h.start()
    yield h
    h.stop()


@pytest.fixture(scope="module")
def wavs(tmp_path_factory):
    """Commands that Whisper tiny.en transcribes reliably from espeak-ng's voice, and two negatives."""
    folder = tmp_path_factory.mktemp("speech_wavs")
    paths = {
        "follow": espeak(folder / "follow.wav", "robot, follow the person in the red shirt"),
        "phone": espeak(folder / "phone.wav", "robot, give me the black phone"),
    }
    # 44.1 kHz stereo float version of another command (the left channel louder than the right).
    bottle = read_wav(espeak(folder / "bottle22k.wav", "robot, bring me the blue bottle"))
    mono44 = resample_poly(bottle.samples[:, 0], 44100, bottle.sample_rate).astype(np.float32)
    write_wav(folder / "bottle44k.wav", np.stack([0.9 * mono44, 0.6 * mono44], axis=1), 44100, FORMAT_F32LE)
    paths["bottle44k"] = folder / "bottle44k.wav"
    # White noise, silence, then a sentence without the wake phrase, in one file.
    weather = read_wav(espeak(folder / "weather22k.wav", "what is the weather like today"))
    noise = np.random.default_rng(5).normal(0, 0.1, 2 * weather.sample_rate).astype(np.float32)
    gap = np.zeros(weather.sample_rate, np.float32)
    write_wav(folder / "negatives.wav", np.concatenate([noise, gap, weather.samples[:, 0]]), weather.sample_rate)
    paths["negatives"] = folder / "negatives.wav"
    return paths


def assert_transcript(received: str, expected: str) -> None:
    # Whisper tiny.en is exact on these sentences here; one word in five may differ on other CPUs' int8 kernels.
    assert word_error_rate(expected, received) <= 0.2, f"{received!r} != {expected!r}"


def test_spoken_instruction_reaches_the_instruction_topic(harness, wavs):
    harness.clear()
    harness.publish_wav(wavs["follow"])  # real-time pace
    received = harness.wait_instructions(1)
    assert len(received) == 1, harness.log()
    msg, _ = received[0]
    assert msg.target_id == TARGET
    assert msg.source == Instruction.SOURCE_SPEECH
    assert words(msg.text)[0] == "follow"  # the wake phrase is stripped
    assert_transcript(msg.text, "follow the person in the red shirt")
    # The stamp is the end of speech in the microphone's clock: first chunk stamp + lead silence + speech end.
    wav = read_wav(wavs["follow"])
    speech_end_s = (np.flatnonzero(np.abs(wav.samples[:, 0]) > 0.01)[-1] + 1) / wav.sample_rate
    with harness.lock:
        first_stamp = harness.audio_stamps[0]
    stamp = msg.stamp.sec + msg.stamp.nanosec * 1e-9
    assert stamp == pytest.approx(first_stamp + LEAD_S + speech_end_s, abs=0.1)


def test_44k_stereo_float_audio_is_converted(harness, wavs):
    harness.clear()
    harness.publish_wav(wavs["bottle44k"], "--speed", "4")
    received = harness.wait_instructions(1)
    assert len(received) == 1, harness.log()
    assert received[0][0].target_id == TARGET
    assert_transcript(received[0][0].text, "bring me the blue bottle")


def test_noise_silence_and_speech_without_wake_phrase_give_no_instruction(harness, wavs):
    harness.clear()
    ignored_before = harness.wait_log(r"ignored utterance", timeout=0)
    harness.publish_wav(wavs["negatives"], "--speed", "4")
    # Once the unwoken sentence has been ignored, the noise before it has been handled too (the transcription
    # worker is first-in first-out), and it must not even have made an utterance.
    assert harness.wait_log(r"ignored utterance 'What is the weather", timeout=20) == 1, harness.log()
    assert harness.wait_log(r"ignored utterance", timeout=0) == ignored_before + 1, harness.log()
    time.sleep(0.3)
    assert harness.wait_instructions(1, timeout=0) == []


def test_bad_chunks_are_dropped_with_rate_limited_warnings(harness, wavs):
    harness.clear()
    bad = [
        (16000, 1, FORMAT_S16LE, b"\x00\x01\x02"),  # odd byte count
        (16000, 1, 9, b"\x00\x00"),  # unknown format
        (0, 1, FORMAT_S16LE, b"\x00\x00"),  # zero sample rate
        (16000, 0, FORMAT_S16LE, b"\x00\x00"),  # zero channels
    ]
    for _ in range(10):
        for rate, channels, sample_format, data in bad:
            msg = AudioChunk(sample_rate=rate, channels=channels, sample_format=sample_format)
            msg.data = data
            harness.audio_pub.publish(msg)
        time.sleep(0.02)
    # No trailing silence: the VAD never sees the utterance end, the node's stream timeout has to close it.
    harness.publish_wav(wavs["phone"], "--speed", "4", "--trail-silence", "0")
    received = harness.wait_instructions(1)
    assert len(received) == 1, harness.log()
    assert_transcript(received[0][0].text, "give me the black phone")
    assert harness.node_process.poll() is None
    warnings = re.findall(r"dropping audio chunk", harness.log())
    assert 1 <= len(warnings) <= 2, harness.log()  # 40 bad chunks within a second: throttled to one line per 5 s


def test_listen_service_mutes_the_microphone(harness, wavs):
    assert harness.listen_client.wait_for_service(timeout_sec=10)

    def listen(on: bool) -> str:
        future = harness.listen_client.call_async(SetBool.Request(data=on))
        deadline = time.monotonic() + 10
        while not future.done() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert future.done() and future.result().success
        return future.result().message

    harness.clear()
    streams_before = harness.wait_log(r"receiving audio", timeout=0)
    assert listen(False).startswith("stopped listening")
    harness.publish_wav(wavs["phone"], "--speed", "4")
    assert harness.wait_instructions(1, timeout=2.0) == []
    assert harness.wait_log(r"receiving audio", timeout=0) == streams_before  # the chunks were not even decoded
    assert listen(True) == "listening"


def test_node_stops_cleanly_on_sigint(harness):
    harness.node_process.send_signal(signal.SIGINT)
    assert harness.node_process.wait(15) == 0, harness.log()
