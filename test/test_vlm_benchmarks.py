"""The GPU stage benchmark script stays runnable: on this CPU it must refuse full size and run the tiny mode."""

from __future__ import annotations

import importlib.util
import pathlib

import pytest

SCRIPT = pathlib.Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_stages.py"


@pytest.fixture(scope="module")
def gpu_stages():
    spec = importlib.util.spec_from_file_location("gpu_stages", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_cpu_refuses_full_size_and_prints_the_tiny_stage_table(gpu_stages, capsys, torch_one_thread):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this checks the CPU behaviour")
    args = ["--repeats", "1", "--new-tokens", "4", "--key-size", "160x120", "--references", "1"]
    assert gpu_stages.main(args) == 0
    captured = capsys.readouterr()
    assert "full-size models are refused on the CPU" in captured.err
    assert "tiny qwen3_vl" in captured.out
    stages = [line.split("|")[0].strip() for line in captured.out.splitlines() if "|" in line]
    for stage in ("VLM prefill", "VLM decoding", "SAM image encoder", "SAM box decoder", "tracker step"):
        assert stage in stages
    # prompt of the tiny run: 1 reference + the key frame (160x120 -> 160x128 with Qwen3-VL's 32-pixel grid)
    assert "key seen 160x128" in captured.out
