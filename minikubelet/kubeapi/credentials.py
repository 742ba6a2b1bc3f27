"""Image pull credentials from a pod's ``imagePullSecrets``, as the kubelet's keyring finds them.

A pull secret is a Secret of type ``kubernetes.io/dockerconfigjson`` (key
``.dockerconfigjson``: ``{"auths": {LOCATION: ENTRY}}``) or ``kubernetes.io/dockercfg``
(key ``.dockercfg``: ``{LOCATION: ENTRY}``). An entry has ``username``/``password`` or
``auth`` (base64 of ``username:password``, which wins), and may carry ``email``,
``identitytoken``, ``registrytoken`` and ``serveraddress`` as Docker writes them.

The :class:`Keyring` is ``credentialprovider.BasicDockerKeyring``: a location
(``https://`` optional, ``/v1/`` and ``/v2/`` path prefixes dropped) is keyed as
``host[:port][/path]``; an image's repository (``127.0.0.1:5000/team/app``,
``docker.io/library/busybox``) matches a key when the port is the same, the host has
as many dot-separated parts and each part matches as a glob (``*.example.com``
matches ``registry.example.com``, not ``example.com``), and the key's path is a
prefix of the repository's path. Keys are tried in reverse lexical order, so
``registry/team`` comes before ``registry``; every matching key's credentials are
returned, and the image manager tries them one after the other. A key for
``index.docker.io`` also serves Docker Hub images. No match: the pull goes without
credentials.

The secrets themselves come through a :class:`SecretGetter` (:class:`APISecretGetter`
reads them from the API server, which lets a node read only the secrets of pods bound
to it). A secret that cannot be fetched is skipped with the kubelet's
``FailedToRetrieveImagePullSecret`` warning; one whose content does not parse fails
the pull, as in the kubelet.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import fnmatch
import json
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Protocol
from urllib.parse import urlsplit

from minikubelet import reference
from minikubelet.api.pod import Pod
from minikubelet.cri.v1 import api_pb2 as pb
from minikubelet.events import WARNING, EventRecorder

log = logging.getLogger(__name__)

DOCKER_CONFIG_JSON_TYPE: Final = "kubernetes.io/dockerconfigjson"
DOCKER_CONFIG_JSON_KEY: Final = ".dockerconfigjson"
DOCKERCFG_TYPE: Final = "kubernetes.io/dockercfg"
DOCKERCFG_KEY: Final = ".dockercfg"
#: Where credentials for Docker Hub are kept in a docker config (``https://index.docker.io/v1/``).
DEFAULT_REGISTRY_KEY: Final = "index.docker.io"
SECRET_TIMEOUT: Final = 10.0


class CredentialError(ValueError):
    """A pull secret whose content is not a docker config."""


@dataclass(frozen=True)
class RegistryAuth:
    """One set of credentials for a registry (the CRI ``AuthConfig``); secrets not shown."""

    username: str = ""
    password: str = field(default="", repr=False)
    auth: str = field(default="", repr=False)
    server_address: str = ""
    identity_token: str = field(default="", repr=False)
    registry_token: str = field(default="", repr=False)
    email: str = ""

    def to_pb(self) -> pb.AuthConfig:
        return pb.AuthConfig(
            username=self.username,
            password=self.password,
            auth=self.auth,
            server_address=self.server_address,
            identity_token=self.identity_token,
            registry_token=self.registry_token,
        )


def _text(entry: Mapping[str, Any], key: str) -> str:
    value = entry.get(key, "")
    if not isinstance(value, str):
        raise CredentialError(f"{key}: expected a string")
    return value


def _entry(entry: object) -> RegistryAuth:
    """A docker config entry (``DockerConfigEntry.UnmarshalJSON``): ``auth`` decoded."""
    if not isinstance(entry, Mapping):
        raise CredentialError("a registry entry must be an object")
    username, password = _text(entry, "username"), _text(entry, "password")
    encoded = _text(entry, "auth")
    if encoded:
        try:
            decoded = base64.b64decode(encoded, validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            decoded = ""
        username, sep, password = decoded.partition(":")
        if not sep:
            raise CredentialError(
                "unable to parse auth field, must be formatted as base64(username:password)"
            )
    return RegistryAuth(
        username=username,
        password=password,
        server_address=_text(entry, "serveraddress"),
        identity_token=_text(entry, "identitytoken"),
        registry_token=_text(entry, "registrytoken"),
        email=_text(entry, "email"),
    )


def parse_docker_config(content: bytes | str, *, json_format: bool) -> dict[str, RegistryAuth]:
    """A ``.dockerconfigjson`` (``json_format``) or ``.dockercfg`` as location -> credentials."""
    try:
        data = json.loads(content)
    except (ValueError, RecursionError) as exc:
        raise CredentialError(f"invalid docker config: {exc}") from None
    if json_format:
        if not isinstance(data, Mapping):
            raise CredentialError("a .dockerconfigjson must be an object")
        data = data.get("auths") or {}
    if not isinstance(data, Mapping):
        raise CredentialError("the registry entries must be an object")
    out: dict[str, RegistryAuth] = {}
    for location, entry in data.items():
        try:
            out[str(location)] = _entry(entry)
        except CredentialError as exc:
            raise CredentialError(f"{location}: {exc}") from None
    return out


def registry_key(location: str) -> str | None:
    """The keyring's key of a config location: ``host[:port][/path]``, no scheme, no /v2/."""
    value = location if location.startswith(("https://", "http://")) else "https://" + location
    try:
        parsed = urlsplit(value)
        host = parsed.netloc
    except ValueError:
        return None
    if not host:
        return None
    path = parsed.path
    if path.startswith(("/v2/", "/v1/")):
        path = path[3:]
    return host + path if path and path != "/" else host


