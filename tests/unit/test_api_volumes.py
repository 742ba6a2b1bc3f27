"""configMap, secret and projected volumes (the kube-api-access-* one above all) from an
object source: their payloads, the volume manager's setup, resync and teardown."""

from __future__ import annotations

import asyncio
import os
import stat
from pathlib import Path
from typing import Any

import pytest

from minikubelet.api.pod import Pod
from minikubelet.clock import ManualClock
from minikubelet.kubeapi.objects import ConfigMapData, SecretData, TokenSpec
from minikubelet.volumes import VolumeError, VolumeManager, mounts_for
from minikubelet.volumes.manager import downward_api_payload
from minikubelet.volumes.projection import (
    ProjectionError,
    config_map_payload,
    projected_payload,
    secret_payload,
)
from tests.harness.wait import wait_until
from tests.unit.fake_objects import FakeObjects

UID = "0b0c7a52-5c43-4f9e-9c2b-2f6c0a1d2e3f"

#: What the ServiceAccount admission plugin adds to every pod (Kubernetes 1.24).
KUBE_API_ACCESS: dict[str, Any] = {
    "name": "kube-api-access-x7k2p",
    "projected": {
        "defaultMode": 420,
        "sources": [
            {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
            {
                "configMap": {
                    "name": "kube-root-ca.crt",
                    "items": [{"key": "ca.crt", "path": "ca.crt"}],
                }
            },
            {
                "downwardAPI": {
                    "items": [
                        {
                            "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"},
                            "path": "namespace",
                        }
                    ]
                }
            },
        ],
    },
}


def make_pod(volumes: list[dict[str, Any]], mounts: list[dict[str, Any]] | None = None) -> Pod:
    return Pod.from_dict(
        {
            "metadata": {"name": "web", "namespace": "shop", "uid": UID, "labels": {"app": "w"}},
            "spec": {
                "serviceAccountName": "builder",
                "containers": [{"name": "c", "image": "busybox", "volumeMounts": mounts or []}],
                "volumes": volumes,
            },
        },
        validate=False,
    )


@pytest.fixture
def objects() -> FakeObjects:
    fake = FakeObjects()
    fake.config_maps["shop", "cfg"] = ConfigMapData(
        data={"app.conf": "debug=true\n", "level": "info"}, binary_data={"blob": b"\x00\xff"}
    )
    fake.config_maps["shop", "kube-root-ca.crt"] = ConfigMapData(data={"ca.crt": "PEM"})
    fake.secrets["shop", "creds"] = SecretData(data={"user": b"admin", "pass": b"s3cr3t"})
    return fake


async def test_config_map_every_key_with_the_default_mode(objects: FakeObjects) -> None:
    payload = await config_map_payload(make_pod([]), {"name": "cfg"}, objects)
    assert payload == {
        "app.conf": (b"debug=true\n", 0o644),
        "level": (b"info", 0o644),
        "blob": (b"\x00\xff", 0o644),
    }


async def test_config_map_items_modes_and_default_mode(objects: FakeObjects) -> None:
    source = {
        "name": "cfg",
        "defaultMode": 0o440,
        "items": [
            {"key": "level", "path": "conf/level.txt", "mode": 0o400},
            {"key": "app.conf", "path": "app.conf"},
        ],
    }
    payload = await config_map_payload(make_pod([]), source, objects)
    assert payload == {"conf/level.txt": (b"info", 0o400), "app.conf": (b"debug=true\n", 0o440)}


async def test_config_map_missing_key_and_object(objects: FakeObjects) -> None:
    pod = make_pod([])
    items = [{"key": "nope", "path": "n"}]
    with pytest.raises(
        ProjectionError, match=r"^configmap references non-existent config key: nope$"
    ):
        await config_map_payload(pod, {"name": "cfg", "items": items}, objects)
    assert (
        await config_map_payload(pod, {"name": "cfg", "items": items, "optional": True}, objects)
        == {}
    )
    with pytest.raises(ProjectionError, match=r'^configmap "missing" not found$'):
        await config_map_payload(pod, {"name": "missing"}, objects)
    assert await config_map_payload(pod, {"name": "missing", "optional": True}, objects) == {}


async def test_an_api_error_is_not_absence_even_when_optional(objects: FakeObjects) -> None:
    objects.failing = 'configmaps "cfg" is forbidden'
    with pytest.raises(ProjectionError, match="forbidden"):
        await config_map_payload(make_pod([]), {"name": "cfg", "optional": True}, objects)


