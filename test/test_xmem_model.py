"""XMem model package: checkpoint layout and loading, memory maths against brute force, streaming semantics of the
inference core, and the golden case reproduced through the shared golden command path."""

from __future__ import annotations

import json
import math
import pathlib

import numpy as np
import pytest
import torch

from reasonvos_ros.golden import load_case, xmem_stream
from reasonvos_ros.models.xmem.checkpoint import (
    CheckpointError,
    build_network,
    load_network,
    load_state_dict,
    state_dict_shapes,
)
from reasonvos_ros.models.xmem.inference import FrameGeometry, InferenceSettings, XMemInference
from reasonvos_ros.models.xmem.memory import MemorySettings, MemoryStore, similarity
from reasonvos_ros.models.xmem.network import XMemConfig, XMemNetwork
from reasonvos_ros.models.xmem.tiny import TINY_CONFIG as TINY
from reasonvos_ros.models.xmem.tiny import golden_weights

GOLDEN = pathlib.Path(__file__).parent / "golden_data"


pytestmark = pytest.mark.usefixtures("torch_one_thread")


def tiny_state(seed: int = 3) -> dict[str, torch.Tensor]:
    return golden_weights(TINY, seed)


@pytest.fixture(scope="module")
def tiny_network() -> XMemNetwork:
    return build_network(tiny_state())


# ---- layout and checkpoints -------------------------------------------------------------------------------------


def test_default_network_has_the_published_checkpoint_layout():
    published = json.loads((GOLDEN / "xmem_keys.json").read_text())
    with torch.device("meta"):
        state = XMemNetwork().state_dict()
    ours = [[k, list(v.shape), str(v.dtype).removeprefix("torch.")] for k, v in state.items()]
    assert len(ours) == published["num_tensors"] == 412
    assert ours == published["keys"]  # names, shapes, dtypes and order
    assert sum(math.prod(v.shape) for v in state.values()) == published["num_elements"]


def test_dimensions_are_read_from_the_checkpoint():
    with torch.device("meta"):
        assert XMemConfig.from_state_dict(XMemNetwork().state_dict()) == XMemConfig()
        assert XMemConfig.from_state_dict(XMemNetwork(TINY).state_dict()) == TINY
        no_hidden = XMemConfig(hidden_dim=0, single_object=True, key_dim=32, value_dim=256)
        assert XMemConfig.from_state_dict(XMemNetwork(no_hidden).state_dict()) == no_hidden


def test_bad_checkpoint_gets_a_key_report(tmp_path):
    state = tiny_state()
    del state["decoder.pred.bias"]
    state["decoder.extra.weight"] = torch.zeros(3)
    state["key_proj.e_proj.bias"] = torch.zeros(5)
    with pytest.raises(CheckpointError) as info:
        build_network(state, source="bad.pth")
    message = str(info.value)
    assert "bad.pth" in message
    assert "1 missing: decoder.pred.bias" in message
    assert "1 unexpected: decoder.extra.weight" in message
    assert "1 wrong shape: key_proj.e_proj.bias (5,) (expected (8,))" in message


