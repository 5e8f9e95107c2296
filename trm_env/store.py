"""A rollout table on disk: a folder of ``.npy`` arrays plus ``meta.json``, with a sha256 digest of each.

``save_table(path, values)`` writes the fields of a table (arrays, dicts of arrays, the layout and plain
scalars) atomically; ``load_table(path)`` reads them back into the same plain dict, checked:

- always (cheap, about a memory-mapped load): ``meta.json`` parses, has this format and its own digest
  (so an edited ``max_steps`` or ``pnl_scale`` is caught); the files are exactly the recorded ones with
  the recorded sizes, shapes and dtypes; the arrays agree with the meta (samples, K steps, class count,
  observation widths); a folder named as a content key (64 hex digits) holds the table of that key.
- with ``verify`` (``TRM_ENV_VERIFY=1``, set by the test suite): every array's sha256, which catches bytes
  changed in place. It reads every byte: about 6x a full load and 10-80x a memory-mapped one.

Anything wrong is a ``ValueError`` naming the folder and the file. ``discard`` moves a damaged cache
folder aside, with a warning, so the caller can rebuild it.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from trm_env.io import atomic_dir

__all__ = ["FORMAT", "discard", "load_table", "save_table", "verify_by_default"]

FORMAT = "trm_env.rollouts/2"  # format 1 (before digests) had no "format" entry
_KEY = re.compile(r"[0-9a-f]{64}")
_GROUPS = "groups"  # meta entry: the names of the dict-of-array fields (an empty one has no file)


def verify_by_default() -> bool:
    """Whether loads check every digest unless told: ``TRM_ENV_VERIFY`` is 1/true/yes/full."""
    return os.environ.get("TRM_ENV_VERIFY", "").strip().lower() in ("1", "true", "yes", "full")


def _file_digest(path: Path) -> str:
    with path.open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def _meta_digest(record: dict[str, Any]) -> str:
    body = {name: value for name, value in record.items() if name != "sha256"}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def save_table(path: str | Path, values: dict[str, Any]) -> Path:
    """Write ``values`` (arrays, dicts of arrays, ``layout``'s slices, JSON scalars) to the folder ``path``."""
    arrays, meta = {}, {_GROUPS: []}
    for name, value in values.items():
        if isinstance(value, np.ndarray):
            arrays[name] = value
        elif name == "layout":
            meta[name] = {column: [s.start, s.stop] for column, s in value.items()}
        elif isinstance(value, dict):
            meta[_GROUPS].append(name)
            arrays.update({f"{name}.{mode}": array for mode, array in value.items()})
        else:
            meta[name] = value
    with atomic_dir(path) as tmp:
        files = {}
        for name, array in arrays.items():
            file = tmp / f"{name}.npy"
            np.save(file, np.asarray(array), allow_pickle=False)
            files[file.name] = {"shape": list(array.shape), "dtype": np.asarray(array).dtype.str,
                                "bytes": file.stat().st_size, "sha256": _file_digest(file)}  # fmt: skip
        record = {"format": FORMAT, "meta": meta, "files": files}
        (tmp / "meta.json").write_text(json.dumps({**record, "sha256": _meta_digest(record)}, indent=1))
    return Path(path)


def _read_record(path: Path) -> dict[str, Any]:
    """``meta.json``, checked against its own digest and the folder's file set and sizes."""
    if not path.is_dir():
        raise ValueError(f"{str(path)!r} is not a saved Rollouts folder (no such folder)")
    if not (path / "meta.json").is_file():
        raise ValueError(f"{str(path)!r} is not a saved Rollouts folder (no meta.json)")
    try:
        record = json.loads((path / "meta.json").read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"{str(path)!r}: meta.json does not parse ({error})") from error
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        raise ValueError(f"{str(path)!r}: meta.json is not format {FORMAT!r} (written by an older version, "
                         "without digests, or not a table); delete the folder or save the table again")  # fmt: skip
    if record.get("sha256") != _meta_digest(record):
        raise ValueError(f"{str(path)!r}: meta.json was changed after it was written (its sha256 differs)")
    present = {file.name for file in path.iterdir()} - {"meta.json"}
    for problem, names in (("missing", set(record["files"]) - present), ("unexpected", present - set(record["files"]))):
        if names:
            raise ValueError(f"{str(path)!r}: {problem} file(s) {sorted(names)}")
    for name, entry in record["files"].items():
        size = (path / name).stat().st_size
        if size != entry["bytes"]:
            raise ValueError(f"{str(path)!r}: {name} has {size} bytes, {entry['bytes']} were written")
    return record


def _read_array(path: Path, name: str, entry: dict[str, Any], mmap: bool, verify: bool) -> np.ndarray:
    file = path / name
    try:
        array = np.load(file, mmap_mode="r" if mmap else None, allow_pickle=False).view(np.ndarray)
    except (OSError, ValueError, EOFError) as error:
        raise ValueError(f"{str(path)!r}: {name} does not load as an array ({error})") from error
    if list(array.shape) != entry["shape"] or array.dtype.str != entry["dtype"]:
        raise ValueError(f"{str(path)!r}: {name} holds {array.dtype.str} {list(array.shape)}, "
                         f"{entry['dtype']} {entry['shape']} were written")  # fmt: skip
    if verify and _file_digest(file) != entry["sha256"]:
        raise ValueError(f"{str(path)!r}: {name} was changed after it was written (its sha256 differs)")
    return array


def _check_agreement(path: Path, values: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
    """The meta agrees with the arrays: key and folder, samples, K steps, class count, observation widths."""
    if _KEY.fullmatch(path.name) and values.get("key") != path.name:
        raise ValueError(f"{str(path)!r}: meta.json holds the table of key {values.get('key')!r}, not of "
                         "the folder's name")  # fmt: skip
    layout = values["layout"]
    n = len(values["index"])
    widths = {"observations.summary.npy": layout["latent"].start, "observations.latent.npy": layout["latent"].stop}
    for name, array in arrays.items():
        problem = None
        if len(array) != n:
            problem = f"{len(array)} samples, index.npy {n}"
        elif array.ndim >= 2 and array.shape[1] != values["max_steps"]:
            problem = f"{array.shape[1]} steps, meta.json max_steps={values['max_steps']}"
        elif name in widths and array.shape[-1] != widths[name]:
            problem = f"width {array.shape[-1]}, meta.json's layout {widths[name]}"
        if problem:
            raise ValueError(f"{str(path)!r}: {name} disagrees with the table: {problem}")
    classes = layout["probs"].stop - layout["probs"].start
    if classes != values["num_classes"]:
        raise ValueError(f"{str(path)!r}: meta.json has num_classes={values['num_classes']} but its layout "
                         f"{classes} probability columns")  # fmt: skip


def load_table(path: str | Path, mmap: bool = True, verify: bool | None = None) -> dict[str, Any]:
    """The values ``save_table`` wrote to ``path``, checked (module docstring); arrays read-only when mapped.

    ``verify=None`` follows ``verify_by_default()``; True checks every array's sha256.
    """
    path = Path(path)
    verify = verify_by_default() if verify is None else verify
    record = _read_record(path)
    arrays = {name: _read_array(path, name, entry, mmap, verify) for name, entry in record["files"].items()}
    meta = record["meta"]
    values: dict[str, Any] = {name: tuple(v) if isinstance(v, list) else v for name, v in meta.items()}
    values.update({group: {} for group in values.pop(_GROUPS)})
    values["layout"] = {column: slice(*bounds) for column, bounds in meta["layout"].items()}
    for name, array in arrays.items():
        group, _, mode = name.removesuffix(".npy").partition(".")
        if mode:
            values[group][mode] = array
        else:
            values[group] = array
    _check_agreement(path, values, arrays)
    return values


def discard(path: Path, error: Exception) -> None:
    """Move the damaged cache folder ``path`` aside (``<name>.damaged-<time>``) with a warning naming both."""
    aside = path.with_name(f"{path.name}.damaged-{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}")
    try:
        path.rename(aside)
    except FileNotFoundError:  # another process moved it first
        pass
    warnings.warn(f"damaged rollout cache, moved aside to {str(aside)!r} and simulated again: {error}",
                  RuntimeWarning, stacklevel=3)  # fmt: skip
