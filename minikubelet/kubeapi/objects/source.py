"""The seam between a pod's volumes and env and the API objects they read.

Errors carry the kubelet's wording: a missing object is ``configmap "NAME" not found``
(``secret "NAME" not found``), the message of upstream's watch-based managers, whose
group resource is the singular ``configmap``/``secret``. A node without an API server
(static pods only) has no source at all: the volume manager then refuses configMap,
secret and projected volumes, and the env builder references to ConfigMaps and Secrets,
each with a message saying there is no API server.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final, Protocol

from minikubelet.api.pod import Pod
from minikubelet.errors import MinikubeletError

CONFIG_MAP: Final = "configmap"
SECRET: Final = "secret"


class ObjectError(MinikubeletError):
    """An object could not be had; ``not_found`` says the API server answered 404
    (an ``optional`` reference then counts as absent, any other error does not)."""

    def __init__(self, message: str, *, not_found: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.not_found = not_found

    @classmethod
    def missing(cls, kind: str, name: str) -> ObjectError:
        return cls(f'{kind} "{name}" not found', not_found=True)


@dataclass(frozen=True, slots=True)
class ConfigMapData:
    """A ConfigMap's ``data`` (text) and ``binaryData`` (decoded bytes)."""

    data: Mapping[str, str] = field(default_factory=dict)
    binary_data: Mapping[str, bytes] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class SecretData:
    """A Secret's ``data``, decoded from base64, and its type."""

    data: Mapping[str, bytes] = field(default_factory=dict)
    type: str = "Opaque"


@dataclass(frozen=True, slots=True)
class TokenSpec:
    """What a projected ``serviceAccountToken`` asks for.

    ``audience`` empty means the API server's own audiences (the kubelet sends none).
    """

    service_account: str
    audience: str = ""
    expiration_seconds: int = 3600


class ObjectSource(Protocol):
    """ConfigMaps, Secrets and tokens for a pod. ``max_age`` bounds how old a cached
    copy may be (None: the source's own time to live)."""

    async def config_map(
        self, namespace: str, name: str, *, max_age: float | None = None
    ) -> ConfigMapData: ...

    async def secret(
        self, namespace: str, name: str, *, max_age: float | None = None
    ) -> SecretData: ...

    async def service_account_token(self, pod: Pod, spec: TokenSpec) -> str: ...

    def release_pod(self, uid: str) -> None:
        """The pod is gone: forget what was kept for it (its tokens)."""
