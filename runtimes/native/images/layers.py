"""Unpack an OCI layer, once, into its own directory: an overlayfs lower layer.

A layer is a tar changeset (gzip, zstd or uncompressed; the format is sniffed
from the bytes, not trusted from the media type). It is unpacked into a scratch
directory, its uncompressed digest checked against the image config's
``diff_id``, and only then renamed into place, so a layer directory that exists
is complete. OCI whiteouts become overlayfs ones: ``.wh.NAME`` a 0:0 character
device ``NAME``, ``.wh..wh..opq`` the ``trusted.overlay.opaque=y`` xattr on its
directory, so the directories stack as lowerdirs of an overlay mount.

Every write is relative to a directory file descriptor that was opened with
``O_NOFOLLOW`` component by component from the layer root, so nothing can be
written outside it: absolute names, ``..`` components, a parent that is a
symlink (``link -> /`` then ``link/etc/x``) and hard links to outside names are
refused, and the whole layer with them.

Everything here blocks; the service runs it in a worker thread.
"""

from __future__ import annotations

import contextlib
import errno
import gzip
import hashlib
import logging
import os
import shutil
import stat
import tarfile
import tempfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Protocol

import zstandard

from minikubelet.errors import InvalidArgument

log = logging.getLogger(__name__)

WHITEOUT_PREFIX = ".wh."
OPAQUE_MARKER = ".wh..wh..opq"
OPAQUE_XATTR = "trusted.overlay.opaque"
_XATTR_PAX = "SCHILY.xattr."
_COPY_CHUNK = 1 << 20
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC

_GZIP_MAGIC = b"\x1f\x8b"
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


class LayerError(InvalidArgument):
    """A layer that cannot or must not be unpacked; nothing of it is left on disk."""


@dataclass(frozen=True, slots=True)
class LayerUsage:
    """What an unpacked layer occupies: allocated bytes and inodes."""

    bytes: int
    inodes: int


class _Readable(Protocol):
    def read(self, size: int = ..., /) -> bytes: ...


class _HashingReader:
    """A read-only stream that hashes what passes through (the layer's diff_id)."""

    def __init__(self, inner: _Readable) -> None:
        self._inner = inner
        self.hash = hashlib.sha256()

    def read(self, size: int = -1) -> bytes:
        data = self._inner.read(size)
        self.hash.update(data)
        return data

    def drain(self) -> None:
        """Read to the end: the digest covers the padding after the tar's end marker too."""
        while self.read(_COPY_CHUNK):
            pass


def _decompressed(raw: IO[bytes]) -> _Readable:
    magic = raw.read(4)
    raw.seek(0)
    if magic.startswith(_GZIP_MAGIC):
        return gzip.GzipFile(fileobj=raw, mode="rb")
    if magic == _ZSTD_MAGIC:
        return zstandard.ZstdDecompressor().stream_reader(raw, read_across_frames=True)
    return raw


def unpack_layer(blob: Path, dest: Path, *, diff_id: str, scratch: Path, what: str) -> LayerUsage:
    """Unpack the layer ``blob`` into ``dest`` (which must not exist yet) via ``scratch``.

    ``what`` names the layer in messages (image reference and digest). If another
    unpack of the same layer finished first, its directory is kept and ours dropped.
    """
    work = Path(tempfile.mkdtemp(prefix="unpack-", dir=scratch))
    try:
        os.chmod(work, 0o755)
        with open(blob, "rb") as raw:
            stream = _HashingReader(_decompressed(raw))
            try:
                _extract(stream, work, what)
                stream.drain()
            except (tarfile.TarError, EOFError, zlib.error, zstandard.ZstdError) as exc:
                raise LayerError(f"{what}: not a valid tar archive: {exc}") from None
            except gzip.BadGzipFile as exc:
                raise LayerError(f"{what}: not a valid gzip stream: {exc}") from None
        actual = "sha256:" + stream.hash.hexdigest()
        if actual != diff_id:
            raise LayerError(
                f"{what}: uncompressed digest is {actual}, the image config says {diff_id}"
            )
        usage = disk_usage(work)
        try:
            os.rename(work, dest)
        except OSError as exc:
            if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST) or not dest.is_dir():
                raise
            log.debug("%s: unpacked concurrently, keeping the first copy", what)
            _remove_tree(work)
        return usage
    except BaseException:
        _remove_tree(work)
        raise


def _remove_tree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


def disk_usage(root: Path) -> LayerUsage:
    """Allocated bytes and inodes under ``root`` (hard links counted once; no symlinks followed)."""
    seen: set[int] = set()
    total = 0
    stack = [str(root)]
    st = os.lstat(root)
    seen.add(st.st_ino)
    total += st.st_blocks * 512
    while stack:
        with os.scandir(stack.pop()) as it:
            for entry in it:
                st = entry.stat(follow_symlinks=False)
                if st.st_ino in seen:
                    continue
                seen.add(st.st_ino)
                total += st.st_blocks * 512
                if stat.S_ISDIR(st.st_mode):
                    stack.append(entry.path)
    return LayerUsage(bytes=total, inodes=len(seen))


