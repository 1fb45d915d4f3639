"""A closed Runtime can be collected: nothing global keeps it, its engine or its statement cache alive.

A process that builds many (the test suite: one per test; a long-lived tool that opens a runtime per
job) would otherwise grow without end, and every full garbage collection would walk all of it.
"""

from __future__ import annotations

import gc
import weakref

from gateway.bootstrap import build_runtime
from gateway.services.assistants import create_assistant
from gateway.schemas import AssistantCreate


def test_a_closed_runtime_is_collected_after_it_committed(settings, instance_path):
    runtime = build_runtime(settings, migrate=False)
    create_assistant(runtime, AssistantCreate(name="Kept?", engine={"provider": "echo"}))  # a commit runs the hooks
    released, engine_released = weakref.ref(runtime), weakref.ref(runtime.engine)

    runtime.close()
    del runtime
    gc.collect()

    assert released() is None, f"the closed Runtime is still held by {holders(released())}"
    assert engine_released() is None, "something still holds the closed Runtime's engine"


def holders(thing) -> list[str]:
    return [type(holder).__qualname__ for holder in gc.get_referrers(thing)]
