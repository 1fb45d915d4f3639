"""Group commit: work items that arrive together are stored in one transaction.

Every webhook commits its text before it answers (SPEC 5). Done one
transaction per webhook, most of the cost is fixed per transaction and per
statement: BEGIN, COMMIT with its WAL flush, a round trip and the ORM's
bookkeeping for each insert. Here the first caller to find no batch running
stores its own item at once; callers that arrive while it works wait, and the
next of them stores all of theirs in one batch. At low load every batch is a
single item stored by its own caller, with no hand-off; under load the fixed
costs are shared by everyone who waited. Each caller returns only once the
batch holding its item has committed, with its own result or the batch's error.

What a committed batch still needs done but nobody has to wait for (the
webhook's jobs to queue: a round trip to Redis, which the sweep makes up for if
it never happens) is ``after``: the caller that stored the batch runs it once
the next batch may start, and its callers already have their results. A
caller that passes ``deferred`` gets it in that list instead, to run when it
is done with its own work (the webhook: once its response has been sent).
"""

from __future__ import annotations

import functools
import threading
from typing import Callable, Generic, TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")


class _Slot(Generic[Item, Result]):
    __slots__ = ("item", "done", "result", "error", "woken")

    def __init__(self, item: Item):
        self.item = item
        self.done = False
        self.result: Result | None = None
        self.error: BaseException | None = None
        # Set when the item's batch is done, or when this caller is to store the next batch.
        self.woken = threading.Event()


class GroupCommit(Generic[Item, Result]):
    """Runs ``store(items) -> results`` (one result per item, same order) on batches of concurrent submissions."""

    def __init__(self, store: Callable[[list[Item]], list[Result]], max_batch: int,
                 after: Callable[[list[Result]], None] | None = None):
        self._store = store
        self._after = after
        self._max_batch = max(1, max_batch)
        self._lock = threading.Lock()
        self._waiting: list[_Slot] = []
        self._storing = False  # a caller is storing a batch; the others wait to be woken

    def submit(self, item: Item, deferred: list[Callable[[], None]] | None = None) -> Result:
        """Store ``item`` (with whatever else is waiting); its result once its batch committed.

        ``after`` of each batch this caller stored goes into ``deferred`` when given (the caller runs it),
        else runs before this returns."""
        slot: _Slot = _Slot(item)
        with self._lock:
            self._waiting.append(slot)
            leading, self._storing = not self._storing, True
        if not leading:
            slot.woken.wait()
        # Woken with its item not done: this caller stores the next batch, the oldest items first,
        # and again if more than a batch waited before its own.
        afters = []  # the ``after`` of each batch stored here: run once the lane is handed on
        while not slot.done:
            with self._lock:
                batch, self._waiting = self._waiting[: self._max_batch], self._waiting[self._max_batch :]
            results = None
            try:
                results = self._run(batch)
            finally:
                with self._lock:
                    if not self._waiting:
                        self._storing = False
                    elif slot.done:
                        self._waiting[0].woken.set()  # the next caller in line stores the next batch
            if results is not None and self._after is not None:
                afters.append(functools.partial(self._after, results))
        # Outside the lane: the next batch is being stored meanwhile.
        if deferred is not None:
            deferred.extend(afters)
        else:
            for after in afters:
                after()
        if slot.error is not None:
            raise slot.error
        return slot.result  # type: ignore[return-value]

    def _run(self, batch: list[_Slot]) -> list[Result] | None:
        """Store the batch and hand each caller its result; the results, or None when the batch failed."""
        results = None
        try:
            results = self._store([slot.item for slot in batch])
            if len(results) != len(batch):
                raise RuntimeError(f"group commit: {len(results)} results for {len(batch)} items")
            for slot, result in zip(batch, results):
                slot.result = result
        except BaseException as error:  # every caller of the batch sees why it failed, and none is left waiting
            results = None
            for slot in batch:
                slot.error = error
        for slot in batch:
            slot.done = True
            slot.woken.set()
        return results