def _split(schemeless: str) -> tuple[list[str], str, str]:
    """``(host parts, port, path)`` of a schemeless URL."""
    parsed = urlsplit("https://" + schemeless)
    netloc = parsed.netloc
    host, port = netloc, ""
    if netloc.startswith("["):  # [v6]:port
        end = netloc.find("]")
        host, rest = netloc[: end + 1], netloc[end + 1 :]
        port = rest[1:] if rest.startswith(":") else ""
    elif netloc.count(":") == 1:
        host, port = netloc.split(":")
    return host.split("."), port, parsed.path


def urls_match(glob: str, target: str) -> bool:
    """``URLsMatchStr``: same port, as many host parts each matching as a glob, path prefix."""
    try:
        glob_parts, glob_port, glob_path = _split(glob)
        target_parts, target_port, target_path = _split(target)
    except ValueError:
        return False
    if glob_port != target_port or len(glob_parts) != len(target_parts):
        return False
    if not target_path.startswith(glob_path):
        return False
    return all(
        fnmatch.fnmatchcase(part, pattern)
        for pattern, part in zip(glob_parts, target_parts, strict=True)
    )


def is_default_registry(repository: str) -> bool:
    """``isDefaultRegistryMatch``: an image of Docker Hub."""
    first, sep, _ = repository.partition("/")
    if not first:
        return False
    if not sep or first == "docker.io":
        return True
    return not any(c in first for c in ".:") and first != "localhost"


class Keyring:
    """Registry credentials by location, looked up for an image as the kubelet does."""

    def __init__(self) -> None:
        self._creds: dict[str, list[RegistryAuth]] = {}

    def add(self, config: Mapping[str, RegistryAuth]) -> None:
        for location, auth in config.items():
            key = registry_key(location)
            if key is None:
                log.warning("pull secret entry %r is not a registry location: ignored", location)
                continue
            self._creds.setdefault(key, []).append(auth)

    def __len__(self) -> int:
        return len(self._creds)

    def lookup(self, repository: str) -> list[RegistryAuth]:
        """Every matching key's credentials, most specific key first; [] for none."""
        found: list[RegistryAuth] = []
        for key in sorted(self._creds, reverse=True):
            if urls_match(key, repository):
                found.extend(self._creds[key])
        if not found and DEFAULT_REGISTRY_KEY in self._creds and is_default_registry(repository):
            found.extend(self._creds[DEFAULT_REGISTRY_KEY])
        return found


def _secret_content(secret: Mapping[str, Any], key: str) -> bytes | None:
    """The decoded value of ``key`` in a Secret (``stringData`` too, as a test may give)."""
    data = secret.get("data") or {}
    value = data.get(key) if isinstance(data, Mapping) else None
    if isinstance(value, bytes):
        return value
    if isinstance(value, str) and value:
        try:
            return base64.b64decode(value, validate=True)
        except binascii.Error:
            raise CredentialError(f"data[{key}] is not base64") from None
    string_data = secret.get("stringData") or {}
    text = string_data.get(key) if isinstance(string_data, Mapping) else None
    return text.encode() if isinstance(text, str) and text else None


