"""Waiting for another thread without the GIL and without sleeping: the thread pool's
hand-off (:mod:`cnnkit.kernels.threads`), and the team that runs a compiled task on the
pool's spinning workers without any Python in between (:func:`run_team`).

A sleeping thread on these VMs takes 30-60 us to wake, more than a small layer's share of
work. So a pool worker first spins on a counter in shared memory, outside the GIL, with the
CPU's ``pause`` between reads, and every 64 pauses it yields its core to any other thread
that is ready to run (OpenBLAS's workers, right after a layer, must not wait for it). The
counter is read with acquire and written with release ordering, so whatever a thread wrote
before it bumped a counter is visible to the thread that sees the new value.
"""

from __future__ import annotations

from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

from cnnkit.kernels import load_lightly


def _counters(value: types.Type) -> bool:
    """Whether an argument is what the atomics take: an int64 array (raw pointers)."""
    return isinstance(value, types.Array) and value.dtype == types.int64


def _element(context, builder, signature, args):
    """``&counters[i]`` of the call's first two arguments."""
    array = context.make_array(signature.args[0])(context, builder, args[0])
    return builder.gep(array.data, [args[1]])


@intrinsic
def _load_acquire(typingctx, counters, i):
    if not _counters(counters):
        return None

    def codegen(context, builder, signature, args):
        return builder.load_atomic(_element(context, builder, signature, args), "acquire", 8)

    return types.int64(counters, i), codegen


@intrinsic
def _store_release(typingctx, counters, i, value):
    if not _counters(counters):
        return None

    def codegen(context, builder, signature, args):
        pointer = _element(context, builder, signature, args)
        builder.store_atomic(args[2], pointer, "release", 8)
        return context.get_dummy_value()

    return types.void(counters, i, value), codegen


@intrinsic
def _fetch_add(typingctx, counters, i, value):
    if not _counters(counters):
        return None

    def codegen(context, builder, signature, args):
        pointer = _element(context, builder, signature, args)
        return builder.atomic_rmw("add", pointer, args[2], "acq_rel")

    return types.int64(counters, i, value), codegen


@intrinsic
def _compare_exchange(typingctx, counters, i, expected, new):
    """``counters[i] = new`` if it holds ``expected``, atomically; whether it did."""
    if not _counters(counters):
        return None

    def codegen(context, builder, signature, args):
        pointer = _element(context, builder, signature, args)
        pair = builder.cmpxchg(pointer, args[2], args[3], "acq_rel", "acquire")
        return builder.extract_value(pair, 1)

    return types.boolean(counters, i, expected, new), codegen


@intrinsic
def pointer(typingctx, address, kind):
    """The address (an int) as a pointer to ``kind`` (a NumPy scalar type), for
    ``numba.carray``: how a task (:func:`run_team`) finds its arrays."""
    if not isinstance(address, types.Integer) or not isinstance(kind, types.NumberClass):
        return None
    target = kind.instance_type

    def codegen(context, builder, signature, args):
        return builder.inttoptr(args[0], context.get_data_type(target).as_pointer())

    return types.CPointer(target)(address, kind), codegen


@intrinsic
def _call(typingctx, task, block, part):
    """``task(block, part)``: the C function at address ``task``, with the address of an
    int64 array and an int64."""
    if not all(isinstance(arg, types.Integer) for arg in (task, block, part)):
        return None

    def codegen(context, builder, signature, args):
        i64 = ir.IntType(64)
        kind = ir.FunctionType(ir.VoidType(), [i64.as_pointer(), i64])
        function = builder.inttoptr(args[0], kind.as_pointer())
        builder.call(function, [builder.inttoptr(args[1], i64.as_pointer()), args[2]])
        return context.get_dummy_value()

    return types.void(task, block, part), codegen


@intrinsic
def _pause(typingctx):
    def codegen(context, builder, signature, args):
        kind = ir.FunctionType(ir.VoidType(), [])
        if builder.module.triple.startswith(("x86_64", "i686", "i386")):
            builder.call(builder.module.declare_intrinsic("llvm.x86.sse2.pause", fnty=kind), [])
        return context.get_dummy_value()

    return types.void(), codegen


@intrinsic
def _yield(typingctx):
    def codegen(context, builder, signature, args):
        kind = ir.FunctionType(ir.IntType(32), [])
        builder.call(cgutils.get_or_insert_function(builder.module, kind, "sched_yield"), [])
        return context.get_dummy_value()

    return types.void(), codegen


@njit(cache=True, nogil=True)
def wait_while(counters, i, value, pauses):
    """Spin while ``counters[i] == value``, for at most ``pauses`` pauses (about 35 ns
    each with the yields); whether it changed."""
    for k in range(pauses):
        if _load_acquire(counters, i) != value:
            return True
        _pause()
        if k % 64 == 63:
            _yield()
    return _load_acquire(counters, i) != value


