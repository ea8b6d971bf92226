"""The model-free samplers: "latest" (newest frame) and "uniform" (fixed fraction of the window)."""

import numpy as np
import pytest

from reasonvos_ros.backends.simple_samplers import LatestFrameSampler, UniformFrameSampler
from reasonvos_ros.core.errors import ConfigError
from reasonvos_ros.core.interfaces import FrameSampler
from reasonvos_ros.core.registry import build_backend
from reasonvos_ros.core.types import Frame


def make_frames(count: int, first_index: int = 100) -> list[Frame]:
    image = np.zeros((4, 6, 3), np.uint8)
    return [Frame(first_index + i, 10.0 + 0.1 * i, image=image) for i in range(count)]


@pytest.mark.parametrize("count", [1, 2, 7, 30])
def test_latest_picks_the_newest_frame(count):
    choice = LatestFrameSampler().sample(make_frames(count), "the cup")
    assert choice.key == count - 1
    assert choice.references == []
    assert choice.confidence is None
    assert choice.details["sampler"] == "latest"


@pytest.mark.parametrize(
    ("position", "count", "key"),
    [
        (0.5, 10, 5),  # default: the middle of the window
        (0.5, 9, 4),
        (0.5, 1, 0),
        (0.0, 10, 0),
        (1.0, 10, 9),  # equals "latest"
        (0.25, 8, 2),
        (0.99, 3, 2),
    ],
)
def test_uniform_picks_a_fixed_fraction(position, count, key):
    choice = UniformFrameSampler(position=position).sample(make_frames(count), "the cup")
    assert choice.key == key
    assert choice.references == []
    assert choice.confidence is None
    assert choice.details == {"sampler": "uniform", "position": position}


def test_uniform_default_is_the_middle():
    assert UniformFrameSampler().sample(make_frames(20), "x").key == 10


@pytest.mark.parametrize("position", [-0.1, 1.01, "middle", None])
def test_uniform_rejects_bad_positions(position):
    with pytest.raises(ConfigError, match="position"):
        UniformFrameSampler(position=position)


@pytest.mark.parametrize("sampler", [LatestFrameSampler(), UniformFrameSampler()])
def test_empty_window_is_an_error(sampler):
    with pytest.raises(ValueError, match="at least one frame"):
        sampler.sample([], "the cup")


def test_registry_builds_both():
    latest = build_backend("sampler", "latest")
    uniform = build_backend("sampler", "uniform", {"position": 0.2})
    assert isinstance(latest, LatestFrameSampler) and isinstance(latest, FrameSampler)
    assert isinstance(uniform, UniformFrameSampler) and uniform.position == 0.2
    with pytest.raises(ConfigError, match="bad options"):
        build_backend("sampler", "latest", {"position": 0.2})
