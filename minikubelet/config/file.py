"""The file source: static pods from a manifest directory (or one manifest file).

Follows the kubelet's ``pkg/kubelet/config/file.go`` and ``file_linux.go``:

* the path is listed at start, whenever the watcher reports a change, and every ``period``
  seconds; each listing is sent as a ``SET`` of source ``file``;
* in a directory only entries whose names do not start with ``.`` are read, in sorted order;
  subdirectories are not entered; a file that does not decode is reported and left out, the
  others still count;
* a missing path gives an empty ``SET`` (so the source still counts as seen);
* when the path is a single file that does not decode, nothing is sent and the pods already
  configured stay, as in the kubelet.

Every listing reads every file, but decodes only those whose bytes changed since the last
listing: what a file's bytes gave (its pod or its error) is kept and used again while the
file holds the same bytes, so a change in one manifest does not cost decoding, defaulting
and validating all the others.
"""

from __future__ import annotations

import asyncio
import logging
import os
import stat
from collections.abc import Callable
from contextlib import aclosing
from dataclasses import dataclass
from pathlib import Path

from watchfiles import Change, awatch

from minikubelet.config.manifest import ManifestError, apply_static_defaults, decode_manifest
from minikubelet.config.types import FILE_SOURCE, Pod, PodOperation, SourceUpdate

log = logging.getLogger(__name__)

#: How long the watcher waits for a quiet moment after a change before the path is listed
#: again (watchfiles' ``step``; it also polls the stop event this often). The kubelet lists at
#: once on each inotify event; a few milliseconds still group the events of one rename or
#: write, and a listing that catches a file half-written is followed by another.
WATCH_STEP_MS = 5
#: At most this long is spent grouping changes that keep coming (watchfiles' ``debounce``).
WATCH_DEBOUNCE_MS = 50


@dataclass(frozen=True, slots=True)
class _Decoded:
    """What one version of a file (its bytes) gave."""

    data: bytes
    result: Pod | ManifestError


@dataclass(frozen=True, slots=True)
class _Listing:
    pods: list[Pod]
    errors: dict[Path, ManifestError]
    send: bool


class _WatchControl:
    """The ``stop_event`` handed to ``awatch``; its watcher thread polls it every step.

    The first poll after :meth:`rearm` shows the watch is in place, so ``on_armed`` is called
    (on the loop) to list again: a change made before the watch existed is not missed.
    """

    def __init__(self, *, on_armed: Callable[[], None]) -> None:
        self._loop = asyncio.get_running_loop()
        self._on_armed = on_armed
        self._armed = False
        self.stopped = False

    def rearm(self) -> None:
        self._armed = False

    def is_set(self) -> bool:
        if not self._armed:
            self._armed = True
            self._loop.call_soon_threadsafe(self._on_armed)
        return self.stopped

    def set(self) -> None:
        self.stopped = True


