"""The perception node's parameters: one table with type, default, range and description for each.

The node declares every entry with a ParameterDescriptor (description + range), ``config/perception.yaml``
lists every entry (``tools/gen_param_docs.py`` writes it, a test keeps the two in sync), and
``NodeSettings.from_values`` validates them with messages that name the parameter. The pipeline-policy entries
are the fields of ``core.config.PipelineConfig`` (default, range and description declared there once), and every
value goes through the one checker of ``core.options``. ROS-free apart from the descriptor construction, which
imports rclpy lazily.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from ..core.config import PipelineConfig
from ..core.errors import ConfigError
from ..core.options import OptionSpec, json_object, limits_text, spec_of
from ..core.options import check_value as check_option_value
from ..core.registry import ROLES


@dataclass(frozen=True)
class Param:
    name: str
    default: Any
    description: str
    low: float | None = None
    high: float | None = None
    choices: tuple[str, ...] = ()

    @property
    def spec(self) -> OptionSpec:
        """The limits in the form the one checker of ``core.options`` takes."""
        return OptionSpec(self.description, self.low, self.high, self.choices)


def backend_parameters(role: str, default: str, description: str, example: str = "") -> tuple[Param, Param]:
    """The ``<role>`` parameter (choices: the registry's names) and its ``<role>_options`` JSON parameter."""
    return (
        Param(role, default, description, choices=tuple(ROLES[role][0])),
        Param(f"{role}_options", "{}", f"JSON object of options for the {role} backend{example}"),
    )


def pipeline_parameters() -> tuple[Param, ...]:
    """One parameter per field of PipelineConfig, with the field's default, limits and description."""
    params = []
    for config_field in dataclasses.fields(PipelineConfig):
        spec = spec_of(config_field)
        params.append(
            Param(config_field.name, config_field.default, spec.description, spec.low, spec.high, spec.choices)
        )
    return tuple(params)


PARAMETERS: tuple[Param, ...] = (
    # ---- inputs
    Param(
        "image_transport",
        "raw",
        "camera input type: 'raw' subscribes sensor_msgs/Image on 'image', "
        "'compressed' subscribes sensor_msgs/CompressedImage on 'image/compressed'",
        choices=("raw", "compressed"),
    ),
    Param(
        "qos_reliability",
        "best_effort",
        "camera/depth subscription reliability: 'best_effort' (sensor-data "
        "QoS, what camera drivers publish) or 'reliable' (bag replay); a mismatch means no frames arrive",
        choices=("best_effort", "reliable"),
    ),
    Param("qos_depth", 5, "history depth of the camera/depth subscriptions", 1, 100),
    Param(
        "use_depth",
        False,
        "subscribe aligned 'depth' (32FC1 m or 16UC1 mm) and 'camera_info', synchronise them "
        "with the colour image and publish 3D points",
    ),
    Param(
        "max_image_pixels",
        16_777_216,
        "largest colour/depth image accepted, in pixels (width x height; 16777216 = 4096x4096); larger ones are "
        "refused and counted before decoding (compressed: the size the PNG/JPEG header declares)",
        1,
        1_073_741_824,
    ),
    Param("sync_queue_size", 10, "per-input queue of the approximate time synchroniser", 1, 100),
    Param(
        "sync_slop_s", 0.05, "maximum stamp difference (s) between colour, depth and camera_info of one set", 0.0, 1.0
    ),
    # ---- rolling window
    Param("window_duration_s", 10.0, "rolling window length in seconds of camera time", 0.5, 120.0),
    Param(
        "window_max_mb",
        64.0,
        "rolling window memory bound (MB of stored frames); whichever bound binds first",
        1.0,
        4096.0,
    ),
    Param(
        "window_storage",
        "jpeg",
        "how window frames are stored: 'jpeg' (compact, lossy) or 'png' (lossless)",
        choices=("jpeg", "png"),
    ),
    Param("window_jpeg_quality", 90, "JPEG quality of stored window frames", 50, 100),
    # ---- targets and backends
    Param("max_targets", 4, "maximum number of targets tracked at once (instructions for more are rejected)", 1, 32),
    *backend_parameters(
        "sampler", "detector", "key-frame sampler backend: latest, uniform, detector (lite, CPU), vlm (video LLM)"
    ),
    *backend_parameters(
        "segmenter",
        "lite",
        "key-frame segmenter backend: lite (SSD detector + GrabCut, CPU), visa, or vlm_sam (Qwen2.5-VL / "
        "Qwen3-VL grounding + SAM 2.1 / SAM 3 tracker mask; in process or via an OpenAI-compatible server)",
        " (e.g. VISA weight paths)",
    ),
    *backend_parameters(
        "tracker",
        "opencv",
        "tracker backend: opencv (box tracker + optical flow, CPU), xmem, or sam2_video (SAM 2.1 / EdgeTAM / SAM 3 "
        "tracker video models from transformers)",
        " (e.g. the XMem checkpoint)",
    ),
    # ---- pipeline policy: the fields of PipelineConfig, in their order
    *pipeline_parameters(),
    # ---- outputs
    Param(
        "publish_history",
        True,
        "also publish results computed on past frames (backward pass and catch-up) on '~/results_history'",
    ),
    Param(
        "publish_label_image",
        True,
        "publish '~/labels': mono8, pixel = 1 + index of the target in the result "
        "array of the same frame, 0 = background",
    ),
    Param("depth_erode_px", 3, "erosion (pixels) of the mask before taking the median depth", 0, 50),
    Param("debug_image_rate_hz", 2.0, "rate of the '~/debug_image' overlay (0 disables it)", 0.0, 30.0),
    Param("diagnostics_period_s", 1.0, "period of the /diagnostics status", 0.1, 60.0),
    Param("enabled", True, "start with processing enabled (toggle at run time with the '~/enable' service)"),
    Param(
        "autostart",
        True,
        "configure and activate the lifecycle node by itself at start-up (pip installs have "
        "no lifecycle manager); set false when a manager drives the transitions",
    ),
    Param(
        "wait_for_lifecycle_manager",
        False,
        "with autostart: when configure or activate fails, keep the node running in its lifecycle state (fix "
        "the parameter, then configure again, e.g. with 'ros2 lifecycle set') instead of exiting with an error",
    ),
)

PARAMETER_NAMES = tuple(p.name for p in PARAMETERS)


@dataclass
class NodeSettings:
    values: dict[str, Any]
    pipeline: PipelineConfig
    backends: dict[str, dict[str, Any]] = field(default_factory=dict)

    def __getattr__(self, name: str) -> Any:
        try:
            return self.__dict__["values"][name]
        except KeyError:
            raise AttributeError(name) from None

    @classmethod
    def from_values(cls, values: dict[str, Any]) -> NodeSettings:
        """Validate raw parameter values; raises ConfigError naming the first bad parameter."""
        checked = {param.name: check_value(param, values.get(param.name, param.default)) for param in PARAMETERS}
        backends = {
            role: {"name": checked[role], "options": backend_options(role, checked[f"{role}_options"])}
            for role in ("sampler", "segmenter", "tracker")
        }
        pipeline = PipelineConfig(**{name: checked[name] for name in PipelineConfig.names()})
        return cls(checked, pipeline, backends)


def check_value(param: Param, value: Any) -> Any:
    """One parameter's value checked against its type, choices, range (and JSON for ``*_options``).

    Returns the value (an int given for a float parameter becomes a float); raises ConfigError with the message
    that both configure and a rejected ``ros2 param set`` report.
    """
    value = check_option_value(value, type(param.default), param.spec, f"parameter '{param.name}'")
    if param.name.endswith("_options"):
        backend_options(param.name[: -len("_options")], value)
    return value


def backend_options(role: str, raw: str) -> dict[str, Any]:
    """The JSON object of a ``<role>_options`` parameter (an empty string means no options); the names and
    values are checked against the backend's options when the registry builds it, at configure."""
    return json_object(raw, f"parameter '{role}_options'")


PARAMETERS_BY_NAME = {param.name: param for param in PARAMETERS}

# When a parameter change takes effect. Every value is checked when it is set (a bad value is rejected with the
# message configure would give), but the node reads its parameters only at configure: a change made while the
# node is configured applies after deactivate, cleanup, configure, activate ('enabled' too: at run time the
# '~/enable' service pauses and resumes). These two are read once, when the process starts.
APPLIED_AT_START = ("autostart", "wait_for_lifecycle_manager")


def check_changes(current: dict[str, Any], changes: dict[str, Any]) -> str | None:
    """Why a run-time change of parameters is rejected (the configure message), or None when it is accepted.

    Each changed value is checked alone. When the current values form a valid configuration, the result of the
    change must too (rules that involve several parameters); when they do not (a failed configure waiting for
    a fix), each bad value can be fixed on its own.
    """
    try:
        for name, value in changes.items():
            if name in PARAMETERS_BY_NAME:
                check_value(PARAMETERS_BY_NAME[name], value)
    except ConfigError as exc:
        return str(exc)
    try:
        NodeSettings.from_values(current)
    except ConfigError:
        return None
    try:
        NodeSettings.from_values({**current, **changes})
    except ConfigError as exc:
        return str(exc)
    return None


def parameter_descriptor(param: Param):
    """rclpy ParameterDescriptor: description, and the range/choices as text in ``additional_constraints``.

    The range is deliberately not given to rclpy as ``integer_range``/``floating_point_range``: rclpy would
    then reject out-of-range values itself (with its own message, and at start-up by raising from
    ``declare_parameter``), while every value should get the single check of :func:`check_value`.
    """
    from rcl_interfaces.msg import ParameterDescriptor

    description = param.description
    limits = limits_text(param.spec)
    constraints = "" if not limits else f"one of: {limits}" if param.choices else f"range {limits}"
    if constraints:
        description += f" ({constraints})"
    return ParameterDescriptor(description=description, additional_constraints=constraints)
