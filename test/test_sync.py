"""Approximate time synchroniser: the documented policy, invariants on random streams, concurrent feeding."""

from __future__ import annotations

import itertools
import random
import threading

import pytest

from reasonvos_ros.core.sync import ApproximateTimeSynchronizer, Stamped


class Recorder:
    def __init__(self):
        self.sets: list[tuple[Stamped, ...]] = []

    def __call__(self, *items):
        self.sets.append(items)

    @property
    def payloads(self):
        return [tuple(item.payload for item in matched) for matched in self.sets]


def make(num_inputs=2, queue_size=10, slop=0.05):
    recorder = Recorder()
    return ApproximateTimeSynchronizer(num_inputs, queue_size, slop, recorder), recorder


def test_pair_within_slop_is_delivered_once_in_input_order():
    sync, rec = make()
    assert sync.add(1, 1.02, "depth1") is None
    matched = sync.add(0, 1.00, "rgb1")
    assert matched == (Stamped(1.00, "rgb1"), Stamped(1.02, "depth1"))
    assert rec.payloads == [("rgb1", "depth1")]
    assert sync.queued(0) == [] and sync.queued(1) == []
    # a later depth message near the already delivered image does not re-use it
    assert sync.add(1, 1.01, "late") is None
    assert rec.payloads == [("rgb1", "depth1")]
    assert sync.delivered == 1


def test_spread_must_be_strictly_below_slop():
    """As message_filters: a spread equal to slop is not a set (stamps compared as integer nanoseconds)."""
    sync, rec = make(slop=0.05)
    sync.add(0, 1.0, "a")
    sync.add(1, 1.05, "b")  # exactly slop apart
    assert rec.sets == []
    sync.add(1, 1.0499, "c")
    assert rec.payloads == [("a", "c")]
    assert sync.queued(1) == [1.05]


def test_identical_stamps_match_with_zero_slop():
    sync, rec = make(slop=0.0)
    sync.add(0, 1.0, "a")
    sync.add(1, 1.000000001, "b")
    assert rec.sets == []
    sync.add(1, 1.0, "c")
    assert rec.payloads == [("a", "c")]


def test_nanosecond_stamps_are_exact_at_unix_time_scale():
    sync, rec = make(slop=0.05)
    base = 1_800_000_000 * 10**9
    sync.add_ns(0, base, "a")
    sync.add_ns(1, base + 50_000_000, "b")  # exactly slop: no set
    sync.add_ns(1, base + 49_999_999, "c")
    assert rec.payloads == [("a", "c")]
    assert rec.sets[0][0].stamp == base / 1e9


def test_closest_queued_message_wins_and_older_ones_are_dropped():
    sync, rec = make(slop=0.05)
    for stamp in (0.90, 0.97, 1.01, 1.20):
        sync.add(1, stamp, f"d{stamp}")
    sync.add(0, 1.00, "rgb")
    assert rec.payloads == [("rgb", "d1.01")]
    assert sync.queued(1) == [1.20]  # 0.90 and 0.97 can no longer be delivered in order
    assert sync.dropped == [0, 2]


def test_delivery_is_eager():
    sync, rec = make(slop=0.05)
    sync.add(0, 1.00, "rgb")
    sync.add(1, 0.97, "d_early")  # within slop: delivered now, a closer one arriving later is not awaited
    sync.add(1, 1.00, "d_exact")
    assert rec.payloads == [("rgb", "d_early")]
    assert sync.queued(1) == [1.00]


def test_queue_is_bounded_dropping_oldest():
    sync, rec = make(queue_size=3)
    for k in range(5):
        sync.add(0, float(k), k)
    assert sync.queued(0) == [2.0, 3.0, 4.0]
    assert sync.dropped == [2, 0]
    # an arrival older than everything in a full queue is dropped at once and never matched
    sync.add(1, 0.0, "old")
    assert rec.sets == []
    sync.add(1, 3.0, "d3")
    assert rec.payloads == [(3, "d3")]


def test_message_older_than_last_delivered_is_dropped():
    sync, rec = make(slop=0.5)
    sync.add(0, 2.0, "a2")
    sync.add(1, 2.0, "b2")
    sync.add(0, 1.9, "a_stale")  # older than the delivered a2
    sync.add(1, 2.1, "b")  # would match a_stale within slop, but a_stale was rejected
    assert rec.payloads == [("a2", "b2")]
    assert sync.queued(0) == [] and sync.dropped[0] == 1


def test_same_stamp_replaces_queued_message():
    sync, rec = make()
    sync.add(0, 1.0, "first")
    sync.add(0, 1.0, "second")
    assert sync.queued(0) == [1.0] and sync.dropped == [1, 0]
    sync.add(1, 1.0, "b")
    assert rec.payloads == [("second", "b")]


def test_three_inputs_need_all_within_slop():
    sync, rec = make(num_inputs=3, slop=0.05)
    sync.add(0, 1.00, "rgb")
    sync.add(1, 1.04, "depth")
    assert rec.sets == []
    sync.add(2, 0.98, "info_far")  # within slop of rgb but 0.06 from depth
    assert rec.sets == []
    sync.add(2, 1.03, "info")
    assert rec.payloads == [("rgb", "depth", "info")]
    assert sync.queued(2) == []  # 0.98 dropped as older than the delivered 1.03


