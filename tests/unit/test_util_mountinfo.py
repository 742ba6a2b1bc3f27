"""The one mountinfo parser: every field, every escape, and this process's real table."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

from minikubelet.util import mountinfo

LINE = "36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue"


def test_a_line_field_by_field() -> None:
    mount = mountinfo.parse_line(LINE)
    assert mount == mountinfo.Mount(
        mount_id=36,
        parent_id=35,
        major=98,
        minor=0,
        root="/mnt1",
        mount_point="/mnt2",
        options=("rw", "noatime"),
        optional=("master:1",),
        fs_type="ext3",
        source="/dev/root",
        super_options=("rw", "errors=continue"),
    )
    assert not mount.read_only
    assert mount.optional_field("master") == "1" and mount.optional_field("shared") is None


@pytest.mark.parametrize(
    ("optional", "expected"),
    [
        ("", ()),
        ("shared:7 ", ("shared:7",)),
        ("shared:7 master:2 propagate_from:3 ", ("shared:7", "master:2", "propagate_from:3")),
        ("unbindable ", ("unbindable",)),
    ],
)
def test_optional_fields_up_to_the_separator(optional: str, expected: tuple[str, ...]) -> None:
    line = f"1 0 0:5 / /x ro,nosuid {optional}- tmpfs tmpfs rw,size=64k"
    mount = mountinfo.parse_line(line)
    assert mount.optional == expected
    assert (mount.fs_type, mount.source, mount.super_options) == (
        "tmpfs",
        "tmpfs",
        ("rw", "size=64k"),
    )
    assert mount.read_only


def test_unbindable_is_a_bare_tag() -> None:
    mount = mountinfo.parse_line("1 0 0:5 / /x rw unbindable - tmpfs tmpfs rw")
    assert mount.optional_field("unbindable") == ""


@pytest.mark.parametrize(
    ("escaped", "decoded"),
    [
        ("/mnt\\040with\\040space", "/mnt with space"),
        ("/tab\\011here", "/tab\there"),
        ("/new\\012line", "/new\nline"),
        ("/back\\134slash", "/back\\slash"),
        ("/all\\040\\011\\012\\134", "/all \t\n\\"),
        ("/not\\08an\\escape\\", "/not\\08an\\escape\\"),  # 8 is not octal; a lone backslash
        ("/plain", "/plain"),
    ],
)
def test_escapes(escaped: str, decoded: str) -> None:
    assert mountinfo.unescape(escaped) == decoded
    line = f"36 35 98:0 {escaped} {escaped} rw - ext4 {escaped} rw"
    mount = mountinfo.parse_line(line)
    assert mount.root == mount.mount_point == mount.source == decoded


def test_an_empty_source_is_kept() -> None:
    mount = mountinfo.parse_line("40 1 0:40 / /y rw - fuse  rw")
    assert mount.source == "" and mount.fs_type == "fuse"


@pytest.mark.parametrize(
    "line",
    [
        "36 35 98:0 /mnt1 /mnt2 rw ext3 /dev/root rw",  # no separator
        "36 35 98:0 /mnt1 /mnt2 rw - ext3 /dev/root",  # a field short after it
        "36 35 98 /mnt1 /mnt2 rw - ext3 /dev/root rw",  # no major:minor
        "x 35 98:0 /mnt1 /mnt2 rw - ext3 /dev/root rw",
    ],
)
def test_malformed_lines(line: str) -> None:
    with pytest.raises(ValueError):
        mountinfo.parse_line(line)


def test_mount_points_of_a_text() -> None:
    text = f"{LINE}\n\n36 35 98:0 /a /mnt\\040b rw - ext3 /dev/root rw\n"
    assert mountinfo.mount_points(text) == ["/mnt2", "/mnt b"]


def test_this_process_s_mounts() -> None:
    mounts = mountinfo.read()
    assert mounts and all(isinstance(m, mountinfo.Mount) for m in mounts)
    assert any(m.mount_point == "/" for m in mounts)
    proc = [m for m in mounts if m.mount_point == "/proc"]
    assert proc and proc[-1].fs_type == "proc"
    assert mountinfo.read_mount_points() == [m.mount_point for m in mounts]
    assert len({m.mount_id for m in mounts}) == len(mounts)


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting needs root")
def test_a_real_mount_point_with_a_space_tab_and_backslash() -> None:
    import subprocess

    with tempfile.TemporaryDirectory() as tmp:
        target = Path(tmp, "a dir\twith\\odd name")
        target.mkdir()
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=64k", "mk test", str(target)], check=True
        )
        try:
            found = [m for m in mountinfo.read() if m.mount_point == str(target)]
            assert len(found) == 1
            assert found[0].fs_type == "tmpfs" and found[0].source == "mk test"
        finally:
            subprocess.run(["umount", str(target)], check=True)
        assert str(target) not in mountinfo.read_mount_points()
