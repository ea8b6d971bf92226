"""The vlm_sam segmenter with tiny random checkpoints of every model class it uses (Qwen2.5-VL, Qwen3-VL,
Sam2Model, Sam3TrackerModel) written in the Hugging Face layout and loaded through the real path; the pipeline
end to end; and the served-VLM path against a real HTTP server process."""

from __future__ import annotations

import base64
import socket
import time

import cv2
import numpy as np
import pytest

from reasonvos_ros.backends.scripted import ScriptedSampler, ScriptedTracker
from reasonvos_ros.core.config import PipelineConfig
from reasonvos_ros.core.errors import BackendFailure, BackendUnavailable, ConfigError
from reasonvos_ros.core.pipeline import Pipeline, Segmented, complete
from reasonvos_ros.core.registry import build_backend
from reasonvos_ros.core.types import Frame
from reasonvos_ros.models.vlm.chat import ChatImage, QwenImageChat, seen_size
from reasonvos_ros.models.vlm.chat_server import start_server_process, stop_server_process
from reasonvos_ros.models.vlm.remote import OpenAIChatClient
from reasonvos_ros.models.vlm.tiny import build_tiny_qwen_vl, build_tiny_sam, force_answer

H, W = 120, 160
RECT = (40, 30, 100, 80)  # x1, y1, x2, y2 of the red rectangle on the key frame


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, torch_one_thread):
    root = tmp_path_factory.mktemp("tiny_vlm")
    return {
        "qwen3_vl": build_tiny_qwen_vl(root / "qwen3_vl", "qwen3_vl"),
        "qwen2_5_vl": build_tiny_qwen_vl(root / "qwen2_5_vl", "qwen2_5_vl"),
        "sam2": build_tiny_sam(root / "sam2", "sam2"),
        "sam3_tracker": build_tiny_sam(root / "sam3_tracker", "sam3_tracker"),
    }


def scene(count=6):
    frames = []
    for i in range(count):
        image = np.full((H, W, 3), 50, np.uint8)
        x1, y1, x2, y2 = RECT
        image[y1:y2, x1 + i : x2 + i] = (210, 40, 40)
        frames.append(Frame(100 + i, 0.2 * i, image=image))
    return frames


def segmenter(tiny, family="qwen3_vl", sam="sam2", **options):
    return build_backend(
        "segmenter",
        "vlm_sam",
        {"model_dir": str(tiny[family]), "sam_dir": str(tiny[sam]), "device": "cpu", "max_new_tokens": 120, **options},
    )


def grown_box_outside(mask, box, margin=0.1):
    x1, y1, x2, y2 = box
    gx, gy = margin * (x2 - x1), margin * (y2 - y1)
    keep = np.zeros_like(mask)
    keep[
        max(0, int(np.floor(y1 - gy))) : int(np.ceil(y2 + gy)), max(0, int(np.floor(x1 - gx))) : int(np.ceil(x2 + gx))
    ] = True
    return mask & ~keep


