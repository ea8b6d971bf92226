"""VISA loading from disk (real layout: HF directory with tokenizer + safetensors shards + index, SAM .pth, CLIP
directory) and the VISA key-frame segmenter on real video frames, with a tiny random-weight checkpoint."""

from __future__ import annotations

import json
import pathlib
import shutil

import numpy as np
import pytest
import torch

from reasonvos_ros.backends.visa_segmenter import VisaSegmenter, decide_presence
from reasonvos_ros.core.errors import BackendUnavailable, ConfigError
from reasonvos_ros.core.registry import build_backend
from reasonvos_ros.core.types import Frame
from reasonvos_ros.models.visa.checkpoint import VisaCheckpointError, load_visa
from reasonvos_ros.models.visa.tiny import write_tiny_visa

GOLDEN = pathlib.Path(__file__).parent / "golden_data" / "cases"


@pytest.fixture(scope="module")
def tiny_paths(tmp_path_factory):
    return write_tiny_visa(tmp_path_factory.mktemp("tiny_visa"), sam_image_size=256)


@pytest.fixture(scope="module")
def frames():
    with np.load(GOLDEN / "xmem_stream" / "inputs.npz") as data:
        images = data["frames_rgb_uint8"]
    return [Frame(index=100 + i, stamp=0.1 * i, image=images[i]) for i in range(len(images))]


@pytest.fixture(scope="module")
def segmenter(tiny_paths):
    return VisaSegmenter(
        visa_dir=str(tiny_paths.visa_dir),
        sam_checkpoint=str(tiny_paths.sam_checkpoint),
        clip_dir=str(tiny_paths.clip_dir),
        device="cpu",
        progress=False,
    )


def test_real_layout_loads_strictly_with_sam_overwritten_by_the_visa_checkpoint(tiny_paths, segmenter):
    from safetensors import safe_open

    model = segmenter.model
    report = segmenter.load_report
    assert report.ok and [s.loaded for s in report.sources] == [174, 201, 39]
    assert "rotary inv_freq" in str(report)
    index = json.loads((tiny_paths.visa_dir / "model.safetensors.index.json").read_text())
    shard = tiny_paths.visa_dir / index["weight_map"]["model.visual_model.mask_decoder.iou_token.weight"]
    with safe_open(str(shard), "pt") as handle:
        tuned = handle.get_tensor("model.visual_model.mask_decoder.iou_token.weight")
    original = torch.load(tiny_paths.sam_checkpoint, weights_only=True)["mask_decoder.iou_token.weight"]
    assert not torch.equal(tuned, original)
    # The fine-tuned decoder from the VISA checkpoint wins over the SAM file (VISA's load order).
    loaded = dict(model.sam.mask_decoder.named_parameters())
    assert any(torch.equal(p, tuned) for p in loaded.values())
    assert not any(torch.equal(p, original) for p in loaded.values())
    assert model.config.seg_token_id == len(segmenter.tokenizer) - 1
    assert not any(p.is_meta for p in model.parameters())


def test_segmenter_gives_a_key_frame_mask_and_caches_per_frame_work(segmenter, frames):
    seg = segmenter.segment(frames, 9, list(range(9)), "The person walking on the left")
    assert seg.mask.shape == frames[9].image.shape[:2] and seg.mask.dtype == bool
    assert np.isfinite(seg.score)
    assert seg.details["num_references"] == 9
    assert seg.details["expanded_tokens"] == seg.details["prompt_tokens"] + 10 * 111
    if seg.present:
        assert seg.mask.any() and 0.5 < seg.score <= 1.0
    else:
        assert not seg.mask.any()
    hits = dict(segmenter.cache_hits)
    again = segmenter.segment(frames, 9, list(range(9)), "The person walking on the left")
    # Same result (seeded noise); multi-threaded BLAS may change last bits, hence the tolerances.
    assert np.mean(again.mask == seg.mask) > 0.999 and abs(again.score - seg.score) < 1e-4
    assert segmenter.cache_hits["visual"] == hits["visual"] + 10 and segmenter.cache_hits["sam"] == hits["sam"] + 1
    question = segmenter.segment(frames, 3, [0, 5, 7], "Who walks fastest?")
    assert question.mask.shape == frames[3].image.shape[:2]
    assert question.details["num_references"] == 3


def test_all_empty_prediction_is_not_present(segmenter, frames):
    decoder = segmenter.model.sam.mask_decoder.decoder
    projection = decoder.output_hypernetworks_mlps[0].proj_out
    saved = (projection.weight.detach().clone(), projection.bias.detach().clone())
    try:
        with torch.no_grad():  # the mask hypernetwork outputs zeros -> every logit is 0 -> empty mask
            projection.weight.zero_()
            projection.bias.zero_()
        seg = segmenter.segment(frames, 4, [0, 2, 6], "the red car")
    finally:
        with torch.no_grad():
            projection.weight.copy_(saved[0])
            projection.bias.copy_(saved[1])
    assert not seg.present and not seg.mask.any() and seg.score == 0.0
    assert "empty" in seg.reason


def test_presence_rule_thresholds():
    logits = np.full((100, 100), -3.0)
    logits[:2, :2] = 4.0
    mask = logits > 0
    present, score, reason = decide_presence(mask, logits, 0.9, min_area_fraction=0.001)
    assert not present and "too small" in reason and score > 0.9
    assert decide_presence(mask, logits, 0.9, min_area_fraction=0.0)[0]
    assert not decide_presence(mask, logits, 0.9, min_area_fraction=0.0, min_score=0.99)[0]
    assert not decide_presence(mask, logits, 0.2, min_area_fraction=0.0, min_iou_prediction=0.5)[0]


