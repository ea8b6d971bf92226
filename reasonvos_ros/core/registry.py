"""Backends chosen by configuration: ``{"name": ..., "options": {...}}`` per role.

Each entry maps a backend name to ``"module:Class"``; the class is imported only when chosen (so a missing
optional dependency only matters for the backend that needs it) and constructed with ``Class(**options)``.
Constructors raise ``BackendUnavailable`` naming the missing package or weights path.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Mapping
from typing import Any

from .errors import BackendUnavailable, ConfigError
from .interfaces import FrameSampler, KeyframeSegmenter, Tracker

SAMPLERS: dict[str, str] = {
    "latest": "reasonvos_ros.backends.simple_samplers:LatestFrameSampler",
    "uniform": "reasonvos_ros.backends.simple_samplers:UniformFrameSampler",
    "detector": "reasonvos_ros.backends.lite.sampler:DetectorFrameSampler",
    "vlm": "reasonvos_ros.models.tfs.sampler:VideoLLMFrameSampler",
    "scripted": "reasonvos_ros.backends.scripted:ScriptedSampler",
}
SEGMENTERS: dict[str, str] = {
    "lite": "reasonvos_ros.backends.lite.segmenter:DetectorGrabCutSegmenter",
    "visa": "reasonvos_ros.backends.visa_segmenter:VisaSegmenter",
    "vlm_sam": "reasonvos_ros.backends.vlm_segmenter:VlmSamSegmenter",
    "scripted": "reasonvos_ros.backends.scripted:ScriptedSegmenter",
}
TRACKERS: dict[str, str] = {
    "opencv": "reasonvos_ros.backends.lite.tracker:OpenCVTracker",
    "xmem": "reasonvos_ros.backends.xmem_tracker:XMemTracker",
    "sam2_video": "reasonvos_ros.backends.sam2_video_tracker:Sam2VideoTracker",
    "scripted": "reasonvos_ros.backends.scripted:ScriptedTracker",
}

ROLES: dict[str, tuple[dict[str, str], type]] = {
    "sampler": (SAMPLERS, FrameSampler),
    "segmenter": (SEGMENTERS, KeyframeSegmenter),
    "tracker": (TRACKERS, Tracker),
}


def build_backend(role: str, name: str, options: Mapping[str, Any] | None = None) -> Any:
    """Build the backend ``name`` for ``role`` ("sampler", "segmenter" or "tracker")."""
    if role not in ROLES:
        raise ConfigError(f"unknown backend role {role!r}; expected one of {', '.join(ROLES)}")
    table, interface = ROLES[role]
    if name not in table:
        raise ConfigError(f"unknown {role} backend {name!r}; available: {', '.join(sorted(table))}")
    module_name, class_name = table[name].split(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise BackendUnavailable(
            f"{role} backend {name!r} needs the Python package {exc.name!r}, which is not installed "
            f"(pip install the project with its extras: see README, 'Set-up')"
        ) from exc
    cls = getattr(module, class_name)
    options = dict(options or {})
    # Check the option names against the constructor's signature before calling it: a TypeError raised inside the
    # constructor is a bug to report as such, not a user's bad option.
    signature = inspect.signature(cls)
    try:
        signature.bind(**options)
    except TypeError as exc:
        accepted = ", ".join(p for p in signature.parameters if p not in ("args", "kwargs")) or "none"
        raise ConfigError(f"bad options for {role} backend {name!r}: {exc} (accepted options: {accepted})") from exc
    backend = cls(**options)
    if not isinstance(backend, interface):
        raise ConfigError(f"{table[name]} does not implement {interface.__name__}")
    return backend
