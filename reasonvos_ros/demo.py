"""The end-to-end demo (README's main command): a real video through the real node, replayed as a bag.

1. Build a bag from Debian's ``vtest.avi`` (pedestrians) with an instruction message at a given time.
2. Start the perception node (its own process, lite CPU backends by default, reliable QoS for replay).
3. Record the node's outputs into a bag (its own process) while replaying the input bag at recorded timing.
4. Render an overlay mp4 and a contact-sheet PNG from the two bags and print a summary.

Everything is written to ``--out`` (default ``demo_out/``).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

NODE = "/reasonvos_perception"
RESULT_TOPICS = [f"{NODE}/results", f"{NODE}/results_history", "/diagnostics"]


def _spawn(args: list[str], log_path: Path, env: dict[str, str]) -> subprocess.Popen:
    log = log_path.open("w")
    return subprocess.Popen([sys.executable, *args], stdout=log, stderr=subprocess.STDOUT, env=env)


def _wait_for_text(path: Path, text: str, proc: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if text in path.read_text(errors="replace"):
            return
        if proc.poll() is not None:
            raise RuntimeError(
                f"process exited ({proc.returncode}) before '{text}'; log: {path}\n{path.read_text()[-2000:]}"
            )
        time.sleep(0.1)
    raise RuntimeError(f"timed out after {timeout} s waiting for '{text}' in {path}")


def _stop(proc: subprocess.Popen, timeout: float = 10.0) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.terminate()
            proc.wait(5)
    return proc.returncode


def summarise(results_bag: Path, input_frames: int, wall_s: float, input_bag: Path | None = None) -> dict:
    """Read the recorded outputs back: counts, statuses, key frame, latencies, what was understood and, with the
    input bag, whether the detector agrees with the published masks (``check_success``)."""
    from rosbags.highlevel import AnyReader

    from reasonvos_ros.bag.types import make_typestore
    from reasonvos_ros.ros.conversions import image_msg_to_mask, stamp_to_nanoseconds

    typestore = make_typestore()
    live, history, statuses, keyframes, diag = 0, 0, {}, set(), {}
    first_live = None
    sequence: list[int] = []  # status of the default target on every live result, in order
    tracked_masks: dict[int, np.ndarray] = {}  # header stamp (ns) -> mask, TRACKING results
    understood: dict[str, object] = {}
    with AnyReader([results_bag], default_typestore=typestore) as reader:
        for conn, stamp, raw in reader.messages():
            msg = reader.deserialize(raw, conn.msgtype)
            if conn.topic == f"{NODE}/results":
                live += 1
                first_live = first_live or stamp
                for result in msg.results:
                    status = int(result.status)
                    statuses[status] = statuses.get(status, 0) + 1
                    sequence.append(status)
                    if result.keyframe_stamp.sec:
                        keyframes.add(result.keyframe_stamp.sec + result.keyframe_stamp.nanosec * 1e-9)
                    if getattr(result, "target_phrase", ""):
                        understood = {
                            "target_phrase": result.target_phrase,
                            "explanation": result.explanation,
                            "confidence": round(float(result.understanding_confidence), 2),
                        }
                    if status == 1 and result.mask.height:
                        tracked_masks[stamp_to_nanoseconds(msg.header.stamp)] = image_msg_to_mask(result.mask)
            elif conn.topic == f"{NODE}/results_history":
                history += 1
            elif conn.topic == "/diagnostics" and msg.status:
                diag = {kv.key: kv.value for kv in msg.status[0].values}
    names = {0: "searching", 1: "tracking", 2: "lost", 3: "not_present", 4: "error"}
    acquired = sequence[sequence.index(1) :] if 1 in sequence else []
    summary = {
        "frames_in": input_frames,
        "result_frames_out": live,
        "history_results_out": history,
        "statuses": {names.get(k, str(k)): v for k, v in sorted(statuses.items())},
        "understood": understood,
        "tracking_after_acquisition": round(acquired.count(1) / len(acquired), 3) if acquired else 0.0,
        "keyframe_stamps": sorted(keyframes),
        "key_position_in_window": diag.get("last_key_position"),
        "latency_ms": {
            k.removeprefix("latency_").removesuffix("_ms"): v for k, v in diag.items() if k.startswith("latency_")
        },
        "catchup_covered_fps": diag.get("catchup_covered_fps"),
        "tracker_rate_hz": diag.get("tracker_rate_hz"),
        "input_rate_hz": diag.get("input_rate_hz"),
        "frames_skipped_by_tracker": diag.get("frames_skipped_by_tracker"),
        "track_corrections": diag.get("track_corrections"),
        "ingest_ms_median": diag.get("ingest_ms_median"),
        "output_fps": round(live / wall_s, 2) if wall_s else None,
    }
    if input_bag is not None:
        summary["detector_agrees"] = detector_agreement(input_bag, tracked_masks)
    return summary


def detector_agreement(input_bag: Path, tracked_masks: dict, category: str = "person", samples: int = 30) -> float:
    """Fraction of (up to ``samples``, evenly spread) TRACKING masks whose box overlaps (IoU >= 0.3) a detection
    of ``category`` by the SSD detector on the same input frame: an independent check that the published mask
    is on a person, not on pavement."""
    from rosbags.highlevel import AnyReader

    from reasonvos_ros.backends.lite.detector import shared_detector
    from reasonvos_ros.backends.lite.segmenter import box_iou
    from reasonvos_ros.bag.types import make_typestore
    from reasonvos_ros.ros.conversions import image_msg_to_rgb, stamp_to_nanoseconds

    if not tracked_masks:
        return 0.0
    stamps = sorted(tracked_masks)
    chosen = {stamps[round(i * (len(stamps) - 1) / max(1, samples - 1))] for i in range(min(samples, len(stamps)))}
    detector = shared_detector()
    agree = checked = 0
    with AnyReader([input_bag], default_typestore=make_typestore()) as reader:
        for conn, _, raw in reader.messages():
            if conn.msgtype != "sensor_msgs/msg/Image":
                continue
            msg = reader.deserialize(raw, conn.msgtype)
            stamp = stamp_to_nanoseconds(msg.header.stamp)
            if stamp not in chosen:
                continue
            image = image_msg_to_rgb(msg)
            mask = tracked_masks[stamp]
            if mask.shape != image.shape[:2]:
                continue
            rows, cols = np.nonzero(mask)
            box = (cols.min(), rows.min(), cols.max() + 1, rows.max() + 1)
            found = detector.detect(image).of_categories([category])
            keep = found.scores >= 0.3
            checked += 1
            agree += bool(keep.any() and box_iou(box, found.boxes[keep]).max() >= 0.3)
    return round(agree / checked, 3) if checked else 0.0


def check_success(result: dict, min_tracking: float = 0.5, min_agreement: float = 0.8) -> tuple[bool, str]:
    """The demo succeeded when the target is TRACKING on most live results after its first acquisition and the
    detector agrees the published masks are on a person; returns (ok, the reason)."""
    tracking = result.get("tracking_after_acquisition", 0.0)
    agreement = result.get("detector_agrees", 0.0)
    if not result.get("result_frames_out"):
        return False, "the node published no result"
    if tracking < min_tracking:
        return False, f"TRACKING on only {tracking:.0%} of the live results after acquisition (need {min_tracking:.0%})"
    if agreement < min_agreement:
        return (
            False,
            f"the detector sees a person at only {agreement:.0%} of the checked masks (need {min_agreement:.0%})",
        )
    return (
        True,
        f"TRACKING on {tracking:.0%} of the live results after acquisition; the detector sees a person at {agreement:.0%} of the checked masks",
    )


def run_demo(
    out: Path,
    video: Path | None = None,
    instruction: str = "the person walking",
    instruction_time: float = 2.0,
    max_frames: int = 120,
    max_side: int = 384,
    node_params: list[str] | None = None,
    log=print,
) -> dict:
    from reasonvos_ros.bag.from_video import InstructionEvent, make_bag_from_video
    from reasonvos_ros.bag.play import play_bag
    from reasonvos_ros.bag.render import render_bag
    from reasonvos_ros.data.media import media_path

    video = Path(video) if video else media_path("vtest.avi")
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    env = dict(os.environ)
    repo = str(Path(__file__).resolve().parents[1])
    env["PYTHONPATH"] = repo + os.pathsep + env.get("PYTHONPATH", "")
    env.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    env.setdefault("ROS_LOG_DIR", str(out / "ros_log"))
    env.setdefault("ROS_DOMAIN_ID", str(40 + os.getpid() % 50))
    os.environ.update({k: env[k] for k in ("ROS_AUTOMATIC_DISCOVERY_RANGE", "ROS_LOG_DIR", "ROS_DOMAIN_ID")})

    input_bag = out / "input_bag"
    log(f"[1/4] bag from {video} ({max_frames} frames, longest side {max_side}px), instruction at {instruction_time} s")
    summary = make_bag_from_video(
        video,
        input_bag,
        max_frames=max_frames,
        max_side=max_side,
        instructions=[InstructionEvent(instruction_time, instruction, "default")],
    )

    log("[2/4] starting the perception node (lite CPU backends) and the recorder")
    params = ["-p", "qos_reliability:=reliable", "-p", "qos_depth:=50", "-p", "diagnostics_period_s:=0.5"]
    params += node_params or []
    node = _spawn(
        [
            "-m",
            "reasonvos_ros.ros.perception_node",
            "--ros-args",
            "--params-file",
            str(Path(repo) / "config" / "perception.yaml"),
            *params,
        ],
        out / "node.log",
        env,
    )
    recorder = None
    try:
        _wait_for_text(out / "node.log", "active: subscribed", node, timeout=120)
        results_bag = out / "results_bag"
        recorder = _spawn(
            [
                "-m",
                "reasonvos_ros.cli",
                "bag-record",
                str(results_bag),
                *RESULT_TOPICS,
                "--qos-reliability",
                "reliable",
            ],
            out / "recorder.log",
            env,
        )
        _wait_for_text(out / "recorder.log", f"recording {NODE}/results ", recorder, timeout=60)

        log(f"[3/4] replaying {summary.frames} frames at {summary.fps:.1f} fps with '{instruction}'")
        start = time.monotonic()
        play_bag(input_bag, reliability="reliable", wait_for_subscribers=10.0, log=lambda *a: None)
        time.sleep(3.0)  # let the last results and diagnostics arrive
        wall = time.monotonic() - start
    finally:
        if recorder is not None:
            _stop(recorder)
        node_code = _stop(node)
    log(f"      node exited with {node_code}; logs in {out}")

    log("[4/4] rendering overlay video and contact sheet")
    render = render_bag(
        input_bag,
        results_bag=results_bag,
        output_video=out / "overlay.mp4",
        contact_sheet=out / "contact_sheet.png",
        result_topic=f"{NODE}/results",
    )
    result = summarise(results_bag, summary.frames, wall, input_bag)
    result.update(
        {
            "overlay_video": str(render.video),
            "contact_sheet": str(render.contact_sheet),
            "frames_with_results_in_video": render.matched,
            "instruction": instruction,
        }
    )
    (out / "summary.json").write_text(json.dumps(result, indent=2))
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="reasonvos-demo", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=Path("demo_out"))
    parser.add_argument("--video", type=Path, default=None, help="video file (default: vtest.avi from opencv-doc)")
    parser.add_argument("--instruction", default="the person walking")
    parser.add_argument("--instruction-time", type=float, default=2.0, help="seconds into the clip")
    parser.add_argument("--frames", type=int, default=120)
    parser.add_argument("--max-side", type=int, default=384)
    parser.add_argument("node_params", nargs="*", help="extra node parameters as name:=value")
    args = parser.parse_args(argv)
    extra = [item for param in args.node_params for item in ("-p", param)]
    result = run_demo(args.out, args.video, args.instruction, args.instruction_time, args.frames, args.max_side, extra)
    print("\n==== demo summary ====")
    for key, value in result.items():
        print(f"{key:>30}: {value}")
    understood = result.get("understood") or {}
    if understood:
        print(
            f"\nunderstood '{args.instruction}' as: {understood['target_phrase']} (confidence "
            f"{understood['confidence']:.2f}); {understood['explanation']}"
        )
    ok, why = check_success(result)
    print(f"\nDEMO OK: {why}" if ok else f"\nDEMO FAILED: {why} (see {args.out / 'node.log'})")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
