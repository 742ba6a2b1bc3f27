"""Where the CRI state lives: Docker labels on the containers themselves.

The runtime keeps no database. Everything the CRI reports about a sandbox or a
container is written, at creation, into the labels of its Docker container, and
read back from there (after a restart of the runtime server as well):

- ``io.minikubelet.cri.type``: ``sandbox`` (the infra container) or ``container``
- ``io.minikubelet.cri.schema``: version of this schema (``1``)
- ``io.minikubelet.cri.spec``: the whole CRI request as JSON, a PodSandboxSpec or a
  ContainerSpec (metadata, labels, annotations, mounts, security, log path ...)
- ``io.minikubelet.cri.created``: creation time, ns since the epoch (list and status agree)
- containers only: ``io.minikubelet.cri.sandbox`` (the sandbox ID),
  ``io.minikubelet.cri.log-path`` (the absolute CRI log file),
  ``io.minikubelet.cri.image`` (the normalised reference that resolved the image) and
  ``io.minikubelet.cri.repo-digest`` (that image's ``repository@sha256:...``)

The CRI labels are also copied verbatim, so that dockerd filters label
selectors itself; they are read back from the JSON spec only, since a Docker
container also carries the labels of its image. CRI labels may not use the
reserved ``io.minikubelet.cri.`` prefix.

Docker names follow dockershim: ``k8s_POD_<pod>_<namespace>_<uid>_<attempt>`` for
sandboxes and ``k8s_<container>_<pod>_<namespace>_<uid>_<attempt>`` for containers,
so dockerd itself refuses a second sandbox or container of the same name.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import types
import typing
from collections.abc import Mapping
from typing import Any, Final, TypeVar

from minikubelet.errors import InvalidArgument
from runtimes.base import model as m

PREFIX: Final = "io.minikubelet.cri."
TYPE: Final = PREFIX + "type"
SCHEMA: Final = PREFIX + "schema"
SPEC: Final = PREFIX + "spec"
CREATED: Final = PREFIX + "created"
SANDBOX_ID: Final = PREFIX + "sandbox"
LOG_PATH: Final = PREFIX + "log-path"
IMAGE_NAME: Final = PREFIX + "image"
REPO_DIGEST: Final = PREFIX + "repo-digest"
SCHEMA_VERSION: Final = "1"
SANDBOX: Final = "sandbox"
CONTAINER: Final = "container"
NAME_PREFIX: Final = "k8s"

T = TypeVar("T")


def sandbox_name(md: m.SandboxMetadata) -> str:
    return f"{NAME_PREFIX}_POD_{md.name}_{md.namespace}_{md.uid}_{md.attempt}"


def container_name(md: m.ContainerMetadata, pod: m.SandboxMetadata) -> str:
    return f"{NAME_PREFIX}_{md.name}_{pod.name}_{pod.namespace}_{pod.uid}_{md.attempt}"


def check_user_labels(labels: Mapping[str, str], what: str) -> None:
    for key in labels:
        if key.startswith(PREFIX):
            raise InvalidArgument(f"{what} label {key!r} uses the reserved prefix {PREFIX!r}")


def sandbox_labels(spec: m.PodSandboxSpec, created_ns: int) -> dict[str, str]:
    check_user_labels(spec.labels, "PodSandboxConfig")
    return {
        **spec.labels,
        TYPE: SANDBOX,
        SCHEMA: SCHEMA_VERSION,
        SPEC: encode(spec),
        CREATED: str(created_ns),
    }


def container_labels(
    spec: m.ContainerSpec,
    *,
    sandbox_id: str,
    log_path: str,
    image_name: str,
    repo_digest: str,
    created_ns: int,
) -> dict[str, str]:
    check_user_labels(spec.labels, "ContainerConfig")
    return {
        **spec.labels,
        TYPE: CONTAINER,
        SCHEMA: SCHEMA_VERSION,
        SPEC: encode(spec),
        CREATED: str(created_ns),
        SANDBOX_ID: sandbox_id,
        LOG_PATH: log_path,
        IMAGE_NAME: image_name,
        REPO_DIGEST: repo_digest,
    }


def selector(label_selector: Mapping[str, str]) -> list[str]:
    """A CRI label selector as dockerd's ``label`` filters (``key=value``)."""
    return [f"{k}={v}" for k, v in sorted(label_selector.items())]


# -- the spec codec: frozen dataclasses of runtimes.base.model <-> JSON ----------------------


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    return value


def encode(spec: Any) -> str:
    return json.dumps(_plain(spec), sort_keys=True, separators=(",", ":"))


def _build(tp: Any, value: Any) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        hints = typing.get_type_hints(tp)
        kwargs = {
            f.name: _build(hints[f.name], value[f.name])
            for f in dataclasses.fields(tp)
            if f.init and f.name in value
        }
        return tp(**kwargs)
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_build(args[0], v) for v in value)
        return tuple(_build(a, v) for a, v in zip(args, value, strict=True))
    if origin in (dict, Mapping, typing.Mapping):
        return {str(k): _build(args[1], v) for k, v in value.items()}
    if origin in (typing.Union, types.UnionType):
        if value is None:
            return None
        inner = [a for a in args if a is not type(None)]
        return _build(inner[0], value)
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return tp(value)
    if tp is int and not isinstance(value, int):
        raise ValueError(f"expected an int, got {value!r}")
    if tp is str and not isinstance(value, str):
        raise ValueError(f"expected a string, got {value!r}")
    return value


def decode(cls: type[T], text: str) -> T:
    """The dataclass ``cls`` from :func:`encode`'s JSON; ValueError if it does not fit."""
    try:
        result: T = _build(cls, json.loads(text))
    except (KeyError, TypeError, AttributeError) as exc:
        raise ValueError(f"not a {cls.__name__}: {exc!r}") from None
    return result
