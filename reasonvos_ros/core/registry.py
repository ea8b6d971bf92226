"""Backends chosen by configuration: ``{"name": ..., "options": {...}}`` per role.

Each entry maps a backend name to ``"module:Class"``; the class is imported only when chosen (so a missing
optional dependency only matters for the backend that needs it). Every backend class names its frozen option
dataclass in ``Class.Options`` (``core.options.OptionSet``); the options given are checked against it here, the
one place that reports unknown names, wrong types and out-of-range values, and the class is constructed with the
typed instance: ``Class(options)``. Constructors raise ``BackendUnavailable`` naming the missing package or
weights path.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any

from .errors import BackendUnavailable, ConfigError
from .interfaces import FrameSampler, KeyframeSegmenter, Tracker
from .options import OptionSet, parse_options

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


def backend_class(role: str, name: str) -> type:
    """The class registered as ``name`` for ``role`` ("sampler", "segmenter" or "tracker"), imported now."""
    if role not in ROLES:
        raise ConfigError(f"unknown backend role {role!r}; expected one of {', '.join(ROLES)}")
    table = ROLES[role][0]
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
    return getattr(module, class_name)


def backend_options_type(role: str, name: str) -> type[OptionSet]:
    """The option dataclass of a registered backend."""
    options_type = getattr(backend_class(role, name), "Options", None)
    if not (isinstance(options_type, type) and issubclass(options_type, OptionSet)):
        raise ConfigError(f"{ROLES[role][0][name]} declares no Options (an OptionSet dataclass)")
    return options_type


def check_backend_options(role: str, name: str, options: Mapping[str, Any] | None = None) -> OptionSet:
    """The typed options of backend ``name`` from a mapping; ConfigError naming the backend otherwise."""
    options_type = backend_options_type(role, name)
    try:
        return parse_options(options_type, dict(options or {}))
    except ConfigError as exc:
        raise ConfigError(f"bad options for {role} backend {name!r}: {exc}") from exc


def build_backend(role: str, name: str, options: Mapping[str, Any] | None = None) -> Any:
    """Build the backend ``name`` for ``role`` ("sampler", "segmenter" or "tracker") with checked options."""
    typed = check_backend_options(role, name, options)
    table, interface = ROLES[role]
    # Only the options were checked above: a TypeError or ConfigError raised inside the constructor is the
    # backend's own (a bug, or a rule it checks when loading) and is reported as it is.
    backend = backend_class(role, name)(typed)
    if not isinstance(backend, interface):
        raise ConfigError(f"{table[name]} does not implement {interface.__name__}")
    return backend