@pytest.mark.parametrize("path", ["../../etc/passwd", "/etc/passwd", "a/../../b", "..data"])
async def test_item_paths_may_not_leave_the_volume(objects: FakeObjects, path: str) -> None:
    with pytest.raises(ProjectionError, match="configMap cfg: path"):
        await config_map_payload(
            make_pod([]), {"name": "cfg", "items": [{"key": "level", "path": path}]}, objects
        )


async def test_secret_payload(objects: FakeObjects) -> None:
    pod = make_pod([])
    assert await secret_payload(pod, {"secretName": "creds"}, objects) == {
        "user": (b"admin", 0o644),
        "pass": (b"s3cr3t", 0o644),
    }
    source = {"secretName": "creds", "items": [{"key": "pass", "path": "p", "mode": 0o400}]}
    assert await secret_payload(pod, source, objects) == {"p": (b"s3cr3t", 0o400)}
    with pytest.raises(ProjectionError, match=r"^references non-existent secret key: x$"):
        await secret_payload(
            pod, {"secretName": "creds", "items": [{"key": "x", "path": "x"}]}, objects
        )
    with pytest.raises(ProjectionError, match=r'^secret "nope" not found$'):
        await secret_payload(pod, {"secretName": "nope"}, objects)


def _downward(pod: Pod) -> Any:
    return lambda source: downward_api_payload(pod, source)


async def test_kube_api_access_volume(objects: FakeObjects) -> None:
    pod = make_pod([KUBE_API_ACCESS])
    payload = await projected_payload(
        pod, KUBE_API_ACCESS["projected"], objects, downward=_downward(pod)
    )
    assert payload == {
        "token": (b"token-builder-api-1", 0o644),
        "ca.crt": (b"PEM", 0o644),
        "namespace": (b"shop", 0o644),
    }
    assert objects.token_requests == [
        (UID, TokenSpec("builder", audience="", expiration_seconds=3607))
    ]


async def test_projected_sources_audience_and_errors_together(objects: FakeObjects) -> None:
    pod = make_pod([])
    source: dict[str, Any] = {
        "defaultMode": 0o600,
        "sources": [
            {"serviceAccountToken": {"audience": "vault", "path": "vault/token"}},
            {"secret": {"name": "creds", "items": [{"key": "user", "path": "user"}]}},
            {"configMap": {"name": "absent"}},
            {"secret": {"name": "gone"}},
        ],
    }
    with pytest.raises(ProjectionError) as info:
        await projected_payload(pod, source, objects, downward=_downward(pod))
    assert info.value.message == '[configmap "absent" not found, secret "gone" not found]'
    source["sources"] = source["sources"][:2]
    payload = await projected_payload(pod, source, objects, downward=_downward(pod))
    assert payload == {"vault/token": (b"token-builder-vault-1", 0o600), "user": (b"admin", 0o600)}
    assert objects.token_requests[-1][1] == TokenSpec("builder", "vault", 3600)


# -- the volume manager ---------------------------------------------------------------------


@pytest.fixture
def manager(tmp_path: Path, objects: FakeObjects) -> VolumeManager:
    return VolumeManager(tmp_path / "kubelet", mount_tmpfs=False, objects=objects)


async def test_setup_writes_api_volumes_read_only(manager: VolumeManager) -> None:
    pod = make_pod(
        [
            {"name": "cfg", "configMap": {"name": "cfg"}},
            {"name": "creds", "secret": {"secretName": "creds", "defaultMode": 0o400}},
            KUBE_API_ACCESS,
        ],
        mounts=[
            {"name": "cfg", "mountPath": "/etc/app"},
            {"name": "creds", "mountPath": "/etc/creds"},
            {"name": "kube-api-access-x7k2p", "mountPath": "/var/run/secrets/kubernetes.io/sa"},
        ],
    )
    paths = await manager.setup(pod)
    volumes = manager.root_dir / "pods" / UID / "volumes"
    assert paths == {
        "cfg": volumes / "kubernetes.io~configmap" / "cfg",
        "creds": volumes / "kubernetes.io~secret" / "creds",
        "kube-api-access-x7k2p": volumes / "kubernetes.io~projected" / "kube-api-access-x7k2p",
    }
    assert (paths["cfg"] / "app.conf").read_text() == "debug=true\n"
    assert stat.S_IMODE(os.stat(paths["creds"] / "pass").st_mode) == 0o400
    sa = paths["kube-api-access-x7k2p"]
    assert {p: (sa / p).read_text() for p in ("token", "ca.crt", "namespace")} == {
        "token": "token-builder-api-1",
        "ca.crt": "PEM",
        "namespace": "shop",
    }
    mounts = mounts_for(pod, pod.spec.containers[0], paths)
    assert [m.readonly for m in mounts] == [True, True, True]


