"""Weights for every model of this package: reading files safely, reporting how they fit, choosing device and dtype.

- ``read_state_dict`` / ``iter_tensors`` read one weight file: ``.safetensors`` with the safetensors library,
  ``.pth`` / ``.pt`` / ``.bin`` / ``.ckpt`` with ``torch.load(weights_only=True)``, so a file that pickles anything
  but tensors and plain containers is refused and no code from a file ever runs. ``weight_files`` lists the weight
  files of a Hugging Face model directory (single file or shards with an index).
- ``LoadReport`` says how a state dict fitted a model: tensors loaded, and the missing, unexpected and mis-shaped
  keys by name (in the checkpoint's own names), keys deliberately ignored, notes.
- ``resolve_device`` / ``resolve_dtype``: ``"auto"`` is CUDA when torch sees it, else the CPU; on CUDA the model
  runs in bfloat16 where it allows it (float16 on GPUs without bfloat16), on the CPU in float32. An unknown value
  is a ``ConfigError`` naming the option; CUDA requested where there is none is ``BackendUnavailable``.

The loaders (``models/sam``, ``models/visa``, ``models/xmem``) pass their own error class (a ``WeightsError``
subclass) so that their callers keep catching one type per model.
"""

from __future__ import annotations

import json
import os
import pathlib
from collections.abc import Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ..core.errors import BackendUnavailable, ConfigError, ReasonVosError

SAFETENSORS_SUFFIX = ".safetensors"
TORCH_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt")
# A checkpoint saved as {"model": state_dict} or {"state_dict": state_dict} (training scripts do both).
_WRAPPER_KEYS = ("model", "state_dict")
# Hugging Face model directories: (index file, single file), safetensors preferred.
_HF_LAYOUTS = (
    ("model.safetensors.index.json", "model.safetensors"),
    ("pytorch_model.bin.index.json", "pytorch_model.bin"),
)

_SHOWN = 15  # keys listed per kind of problem in a report; the rest are counted

DTYPE_NAMES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float16": torch.float16,
    "fp16": torch.float16,
}


class WeightsError(ReasonVosError, ValueError):
    """A weight file cannot be read safely, holds something other than tensors, or does not fit the model."""


# ---------------------------------------------------------------------------------------------------- reading


def iter_tensors(
    path: str | os.PathLike,
    *,
    what: str = "weights file",
    error: type[Exception] = WeightsError,
    mmap: bool = False,
) -> Iterator[tuple[str, torch.Tensor]]:
    """(name, tensor) pairs of one weight file, on the CPU. Safetensors files are read one tensor at a time (a shard
    never needs a second copy in memory); torch files whole, memory-mapped with ``mmap`` (falling back to a plain
    read for the legacy non-zip format, which cannot be mapped). Raises ``FileNotFoundError`` naming ``what`` and the
    path, and ``error`` for anything unreadable, unsafe or not a flat state dict of tensors."""
    path = _weight_file(path, what, error)
    if path.suffix.lower() == SAFETENSORS_SUFFIX:
        yield from _iter_safetensors(path, error)
    else:
        yield from _flat_tensors(_torch_load(path, error, mmap), path, error).items()


def read_state_dict(
    path: str | os.PathLike, *, what: str = "checkpoint", error: type[Exception] = WeightsError, mmap: bool = False
) -> dict[str, torch.Tensor]:
    """The flat state dict (name -> CPU tensor) of one weight file; see ``iter_tensors`` for formats and errors."""
    return dict(iter_tensors(path, what=what, error=error, mmap=mmap))


def weight_files(
    directory: str | os.PathLike, *, error: type[Exception] = WeightsError
) -> tuple[list[pathlib.Path], int | None]:
    """Weight files of a Hugging Face model directory in index order, and the number of tensors the index lists
    (None without an index). Accepts ``model.safetensors[.index.json]`` and ``pytorch_model.bin[.index.json]``."""
    directory = pathlib.Path(directory)
    if not directory.is_dir():
        raise error(f"checkpoint directory not found: {directory}")
    for index_name, _ in _HF_LAYOUTS:
        index_path = directory / index_name
        if index_path.is_file():
            try:
                weight_map = json.loads(index_path.read_text())["weight_map"]
            except (json.JSONDecodeError, KeyError, TypeError) as exc:
                raise error(f"{index_path} is not a valid shard index (needs 'weight_map'): {exc}") from exc
            shards = list(dict.fromkeys(weight_map.values()))
            missing = [name for name in shards if not (directory / name).is_file()]
            if missing:
                raise error(f"shards listed in {index_path} are missing: {', '.join(missing)}")
            return [directory / name for name in shards], len(weight_map)
    for _, single in _HF_LAYOUTS:
        if (directory / single).is_file():
            return [directory / single], None
    expected = " or ".join(f"{single}(.index.json)" for _, single in _HF_LAYOUTS)
    raise error(f"no weights in {directory}: expected {expected}")


