"""GroupCommit (gateway/db/group_commit.py): concurrent submissions are stored together, each caller gets its own."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from gateway.db.group_commit import GroupCommit


class SlowStore:
    """Records each batch; the first one blocks until released, so that others pile up behind it."""

    def __init__(self, fail_on: object = None):
        self.batches: list[list] = []
        self.first_started = threading.Event()
        self.release_first = threading.Event()
        self.fail_on = fail_on
        self.running = 0
        self.most_running = 0
        self._lock = threading.Lock()

    def __call__(self, items: list) -> list:
        with self._lock:
            self.running += 1
            self.most_running = max(self.most_running, self.running)
            self.batches.append(list(items))
            first = len(self.batches) == 1
        try:
            if first:
                self.first_started.set()
                assert self.release_first.wait(10)
            if self.fail_on in items:
                raise OSError(f"disk full while storing {self.fail_on}")
            return [f"stored {item}" for item in items]
        finally:
            with self._lock:
                self.running -= 1


def submit_while_first_is_stored(group: GroupCommit, store: SlowStore, items: list, expect_waiting: int):
    """Submit ``items[0]``, then the rest while its batch is being stored; returns each caller's result or error."""

    def call(item):
        try:
            return group.submit(item)
        except Exception as error:  # noqa: BLE001 - the test inspects what each caller got
            return error

    with ThreadPoolExecutor(max_workers=len(items)) as pool:
        first = pool.submit(call, items[0])
        assert store.first_started.wait(5)
        rest = [pool.submit(call, item) for item in items[1:]]
        wait_until_waiting(group, expect_waiting)
        store.release_first.set()
        return [first.result(10)] + [future.result(10) for future in rest]


def wait_until_waiting(group: GroupCommit, count: int) -> None:
    for _ in range(500):
        with group._lock:
            if len(group._waiting) >= count:
                return
        threading.Event().wait(0.01)
    raise AssertionError(f"{count} callers never queued up")


def test_a_lone_caller_stores_its_item_itself():
    """With nothing else waiting, submit runs one batch of one item in the caller's thread and returns its result."""
    seen = []

    def store(items):
        seen.append((threading.current_thread(), list(items)))
        return [item * 2 for item in items]

    group = GroupCommit(store, max_batch=8)
    assert group.submit(21) == 42
    assert group.submit(5) == 10
    assert seen == [(threading.current_thread(), [21]), (threading.current_thread(), [5])]


def test_callers_arriving_during_a_batch_are_stored_together_in_arrival_order():
    """While one batch is stored, five callers queue; the next batch holds all five, each gets its own result."""
    store = SlowStore()
    group = GroupCommit(store, max_batch=32)
    results = submit_while_first_is_stored(group, store, ["a", "b", "c", "d", "e", "f"], expect_waiting=5)

    assert results == [f"stored {item}" for item in "abcdef"]
    assert store.batches[0] == ["a"]
    assert len(store.batches) == 2 and sorted(store.batches[1]) == ["b", "c", "d", "e", "f"]
    assert store.most_running == 1, "two batches were stored at the same time"


def test_batches_never_exceed_max_batch_and_every_caller_is_served():
    """Nine callers queue behind a batch with max_batch 4: batches of at most 4, nobody left waiting, one at a time."""
    store = SlowStore()
    group = GroupCommit(store, max_batch=4)
    items = list(range(10))
    results = submit_while_first_is_stored(group, store, items, expect_waiting=9)

    assert results == [f"stored {item}" for item in items]
    assert all(len(batch) <= 4 for batch in store.batches)
    assert sorted(item for batch in store.batches for item in batch) == items
    assert store.most_running == 1
    with group._lock:
        assert group._waiting == [] and not group._storing


def test_a_failed_batch_raises_its_error_in_every_caller_of_that_batch_only():
    """The batch that fails raises the store's error in each of its callers; later batches are unaffected."""
    store = SlowStore(fail_on="c")
    group = GroupCommit(store, max_batch=32)
    results = submit_while_first_is_stored(group, store, ["a", "b", "c", "d"], expect_waiting=3)

    assert results[0] == "stored a"
    assert all(isinstance(result, OSError) and "disk full" in str(result) for result in results[1:])
    assert group.submit("e") == "stored e", "a failed batch must not wedge the group"


