"""Publish a WAV file as ``reasonvos_ros/AudioChunk`` messages at real-time pace (a stand-in microphone).

Used as ``reasonvos publish-wav FILE`` (this module's ``add_arguments`` / ``run``) or ``python -m
reasonvos_ros.ros.wav_publisher FILE``. Each chunk's header stamp is the publishing time of its first sample
on the node's clock, spaced exactly by the audio duration (a drifting sleep does not shift later stamps).
16-bit WAVs go out as S16LE unchanged, others as F32LE (or force one with ``--format``); rate and channel
count are kept as in the file. Optional silence before and after lets a VAD see the utterance end.
"""

from __future__ import annotations

import argparse
import array
import sys
import time

import numpy as np

from reasonvos_ros.speech.audio import FORMAT_F32LE, FORMAT_S16LE
from reasonvos_ros.speech.wavfile import WavAudio, iter_chunks, read_wav

_FORMATS = {"s16le": FORMAT_S16LE, "f32le": FORMAT_F32LE}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("wav", help="WAV file to publish (PCM 8/16/24/32-bit or float, any rate, any channels)")
    parser.add_argument("--topic", default="audio", help="AudioChunk topic (default: %(default)s)")
    parser.add_argument("--frame-id", default="wav", help="header.frame_id of the chunks (default: %(default)s)")
    parser.add_argument("--chunk-ms", type=float, default=20.0, help="audio per message (default: %(default)s ms)")
    parser.add_argument(
        "--speed", type=float, default=1.0, help="1 = real time, 2 = twice as fast, 0 = as fast as possible"
    )
    parser.add_argument("--format", choices=sorted(_FORMATS), help="sample format (default: lossless for the file)")
    parser.add_argument("--lead-silence", type=float, default=0.0, help="seconds of silence before the file")
    parser.add_argument("--trail-silence", type=float, default=0.0, help="seconds of silence after the file")
    parser.add_argument("--repeat", type=int, default=1, help="publish the file this many times in a row")
    parser.add_argument("--reliability", choices=("reliable", "best_effort"), default="reliable")
    parser.add_argument(
        "--wait-subscribers",
        type=float,
        default=5.0,
        help="wait up to this many seconds for --min-subscribers before publishing (default: %(default)s)",
    )
    parser.add_argument("--min-subscribers", type=int, default=1, help="subscribers to wait for (default: 1)")


def with_silence(audio: WavAudio, lead_s: float, trail_s: float, repeat: int = 1) -> WavAudio:
    channels = audio.channels
    lead = np.zeros((round(lead_s * audio.sample_rate), channels), np.float32)
    trail = np.zeros((round(trail_s * audio.sample_rate), channels), np.float32)
    samples = np.concatenate([lead, *([audio.samples] * max(repeat, 1)), trail])
    return WavAudio(samples=samples, sample_rate=audio.sample_rate, sample_format=audio.sample_format)


def run(args: argparse.Namespace) -> int:
    try:
        audio = read_wav(args.wav)
    except (OSError, ValueError) as exc:
        print(f"publish-wav: {exc}", file=sys.stderr)
        return 2
    if args.chunk_ms <= 0 or args.speed < 0:
        print("publish-wav: --chunk-ms must be > 0 and --speed >= 0", file=sys.stderr)
        return 2
    audio = with_silence(audio, args.lead_silence, args.trail_silence, args.repeat)
    sample_format = _FORMATS[args.format] if args.format else audio.sample_format
    chunk_frames = max(1, round(args.chunk_ms * audio.sample_rate / 1000.0))

    import rclpy
    from rclpy.qos import QoSProfile, ReliabilityPolicy

    from reasonvos_ros.msg import AudioChunk

    rclpy.init()
    node = rclpy.create_node("reasonvos_wav_publisher")
    try:
        reliability = ReliabilityPolicy.RELIABLE if args.reliability == "reliable" else ReliabilityPolicy.BEST_EFFORT
        publisher = node.create_publisher(AudioChunk, args.topic, QoSProfile(depth=100, reliability=reliability))
        deadline = time.monotonic() + args.wait_subscribers
        while publisher.get_subscription_count() < args.min_subscribers and time.monotonic() < deadline:
            time.sleep(0.05)
        if publisher.get_subscription_count() < args.min_subscribers:
            node.get_logger().warning(
                f"{publisher.get_subscription_count()} of {args.min_subscribers} subscriber(s) on "
                f"'{publisher.topic_name}' after {args.wait_subscribers} s; publishing anyway"
            )
        start_wall = time.monotonic()
        start_stamp = node.get_clock().now().nanoseconds
        for first_frame, payload in iter_chunks(audio, chunk_frames, sample_format):
            offset_s = first_frame / audio.sample_rate
            if args.speed > 0:
                delay = start_wall + offset_s / args.speed - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
            msg = AudioChunk()
            stamp_ns = start_stamp + round(offset_s / (args.speed or 1.0) * 1e9)
            msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(stamp_ns, 1_000_000_000)
            msg.header.frame_id = args.frame_id
            msg.sample_rate = audio.sample_rate
            msg.channels = audio.channels
            msg.sample_format = sample_format
            msg.data = array.array("B", payload)  # the array fast path skips a per-byte range check
            publisher.publish(msg)
        # Give reliable delivery a moment to complete before the participant goes away.
        time.sleep(0.2)
        node.get_logger().info(
            f"published {audio.duration_s:.2f} s of {args.wav} on '{publisher.topic_name}' "
            f"({audio.sample_rate} Hz, {audio.channels} ch) in {time.monotonic() - start_wall:.2f} s"
        )
    except KeyboardInterrupt:
        return 130
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="reasonvos_wav_publisher", description=__doc__)
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