@pytest.mark.parametrize(
    "family, sam, answer_box",
    [
        # Qwen3-VL answers in 0..1000 of the image: RECT in those units
        ("qwen3_vl", "sam2", [250, 250, 625, 667]),
        # Qwen2.5-VL answers in pixels of the image it saw (160x120 -> smart_resize 168x112)
        ("qwen2_5_vl", "sam3_tracker", [42, 28, 105, 75]),
    ],
)
def test_found_answer_becomes_a_key_frame_mask_with_what_was_understood(tiny, family, sam, answer_box):
    seg_backend = segmenter(tiny, family, sam)
    frames = scene()
    # labels: references 0, 2, 4 and the key 5 are shown as frames 1..4 (time order)
    force_answer(
        seg_backend.chat,
        f'{{"frame": 4, "bbox_2d": {answer_box}, "label": "red box", "explanation": "it is the red one", '
        '"confidence": 0.75}',
    )
    seg = seg_backend.segment(frames, 5, [0, 2, 4], "the red thing")
    assert seg.details["answer_status"] == "found"
    assert seg.details["frames_shown"] == [100, 102, 104, 105]
    seen = seg.details["key_seen_size"]
    if family == "qwen3_vl":
        expected = [
            answer_box[0] / 1000 * W,
            answer_box[1] / 1000 * H,
            answer_box[2] / 1000 * W,
            answer_box[3] / 1000 * H,
        ]
    else:
        assert seen == [168, 112]
        expected = [answer_box[0] / 168 * W, answer_box[1] / 112 * H, answer_box[2] / 168 * W, answer_box[3] / 112 * H]
    assert seg.details["box_xyxy"] == pytest.approx(expected)
    assert seg.understanding.target_phrase == "red box"
    assert seg.understanding.explanation == "it is the red one"
    assert seg.understanding.confidence == pytest.approx(0.75)
    assert seg.mask.shape == (H, W) and seg.mask.dtype == bool
    assert 0.0 <= seg.score <= 1.0
    # random SAM weights: the mask may be anything, but never outside the VLM's box (grown by the margin)
    assert not grown_box_outside(seg.mask, expected).any()
    if seg.present:
        assert seg.mask.sum() >= 16
    else:
        assert not seg.mask.any() and "too small" in seg.reason
    # a second query on the same key frame reuses SAM's image embedding
    again = seg_backend.segment(frames, 5, [0, 2, 4], "the red thing")
    assert again.details["timings"].get("sam_encode_cached") == 1.0


def test_release_frees_the_models_and_the_next_query_reloads_them(tiny):
    """What the node does on cleanup: the chat model and SAM are dropped, and a later query loads them again."""
    seg_backend = segmenter(tiny)
    frames = scene()
    force_answer(seg_backend.chat, '{"frame": 4, "bbox_2d": [250, 250, 625, 667], "label": "red box"}')
    first = seg_backend.segment(frames, 5, [0, 2, 4], "the red thing")
    seg_backend.release()
    assert seg_backend.chat.model is None and seg_backend.sam.model is None
    again = seg_backend.segment(frames, 5, [0, 2, 4], "the red thing")
    assert again.details["box_xyxy"] == first.details["box_xyxy"]
    assert np.array_equal(again.mask, first.mask)


def test_not_present_other_frame_and_unusable_answers(tiny):
    seg_backend = segmenter(tiny)
    frames = scene()
    force_answer(seg_backend.chat, '{"frame": 4, "not_present": true, "label": "opener", "explanation": "no opener"}')
    seg = seg_backend.segment(frames, 5, [0, 2, 4], "the bottle opener")
    assert not seg.present and not seg.mask.any() and seg.reason == "VLM: no opener"
    assert seg.understanding.target_phrase == "opener" and not seg.details["confidence_reported"]
    force_answer(seg_backend.chat, '{"frame": 2, "bbox_2d": [250, 250, 625, 667], "label": "red box"}')
    seg = seg_backend.segment(frames, 5, [0, 2, 4], "the red thing")
    assert not seg.present and not seg.mask.any() and "frame 2, not on the key frame 4" in seg.reason
    for bad, why in (
        ('{"frame": 4, "bbox_2d": [250, 250, 6250, 667]}', "outside the coordinate range"),
        ('{"frame": 7, "bbox_2d": [250, 250, 625, 667]}', "not one of the frames shown"),
        ('{"frame": 4, "bbox_2d": [250, 250', "no JSON object"),
    ):
        force_answer(seg_backend.chat, bad)
        with pytest.raises(BackendFailure, match=why):
            seg_backend.segment(frames, 5, [0, 2, 4], "the red thing")
    # unconstrained, the random model answers noise: a clear failure, never a mask
    force_answer(seg_backend.chat, None)
    with pytest.raises(BackendFailure, match="VLM answer unusable"):
        seg_backend.segment(frames, 5, [0, 2, 4], "the red thing")


