"""The kubelet's ConfigMap, Secret and token managers over the API server.

**ConfigMaps and Secrets: a cache refreshed on use** (upstream's ``Cache`` strategy,
``pkg/kubelet/util/manager/cache_based_manager.go``), not per-object watches (its
default ``Watch`` strategy). Why: the node then holds no long-lived stream per
referenced object (110 pods naming a few objects each would be hundreds of watches,
each to be resumed, relisted on 410 and backed off), the Node authorizer grants the
plain GET the same way, and while the API server is unreachable the last copy keeps
serving container restarts. What it costs is latency: a change is seen when a copy
older than its time to live is next used. The volume manager re-reads mounted objects
every minute (with ``max_age`` half that, so pods sharing an object cause one GET a
round), which keeps "an update reaches the mounted file within about a minute"; a new
pod's setup reads with ``max_age=0``, as upstream invalidates on pod registration.
Concurrent readers of one object share one request. A 404 is never cached, so a pod
waiting for a missing ConfigMap sees it as soon as it is created.

**Tokens** (``pkg/kubelet/token``): a TokenRequest ``serviceaccounts/token`` with the
audience, ``expirationSeconds`` and a ``boundObjectRef`` to the pod (kind Pod, name,
uid) — the only kind NodeRestriction lets a node ask for. A token is kept per
(service account, audience, lifetime, pod) and requested again when more than 80 % of
its life is gone or it is older than 24 h (each check less a random jitter of up to
10 s); if that request fails, the old token is served while it is still valid.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import datetime
import json
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, Generic, TypeVar

import aiohttp

from minikubelet.api.pod import Pod
from minikubelet.clock import Clock, RealClock
from minikubelet.kubeapi.client import ApiException
from minikubelet.kubeapi.objects.source import (
    CONFIG_MAP,
    SECRET,
    ConfigMapData,
    ObjectError,
    SecretData,
    TokenSpec,
)

if TYPE_CHECKING:
    from minikubelet.kubeapi.client import KubeClient

log = logging.getLogger(__name__)

T = TypeVar("T")

DEFAULT_TTL: Final = 30.0
TOKEN_MAX_TTL: Final = 24 * 3600.0
TOKEN_REFRESH_FRACTION: Final = 0.8
TOKEN_MAX_JITTER: Final = 10.0
_FORGET_AFTER: Final = 600.0  # an entry unused this long is dropped


def api_error_message(exc: BaseException) -> str:
    """The API server's own message for a failed request (its Status), else the error."""
    if isinstance(exc, ApiException):
        raw: Any = exc.body
        body = raw.decode(errors="replace") if isinstance(raw, bytes) else raw
        if isinstance(body, str) and body:
            try:
                status = json.loads(body)
            except ValueError:
                status = None
            if isinstance(status, dict) and isinstance(status.get("message"), str):
                return str(status["message"])
        return f"{exc.status} {exc.reason}"
    return str(exc) or type(exc).__name__


_TRANSIENT = (aiohttp.ClientError, asyncio.TimeoutError, OSError)


@dataclass(slots=True)
class _Entry(Generic[T]):
    value: T
    fetched: float
    used: float


class ObjectCache(Generic[T]):
    """Objects of one kind by (namespace, name), fetched again once older than ``ttl``."""

    def __init__(
        self,
        kind: str,
        fetch: Callable[[str, str], Awaitable[T]],
        *,
        ttl: float = DEFAULT_TTL,
        clock: Clock | None = None,
    ) -> None:
        self.kind = kind
        self.ttl = ttl
        self._fetch = fetch
        self._clock = clock or RealClock()
        self._entries: dict[tuple[str, str], _Entry[T]] = {}
        self._locks: dict[tuple[str, str], asyncio.Lock] = {}
        self.requests = 0  # how many times the API server was asked (tests, metrics)

    async def get(self, namespace: str, name: str, *, max_age: float | None = None) -> T:
        key = (namespace, name)
        limit = self.ttl if max_age is None else min(max_age, self.ttl)
        asked = self._clock.monotonic()
        self._forget_unused(asked)
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:
            now = self._clock.monotonic()
            entry = self._entries.get(key)
            if entry is not None and (entry.fetched >= asked or now - entry.fetched <= limit):
                entry.used = now
                return entry.value
            self.requests += 1
            try:
                value = await self._fetch(namespace, name)
            except ApiException as exc:
                if exc.status == 404:
                    self._entries.pop(key, None)
                    raise ObjectError.missing(self.kind, name) from None
                return self._stale(key, entry, api_error_message(exc))
            except _TRANSIENT as exc:
                return self._stale(key, entry, api_error_message(exc))
            done = self._clock.monotonic()
            self._entries[key] = _Entry(value, fetched=done, used=done)
            return value

    def _stale(self, key: tuple[str, str], entry: _Entry[T] | None, message: str) -> T:
        namespace, name = key
        if entry is None:
            raise ObjectError(f"failed to get {self.kind} {namespace}/{name}: {message}")
        log.warning("%s %s/%s: %s; using the copy kept", self.kind, namespace, name, message)
        return entry.value

    def _forget_unused(self, now: float) -> None:
        horizon = max(_FORGET_AFTER, 5 * self.ttl)
        for key in [k for k, e in self._entries.items() if now - e.used > horizon]:
            del self._entries[key]
            lock = self._locks.get(key)
            if lock is not None and not lock.locked():
                del self._locks[key]


def _decode(values: Any, what: str) -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    for key, text in (values or {}).items():
        try:
            out[str(key)] = base64.b64decode(str(text), validate=True)
        except (binascii.Error, ValueError):
            raise ObjectError(f"{what}: key {key}: not valid base64") from None
    return out


