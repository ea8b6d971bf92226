"""Instructions and the reset / enable services without ROS (core/commands.py), on a real (not started) engine."""

from __future__ import annotations

import numpy as np
import pytest

from reasonvos_ros.backends.scripted import ScriptedSampler, ScriptedSegmenter, ScriptedTracker
from reasonvos_ros.core.commands import TargetCommands
from reasonvos_ros.core.engine import LiveEngine
from reasonvos_ros.core.pipeline import Pipeline
from reasonvos_ros.core.rejections import RejectionCounter
from reasonvos_ros.core.window import RollingWindow


class Log:
    def __init__(self) -> None:
        self.info_lines: list[str] = []
        self.warning_lines: list[str] = []

    def info(self, text: str, **_) -> None:
        self.info_lines.append(text)

    def warning(self, text: str, **_) -> None:
        self.warning_lines.append(text)


@pytest.fixture
def setup():
    window = RollingWindow()
    pipeline = Pipeline(ScriptedSampler(), ScriptedSegmenter(), ScriptedTracker())
    engine = LiveEngine(pipeline, window, lambda *_: None, max_targets=2)
    log = Log()
    commands = TargetCommands(RejectionCounter(Log()), log, "/camera/image")
    return commands, engine, window, log


def test_instructions_are_accepted_repeats_counted_and_the_inactive_node_refuses(setup):
    commands, engine, window, log = setup
    commands.instruct(None, window, "cup", "the red cup", "text")
    assert commands.rejections.counts == {"instruction": 1} and not engine.targets()
    commands.instruct(engine, window, "cup", "the red cup", "speech")
    assert engine.targets()["cup"].instruction == "the red cup"
    assert log.info_lines == ["instruction for 'cup' (speech): 'the red cup'"]
    assert "before the first camera frame" in log.warning_lines[-1] and "'/camera/image'" in log.warning_lines[-1]
    commands.instruct(engine, window, " cup ", "the red cup", "text")  # the same again: not restarted
    assert commands.repeated == 1 and len(log.info_lines) == 1
    window.add(np.zeros((8, 8, 3), np.uint8), 0.0)
    warnings = len(log.warning_lines)
    commands.instruct(engine, window, "", "the blue mug", "text")  # "" is the default target
    assert set(engine.targets()) == {"cup", "default"} and len(log.warning_lines) == warnings
    commands.instruct(engine, window, "third", "a plate", "text")  # over max_targets
    commands.instruct(engine, window, "cup", "   ", "text")  # empty instruction
    assert commands.rejections.counts == {"instruction": 3}
    commands.instructions_lost(3, 7)
    assert commands.lost == 3 and commands.rejections.counts["instruction_lost"] == 1


def test_reset_and_enable_answer_with_what_happened(setup):
    commands, engine, window, log = setup
    assert commands.reset(None, "cup") == (False, "node is not configured")
    assert commands.enable(None, True) == (False, "node is not configured")
    commands.instruct(engine, window, "cup", "the red cup", "text")
    commands.instruct(engine, window, "mug", "the mug", "text")
    assert commands.reset(engine, "plate") == (False, "unknown target 'plate' (known: cup, mug)")
    assert commands.rejections.counts.get("reset") == 1
    assert commands.reset(engine, " cup ") == (True, "reset 'cup'")
    assert set(engine.targets()) == {"mug"}
    assert commands.reset(engine, "") == (True, "reset all targets") and not engine.targets()
    assert commands.enable(engine, False) == (True, "processing paused") and engine.enabled is False
    assert commands.enable(engine, True) == (True, "processing enabled") and engine.enabled is True
    assert log.info_lines[-2:] == ["processing paused", "processing enabled"]