def test_pipeline_end_to_end_carries_the_understanding(tiny):
    seg_backend = segmenter(tiny)
    force_answer(
        seg_backend.chat,
        '{"frame": 4, "bbox_2d": [0, 0, 1000, 1000], "point_2d": [440, 460], "label": "red box", '
        '"explanation": "red", "confidence": 0.6}',
    )
    pipeline = Pipeline(
        ScriptedSampler(position="latest"),
        seg_backend,
        ScriptedTracker(),
        PipelineConfig(num_references=3, reference_strategy="global", min_mask_area_px=1),
    )
    frames = scene()
    events = list(pipeline.acquire("t", "the red thing", frames))
    keys = [(event.key_frame, event.segmentation) for event in events if isinstance(event, Segmented)]
    acquisition = complete(events)
    assert keys and keys[0][0].index == 105 and keys[0][1] is acquisition.segmentation
    seg = acquisition.segmentation
    assert seg.understanding.target_phrase == "red box"
    assert seg.details["points_xy"] == [pytest.approx([0.44 * W, 0.46 * H])]
    assert seg.present == bool(seg.mask.sum() >= 16)


def test_original_sam_checkpoint_is_the_fallback_mask_model(tiny, tmp_path):
    import torch
    from test_sam import TINY as TINY_SAM

    from reasonvos_ros.models.sam import random_original_state_dict

    checkpoint = tmp_path / "sam_tiny.pth"
    torch.save(random_original_state_dict(TINY_SAM), checkpoint)
    seg_backend = build_backend(
        "segmenter",
        "vlm_sam",
        {"model_dir": str(tiny["qwen3_vl"]), "sam_checkpoint": str(checkpoint), "device": "cpu", "box_margin": 0.0},
    )
    assert seg_backend.sam.model_type == "sam_original"
    box = [250, 250, 625, 667]
    for answer in (f'{{"frame": 4, "bbox_2d": {box}}}', '{"frame": 4, "point_2d": [440, 460]}'):
        force_answer(seg_backend.chat, answer)
        seg = seg_backend.segment(scene(), 5, [0, 2, 4], "the red thing")
        assert seg.details["answer_status"] == "found" and seg.mask.shape == (H, W)
        assert np.isfinite(seg.details["iou_prediction"])
        if "bbox_2d" in answer:
            expected = [box[0] / 1000 * W, box[1] / 1000 * H, box[2] / 1000 * W, box[3] / 1000 * H]
            assert not grown_box_outside(seg.mask, expected, margin=0.0).any()
    with pytest.raises(BackendUnavailable, match="not found"):
        build_backend(
            "segmenter",
            "vlm_sam",
            {"model_dir": str(tiny["qwen3_vl"]), "sam_checkpoint": str(tmp_path / "none.pth"), "device": "cpu"},
        )


def test_configuration_errors_are_clear(tiny, tmp_path):
    with pytest.raises(BackendUnavailable, match=r"exactly one of options\.model_dir"):
        build_backend("segmenter", "vlm_sam", {"sam_dir": str(tiny["sam2"])})
    with pytest.raises(BackendUnavailable, match=r"exactly one of options\.sam_dir"):
        build_backend("segmenter", "vlm_sam", {"model_dir": str(tiny["qwen3_vl"])})
    with pytest.raises(BackendUnavailable, match="not found"):
        segmenter({"qwen3_vl": tmp_path / "missing", "sam2": tiny["sam2"]})
    with pytest.raises(ConfigError, match="not a supported SAM image model"):
        segmenter({"qwen3_vl": tiny["qwen3_vl"], "sam2": tiny["qwen3_vl"]})
    with pytest.raises(ConfigError, match="family"):
        build_backend(
            "segmenter",
            "vlm_sam",
            {"server_url": "http://127.0.0.1:9/v1", "server_model": "m", "sam_dir": str(tiny["sam2"])},
        )
    with pytest.raises(ConfigError, match="http"):
        OpenAIChatClient("ftp://x", "m", "qwen3_vl")
    with pytest.raises(ConfigError, match="empty instruction"):
        segmenter(tiny).segment(scene(), 5, [], "  ")


