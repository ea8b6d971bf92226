"""SAM with VISA's text prompt: golden case, original-layout checkpoints on disk, prefixes, strict-load reports,
pre/post-processing at odd sizes."""

from __future__ import annotations

import json
import pathlib

import cv2
import numpy as np
import pytest
import torch

from reasonvos_ros.golden import run_case
from reasonvos_ros.models.sam import (
    SamCheckpointError,
    SamConfig,
    SamTextPromptModel,
    load_sam_checkpoint,
    original_key_shapes,
    random_original_state_dict,
)
from reasonvos_ros.models.sam.preprocess import (
    longest_side_size,
    normalize_and_pad,
    postprocess_masks,
    resize_bilinear_like_pillow,
)

GOLDEN = pathlib.Path(__file__).parent / "golden_data"
SAM_CASE = GOLDEN / "cases" / "sam_text_prompt"

# Small enough for milliseconds per call, but every structural feature present: windowed + global attention with
# relative positions, a window that does not divide the grid (padding), a 4-layer IoU head, 3 multimask outputs.
TINY = SamConfig(
    encoder_embed_dim=32,
    encoder_depth=3,
    encoder_num_heads=2,
    encoder_global_attn_indexes=(2,),
    image_size=160,
    patch_size=16,
    window_size=4,
    prompt_embed_dim=64,
    mask_in_chans=8,
    decoder_depth=2,
    decoder_mlp_dim=96,
    decoder_num_heads=8,
    iou_head_depth=4,
    iou_head_hidden_dim=48,
)


