"""The kubelet's AtomicWriter (``pkg/volume/util/atomic_writer.go``).

A volume whose files come from somewhere else (downward API, ConfigMap, Secret,
projected) is written so that a reader sees the old set of files or the new one,
never a mix::

    <volume>/..2026_12_07_20_41_00.123456789/    the payload, one fresh directory a write
    <volume>/..data -> ..2026_12_07_20_41_00.123456789
    <volume>/key    -> ..data/key                 each top-level name, a symlink into ..data

A write makes the new timestamped directory, points a ``..data_tmp`` symlink at it and
renames that over ``..data`` (the one atomic step), makes the user-visible symlinks
that are new, removes those no longer in the payload, and then the old directory.
When the files under ``..data`` already hold the payload (contents and modes), nothing
is written. Every path is checked first: relative, no ``..`` component, no name
starting with ``..`` (those are the writer's own), segments of at most 255 and paths of
at most 4096 characters, so nothing is ever written outside the volume.
"""

from __future__ import annotations

import contextlib
import os
import posixpath
import shutil
import stat
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Final

#: {relative path: (content, mode)}
Payload = dict[str, tuple[bytes, int]]

DATA_DIR: Final = "..data"
DATA_DIR_TMP: Final = "..data_tmp"
MAX_PATH: Final = 4096
MAX_SEGMENT: Final = 255


class PayloadPathError(ValueError):
    """A payload path that could leave the volume or clash with the writer's own names."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def validate_payload_path(path: str) -> None:
    """``validatePath``: relative, no ``..`` anywhere, not hidden as ``..x``."""
    if not path:
        raise PayloadPathError("an item has an empty path")
    if len(path) > MAX_PATH:
        raise PayloadPathError(f"path {path[:32]!r}... is longer than {MAX_PATH}")
    if path.startswith("/"):
        raise PayloadPathError(f"path {path!r} must be relative")
    if ".." in path.split("/") or path.startswith(".."):
        raise PayloadPathError(f"path {path!r} must not contain or start with '..'")
    if "\0" in path:
        raise PayloadPathError(f"path {path!r} must not contain a NUL byte")
    if any(len(seg) > MAX_SEGMENT for seg in path.split("/")):
        raise PayloadPathError(f"path {path!r} has a segment over {MAX_SEGMENT} chars")


def _payload_matches(
    ts_dir: Path, payload: Mapping[str, tuple[bytes, int]], mode_mask: int = 0
) -> bool:
    for rel, (data, mode) in payload.items():
        try:
            st = os.lstat(ts_dir / rel)
            if not stat.S_ISREG(st.st_mode) or stat.S_IMODE(st.st_mode) != mode | mode_mask:
                return False
            if (ts_dir / rel).read_bytes() != data:
                return False
        except OSError:
            return False
    wanted = {Path(rel) for rel in payload}
    for dirpath, _dirs, files in os.walk(ts_dir):
        for name in files:
            if (Path(dirpath) / name).relative_to(ts_dir) not in wanted:
                return False
    return True


def atomic_write(
    target: Path,
    payload: Mapping[str, tuple[bytes, int]],
    set_perms: Callable[[], None] | None = None,
    owners: Mapping[str, int] | None = None,
    mode_mask: int = 0,
) -> bool:
    """Write ``payload`` into ``target`` atomically; blocking (call it in a thread).

    Returns False when the files on disk already match the payload (nothing written).
    Raises :class:`PayloadPathError` for a bad path before touching anything.
    ``owners`` gives some files an owner ({relative path: uid}, the ``FsUser`` of a
    token); ``set_perms`` runs once the new files are written, before they are switched
    in (the volume's ``fsGroup`` ownership), as the kubelet's writer calls it;
    ``mode_mask`` is what it adds to the files' modes, so files it changed still match
    their payload.
    """
    for rel in payload:
        validate_payload_path(rel)
    target.mkdir(parents=True, exist_ok=True)
    data_link = target / DATA_DIR
    old = os.readlink(data_link) if data_link.is_symlink() else None
    if old is not None and "/" not in old and _payload_matches(target / old, payload, mode_mask):
        return False
    stamp = time.strftime("..%Y_%m_%d_%H_%M_%S.", time.gmtime())
    ts_dir = Path(tempfile.mkdtemp(prefix=stamp, dir=target))
    os.chmod(ts_dir, 0o755)
    for rel, (data, mode) in payload.items():
        path = ts_dir / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        os.chmod(path, mode)
        if owners and rel in owners:
            os.chown(path, owners[rel], -1)
    if set_perms is not None:
        set_perms()
    tmp_link = target / DATA_DIR_TMP
    with contextlib.suppress(FileNotFoundError):
        tmp_link.unlink()
    os.symlink(ts_dir.name, tmp_link)
    os.rename(tmp_link, data_link)  # the atomic switch
    tops = {rel.split("/", 1)[0] for rel in payload}
    for top in sorted(tops):
        link = target / top
        if not link.is_symlink():
            os.symlink(posixpath.join(DATA_DIR, top), link)
    for entry in os.listdir(target):
        if entry.startswith("..") or entry in tops:
            continue
        if (target / entry).is_symlink():
            (target / entry).unlink()
    if old is not None and "/" not in old and old.startswith("..") and old != ts_dir.name:
        shutil.rmtree(target / old, ignore_errors=True)
    return True