@dataclass(slots=True)
class _Token:
    token: str
    expires: float  # epoch seconds
    life: float  # seconds


class TokenManager:
    """Service account tokens bound to pods, cached and refreshed as the kubelet does."""

    def __init__(
        self,
        kube: KubeClient,
        *,
        clock: Clock | None = None,
        max_ttl: float = TOKEN_MAX_TTL,
        max_jitter: float = TOKEN_MAX_JITTER,
    ) -> None:
        self._kube = kube
        self._clock = clock or RealClock()
        self.max_ttl = max_ttl
        self.max_jitter = max_jitter
        self._tokens: dict[tuple[str, ...], _Token] = {}
        self._locks: dict[tuple[str, ...], asyncio.Lock] = {}
        self.requests = 0

    @staticmethod
    def _key(pod: Pod, spec: TokenSpec) -> tuple[str, ...]:
        return (
            str(pod.uid),
            pod.namespace,
            pod.name,
            spec.service_account,
            spec.audience,
            str(spec.expiration_seconds),
        )

    def requires_refresh(self, token: _Token) -> bool:
        """``requiresRefresh``: past 80 % of its life, or issued more than 24 h ago."""
        now = self._clock.now()
        jitter = random.random() * self.max_jitter
        issued = token.expires - token.life
        if now > issued + self.max_ttl - jitter:
            return True
        return now > token.expires - token.life * (1 - TOKEN_REFRESH_FRACTION) - jitter

    async def get(self, pod: Pod, spec: TokenSpec) -> str:
        key = self._key(pod, spec)
        async with self._locks.setdefault(key, asyncio.Lock()):
            cached = self._tokens.get(key)
            if cached is not None and not self.requires_refresh(cached):
                return cached.token
            try:
                fresh = await self._request(pod, spec)
            except ObjectError as err:
                if cached is not None and self._clock.now() < cached.expires:
                    log.warning(
                        "pod=%s/%s: %s; serving the token still valid", pod.namespace, pod.name, err
                    )
                    return cached.token
                raise
            self._tokens[key] = fresh
            return fresh.token

    async def _request(self, pod: Pod, spec: TokenSpec) -> _Token:
        body: Any = {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "spec": {
                "audiences": [spec.audience] if spec.audience else [],
                "expirationSeconds": spec.expiration_seconds,
                "boundObjectRef": {
                    "apiVersion": "v1",
                    "kind": "Pod",
                    "name": pod.name,
                    "uid": str(pod.uid),
                },
            },
        }
        self.requests += 1
        try:
            response = await self._kube.core.create_namespaced_service_account_token(
                spec.service_account, pod.namespace, body
            )
        except (ApiException, *_TRANSIENT) as exc:
            raise ObjectError(f"failed to fetch token: {api_error_message(exc)}") from None
        data = self._kube.to_dict(response)
        status = data.get("status") or {}
        token = status.get("token")
        if not isinstance(token, str) or not token:
            raise ObjectError("failed to fetch token: the API server returned no token")
        life = float((data.get("spec") or {}).get("expirationSeconds") or spec.expiration_seconds)
        try:
            stamp = str(status.get("expirationTimestamp") or "")
            expires_at = datetime.datetime.fromisoformat(stamp).timestamp()
        except ValueError:
            expires_at = self._clock.now() + life  # no expiry given: count from now
        return _Token(token, expires=expires_at, life=life)

    def release_pod(self, uid: str) -> None:
        for key in [k for k in self._tokens if k[0] == uid]:
            del self._tokens[key]
        for key in [k for k, lock in self._locks.items() if k[0] == uid and not lock.locked()]:
            del self._locks[key]


class KubeObjects:
    """The node's :class:`~minikubelet.kubeapi.objects.ObjectSource` in API server mode."""

    def __init__(
        self, kube: KubeClient, *, clock: Clock | None = None, ttl: float = DEFAULT_TTL
    ) -> None:
        self._kube = kube
        self.config_maps: ObjectCache[ConfigMapData] = ObjectCache(
            CONFIG_MAP, self._read_config_map, ttl=ttl, clock=clock
        )
        self.secrets: ObjectCache[SecretData] = ObjectCache(
            SECRET, self._read_secret, ttl=ttl, clock=clock
        )
        self.tokens = TokenManager(kube, clock=clock)

    async def _read_config_map(self, namespace: str, name: str) -> ConfigMapData:
        obj = self._kube.to_dict(await self._kube.core.read_namespaced_config_map(name, namespace))
        data = {str(k): str(v) for k, v in (obj.get("data") or {}).items()}
        binary = _decode(obj.get("binaryData"), f"configmap {namespace}/{name} binaryData")
        return ConfigMapData(data=data, binary_data=binary)

    async def _read_secret(self, namespace: str, name: str) -> SecretData:
        obj = self._kube.to_dict(await self._kube.core.read_namespaced_secret(name, namespace))
        data = _decode(obj.get("data"), f"secret {namespace}/{name} data")
        return SecretData(data=data, type=str(obj.get("type") or "Opaque"))

    async def config_map(
        self, namespace: str, name: str, *, max_age: float | None = None
    ) -> ConfigMapData:
        return await self.config_maps.get(namespace, name, max_age=max_age)

    async def secret(
        self, namespace: str, name: str, *, max_age: float | None = None
    ) -> SecretData:
        return await self.secrets.get(namespace, name, max_age=max_age)

    async def service_account_token(self, pod: Pod, spec: TokenSpec) -> str:
        return await self.tokens.get(pod, spec)

    def release_pod(self, uid: str) -> None:
        self.tokens.release_pod(uid)
