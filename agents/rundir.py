"""A run directory's bookkeeping: an exclusive lock, the temp files a killed run left, and per-stage key files.

- ``run_lock(out)``: an OS lock (``fcntl.flock``) on ``out/.run.lock``, held while a run works there and released
  by the OS if the process dies; a second run on the same folder stops at once, told the holder's PID.
- ``remove_temp_files(out)``: what ``trm_env.io.atomic_path``/``atomic_dir`` were writing when a run was killed
  (``.<name>.<random>.tmp<suffix>``), safe to delete once the lock is held.
- ``run_keyed(fn, kwargs, artifact, key)``: a stage that records its own key (``<artifact>.key.json``) right after
  its artifact, in whichever process runs it, so a kill at any moment loses only the stages that were running.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from trm_env.io import write_json_atomic

__all__ = ["LOCK_NAME", "TEMP_GLOB", "is_fresh", "key_file", "remove_temp_files", "run_keyed", "run_lock"]

LOCK_NAME = ".run.lock"
TEMP_GLOB = ".*.tmp*"  # the names atomic_path (".<stem>.<random>.tmp<suffix>") and atomic_dir give their temps


@contextmanager
def run_lock(out: Path) -> Iterator[Path]:
    """Hold an exclusive lock on the run directory ``out`` (made if missing); ``ValueError`` if another process
    holds it, naming that process's PID."""
    out.mkdir(parents=True, exist_ok=True)
    path = out / LOCK_NAME
    with open(path, "a+") as handle:  # "a+": opening never truncates the holder's PID
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
            raise ValueError(f"{out} is in use by another run (PID {holder}, lock {path}); wait for it to finish "
                             f"or use another --out") from None  # fmt: skip
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        yield path
    # closing the file released the lock; the file stays (deleting it would let two runs lock different files)


def remove_temp_files(out: Path) -> list[Path]:
    """Delete the temp files and folders of interrupted atomic writes under ``out``; the paths removed."""
    removed = []
    for path in sorted(out.rglob(TEMP_GLOB)):  # a folder sorts before what it holds
        if not path.exists() and not path.is_symlink():
            continue  # inside a temp folder removed just before
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()
        removed.append(path)
    return removed


def key_file(artifact: Path) -> Path:
    return artifact.with_name(f"{artifact.name}.key.json")


def is_fresh(artifact: Path, key: dict[str, Any]) -> bool:
    """Whether ``artifact`` exists and its key file records ``key``."""
    recorded = key_file(artifact)
    if not artifact.exists() or not recorded.is_file():
        return False
    return json.loads(recorded.read_text()) == json.loads(json.dumps(key))


def run_keyed(fn: Callable[..., Any], kwargs: dict[str, Any], artifact: Path, key: dict[str, Any]) -> None:
    """Run the stage ``fn(**kwargs)`` that writes ``artifact``, then record ``key`` beside it.

    The old key file goes first, so an artifact rewritten by a stage killed before its key is never taken for
    the old one."""
    key_file(artifact).unlink(missing_ok=True)
    fn(**kwargs)
    write_json_atomic(key_file(artifact), key)
