"""Golden checks: reproduce reference outputs of the authors' official code (deterministic weights).

A case directory holds ``case.json`` (with ``"case": <kind>``, ``"seed"`` and the tolerances), ``inputs.npz`` and
``outputs.npz``. ``run_case`` dispatches on the kind to a runner registered in ``RUNNERS``; every runner has the
signature ``run(case: GoldenCase) -> list[Check]`` and compares its outputs at the case's own tolerances.
``reasonvos golden CASE_DIR...`` (``reasonvos_ros.golden.cli``) prints the checks and exits non-zero on any
failure. The weights come from ``golden_weights.py``: a verbatim copy of the generator shipped with the golden
data, or the one given with ``--weights-module``.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import pathlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

# kind (case.json "case") -> "module:function"; modules are imported only when their kind is run.
RUNNERS: dict[str, str] = {
    "xmem_stream": "reasonvos_ros.golden.xmem_stream:run",
    "visa_forward": "reasonvos_ros.golden.visa_forward:run",
    "sam_text_prompt": "reasonvos_ros.golden.sam_text_prompt:run",
    "metrics": "reasonvos_ros.golden.metrics:run",
}


class GoldenCaseError(RuntimeError):
    """A case directory that cannot be run (missing files, unknown kind, bad JSON)."""


@dataclass
class Check:
    """One comparison. ``value`` is the measured figure (e.g. a max abs error), ``limit`` the bound it must
    respect; ``higher_is_better`` flips the comparison (e.g. an agreement ratio)."""

    name: str
    value: float
    limit: float
    higher_is_better: bool = False
    detail: str = ""

    @property
    def passed(self) -> bool:
        if not np.isfinite(self.value):
            return False
        return self.value >= self.limit if self.higher_is_better else self.value <= self.limit

    def line(self) -> str:
        relation = ">=" if self.higher_is_better else "<="
        verdict = "ok  " if self.passed else "FAIL"
        extra = f"  ({self.detail})" if self.detail else ""
        return f"{verdict} {self.name:<40} {self.value:.3e} {relation} {self.limit:.4g}{extra}"


def max_abs_check(name: str, got: Any, want: Any, limit: float) -> Check:
    """Max absolute difference; a shape mismatch fails with an explanation instead of broadcasting."""
    got = np.asarray(got, dtype=np.float64)
    want = np.asarray(want, dtype=np.float64)
    if got.shape != want.shape:
        return Check(name, float("inf"), limit, detail=f"shape {got.shape} != expected {want.shape}")
    err = np.abs(got - want)
    return Check(
        name, float(err.max()) if err.size else 0.0, limit, detail=f"mean {err.mean():.1e}" if err.size else ""
    )


def agreement_check(name: str, got: Any, want: Any, minimum: float) -> Check:
    """Fraction of equal elements (for discrete outputs such as argmax maps or cluster indices)."""
    got = np.asarray(got)
    want = np.asarray(want)
    if got.shape != want.shape:
        return Check(name, float("-inf"), minimum, True, detail=f"shape {got.shape} != expected {want.shape}")
    return Check(name, float(np.mean(got == want)) if got.size else 1.0, minimum, True)


@dataclass
class GoldenCase:
    directory: pathlib.Path
    spec: dict[str, Any]
    inputs: dict[str, np.ndarray]
    outputs: dict[str, np.ndarray]
    weights_module: Any = field(repr=False, default=None)

    @property
    def kind(self) -> str:
        return self.spec["case"]

    @property
    def seed(self) -> int:
        return int(self.spec.get("seed", 1))

    def weights(self, named_shapes: dict[str, tuple[int, ...]]) -> dict[str, np.ndarray]:
        """Deterministic golden state dict for these keys and shapes, with this case's seed."""
        return self.weights_module.golden_state_dict(named_shapes, self.seed)


def load_weights_module(path: str | pathlib.Path | None = None):
    if path is None:
        return importlib.import_module("reasonvos_ros.golden.golden_weights")
    path = pathlib.Path(path)
    if not path.is_file():
        raise GoldenCaseError(f"weights module not found: {path}")
    spec = importlib.util.spec_from_file_location("golden_weights_external", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if not hasattr(module, "golden_state_dict"):
        raise GoldenCaseError(f"{path} defines no golden_state_dict(named_shapes, seed)")
    return module


def load_case(directory: str | pathlib.Path, weights_module: Any = None) -> GoldenCase:
    directory = pathlib.Path(directory)
    if not directory.is_dir():
        raise GoldenCaseError(f"not a directory: {directory}")
    missing = [n for n in ("case.json", "inputs.npz", "outputs.npz") if not (directory / n).is_file()]
    if missing:
        raise GoldenCaseError(
            f"{directory} lacks {', '.join(missing)} (a golden case needs case.json, inputs.npz, outputs.npz)"
        )
    try:
        spec = json.loads((directory / "case.json").read_text())
    except json.JSONDecodeError as exc:
        raise GoldenCaseError(f"{directory / 'case.json'} is not valid JSON: {exc}") from exc
    if "case" not in spec:
        raise GoldenCaseError(f"{directory / 'case.json'} has no 'case' field naming the component")
    with np.load(directory / "inputs.npz", allow_pickle=False) as f:
        inputs = {k: f[k] for k in f.files}
    with np.load(directory / "outputs.npz", allow_pickle=False) as f:
        outputs = {k: f[k] for k in f.files}
    return GoldenCase(directory, spec, inputs, outputs, weights_module or load_weights_module())


def runner_for(kind: str) -> Callable[[GoldenCase], list[Check]]:
    if kind not in RUNNERS:
        raise GoldenCaseError(f"unknown golden case kind {kind!r}; known: {', '.join(sorted(RUNNERS))}")
    module_name, func = RUNNERS[kind].split(":")
    return getattr(importlib.import_module(module_name), func)


def run_case(directory: str | pathlib.Path, weights_module: Any = None) -> list[Check]:
    case = load_case(directory, weights_module)
    return runner_for(case.kind)(case)