def keyring_from_secrets(secrets: Iterable[Mapping[str, Any]]) -> Keyring:
    """``MakeDockerKeyring``: the docker configs of the pull secrets, in order."""
    keyring = Keyring()
    for secret in secrets:
        kind = secret.get("type")
        metadata = secret.get("metadata") or {}
        name = f"{metadata.get('namespace', '')}/{metadata.get('name', '')}"
        for secret_type, key, json_format in (
            (DOCKER_CONFIG_JSON_TYPE, DOCKER_CONFIG_JSON_KEY, True),
            (DOCKERCFG_TYPE, DOCKERCFG_KEY, False),
        ):
            if kind != secret_type:
                continue
            try:
                content = _secret_content(secret, key)
                if content:
                    keyring.add(parse_docker_config(content, json_format=json_format))
            except CredentialError as exc:
                raise CredentialError(f"pull secret {name}: {exc}") from None
    return keyring


class SecretGetter(Protocol):
    async def get_secret(self, namespace: str, name: str) -> Mapping[str, Any]:
        """The Secret as the API serves it (``data`` values base64); raises if it cannot."""
        ...


class APISecretGetter:
    """Secrets read from the API server with the node's credentials (a GET per pull)."""

    def __init__(self, kube: Any, *, timeout: float = SECRET_TIMEOUT) -> None:
        self._kube = kube  # a minikubelet.kubeapi.client.KubeClient
        self._timeout = timeout

    async def get_secret(self, namespace: str, name: str) -> Mapping[str, Any]:
        async with asyncio.timeout(self._timeout):
            secret = await self._kube.core.read_namespaced_secret(name, namespace)
        data: Mapping[str, Any] = self._kube.to_dict(secret)
        return data


class PodPullCredentials:
    """The image manager's credentials for one pod's image, from its ``imagePullSecrets``."""

    def __init__(self, secrets: SecretGetter, recorder: EventRecorder | None = None) -> None:
        self._secrets = secrets
        self._recorder = recorder

    async def pull_secrets(self, pod: Pod) -> list[Mapping[str, Any]]:
        """``getPullSecretsForPod``: the secrets that could be read; a warning for the rest."""
        found: list[Mapping[str, Any]] = []
        failed: list[str] = []
        for ref in pod.spec.image_pull_secrets:
            name = ref.get("name")
            if not isinstance(name, str) or not name:
                continue  # the API server lets empty names through; they mean nothing
            try:
                found.append(await self._secrets.get_secret(pod.namespace, name))
            except Exception as exc:  # the API's error, a timeout, no connection
                log.info(
                    "pod=%s: unable to retrieve pull secret %s/%s, the image pull may not "
                    "succeed: %s",
                    pod,
                    pod.namespace,
                    name,
                    exc,
                )
                failed.append(f"{pod.namespace}/{name}")
        if failed and self._recorder is not None:
            self._recorder.pod_event(
                pod,
                WARNING,
                "FailedToRetrieveImagePullSecret",
                f"Unable to retrieve some image pull secrets ({', '.join(failed)}); "
                "attempting to pull the image may not succeed.",
            )
        return found

    async def for_image(self, pod: Pod, image: str) -> Sequence[pb.AuthConfig]:
        """The credentials to try, in order, for pulling ``image``; () for an anonymous pull.

        Raises :class:`CredentialError` when a pull secret's content does not parse.
        """
        if not pod.spec.image_pull_secrets:
            return ()
        secrets = await self.pull_secrets(pod)
        if not secrets:
            return ()
        keyring = keyring_from_secrets(secrets)
        try:
            repository = reference.parse(image).repository
        except reference.InvalidReference:
            return ()
        return [auth.to_pb() for auth in keyring.lookup(repository)]


__all__ = (
    "APISecretGetter",
    "CredentialError",
    "Keyring",
    "PodPullCredentials",
    "RegistryAuth",
    "SecretGetter",
    "keyring_from_secrets",
    "parse_docker_config",
    "registry_key",
    "urls_match",
)