def test_a_store_that_returns_the_wrong_number_of_results_is_an_error_not_a_mix_up():
    """Results are matched to callers by position, so a short list must fail loudly."""
    group = GroupCommit(lambda items: [], max_batch=4)
    with pytest.raises(RuntimeError, match="0 results for 1 items"):
        group.submit("a")


def test_many_concurrent_callers_all_get_their_own_results():
    """200 callers over 16 threads: every caller gets the result of its own item, never another's."""
    group = GroupCommit(lambda items: [item * item for item in items], max_batch=8)
    with ThreadPoolExecutor(max_workers=16) as pool:
        results = list(pool.map(group.submit, range(200)))
    assert results == [item * item for item in range(200)]


def test_after_runs_once_per_committed_batch_with_its_results_and_never_for_a_failed_one():
    """``after`` gets each stored batch's results, in the caller that stored it; a batch that failed has none."""
    store = SlowStore(fail_on="c")
    seen = []
    group = GroupCommit(store, max_batch=2, after=lambda results: seen.append(list(results)))
    submit_while_first_is_stored(group, store, ["a", "b", "c", "d", "e"], expect_waiting=4)

    stored_batches = [batch for batch in store.batches if "c" not in batch]
    assert sorted(seen) == sorted([f"stored {item}" for item in batch] for batch in stored_batches)
    assert ["stored a"] in seen and not any("stored c" in results for results in seen)


def test_the_next_batch_is_stored_while_the_previous_batch_s_after_still_runs():
    """``after`` runs outside the lane: callers waiting behind a batch are stored without waiting for it."""
    after_started, release_after = threading.Event(), threading.Event()

    def after(results):
        if results == ["a"]:
            after_started.set()
            assert release_after.wait(10)

    group = GroupCommit(lambda items: list(items), max_batch=8, after=after)
    with ThreadPoolExecutor(max_workers=2) as pool:
        first = pool.submit(group.submit, "a")
        assert after_started.wait(5)
        assert pool.submit(group.submit, "b").result(5) == "b", "the second batch waited for the first one's after"
        assert not first.done()
        release_after.set()
        assert first.result(5) == "a"


def test_a_caller_that_defers_gets_the_after_of_the_batch_it_stored_to_run_itself():
    """With ``deferred``, the caller's result comes back before ``after`` has run; the list holds it."""
    seen = []
    group = GroupCommit(lambda items: [item.upper() for item in items], max_batch=8, after=seen.append)
    deferred: list = []
    assert group.submit("a", deferred) == "A"
    assert seen == [] and len(deferred) == 1
    deferred[0]()
    assert seen == [["A"]]
    assert group.submit("b") == "B" and seen == [["A"], ["B"]]


def test_callers_stored_by_another_caller_hand_back_nothing_to_run():
    """Only the caller that stored a batch runs (or is handed) its ``after``; the others' lists stay empty."""
    store = SlowStore()
    afters = []
    group = GroupCommit(store, max_batch=32, after=afters.append)
    lists = {item: [] for item in "abcd"}

    def call(item):
        return group.submit(item, lists[item])

    with ThreadPoolExecutor(max_workers=4) as pool:
        first = pool.submit(call, "a")
        assert store.first_started.wait(5)
        rest = [pool.submit(call, item) for item in "bcd"]
        wait_until_waiting(group, 3)
        store.release_first.set()
        assert [first.result(10)] + [future.result(10) for future in rest] == [f"stored {item}" for item in "abcd"]
    assert len(lists["a"]) == 1
    assert sum(len(handed) for handed in lists.values()) == 2  # the first batch's and the second's
    for handed in lists.values():
        for after in handed:
            after()
    assert sorted(map(sorted, afters)) == [["stored a"], ["stored b", "stored c", "stored d"]]
