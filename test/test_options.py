"""Typed backend options (core/options.py): one checker for names, types, ranges and choices; every backend's
``Options`` dataclass documents and validates itself; PipelineConfig and the node's parameters share one table."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from reasonvos_ros.backends.lite.detector import DetectorOptions
from reasonvos_ros.backends.scripted import ScriptedSampler, ScriptedTracker, ScriptedTrackerOptions
from reasonvos_ros.core.config import PipelineConfig
from reasonvos_ros.core.errors import BackendUnavailable, ConfigError
from reasonvos_ros.core.options import OptionSet, option, option_rows, parse_options, weights_path
from reasonvos_ros.core.registry import ROLES, backend_options_type, build_backend, check_backend_options

EVERY_BACKEND = [(role, name) for role, (table, _) in ROLES.items() for name in table]


@dataclasses.dataclass(frozen=True)
class _Example(OptionSet):
    ratio: float = option(0.5, "a fraction", low=0.0, high=1.0)
    count: int = option(3, "a count", low=1)
    mode: str = option("fast", "a mode", choices=("fast", "slow"))
    flag: bool | str = option("auto", "a flag or auto", choices=(True, False, "auto"))
    limit: int | None = option(None, "an optional bound", low=0)
    nested: DetectorOptions = option(DetectorOptions(), "nested options")


def test_unknown_option_lists_the_accepted_names():
    with pytest.raises(ConfigError) as info:
        parse_options(_Example, {"ratoi": 0.2})
    assert str(info.value) == "unknown option 'ratoi' (accepted options: ratio, count, mode, flag, limit, nested)"
    with pytest.raises(ConfigError) as info:
        build_backend("tracker", "scripted", {"confidance": 0.5})
    assert str(info.value) == (
        "bad options for tracker backend 'scripted': unknown option 'confidance' "
        "(accepted options: delay_s, confidence, fail_after)"
    )
    with pytest.raises(ConfigError, match=r"accepted options: none"):
        build_backend("sampler", "latest", {"position": 0.5})


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"ratio": "0.5"}, "ratio must be float, got str '0.5'"),
        ({"count": 2.0}, "count must be int, got float 2.0"),
        ({"count": True}, "count must be int, got bool True"),
        ({"mode": 1}, "mode must be str, got int 1"),
        ({"flag": 1}, "flag must be bool or str, got int 1"),
        ({"limit": "none"}, "limit must be int or null, got str 'none'"),
        ({"nested": 3}, "nested must be object, got int 3"),
    ],
)
def test_wrong_type_names_the_option_and_the_types(values, message):
    with pytest.raises(ConfigError) as info:
        parse_options(_Example, values)
    assert str(info.value) == message


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"ratio": 1.5}, "ratio must be in [0.0, 1.0], got 1.5"),
        ({"ratio": float("nan")}, "ratio must be in [0.0, 1.0], got nan"),
        ({"count": 0}, "count must be >= 1, got 0"),
        ({"mode": "medium"}, "mode must be one of fast, slow, got 'medium'"),
        ({"flag": "sometimes"}, "flag must be one of true, false, auto, got 'sometimes'"),
        ({"limit": -1}, "limit must be >= 0, got -1"),
        ({"nested": {"input_size": 8}}, "nested: input_size must be >= 32, got 8"),
        ({"nested": {"size": 300}}, "nested: unknown option 'size' (accepted options: graph_path, text_graph_path"),
    ],
)
def test_out_of_range_or_not_a_choice(values, message):
    with pytest.raises(ConfigError) as info:
        parse_options(_Example, values)
    assert str(info.value).startswith(message)


def test_values_are_conformed_and_the_result_is_frozen():
    options = parse_options(_Example, '{"ratio": 1, "flag": false, "limit": null, "nested": {"score_threshold": 0.5}}')
    assert options.ratio == 1.0 and isinstance(options.ratio, float)  # an int given for a float becomes a float
    assert options.flag is False and options.limit is None
    assert options.nested == DetectorOptions(score_threshold=0.5)
    with pytest.raises(dataclasses.FrozenInstanceError):
        options.ratio = 0.2
    with pytest.raises(ConfigError, match="options is not valid JSON"):
        parse_options(_Example, "{ratio: 1}")
    with pytest.raises(ConfigError, match="options must be a JSON object"):
        parse_options(_Example, "[1]")


def test_backend_constructors_take_the_typed_options_or_keywords():
    typed = ScriptedTrackerOptions(confidence=0.5)
    assert ScriptedTracker(typed).options is typed
    assert ScriptedTracker(confidence=0.5).options == typed
    assert ScriptedTracker(typed, delay_s=0.25).options == ScriptedTrackerOptions(confidence=0.5, delay_s=0.25)
    with pytest.raises(TypeError, match="ScriptedSamplerOptions"):
        ScriptedSampler(0.5)  # the only positional argument is the options object
    with pytest.raises(ConfigError, match="position must be 'latest', 'first' or a number"):
        ScriptedSampler(position="middle")
    built = build_backend("tracker", "scripted", {"confidence": 1})
    assert isinstance(built, ScriptedTracker) and built.options == ScriptedTrackerOptions(confidence=1.0)


@pytest.mark.parametrize(("role", "name"), EVERY_BACKEND)
def test_every_backend_declares_documented_options_whose_defaults_validate(role, name):
    options_type = backend_options_type(role, name)
    default = options_type()  # every default passes the backend's own validation
    rows = option_rows(options_type)
    for row in rows:
        assert len(row.description) > 10, f"{role} {name}: option {row.name} says too little"
        assert row.type and row.default, row
    # The defaults written as JSON (what a params file holds) read back to the same options.
    as_json = json.dumps(default.as_dict(), default=str)
    assert check_backend_options(role, name, json.loads(as_json)) == default
    assert check_backend_options(role, name, {}) == default


def test_every_weights_set_writes_options_its_backend_accepts(tmp_path):
    from reasonvos_ros.weights.catalog import MODEL_SETS
    from reasonvos_ros.weights.cli import params_document

    for model_set in MODEL_SETS:
        document = params_document(model_set, tmp_path, "cpu", "auto")
        values = document["/**"]["ros__parameters"]
        role = model_set.backend_role
        options = json.loads(values[f"{role}_options"])
        checked = check_backend_options(role, values[role], options)
        assert checked.as_dict()["device"] == "cpu", model_set.name


def test_weights_path_names_the_option_and_the_missing_path(tmp_path):
    with pytest.raises(BackendUnavailable) as info:
        weights_path(None, option_name="checkpoint", backend="xmem", role="tracker", label="XMem", what="XMem.pth")
    assert str(info.value) == "the xmem tracker needs options.checkpoint: XMem.pth"
    missing = tmp_path / "XMem.pth"
    with pytest.raises(BackendUnavailable) as info:
        weights_path(missing, option_name="checkpoint", backend="xmem", role="tracker", label="XMem", what="XMem.pth")
    assert str(info.value) == f"XMem checkpoint not found: {missing} (set the tracker's options.checkpoint)"
    (tmp_path / "folder").mkdir()
    with pytest.raises(BackendUnavailable, match="not found"):
        weights_path(tmp_path / "folder", option_name="c", backend="b", role="r", label="L", what="w", kind="file")
    assert weights_path(str(tmp_path), option_name="c", backend="b", role="r", label="L", what="w") == Path(tmp_path)


def test_pipeline_config_is_frozen_checked_and_is_the_source_of_the_node_parameters():
    from reasonvos_ros.ros.parameters import PARAMETERS_BY_NAME

    with pytest.raises(ConfigError, match=r"lost_patience must be in \[1, 1000\], got 0"):
        PipelineConfig(lost_patience=0)
    with pytest.raises(ConfigError, match="reference_strategy must be one of global, local"):
        PipelineConfig(reference_strategy="random")
    with pytest.raises(dataclasses.FrozenInstanceError):
        PipelineConfig().lost_patience = 5
    for row in option_rows(PipelineConfig):
        param = PARAMETERS_BY_NAME[row.name]
        field = PipelineConfig.__dataclass_fields__[row.name]
        assert param.default == field.default and param.description == row.description
        spec = field.metadata["reasonvos_option"]
        assert (param.low, param.high, param.choices) == (spec.low, spec.high, spec.choices)
