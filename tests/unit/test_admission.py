"""A few calls run at once; a call that waits gives its turn to the others."""

import threading
from concurrent.futures import ThreadPoolExecutor

from csi_driver.admission import Slots, waiting
from csi_driver.locks import KeyedLocks


def test_no_more_than_the_slots_run_at_once() -> None:
    slots, running, peak, guard = Slots(3), [0], [0], threading.Lock()
    release = threading.Event()

    def call() -> None:
        with guard:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        release.wait(5)
        with guard:
            running[0] -= 1

    with ThreadPoolExecutor(10) as pool:
        futures = [pool.submit(slots.run, call) for _ in range(10)]
        threading.Timer(0.3, release.set).start()
        for future in futures:
            future.result(10)
    assert peak[0] == 3


def test_calls_that_wait_leave_their_turn_to_the_others() -> None:
    slots, release, done = Slots(2), threading.Event(), threading.Event()

    def slow() -> None:
        with waiting():
            release.wait(10)

    with ThreadPoolExecutor(4) as pool:
        slow_calls = [pool.submit(slots.run, slow) for _ in range(3)]
        quick = pool.submit(slots.run, done.set)
        assert quick.result(5) is None and done.is_set()  # while three calls still wait
        assert not any(call.done() for call in slow_calls)
        release.set()
        for call in slow_calls:
            call.result(5)


def test_a_call_waiting_on_a_busy_volume_does_not_keep_its_turn() -> None:
    """The holder of a volume's lock waits; callers queued on that lock must not
    take every turn, or calls for other volumes (and the holder, had it to take
    a turn back) would stall."""
    slots, locks, release = Slots(2), KeyedLocks(), threading.Event()
    holding = threading.Event()

    def holder() -> None:
        with locks.hold("volume:a"):
            holding.set()
            with waiting():
                release.wait(10)

    def same_volume() -> None:
        with locks.hold("volume:a"):
            pass

    with ThreadPoolExecutor(8) as pool:
        first = pool.submit(slots.run, holder)
        assert holding.wait(5)
        queued = [pool.submit(slots.run, same_volume) for _ in range(4)]
        other = pool.submit(slots.run, lambda: "other volume served")
        assert other.result(5) == "other volume served"
        release.set()
        first.result(5)
        for call in queued:
            call.result(5)
    assert len(locks) == 0
