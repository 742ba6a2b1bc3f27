"""The kubelet's AtomicWriter: a ..data symlink swapped to a fresh timestamped directory."""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path

import pytest

from minikubelet.volumes.atomic import PayloadPathError, atomic_write

TS_DIR = re.compile(r"^\.\.\d{4}_\d\d_\d\d_\d\d_\d\d_\d\d\.\w+$")


def data_dir(target: Path) -> str:
    return os.readlink(target / "..data")


def test_first_write_lays_out_data_dir_and_links(tmp_path: Path) -> None:
    target = tmp_path / "vol"
    assert atomic_write(target, {"a": (b"1", 0o644), "conf/b.yaml": (b"2", 0o600)})
    ts = data_dir(target)
    assert TS_DIR.match(ts), ts
    assert "/" not in ts  # relative: the volume can be mounted anywhere
    assert os.readlink(target / "a") == "..data/a"
    assert os.readlink(target / "conf") == "..data/conf"
    assert (target / "a").read_bytes() == b"1"
    assert (target / "conf" / "b.yaml").read_bytes() == b"2"
    assert stat.S_IMODE(os.stat(target / ts / "a").st_mode) == 0o644
    assert stat.S_IMODE(os.stat(target / ts / "conf" / "b.yaml").st_mode) == 0o600
    assert sorted(os.listdir(target)) == sorted(["..data", ts, "a", "conf"])


def test_same_payload_writes_nothing(tmp_path: Path) -> None:
    target = tmp_path / "vol"
    payload = {"a": (b"1", 0o644)}
    assert atomic_write(target, payload)
    before = data_dir(target)
    assert not atomic_write(target, payload)
    assert data_dir(target) == before


def test_changed_payload_swaps_and_cleans_up(tmp_path: Path) -> None:
    target = tmp_path / "vol"
    atomic_write(target, {"a": (b"1", 0o644), "gone": (b"x", 0o644)})
    old = data_dir(target)
    assert atomic_write(target, {"a": (b"2", 0o644), "new": (b"n", 0o644)})
    new = data_dir(target)
    assert new != old
    assert not (target / old).exists()  # the old generation is removed
    assert not os.path.lexists(target / "gone")  # a name no longer in the payload goes
    assert (target / "a").read_bytes() == b"2"
    assert (target / "new").read_bytes() == b"n"
    assert not os.path.lexists(target / "..data_tmp")


def test_a_mode_change_alone_is_a_change(tmp_path: Path) -> None:
    target = tmp_path / "vol"
    atomic_write(target, {"a": (b"1", 0o644)})
    assert atomic_write(target, {"a": (b"1", 0o400)})
    assert stat.S_IMODE(os.stat(target / "a").st_mode) == 0o400


def test_a_reader_holding_the_old_file_keeps_its_content(tmp_path: Path) -> None:
    target = tmp_path / "vol"
    atomic_write(target, {"a": (b"old", 0o644)})
    with open(target / "a", "rb") as held:
        atomic_write(target, {"a": (b"new", 0o644)})
        assert held.read() == b"old"
    assert (target / "a").read_bytes() == b"new"


@pytest.mark.parametrize(
    "path",
    ["../escape", "/etc/passwd", "a/../../escape", "a/..", "..data", "..hidden", "", "x\0y"],
)
def test_paths_that_could_escape_are_refused_before_any_write(tmp_path: Path, path: str) -> None:
    target = tmp_path / "vol"
    with pytest.raises(PayloadPathError):
        atomic_write(target, {"ok": (b"1", 0o644), path: (b"evil", 0o644)})
    assert not target.exists()
    assert not (tmp_path / "escape").exists()


def test_an_empty_payload_empties_the_volume(tmp_path: Path) -> None:
    target = tmp_path / "vol"
    atomic_write(target, {"a": (b"1", 0o644)})
    assert atomic_write(target, {})
    assert sorted(os.listdir(target)) == sorted(["..data", data_dir(target)])
