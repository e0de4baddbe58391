"""The thread pool's hand-off (cnnkit.kernels.threads.run_parts, run_team): results,
errors, nesting, concurrent callers and sleeping workers."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
from attempts import attempts
from numba import carray

from cnnkit.kernels import compiled_task, spin, threads


def _span(start: int, stop: int) -> tuple[int, int, str]:
    return start, stop, threading.get_ident()


@pytest.mark.parametrize("parts", [2, 3, 4])
def test_parts_run_on_distinct_threads_in_order(parts):
    split = threads.split(parts * 5, parts)
    results = threads.run_parts(_span, split)
    assert [r[:2] for r in results] == split
    assert len({r[2] for r in results}) == parts  # the caller plus parts - 1 workers


def test_errors_reach_the_caller_and_the_pool_recovers():
    def fails_in_worker(start, stop):
        if start > 0:
            raise ValueError("worker part")
        return start

    def fails_in_caller(start, stop):
        if start == 0:
            raise KeyError("caller part")
        time.sleep(0.01)
        return start

    with pytest.raises(ValueError, match="worker part"):
        threads.run_parts(fails_in_worker, [(0, 1), (1, 2)])
    with pytest.raises(KeyError, match="caller part"):
        threads.run_parts(fails_in_caller, [(0, 1), (1, 2)])
    assert [r[:2] for r in threads.run_parts(_span, [(0, 1), (1, 2)])] == [(0, 1), (1, 2)]


def test_a_part_may_split_its_own_work():
    def outer(start, stop):
        inner = threads.run_parts(_span, [(start, start + 1), (start + 1, stop)])
        return [r[:2] for r in inner]

    assert threads.run_parts(outer, [(0, 2), (2, 4)]) == [[(0, 1), (1, 2)], [(2, 3), (3, 4)]]


def test_concurrent_callers():
    data = np.arange(4000.0)
    totals = []

    def caller():
        for _ in range(50):
            parts = threads.run_parts(lambda a, b: data[a:b].sum(), [(0, 2000), (2000, 4000)])
            totals.append(sum(parts))

    callers = [threading.Thread(target=caller) for _ in range(3)]
    for t in callers:
        t.start()
    for t in callers:
        t.join()
    assert totals == [data.sum()] * 150


def test_workers_sleep_after_spinning_and_wake_for_the_next_part():
    threads.run_parts(_span, [(0, 1), (1, 2)])
    worker = threads._workers[0]
    deadline = time.monotonic() + 10
    while not worker.parked and time.monotonic() < deadline:
        time.sleep(0.005)  # the spin lasts about 0.7 ms
    assert worker.parked
    assert [r[:2] for r in threads.run_parts(_span, [(0, 1), (1, 2)])] == [(0, 1), (1, 2)]


def test_wait_while_sees_the_other_threads_write():
    counters = np.zeros(2, np.int64)
    assert not spin.wait_while(counters, 0, 0, 100)
    assert spin.wait_while(counters, 0, 5, 1)  # already different
    writer = threading.Timer(0.01, spin.publish, (counters, 1, 7))
    writer.start()
    while not spin.wait_while(counters, 1, 0, 1000):
        pass
    writer.join()
    assert counters[1] == 7


def test_caller_waits_for_started_parts_then_goes_on(monkeypatch):
    """With ``started``, the caller's part waits until the workers' kernels have set their
    flags, or a short while when a part never sets it; results are the same either way."""
    # The wait is bounded (about 70 us), and a busy machine can take longer than that to
    # wake a worker: lengthen it, so that the order below depends on the flag alone.
    monkeypatch.setattr(threads, "_START_PAUSES", 300_000_000)  # seconds, not microseconds
    order = []

    def worker_first(start, stop, started):
        order.append(start)
        if start > 0:
            spin.publish(started, 1, 1)
        return _span(start, stop)[:2]

    started = np.zeros(2, np.int64)
    got = threads.run_parts(lambda a, b: worker_first(a, b, started), [(0, 1), (1, 2)], started)
    assert got == [(0, 1), (1, 2)] and order == [1, 0]  # the worker's part was under way
    monkeypatch.undo()
    silent = np.zeros(2, np.int64)  # nobody sets it: the caller goes on after the wait
    assert threads.run_parts(_span, [(0, 1), (1, 2)], silent)[1][:2] == (1, 2)


def test_take_hands_out_every_unit_once_from_both_ends():
    units, queue = 500, np.zeros(3, np.int64)
    got: list[list[int]] = [[], []]

    def worker(k):
        while (unit := spin.take(queue, units, k == 1)) >= 0:
            got[k].append(unit)

    pair = [threading.Thread(target=worker, args=(k,)) for k in range(2)]
    for t in pair:
        t.start()
    for t in pair:
        t.join()
    assert sorted(got[0] + got[1]) == list(range(units))
    assert got[0] == sorted(got[0]) and got[1] == sorted(got[1], reverse=True)
    assert spin.take(queue, units, False) == -1


def _mark_units(block, part):
    """A team task: takes units from the queue at ``block[2]`` and marks each with its
    part + 1 in the int64 array at ``block[0]`` (``block[1]`` units), spinning ``block[3]``
    pauses a unit so that the others have time to join."""
    marks = carray(spin.pointer(block[0], np.int64), block[1])
    queue = carray(spin.pointer(block[2], np.int64), 3)
    unit = spin.take(queue, block[1], part % 2 == 1)
    while unit >= 0:
        marks[unit] = part + 1
        for _ in range(block[3]):
            spin._pause()
        unit = spin.take(queue, block[1], part % 2 == 1)


_MARK_UNITS = None


def _run_marks(parts: int, units: int = 200, pauses: int = 20) -> tuple[np.ndarray, int]:
    """The parts that did each unit (0: none) and how many workers joined."""
    global _MARK_UNITS
    if _MARK_UNITS is None:
        _MARK_UNITS = compiled_task(_mark_units)
    marks, queue = np.zeros(units, np.int64), np.zeros(3, np.int64)
    block = np.array([marks.ctypes.data, units, queue.ctypes.data, pauses], np.int64)
    joined = threads.run_team(_MARK_UNITS.address, block, parts)
    return marks - 1, joined


def _until_joined(parts: int) -> list[tuple[np.ndarray, int]]:
    """Team runs until one has a worker in it."""
    runs = []
    for _ in attempts():
        runs.append(_run_marks(parts))
        if runs[-1][1] > 0:
            break
    return runs


@pytest.mark.parametrize("parts", [1, 2, 3])
def test_team_does_every_unit_once_with_the_workers_that_join(parts):
    runs = _until_joined(parts) if parts > 1 else [_run_marks(1) for _ in range(20)]
    for marks, joined in runs:
        assert (marks >= 0).all()  # every unit done
        assert 0 <= joined < parts
        assert set(np.unique(marks)) <= set(range(joined + 1))  # parts 0 .. joined
    if parts > 1:
        marks, joined = runs[-1]
        assert joined > 0 and set(np.unique(marks)) == set(range(joined + 1))
    else:
        assert all(joined == 0 and (marks == 0).all() for marks, joined in runs)


def test_a_worker_joins_an_open_round_once_while_a_seat_is_free():
    """spin._join, as a worker runs it, on a round opened by hand with one seat."""
    _run_marks(1)  # compiled
    marks, queue = np.zeros(50, np.int64), np.zeros(3, np.int64)
    block = np.array([marks.ctypes.data, 50, queue.ctypes.data, 0], np.int64)
    team = threads._new_team()
    team[[spin.TASK, spin.BLOCK, spin.SEATS, spin.ROUND]] = (
        _MARK_UNITS.address,
        block.ctypes.data,
        1,
        1,
    )
    first, second = np.zeros(threads._WIDTH, np.int64), np.zeros(threads._WIDTH, np.int64)
    assert not spin._join(team, first)  # closed
    team[spin.OPEN] = 0
    assert spin._join(team, first)
    assert (marks == 2).all()  # its part (1) did every unit
    assert team[spin.OPEN] == 1 and team[spin.FINISHED] == 1
    assert first[spin.LAST_ROUND] == 1
    assert not spin._join(team, first)  # once a round
    assert not spin._join(team, second)  # no seat left
    team[spin.SEATS] = 2
    assert spin._join(team, second)  # a seat: it runs part 2 (the queue is empty by now)
    assert team[spin.OPEN] == 2 and team[spin.FINISHED] == 2 and (marks == 2).all()


def test_team_inside_a_part_runs_on_its_thread_alone():
    """The workers are busy with the parts: the team's task runs on the calling thread."""
    got = threads.run_parts(lambda a, b: _run_marks(2), [(0, 1), (1, 2)])
    for marks, joined in got:
        assert joined == 0 and (marks == 0).all()


def test_team_wakes_sleeping_workers(monkeypatch):
    monkeypatch.setattr(threads, "_SPIN_PAUSES", 50)  # the workers sleep almost at once
    threads.run_parts(_span, [(0, 1), (1, 2)])
    worker = threads._workers[0]
    deadline = time.monotonic() + 5
    while not worker.parked and time.monotonic() < deadline:
        time.sleep(0.001)
    assert worker.parked
    runs = [_run_marks(2, units=2000, pauses=200) for _ in range(20)]
    assert any(joined for _, joined in runs)  # nudged awake, it joined a later run
    assert all((marks >= 0).all() for marks, _ in runs)
