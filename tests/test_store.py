"""A saved rollout table is checked on load: every kind of damage is named, and the cache rebuilds itself."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import fields, replace
from pathlib import Path

import numpy as np
import pytest

import trm_env.rollouts as rollouts_module
from trm_env.model import TinyRecursiveModel
from trm_env.rollouts import Rollouts, simulate
from trm_env.store import FORMAT
from trm_env.task import Task


@pytest.fixture
def saved(ten_class: tuple[Task, TinyRecursiveModel], tmp_path: Path) -> tuple[Rollouts, Path]:
    """The 10-class model's test table, saved in the cache folder ``tmp_path`` under its key."""
    task, model = ten_class
    table = simulate(task, model, split="test", cache_dir=False)
    return table, table.save(tmp_path / table.key)


def _edit_meta(folder: Path, edit: Callable[[dict], None], redigest: bool = False) -> None:
    record = json.loads((folder / "meta.json").read_text())
    edit(record)
    if redigest:  # as a writer with a bug would: the digest matches, the content is wrong
        body = {name: value for name, value in record.items() if name != "sha256"}
        record["sha256"] = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()
    (folder / "meta.json").write_text(json.dumps(record))


def _random_bytes(folder: Path) -> None:
    """4 KB of random bytes in the middle of the largest array, the file size unchanged."""
    file = folder / "observations.latent.npy"
    size = file.stat().st_size
    with file.open("r+b") as handle:
        handle.seek(size // 2)
        handle.write(np.random.default_rng(0).bytes(min(4096, size // 2)))
    assert file.stat().st_size == size


def _truncate(folder: Path) -> None:
    file = folder / "pnl.npy"
    file.write_bytes(file.read_bytes()[:-100])


def _reshape(folder: Path) -> None:
    """prediction.npy rewritten flat: the same bytes of data, another shape."""
    file = folder / "prediction.npy"
    np.save(file, np.load(file).reshape(-1))


def _old_format(folder: Path) -> None:
    """meta.json as written before digests: the plain fields."""
    record = json.loads((folder / "meta.json").read_text())
    (folder / "meta.json").write_text(json.dumps(record["meta"]))


def _other_key(folder: Path) -> None:
    """The folder holds another table's key (a copied or renamed cache folder)."""
    table = Rollouts.load(folder, mmap=False)
    shutil.rmtree(folder)
    replace(table, key="0" * 64).save(folder)


DAMAGE: dict[str, tuple[Callable[[Path], None], str]] = {
    "random-bytes": (_random_bytes, r"observations\.latent\.npy was changed"),
    "max-steps-edited": (lambda f: _edit_meta(f, lambda r: r["meta"].update(max_steps=3)), "meta.json was changed"),
    "pnl-scale-edited": (lambda f: _edit_meta(f, lambda r: r["meta"].update(pnl_scale=0.5)), "meta.json was changed"),
    "max-steps-redigested": (lambda f: _edit_meta(f, lambda r: r["meta"].update(max_steps=3), redigest=True),
                             r"\.npy disagrees with the table: 6 steps, meta\.json max_steps=3"),
    "classes-redigested": (lambda f: _edit_meta(f, lambda r: r["meta"].update(num_classes=4), redigest=True),
                           "meta.json has num_classes=4"),
    "truncated": (_truncate, r"pnl\.npy has \d+ bytes"),
    "deleted": (lambda f: (f / "prediction.npy").unlink(), r"missing file\(s\) \['prediction\.npy'\]"),
    "extra-file": (lambda f: (f / "notes.txt").write_text("hi"), r"unexpected file\(s\) \['notes\.txt'\]"),
    "reshaped": (_reshape, r"prediction\.npy (holds <i8 \[720\]|has \d+ bytes)"),
    "meta-unparsable": (lambda f: (f / "meta.json").write_text("{"), "meta.json does not parse"),
    "meta-deleted": (lambda f: (f / "meta.json").unlink(), r"no meta\.json"),
    "old-format": (_old_format, "meta.json is not format .*older version"),
    "other-key": (_other_key, "meta.json holds the table of key '0000"),
}  # fmt: skip


def _assert_same(a: Rollouts, b: Rollouts) -> None:
    for field in fields(Rollouts):
        x, y = getattr(a, field.name), getattr(b, field.name)
        if isinstance(x, dict) and field.name != "layout":
            assert x.keys() == y.keys(), field.name
            for mode in x:
                np.testing.assert_array_equal(x[mode], y[mode], err_msg=f"{field.name}.{mode}")
        elif isinstance(x, np.ndarray):
            np.testing.assert_array_equal(x, y, err_msg=field.name)
            assert x.dtype == y.dtype, field.name
        else:
            assert x == y, field.name


def test_round_trip_is_exact_and_verifies(saved: tuple[Rollouts, Path]) -> None:
    table, folder = saved
    for mmap in (True, False):
        loaded = Rollouts.load(folder, mmap=mmap, verify=True)
        _assert_same(loaded, table)
        assert loaded.observations["latent"].flags.writeable is not mmap


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_damage_is_named_on_load_and_rebuilt_by_simulate(
    damage: str, saved: tuple[Rollouts, Path], ten_class: tuple[Task, TinyRecursiveModel],
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    table, folder = saved
    edit, message = DAMAGE[damage]
    edit(folder)
    with pytest.raises(ValueError, match=message) as error:
        Rollouts.load(folder, verify=True)
    assert str(folder) in str(error.value)
    if damage != "random-bytes":  # everything but bytes changed in place is seen by the cheap check
        with pytest.raises(ValueError, match=message):
            Rollouts.load(folder, verify=False)

    monkeypatch.setattr(rollouts_module, "_MEMORY", OrderedDict())  # a fresh process: only the disk cache
    task, model = ten_class
    aside = f"damaged rollout cache, moved aside to '{re.escape(str(folder))}.damaged-.*{message}"
    with pytest.warns(RuntimeWarning, match=aside):
        rebuilt = simulate(task, model, split="test", cache_dir=folder.parent)
    _assert_same(rebuilt, table)
    _assert_same(Rollouts.load(folder, verify=True), table)  # saved again, whole
    assert len(list(folder.parent.glob(f"{folder.name}.damaged-*"))) == 1


def test_full_check_follows_the_environment(saved: tuple[Rollouts, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    """Bytes changed in place are found by the digests: on request, or always under ``TRM_ENV_VERIFY=1``."""
    _, folder = saved
    _random_bytes(folder)
    monkeypatch.delenv("TRM_ENV_VERIFY", raising=False)
    Rollouts.load(folder)  # the cheap check alone: sizes, shapes and meta are intact
    monkeypatch.setenv("TRM_ENV_VERIFY", "1")
    with pytest.raises(ValueError, match="sha256 differs"):
        Rollouts.load(folder)


def test_a_table_saved_under_any_name_loads(saved: tuple[Rollouts, Path], tmp_path: Path) -> None:
    """Only a folder named as a content key must hold that key; ``save("val")`` still round-trips."""
    table, _ = saved
    assert Rollouts.load(table.save(tmp_path / "val")).key == table.key
    record = json.loads((tmp_path / "val" / "meta.json").read_text())
    assert record["format"] == FORMAT and set(record["files"]) == {p.name for p in (tmp_path / "val").glob("*.npy")}
