"""The "vlm" sampler end to end with tiny random Qwen2-VL / Qwen2.5-VL checkpoints loaded through the real loader.

The checkpoints are built from configs with random weights (seeded), saved to disk with an offline-trained
tokenizer and a preprocessor config, and loaded back by ``VideoLLMFrameSampler(model_dir=...)``. A random model
answers garbage, so these tests check the mechanics (one prefill, K answers from one generate call, valid index,
seeding, equivalence of the generation paths), and they assert the garbage -> 0.5 fallback as what it is.
"""

import shutil

import numpy as np
import pytest
import torch

from reasonvos_ros.core.errors import BackendUnavailable
from reasonvos_ros.core.registry import build_backend
from reasonvos_ros.core.types import Frame
from reasonvos_ros.models.tfs.parsing import aggregate_answers, position_to_index
from reasonvos_ros.models.tfs.qwen import smart_resize, video_to_patches
from reasonvos_ros.models.tfs.sampler import VideoLLMFrameSampler, format_question, subsample_positions
from reasonvos_ros.models.tfs.tiny import build_tiny_video_llm

K = 10
WINDOW = 30


@pytest.fixture(scope="module", autouse=True)
def _few_threads():
    previous = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def qwen2_vl_dir(tmp_path_factory):
    return build_tiny_video_llm(tmp_path_factory.mktemp("tiny_qwen2_vl"), family="qwen2_vl", seed=0)


@pytest.fixture(scope="module")
def qwen2_5_vl_dir(tmp_path_factory):
    return build_tiny_video_llm(tmp_path_factory.mktemp("tiny_qwen2_5_vl"), family="qwen2_5_vl", seed=0)


@pytest.fixture(scope="module")
def frames():
    rng = np.random.default_rng(0)
    return [Frame(i, 0.1 * i, image=rng.integers(0, 256, (64, 80, 3), dtype=np.uint8)) for i in range(WINDOW)]


# ------------------------------------------------------------------------------------------- preprocessing
def test_smart_resize_keeps_multiples_budget_and_aspect():
    for height, width in [(480, 640), (120, 160), (1080, 1920), (30, 40), (720, 1280), (300, 100)]:
        for min_pixels, max_pixels in [(56 * 56, 224 * 224), (3136, 448 * 448)]:
            new_h, new_w = smart_resize(height, width, 28, min_pixels, max_pixels)
            assert new_h % 28 == 0 and new_w % 28 == 0
            assert min_pixels <= new_h * new_w <= max_pixels
            assert abs(new_w / new_h - width / height) / (width / height) < 0.35
    assert smart_resize(112, 168, 28, 56 * 56, 224 * 224) == (112, 168)  # already fitting: unchanged
    with pytest.raises(ValueError, match="aspect ratio"):
        smart_resize(10, 3000, 28, 56 * 56, 224 * 224)


def test_patch_layout_follows_the_documented_order():
    rng = np.random.default_rng(1)
    video = [rng.integers(0, 256, (56, 84, 3), dtype=np.uint8) for _ in range(4)]
    patches, grid = video_to_patches(video, min_pixels=56 * 56, max_pixels=56 * 84, mean=(0, 0, 0), std=(1, 1, 1))
    assert grid.tolist() == [[2, 4, 6]]
    assert tuple(patches.shape) == (2 * 4 * 6, 3 * 2 * 14 * 14)
    # independent index arithmetic: row (t, h_block, w_block, h_in, w_in), column (channel, time, y, x)
    stacked = np.stack(video).astype(np.float32) / 255.0  # T, H, W, C
    got = patches.numpy().reshape(2, 2, 3, 2, 2, 3, 2, 14, 14)
    for t, hb, wb, hi, wi, c, tt in [(0, 0, 0, 0, 0, 0, 0), (1, 1, 2, 1, 0, 2, 1), (0, 1, 1, 0, 1, 1, 1)]:
        row = (hb * 2 + hi) * 14
        col = (wb * 2 + wi) * 14
        expected = stacked[t * 2 + tt, row : row + 14, col : col + 14, c]
        np.testing.assert_allclose(got[t, hb, wb, hi, wi, c, tt], expected, atol=1e-6)