# ------------------------------------------------------------------------------------------------- server path
@pytest.fixture(scope="module")
def server(tiny):
    process, url = start_server_process(tiny["qwen3_vl"], "--fail-first", "1", "--model-name", "tiny-qwen3")
    yield url
    stop_server_process(process)


def decode(url):
    raw = base64.b64decode(url.split(",", 1)[1])
    return cv2.cvtColor(cv2.imdecode(np.frombuffer(raw, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


def test_served_vlm_round_trip_retries_a_server_error(tiny, server):
    image = scene()[5].image
    parts = ["Frame 1:", ChatImage(image, max_pixels=64 * 64), "Frame 2:", ChatImage(image, max_pixels=10**6), "?"]
    client = OpenAIChatClient(server, "tiny-qwen3", "qwen3_vl", timeout_s=60, retries=1, retry_backoff_s=0.1)
    reply = client.chat(parts)  # the server fails its first request on purpose: one retry
    assert reply.stats["attempts"] == 2
    assert reply.seen_sizes == [seen_size(image.shape, "qwen3_vl", 64 * 64, 32 * 32), (160, 128)]
    # The server saw the images at the sizes the client sent: its prompt has as many tokens as the in-process
    # model's prompt for the same (decoded) images.
    body, _ = client.build_request(parts)
    sent = [decode(item["image_url"]["url"]) for item in body["messages"][1]["content"] if item["type"] == "image_url"]
    assert [(s.shape[1], s.shape[0]) for s in sent] == reply.seen_sizes
    local = QwenImageChat(tiny["qwen3_vl"], device="cpu", max_new_tokens=16)
    local_inputs, _ = local.build_inputs(
        ["Frame 1:", ChatImage(sent[0], 10**6, 1), "Frame 2:", ChatImage(sent[1], 10**6, 1), "?"]
    )
    assert reply.stats["prompt_tokens"] == int(local_inputs["input_ids"].shape[1])
    assert isinstance(reply.text, str) and reply.stats["request_bytes"] > 1000


def test_served_segmenter_runs_to_the_parser_and_fails_cleanly_on_noise(tiny, server):
    seg_backend = build_backend(
        "segmenter",
        "vlm_sam",
        {
            "server_url": server,
            "server_model": "tiny-qwen3",
            "family": "qwen3_vl",
            "sam_dir": str(tiny["sam2"]),
            "device": "cpu",
            "timeout_s": 60,
            "retries": 1,
            "max_new_tokens": 24,
        },
    )
    with pytest.raises(BackendFailure, match="VLM answer unusable"):
        seg_backend.segment(scene(), 5, [0, 2, 4], "the red thing")


def test_unreachable_and_silent_servers_fail_fast_with_a_clear_error():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        free_port = probe.getsockname()[1]
    parts = ["hi", ChatImage(np.zeros((32, 32, 3), np.uint8), 1024)]
    client = OpenAIChatClient(
        f"http://127.0.0.1:{free_port}/v1", "m", "qwen3_vl", timeout_s=2, retries=1, retry_backoff_s=0.05
    )
    start = time.monotonic()
    with pytest.raises(BackendFailure, match="failed after 2 attempt"):
        client.chat(parts)
    assert time.monotonic() - start < 5
    # A server that accepts the connection and never answers: the deadline ends each attempt.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(4)
        port = silent.getsockname()[1]
        client = OpenAIChatClient(
            f"http://127.0.0.1:{port}/v1", "m", "qwen3_vl", timeout_s=0.5, retries=1, retry_backoff_s=0.05
        )
        start = time.monotonic()
        with pytest.raises(BackendFailure, match=r"(?i)timed out"):
            client.chat(parts)
        assert time.monotonic() - start < 3


# ------------------------------------------------------------------------------ SAM 3 candidates + numbered marks
@pytest.mark.parametrize(
    "text, status, mark",
    [
        ('{"mark": 2}', "picked", 2),
        ('```json\n{"mark": "3"}\n```', "picked", 3),
        ('{"mark": null}', "none", None),
        ('{"mark": "none"}', "none", None),
        ('{"mark": 0}', "invalid", None),
        ('{"mark": 4}', "invalid", None),
        ('{"mark": true}', "invalid", None),
        ('{"mark": 1.5}', "invalid", None),
        ("number two", "invalid", None),
        ('{"frame": 4, "bbox_2d": [1, 2, 3, 4]}', "invalid", None),
    ],
)
def test_mark_answers(text, status, mark):
    from reasonvos_ros.models.vlm.candidates import parse_mark

    got_status, got_mark, reason = parse_mark(text, 3)
    assert (got_status, got_mark) == (status, mark)
    assert bool(reason) == (status != "picked")


def test_marks_are_drawn_on_each_candidate():
    from reasonvos_ros.models.vlm.candidates import Candidate, draw_marks, mark_position

    image = np.full((120, 160, 3), 60, np.uint8)
    first = np.zeros((120, 160), bool)
    first[10:50, 10:70] = True
    ring = np.zeros((120, 160), bool)  # a U shape: its centroid is outside it, the mark must not be
    ring[60:110, 90:150] = True
    ring[60:95, 105:135] = False
    candidates = [Candidate(first, (10, 10, 70, 50), 0.9), Candidate(ring, (90, 60, 150, 110), 0.8)]
    for candidate in candidates:
        x, y = mark_position(candidate.mask)
        assert candidate.mask[y, x]
    marked = draw_marks(image, candidates)
    assert marked.shape == image.shape and np.array_equal(image, np.full_like(image, 60))  # input untouched
    for candidate in candidates:
        x, y = mark_position(candidate.mask)
        assert (marked[y - 2 : y + 3, x - 2 : x + 3] != 60).any()
    far = np.zeros((120, 160), bool)
    far[:, :5] = True
    assert (marked[far] == 60).all()  # nothing drawn away from the candidates


@pytest.fixture(scope="module")
def tiny_sam3(tmp_path_factory, torch_one_thread):
    return build_tiny_sam(tmp_path_factory.mktemp("tiny_sam3") / "sam3", "sam3")


def test_sam3_candidate_picked_by_the_vlm_replaces_the_box_mask(tiny, tiny_sam3):
    from reasonvos_ros.models.vlm.candidates import Sam3TextCandidates

    seg_backend = segmenter(
        tiny, candidates_dir=str(tiny_sam3), candidate_threshold=0.0, max_candidates=5, min_area_pixels=1
    )
    first = '{"frame": 4, "bbox_2d": [250, 250, 625, 667], "label": "red box", "explanation": "red"}'
    frames = scene()
    force_answer(seg_backend.chat, [first, '{"mark": 1}'])
    seg = seg_backend.segment(frames, 5, [0, 2, 4], "the red thing")
    assert seg.details["mark_status"] == "picked", (seg.details.get("mark_answer"), seg.details.get("mark_reason"))
    assert seg.details["mask_source"] == "sam3 text candidate 1"
    assert {"candidates_s", "mark_vlm_s"} <= set(seg.details["timings"])
    reference = Sam3TextCandidates(tiny_sam3, device="cpu", score_threshold=0.0, max_candidates=5)
    expected, _ = reference.candidates(frames[5].image, "red box")
    assert len(seg.details["candidates"]) == len(expected) >= 1
    union = np.logical_or(seg.mask, expected[0].mask).sum()
    assert np.logical_and(seg.mask, expected[0].mask).sum() / max(union, 1) > 0.98
    assert seg.understanding.target_phrase == "red box"
    for second, status in (('{"mark": null}', "none"), ('{"mark": 99}', "invalid")):
        force_answer(seg_backend.chat, [first, second])
        seg = seg_backend.segment(frames, 5, [0, 2, 4], "the red thing")
        assert seg.details["mark_status"] == status
        assert seg.details["mask_source"] == "sam box/points prompt"
