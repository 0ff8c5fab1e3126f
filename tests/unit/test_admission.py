"""A few calls run at once; a call that waits gives its turn to the others; the
pool's threads follow the calls that need one, not the calls queued."""

import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future

import pytest

from csi_driver.admission import Pool, waiting
from csi_driver.locks import KeyedLocks


@pytest.fixture
def make_pool() -> Iterator[Callable[..., Pool]]:
    pools: list[Pool] = []

    def make(turns: int, max_threads: int, **kwargs: float) -> Pool:
        pools.append(Pool(turns, max_threads, name="test", **kwargs))
        return pools[-1]

    yield make
    for pool in pools:
        pool.shutdown(wait=True, cancel_futures=True)


def admitted(pool: Pool, call: Callable[[], object]) -> Future[object]:
    """What grpcio does with a call: submit it, and the handler takes a turn."""
    return pool.submit(pool.run, call)


def test_no_more_than_the_turns_run_at_once(make_pool: Callable[..., Pool]) -> None:
    pool, running, peak, guard = make_pool(3, 10), [0], [0], threading.Lock()
    release = threading.Event()

    def call() -> None:
        with guard:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        release.wait(5)
        with guard:
            running[0] -= 1

    calls = [admitted(pool, call) for _ in range(10)]
    threading.Timer(0.3, release.set).start()
    for future in calls:
        future.result(10)
    assert peak[0] == 3


def gives_turn_back_until(release: threading.Event) -> None:
    """A call that waits on something slow: it gives its turn back first."""
    with waiting():
        release.wait(10)


def pause(seconds: float = 0.3) -> None:
    """Time for started threads to reach where they block (no result to wait on)."""
    threading.Event().wait(seconds)


def test_calls_queued_behind_a_busy_turn_get_no_thread_of_their_own(
        make_pool: Callable[..., Pool]) -> None:
    pool, release = make_pool(1, 32), threading.Event()
    first = admitted(pool, lambda: release.wait(10))
    second = admitted(pool, lambda: None)
    pause()
    queued = [admitted(pool, lambda: None) for _ in range(40)]
    pause()
    # One thread holds the turn, one waits for it; the other 40 calls wait in the queue.
    assert pool.threads == 2
    release.set()
    for future in [first, second, *queued]:
        future.result(5)
    assert pool.threads == 2


def test_calls_that_wait_leave_their_turn_to_the_others(make_pool: Callable[..., Pool]) -> None:
    pool, release, done = make_pool(2, 6), threading.Event(), threading.Event()

    slow_calls = [admitted(pool, lambda: gives_turn_back_until(release)) for _ in range(3)]
    quick = admitted(pool, done.set)
    assert quick.result(5) is None and done.is_set()  # while three calls still wait
    assert not any(call.done() for call in slow_calls)
    release.set()
    for call in slow_calls:
        call.result(5)


def test_a_call_stuck_before_it_takes_a_turn_holds_up_no_other(
        make_pool: Callable[..., Pool]) -> None:
    """grpcio's worker waits for the request message before the handler runs: a
    client that stalls there holds a thread, never the turn."""
    pool, release = make_pool(1, 4), threading.Event()
    stuck = pool.submit(release.wait, 10)
    assert admitted(pool, lambda: "served").result(5) == "served"
    release.set()
    assert stuck.result(5) is True


def test_calls_whose_client_stalls_hold_up_the_queue_for_a_second_at_most(
        make_pool: Callable[..., Pool]) -> None:
    pool, release = make_pool(1, 8), threading.Event()
    stuck = [pool.submit(release.wait, 10) for _ in range(3)]
    served = admitted(pool, lambda: "served")
    assert served.result(5) == "served"
    release.set()
    assert all(call.result(5) for call in stuck)


def test_a_call_waiting_on_a_busy_volume_does_not_keep_its_turn(
        make_pool: Callable[..., Pool]) -> None:
    """The holder of a volume's lock waits; callers queued on that lock must not
    take every turn, or calls for other volumes (and the holder, had it to take
    a turn back) would stall."""
    pool, locks, release = make_pool(2, 8), KeyedLocks(), threading.Event()
    holding = threading.Event()

    def holder() -> None:
        with locks.hold("volume:a"):
            holding.set()
            with waiting():
                release.wait(10)

    def same_volume() -> None:
        with locks.hold("volume:a"):
            pass

    first = admitted(pool, holder)
    assert holding.wait(5)
    queued = [admitted(pool, same_volume) for _ in range(4)]
    other = admitted(pool, lambda: "other volume served")
    assert other.result(5) == "other volume served"
    release.set()
    first.result(5)
    for call in queued:
        call.result(5)
    assert len(locks) == 0


