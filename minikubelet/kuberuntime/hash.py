"""The container spec hash: how the kubelet notices that a running container's spec changed.

When the kubelet creates a container it stamps the hash of the spec into the
``io.kubernetes.container.hash`` annotation; on every sync it hashes the desired
spec again, and a running container whose stamp differs is killed and started anew.

The real kubelet hashes with FNV-32a over its Go JSON encoding, a value Python
cannot reproduce, so this hash only promises to be deterministic: the same spec
gives the same hex string in every process and on every run, and a change to any
field the hash covers gives a different one. It is the first 64 bits of the SHA-256
of a canonical JSON form of the container, written as lowercase hex without leading
zeros (the way the kubelet writes its uint64 with ``strconv.FormatUint(h, 16)``), so
it still parses as the kubelet's uint64.

What the canonical form covers:

* every field of the container as written in the manifest, **except**
  :data:`IGNORED_FIELDS`: ``resources`` and ``resizePolicy``. The kubelet applies a
  resource change to the running container in place (InPlacePodVerticalScaling)
  instead of restarting it, so a resize must not look like a new spec;
* with the API server's defaults filled in (``imagePullPolicy``,
  ``terminationMessagePath``, ``terminationMessagePolicy``, ``stdin``, ``stdinOnce``,
  ``tty``, a port's ``protocol``), so a manifest that spells a default out and one
  that leaves it implicit hash the same;
* with unset values dropped the way Go's ``omitempty`` drops them: a key whose value
  is null, ``""``, ``[]`` or ``{}`` counts as absent. List items are never dropped
  (an empty argument is an argument), and their order counts.

Since Kubernetes 1.31 the kubelet hashes only ``name`` and ``image``, because the API
server refuses any other change to a pod's containers. minikubelet also runs pods
from manifest files that can be edited in place, so it hashes the whole spec: an
edited command, env or probe restarts the container, as older kubelets did.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from typing import Any, Final

from minikubelet.api.pod import Container

#: Container fields whose change must not restart the container.
IGNORED_FIELDS: Final = frozenset({"resources", "resizePolicy"})

_HEX_UINT64: Final = re.compile(r"0*[0-9a-fA-F]{1,16}")


def _prune(value: Any) -> Any:
    if isinstance(value, Mapping):
        out = {}
        for key, item in value.items():
            pruned = _prune(item)
            if pruned is None or pruned == "" or pruned == [] or pruned == {}:
                continue
            out[str(key)] = pruned
        return out
    if isinstance(value, list | tuple):
        return [_prune(item) for item in value]
    return value


def canonical_container(container: Container) -> dict[str, Any]:
    """The JSON-ready form of ``container`` that :func:`hash_container` digests."""
    body: dict[str, Any] = {k: v for k, v in container.raw.items() if k not in IGNORED_FIELDS}
    body["name"] = container.name
    body["image"] = container.image
    body["imagePullPolicy"] = container.image_pull_policy.value
    body["terminationMessagePath"] = container.termination_message_path
    body["terminationMessagePolicy"] = container.termination_message_policy.value
    body["stdin"] = container.stdin
    body["stdinOnce"] = container.stdin_once
    body["tty"] = container.tty
    if container.ports:
        body["ports"] = [port.to_dict() for port in container.ports]
    pruned: dict[str, Any] = _prune(body)
    return pruned


def hash_container(container: Container) -> str:
    """The hex spec hash of ``container`` (see the module documentation for what it covers)."""
    text = json.dumps(
        canonical_container(container),
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
        allow_nan=False,
        default=str,
    )
    digest = hashlib.sha256(text.encode("utf-8")).hexdigest()
    return format(int(digest[:16], 16), "x")


def normalize_hash(text: str) -> str:
    """A stamped hash in the form :func:`hash_container` returns, or "" if it is not hex.

    The kubelet parses the annotation as a base-16 uint64 and falls back to 0 on error;
    here an unreadable stamp becomes "", which never equals a computed hash.
    """
    if not _HEX_UINT64.fullmatch(text):
        return ""
    return format(int(text, 16), "x")
