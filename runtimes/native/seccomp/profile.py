"""Seccomp profiles for the OCI spec: RuntimeDefault, Localhost files, and their translation.

A profile may be written in the engine shape (moby/containerd: ``archMap``,
rules with ``name`` or ``names``, ``includes``/``excludes`` gated on
capabilities and architectures) or already in the OCI shape
(``architectures``, ``syscalls[].names``). :func:`to_oci` turns either into the
plain OCI ``linux.seccomp`` object for one container's capabilities and
architecture. Everything here is pure except :func:`load_localhost_profile`.
"""

from __future__ import annotations

import json
import os
import posixpath
from collections.abc import Collection, Mapping
from typing import Any, Final

from minikubelet.errors import InvalidArgument
from runtimes.native.seccomp.default import DEFAULT_PROFILE

UNCONFINED: Final = "unconfined"
RUNTIME_DEFAULT: Final = "runtime/default"
DOCKER_DEFAULT: Final = "docker/default"  # the deprecated spelling of runtime/default
LOCALHOST_PREFIX: Final = "localhost/"

_RULE_KEYS: Final = ("names", "action", "args", "errnoRet")


def _gate_open(rule: Mapping[str, Any], caps: Collection[str], arch: str) -> bool:
    includes = rule.get("includes") or {}
    excludes = rule.get("excludes") or {}
    if any(cap not in caps for cap in includes.get("caps", ())):
        return False
    if includes.get("arches") and arch not in includes["arches"]:
        return False
    if any(cap in caps for cap in excludes.get("caps", ())):
        return False
    return not (excludes.get("arches") and arch in excludes["arches"])


def to_oci(profile: Mapping[str, Any], *, caps: Collection[str], arch: str) -> dict[str, Any]:
    """The OCI ``linux.seccomp`` object of ``profile`` for a container with ``caps`` on ``arch``.

    Raises InvalidArgument when the profile is not a seccomp profile.
    """
    action = profile.get("defaultAction")
    if not isinstance(action, str) or not action.startswith("SCMP_ACT_"):
        raise InvalidArgument("seccomp profile has no valid defaultAction")
    out: dict[str, Any] = {"defaultAction": action}
    if "defaultErrnoRet" in profile:
        out["defaultErrnoRet"] = profile["defaultErrnoRet"]
    if "architectures" in profile:
        out["architectures"] = list(profile["architectures"])
    elif "archMap" in profile:
        arch_map = profile["archMap"]
        if isinstance(arch_map, Mapping):  # our shape: {goarch: [SCMP_ARCH_...]}
            out["architectures"] = list(arch_map.get(arch, ()))
        else:  # moby's shape: [{"architecture": ..., "subArchitectures": [...]}]
            wanted = _arch_names(arch)
            for entry in arch_map:
                if entry.get("architecture") in wanted:
                    out["architectures"] = [
                        entry["architecture"],
                        *entry.get("subArchitectures", ()),
                    ]
                    break
    if "flags" in profile:
        out["flags"] = list(profile["flags"])
    rules = profile.get("syscalls") or []
    if not isinstance(rules, list):
        raise InvalidArgument("seccomp profile: syscalls must be a list")
    syscalls = []
    for rule in rules:
        if not isinstance(rule, Mapping) or not _gate_open(rule, caps, arch):
            continue
        names = list(rule.get("names") or ())
        if rule.get("name"):
            names.append(rule["name"])
        if not names:
            continue
        oci_rule = {k: rule[k] for k in _RULE_KEYS if k in rule}
        oci_rule["names"] = names
        syscalls.append(oci_rule)
    out["syscalls"] = syscalls
    return out


def _arch_names(goarch: str) -> set[str]:
    return set(DEFAULT_PROFILE["archMap"].get(goarch, ()))


def runtime_default(*, caps: Collection[str], arch: str) -> dict[str, Any]:
    """minikubelet's RuntimeDefault profile for a container with ``caps`` on ``arch``."""
    return to_oci(DEFAULT_PROFILE, caps=caps, arch=arch)


def localhost_profile_path(ref: str, root: str) -> str:
    """The file a ``localhost/<path>`` reference names.

    An absolute ``<path>`` is the file itself, wherever it lies, as containerd and
    CRI-O load it: the kubelet sends ``<its root-dir>/seccomp/<localhostProfile>``
    and crictl users name their own files. A relative one is taken under ``root``
    and may not leave it.
    """
    path = ref.removeprefix(LOCALHOST_PREFIX)
    if not path:
        raise InvalidArgument("localhost seccomp profile: empty path")
    if "\x00" in path:
        raise InvalidArgument("localhost seccomp profile: NUL in path")
    if posixpath.isabs(path):
        return posixpath.normpath(path)
    root = posixpath.normpath(root)
    full = posixpath.normpath(posixpath.join(root, path))
    if not full.startswith(root.rstrip("/") + "/"):
        raise InvalidArgument(
            f"localhost seccomp profile {path!r} is outside the profile root {root}"
        )
    return full


def load_localhost_profile(ref: str, root: str) -> dict[str, Any]:
    """Read, parse and check a Localhost profile (blocking: call it through
    ``asyncio.to_thread``).

    A file that is missing, unreadable, not JSON or not a seccomp profile is
    InvalidArgument naming the file, as CRI-O answers CreateContainer.
    """
    path = localhost_profile_path(ref, root)
    if not posixpath.isabs(ref.removeprefix(LOCALHOST_PREFIX)):
        real_root = os.path.realpath(root)
        if not os.path.realpath(path).startswith(real_root.rstrip("/") + "/"):
            raise InvalidArgument(f"localhost seccomp profile {path} resolves outside {real_root}")
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except FileNotFoundError:
        raise InvalidArgument(f"localhost seccomp profile {path}: no such file") from None
    except (OSError, ValueError) as err:
        raise InvalidArgument(f"localhost seccomp profile {path}: {err}") from None
    if not isinstance(data, dict):
        raise InvalidArgument(f"localhost seccomp profile {path}: not a JSON object")
    try:
        to_oci(data, caps=(), arch="amd64")
    except (InvalidArgument, TypeError, AttributeError, KeyError) as err:
        message = err.message if isinstance(err, InvalidArgument) else f"malformed ({err})"
        raise InvalidArgument(f"localhost seccomp profile {path}: {message}") from None
    return data