def test_threads_beyond_the_turns_exit_once_idle(make_pool: Callable[..., Pool]) -> None:
    pool, release = make_pool(1, 8, idle_seconds=0.2), threading.Event()

    slow_calls = [admitted(pool, lambda: gives_turn_back_until(release)) for _ in range(5)]
    assert admitted(pool, lambda: None).result(5) is None
    assert pool.threads >= 5
    release.set()
    for call in slow_calls:
        call.result(5)
    pause(1.0)
    assert pool.threads == 1


def test_at_most_max_threads_even_when_every_call_waits(make_pool: Callable[..., Pool]) -> None:
    pool, release = make_pool(1, 3), threading.Event()

    calls = [admitted(pool, lambda: gives_turn_back_until(release)) for _ in range(6)]
    pause()
    assert pool.threads == 3 and sum(call.done() for call in calls) == 0
    release.set()
    for call in calls:
        call.result(5)


def test_a_failing_call_fails_its_future_and_the_pool_goes_on(
        make_pool: Callable[..., Pool]) -> None:
    pool = make_pool(1, 2)

    def fail() -> None:
        raise ValueError("handler bug")

    with pytest.raises(ValueError, match="handler bug"):
        admitted(pool, fail).result(5)
    assert admitted(pool, lambda: "next").result(5) == "next"


def test_shutdown_runs_what_was_queued_then_refuses(make_pool: Callable[..., Pool]) -> None:
    pool, release = make_pool(1, 2), threading.Event()
    first = admitted(pool, lambda: release.wait(10))
    queued = admitted(pool, lambda: "queued ran")
    threading.Timer(0.2, release.set).start()
    pool.shutdown(wait=True)
    assert first.result(0) is True and queued.result(0) == "queued ran"
    assert pool.threads == 0
    with pytest.raises(RuntimeError, match="after shutdown"):
        pool.submit(lambda: None)


def test_wait_idle_counts_queued_calls_not_only_running_ones(make_pool: Callable[..., Pool]) -> None:
    """Shutdown waits on this: a call still queued behind the turn must not be cut off."""
    pool, release, ran = make_pool(1, 4), threading.Event(), threading.Event()
    admitted(pool, lambda: release.wait(10))
    admitted(pool, ran.set)
    assert not pool.wait_idle(0.2)
    release.set()
    assert pool.wait_idle(5) and ran.is_set()


def test_idle_threads_exit_under_light_steady_traffic(make_pool: Callable[..., Pool]) -> None:
    """Parked threads are woken most recent first, so a trickle of calls keeps
    one of them busy and lets the others age out."""
    pool, release = make_pool(1, 8, idle_seconds=0.5), threading.Event()

    burst = [admitted(pool, lambda: gives_turn_back_until(release)) for _ in range(6)]
    assert admitted(pool, lambda: None).result(5) is None
    release.set()
    for call in burst:
        call.result(5)
    assert pool.threads >= 6
    for _ in range(30):  # one call every 50 ms for 1.5 s
        admitted(pool, lambda: None).result(5)
        pause(0.05)
    assert pool.threads <= 2


def test_a_thread_that_cannot_start_leaves_the_call_queued_for_the_next(
        make_pool: Callable[..., Pool], monkeypatch: pytest.MonkeyPatch) -> None:
    """Out of threads (a pids limit), submit must not raise into grpcio's serving
    thread, and the pool's counts must not drift: the call runs on the next thread."""
    pool, failures = make_pool(1, 4), [1]
    real_start = threading.Thread.start

    def start(thread: threading.Thread) -> None:
        if failures[0]:
            failures[0] -= 1
            raise RuntimeError("can't start new thread")
        real_start(thread)

    monkeypatch.setattr(threading.Thread, "start", start)
    stuck = admitted(pool, lambda: "first")
    assert pool.threads == 0 and not stuck.done()
    assert admitted(pool, lambda: "second").result(5) == "second"
    assert stuck.result(5) == "first"