def frame(height: int, width: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    # a bright blob so the image is not pure noise
    cv2.circle(image, (width // 2, height // 2), max(2, min(height, width) // 4), (250, 240, 10), -1)
    return image


@pytest.fixture(scope="module")
def tiny_state() -> dict[str, torch.Tensor]:
    return random_original_state_dict(TINY)


@pytest.fixture(scope="module")
def tiny_model(tiny_state) -> SamTextPromptModel:
    return SamTextPromptModel.from_original_state_dict(tiny_state)


def test_golden_case_passes():
    checks = run_case(SAM_CASE)
    failed = [c.line() for c in checks if not c.passed]
    assert not failed, "\n".join(failed)
    names = {c.name for c in checks}
    assert {"image_embeddings", "low_res_logits", "masks_logits", "iou_predictions", "dense_pe_corner"} <= names


def test_golden_key_layout_is_reproduced_from_the_inferred_config():
    spec = json.loads((SAM_CASE / "case.json").read_text())
    shapes = {key: tuple(shape) for key, shape in spec["state_dict_keys"]}
    config = SamConfig.from_state_dict(shapes)
    assert config.encoder_embed_dim == spec["encoder"]["encoder_embed_dim"]
    assert config.encoder_num_heads == spec["encoder"]["encoder_num_heads"]
    assert list(config.encoder_global_attn_indexes) == spec["encoder"]["encoder_global_attn_indexes"]
    assert list(original_key_shapes(config).items()) == list(shapes.items())
    assert sum(int(np.prod(s)) for s in shapes.values()) == spec["num_params"]


def test_visa7b_sam_keys_under_prefix_are_vit_h():
    layout = json.loads((GOLDEN / "visa7b_keys.json").read_text())
    prefix = "model.visual_model."
    shapes = {key: tuple(shape) for key, shape, *_ in layout["keys"]}
    config = SamConfig.from_state_dict(shapes, prefix=prefix)
    assert config == SamConfig.preset("vit_h")
    sam_keys = {k[len(prefix) :]: s for k, s in shapes.items() if k.startswith(prefix)}
    assert original_key_shapes(config) == sam_keys
    assert len(sam_keys) == layout["prefix_summary"]["model.visual_model"]["tensors"]


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_checkpoint_written_in_original_layout_loads_from_disk(tmp_path, tiny_state, tiny_model, suffix):
    path = tmp_path / f"sam_tiny{suffix}"
    if suffix == ".pth":
        torch.save(tiny_state, path)
    else:
        from safetensors.torch import save_file

        save_file(tiny_state, str(path))
    loaded = load_sam_checkpoint(path)
    assert set(loaded) == set(tiny_state)
    model = SamTextPromptModel.from_original_state_dict(loaded)
    assert model.config == TINY
    # the weights really landed where the original names say
    decoder = model.mask_decoder.decoder
    assert torch.equal(decoder.iou_token.weight, tiny_state["mask_decoder.iou_token.weight"])
    assert torch.equal(
        decoder.iou_prediction_head.proj_out.weight, tiny_state["mask_decoder.iou_prediction_head.layers.3.weight"]
    )
    assert torch.equal(
        decoder.iou_prediction_head.layers[1].bias, tiny_state["mask_decoder.iou_prediction_head.layers.2.bias"]
    )
    assert torch.equal(model.image_encoder.vision.neck.conv2.weight, tiny_state["image_encoder.neck.2.weight"])
    image = frame(45, 70)
    text = torch.randn(2, 1, TINY.prompt_embed_dim, generator=torch.Generator().manual_seed(3))
    logits, iou = model.segment(image, text)
    want_logits, want_iou = tiny_model.segment(image, text)
    assert logits.shape == (2, 1, 45, 70) and iou.shape == (2, 1)
    assert torch.equal(logits, want_logits) and torch.equal(iou, want_iou)


def test_loading_over_an_initialised_model_matches_the_fast_path(tiny_state, tiny_model):
    model = SamTextPromptModel(TINY).eval()
    report = model.load_original_state_dict(tiny_state)
    assert report.ok and report.loaded == len(tiny_state)
    for (name, got), (_, want) in zip(model.state_dict().items(), tiny_model.state_dict().items()):
        assert torch.equal(got, want), name


def test_prefixed_checkpoint_with_other_weights(tiny_state, tiny_model):
    prefix = "model.visual_model."
    visa_like = {prefix + key: value for key, value in tiny_state.items()}
    visa_like["model.text_hidden_fcs.0.0.weight"] = torch.zeros(4, 4)
    visa_like["lm_head.weight"] = torch.zeros(3, 4)
    model = SamTextPromptModel(SamConfig.from_state_dict(visa_like, prefix=prefix)).eval()
    report = model.load_original_state_dict(visa_like, prefix=prefix)
    assert report.ok and report.loaded == len(tiny_state)
    assert report.ignored == {"outside the prefix 'model.visual_model.'": 2}
    for (name, got), (_, want) in zip(model.state_dict().items(), tiny_model.state_dict().items()):
        assert torch.equal(got, want), name
    # without the prefix nothing matches, and the report says so by name
    with pytest.raises(SamCheckpointError, match=r"model\.visual_model\.image_encoder\.pos_embed"):
        SamTextPromptModel(TINY).load_original_state_dict(visa_like)


def test_strict_load_reports_missing_unexpected_and_misshaped_keys(tiny_state):
    bad = dict(tiny_state)
    del bad["mask_decoder.mask_tokens.weight"]
    bad["mask_decoder.extra_head.weight"] = torch.zeros(2)
    bad["image_encoder.neck.1.bias"] = torch.zeros(7)
    model = SamTextPromptModel(TINY).eval()
    with pytest.raises(SamCheckpointError) as info:
        model.load_original_state_dict(bad, strict=True)
    message = str(info.value)
    assert "1 missing" in message and "mask_decoder.mask_tokens.weight" in message
    assert "1 unexpected" in message and "mask_decoder.extra_head.weight" in message
    assert "image_encoder.neck.1.bias (7,) (expected (64,))" in message
    with pytest.raises(SamCheckpointError, match="mask_tokens"):
        SamTextPromptModel.from_original_state_dict(bad)

    # non-strict: everything that fits is loaded, the rest is reported
    report = model.load_original_state_dict(bad, strict=False)
    assert not report.ok
    assert report.missing == ["mask_decoder.mask_tokens.weight"]
    assert report.unexpected == ["mask_decoder.extra_head.weight"]
    assert report.loaded == len(tiny_state) - 2
    assert torch.equal(model.mask_decoder.decoder.iou_token.weight, tiny_state["mask_decoder.iou_token.weight"])


def test_config_inference_errors_name_the_key(tiny_state):
    broken = {k: v for k, v in tiny_state.items() if k != "image_encoder.patch_embed.proj.weight"}
    with pytest.raises(SamCheckpointError, match=r"image_encoder\.patch_embed\.proj\.weight"):
        SamConfig.from_state_dict(broken)
    with pytest.raises(SamCheckpointError, match=r"no key starts with the prefix 'nope\.'"):
        SamConfig.from_state_dict(tiny_state, prefix="nope.")
    with pytest.raises(ValueError, match="unknown SAM preset"):
        SamConfig.preset("vit_x")
    assert SamConfig.preset("vit-b").encoder_global_attn_indexes == (2, 5, 8, 11)
    assert SamConfig.preset("vit_l").encoder_depth == 24


@pytest.mark.parametrize(
    ("name", "content", "error", "message"),
    [
        ("sam_missing.pth", None, FileNotFoundError, r"SAM checkpoint not found: .*sam_missing\.pth"),
        ("weights.txt", b"not weights", SamCheckpointError, r"unsupported SAM checkpoint format '\.txt'"),
        ("garbage.pth", b"\x00\x01 definitely not a zip or pickle", SamCheckpointError, r"cannot read .*garbage\.pth"),
    ],
)
def test_checkpoint_file_errors(tmp_path, name, content, error, message):
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(error, match=message):
        load_sam_checkpoint(path)


def test_checkpoint_contents_must_be_a_state_dict_possibly_wrapped(tmp_path):
    not_flat = tmp_path / "nested.pth"
    torch.save({"weights": [torch.zeros(1)]}, not_flat)
    with pytest.raises(SamCheckpointError, match="flat state dict"):
        load_sam_checkpoint(not_flat)
    wrapped = tmp_path / "wrapped.pth"
    torch.save({"model": {"a": torch.ones(2)}}, wrapped)
    assert list(load_sam_checkpoint(wrapped)) == ["a"]


def test_decode_shares_one_image_embedding_or_takes_one_per_prompt(tiny_model):
    generator = torch.Generator().manual_seed(1)
    grid = TINY.image_embedding_size
    embeddings = torch.randn(1, TINY.prompt_embed_dim, grid, grid, generator=generator)
    text = torch.randn(3, 1, TINY.prompt_embed_dim, generator=generator)
    with torch.no_grad():
        shared_logits, shared_iou = tiny_model.decode(embeddings, text)
        per_logits, per_iou = tiny_model.decode(embeddings.expand(3, -1, -1, -1).clone(), text)
        single_logits, single_iou = tiny_model.decode(embeddings, text[1:2])
    assert shared_logits.shape == (3, 1, 4 * grid, 4 * grid) and shared_iou.shape == (3, 1)
    torch.testing.assert_close(per_logits, shared_logits, rtol=0, atol=1e-5)
    torch.testing.assert_close(per_iou, shared_iou, rtol=0, atol=1e-6)
    torch.testing.assert_close(single_logits[0], shared_logits[1], rtol=0, atol=1e-5)
    torch.testing.assert_close(single_iou[0], shared_iou[1], rtol=0, atol=1e-6)
    assert not torch.allclose(shared_logits[0], shared_logits[1]), "different prompts must give different masks"
    with pytest.raises(ValueError, match=r"text_embeds must be \(B, n, 64\)"):
        tiny_model.decode(embeddings, torch.zeros(3, 64))
    with pytest.raises(ValueError, match="must be 1 \\(shared\\) or match the 3 prompts"):
        tiny_model.decode(torch.cat([embeddings, embeddings]), text)


@pytest.mark.parametrize(("height", "width"), [(37, 101), (300, 17), (1, 1), (160, 160), (481, 640)])
def test_preprocess_sizes_and_padding(tiny_model, height, width):
    image = frame(height, width)
    pixel_values, (input_h, input_w) = tiny_model.preprocess(image)
    size = TINY.image_size
    assert pixel_values.shape == (1, 3, size, size) and pixel_values.dtype == torch.float32
    assert max(input_h, input_w) == size
    scale = size / max(height, width)
    assert (input_h, input_w) == (int(height * scale + 0.5), int(width * scale + 0.5))
    assert torch.count_nonzero(pixel_values[..., input_h:, :]) == 0
    assert torch.count_nonzero(pixel_values[..., :, input_w:]) == 0
    with pytest.raises(ValueError, match="HxWx3 uint8"):
        tiny_model.preprocess(image.astype(np.float32))


def _cv2_postprocess(low_res: np.ndarray, input_size, original_size, image_size) -> np.ndarray:
    """Independent reference: OpenCV's bilinear resize also samples at half-pixel centres (align_corners=False)."""
    out = []
    for plane in low_res.reshape(-1, *low_res.shape[-2:]):
        full = cv2.resize(plane, (image_size, image_size), interpolation=cv2.INTER_LINEAR)
        cropped = np.ascontiguousarray(full[: input_size[0], : input_size[1]])
        out.append(cv2.resize(cropped, (original_size[1], original_size[0]), interpolation=cv2.INTER_LINEAR))
    return np.stack(out).reshape(*low_res.shape[:2], *original_size)


@pytest.mark.parametrize("original_size", [(37, 101), (300, 17), (7, 5), (240, 320), (1080, 1919)])
def test_postprocess_masks_to_odd_original_sizes(original_size):
    image_size = 1024
    input_size = longest_side_size(*original_size, image_size)
    low_res = torch.randn(2, 1, 256, 256, generator=torch.Generator().manual_seed(5))
    logits = postprocess_masks(low_res, input_size, original_size, image_size)
    assert logits.shape == (2, 1, *original_size)
    want = _cv2_postprocess(low_res.numpy(), input_size, original_size, image_size)
    np.testing.assert_allclose(logits.numpy(), want, rtol=0, atol=2e-4)
    with pytest.raises(ValueError, match="input_size"):
        postprocess_masks(low_res, (2000, 10), original_size, image_size)


def test_segment_mask_is_positive_logits_at_frame_size(tiny_model):
    image = frame(33, 59, seed=4)
    text = torch.randn(1, 1, TINY.prompt_embed_dim, generator=torch.Generator().manual_seed(9))
    logits, iou = tiny_model.segment(image, text)
    assert logits.shape == (1, 1, 33, 59) and iou.shape == (1, 1)
    assert torch.isfinite(logits).all() and torch.isfinite(iou).all()
    pixel_values, input_size = tiny_model.preprocess(image)
    with torch.no_grad():
        low_res, _ = tiny_model.decode(tiny_model.encode_image(pixel_values), text)
    torch.testing.assert_close(tiny_model.postprocess_masks(low_res, input_size, (33, 59)), logits)


def test_resize_matches_the_golden_pillow_output():
    with np.load(SAM_CASE / "inputs.npz") as inputs:
        original, resized = inputs["frame_rgb_uint8"], inputs["resized_rgb_uint8"]
    size = longest_side_size(*original.shape[:2], 1024)
    assert size == resized.shape[:2]
    assert np.array_equal(resize_bilinear_like_pillow(original, *size), resized)
    padded = normalize_and_pad(resized, 1024)
    assert padded.shape == (1, 3, 1024, 1024)


@pytest.mark.parametrize(
    ("source", "target"),
    [
        ((240, 320), (768, 1024)),
        ((1080, 1920), (576, 1024)),
        ((1920, 1080), (1024, 576)),
        ((633, 169), (333, 89)),
        ((276, 367), (107, 278)),
        ((97, 1500), (66, 1024)),
        ((50, 50), (31, 31)),
        ((120, 120), (10, 70)),
    ],
)
def test_resize_is_bit_exact_with_pillow_when_available(source, target):
    """Pillow 13 is not installed in the project's environment; this runs where it is (it passed with 13.0.0)."""
    pil = pytest.importorskip("PIL.Image", reason="Pillow is not a dependency; install it to run this comparison")
    image = frame(*source, seed=11)
    want = np.asarray(pil.fromarray(image).resize((target[1], target[0]), pil.BILINEAR))
    assert np.array_equal(resize_bilinear_like_pillow(image, *target), want)


def test_from_original_state_dict_casts_to_the_requested_dtype(tiny_state, tiny_model):
    model = SamTextPromptModel.from_original_state_dict(tiny_state, dtype=torch.float64)
    assert all(p.dtype == torch.float64 for p in model.parameters())
    image = frame(40, 52, seed=6)
    text = torch.randn(2, 1, TINY.prompt_embed_dim, generator=torch.Generator().manual_seed(2))
    logits, iou = model.segment(image, text)
    want_logits, want_iou = tiny_model.segment(image, text)
    assert logits.dtype == torch.float32 and logits.shape == want_logits.shape
    torch.testing.assert_close(logits, want_logits, rtol=0, atol=1e-4)
    torch.testing.assert_close(iou.float(), want_iou, rtol=0, atol=1e-5)
