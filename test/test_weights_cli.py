"""``reasonvos weights``: the catalog's computed facts, offline behaviour, params files that really load, checksums."""

from __future__ import annotations

import json
import shutil
import subprocess
import time

import pytest
import yaml

from reasonvos_ros.cli import main
from reasonvos_ros.core.registry import build_backend
from reasonvos_ros.weights import cli as weights_cli
from reasonvos_ros.weights.catalog import MODEL_SETS, find_set, kv_cache_bytes, memory_estimate, parameter_count


def test_parameter_counts_computed_from_the_architectures_match_the_published_totals():
    checked = 0
    for model_set in MODEL_SETS:
        for component in model_set.components:
            if component.card_params_b is not None:
                assert parameter_count(component) / 1e9 == pytest.approx(component.card_params_b, rel=0.005)
                checked += 1
    assert checked >= 4  # Qwen3-VL 2B/4B/8B and Qwen2.5-VL-7B


def test_memory_estimate_is_weights_in_bf16_plus_the_kv_cache():
    model_set = find_set("qwen3vl-8b-sam2.1-large")
    vlm, sam = model_set.components
    estimate = memory_estimate(model_set)
    expected_weights = (parameter_count(vlm) + parameter_count(sam)) * 2 / 1024**3
    assert estimate["weights_gib"] == pytest.approx(expected_weights)
    # Qwen3-VL-8B: 36 layers x 8 KV heads x 128 dims x K and V x 2 bytes per token
    assert kv_cache_bytes(vlm, 1000) == 36 * 8 * 128 * 2 * 2 * 1000
    assert 16 < estimate["total_gib"] < 18


def test_list_prints_every_set_and_labels_what_is_not_verified(capsys):
    assert main(["weights", "list"]) == 0
    out = capsys.readouterr().out
    for model_set in MODEL_SETS:
        assert model_set.name in out
    assert "ESTIMATES" in out and "NOT pinned" in out and "gated" in out
    assert "VISA" in out and "J&F 12.6" in out
    assert main(["weights", "list", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert all(not c["size_verified"] for entry in listed for c in entry["components"])


def test_download_offline_fails_fast_and_says_what_to_fetch(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.monotonic()
    assert main(["weights", "download", "qwen3vl-4b-sam2.1-large", "--dir", str(tmp_path)]) == 2
    assert time.monotonic() - start < 2
    err = capsys.readouterr().err
    assert "HF_HUB_OFFLINE" in err
    assert (
        f"hf download Qwen/Qwen3-VL-4B-Instruct --revision main --local-dir {tmp_path}/Qwen--Qwen3-VL-4B-Instruct"
        in err
    )
    assert "hf download facebook/sam2.1-hiera-large" in err
    assert not any(tmp_path.iterdir())
    assert main(["weights", "download", "visa-7b", "--dir", str(tmp_path)]) == 1
    assert "not on the Hugging Face hub" in capsys.readouterr().err


def test_unreachable_endpoint_counts_as_offline_within_the_timeout(monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # discard port: connection refused
    start = time.monotonic()
    online, why = weights_cli.hub_reachable(timeout_s=1.0)
    assert not online and "127.0.0.1:9" in why and time.monotonic() - start < 2


def test_params_file_for_a_set_on_disk_builds_the_backend(tmp_path, capsys, torch_one_thread):
    from reasonvos_ros.models.vlm.tiny import build_tiny_qwen_vl, build_tiny_sam

    model_set = find_set("qwen3vl-2b-sam2.1-small")
    vlm, sam = model_set.components
    assert main(["weights", "params", model_set.name, "--dir", str(tmp_path)]) == 1
    assert "no config.json" in capsys.readouterr().err
    # tiny stand-ins at the places the set's repositories go
    build_tiny_qwen_vl(weights_cli.component_dir(tmp_path, vlm), "qwen3_vl")
    build_tiny_sam(weights_cli.component_dir(tmp_path, sam), "sam2")
    out = tmp_path / "p.yaml"
    assert (
        main(
            [
                "weights",
                "params",
                model_set.name,
                "--dir",
                str(tmp_path),
                "--params-out",
                str(out),
                "--device",
                "cpu",
                "--dtype",
                "float32",
            ]
        )
        == 0
    )
    parameters = yaml.safe_load(out.read_text())["/**"]["ros__parameters"]
    assert parameters["segmenter"] == "vlm_sam"
    segmenter = build_backend("segmenter", parameters["segmenter"], json.loads(parameters["segmenter_options"]))
    assert segmenter.family == "qwen3_vl" and segmenter.sam.model_type == "sam2"


def test_file_digests_match_git_and_offline_verification_uses_the_recorded_sums(tmp_path, monkeypatch, capsys):
    model_set = find_set("qwen3vl-2b-sam2.1-small")
    records = []
    for component in model_set.components:
        directory = weights_cli.component_dir(tmp_path, component)
        directory.mkdir(parents=True)
        (directory / "config.json").write_text(json.dumps({"repo": component.repo_id}))
        sha256, _ = weights_cli.file_digests(directory / "config.json")
        records.append({"repo_id": component.repo_id, "commit": "abc", "files": {"config.json": {"sha256": sha256}}})
    (tmp_path / weights_cli.MANIFEST).write_text(json.dumps({"set": model_set.name, "components": records}))
    if shutil.which("git"):
        path = weights_cli.component_dir(tmp_path, model_set.components[0]) / "config.json"
        git_id = subprocess.run(["git", "hash-object", str(path)], capture_output=True, text=True, check=True)
        assert weights_cli.file_digests(path)[1] == git_id.stdout.strip()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert main(["weights", "verify", model_set.name, "--dir", str(tmp_path)]) == 0
    assert "recorded at download" in capsys.readouterr().out
    (weights_cli.component_dir(tmp_path, model_set.components[1]) / "config.json").write_text("{}")
    assert main(["weights", "verify", model_set.name, "--dir", str(tmp_path)]) == 1
    assert "differs from the sha256 recorded" in capsys.readouterr().err


def test_tracker_sets_come_from_the_tracker_backend_and_their_params_file_builds_it(tmp_path, torch_one_thread):
    from test_sam2_video_tracker import save_tiny

    from reasonvos_ros.backends.sam2_video_tracker import TRACKER_MODEL_SETS

    tracker_sets = [s for s in MODEL_SETS if s.backend_role == "tracker"]
    assert sorted(s.components[0].repo_id for s in tracker_sets) == sorted(e["repo_id"] for e in TRACKER_MODEL_SETS)
    for model_set in tracker_sets:
        entry = next(e for e in TRACKER_MODEL_SETS if e["repo_id"] == model_set.components[0].repo_id)
        assert parameter_count(model_set.components[0]) == entry["parameters"]
        assert bool(memory_estimate(model_set)) == (entry["parameters"] is not None)
    model_set = find_set("tracker-sam2.1-tiny")
    save_tiny(weights_cli.component_dir(tmp_path, model_set.components[0]))
    out = tmp_path / "tracker.yaml"
    args = ["weights", "params", model_set.name, "--dir", str(tmp_path), "--params-out", str(out)]
    assert main([*args, "--device", "cpu", "--dtype", "float32"]) == 0
    parameters = yaml.safe_load(out.read_text())["/**"]["ros__parameters"]
    assert parameters["tracker"] == "sam2_video"
    tracker = build_backend("tracker", "sam2_video", json.loads(parameters["tracker_options"]))
    assert tracker.family.name == "sam2"
