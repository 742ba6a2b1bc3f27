"""What the native runtime persists: every sandbox and container, as JSON, before it replies.

Files are written atomically (temporary file, fsync, rename) under
``<root>/state/{sandboxes,containers}/<id>.json``; a crash leaves either the old
or the new file, never half of one.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import os
import threading
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

from runtimes.base import model as m

T = TypeVar("T")


def to_jsonable(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, Mapping):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, tuple | list):
        return [to_jsonable(v) for v in value]
    return value


def from_jsonable(cls: Any, data: Any) -> Any:
    """Rebuild a (nested) dataclass of :mod:`runtimes.base.model` from :func:`to_jsonable`."""
    origin = typing.get_origin(cls)
    if origin in (typing.Union, types.UnionType):
        options = [a for a in typing.get_args(cls) if a is not type(None)]
        if data is None:
            return None
        return from_jsonable(options[0], data)
    if origin is tuple:
        args = typing.get_args(cls)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(from_jsonable(args[0], v) for v in data)
        return tuple(from_jsonable(a, v) for a, v in zip(args, data, strict=True))
    if origin in (dict, Mapping, typing.Mapping) or cls in (dict, Mapping):
        return dict(data)
    if isinstance(cls, type) and issubclass(cls, enum.Enum):
        return cls(data)
    if dataclasses.is_dataclass(cls):
        hints = typing.get_type_hints(cls, vars(m))
        kwargs = {
            f.name: from_jsonable(hints[f.name], data[f.name])
            for f in dataclasses.fields(cls)
            if f.name in data
        }
        factory: Any = cls
        return factory(**kwargs)
    return data


def _write_atomic(path: Path, payload: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    # One temporary name per writer: two writes of the same record never share a file.
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{threading.get_ident()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, payload)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.rename(tmp, path)


class StateStore:
    def __init__(self, root: Path) -> None:
        self.root = root / "state"

    def _path(self, kind: str, object_id: str) -> Path:
        return self.root / kind / f"{object_id}.json"

    def save(self, kind: str, object_id: str, record: Mapping[str, Any]) -> None:
        _write_atomic(self._path(kind, object_id), json.dumps(record, sort_keys=True).encode())

    def delete(self, kind: str, object_id: str) -> None:
        self._path(kind, object_id).unlink(missing_ok=True)

    def load_all(self, kind: str) -> list[dict[str, Any]]:
        directory = self.root / kind
        if not directory.is_dir():
            return []
        records = []
        for path in sorted(directory.glob("*.json")):
            with open(path, encoding="utf-8") as f:
                records.append(json.load(f))
        for tmp in directory.glob(".*.tmp"):
            tmp.unlink(missing_ok=True)  # a write that a crash interrupted
        return records
