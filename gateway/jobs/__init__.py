"""Job entry points. Each job is one service function, looked up by name.

The embedded queue calls ``run_job(runtime, name, ...)`` directly; RQ workers
call ``run(name, ...)``, which uses the runtime the worker process built at
start (``gateway worker``) or builds one from the environment.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:
    from gateway.bootstrap import Runtime

_current: "Runtime | None" = None
_lock = threading.Lock()


def _jobs() -> dict[str, Callable[..., Any]]:
    from gateway.services import events, outbound, sweeper, turns

    return {
        "process_turns": turns.process_turns,
        "send_pending": outbound.send_pending,
        "deliver_event": events.deliver_event,
        "sweep": sweeper.sweep,
    }


def load_jobs() -> None:
    """Import every job's module now rather than at its first run (a worker does, before freezing its heap)."""
    _jobs()


def run_job(runtime: "Runtime", name: str, *args: Any) -> Any:
    job = _jobs().get(name)
    if job is None:
        raise LookupError(f"unknown job {name!r}")
    return job(runtime, *args)


def set_runtime(runtime: "Runtime | None") -> None:
    global _current
    _current = runtime


def current_runtime() -> "Runtime":
    global _current
    with _lock:
        if _current is None:
            from gateway.bootstrap import build_runtime
            from gateway.config import Settings

            _current = build_runtime(Settings.from_env(), migrate=False)
        return _current


def run(name: str, *args: Any) -> Any:
    """RQ's entry point for every gateway job."""
    return run_job(current_runtime(), name, *args)
