"""The ConfigMap/Secret cache and the token manager over a fake API (virtual time)."""

from __future__ import annotations

import asyncio
import base64
import datetime
from typing import Any

import pytest

from minikubelet.api.pod import Pod
from minikubelet.clock import ManualClock
from minikubelet.kubeapi.client import ApiException
from minikubelet.kubeapi.objects import ObjectError, TokenSpec
from minikubelet.kubeapi.objects.managers import KubeObjects


class FakeCore:
    """The CoreV1Api calls the managers make, answering from dicts."""

    def __init__(self, clock: ManualClock) -> None:
        self.clock = clock
        self.config_maps: dict[tuple[str, str], dict[str, Any]] = {}
        self.secrets: dict[tuple[str, str], dict[str, Any]] = {}
        self.calls: list[tuple[str, ...]] = []
        self.token_bodies: list[Any] = []
        self.fail_with: BaseException | None = None
        self.gate: asyncio.Event | None = None

    async def _answer(
        self, store: dict[tuple[str, str], dict[str, Any]], ns: str, name: str
    ) -> Any:
        if self.gate is not None:
            await self.gate.wait()
        if self.fail_with is not None:
            raise self.fail_with
        if (ns, name) not in store:
            raise ApiException(status=404, reason="Not Found")
        return store[ns, name]

    async def read_namespaced_config_map(self, name: str, namespace: str) -> Any:
        self.calls.append(("configmap", namespace, name))
        return await self._answer(self.config_maps, namespace, name)

    async def read_namespaced_secret(self, name: str, namespace: str) -> Any:
        self.calls.append(("secret", namespace, name))
        return await self._answer(self.secrets, namespace, name)

    async def create_namespaced_service_account_token(
        self, name: str, namespace: str, body: Any
    ) -> Any:
        self.calls.append(("token", namespace, name))
        if self.fail_with is not None:
            raise self.fail_with
        self.token_bodies.append(body)
        seconds = body["spec"]["expirationSeconds"]
        expires = datetime.datetime.fromtimestamp(self.clock.now() + seconds, datetime.UTC)
        return {
            "spec": body["spec"],
            "status": {
                "token": f"tok-{len(self.token_bodies)}",
                "expirationTimestamp": expires.isoformat(),
            },
        }


class FakeKube:
    def __init__(self, clock: ManualClock) -> None:
        self.core = FakeCore(clock)

    def to_dict(self, obj: Any) -> dict[str, Any]:
        assert isinstance(obj, dict)
        return obj


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def kube(clock: ManualClock) -> FakeKube:
    fake = FakeKube(clock)
    fake.core.config_maps["ns", "cfg"] = {
        "data": {"a": "1"},
        "binaryData": {"b": base64.b64encode(b"\x00\x01").decode()},
    }
    fake.core.secrets["ns", "s"] = {
        "type": "Opaque",
        "data": {"p": base64.b64encode(b"pw").decode()},
    }
    return fake


@pytest.fixture
def objects(kube: FakeKube, clock: ManualClock) -> KubeObjects:
    return KubeObjects(kube, clock=clock, ttl=30)  # type: ignore[arg-type]


POD = Pod.from_dict(
    {
        "metadata": {"name": "web", "namespace": "ns", "uid": "uid-1"},
        "spec": {"containers": [{"name": "c", "image": "busybox"}]},
    },
    validate=False,
)


async def test_objects_are_decoded(objects: KubeObjects) -> None:
    cm = await objects.config_map("ns", "cfg")
    assert dict(cm.data) == {"a": "1"} and dict(cm.binary_data) == {"b": b"\x00\x01"}
    secret = await objects.secret("ns", "s")
    assert dict(secret.data) == {"p": b"pw"} and secret.type == "Opaque"


async def test_a_copy_serves_until_its_time_to_live_or_max_age(
    objects: KubeObjects, kube: FakeKube, clock: ManualClock
) -> None:
    await objects.config_map("ns", "cfg")
    await objects.config_map("ns", "cfg")
    assert len(kube.core.calls) == 1
    await clock.advance(31)
    kube.core.config_maps["ns", "cfg"]["data"] = {"a": "2"}
    assert (await objects.config_map("ns", "cfg")).data["a"] == "2"
    assert len(kube.core.calls) == 2
    await clock.advance(5)
    await objects.config_map("ns", "cfg", max_age=10)  # young enough
    assert len(kube.core.calls) == 2
    await objects.config_map("ns", "cfg", max_age=0)  # a new pod reads afresh
    assert len(kube.core.calls) == 3