def test_single_input_delivers_immediately():
    sync, rec = make(num_inputs=1)
    sync.add(0, 1.0, "x")
    sync.add(0, 0.5, "older")
    sync.add(0, 2.0, "y")
    assert rec.payloads == [("x",), ("y",)]


def test_return_value_without_callback_and_input_feeder():
    sync = ApproximateTimeSynchronizer(2, 5, 0.01)
    feed_b = sync.input(1)
    assert sync.input(0)(3.0, "a") is None
    assert feed_b(3.005, "b") == (Stamped(3.0, "a"), Stamped(3.005, "b"))


def test_reset_forgets_queue_and_history():
    sync, rec = make()
    sync.add(0, 5.0, "a")
    sync.add(1, 5.0, "b")
    sync.add(0, 6.0, "pending")
    sync.reset()
    assert sync.queued(0) == []
    sync.add(0, 1.0, "after_loop")  # time went back (bag loop): accepted after reset
    sync.add(1, 1.0, "b2")
    assert rec.payloads == [("a", "b"), ("after_loop", "b2")]


def test_callback_may_feed_the_synchroniser_again():
    sync = ApproximateTimeSynchronizer(2, 5, 0.01)
    seen = []

    def callback(a, b):
        seen.append((a.payload, b.payload))
        if a.payload == "a1":
            sync.add(0, 2.0, "a2")  # re-entrant call from the delivering thread

    sync.register_callback(callback)
    sync.add(0, 1.0, "a1")
    sync.add(1, 1.0, "b1")
    sync.add(1, 2.0, "b2")
    assert seen == [("a1", "b1"), ("a2", "b2")]


@pytest.mark.parametrize(
    ("args", "error"),
    [
        ((0, 5, 0.1), ValueError),
        ((2, 0, 0.1), ValueError),
        ((2, 5, -0.1), ValueError),
        ((2, 5, float("nan")), ValueError),
    ],
)
def test_invalid_construction(args, error):
    with pytest.raises(error):
        ApproximateTimeSynchronizer(*args)


def test_invalid_add():
    sync, _ = make()
    with pytest.raises(IndexError, match="out of range"):
        sync.add(2, 1.0, None)
    with pytest.raises(ValueError, match="finite"):
        sync.add(0, float("inf"), None)


def _deliverable_set_exists(sync: ApproximateTimeSynchronizer) -> bool:
    slop_ns = round(sync.slop * 1e9)
    for stamps in itertools.product(*(sync.queued(i) for i in range(sync.num_inputs))):
        stamps_ns = [round(s * 1e9) for s in stamps]
        if max(stamps_ns) - min(stamps_ns) < slop_ns:
            return True
    return False


@pytest.mark.parametrize("seed", range(20))
def test_invariants_on_random_jittered_streams(seed):
    """Three sensors at ~30 Hz with jitter, drops and reordering: check every documented guarantee."""
    rng = random.Random(seed)
    num_inputs, slop = 3, 0.012
    sync, rec = make(num_inputs=num_inputs, queue_size=rng.randint(2, 8), slop=slop)
    arrivals = []
    for frame in range(60):
        for index in range(num_inputs):
            if rng.random() < 0.15:
                continue  # this sensor dropped the frame
            stamp = round(frame / 30 + rng.uniform(-0.008, 0.008), 6)
            arrivals.append((frame / 30 + rng.uniform(0, 0.05), index, stamp))
    arrivals.sort()
    offered = 0
    for _, index, stamp in arrivals:
        sync.add(index, stamp, (index, stamp))
        offered += 1
        assert not _deliverable_set_exists(sync), "a complete set within slop was left queued"
        assert all(len(sync.queued(i)) <= sync.queue_size for i in range(num_inputs))
    delivered_payloads = [item.payload for matched in rec.sets for item in matched]
    assert len(delivered_payloads) == len(set(delivered_payloads)), "a message was delivered twice"
    for matched in rec.sets:
        stamps = [item.stamp for item in matched]
        assert max(stamps) - min(stamps) < slop
        assert [item.payload[0] for item in matched] == list(range(num_inputs))
    for index in range(num_inputs):
        per_input = [matched[index].stamp for matched in rec.sets]
        assert per_input == sorted(per_input) and len(set(per_input)) == len(per_input)
    queued = sum(len(sync.queued(i)) for i in range(num_inputs))
    assert offered == len(delivered_payloads) + sum(sync.dropped) + queued
    assert len(rec.sets) > 20  # most frames are complete and must be matched


def test_concurrent_feeding_delivers_every_pair_exactly_once():
    count = 400
    sync, rec = make(queue_size=count, slop=0.01)

    def feed(index, offset):
        for k in range(count):
            sync.add(index, k * 0.1 + offset, (index, k))

    threads = [threading.Thread(target=feed, args=(0, 0.0)), threading.Thread(target=feed, args=(1, 0.004))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert sorted(rec.payloads) == [((0, k), (1, k)) for k in range(count)]
    assert rec.payloads == sorted(rec.payloads), "sets were delivered out of time order"
    assert sync.dropped == [0, 0]
