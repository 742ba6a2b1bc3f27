"""The files of ``configMap``, ``secret`` and ``projected`` volumes, as the kubelet makes them.

Each function returns a payload, {relative path: (content, mode)}, for the atomic
writer; nothing here touches the disk. The objects come from an
:class:`~minikubelet.kubeapi.objects.ObjectSource` (the API server in API mode).

As upstream's ``MakePayload`` (``pkg/volume/configmap``, ``pkg/volume/secret``) and
the projected volume's ``collectData``:

* no ``items``: every key is a file named by the key (a ConfigMap's ``data`` and
  ``binaryData``), with ``defaultMode`` (0644 when not given, for secrets too);
* ``items``: only the keys listed, each at its ``path`` with its ``mode`` or the default;
  a key the object lacks fails (``configmap references non-existent config key: K``)
  unless the volume is ``optional``;
* a missing object fails (``configmap "NAME" not found``) unless ``optional``, which
  gives an empty volume (or no files from that source);
* a projected volume gathers its sources (configMap, secret, downwardAPI,
  serviceAccountToken) into one payload under its own ``defaultMode``; a source that
  fails does not stop the others from being tried, and the errors are reported together.

Paths are checked as the atomic writer checks them: relative, no ``..`` component.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Final

from minikubelet.api.pod import Pod
from minikubelet.errors import MinikubeletError
from minikubelet.kubeapi.objects import ObjectError, ObjectSource, TokenSpec
from minikubelet.volumes.atomic import Payload, PayloadPathError, validate_payload_path
from minikubelet.volumes.ownership import pod_fs_group, pod_fs_user

DEFAULT_MODE: Final = 0o644
TOKEN_OWNED_MODE: Final = 0o600
DEFAULT_TOKEN_EXPIRATION: Final = 3600


class ProjectionError(Exception):
    """The files of a volume cannot be made; ``message`` is the kubelet's wording."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def _mode(value: object, default: int, what: str) -> int:
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 0o777:
        raise ProjectionError(f"{what}: mode must be between 0 and 0777 (decimal 0 to 511)")
    return value


def token_paths(source: Mapping[str, Any]) -> list[str]:
    """The paths of a ``projected`` volume's service account tokens."""
    return [
        str(entry["serviceAccountToken"].get("path", ""))
        for entry in source.get("sources") or ()
        if isinstance(entry, Mapping) and isinstance(entry.get("serviceAccountToken"), Mapping)
    ]


def _path(path: object, what: str) -> str:
    if not isinstance(path, str):
        raise ProjectionError(f"{what}: an item needs a path")
    try:
        validate_payload_path(path)
    except PayloadPathError as err:
        raise ProjectionError(f"{what}: {err.message}") from None
    return path


def items_payload(
    values: Mapping[str, bytes],
    items: object,
    default_mode: int,
    *,
    optional: bool,
    missing_key: str,
    what: str,
) -> Payload:
    """``MakePayload``: the files for one object's ``values`` (its keys' contents)."""
    payload: Payload = {}
    if not items:
        for key, data in values.items():
            payload[_path(key, what)] = (data, default_mode)
        return payload
    if not isinstance(items, list):
        raise ProjectionError(f"{what}: items must be a list")
    for item in items:
        if not isinstance(item, Mapping):
            raise ProjectionError(f"{what}: an item is not a mapping")
        key = str(item.get("key", ""))
        path = _path(item.get("path"), what)
        if key not in values:
            if optional:
                continue
            raise ProjectionError(f"{missing_key}: {key}")
        payload[path] = (values[key], _mode(item.get("mode"), default_mode, f"{what} {path}"))
    return payload


def _name(source: Mapping[str, Any], what: str) -> str:
    name = source.get("name")
    if not isinstance(name, str) or not name:
        raise ProjectionError(f"{what}: a name is required")
    return name


async def config_map_payload(
    pod: Pod,
    source: Mapping[str, Any],
    objects: ObjectSource,
    *,
    default_mode: int | None = None,
    max_age: float | None = None,
) -> Payload:
    """The files of a ``configMap`` volume (or a projected volume's configMap source)."""
    name = _name(source, "configMap")

    async def fetch() -> dict[str, bytes]:
        found = await objects.config_map(pod.namespace, name, max_age=max_age)
        values: dict[str, bytes] = {k: v.encode() for k, v in found.data.items()}
        values.update(found.binary_data)
        return values

    return await _object_payload(
        source,
        fetch,
        default_mode,
        what=f"configMap {name}",
        missing_key="configmap references non-existent config key",
    )


