"""One writer per build: ``kq run`` and ``kq book`` hold ``_build/.lock`` (an OS file lock, released by the
kernel when the process ends, even on SIGKILL) while they write the build; ``_build/.lock.holder`` says who
holds it (pid, command, start time), so a second command stops at once naming the holder."""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from pathlib import Path

from kqlib.errors import KqError

LOCK_NAME = ".lock"
HOLDER_NAME = ".lock.holder"


class BuildLocked(KqError):
    """Another ``kq`` command is writing this build (exit status 75, EX_TEMPFAIL: try again later)."""

    exit_code = 75


def holder(build: Path) -> dict:
    """Who holds the build's lock (``{}`` when unknown)."""
    try:
        data = json.loads((Path(build) / HOLDER_NAME).read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _describe(info: dict) -> str:
    if not info:
        return "another process (its holder file is missing)"
    return (f"pid {info.get('pid', '?')} (`{info.get('command', '?')}`), started at {info.get('started', '?')}")


@contextlib.contextmanager
def build_lock(build: str | Path, command: str | None = None, wait: float = 0.0):
    """Hold the lock of ``build`` (a ``_build`` folder) for the block; raise :class:`BuildLocked` naming the
    holder when another process holds it for more than ``wait`` seconds (0: stop at once)."""
    from filelock import FileLock, Timeout  # optional: filelock (the book extra; while the book builds)

    build = Path(build)
    build.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(build / LOCK_NAME))
    try:
        lock.acquire(timeout=wait)
    except Timeout:
        raise BuildLocked(
            f"The build {build} is being written by {_describe(holder(build))}: two commands writing one build "
            "would mix their chapters' outputs. Wait for it to finish (or stop it), then run again; or give "
            "this command another book root (--root).") from None
    info = {"pid": os.getpid(), "command": command or " ".join(["kq", *sys.argv[1:]]),
            "started": time.strftime("%Y-%m-%d %H:%M:%S %Z")}
    path = build / HOLDER_NAME
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(json.dumps(info) + "\n")
        os.replace(tmp, path)
        yield info
    finally:
        with contextlib.suppress(OSError):
            if holder(build).get("pid") == os.getpid():
                path.unlink()
        lock.release()