def test_loader_rejects_files_that_are_not_xmem_state_dicts(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nowhere\.pth"):
        load_state_dict(tmp_path / "nowhere.pth")
    torch.save({"epoch": 3}, tmp_path / "meta.pth")
    with pytest.raises(CheckpointError, match="does not hold a state dict of tensors"):
        load_state_dict(tmp_path / "meta.pth")
    torch.save({"conv.weight": torch.zeros(2)}, tmp_path / "other.pth")
    with pytest.raises(CheckpointError, match=r"not an XMem state dict: missing key_proj\.key_proj\.weight"):
        load_network(tmp_path / "other.pth")
    torch.save(FrameGeometry.for_input(4, 4), tmp_path / "pickled_object.pth")  # weights_only refuses classes
    with pytest.raises(CheckpointError, match="weights-only"):
        load_state_dict(tmp_path / "pickled_object.pth")


# ---- memory maths ------------------------------------------------------------------------------------------------


def brute_similarity(mem_key, mem_shrinkage, query_key, query_selection):
    diff = query_key[:, None, :] - mem_key[None, :, :]  # Q x N x C
    return -(query_selection[:, None, :] * diff**2).sum(-1) * mem_shrinkage[None] / math.sqrt(mem_key.shape[1])


def test_similarity_is_the_anisotropic_l2_of_the_paper():
    gen = torch.Generator().manual_seed(0)
    mk, qk = torch.randn(40, 6, generator=gen), torch.randn(9, 6, generator=gen)
    ms, qe = torch.rand(40, generator=gen) + 1, torch.rand(9, 6, generator=gen)
    torch.testing.assert_close(similarity(mk, ms, qk, qe), brute_similarity(mk, ms, qk, qe), rtol=1e-5, atol=1e-4)


def frame_tensors(gen, channels=6, grid=(2, 3), value_dim=5):
    key = torch.randn(1, channels, *grid, generator=gen)
    shrinkage = torch.rand(1, 1, *grid, generator=gen) + 1
    selection = torch.rand(1, channels, *grid, generator=gen)
    value = torch.randn(value_dim, *grid, generator=gen)
    return key, shrinkage, selection, value


def add_two_frames_b_from_the_second(store: MemoryStore, gen):
    """Two memory frames: object "a" on both, "b" only on the second. Returns the second frame's
    (key, shrinkage, selection, value of a, value of b)."""
    key, shrink, sel, value_a = frame_tensors(gen)
    store.add(key, shrink, sel, {"a": value_a})
    key, shrink, sel, value_a = frame_tensors(gen)
    _, _, _, value_b = frame_tensors(gen)
    store.add(key, shrink, sel, {"a": value_a, "b": value_b})
    return key, shrink, sel, value_a, value_b


def dense_readout(store: MemoryStore, obj_id, query_key, query_selection, top_k):
    qk = query_key.flatten(2)[0].T
    qe = query_selection.flatten(2)[0].T
    sim = brute_similarity(store.keys, store.shrinkage, qk, qe)
    valid = store.valid[obj_id]
    sim = sim[:, valid]
    k = min(top_k, sim.shape[1])
    top = sim.topk(k, dim=1)
    weights = torch.zeros_like(sim).scatter_(1, top.indices, torch.softmax(top.values, dim=1))
    return (weights @ store.values[obj_id][valid]).T.reshape(-1, *query_key.shape[-2:])


def test_readout_is_top_k_softmax_over_each_objects_valid_memory():
    gen = torch.Generator().manual_seed(1)
    store = MemoryStore(MemorySettings(top_k=4, enable_long_term=False))
    add_two_frames_b_from_the_second(store, gen)
    assert store.valid["b"].tolist() == [False] * 6 + [True] * 6
    assert store.valid["a"].all()
    query_key, _, query_selection, _ = frame_tensors(gen)
    out = store.read(query_key, query_selection)
    for obj_id in ("a", "b"):
        want = dense_readout(store, obj_id, query_key, query_selection, top_k=4)
        torch.testing.assert_close(out[obj_id], want, rtol=1e-5, atol=1e-5)
    # usage: every read adds each element's summed affinity and one unit of life
    assert float(store.use.sum()) == pytest.approx(6.0, rel=1e-5)  # 6 query pixels, weights sum to 1 each
    assert torch.allclose(store.life, torch.full((12,), 1 + 1e-7))


def test_consolidation_turns_the_middle_of_working_memory_into_prototypes():
    gen = torch.Generator().manual_seed(2)
    settings = MemorySettings(
        top_k=3, min_mid_term_frames=2, max_mid_term_frames=3, num_prototypes=2, max_long_term_elements=100
    )
    store = MemoryStore(settings)
    frames = [frame_tensors(gen) for _ in range(3)]
    for i, (key, shrink, sel, value) in enumerate(frames[:2]):
        store.add(key, shrink, sel, {"a": value})
        if i == 1:
            query = frame_tensors(gen)
            store.read(query[0], query[2])
    before = {name: getattr(store, name).clone() for name in ("keys", "shrinkage", "selection", "use", "life")}
    values_before = store.values["a"].clone()
    key, shrink, sel, value = frames[2]
    store.add(key, shrink, sel, {"a": value})  # third working frame: compress frame 1 (elements 6..11)
    assert store.compress_count == 1 and store.long_size == 2 and store.work_size == 12
    cand = slice(6, 12)
    usage = before["use"][cand] / before["life"][cand]
    proto = usage.topk(2).indices
    torch.testing.assert_close(store.keys[:2], before["keys"][cand][proto])
    sim = brute_similarity(before["keys"][cand], before["shrinkage"][cand], before["keys"][cand][proto],
                           before["selection"][cand][proto])  # fmt: skip
    affinity = torch.softmax(sim, dim=1)
    torch.testing.assert_close(store.shrinkage[:2], affinity @ before["shrinkage"][cand], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(store.values["a"][:2], affinity @ values_before[cand], rtol=1e-5, atol=1e-5)
    # working memory keeps the first frame and the newest one
    torch.testing.assert_close(store.keys[2:8], before["keys"][:6])
    torch.testing.assert_close(store.keys[8:], key.flatten(2)[0].T)


def test_long_term_memory_stays_bounded():
    gen = torch.Generator().manual_seed(3)
    for count_usage in (True, False):
        settings = MemorySettings(
            top_k=3,
            min_mid_term_frames=2,
            max_mid_term_frames=3,
            num_prototypes=4,
            max_long_term_elements=10,
            count_long_term_usage=count_usage,
        )
        store = MemoryStore(settings)
        for _ in range(30):
            key, shrink, sel, value = frame_tensors(gen)
            store.add(key, shrink, sel, {"a": value})
            query = frame_tensors(gen)
            store.read(query[0], query[2])
            assert store.long_size <= 10 and store.work_size <= 3 * 6
        assert store.compress_count == 28 and store.removed_long_term > 0


# ---- inference core -----------------------------------------------------------------------------------------------


def run_core(network, settings, frames, seeds, end_last=False):
    """seeds: {frame_number: {id: mask}}; returns (core, list of (ids, prob))."""
    core = XMemInference(network, settings)
    geometry = FrameGeometry.for_input(*frames[0].shape[:2], shorter_side=None)
    outputs = []
    with torch.inference_mode():
        for t, frame in enumerate(frames):
            image = geometry.image_tensor(frame)
            masks = {k: geometry.mask_tensor(v) for k, v in seeds.get(t, {}).items()}
            ids, prob = core.step(image, network.encode_key(image), masks, end=end_last and t == len(frames) - 1)
            outputs.append((ids, geometry.restore(prob)))
    return core, outputs


def random_frames(count, height=48, width=64, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (height, width, 3), dtype=np.uint8) for _ in range(count)]


def box(height, width, top, left, size):
    mask = np.zeros((height, width), bool)
    mask[top : top + size, left : left + size] = True
    return mask


def test_memory_frames_follow_mem_every_and_seeds(tiny_network):
    settings = InferenceSettings.from_options(mem_every=3, enable_long_term=False)
    frames = random_frames(12)
    seeds = {0: {"a": box(48, 64, 5, 5, 16)}, 7: {"b": box(48, 64, 20, 30, 16)}}
    core, outputs = run_core(tiny_network, settings, frames, seeds, end_last=True)
    # every 3rd frame, a seed forces a memory frame and restarts the count, the end frame is never memorised
    assert list(core.memory_frames) == [0, 3, 6, 7, 10]
    assert core.memory.work_frames == 5
    assert [ids for ids, _ in outputs][6:8] == [["a"], ["a", "b"]]
    for _, prob in outputs:
        torch.testing.assert_close(prob.sum(0), torch.ones(prob.shape[1:]), rtol=0, atol=1e-5)


def test_sensory_memory_updates(tiny_network):
    settings = InferenceSettings.from_options(mem_every=2, enable_long_term=False)
    core = XMemInference(tiny_network, settings)
    frames = random_frames(5, seed=1)
    geometry = FrameGeometry.for_input(48, 64, shorter_side=None)
    hidden = []
    with torch.inference_mode():
        for t, frame in enumerate(frames):
            image = geometry.image_tensor(frame)
            masks = {"a": geometry.mask_tensor(box(48, 64, 8, 8, 20))} if t == 0 else None
            core.step(image, tiny_network.encode_key(image), masks, end=t == 4)
            hidden.append(core.hidden.clone())
    assert hidden[0].abs().sum() > 0  # deep update of the zero state on the seed frame
    assert not torch.equal(hidden[1], hidden[0])  # decoder update (frame 1)
    assert not torch.equal(hidden[2], hidden[1])  # deep update (memory frame 2)
    assert torch.equal(hidden[4], hidden[3])  # end frame: no update


def test_settings_are_validated():
    with pytest.raises(ValueError, match="min_mid_term_frames < max_mid_term_frames"):
        InferenceSettings.from_options(min_mid_term_frames=5, max_mid_term_frames=5)
    with pytest.raises(ValueError, match="mem_every"):
        InferenceSettings.from_options(mem_every=0)
    with pytest.raises(TypeError, match="unknown XMem inference option"):
        InferenceSettings.from_options(mem_evry=3)


def test_frame_geometry_resizes_the_shorter_side_and_pads_evenly():
    geometry = FrameGeometry.for_input(37, 53, shorter_side=None)
    assert geometry.padded_hw == (48, 64) and geometry.pad == (5, 6, 5, 6)
    geometry = FrameGeometry.for_input(720, 1280, shorter_side=480)
    assert geometry.resized_hw == (480, 853) and geometry.padded_hw == (480, 864)
    image = np.full((720, 1280, 3), 255, np.uint8)
    tensor = geometry.image_tensor(image)
    assert tensor.shape == (1, 3, 480, 864)
    assert float(tensor[0, 0, 0, 0]) == 0.0  # padding is zero after normalisation
    assert float(tensor[0, 0, 10, 10]) == pytest.approx((1 - 0.485) / 0.229)
    prob = torch.rand(3, 480, 864)
    assert geometry.restore(prob).shape == (3, 720, 1280)


# ---- golden -------------------------------------------------------------------------------------------------------


def test_golden_case_reproduced_with_a_checkpoint_loaded_from_disk(tmp_path):
    """The golden weights go through torch.save and the real (weights-only, strict) loader, then the golden
    runner compares the stream with the official outputs at the case's tolerances."""
    case = load_case(GOLDEN / "cases" / "xmem_stream")
    state = {k: torch.from_numpy(v) for k, v in case.weights(state_dict_shapes(XMemConfig())).items()}
    path = tmp_path / "XMem.pth"
    torch.save(state, path)
    network = load_network(path)
    assert network.config == XMemConfig() and not network.training
    loaded = network.state_dict()
    assert list(loaded) == list(state) and all(torch.equal(loaded[k], state[k]) for k in state)
    del state, loaded
    checks = xmem_stream.run(case, network)
    report = "\n".join(c.line() for c in checks)
    assert len(checks) == 5, report
    assert all(c.passed for c in checks), report
