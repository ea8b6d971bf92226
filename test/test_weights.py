"""models/weights.py: safe reading of weight files, the load report, the device/dtype resolver."""

from __future__ import annotations

import json
import pathlib

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from reasonvos_ros.core.errors import BackendUnavailable, ConfigError
from reasonvos_ros.models.weights import (
    LoadReport,
    WeightsError,
    as_tensor,
    compare_state_dict,
    iter_tensors,
    read_state_dict,
    resolve_device,
    resolve_device_dtype,
    resolve_dtype,
    weight_files,
)


def tiny_tensors() -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    return {
        "layer.weight": torch.randn(3, 4, generator=generator),
        "layer.bias": torch.randn(3, generator=generator).to(torch.bfloat16),
        "steps": torch.tensor([7, -2], dtype=torch.int64),
    }


def assert_same(got: dict[str, torch.Tensor], want: dict[str, torch.Tensor]) -> None:
    assert set(got) == set(want)
    for key, tensor in want.items():
        assert got[key].dtype == tensor.dtype, key
        assert torch.equal(got[key], tensor), key


# ---- reading ---------------------------------------------------------------------------------------------------


def test_safetensors_round_trip(tmp_path):
    tensors = tiny_tensors()
    path = tmp_path / "tiny.safetensors"
    save_file(tensors, str(path))
    assert_same(read_state_dict(path), tensors)
    assert {key for key, _ in iter_tensors(path)} == set(tensors)


@pytest.mark.parametrize("suffix", [".pth", ".pt", ".bin", ".ckpt"])
@pytest.mark.parametrize("mmap", [False, True])
def test_torch_round_trip(tmp_path, suffix, mmap):
    tensors = tiny_tensors()
    path = tmp_path / f"tiny{suffix}"
    torch.save(tensors, path)
    assert_same(read_state_dict(path, mmap=mmap), tensors)


def test_legacy_torch_format_is_read_even_when_mapping_is_asked_for(tmp_path):
    tensors = tiny_tensors()
    path = tmp_path / "legacy.pth"
    torch.save(tensors, path, _use_new_zipfile_serialization=False)  # the pre-1.6 format cannot be memory-mapped
    assert_same(read_state_dict(path, mmap=True), tensors)


@pytest.mark.parametrize("wrapper", ["model", "state_dict"])
def test_training_wrappers_are_unwrapped(tmp_path, wrapper):
    tensors = tiny_tensors()
    path = tmp_path / "wrapped.pth"
    torch.save({wrapper: tensors, "epoch": 3}, path)
    assert_same(read_state_dict(path), tensors)


def _leave_mark(path: str) -> None:
    pathlib.Path(path).write_text("unpickling ran code from the checkpoint")


class _Payload:
    """Unpickling this calls ``_leave_mark``: what a malicious checkpoint does."""

    def __init__(self, marker: pathlib.Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return _leave_mark, (str(self.marker),)


def test_weights_only_refuses_a_pickled_object_and_runs_none_of_its_code(tmp_path):
    marker = tmp_path / "marker.txt"
    path = tmp_path / "unsafe.pth"
    torch.save({"layer.weight": torch.zeros(2), "extra": _Payload(marker)}, path)
    with pytest.raises(WeightsError, match="weights-only") as info:
        read_state_dict(path)
    assert str(path) in str(info.value)
    assert not marker.exists()
    # the file really is a payload: an unrestricted load runs it (shows the check above can fail)
    torch.load(path, weights_only=False)
    assert marker.exists()


def test_contents_that_are_not_a_flat_state_dict_are_refused(tmp_path):
    path = tmp_path / "list.pth"
    torch.save([torch.zeros(1)], path)
    with pytest.raises(WeightsError, match=r"does not hold a state dict of tensors.*got list"):
        read_state_dict(path)
    nested = tmp_path / "nested.pth"
    torch.save({"weights": [torch.zeros(1)]}, nested)
    with pytest.raises(WeightsError, match="got dict with list values"):
        read_state_dict(nested)


def test_missing_unsupported_and_corrupt_files(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"SAM checkpoint not found: .*nowhere\.pth"):
        read_state_dict(tmp_path / "nowhere.pth", what="SAM checkpoint")
    with pytest.raises(WeightsError, match="path is not a file"):
        read_state_dict(tmp_path)
    text = tmp_path / "weights.txt"
    text.write_text("not weights")
    with pytest.raises(WeightsError, match=r"unsupported checkpoint format '\.txt'"):
        read_state_dict(text)
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"\x00\x01 not a safetensors header")
    with pytest.raises(WeightsError, match="not a readable safetensors file"):
        read_state_dict(garbage)
    garbage_pth = tmp_path / "garbage.pth"
    garbage_pth.write_bytes(b"\x00\x01 definitely not a zip or pickle")
    with pytest.raises(WeightsError, match=r"cannot read .*garbage\.pth as a weights-only torch checkpoint"):
        read_state_dict(garbage_pth, mmap=True)