def as_tensor(value: Any, key: str, error: type[Exception] = WeightsError) -> torch.Tensor:
    """A state-dict value as a tensor: tensors pass, numpy arrays are wrapped (made contiguous), anything else is
    ``error`` naming the key."""
    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(value))
    raise error(f"value of {key!r} is a {type(value).__name__}, not a tensor")


def _weight_file(path: str | os.PathLike, what: str, error: type[Exception]) -> pathlib.Path:
    path = pathlib.Path(path).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"{what} not found: {path}")
    if not path.is_file():
        raise error(f"{what} path is not a file: {path}")
    suffix = path.suffix.lower()
    if suffix != SAFETENSORS_SUFFIX and suffix not in TORCH_SUFFIXES:
        raise error(
            f"unsupported {what} format {suffix!r} ({path}); use {SAFETENSORS_SUFFIX} or {', '.join(TORCH_SUFFIXES)}"
        )
    return path


def _iter_safetensors(path: pathlib.Path, error: type[Exception]) -> Iterator[tuple[str, torch.Tensor]]:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt", device="cpu") as handle:
            for key in handle.keys():  # noqa: SIM118 - safe_open handles are not iterable
                yield key, handle.get_tensor(key)
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise error(f"{path} is not a readable safetensors file: {exc}") from exc


def _torch_load(path: pathlib.Path, error: type[Exception], mmap: bool) -> Any:
    if mmap:
        try:
            return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except Exception:  # legacy (non-zip) files cannot be mapped; the plain read below reports real errors
            pass
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for corrupt or unsafe files
        raise error(
            f"cannot read {path} as a weights-only torch checkpoint (torch.load(weights_only=True)): not a torch "
            f"file, corrupt, or it pickles objects other than tensors: {exc}"
        ) from exc


def _flat_tensors(state: Any, path: pathlib.Path, error: type[Exception]) -> dict[str, torch.Tensor]:
    for wrapper in _WRAPPER_KEYS:
        if isinstance(state, Mapping) and isinstance(state.get(wrapper), Mapping):
            state = state[wrapper]
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        found = type(state).__name__
        if isinstance(state, Mapping):
            found += " with " + ", ".join(sorted({type(v).__name__ for v in state.values()})) + " values"
        raise error(f"{path} does not hold a state dict of tensors (a flat state dict: name -> tensor; got {found})")
    return dict(state)


# ------------------------------------------------------------------------------------------------------ report


@dataclass
class LoadReport:
    """How the tensors of one source (a file, a directory, a dict in memory) fitted a model.

    Keys are named as the source names them. ``ok`` is True when nothing is missing, unexpected or mis-shaped;
    ``ignored`` counts keys left out on purpose, by reason (e.g. buffers the model recomputes).
    """

    source: str
    loaded: int = 0
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    shape_mismatches: list[str] = field(default_factory=list)
    ignored: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.shape_mismatches)

    def ignore(self, reason: str, count: int = 1) -> None:
        self.ignored[reason] = self.ignored.get(reason, 0) + count

    def fits(self, key: str, shape: Iterable[int], expected: Iterable[int] | None) -> bool:
        """Whether a tensor of ``shape`` fits a slot of ``expected`` shape (None: the model has no such slot);
        a misfit is recorded as unexpected or mis-shaped under ``key``."""
        if expected is None:
            self.unexpected.append(key)
            return False
        shape, expected = tuple(shape), tuple(expected)
        if shape != expected:
            self.shape_mismatches.append(f"{key} {shape} (expected {expected})")
            return False
        return True

    def lines(self) -> list[str]:
        out = [
            f"{self.source}: {self.loaded} tensors loaded, {len(self.missing)} missing, {len(self.unexpected)} "
            f"unexpected, {len(self.shape_mismatches)} with the wrong shape"
        ]
        for title, names in (
            ("missing", self.missing),
            ("unexpected", self.unexpected),
            ("wrong shape", self.shape_mismatches),
        ):
            if names:
                more = f" ... and {len(names) - _SHOWN} more" if len(names) > _SHOWN else ""
                out.append(f"  {len(names)} {title}: " + ", ".join(names[:_SHOWN]) + more)
        out += [f"  ignored {count} keys: {reason}" for reason, count in self.ignored.items()]
        out += [f"  note: {note}" for note in self.notes]
        return out

    def __str__(self) -> str:
        return "\n".join(self.lines())


