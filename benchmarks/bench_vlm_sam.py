"""vlm_sam per stage on this CPU with tiny random models, and the served path against in-process.

1. The segmenter in process (tiny Qwen3-VL + tiny Sam2Model, decoding constrained to a fixed valid answer so every
   stage runs): median VLM, SAM encoder, SAM decoder and total time per ``segment`` call; then the same with the
   optional SAM 3 text-candidates + numbered-marks step (tiny Sam3Model, a second constrained VLM call).
2. The same chat turn (4 references + key frame, 640x480 camera frames) in process and through the minimal
   OpenAI-compatible server (``models.vlm.chat_server``, a separate process on this machine): request size and
   the latency the HTTP path adds (JPEG encoding, base64, transfer, decoding on the server).

The tiny models make the model time small, so the *added* latency and the request size are the figures that carry
over to real models; the per-stage times only check the plumbing.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from reasonvos_ros.core.registry import build_backend
from reasonvos_ros.core.types import Frame
from reasonvos_ros.models.vlm.chat import ChatImage, QwenImageChat
from reasonvos_ros.models.vlm.chat_server import start_server_process, stop_server_process
from reasonvos_ros.models.vlm.remote import OpenAIChatClient
from reasonvos_ros.models.vlm.tiny import build_tiny_qwen_vl, build_tiny_sam, force_answer

REPEATS = 5


def camera_frames(count=8, height=480, width=640):
    rng = np.random.default_rng(0)
    base = cv_smooth(rng.integers(0, 255, (height // 8, width // 8, 3), dtype=np.uint8), (width, height))
    frames = []
    for i in range(count):
        image = base.copy()
        image[200:320, 200 + 10 * i : 360 + 10 * i] = (210, 40, 40)
        frames.append(Frame(i, 0.25 * i, image=image))
    return frames


def cv_smooth(small, size):
    import cv2

    return cv2.resize(small, size, interpolation=cv2.INTER_CUBIC)


def main() -> int:
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as scratch:
        vlm_dir = build_tiny_qwen_vl(Path(scratch) / "vlm", "qwen3_vl")
        sam_dir = build_tiny_sam(Path(scratch) / "sam", "sam2")
        frames = camera_frames()
        segmenter = build_backend(
            "segmenter", "vlm_sam", {"model_dir": str(vlm_dir), "sam_dir": str(sam_dir), "device": "cpu"}
        )
        force_answer(
            segmenter.chat,
            '{"frame": 5, "bbox_2d": [300, 400, 600, 700], "label": "red box", "explanation": "red", "confidence": 0.7}',
        )
        stages = {"vlm_s": [], "sam_encode_s": [], "sam_decode_s": [], "total_s": []}
        for run in range(REPEATS + 1):
            frames = [Frame(f.index + 100 * run, f.stamp, image=f.image) for f in frames]  # fresh SAM encode
            start = time.perf_counter()
            seg = segmenter.segment(frames, 7, [0, 2, 4, 6], "the red thing")
            total = time.perf_counter() - start
            if run:  # first run is the warm-up
                for key in ("vlm_s", "sam_encode_s", "sam_decode_s"):
                    stages[key].append(seg.details["timings"][key])
                stages["total_s"].append(total)
        print(
            "vlm_sam segment() with tiny random models, 640x480 frames, 4 references, CPU 1 thread "
            f"(shared machine; median of {REPEATS}):"
        )
        for key, values in stages.items():
            print(f"  {key:<14} {statistics.median(values) * 1000:8.1f} ms")
        print(
            f"  prompt tokens  {seg.details['vlm_stats']['prompt_tokens']}, answer tokens "
            f"{seg.details['vlm_stats']['new_tokens']}"
        )

        # The optional second step: SAM 3 text candidates, numbered marks, a second VLM call.
        sam3_dir = build_tiny_sam(Path(scratch) / "sam3", "sam3")
        with_marks = build_backend(
            "segmenter",
            "vlm_sam",
            {
                "model_dir": str(vlm_dir),
                "sam_dir": str(sam_dir),
                "device": "cpu",
                "candidates_dir": str(sam3_dir),
                "candidate_threshold": 0.0,
                "max_candidates": 5,
            },
        )
        first = (
            '{"frame": 5, "bbox_2d": [300, 400, 600, 700], "label": "red box", "explanation": "red", "confidence": 0.7}'
        )
        extra = {"candidates_s": [], "mark_vlm_s": [], "total_s": []}
        for run in range(REPEATS + 1):
            force_answer(with_marks.chat, [first, '{"mark": 1}'])
            frames = [Frame(f.index + 1000 * (run + 1), f.stamp, image=f.image) for f in frames]
            start = time.perf_counter()
            marked = with_marks.segment(frames, 7, [0, 2, 4, 6], "the red thing")
            total = time.perf_counter() - start
            if run:
                extra["candidates_s"].append(marked.details["timings"]["candidates_s"])
                extra["mark_vlm_s"].append(marked.details["timings"]["mark_vlm_s"])
                extra["total_s"].append(total)
        print(
            f"with the SAM 3 candidates + numbered marks step ({len(marked.details['candidates'])} candidates, "
            f"mark status {marked.details['mark_status']}):"
        )
        for key, values in extra.items():
            print(f"  {key:<14} {statistics.median(values) * 1000:8.1f} ms")
        added = statistics.median(extra["total_s"]) - statistics.median(stages["total_s"])
        print(f"  added by the step: {added * 1000:.1f} ms per query (tiny models: plumbing, not a model figure)")

        images = [frames[i].image for i in (0, 2, 4, 6)] + [frames[7].image]
        parts = []
        for i, image in enumerate(images):
            parts += [f"Frame {i + 1}:", ChatImage(image, 1280 * 28 * 28 if i == 4 else 256 * 28 * 28)]
        parts.append("Where is the red thing? Answer in JSON.")
        local = QwenImageChat(vlm_dir, device="cpu", max_new_tokens=32)
        server, url = start_server_process(vlm_dir)
        try:
            client = OpenAIChatClient(url, "tiny", "qwen3_vl", timeout_s=120, max_new_tokens=32)
            local_runs, remote_runs, encode_runs, tokens = [], [], [], set()
            for run in range(REPEATS + 1):
                start = time.perf_counter()
                local_reply = local.chat(parts)
                local_s = time.perf_counter() - start
                start = time.perf_counter()
                remote_reply = client.chat(parts)
                remote_s = time.perf_counter() - start
                tokens.add((local_reply.stats["new_tokens"], remote_reply.stats["new_tokens"]))
                if run:
                    local_runs.append(local_s)
                    remote_runs.append(remote_s)
                    encode_runs.append(remote_reply.stats["encode_s"])
        finally:
            stop_server_process(server)
        raw = sum(image.nbytes for image in images)
        print(f"\nsame chat turn (5 images: key at <= 1280x28x28 px, refs at <= 256x28x28 px), median of {REPEATS}:")
        print(f"  in process            {statistics.median(local_runs) * 1000:8.1f} ms")
        print(
            f"  via HTTP server       {statistics.median(remote_runs) * 1000:8.1f} ms  "
            f"(added {1000 * (statistics.median(remote_runs) - statistics.median(local_runs)):.1f} ms; "
            f"client JPEG+base64 {statistics.median(encode_runs) * 1000:.1f} ms)"
        )
        print(
            f"  request size          {remote_reply.stats['request_bytes'] / 1024:8.1f} KiB "
            f"(raw RGB of the 5 frames: {raw / 1024:.0f} KiB); new tokens (local, served): {sorted(tokens)}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
