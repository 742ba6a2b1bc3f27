"""``/proc/<pid>/mountinfo``, parsed (proc(5), ``fs/proc_namespace.c:show_mountinfo``).

One line per mount::

    36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue
    (1)(2)(3)   (4)   (5)      (6)      (7)   (8) (9)    (10)        (11)

mount id, parent id, ``major:minor``, the root of the mount within its
filesystem, the mount point, the per-mount options, zero or more optional
fields (``shared:N``, ``master:N``, ``propagate_from:N``, ``unbindable``) ended
by a lone ``-``, then the filesystem type, the source and the super-block
options. Fields are separated by single spaces; the kernel escapes a space,
tab, newline and backslash in a path as ``\\040``, ``\\011``, ``\\012`` and
``\\134``, and every ``\\NNN`` (three octal digits) is decoded here.

Parsing is pure; :func:`read` and :func:`read_mount_points` read the file and
block (call them through ``asyncio.to_thread`` from a coroutine).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Final

SELF: Final = "/proc/self/mountinfo"
_ESCAPE: Final = re.compile(r"\\([0-7]{3})")


def unescape(field: str) -> str:
    """Decode every ``\\NNN`` octal escape of a mountinfo field."""
    if "\\" not in field:
        return field
    return _ESCAPE.sub(lambda m: chr(int(m.group(1), 8)), field)


@dataclass(frozen=True, slots=True)
class Mount:
    """One line of mountinfo; paths and names decoded."""

    mount_id: int
    parent_id: int
    major: int
    minor: int
    root: str  # the directory of the filesystem mounted here (a bind mount's source)
    mount_point: str
    options: tuple[str, ...]  # per-mount options: rw, nosuid, relatime ...
    optional: tuple[str, ...]  # shared:N, master:N, propagate_from:N, unbindable
    fs_type: str
    source: str
    super_options: tuple[str, ...]

    @property
    def read_only(self) -> bool:
        return "ro" in self.options

    def optional_field(self, tag: str) -> str | None:
        """The value of an optional field (``shared`` -> ``"12"``); ``""`` for a bare tag."""
        for item in self.optional:
            name, sep, value = item.partition(":")
            if name == tag:
                return value if sep else ""
        return None


def parse_line(line: str) -> Mount:
    """One mountinfo line; ValueError if it is not one."""
    fields = line.rstrip("\n").split(" ")
    try:
        sep = fields.index("-", 6)
    except ValueError:
        raise ValueError(f"mountinfo line without its '-' separator: {line!r}") from None
    tail = fields[sep + 1 :]
    if len(tail) != 3:
        raise ValueError(f"mountinfo line with {len(tail)} fields after '-': {line!r}")
    major, colon, minor = fields[2].partition(":")
    if not colon:
        raise ValueError(f"mountinfo line without major:minor: {line!r}")
    return Mount(
        mount_id=int(fields[0]),
        parent_id=int(fields[1]),
        major=int(major),
        minor=int(minor),
        root=unescape(fields[3]),
        mount_point=unescape(fields[4]),
        options=tuple(fields[5].split(",")),
        optional=tuple(unescape(f) for f in fields[6:sep]),
        fs_type=unescape(tail[0]),
        source=unescape(tail[1]),
        super_options=tuple(unescape(tail[2]).split(",")),
    )


def parse(text: str) -> list[Mount]:
    """Every mount of a mountinfo text, in its order (blank lines are skipped)."""
    return [parse_line(line) for line in text.splitlines() if line.strip()]


def mount_points(text: str) -> list[str]:
    """The mount points of a mountinfo text, decoded, in order (stacked mounts repeat)."""
    return [mount.mount_point for mount in parse(text)]


def read(path: str | Path = SELF) -> list[Mount]:
    """The mounts of ``path`` (this process's mount namespace by default). Blocks."""
    return parse(Path(path).read_text(errors="surrogateescape"))


def read_mount_points(path: str | Path = SELF) -> list[str]:
    """The mount points of ``path`` (this process's by default). Blocks."""
    return [mount.mount_point for mount in read(path)]
