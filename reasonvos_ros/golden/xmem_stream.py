"""Golden runner for ``xmem_stream`` cases: this package's XMem against the official code's per-frame output.

The case gives RGB frames, a one-hot mask per object for frame 0, the network dimensions and the inference
configuration. The runner builds the network with the golden weights (case seed), feeds frame 0 with the masks and
the others without (the last one as ``end``), exactly as the case's ``input_mapping`` describes, at the frames' own
size (padded to a multiple of 16, no resizing), and compares the probabilities (max / mean / 99th percentile of
the absolute error, argmax agreement) and, when the case records it, the memory sizes after every frame.
"""

from __future__ import annotations

import numpy as np
import torch

from reasonvos_ros.golden import Check, GoldenCase, GoldenCaseError, agreement_check, max_abs_check
from reasonvos_ros.models.xmem.checkpoint import golden_network
from reasonvos_ros.models.xmem.inference import FrameGeometry, InferenceSettings, XMemInference
from reasonvos_ros.models.xmem.network import XMemConfig, XMemNetwork

# README section 2, used when a case omits a bound.
DEFAULT_TOLERANCES = {
    "probs_max_abs": 5e-3,
    "probs_mean_abs": 1e-5,
    "probs_p99_abs": 1e-4,
    "argmax_agreement_min": 0.999,
}


def _settings(spec: dict) -> InferenceSettings:
    cfg = {**spec.get("config", {}), **spec.get("inference_config", {})}
    return InferenceSettings.from_options(
        mem_every=int(cfg.get("mem_every", 5)),
        deep_update_every=int(cfg.get("deep_update_every", -1)),
        top_k=int(cfg.get("top_k", 30)),
        enable_long_term=bool(cfg.get("enable_long_term", True)),
        count_long_term_usage=bool(cfg.get("enable_long_term_count_usage", False)),
        min_mid_term_frames=int(cfg.get("min_mid_term_frames", 5)),
        max_mid_term_frames=int(cfg.get("max_mid_term_frames", 10)),
        num_prototypes=int(cfg.get("num_prototypes", 128)),
        max_long_term_elements=int(cfg.get("max_long_term_elements", 10000)),
    )


def _config(spec: dict) -> XMemConfig:
    dims = {**spec.get("config", {}), **spec.get("network", {})}
    return XMemConfig(
        key_dim=int(dims.get("key_dim", 64)),
        value_dim=int(dims.get("value_dim", 512)),
        hidden_dim=int(dims.get("hidden_dim", 64)),
        single_object=bool(dims.get("single_object", False)),
    )


def stream(case: GoldenCase, network: XMemNetwork | None = None) -> tuple[np.ndarray, list[dict]]:
    """Run the case's call sequence; returns (probs T x (K+1) x H x W float32, memory log per frame).

    ``network`` defaults to the case's golden weights; tests pass one loaded from a checkpoint file instead."""
    frames = case.inputs.get("frames_rgb_uint8")
    onehot = case.inputs.get("first_mask_onehot")
    if frames is None or onehot is None:
        raise GoldenCaseError(f"{case.directory}: inputs.npz needs frames_rgb_uint8 and first_mask_onehot")
    if frames.ndim != 4 or frames.shape[-1] != 3 or onehot.ndim != 3 or onehot.shape[1:] != frames.shape[1:3]:
        raise GoldenCaseError(f"{case.directory}: frames {frames.shape} and masks {onehot.shape} do not fit together")
    if network is None:
        network = golden_network(_config(case.spec), case.weights)
    core = XMemInference(network, _settings(case.spec))
    geometry = FrameGeometry.for_input(frames.shape[1], frames.shape[2], shorter_side=None)
    probs, log = [], []
    with torch.inference_mode():
        for t, frame in enumerate(frames):
            image = geometry.image_tensor(frame)
            features = network.encode_key(image)
            masks = None
            if t == 0:
                masks = {k + 1: geometry.mask_tensor(onehot[k]) for k in range(onehot.shape[0])}
            _, prob = core.step(image, features, masks, end=t == len(frames) - 1)
            probs.append(geometry.restore(prob).numpy())
            log.append(
                {
                    "frame": t,
                    "work_mem_size": core.memory.work_size,
                    "long_mem_size": core.memory.long_size,
                    "compress_calls_so_far": core.memory.compress_count,
                }
            )
    return np.stack(probs).astype(np.float32), log


def run(case: GoldenCase, network: XMemNetwork | None = None) -> list[Check]:
    want = case.outputs.get("probs")
    if want is None:
        raise GoldenCaseError(f"{case.directory}: outputs.npz has no 'probs'")
    tol = {**DEFAULT_TOLERANCES, **case.spec.get("suggested_tolerances", {})}
    got, log = stream(case, network)
    checks = [max_abs_check("probs max |diff|", got, want, float(tol["probs_max_abs"]))]
    if got.shape == want.shape:
        err = np.abs(got.astype(np.float64) - want.astype(np.float64))
        checks.append(Check("probs mean |diff|", float(err.mean()), float(tol["probs_mean_abs"])))
        checks.append(Check("probs p99 |diff|", float(np.quantile(err, 0.99)), float(tol["probs_p99_abs"])))
        worst = np.unravel_index(int(err.argmax()), err.shape)
        checks[0].detail += f", worst at frame {worst[0]}"
    want_argmax = case.outputs.get("argmax")
    if want_argmax is None:
        want_argmax = want.argmax(axis=1)
    checks.append(
        agreement_check("argmax agreement", got.argmax(axis=1), want_argmax, float(tol["argmax_agreement_min"]))
    )
    expected_log = case.spec.get("memory_log")
    if expected_log:
        fields = ("work_mem_size", "long_mem_size", "compress_calls_so_far")
        mismatches = [
            f"frame {e['frame']} {f}: {g[f]} != {e[f]}"
            for e, g in zip(expected_log, log)
            for f in fields
            if f in e and g[f] != e[f]
        ]
        if len(expected_log) != len(log):
            mismatches.append(f"log has {len(log)} frames, expected {len(expected_log)}")
        checks.append(
            Check("memory sizes per frame (mismatches)", float(len(mismatches)), 0.0, detail="; ".join(mismatches[:3]))
        )
    return checks