# -- extraction ---------------------------------------------------------------------


def clean_path(name: str, what: str) -> list[str]:
    """The components of a tar member name, refusing anything that could leave the root."""
    if "\x00" in name:
        raise LayerError(f"{what}: entry {name!r} contains a NUL byte")
    if name.startswith("/"):
        raise LayerError(f"{what}: entry {name!r} is an absolute path")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise LayerError(f"{what}: entry {name!r} has a '..' component")
    return parts


class _Extractor:
    def __init__(self, root_fd: int, what: str) -> None:
        self.root_fd = root_fd
        self.what = what
        self.as_root = os.geteuid() == 0
        self.dirs: dict[tuple[str, ...], tarfile.TarInfo] = {}

    # -- safe path resolution -------------------------------------------------------

    def open_dir(self, parts: list[str], *, create: bool, name: str) -> int:
        """A descriptor of the directory ``parts`` below the root, never through a symlink."""
        fd = os.dup(self.root_fd)
        try:
            for i, part in enumerate(parts):
                try:
                    child = os.open(part, _DIR_FLAGS, dir_fd=fd)
                except FileNotFoundError:
                    if not create:
                        raise LayerError(
                            f"{self.what}: entry {name!r} refers to {'/'.join(parts[: i + 1])!r}, "
                            "which is not in the layer"
                        ) from None
                    os.mkdir(part, 0o755, dir_fd=fd)
                    child = os.open(part, _DIR_FLAGS, dir_fd=fd)
                except OSError as exc:
                    if exc.errno not in (errno.ELOOP, errno.ENOTDIR):
                        raise
                    raise self._not_a_dir(fd, part, "/".join(parts[: i + 1]), name) from None
                os.close(fd)
                fd = child
            return fd
        except BaseException:
            os.close(fd)
            raise

    def _not_a_dir(self, fd: int, part: str, path: str, name: str) -> LayerError:
        st = os.stat(part, dir_fd=fd, follow_symlinks=False)
        if stat.S_ISLNK(st.st_mode):
            target = os.readlink(part, dir_fd=fd)
            return LayerError(
                f"{self.what}: entry {name!r} goes through the symlink {path!r} -> {target!r}; "
                "refusing to follow symlinks while unpacking"
            )
        return LayerError(f"{self.what}: entry {name!r} needs {path!r} to be a directory")

    def remove(self, parent: int, name: str, *, keep_dir: bool = False) -> None:
        """Remove ``name`` in ``parent`` if it exists (a directory only unless ``keep_dir``)."""
        try:
            st = os.stat(name, dir_fd=parent, follow_symlinks=False)
        except FileNotFoundError:
            return
        if stat.S_ISDIR(st.st_mode):
            if not keep_dir:
                shutil.rmtree(name, dir_fd=parent)
        else:
            os.unlink(name, dir_fd=parent)

    # -- attributes ---------------------------------------------------------------

    def _xattrs(self, target: int | str, member: tarfile.TarInfo) -> None:
        for key, value in member.pax_headers.items():
            if not key.startswith(_XATTR_PAX):
                continue
            attr = key[len(_XATTR_PAX) :]
            if attr.startswith("trusted.overlay."):
                continue  # overlay metadata comes only from whiteout conversion
            try:
                os.setxattr(target, attr, value.encode("utf-8", "surrogateescape"))
            except OSError as exc:
                log.warning("%s: %s: cannot set xattr %s: %s", self.what, member.name, attr, exc)

    def _times(self, member: tarfile.TarInfo) -> tuple[int, int]:
        ns = int(float(member.mtime) * 1_000_000_000)
        return ns, ns

    def finish_fd(self, fd: int, member: tarfile.TarInfo) -> None:
        """Owner, mode, xattrs and times of an open file or directory."""
        if self.as_root:
            os.fchown(fd, member.uid, member.gid)
        os.fchmod(fd, member.mode & 0o7777)  # after chown, which clears set-id bits
        self._xattrs(fd, member)
        os.utime(fd, ns=self._times(member))

    def finish_name(self, parent: int, name: str, member: tarfile.TarInfo, *, link: bool) -> None:
        """The same for a symlink or special file, by name (never following a symlink)."""
        if self.as_root:
            os.chown(name, member.uid, member.gid, dir_fd=parent, follow_symlinks=False)
        if not link:
            # a node this extraction just made in a directory no one else writes to
            os.chmod(name, member.mode & 0o7777, dir_fd=parent)
        os.utime(name, ns=self._times(member), dir_fd=parent, follow_symlinks=False)

    # -- members ------------------------------------------------------------------

    def member(self, tar: tarfile.TarFile, member: tarfile.TarInfo) -> None:
        parts = clean_path(member.name, self.what)
        if not parts:
            if member.isdir():
                self.dirs[()] = member  # "./": the layer root's own attributes
            return
        base = parts[-1]
        parent = self.open_dir(parts[:-1], create=True, name=member.name)
        try:
            if base == OPAQUE_MARKER:
                try:
                    os.setxattr(parent, OPAQUE_XATTR, b"y")
                except OSError as exc:
                    raise LayerError(
                        f"{self.what}: cannot mark {'/'.join(parts[:-1]) or '/'} opaque "
                        f"({OPAQUE_XATTR} needs root): {exc.strerror}"
                    ) from None
            elif base.startswith(WHITEOUT_PREFIX + WHITEOUT_PREFIX):
                log.debug("%s: skipping %s", self.what, member.name)  # aufs metadata
            elif base.startswith(WHITEOUT_PREFIX):
                self._whiteout(parent, base[len(WHITEOUT_PREFIX) :], member.name)
            elif member.isdir():
                self.remove(parent, base, keep_dir=True)
                with contextlib.suppress(FileExistsError):
                    os.mkdir(base, 0o700, dir_fd=parent)
                self.dirs[tuple(parts)] = member  # attributes once its children are in
            elif member.isreg():
                self._file(tar, parent, base, member)
            elif member.issym():
                self.remove(parent, base)
                os.symlink(member.linkname, base, dir_fd=parent)
                self.finish_name(parent, base, member, link=True)
            elif member.islnk():
                self._hardlink(parent, base, member)
            elif member.ischr() or member.isblk() or member.isfifo():
                self._node(parent, base, member)
            else:
                raise LayerError(
                    f"{self.what}: entry {member.name!r} has unsupported type {member.type!r}"
                )
        finally:
            os.close(parent)

    def _whiteout(self, parent: int, target: str, name: str) -> None:
        if target in ("", ".", "..") or "/" in target:
            raise LayerError(f"{self.what}: whiteout {name!r} names no file")
        self.remove(parent, target)
        try:
            os.mknod(target, stat.S_IFCHR | 0o000, os.makedev(0, 0), dir_fd=parent)
        except PermissionError:
            raise LayerError(
                f"{self.what}: whiteout {name!r}: making an overlay whiteout needs root"
            ) from None

    def _file(self, tar: tarfile.TarFile, parent: int, base: str, member: tarfile.TarInfo) -> None:
        self.remove(parent, base)
        fd = os.open(
            base, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600,
            dir_fd=parent,
        )  # fmt: skip
        try:
            source = tar.extractfile(member)
            if source is not None:
                with os.fdopen(os.dup(fd), "wb", closefd=True) as out:
                    shutil.copyfileobj(source, out, _COPY_CHUNK)
            self.finish_fd(fd, member)
        finally:
            os.close(fd)

    def _hardlink(self, parent: int, base: str, member: tarfile.TarInfo) -> None:
        if member.linkname.startswith("/"):
            raise LayerError(
                f"{self.what}: hard link {member.name!r} -> {member.linkname!r} is absolute"
            )
        target = clean_path(member.linkname, self.what)
        if not target:
            raise LayerError(f"{self.what}: hard link {member.name!r} has no target")
        source_dir = self.open_dir(target[:-1], create=False, name=member.name)
        try:
            try:
                st = os.stat(target[-1], dir_fd=source_dir, follow_symlinks=False)
            except FileNotFoundError:
                raise LayerError(
                    f"{self.what}: hard link {member.name!r} -> {member.linkname!r}: "
                    "target is not in the layer"
                ) from None
            if stat.S_ISDIR(st.st_mode):
                raise LayerError(f"{self.what}: hard link {member.name!r} to a directory")
            self.remove(parent, base)
            os.link(
                target[-1], base, src_dir_fd=source_dir, dst_dir_fd=parent, follow_symlinks=False
            )
        finally:
            os.close(source_dir)

    def _node(self, parent: int, base: str, member: tarfile.TarInfo) -> None:
        kind = stat.S_IFCHR if member.ischr() else stat.S_IFBLK if member.isblk() else stat.S_IFIFO
        self.remove(parent, base)
        try:
            os.mknod(
                base, kind | 0o600, os.makedev(member.devmajor, member.devminor), dir_fd=parent
            )
        except PermissionError:
            log.warning("%s: skipping device %s (needs root)", self.what, member.name)
            return
        self.finish_name(parent, base, member, link=False)

    def finish_dirs(self) -> None:
        """Directory owners, modes and times, deepest first (children change a dir's mtime)."""
        for parts in sorted(self.dirs, key=len, reverse=True):
            member = self.dirs[parts]
            fd = self.open_dir(list(parts), create=False, name=member.name)
            try:
                self.finish_fd(fd, member)
            finally:
                os.close(fd)


def _extract(stream: _HashingReader, root: Path, what: str) -> None:
    root_fd = os.open(root, _DIR_FLAGS)
    try:
        extractor = _Extractor(root_fd, what)
        # "r|": a forward-only stream, the only way to hash while reading
        with tarfile.open(fileobj=stream, mode="r|") as tar:  # type: ignore[call-overload]
            for member in tar:
                extractor.member(tar, member)
        extractor.finish_dirs()
    finally:
        os.close(root_fd)
