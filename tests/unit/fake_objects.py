"""An in-memory :class:`~minikubelet.kubeapi.objects.ObjectSource` for tests."""

from __future__ import annotations

from dataclasses import dataclass, field

from minikubelet.api.pod import Pod
from minikubelet.kubeapi.objects import (
    ConfigMapData,
    ObjectError,
    SecretData,
    TokenSpec,
)


@dataclass
class FakeObjects:
    """ConfigMaps and Secrets by (namespace, name); tokens made up per request."""

    config_maps: dict[tuple[str, str], ConfigMapData] = field(default_factory=dict)
    secrets: dict[tuple[str, str], SecretData] = field(default_factory=dict)
    failing: str = ""  # every request fails with this message (not a 404) when set
    token_requests: list[tuple[str, TokenSpec]] = field(default_factory=list)
    released: list[str] = field(default_factory=list)
    token_generation: int = 1

    async def config_map(
        self, namespace: str, name: str, *, max_age: float | None = None
    ) -> ConfigMapData:
        if self.failing:
            raise ObjectError(self.failing)
        try:
            return self.config_maps[namespace, name]
        except KeyError:
            raise ObjectError.missing("configmap", name) from None

    async def secret(
        self, namespace: str, name: str, *, max_age: float | None = None
    ) -> SecretData:
        if self.failing:
            raise ObjectError(self.failing)
        try:
            return self.secrets[namespace, name]
        except KeyError:
            raise ObjectError.missing("secret", name) from None

    async def service_account_token(self, pod: Pod, spec: TokenSpec) -> str:
        if self.failing:
            raise ObjectError(f"failed to fetch token: {self.failing}")
        self.token_requests.append((str(pod.uid), spec))
        return f"token-{spec.service_account}-{spec.audience or 'api'}-{self.token_generation}"

    def release_pod(self, uid: str) -> None:
        self.released.append(uid)