def test_odd_frame_counts_repeat_the_last_frame():
    frames3 = [np.full((28, 28, 3), value, np.uint8) for value in (10, 20, 30)]
    patches, grid = video_to_patches(frames3, min_pixels=28 * 28, max_pixels=28 * 28, mean=(0, 0, 0), std=(1, 1, 1))
    assert grid.tolist() == [[2, 2, 2]]
    values = patches.numpy().reshape(2, 4, 3, 2, 14 * 14)  # t, patch, channel, time, pixels
    assert np.allclose(values[1, :, :, 0], 30 / 255) and np.allclose(values[1, :, :, 1], 30 / 255)
    assert np.allclose(values[0, :, :, 0], 10 / 255) and np.allclose(values[0, :, :, 1], 20 / 255)


def test_frames_of_other_sizes_are_resized_to_the_first_one():
    mixed = [np.zeros((120, 160, 3), np.uint8), np.zeros((60, 80, 3), np.uint8)]
    _, grid = video_to_patches(mixed, min_pixels=56 * 56, max_pixels=224 * 224)
    assert grid.tolist() == [[1, 8, 12]]
    with pytest.raises(ValueError, match="uint8"):
        video_to_patches([np.zeros((28, 28, 3), np.float32)])
    with pytest.raises(ValueError, match="HxWx3"):
        video_to_patches([np.zeros((28, 28), np.uint8)])


def test_matches_transformers_image_processor_when_pillow_is_installed():
    """Cross-check with transformers' own (Pillow) Qwen2-VL image processor: identical patches for a frame that
    needs no resizing (an image is a 2-frame video of itself). Skipped where Pillow is not installed."""
    pytest.importorskip("PIL")
    from transformers import Qwen2VLImageProcessorPil

    image = np.random.default_rng(2).integers(0, 256, (112, 168, 3), dtype=np.uint8)
    reference = Qwen2VLImageProcessorPil(min_pixels=56 * 56, max_pixels=224 * 224)(images=[image], return_tensors="np")
    patches, grid = video_to_patches([image, image], min_pixels=56 * 56, max_pixels=224 * 224)
    assert grid.tolist() == reference["image_grid_thw"].tolist()
    np.testing.assert_allclose(patches.numpy(), reference["pixel_values"], atol=1e-6)


# ---------------------------------------------------------------------------------------------- end to end
class CallLog:
    """Counts vision-encoder runs, language-model forward shapes and generate calls of a loaded model."""

    def __init__(self, model):
        self.vision_runs = 0
        self.lm_shapes = []
        self.generate_calls = []
        model.model.visual.register_forward_pre_hook(self._vision)
        model.model.language_model.register_forward_pre_hook(self._language, with_kwargs=True)
        original = model.generate

        def counting_generate(*args, **kwargs):
            self.generate_calls.append(tuple(kwargs["input_ids"].shape))
            return original(*args, **kwargs)

        model.generate = counting_generate

    def _vision(self, module, args):
        self.vision_runs += 1

    def _language(self, module, args, kwargs):
        embeds = kwargs.get("inputs_embeds")
        self.lm_shapes.append(tuple(embeds.shape[:2]))


def test_end_to_end_k_answers_from_one_prefill_and_one_generate(qwen2_vl_dir, frames):
    sampler = build_backend("sampler", "vlm", {"model_dir": str(qwen2_vl_dir), "seed": 3, "k": K})
    log = CallLog(sampler.answerer.model)
    choice = sampler.sample(frames, "the red ball")

    prompt_tokens = choice.details["model"]["prompt_tokens"]
    assert log.vision_runs == 1
    assert log.generate_calls == [(K, prompt_tokens)]  # one generate call, K sequences
    assert log.lm_shapes[0] == (1, prompt_tokens - 1)  # the single prefill: batch 1, all but the last token
    assert all(shape == (K, 1) for shape in log.lm_shapes[1:])  # then only one new token per sequence and step
    assert 2 <= len(log.lm_shapes) <= 1 + sampler.answerer.max_new_tokens

    assert len(choice.details["answers"]) == K
    assert 0 <= choice.key < WINDOW
    assert choice.details["shown_positions"] == subsample_positions(WINDOW, 16)
    assert choice.details["model"]["video_grid_thw"] == [8, 4, 6]  # 16 frames in pairs, 56x84 pixels
    # The key follows from the answers exactly as the spec says ...
    estimate = aggregate_answers(choice.details["answers"])
    assert choice.key == position_to_index(estimate.position, WINDOW)
    assert choice.confidence == estimate.confidence
    # ... and a random model's answers are byte garbage: with this seed none parses, so the 0.5 fallback applies.
    assert choice.details["parsed_count"] == 0 and choice.details["fallback"] is True
    assert choice.key == WINDOW // 2 and choice.confidence == 0.0