@njit(cache=True, nogil=True)
def hand_over(counters, workers, width, started, pauses):
    """Let ``workers`` spinning workers take the GIL, then wait until they run their parts.

    ``counters`` is the pool's flat ``(workers, width)`` table: each worker's row holds the
    parts posted to it (column 0) and the parts its caller has handed over (column 2),
    which it waits for. Called without the GIL, so a worker that wakes takes a free GIL
    instead of sleeping on it. Then it spins for at most ``pauses`` pauses until
    ``started[1:workers + 1]`` are all set: the kernels set their part's entry once they
    run without the GIL, so the caller's return to Python does not contend with them.
    """
    for r in range(workers):
        _store_release(counters, r * width + 2, _load_acquire(counters, r * width))
    for k in range(pauses):
        ready = True
        for r in range(1, workers + 1):
            if _load_acquire(started, r) == 0:
                ready = False
                break
        if ready:
            return True
        _pause()
        if k % 64 == 63:
            _yield()
    return False


@njit(cache=True, nogil=True)
def take(queue, units, from_back):
    """The next unit of work of a queue shared by threads, or -1 when all ``units`` are
    taken. ``queue`` is ``[claimed, taken from the front, taken from the back]``, zeros at
    first. A thread claims a unit, then takes the lowest free unit or, ``from_back``, the
    highest: two threads start at opposite ends and meet where their speeds put them.

    Threads that share work this way share it by speed (on these VMs one core ran the same
    kernel up to 1.5x slower than the other). Taking from opposite ends keeps them in
    separate memory: two threads taking neighbouring units ran 1.3-3x slower.
    """
    if _fetch_add(queue, 0, 1) >= units:
        return -1
    if from_back:
        return units - 1 - _fetch_add(queue, 2, 1)
    return _fetch_add(queue, 1, 1)


@njit(cache=True, nogil=True)
def count_done(counters, i):
    """One more unit of a step done: ``counters[i] += 1``, after this thread's writes."""
    _fetch_add(counters, i, 1)


@njit(cache=True, nogil=True)
def wait_done(counters, i, units):
    """Spin until ``counters[i]`` reaches ``units`` (:func:`count_done`): the barrier
    between two steps of a team task, and the caller's wait for the parts that joined
    (:func:`run_team`). Only units that a running part has taken can be outstanding, so
    it ends."""
    k = 0
    while _load_acquire(counters, i) < units:
        _pause()
        if k % 64 == 63:
            _yield()
        k += 1


# The team table (run_team): a task's round, its C function and block, how many workers may
# join, how many have (-1: closed) and how many have finished.
ROUND, TASK, BLOCK, SEATS, OPEN, FINISHED = range(6)
TEAM = 6
LAST_ROUND = 3  # a worker's column in the pool's table: the last round it joined


@njit(cache=True, nogil=True)
def run_team(team, seats, task, block):
    """``task(block, 0)`` on this thread, and ``task(block, k)`` on each worker that joins
    while it runs (``k`` = 1, 2, ..., at most ``seats``); how many joined.

    ``task`` is the address of a C function (:func:`cnnkit.kernels.compiled_task`) whose
    parts share their work through a queue, so a part that starts late, or not at all,
    leaves its work to the others. The workers join from :func:`serve`, within a
    microsecond when they spin: no Python runs between the call and its parts. When this
    thread's part is done, it closes the round and waits for the parts that joined. With
    no seats, the task runs on this thread alone and ``team`` is not touched.
    """
    address = block.ctypes.data
    if seats == 0:
        _call(task, address, 0)
        return 0
    team[TASK], team[BLOCK], team[SEATS] = task, address, seats
    _store_release(team, FINISHED, 0)
    _store_release(team, ROUND, team[ROUND] + 1)
    _store_release(team, OPEN, 0)  # after everything a joining worker reads
    _call(task, address, 0)
    while True:
        joined = _load_acquire(team, OPEN)
        if _compare_exchange(team, OPEN, joined, -1):
            break
    wait_done(team, FINISHED, joined)
    return joined


@njit(cache=True, nogil=True)
def _join(team, counters):
    """Run the team's open round's task as its next part, once per round; whether it did."""
    if _load_acquire(team, ROUND) == counters[LAST_ROUND]:
        return False
    seat = _load_acquire(team, OPEN)
    if seat < 0 or seat >= team[SEATS] or not _compare_exchange(team, OPEN, seat, seat + 1):
        return False
    counters[LAST_ROUND] = _load_acquire(team, ROUND)
    if seat < team[SEATS]:  # read again: the round may have changed before the exchange
        _call(team[TASK], team[BLOCK], seat + 1)
    _fetch_add(team, FINISHED, 1)
    return True


@njit(cache=True, nogil=True)
def serve(counters, seen, team, pauses):
    """A pool worker's wait for its next Python part (``counters[2] > seen``, see
    :mod:`cnnkit.kernels.threads`), for at most ``pauses`` pauses without work; whether a
    part came. Meanwhile it joins the ``team``'s tasks (:func:`run_team`)."""
    k = 0
    while k < pauses:
        if _load_acquire(counters, 2) > seen:
            return True
        if _join(team, counters):
            k = 0
            continue
        _pause()
        if k % 64 == 63:
            _yield()
        k += 1
    return _load_acquire(counters, 2) > seen


@njit(cache=True, nogil=True)
def publish(counters, i, value):
    """``counters[i] = value``, after every write this thread made before."""
    _store_release(counters, i, value)


load_lightly(globals())
