"""Speech input benchmark: transcription time alone, front-end cost, and end-to-end latency over ROS 2.

1. ROS-free: Whisper (default model, CPU int8) transcription time of espeak-ng sentences, repeated; the audio
   front end's cost per 20 ms chunk (decode + resample 22.05 -> 16 kHz + Silero VAD) as a real-time factor.
2. ROS (skip with --no-ros): a speech node process, sentences published at real-time pace by
   ``reasonvos publish-wav`` (another process); latency = time the Instruction arrives here - its stamp (the end of
   speech in the microphone clock). It includes the VAD hangover (``--min-silence-ms``), which is printed apart.

Run from the repository root: ``python benchmarks/bench_speech.py [--repeats 3] [--cpu-threads 2] [--no-ros]``.
Numbers depend on the machine's load; the script prints the load average with them.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from reasonvos_ros.speech.audio import encode_chunk  # noqa: E402
from reasonvos_ros.speech.pipeline import AudioFrontEnd  # noqa: E402
from reasonvos_ros.speech.transcriber import WhisperTranscriber  # noqa: E402
from reasonvos_ros.speech.vad import SileroVad, UtteranceSegmenter  # noqa: E402
from reasonvos_ros.speech.wavfile import read_wav  # noqa: E402

SENTENCES = [
    "robot, follow the person in the red shirt",
    "robot, bring me the blue bottle",
    "robot, give me the black phone",
]


def synthesise(folder: Path) -> list[Path]:
    paths = []
    for index, sentence in enumerate(SENTENCES):
        path = folder / f"s{index}.wav"
        subprocess.run(["espeak-ng", "-w", str(path), sentence], check=True, capture_output=True)
        paths.append(path)
    return paths


def utterances_of(path: Path) -> list[np.ndarray]:
    wav = read_wav(path)
    padded = np.concatenate([np.zeros((wav.sample_rate // 2, wav.channels), np.float32), wav.samples])
    padded = np.concatenate([padded, np.zeros((wav.sample_rate, wav.channels), np.float32)])
    front_end = AudioFrontEnd(UtteranceSegmenter(SileroVad()))
    step = wav.sample_rate // 50
    found = []
    for first in range(0, len(padded), step):
        data = encode_chunk(padded[first : first + step], wav.sample_format)
        found += front_end.push(data, wav.sample_rate, wav.channels, wav.sample_format, first / wav.sample_rate, 0.0)
    found += front_end.flush()
    return [item.utterance.audio for item in found]


def bench_transcription(paths: list[Path], repeats: int, cpu_threads: int, beam_size: int) -> None:
    started = time.perf_counter()
    transcriber = WhisperTranscriber(cpu_threads=cpu_threads, beam_size=beam_size)
    print(f"model load: {time.perf_counter() - started:.2f} s ({transcriber.model_dir})")
    print(f"warm-up: {transcriber.warm_up():.2f} s")
    times, audio_total = [], 0.0
    for path in paths:
        for audio in utterances_of(path):
            runs = [transcriber.transcribe(audio) for _ in range(repeats)]
            elapsed = [run.elapsed_s for run in runs]
            times += elapsed
            audio_total += runs[0].audio_s * repeats
            print(
                f"  {runs[0].audio_s:.2f} s utterance -> {runs[0].text!r}: "
                f"median {statistics.median(elapsed):.3f} s, min {min(elapsed):.3f} s over {repeats}"
            )
    print(
        f"transcription (cpu_threads={cpu_threads}, beam={beam_size}): median {statistics.median(times):.3f} s, "
        f"mean {statistics.mean(times):.3f} s per utterance; real-time factor {sum(times) / audio_total:.3f}"
    )


def bench_front_end(path: Path) -> None:
    wav = read_wav(path)
    step = wav.sample_rate // 50
    chunks = [encode_chunk(wav.samples[i : i + step], wav.sample_format) for i in range(0, len(wav.samples), step)]
    front_end = AudioFrontEnd(UtteranceSegmenter(SileroVad()))
    front_end.push(chunks[0], wav.sample_rate, wav.channels, wav.sample_format, 0.0, 0.0)
    started = time.perf_counter()
    for _ in range(5):
        for chunk in chunks:
            front_end.push(chunk, wav.sample_rate, wav.channels, wav.sample_format, 0.0, 0.0)
    elapsed = time.perf_counter() - started
    count = 5 * len(chunks)
    print(
        f"front end ({wav.sample_rate} Hz -> 16 kHz + Silero VAD): {elapsed / count * 1000:.2f} ms per 20 ms chunk "
        f"(real-time factor {elapsed / (count * 0.02):.3f})"
    )


def bench_ros(paths: list[Path], cpu_threads: int, beam_size: int, min_silence_ms: float, tmp: Path) -> None:
    import rclpy
    from rclpy.executors import SingleThreadedExecutor

    from reasonvos_ros.msg import Instruction

    tag = f"bench_speech_{os.getpid()}"
    env = dict(
        os.environ,
        ROS_DOMAIN_ID=str(1 + os.getpid() % 100),
        ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST",
        AMENT_PREFIX_PATH=os.environ.get("VIRTUAL_ENV", sys.prefix),
        ROS_LOG_DIR=str(tmp / "ros_log"),
        PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
    )
    os.environ.update({k: env[k] for k in ("ROS_DOMAIN_ID", "ROS_AUTOMATIC_DISCOVERY_RANGE", "ROS_LOG_DIR")})
    params = {
        "audio_topic": f"/{tag}/audio",
        "instruction_topic": f"/{tag}/instruction",
        "wake_phrase": "robot",
        "cpu_threads": str(cpu_threads),
        "beam_size": str(beam_size),
        "vad_min_silence_ms": str(min_silence_ms),
    }
    args = [arg for name, value in params.items() for arg in ("-p", f"{name}:={value}")]
    log = (tmp / "speech_node.log").open("w")
    started = time.perf_counter()
    node_process = subprocess.Popen(
        [sys.executable, "-m", "reasonvos_ros.ros.speech_node", "--ros-args", *args],
        env=env,
        cwd=REPO,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    context = rclpy.Context()
    rclpy.init(context=context)
    node = rclpy.create_node("bench_speech_listener", context=context)
    arrivals: list[tuple[float, float, str]] = []
    lock = threading.Lock()

    def on_instruction(msg: Instruction) -> None:
        now = time.time()
        with lock:
            arrivals.append((now, msg.stamp.sec + msg.stamp.nanosec * 1e-9, msg.text))

    node.create_subscription(Instruction, params["instruction_topic"], on_instruction, 10)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    threading.Thread(target=executor.spin, daemon=True).start()
    try:
        while not node.count_publishers(params["instruction_topic"]):
            if node_process.poll() is not None or time.perf_counter() - started > 120:
                raise RuntimeError(f"speech node did not start; see {tmp / 'speech_node.log'}")
            time.sleep(0.05)
        print(f"speech node ready after {time.perf_counter() - started:.2f} s (start, model load, warm-up)")
        latencies = []
        for path in paths:
            with lock:
                arrivals.clear()
            command = [sys.executable, "-m", "reasonvos_ros.cli", "publish-wav", str(path)]
            command += ["--topic", params["audio_topic"], "--lead-silence", "0.5", "--trail-silence", "1.5"]
            subprocess.run(command, env=env, cwd=REPO, check=True, capture_output=True)
            deadline = time.time() + 15
            while time.time() < deadline and not arrivals:
                time.sleep(0.02)
            with lock:
                if not arrivals:
                    print(f"  {path.name}: no instruction received")
                    continue
                arrival, stamp, text = arrivals[0]
            latencies.append(arrival - stamp)
            print(f"  {text!r}: end of speech -> instruction received {arrival - stamp:.3f} s")
        if latencies:
            print(
                f"end-to-end latency (end of speech -> Instruction, real-time audio): median "
                f"{statistics.median(latencies):.3f} s, max {max(latencies):.3f} s; of which VAD hangover "
                f"{min_silence_ms / 1000:.3f} s, the rest transcription and transport"
            )
    finally:
        executor.shutdown()
        node.destroy_node()
        rclpy.try_shutdown(context=context)
        node_process.send_signal(2)  # SIGINT: Fast DDS removes its shared-memory files
        node_process.wait(15)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--cpu-threads", type=int, default=2)
    parser.add_argument("--beam-size", type=int, default=1)
    parser.add_argument("--min-silence-ms", type=float, default=600.0, help="VAD hangover of the node")
    parser.add_argument("--no-ros", action="store_true", help="only the ROS-free measurements")
    args = parser.parse_args()
    print(f"load average: {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
    with tempfile.TemporaryDirectory() as folder:
        tmp = Path(folder)
        paths = synthesise(tmp)
        bench_front_end(paths[0])
        bench_transcription(paths, args.repeats, args.cpu_threads, args.beam_size)
        if not args.no_ros:
            bench_ros(paths, args.cpu_threads, args.beam_size, args.min_silence_ms, tmp)
    print(f"load average at the end: {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