async def test_a_missing_config_map_fails_the_mount_as_the_kubelet_words_it(
    manager: VolumeManager,
) -> None:
    pod = make_pod([{"name": "cfg", "configMap": {"name": "missing"}}])
    with pytest.raises(VolumeError) as info:
        await manager.setup(pod)
    assert info.value.message == (
        'MountVolume.SetUp failed for volume "cfg" : configmap "missing" not found'
    )
    assert info.value.reason == "FailedMount"


async def test_resync_rewrites_only_what_changed(
    manager: VolumeManager, objects: FakeObjects
) -> None:
    pod = make_pod(
        [
            {"name": "cfg", "configMap": {"name": "cfg"}},
            {"name": "creds", "secret": {"secretName": "creds"}},
        ]
    )
    paths = await manager.setup(pod)
    cfg_gen = os.readlink(paths["cfg"] / "..data")
    creds_gen = os.readlink(paths["creds"] / "..data")
    objects.config_maps["shop", "cfg"] = ConfigMapData(data={"level": "debug"})
    await manager.resync()
    assert (paths["cfg"] / "level").read_text() == "debug"
    assert not os.path.lexists(paths["cfg"] / "app.conf")
    assert os.readlink(paths["cfg"] / "..data") != cfg_gen
    assert os.readlink(paths["creds"] / "..data") == creds_gen  # unchanged: not rewritten


async def test_resync_keeps_files_when_the_api_fails(
    manager: VolumeManager, objects: FakeObjects
) -> None:
    paths = await manager.setup(make_pod([{"name": "cfg", "configMap": {"name": "cfg"}}]))
    objects.failing = "connection refused"
    await manager.resync()
    assert (paths["cfg"] / "level").read_text() == "info"


async def test_teardown_releases_the_pod_and_stops_its_resync(
    manager: VolumeManager, objects: FakeObjects
) -> None:
    paths = await manager.setup(make_pod([KUBE_API_ACCESS]))
    await manager.teardown(UID)
    assert objects.released == [UID]
    assert not manager.pod_dir(UID).exists()
    await manager.resync()
    assert not paths["kube-api-access-x7k2p"].exists()


async def test_without_an_object_source_api_volumes_are_refused(tmp_path: Path) -> None:
    bare = VolumeManager(tmp_path / "kubelet", mount_tmpfs=False)
    with pytest.raises(VolumeError, match="volume cfg: type configMap needs an API server"):
        await bare.setup(make_pod([{"name": "cfg", "configMap": {"name": "cfg"}}]))


async def test_run_resyncs_about_every_minute_and_survives_a_bad_round(
    tmp_path: Path, objects: FakeObjects
) -> None:
    clock = ManualClock()
    manager = VolumeManager(tmp_path / "kubelet", mount_tmpfs=False, objects=objects, clock=clock)
    paths = await manager.setup(make_pod([{"name": "cfg", "configMap": {"name": "cfg"}}]))
    task = asyncio.create_task(manager.run())
    try:
        objects.config_maps["shop", "cfg"] = ConfigMapData(data={"level": "warn"})
        await clock.advance(53)  # less than the shortest period (60 s less 10 %)
        assert manager.resyncs == 0
        await clock.advance(14)  # more than the longest (60 s and 10 %)
        await wait_until(lambda: manager.resyncs == 1, timeout=5, message="one resync")
        assert (paths["cfg"] / "level").read_text() == "warn"

        calls: list[int] = []

        async def broken() -> None:
            calls.append(1)
            raise RuntimeError("a bug")

        manager.resync = broken  # type: ignore[method-assign]
        await clock.advance(67)
        await wait_until(lambda: calls, timeout=5, message="the broken round")
        await clock.advance(67)
        await wait_until(lambda: len(calls) == 2, timeout=5, message="the next round")
        assert not task.done()  # logged; the loop goes on
    finally:
        task.cancel()