def compare_state_dict(
    state: Mapping[str, Any], expected: Mapping[str, Iterable[int]], source: str = "state dict"
) -> LoadReport:
    """Report of ``state`` against the ``expected`` key -> shape table of a model (``loaded`` counts the fitting
    tensors; nothing is loaded here)."""
    report = LoadReport(source)
    for key, value in state.items():
        if report.fits(key, tuple(value.shape), expected.get(key)):
            report.loaded += 1
    report.missing = [key for key in expected if key not in state]
    return report


# -------------------------------------------------------------------------------------------- device and dtype


def read_hf_config(model_dir: str | os.PathLike, role: str, hint: str = "") -> dict[str, Any]:
    """``config.json`` of a Hugging Face model directory as a dict; ``BackendUnavailable`` naming ``role`` (e.g.
    "VLM", "tracker") when the directory or the file is missing or unreadable. ``hint`` follows the not-found
    message (e.g. which option sets the path)."""
    model_dir = pathlib.Path(model_dir)
    config_path = model_dir / "config.json"
    if not model_dir.is_dir():
        raise BackendUnavailable(f"{role} model directory not found: {model_dir}{hint}")
    if not config_path.is_file():
        raise BackendUnavailable(f"{role} model directory {model_dir} has no config.json")
    try:
        return json.loads(config_path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise BackendUnavailable(f"cannot read {config_path}: {exc}") from exc


def resolve_device(device: str | torch.device | None = "auto", *, option: str = "device") -> torch.device:
    """``"auto"`` / None -> ``cuda`` when torch sees a CUDA device, else ``cpu``; otherwise the named device.
    ``option`` names the setting in messages."""
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ConfigError(f"{option}: unknown device {device!r}; use auto, cpu, cuda or cuda:N ({exc})") from exc
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise BackendUnavailable(f"{option} {str(device)!r} was requested but torch sees no CUDA device")
    return resolved


def resolve_dtype(
    dtype: str | torch.dtype | None = "auto",
    device: str | torch.device = "cpu",
    *,
    option: str = "dtype",
    allowed: Collection[torch.dtype] | None = None,
    bfloat16_on_gpu: bool = True,
) -> torch.dtype:
    """The dtype a model runs in. ``"auto"`` / None: on CUDA bfloat16 (float16 where the GPU has no bfloat16, or
    where the model does not allow it: ``bfloat16_on_gpu=False``), on the CPU float32 (CPU half precision is slow
    and loses accuracy). Names: float32/fp32, bfloat16/bf16, float16/fp16, or a ``torch.dtype``; ``allowed``
    restricts them."""
    if dtype is None or dtype == "auto":
        if torch.device(device).type != "cuda":
            return torch.float32
        return torch.bfloat16 if bfloat16_on_gpu and torch.cuda.is_bf16_supported() else torch.float16
    choices = allowed if allowed is not None else tuple(dict.fromkeys(DTYPE_NAMES.values()))
    names = ", ".join(str(d).removeprefix("torch.") for d in choices)
    resolved = dtype if isinstance(dtype, torch.dtype) else DTYPE_NAMES.get(str(dtype).lower())
    if resolved is None or resolved not in choices:
        raise ConfigError(f"{option} must be auto or one of {names}; got {dtype!r}")
    return resolved


def resolve_device_dtype(
    device: str | torch.device | None = "auto",
    dtype: str | torch.dtype | None = "auto",
    *,
    option_prefix: str = "",
    bfloat16_on_gpu: bool = True,
) -> tuple[torch.device, torch.dtype]:
    """``resolve_device``, then ``resolve_dtype`` for that device; messages name ``<option_prefix>device``/``dtype``."""
    resolved = resolve_device(device, option=f"{option_prefix}device")
    return resolved, resolve_dtype(dtype, resolved, option=f"{option_prefix}dtype", bfloat16_on_gpu=bfloat16_on_gpu)


def free_device_memory(device: str | torch.device) -> None:
    """After a model on ``device`` was dropped: hand the memory the CUDA caching allocator keeps back to the driver,
    so other processes can use it (nothing to do on other devices)."""
    if torch.device(device).type == "cuda":
        torch.cuda.empty_cache()


__all__ = [
    "DTYPE_NAMES",
    "LoadReport",
    "WeightsError",
    "as_tensor",
    "compare_state_dict",
    "free_device_memory",
    "iter_tensors",
    "read_state_dict",
    "resolve_device",
    "resolve_device_dtype",
    "resolve_dtype",
    "weight_files",
]
