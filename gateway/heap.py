"""Long-lived processes leave the objects they build at start out of the garbage collector.

A web process holds some 90,000 objects once the app is built (modules,
SQLAlchemy's mappers, Flask's routing, the adapters); a worker about as many.
Python's full collection walks all of them: 50 to 120 ms here, with the GIL
held, so every request in the process waits. Objects that outlive a few
collections (a request in flight while they run) add up until one is due,
every few thousand requests. Frozen objects are never walked again; what
requests create is collected as before.
"""

from __future__ import annotations

import gc
import os


def freeze_startup_objects() -> None:
    """Collect what start-up left behind, then exempt everything still alive from later collections."""
    gc.collect()
    gc.freeze()


def under_gunicorn() -> bool:
    """True in a gunicorn worker: its arbiter sets SERVER_SOFTWARE before loading the app."""
    return os.environ.get("SERVER_SOFTWARE", "").startswith("gunicorn/")