def test_the_callers_error_class_is_raised(tmp_path):
    class ModelError(WeightsError):
        pass

    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"junk")
    with pytest.raises(ModelError):
        read_state_dict(garbage, error=ModelError)
    with pytest.raises(ModelError, match="checkpoint directory not found"):
        weight_files(tmp_path / "none", error=ModelError)


def test_as_tensor():
    array = np.arange(12, dtype=np.float32).reshape(3, 4).T  # not contiguous
    tensor = as_tensor(array, "k")
    assert tensor.is_contiguous() and torch.equal(tensor, torch.from_numpy(array.copy()))
    same = torch.ones(2)
    assert as_tensor(same, "k") is same
    with pytest.raises(WeightsError, match="value of 'k' is a list, not a tensor"):
        as_tensor([1.0], "k")


# ---- Hugging Face directories ----------------------------------------------------------------------------------


def test_weight_files_single_and_sharded(tmp_path):
    single = tmp_path / "single"
    single.mkdir()
    save_file(tiny_tensors(), str(single / "model.safetensors"))
    assert weight_files(single) == ([single / "model.safetensors"], None)

    sharded = tmp_path / "sharded"
    sharded.mkdir()
    tensors = tiny_tensors()
    names = list(tensors)
    save_file({k: tensors[k] for k in names[:2]}, str(sharded / "model-00001-of-00002.safetensors"))
    save_file({k: tensors[k] for k in names[2:]}, str(sharded / "model-00002-of-00002.safetensors"))
    weight_map = {k: f"model-0000{1 if i < 2 else 2}-of-00002.safetensors" for i, k in enumerate(names)}
    (sharded / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    files, total = weight_files(sharded)
    assert [f.name for f in files] == ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"]
    assert total == 3
    assert_same(dict(pair for f in files for pair in iter_tensors(f)), tensors)

    (sharded / "model-00002-of-00002.safetensors").unlink()
    with pytest.raises(WeightsError, match=r"shards listed in .* are missing: model-00002-of-00002"):
        weight_files(sharded)
    (sharded / "model.safetensors.index.json").write_text("{}")
    with pytest.raises(WeightsError, match="not a valid shard index"):
        weight_files(sharded)


def test_weight_files_bin_layout_and_empty_directory(tmp_path):
    torch.save(tiny_tensors(), tmp_path / "pytorch_model.bin")
    assert weight_files(tmp_path) == ([tmp_path / "pytorch_model.bin"], None)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(WeightsError, match=r"no weights in .*model\.safetensors"):
        weight_files(empty)


# ---- load report -----------------------------------------------------------------------------------------------


def test_compare_state_dict_names_every_kind_of_problem():
    expected = {"a.weight": (2, 3), "a.bias": (2,), "b.weight": (4,)}
    state = {"a.weight": torch.zeros(2, 3), "a.bias": torch.zeros(5), "c.weight": torch.zeros(1)}
    report = compare_state_dict(state, expected, source="bad.pth")
    assert not report.ok
    assert report.loaded == 1
    assert report.missing == ["b.weight"]
    assert report.unexpected == ["c.weight"]
    assert report.shape_mismatches == ["a.bias (5,) (expected (2,))"]
    assert report.lines() == [
        "bad.pth: 1 tensors loaded, 1 missing, 1 unexpected, 1 with the wrong shape",
        "  1 missing: b.weight",
        "  1 unexpected: c.weight",
        "  1 wrong shape: a.bias (5,) (expected (2,))",
    ]
    good = compare_state_dict({"a.weight": torch.zeros(2, 3)}, {"a.weight": (2, 3)})
    assert (
        good.ok
        and good.loaded == 1
        and str(good) == "state dict: 1 tensors loaded, 0 missing, 0 unexpected, 0 with the wrong shape"
    )


def test_report_counts_ignored_keys_notes_and_cuts_long_lists():
    report = LoadReport("VISA (dir)")
    report.ignore("position_ids buffers")
    report.ignore("position_ids buffers")
    report.ignore("text-side CLIP keys", 5)
    report.notes.append("a note")
    report.missing = [f"k{i}" for i in range(20)]
    text = str(report)
    assert report.ignored == {"position_ids buffers": 2, "text-side CLIP keys": 5}
    assert "  ignored 2 keys: position_ids buffers" in text and "  ignored 5 keys: text-side CLIP keys" in text
    assert "  note: a note" in text
    assert "  20 missing: k0, k1," in text and "k14 ... and 5 more" in text and "k15" not in text
    assert report.fits("x", (1, 2), (1, 2)) and report.ok is False


# ---- device and dtype ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("cuda", [False, True])
def test_auto_device_follows_cuda_availability(monkeypatch, cuda):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    want = torch.device("cuda" if cuda else "cpu")
    assert resolve_device("auto") == want and resolve_device(None) == want


def test_named_devices_and_bad_ones(monkeypatch):
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")
    with pytest.raises(ConfigError, match="XMem option device: unknown device 'gpu'"):
        resolve_device("gpu", option="XMem option device")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(BackendUnavailable, match="'cuda:1' was requested but torch sees no CUDA device"):
        resolve_device("cuda:1")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("cuda:1") == torch.device("cuda", 1)


@pytest.mark.parametrize(
    ("bf16_supported", "model_allows_bf16", "want"),
    [(True, True, torch.bfloat16), (False, True, torch.float16), (True, False, torch.float16)],
)
def test_auto_dtype_on_gpu(monkeypatch, bf16_supported, model_allows_bf16, want):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: bf16_supported)
    assert resolve_dtype("auto", "cuda", bfloat16_on_gpu=model_allows_bf16) == want


