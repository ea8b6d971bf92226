"""Issue 18: the bag tools on damaged, empty and foreign bags give one clear error line (exit code 2), never a
traceback; a killed recorder leaves a bag readable up to its last completed split (mcap and sqlite3); a full disk
ends the recording with a clear error and the completed splits intact."""

from __future__ import annotations

import argparse
import errno
import os
import shutil
import signal
import time
from pathlib import Path

import numpy as np
import pytest
from rosbags.rosbag2 import Reader, StoragePlugin, Writer
from rosbags.typesys import Stores, get_types_from_msg, get_typestore

from reasonvos_ros.bag import play, record, render
from reasonvos_ros.bag.record import SplitWriter
from reasonvos_ros.bag.types import make_typestore

STORAGES = {"mcap": StoragePlugin.MCAP, "sqlite3": StoragePlugin.SQLITE3}


def write_image_bag(path: Path, storage: str, count: int = 20) -> Path:
    typestore = make_typestore()
    Image = typestore.types["sensor_msgs/msg/Image"]
    Header = typestore.types["std_msgs/msg/Header"]
    Time = typestore.types["builtin_interfaces/msg/Time"]
    writer = Writer(path, version=9, storage_plugin=STORAGES[storage])
    writer.open()
    connection = writer.add_connection("/image", "sensor_msgs/msg/Image", typestore=typestore)
    rng = np.random.default_rng(0)
    for i in range(count):
        pixels = rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)
        msg = Image(
            header=Header(stamp=Time(sec=1_700_000_000, nanosec=i * 50_000_000), frame_id="cam"),
            height=48,
            width=64,
            encoding="rgb8",
            is_bigendian=0,
            step=64 * 3,
            data=pixels.reshape(-1),
        )
        writer.write(
            connection, 1_700_000_000_000_000_000 + i * 50_000_000, typestore.serialize_cdr(msg, Image.__msgtype__)
        )
    writer.close()
    return path


def storage_file(bag: Path) -> Path:
    return next(p for p in bag.iterdir() if p.suffix in (".mcap", ".db3"))


def make_damaged(kind: str, storage: str, root: Path) -> Path:
    bag = root / f"{kind}_{storage}"
    if kind == "empty_folder":
        bag.mkdir()
        return bag
    if kind == "unknown_type":
        typestore = get_typestore(Stores.EMPTY)
        typestore.register(get_types_from_msg("int32 value\nstring name", "mystery_msgs/msg/Thing"))
        Thing = typestore.types["mystery_msgs/msg/Thing"]
        writer = Writer(bag, version=9, storage_plugin=STORAGES[storage])
        writer.open()
        connection = writer.add_connection("/thing", "mystery_msgs/msg/Thing", typestore=typestore)
        writer.write(connection, 1, typestore.serialize_cdr(Thing(value=3, name="x"), "mystery_msgs/msg/Thing"))
        writer.close()
        return bag
    write_image_bag(bag, storage)
    data = storage_file(bag).read_bytes()
    if kind == "truncated":  # the last 100 bytes missing
        storage_file(bag).write_bytes(data[:-100])
    elif kind == "corrupt":  # the storage file's structure overwritten
        rng = np.random.default_rng(1)
        storage_file(bag).write_bytes(data[:16] + rng.integers(0, 256, len(data) - 16, dtype=np.uint8).tobytes())
    elif kind == "zero_bytes":
        storage_file(bag).write_bytes(b"")
    elif kind == "no_messages":
        shutil.rmtree(bag)
        writer = Writer(bag, version=9, storage_plugin=STORAGES[storage])
        writer.open()
        writer.close()
    return bag


def run_tool(tool, argv: list[str], capsys) -> tuple[int, str]:
    parser = argparse.ArgumentParser()
    tool.add_arguments(parser)
    code = tool.run(parser.parse_args(argv))  # an escaping exception fails the test (it would be a traceback)
    captured = capsys.readouterr()
    return code, captured.err


KINDS = ["truncated", "corrupt", "zero_bytes", "empty_folder", "unknown_type", "no_messages"]


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
@pytest.mark.parametrize("kind", KINDS)
def test_render_gives_a_clear_error_on_damaged_bags(kind, storage, tmp_path, capsys):
    bag = make_damaged(kind, storage, tmp_path)
    code, err = run_tool(render, [str(bag), "--video", str(tmp_path / "out.mp4")], capsys)
    assert code == 2, err
    assert err.startswith("bag-render: error: ") and "Traceback" not in err and len(err.splitlines()) == 1, err
    assert bag.name in err


@pytest.mark.ros
@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
@pytest.mark.parametrize("kind", KINDS)
def test_play_gives_a_clear_error_on_damaged_bags(kind, storage, tmp_path, capsys):
    from rosutil import configure_this_process

    configure_this_process()
    bag = make_damaged(kind, storage, tmp_path)
    code, err = run_tool(play, [str(bag)], capsys)
    if kind == "corrupt" and code == 0:
        pytest.fail("a bag with an overwritten storage file played without error")
    assert code == 2, err
    assert err.startswith("bag-play: error: ") and "Traceback" not in err, err
    assert bag.name in err