async def secret_payload(
    pod: Pod,
    source: Mapping[str, Any],
    objects: ObjectSource,
    *,
    default_mode: int | None = None,
    max_age: float | None = None,
) -> Payload:
    """The files of a ``secret`` volume (``secretName``), or a projected secret (``name``)."""
    name = source.get("secretName", source.get("name"))
    if not isinstance(name, str) or not name:
        raise ProjectionError("secret: a secretName is required")

    async def fetch() -> dict[str, bytes]:
        return dict((await objects.secret(pod.namespace, name, max_age=max_age)).data)

    return await _object_payload(
        source,
        fetch,
        default_mode,
        what=f"secret {name}",
        missing_key="references non-existent secret key",
    )


async def _object_payload(
    source: Mapping[str, Any],
    fetch: Callable[[], Awaitable[dict[str, bytes]]],
    default_mode: int | None,
    *,
    what: str,
    missing_key: str,
) -> Payload:
    """A ConfigMap's or Secret's files: its mode, its values (none when it is missing and
    optional), its items."""
    optional = source.get("optional") is True
    mode = _mode(
        source.get("defaultMode") if default_mode is None else default_mode, DEFAULT_MODE, what
    )
    try:
        values = await fetch()
    except ObjectError as err:
        if not (err.not_found and optional):
            raise ProjectionError(err.message) from None
        values = {}
    return items_payload(
        values, source.get("items"), mode, optional=optional, missing_key=missing_key, what=what
    )


async def token_payload(
    pod: Pod, source: Mapping[str, Any], objects: ObjectSource, *, mode: int
) -> Payload:
    """A projected ``serviceAccountToken``: the pod's service account's token at ``path``."""
    path = _path(source.get("path"), "serviceAccountToken")
    expiration = source.get("expirationSeconds", DEFAULT_TOKEN_EXPIRATION)
    if isinstance(expiration, bool) or not isinstance(expiration, int) or expiration < 600:
        raise ProjectionError("serviceAccountToken: expirationSeconds must be at least 600")
    audience = source.get("audience") or ""
    account = pod.spec.service_account_name or "default"
    spec = TokenSpec(account, audience=str(audience), expiration_seconds=expiration)
    try:
        token = await objects.service_account_token(pod, spec)
    except ObjectError as err:
        raise ProjectionError(err.message) from None
    return {path: (token.encode(), mode)}


async def projected_payload(
    pod: Pod,
    source: Mapping[str, Any],
    objects: ObjectSource,
    *,
    downward: Callable[[Mapping[str, Any]], Payload],
    max_age: float | None = None,
) -> Payload:
    """``collectData``: every source of a ``projected`` volume into one payload.

    ``downward`` makes a downwardAPI source's files (from ``{"items", "defaultMode"}``)
    and raises an exception with a ``message`` when it cannot.
    """
    mode = _mode(source.get("defaultMode"), DEFAULT_MODE, "projected")
    payload: Payload = {}
    errors: list[str] = []
    for entry in source.get("sources") or ():
        if not isinstance(entry, Mapping):
            errors.append("projected: a source is not a mapping")
            continue
        try:
            if isinstance(entry.get("configMap"), Mapping):
                payload.update(
                    await config_map_payload(
                        pod, entry["configMap"], objects, default_mode=mode, max_age=max_age
                    )
                )
            elif isinstance(entry.get("secret"), Mapping):
                payload.update(
                    await secret_payload(
                        pod, entry["secret"], objects, default_mode=mode, max_age=max_age
                    )
                )
            elif isinstance(entry.get("downwardAPI"), Mapping):
                downward_source = {
                    "items": entry["downwardAPI"].get("items") or [],
                    "defaultMode": mode,
                }
                payload.update(downward(downward_source))
            elif isinstance(entry.get("serviceAccountToken"), Mapping):
                # the kubelet writes it 0600 for an fsGroup (which makes it 0640) or fsUser
                owned = pod_fs_group(pod.spec.security_context) is not None
                owned = owned or pod_fs_user(pod) is not None
                payload.update(
                    await token_payload(
                        pod,
                        entry["serviceAccountToken"],
                        objects,
                        mode=TOKEN_OWNED_MODE if owned else mode,
                    )
                )
            else:
                kinds = ", ".join(sorted(entry)) or "nothing"
                errors.append(f"projected: unsupported source ({kinds})")
        except ProjectionError as err:
            errors.append(err.message)
        except MinikubeletError as err:  # the downward API's VolumeError
            errors.append(getattr(err, "message", str(err)))
    if errors:
        raise ProjectionError(errors[0] if len(errors) == 1 else "[" + ", ".join(errors) + "]")
    return payload