def test_auto_dtype_on_cpu_and_names():
    assert resolve_dtype("auto", "cpu") == torch.float32
    assert resolve_dtype(None, torch.device("cpu")) == torch.float32
    for names, want in (
        (("float32", "fp32", "FP32"), torch.float32),
        (("bfloat16", "bf16"), torch.bfloat16),
        (("float16", "fp16"), torch.float16),
    ):
        for name in names:
            assert resolve_dtype(name, "cpu") == want, name
    assert resolve_dtype(torch.float16, "cpu") == torch.float16


def test_unknown_or_disallowed_dtype_is_a_config_error_naming_the_option():
    with pytest.raises(
        ConfigError, match=r"VISA option dtype must be auto or one of float32, bfloat16, float16; got 'float8'"
    ):
        resolve_dtype("float8", "cpu", option="VISA option dtype")
    with pytest.raises(ConfigError, match=r"got torch\.float64"):
        resolve_dtype(torch.float64, "cpu")
    half = (torch.float16, torch.bfloat16)
    assert resolve_dtype("bf16", "cpu", allowed=half) == torch.bfloat16
    with pytest.raises(ConfigError, match="autocast_dtype must be auto or one of float16, bfloat16; got 'float32'"):
        resolve_dtype("float32", "cpu", option="autocast_dtype", allowed=half)


def test_resolve_device_dtype_names_both_options(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device_dtype() == (torch.device("cpu"), torch.float32)
    assert resolve_device_dtype("cpu", "bf16") == (torch.device("cpu"), torch.bfloat16)
    with pytest.raises(ConfigError, match=r"^VISA option dtype"):
        resolve_device_dtype("cpu", "half-ish", option_prefix="VISA option ")
    with pytest.raises(BackendUnavailable, match=r"^VISA option device 'cuda'"):
        resolve_device_dtype("cuda", "auto", option_prefix="VISA option ")