class FileSource:
    """Watches ``path`` and sends ``SET`` snapshots of its pods.

    Constructing one has no side effects; :meth:`run` does the work. ``errors`` holds, after
    each listing, the manifests that could not be used, for callers to show. ``validate``, when
    given, checks each defaulted pod further (the kubelet's typed reading of it); a
    ``ValueError`` it raises rejects that file like a decoding error, as the kubelet's file
    source drops a pod that fails validation and names the file.
    """

    def __init__(
        self,
        path: Path,
        *,
        node_name: str,
        period: float = 20.0,
        validate: Callable[[Pod], object] | None = None,
    ) -> None:
        self.path = path
        self.node_name = node_name
        self.period = period
        self.validate = validate
        self.errors: dict[Path, ManifestError] = {}
        self._watching_dir = True
        self._decoded: dict[Path, _Decoded] = {}

    async def run(self, updates: asyncio.Queue[SourceUpdate]) -> None:
        """List at once, then on every change and every ``period`` seconds, until cancelled."""
        wake = asyncio.Event()
        control = _WatchControl(on_armed=wake.set)
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(self._watch(wake, control), name=f"file-source-watch:{self.path}")
            tasks.create_task(self._tick(wake, control), name=f"file-source-resync:{self.path}")
            while True:
                await self.list_once(updates)
                await wake.wait()
                wake.clear()

    async def list_once(self, updates: asyncio.Queue[SourceUpdate]) -> None:
        """List the path once and send the snapshot (if there is one to send)."""
        listing = await asyncio.to_thread(self._list)
        for path, error in listing.errors.items():
            if self.errors.get(path) != error:
                log.warning(
                    "can't use manifest file=%s line=%s: %s", path, error.line, error.reason
                )
        self.errors = listing.errors
        if listing.send:
            await updates.put(SourceUpdate(PodOperation.SET, listing.pods, FILE_SOURCE))

    async def _tick(self, wake: asyncio.Event, control: _WatchControl) -> None:
        try:
            while True:
                await asyncio.sleep(self.period)
                wake.set()
        finally:
            # On cancellation this also releases the watcher thread, which polls ``control``.
            control.set()

    async def _watch(self, wake: asyncio.Event, control: _WatchControl) -> None:
        while not control.stopped:
            is_dir = await asyncio.to_thread(self.path.is_dir)
            self._watching_dir = is_dir
            target = self.path if is_dir else self.path.parent
            control.rearm()
            try:
                watcher = awatch(
                    target,
                    watch_filter=self._relevant_change,
                    recursive=False,
                    stop_event=control,
                    step=WATCH_STEP_MS,
                    debounce=WATCH_DEBOUNCE_MS,
                )
                async with aclosing(watcher):
                    async for changes in watcher:
                        log.debug("manifest change seen path=%s changes=%d", target, len(changes))
                        wake.set()
                        if is_dir != await asyncio.to_thread(self.path.is_dir):
                            break  # the path turned from file to directory or back: rewatch
            except OSError as exc:
                log.warning("can't watch path=%s: %s; relying on the periodic listing", target, exc)
                await asyncio.sleep(self.period)

    def _relevant_change(self, change: Change, raw: str) -> bool:
        # The watch is never recursive: for a directory every entry reported is a direct
        # child; for a single file its parent directory is watched and only its name counts.
        name = os.path.basename(raw)
        if name.startswith("."):
            return False
        return self._watching_dir or name == self.path.name

    def _list(self) -> _Listing:
        try:
            info = os.stat(self.path)
        except FileNotFoundError:
            log.info("manifest path=%s does not exist; no static pods", self.path)
            return _Listing([], {}, send=True)
        if stat.S_ISDIR(info.st_mode):
            return self._list_dir()
        if stat.S_ISREG(info.st_mode):
            try:
                return _Listing([self._read(self.path)], {}, send=True)
            except ManifestError as error:
                return _Listing([], {self.path: error}, send=False)
        log.warning("manifest path=%s is neither a directory nor a regular file", self.path)
        return _Listing([], {}, send=False)

    def _list_dir(self) -> _Listing:
        pods: list[Pod] = []
        errors: dict[Path, ManifestError] = {}
        decoded: dict[Path, _Decoded] = {}
        for name in sorted(os.listdir(self.path)):
            if name.startswith("."):
                continue
            path = self.path / name
            try:
                info = os.stat(path)
            except OSError as exc:
                log.warning("can't stat manifest file=%s: %s", path, exc)
                continue
            if stat.S_ISDIR(info.st_mode):
                log.debug("not recursing into path=%s", path)
            elif stat.S_ISREG(info.st_mode):
                result = self._decode(path, decoded)
                if isinstance(result, ManifestError):
                    errors[path] = result
                else:
                    pods.append(result)
            else:
                log.warning("manifest path=%s is neither a directory nor a regular file", path)
        self._decoded = decoded
        return _Listing(pods, errors, send=True)

    def _decode(self, path: Path, decoded: dict[Path, _Decoded]) -> Pod | ManifestError:
        """The file's pod or error, noted in ``decoded``; taken from the last listing when
        the file holds the same bytes as then."""
        try:
            data = path.read_bytes()
        except OSError as exc:
            return ManifestError(str(path), None, f"can't read: {exc.strerror or exc}")
        known = self._decoded.get(path)
        if known is not None and known.data == data:
            decoded[path] = known
            return known.result
        result: Pod | ManifestError
        try:
            result = self._pod(path, data)
        except ManifestError as error:
            result = error
        decoded[path] = _Decoded(data, result)
        return result

    def _read(self, path: Path) -> Pod:
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise ManifestError(str(path), None, f"can't read: {exc.strerror or exc}") from exc
        return self._pod(path, data)

    def _pod(self, path: Path, data: bytes) -> Pod:
        """The defaulted (and validated) pod of the manifest ``data`` read from ``path``."""
        (pod,) = decode_manifest(data, str(path))
        pod = apply_static_defaults(
            pod, node_name=self.node_name, source=FILE_SOURCE, source_path=str(path)
        )
        if self.validate is not None:
            try:
                self.validate(pod)
            except ValueError as exc:
                raise ManifestError(str(path), None, str(exc)) from None
        return pod
