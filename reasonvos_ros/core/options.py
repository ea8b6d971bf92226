"""Typed, frozen option sets: each field declared once (type, default, range or choices, description), one checker.

A backend declares its options as a frozen dataclass deriving from ``OptionSet`` whose fields are made with
``option(...)``; the pipeline's tunables (``core.config.PipelineConfig``) are declared the same way. Every value
goes through ``check_value``: building an option set checks all its fields (``OptionSet.__post_init__``),
``parse_options`` adds the check of unknown names (with the list of accepted ones) and reads JSON objects, and the
node's parameter table (``ros.parameters``) checks its own values with it too, so a wrong type, an out-of-range
number or an unknown choice gets the same message wherever it is set. ``tools/gen_param_docs.py`` writes the
documentation tables from the same declarations (``option_rows``). ROS-free and model-free.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import types
import typing
from collections.abc import Mapping
from pathlib import Path, PurePath
from typing import Any, TypeVar

from .errors import BackendUnavailable, ConfigError

_METADATA_KEY = "reasonvos_option"


@dataclasses.dataclass(frozen=True)
class OptionSpec:
    """What a field declares besides its type and default."""

    description: str
    low: float | None = None  # inclusive bounds; None = unbounded on that side
    high: float | None = None
    choices: tuple[Any, ...] = ()


def option(
    default: Any = dataclasses.MISSING,
    description: str = "",
    *,
    low: float | None = None,
    high: float | None = None,
    choices: tuple[Any, ...] = (),
    default_factory: Any = dataclasses.MISSING,
) -> Any:
    """A dataclass field carrying its description and its limits (inclusive ``low``/``high``, or ``choices``)."""
    if not description:
        raise TypeError("every option needs a description")
    metadata = {_METADATA_KEY: OptionSpec(description, low, high, tuple(choices))}
    return dataclasses.field(default=default, default_factory=default_factory, metadata=metadata)


def spec_of(field: dataclasses.Field) -> OptionSpec:
    spec = field.metadata.get(_METADATA_KEY)
    if spec is None:
        raise TypeError(f"field {field.name!r} was not declared with option(...)")
    return spec


# ---- the one checker ---------------------------------------------------------------------------------------------


def type_text(hint: Any) -> str:
    """A type hint as the messages and the documentation show it (JSON's ``null`` for None)."""
    if hint is Any:
        return "any"
    if hint is type(None):
        return "null"
    if _is_union(hint):
        return " or ".join(type_text(arg) for arg in typing.get_args(hint))
    if _is_mapping(hint):
        return "object"
    if isinstance(hint, type) and issubclass(hint, OptionSet):
        return "object"
    if hint is PurePath or hint is Path:
        return "path"
    return getattr(hint, "__name__", str(hint))


def _is_union(hint: Any) -> bool:
    return typing.get_origin(hint) in (typing.Union, types.UnionType)


def _is_mapping(hint: Any) -> bool:
    origin = typing.get_origin(hint) or hint
    return origin in (dict, Mapping)


def conform(value: Any, hint: Any, name: str) -> Any:
    """``value`` checked against the type ``hint`` (int given for float becomes float; a JSON object given for a
    nested option set builds it); raises ConfigError ``"<name> must be <type>, got <type> <value>"``."""
    if hint is Any:
        return value
    if _is_union(hint):
        args = typing.get_args(hint)
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return conform(value, arg, name)
            except ConfigError:
                continue
    elif isinstance(hint, type) and issubclass(hint, OptionSet):
        if isinstance(value, hint):
            return value
        if isinstance(value, Mapping):
            try:
                return parse_options(hint, value)
            except ConfigError as exc:
                raise ConfigError(f"{name}: {exc}") from exc
    elif _is_mapping(hint):
        if isinstance(value, Mapping):
            return dict(value)
    elif hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif isinstance(hint, type):
        if isinstance(value, hint):
            return value
    else:
        raise TypeError(f"{name}: unsupported option type {hint!r}")
    raise ConfigError(f"{name} must be {type_text(hint)}, got {type(value).__name__} {value!r}")


def check_limits(value: Any, spec: OptionSpec, name: str) -> None:
    """Choices, then the inclusive range; the range applies to numbers only (None, text and flags pass)."""
    if spec.choices and value is not None and not _among(value, spec.choices):
        raise ConfigError(f"{name} must be one of {choices_text(spec.choices)}, got {value!r}")
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return
    low, high = spec.low, spec.high
    # Written as "not inside" so that NaN, which compares false with everything, is out of any range.
    if (low is not None and not value >= low) or (high is not None and not value <= high):
        if low is not None and high is not None:
            raise ConfigError(f"{name} must be in [{low}, {high}], got {value}")
        if low is not None:
            raise ConfigError(f"{name} must be >= {low}, got {value}")
        raise ConfigError(f"{name} must be <= {high}, got {value}")


def _among(value: Any, choices: tuple[Any, ...]) -> bool:
    # ``1 == True`` in Python: compare the types too, so a choice list with true/false does not take 1.
    return any(value == choice and type(value) is type(choice) for choice in choices)


def check_value(value: Any, hint: Any, spec: OptionSpec, name: str) -> Any:
    """The single check of one value: type (``conform``), then ``check_limits``. Returns the conformed value."""
    value = conform(value, hint, name)
    check_limits(value, spec, name)
    return value


def json_text(value: Any) -> str:
    """A value as JSON shows it (true, null, "text"); what the documentation and the choice lists print."""
    if isinstance(value, OptionSet):
        return "{}"
    if isinstance(value, PurePath):
        value = str(value)
    return json.dumps(value)


def choices_text(choices: tuple[Any, ...]) -> str:
    return ", ".join(choice if isinstance(choice, str) else json_text(choice) for choice in choices)


def json_object(text: str, name: str) -> dict[str, Any]:
    """The JSON object in ``text`` (blank text = no options); ConfigError naming ``name`` otherwise."""
    try:
        value = json.loads(text) if text.strip() else {}
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{name} is not valid JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise ConfigError(f"{name} must be a JSON object, got {text!r}")
    return value


# ---- option sets ---------------------------------------------------------------------------------------------------

OptionsT = TypeVar("OptionsT", bound="OptionSet")


@dataclasses.dataclass(frozen=True)
class OptionSet:
    """Base of the frozen option dataclasses: building one checks every field (and ``check`` for rules that
    involve several fields), so an instance is always valid."""

    def __post_init__(self) -> None:
        hints = _type_hints(type(self))
        for field in dataclasses.fields(self):
            value = check_value(getattr(self, field.name), hints[field.name], spec_of(field), field.name)
            object.__setattr__(self, field.name, value)  # frozen: the conformed value (int -> float, dict -> set)
        self.check()

    def check(self) -> None:
        """Rules between fields; subclasses raise ConfigError naming the fields."""

    def validate(self) -> None:
        """Check the values again (an instance is checked when built; kept for callers that ask explicitly)."""
        type(self).__post_init__(self)

    @classmethod
    def names(cls) -> tuple[str, ...]:
        return tuple(field.name for field in dataclasses.fields(cls))

    @classmethod
    def build(
        cls: type[OptionsT], options: OptionsT | None = None, values: Mapping[str, Any] | None = None
    ) -> OptionsT:
        """The backends' constructor convention: ``Backend(options)`` with an instance, ``Backend(**values)``, or
        both (the values override the instance's fields); every value is checked."""
        if options is None:
            return parse_options(cls, values or {})
        if not isinstance(options, cls):
            raise TypeError(f"expected {cls.__name__} or keyword options, got {type(options).__name__} {options!r}")
        if not values:
            return options
        current = {field.name: getattr(options, field.name) for field in dataclasses.fields(options)}
        return parse_options(cls, {**current, **values})

    def as_dict(self) -> dict[str, Any]:
        """Field values, nested option sets as dicts (e.g. to pass on as keyword arguments)."""
        return {
            field.name: value.as_dict() if isinstance(value := getattr(self, field.name), OptionSet) else value
            for field in dataclasses.fields(self)
        }


@functools.cache
def _type_hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def parse_options(options_type: type[OptionsT], values: Mapping[str, Any] | str) -> OptionsT:
    """An instance of ``options_type`` from a mapping or a JSON object text, every name and value checked.

    An unknown name raises ConfigError ``"unknown option 'x' (accepted options: a, b)"``; callers add whose
    options they are (the registry: ``"bad options for tracker backend 'xmem': ..."``)."""
    if isinstance(values, str):
        values = json_object(values, "options")
    if not isinstance(values, Mapping):
        raise ConfigError(f"options must be a JSON object, got {type(values).__name__} {values!r}")
    accepted = options_type.names()
    for name in values:
        if name not in accepted:
            raise ConfigError(f"unknown option {name!r} (accepted options: {', '.join(accepted) or 'none'})")
    return options_type(**values)


@dataclasses.dataclass(frozen=True)
class OptionRow:
    """One documented option: ``name`` is dotted for the fields of a nested option set."""

    name: str
    type: str
    default: str
    limits: str
    description: str


def option_rows(options_type: type[OptionSet], prefix: str = "") -> list[OptionRow]:
    """The documentation rows of an option set, nested option sets flattened (``detector.input_size``)."""
    hints = _type_hints(options_type)
    rows = []
    for field in dataclasses.fields(options_type):
        hint, spec = hints[field.name], spec_of(field)
        if isinstance(hint, type) and issubclass(hint, OptionSet):
            rows += option_rows(hint, f"{prefix}{field.name}.")
            continue
        default = field.default_factory() if field.default is dataclasses.MISSING else field.default
        rows.append(
            OptionRow(prefix + field.name, type_text(hint), json_text(default), limits_text(spec), spec.description)
        )
    return rows


def limits_text(spec: OptionSpec) -> str:
    """The choices or the range of a spec as the documentation and ``ros2 param describe`` show them ("" if none)."""
    if spec.choices:
        return choices_text(spec.choices)
    if spec.low is not None and spec.high is not None:
        return f"{spec.low} .. {spec.high}"
    if spec.low is not None:
        return f">= {spec.low}"
    if spec.high is not None:
        return f"<= {spec.high}"
    return ""


# ---- groups shared by several backends ---------------------------------------------------------------------------


def device_option() -> Any:
    return option("auto", "torch device: auto (CUDA when torch sees one, else CPU), cpu, cuda or cuda:N")


def dtype_option() -> Any:
    return option(
        "auto",
        "dtype the model runs in: auto (bfloat16 on CUDA, float32 on CPU), float32/fp32, bfloat16/bf16, float16/fp16",
    )


def num_threads_option() -> Any:
    return option(None, "torch CPU threads (null: leave torch's setting)", low=1)


def weights_path(
    value: str | PurePath | None, *, option_name: str, backend: str, role: str, label: str, what: str, kind: str = "any"
) -> Path:
    """The path of a required weights option, which must exist (``kind`` "file", "dir" or "any"); otherwise
    BackendUnavailable naming the option and the path (``backend``: registry name, ``label``: how messages name
    the model, ``what``: what the path is)."""
    if not value:
        raise BackendUnavailable(f"the {backend} {role} needs options.{option_name}: {what}")
    path = Path(value).expanduser()
    found = {"file": path.is_file, "dir": path.is_dir, "any": path.exists}[kind]()
    if not found:
        raise BackendUnavailable(f"{label} {option_name} not found: {path} (set the {role}'s options.{option_name})")
    return path