def test_missing_paths_raise_backend_unavailable_naming_them(tiny_paths, tmp_path):
    options = {
        "visa_dir": str(tiny_paths.visa_dir),
        "sam_checkpoint": str(tmp_path / "nope" / "sam_vit_h_4b8939.pth"),
        "clip_dir": str(tiny_paths.clip_dir),
        "device": "cpu",
    }
    with pytest.raises(BackendUnavailable, match=r"sam_vit_h_4b8939\.pth"):
        build_backend("segmenter", "visa", options)
    with pytest.raises(BackendUnavailable, match=r"options\.clip_dir"):
        VisaSegmenter(visa_dir=str(tiny_paths.visa_dir), sam_checkpoint=str(tiny_paths.sam_checkpoint))


def test_bad_device_or_dtype_is_a_config_error_before_any_loading(tiny_paths):
    paths = {
        "visa_dir": str(tiny_paths.visa_dir),
        "sam_checkpoint": str(tiny_paths.sam_checkpoint),
        "clip_dir": str(tiny_paths.clip_dir),
    }
    with pytest.raises(ConfigError, match="VISA option device: unknown device 'gpu'"):
        VisaSegmenter(**paths, device="gpu")
    with pytest.raises(ConfigError, match="VISA option dtype must be auto or one of"):
        VisaSegmenter(**paths, device="cpu", dtype="float8")


def test_strict_loading_reports_missing_and_unexpected_keys(tiny_paths, tmp_path):
    from safetensors.torch import load_file, save_file

    broken = tmp_path / "visa"
    shutil.copytree(tiny_paths.visa_dir, broken)
    index_path = broken / "model.safetensors.index.json"
    index = json.loads(index_path.read_text())
    shard_name = index["weight_map"]["model.text_hidden_fcs.0.2.bias"]
    tensors = load_file(str(broken / shard_name))
    del tensors["model.text_hidden_fcs.0.2.bias"]
    tensors["model.some_new_head.weight"] = torch.zeros(2, 2)
    save_file(tensors, str(broken / shard_name))
    with pytest.raises(VisaCheckpointError) as info:
        load_visa(broken, tiny_paths.sam_checkpoint, tiny_paths.clip_dir, device="cpu", progress=False)
    message = str(info.value)
    assert "missing: model.text_hidden_fcs.0.2.bias" in message
    assert "unexpected: model.some_new_head.weight" in message
    (broken / shard_name).unlink()
    with pytest.raises(VisaCheckpointError, match=r"shards listed in .* are missing"):
        load_visa(broken, tiny_paths.sam_checkpoint, tiny_paths.clip_dir, device="cpu", progress=False)


def test_release_unloads_and_the_next_call_reloads(segmenter, frames):
    first = segmenter.segment(frames, 2, [0, 1], "the man")
    segmenter.release()
    assert segmenter.model is None and not segmenter._visual and not segmenter._embeddings
    second = segmenter.segment(frames, 2, [0, 1], "the man")
    assert segmenter.model is not None and np.mean(first.mask == second.mask) > 0.99


def test_bin_shards_and_a_full_clip_model_directory_load(tiny_paths, tmp_path):
    """pytorch_model-*.bin shards with their index, and a CLIPModel directory (vision_config + text keys)."""
    from safetensors.torch import load_file

    visa = tmp_path / "visa_bin"
    visa.mkdir()
    for name in ("config.json", "tokenizer.model", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json", "tokenizer.json"):  # fmt: skip
        if (tiny_paths.visa_dir / name).is_file():
            shutil.copy(tiny_paths.visa_dir / name, visa / name)
    index = json.loads((tiny_paths.visa_dir / "model.safetensors.index.json").read_text())
    weight_map = {}
    for number, shard in enumerate(sorted(set(index["weight_map"].values())), start=1):
        name = f"pytorch_model-{number:05d}-of-00002.bin"
        tensors = load_file(str(tiny_paths.visa_dir / shard))
        torch.save(tensors, visa / name)
        weight_map.update(dict.fromkeys(tensors, name))
    (visa / "pytorch_model.bin.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))

    clip = tmp_path / "clip_full"
    clip.mkdir()
    vision_config = json.loads((tiny_paths.clip_dir / "config.json").read_text())
    (clip / "config.json").write_text(
        json.dumps({"model_type": "clip", "vision_config": vision_config, "text_config": {}})
    )
    tensors = load_file(str(tiny_paths.clip_dir / "model.safetensors"))
    tensors.update({"text_model.embeddings.token_embedding.weight": torch.zeros(4, 2), "logit_scale": torch.ones(())})
    tensors["vision_model.embeddings.position_ids"] = torch.arange(257)[None]
    torch.save(tensors, clip / "pytorch_model.bin")

    model, _, report = load_visa(visa, tiny_paths.sam_checkpoint, clip, device="cpu", progress=False)
    assert report.ok, str(report)
    clip_report = report.sources[-1]
    assert clip_report.loaded == 39 and clip_report.ignored == {"text-side CLIP keys": 2, "position_ids buffers": 1}
    reference, _, _ = load_visa(
        tiny_paths.visa_dir, tiny_paths.sam_checkpoint, tiny_paths.clip_dir, device="cpu", progress=False
    )
    for (name, a), (_, b) in zip(model.state_dict().items(), reference.state_dict().items()):
        assert torch.equal(a, b), name