def test_damage_kinds_are_named(tmp_path, capsys):
    """The messages say what is wrong, not just an exception name."""
    messages = {}
    for kind in ("truncated", "empty_folder", "unknown_type"):
        bag = make_damaged(kind, "mcap", tmp_path)
        messages[kind] = run_tool(render, [str(bag), "--video", str(tmp_path / "o.mp4")], capsys)[1]
    assert "truncated" in messages["truncated"]
    assert "metadata" in messages["empty_folder"]
    assert "mystery_msgs/msg/Thing" in messages["unknown_type"] or "image topic" in messages["unknown_type"]


# ------------------------------------------------------------------------------------------------ splits
def _raw_image(i: int) -> bytes:
    typestore = make_typestore()
    Image = typestore.types["sensor_msgs/msg/Image"]
    Header = typestore.types["std_msgs/msg/Header"]
    Time = typestore.types["builtin_interfaces/msg/Time"]
    msg = Image(
        header=Header(stamp=Time(sec=1, nanosec=i), frame_id="cam"),
        height=1,
        width=1,
        encoding="mono8",
        is_bigendian=0,
        step=1,
        data=np.array([i % 256], np.uint8),
    )
    return bytes(typestore.serialize_cdr(msg, Image.__msgtype__))


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_split_writer_lists_every_completed_split_and_survives_a_full_disk(storage, tmp_path, monkeypatch):
    out = tmp_path / "rec"
    writer = SplitWriter(out, storage, make_typestore())
    writer.add_topic("/image", "sensor_msgs/msg/Image")
    for split in range(3):
        for i in range(5):
            writer.write("/image", 1_000 + split * 100 + i, _raw_image(split * 5 + i))
        writer.split()
    writer.add_topic("/late", "sensor_msgs/msg/Image")  # a topic that appears later
    writer.write("/late", 5_000, _raw_image(99))
    writer.write("/image", 5_001, _raw_image(98))
    # The disk fills up in the middle of the next split.
    real_write = Writer.write

    def full(self, connection, timestamp, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Writer, "write", full)
    with pytest.raises(OSError) as caught:
        writer.write("/image", 6_000, _raw_image(0))
    monkeypatch.setattr(Writer, "write", real_write)
    from reasonvos_ros.bag.errors import describe_bag_error

    assert "disk is full" in describe_bag_error(caught.value, out)
    # Killed now: the split in progress is lost, the three completed ones are readable.
    with Reader(out) as reader:
        stamps = [timestamp for _, timestamp, _ in reader.messages()]
        assert reader.message_count == 15
    assert stamps == sorted(stamps) and len(stamps) == 15
    # Closing normally adds the split in progress (with the late topic).
    writer.close()
    with Reader(out) as reader:
        assert reader.message_count == 17
        assert {c.topic for c in reader.connections} == {"/image", "/late"}


@pytest.mark.ros
@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_a_killed_recorder_leaves_a_bag_readable_up_to_its_last_split(storage, tmp_path):
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from rosutil import ros_node, spawn_python, wait_until
    from sensor_msgs.msg import Image

    out = tmp_path / "killed"
    proc = spawn_python(
        module="reasonvos_ros.cli",
        args=[
            "bag-record",
            str(out),
            "/image",
            "--storage",
            storage,
            "--split-seconds",
            "0.5",
            "--qos-reliability",
            "reliable",
        ],
        name="recorder",
    )
    try:
        with ros_node("recorder_feed") as h:
            pub = h.node.create_publisher(Image, "/image", QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE))
            h.wait_for_subscribers(pub, timeout=30)
            sent = 0
            start = time.monotonic()
            while time.monotonic() - start < 3.0:
                pub.publish(Image(height=1, width=1, encoding="mono8", step=1, data=bytes([sent % 256])))
                sent += 1
                time.sleep(0.02)
            wait_until(lambda: (out / "metadata.yaml").exists(), 10, "a completed split")
            os.kill(proc.pid, signal.SIGKILL)
            proc.process.wait(timeout=10)
    finally:
        proc.stop()
    with Reader(out) as reader:
        count = sum(1 for _ in reader.messages())
        assert count == reader.message_count
    print(f"\nrecorder killed after {sent} messages in 3 s: {count} readable ({storage})")
    assert count >= sent // 3, f"only {count} of {sent} messages readable"


def test_record_reports_a_full_disk_clearly(monkeypatch, capsys, tmp_path):
    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "rec"))

    monkeypatch.setattr(record, "record_bag", full)
    code, err = run_tool(record, [str(tmp_path / "rec"), "/image"], capsys)
    assert code == 2 and "disk is full" in err and "Traceback" not in err, err