def test_seeded_sampling_is_deterministic_and_really_samples(qwen2_vl_dir, frames):
    sampler = VideoLLMFrameSampler(model_dir=qwen2_vl_dir, seed=5, max_new_tokens=8)
    first = sampler.sample(frames, "the red ball").details["answers"]
    torch.manual_seed(1234)
    expected_next_draw = torch.rand(3)
    torch.manual_seed(1234)
    second = sampler.sample(frames, "the red ball").details["answers"]
    assert torch.equal(torch.rand(3), expected_next_draw)  # the caller's global RNG stream is left alone
    assert first == second
    # the checkpoint ships near-greedy defaults (top_k=1); the sampler's explicit settings must override them
    assert len(set(first)) > 1
    other_seed = VideoLLMFrameSampler(model_dir=qwen2_vl_dir, seed=6, max_new_tokens=8)
    assert other_seed.sample(frames, "the red ball").details["answers"] != first


@pytest.mark.parametrize("family", ["qwen2_vl", "qwen2_5_vl"])
def test_shared_prefill_gives_the_same_samples_as_num_return_sequences(family, request, frames):
    """Prefill once + repeated KV cache must be the same computation as generate(num_return_sequences=K), which
    prefills K copies: same seed -> same tokens (this also checks the M-RoPE position offset after the prefill)."""
    model_dir = request.getfixturevalue(f"{family}_dir")
    options = {"seed": 11, "max_new_tokens": 6, "max_frames": 6}
    shared = VideoLLMFrameSampler(model_dir=model_dir, generation="prefix_cache", **options)
    expanded = VideoLLMFrameSampler(model_dir=model_dir, generation="num_return_sequences", **options)
    answers = shared.sample(frames, "the dog").details["answers"]
    assert answers == expanded.sample(frames, "the dog").details["answers"]
    assert len(answers) == K and len(set(answers)) > 1


def test_greedy_prefix_cache_matches_a_plain_generate(qwen2_5_vl_dir, frames):
    sampler = VideoLLMFrameSampler(model_dir=qwen2_5_vl_dir, temperature=0.0, k=3, max_new_tokens=6, max_frames=4)
    answers = sampler.sample(frames, "the dog").details["answers"]
    answerer = sampler.answerer
    images = [frames[i].image for i in subsample_positions(WINDOW, 4)]
    stamps = [frames[i].stamp for i in subsample_positions(WINDOW, 4)]
    inputs = answerer.build_inputs(images, format_question("paper", "the dog"), stamps)
    assert inputs["second_per_grid_ts"].tolist() == pytest.approx([2 / (3 / (stamps[-1] - stamps[0]))])
    with torch.inference_mode():
        plain = answerer.model.generate(**inputs, generation_config=answerer._generation_config(1))
    reference = answerer.tokenizer.decode(plain[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
    assert answers == [reference.strip()] * 3


def test_sequential_mode_runs_k_generate_calls(qwen2_vl_dir, frames):
    sampler = VideoLLMFrameSampler(model_dir=qwen2_vl_dir, generation="sequential", k=3, max_new_tokens=4, seed=0)
    log = CallLog(sampler.answerer.model)
    choice = sampler.sample(frames, "the cup")
    assert len(log.generate_calls) == 3 and log.vision_runs == 3
    assert len(choice.details["answers"]) == 3 and 0 <= choice.key < WINDOW


def test_release_frees_the_model_and_the_next_call_reloads(qwen2_vl_dir, frames):
    sampler = VideoLLMFrameSampler(model_dir=qwen2_vl_dir, k=2, max_new_tokens=3, seed=0)
    before = sampler.sample(frames[:5], "the cup").details["answers"]
    sampler.release()
    assert sampler.answerer.model is None
    assert sampler.sample(frames[:5], "the cup").details["answers"] == before
    assert sampler.answerer.model is not None
    assert sampler.answerer.trust_remote_code is False


def test_incomplete_checkpoints_name_what_is_missing(qwen2_vl_dir, tmp_path):
    partial = tmp_path / "partial"
    partial.mkdir()
    shutil.copy(qwen2_vl_dir / "config.json", partial)
    with pytest.raises(BackendUnavailable, match="no tokenizer files"):
        VideoLLMFrameSampler(model_dir=partial)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(qwen2_vl_dir / name, partial)
    with pytest.raises(BackendUnavailable, match=r"model\.safetensors"):
        VideoLLMFrameSampler(model_dir=partial)
