"""Summarise py-spy's folded stacks: where the samples went, by library (self time) and by function.

    .venv/bin/python bench/profile_summary.py bench/out/ingest-profile-*.folded
"""

from __future__ import annotations

import collections
import re
import sys
from pathlib import Path

FRAME = re.compile(r"^(?P<function>.*) \((?P<file>[^:()]*)(?::\d+)?\)$")
LIBRARIES = (
    ("gateway/", "gateway"), ("adapters/", "adapters"), ("sqlalchemy/", "sqlalchemy"), ("psycopg", "psycopg"),
    ("rq/", "rq"), ("redis/", "redis-py"), ("flask/", "flask"), ("werkzeug/", "werkzeug"),
    ("gunicorn/", "gunicorn"), ("twilio/", "twilio"), ("phonenumbers/", "phonenumbers"), ("logging/", "logging"),
    ("json/", "json"), ("uuid", "uuid"), ("socket", "socket"),
)


def _function(frame: str) -> str:
    """'name (path/file.py:123)' -> 'name (path/file.py)': lines of one function counted together."""
    match = FRAME.match(frame)
    return f"{match['function']} ({match['file']})" if match else frame


def _library(frame: str) -> str:
    for marker, name in LIBRARIES:
        if marker in frame:
            return name
    return "python/other"


def summarise(paths: list[Path], top: int = 30) -> str:
    inclusive: collections.Counter = collections.Counter()
    own: collections.Counter = collections.Counter()
    libraries: collections.Counter = collections.Counter()
    total = 0
    for path in paths:
        for line in Path(path).read_text().splitlines():
            stack, _, count = line.rpartition(" ")
            if not stack:
                continue
            samples = int(count)
            total += samples
            frames = [_function(frame) for frame in stack.split(";")]
            own[frames[-1]] += samples
            libraries[_library(frames[-1])] += samples
            for frame in set(frames):
                inclusive[frame] += samples
    if not total:
        return "no samples\n"

    def table(rows, title):
        return "\n".join([title] + [f"  {n / total * 100:5.1f}%  {name}" for name, n in rows])

    ours = [(frame, n) for frame, n in inclusive.most_common() if "gateway/" in frame][:top]
    return "\n\n".join([
        f"{total} samples (py-spy, 100 Hz, the thread holding the GIL) from {len(paths)} process(es)",
        table(libraries.most_common(), "self time by library:"),
        table(ours, "gateway functions, inclusive:"),
        table(own.most_common(top), "self time by function:"),
        table(inclusive.most_common(top + 20), "all functions, inclusive:"),
    ]) + "\n"


if __name__ == "__main__":
    print(summarise([Path(p) for p in sys.argv[1:]]))