async def test_concurrent_readers_share_one_request(objects: KubeObjects, kube: FakeKube) -> None:
    kube.core.gate = asyncio.Event()
    readers = [asyncio.create_task(objects.config_map("ns", "cfg", max_age=0)) for _ in range(5)]
    await asyncio.sleep(0)
    kube.core.gate.set()
    results = await asyncio.gather(*readers)
    assert all(r.data == {"a": "1"} for r in results)
    assert len(kube.core.calls) == 1


async def test_not_found_is_the_kubelets_message_and_not_cached(
    objects: KubeObjects, kube: FakeKube
) -> None:
    with pytest.raises(ObjectError) as info:
        await objects.config_map("ns", "nope")
    assert info.value.message == 'configmap "nope" not found' and info.value.not_found
    with pytest.raises(ObjectError, match=r'^secret "gone" not found$'):
        await objects.secret("ns", "gone")
    kube.core.config_maps["ns", "nope"] = {"data": {"x": "y"}}
    assert (await objects.config_map("ns", "nope")).data == {"x": "y"}  # seen at once


async def test_an_unreachable_api_serves_the_last_copy_or_fails_clearly(
    objects: KubeObjects, kube: FakeKube, clock: ManualClock
) -> None:
    await objects.config_map("ns", "cfg")
    await clock.advance(60)
    body = '{"kind":"Status","message":"configmaps \\"cfg\\" is forbidden: no relationship"}'
    forbidden = ApiException(status=403, reason="Forbidden")
    forbidden.body = body.encode()
    kube.core.fail_with = forbidden
    assert (await objects.config_map("ns", "cfg")).data == {"a": "1"}
    with pytest.raises(ObjectError) as info:
        await objects.secret("ns", "s")
    assert info.value.message == (
        'failed to get secret ns/s: configmaps "cfg" is forbidden: no relationship'
    )
    assert not info.value.not_found
    kube.core.fail_with = ConnectionRefusedError(111, "Connection refused")
    with pytest.raises(ObjectError, match=r"failed to get configmap ns/other: .*refused"):
        await objects.config_map("ns", "other")


async def test_a_token_is_bound_to_the_pod(objects: KubeObjects, kube: FakeKube) -> None:
    token = await objects.service_account_token(POD, TokenSpec("builder", "vault", 3607))
    assert token == "tok-1"
    assert kube.core.calls == [("token", "ns", "builder")]
    assert kube.core.token_bodies[0] == {
        "apiVersion": "authentication.k8s.io/v1",
        "kind": "TokenRequest",
        "spec": {
            "audiences": ["vault"],
            "expirationSeconds": 3607,
            "boundObjectRef": {"apiVersion": "v1", "kind": "Pod", "name": "web", "uid": "uid-1"},
        },
    }
    await objects.service_account_token(POD, TokenSpec("builder", "", 3607))
    assert kube.core.token_bodies[1]["spec"]["audiences"] == []  # the API server's own


async def test_a_token_is_refreshed_past_80_percent_of_its_life(
    objects: KubeObjects, clock: ManualClock
) -> None:
    spec = TokenSpec("default", "", 3600)
    objects.tokens.max_jitter = 0
    assert await objects.service_account_token(POD, spec) == "tok-1"
    await clock.advance(0.8 * 3600 - 1)
    assert await objects.service_account_token(POD, spec) == "tok-1"
    await clock.advance(2)
    assert await objects.service_account_token(POD, spec) == "tok-2"


async def test_a_long_lived_token_is_refreshed_after_24_hours(
    objects: KubeObjects, clock: ManualClock
) -> None:
    spec = TokenSpec("default", "", 7 * 24 * 3600)
    objects.tokens.max_jitter = 0
    await objects.service_account_token(POD, spec)
    await clock.advance(24 * 3600 - 1)
    assert await objects.service_account_token(POD, spec) == "tok-1"
    await clock.advance(2)
    assert await objects.service_account_token(POD, spec) == "tok-2"


async def test_a_failed_refresh_serves_the_token_still_valid(
    objects: KubeObjects, kube: FakeKube, clock: ManualClock
) -> None:
    spec = TokenSpec("default", "", 3600)
    objects.tokens.max_jitter = 0
    await objects.service_account_token(POD, spec)
    await clock.advance(3000)
    kube.core.fail_with = ApiException(status=500, reason="Internal Server Error")
    assert await objects.service_account_token(POD, spec) == "tok-1"
    await clock.advance(700)  # expired now
    with pytest.raises(ObjectError, match=r"^failed to fetch token: 500 Internal Server Error$"):
        await objects.service_account_token(POD, spec)


async def test_released_pods_lose_their_tokens(objects: KubeObjects, kube: FakeKube) -> None:
    spec = TokenSpec("default", "", 3600)
    await objects.service_account_token(POD, spec)
    objects.release_pod("uid-1")
    assert await objects.service_account_token(POD, spec) == "tok-2"
