"""The volume manager against real temporary directories."""

from __future__ import annotations

import os
import socket
import stat
from pathlib import Path
from typing import Any

import pytest

from minikubelet.api.pod import Pod
from minikubelet.cri.v1 import api_pb2 as pb
from minikubelet.volumes import VolumeError, VolumeManager, mounts_for, resolve_sub_path
from minikubelet.volumes.atomic import atomic_write
from minikubelet.volumes.manager import mount_points

UID = "uid-1"


def make_pod(volumes: list[dict[str, Any]], mounts: list[dict[str, Any]] | None = None) -> Pod:
    # Not validated: the manager must refuse bad names, escapes and unknown volumes itself.
    return Pod.from_dict(
        {
            "metadata": {
                "name": "web",
                "namespace": "shop",
                "uid": UID,
                "labels": {"app": "web", "tier": "front"},
                "annotations": {"build": "42"},
            },
            "spec": {
                "containers": [
                    {
                        "name": "app",
                        "image": "nginx",
                        "volumeMounts": mounts or [],
                        "resources": {"limits": {"cpu": "500m", "memory": "64Mi"}},
                    }
                ],
                "volumes": volumes,
            },
        },
        validate=False,
    )


@pytest.fixture
def manager(tmp_path: Path) -> VolumeManager:
    return VolumeManager(tmp_path / "kubelet", mount_tmpfs=False)


async def test_empty_dir_created_kept_and_removed(manager: VolumeManager) -> None:
    pod = make_pod([{"name": "cache", "emptyDir": {}}, {"name": "implicit"}])
    paths = await manager.setup(pod)
    base = manager.root_dir / "pods" / UID / "volumes" / "kubernetes.io~empty-dir"
    assert paths == {"cache": base / "cache", "implicit": base / "implicit"}
    assert stat.S_IMODE(paths["cache"].stat().st_mode) == 0o777
    (paths["cache"] / "data").write_text("kept")
    assert await manager.setup(pod) == paths  # idempotent, contents kept
    assert (paths["cache"] / "data").read_text() == "kept"
    await manager.teardown(UID)
    assert not (manager.root_dir / "pods" / UID).exists()
    await manager.teardown(UID)  # already gone: fine


async def test_memory_empty_dir_without_root_is_a_directory(
    manager: VolumeManager, caplog: pytest.LogCaptureFixture
) -> None:
    pod = make_pod([{"name": "shm", "emptyDir": {"medium": "Memory", "sizeLimit": "16Mi"}}])
    paths = await manager.setup(pod)
    assert paths["shm"].is_dir()
    assert "needs root" in caplog.text


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root")
async def test_memory_empty_dir_is_a_sized_tmpfs(tmp_path: Path) -> None:
    manager = VolumeManager(tmp_path / "kubelet")
    pod = make_pod([{"name": "shm", "emptyDir": {"medium": "Memory", "sizeLimit": "16Mi"}}])
    try:
        paths = await manager.setup(pod)
    except VolumeError as err:
        pytest.skip(f"cannot mount here: {err}")
    real = os.path.realpath(paths["shm"])
    info = Path("/proc/self/mountinfo").read_text()
    line = next(line for line in info.splitlines() if line.split(" ")[4] == real)
    assert "tmpfs" in line and "size=16384k" in line
    assert await manager.setup(pod) == paths  # already mounted: not mounted twice
    assert mount_points(Path("/proc/self/mountinfo").read_text()).count(real) == 1
    await manager.teardown(UID)
    assert real not in mount_points(Path("/proc/self/mountinfo").read_text())
    assert not (manager.root_dir / "pods" / UID).exists()


async def test_teardown_does_not_follow_symlinks(manager: VolumeManager, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "precious").write_text("keep me")
    pod = make_pod([{"name": "cache", "emptyDir": {}}])
    paths = await manager.setup(pod)
    (paths["cache"] / "escape").symlink_to(outside)
    await manager.teardown(UID)
    assert (outside / "precious").read_text() == "keep me"


@pytest.mark.parametrize(
    ("kind", "make", "ok"),
    [
        ("", None, True),
        ("Directory", "dir", True),
        ("Directory", "file", False),
        ("Directory", None, False),
        ("DirectoryOrCreate", None, True),
        ("DirectoryOrCreate", "file", False),
        ("File", "file", True),
        ("File", "dir", False),
        ("File", None, False),
        ("FileOrCreate", None, True),
        ("FileOrCreate", "dir", False),
        ("Socket", "socket", True),
        ("Socket", "file", False),
        ("CharDevice", "char", True),
        ("CharDevice", "file", False),
        ("BlockDevice", "file", False),
        ("Bogus", "dir", False),
    ],
)
async def test_host_path_types(
    manager: VolumeManager, tmp_path: Path, kind: str, make: str | None, ok: bool
) -> None:
    target = tmp_path / "host" / "thing"
    target.parent.mkdir()
    sock = None
    if make == "dir":
        target.mkdir()
    elif make == "file":
        target.write_text("x")
    elif make == "socket":
        sock = socket.socket(socket.AF_UNIX)
        sock.bind(str(target))
    elif make == "char":
        target = Path("/dev/null")
    try:
        pod = make_pod([{"name": "h", "hostPath": {"path": str(target), "type": kind}}])
        if ok:
            assert await manager.setup(pod) == {"h": target}
        else:
            with pytest.raises(
                VolumeError, match=r"volume h: .*(hostPath type check failed|invalid)"
            ):
                await manager.setup(pod)
    finally:
        if sock is not None:
            sock.close()
    if ok and kind == "DirectoryOrCreate":
        assert target.is_dir()
    if ok and kind == "FileOrCreate":
        assert target.is_file() and target.read_bytes() == b""


async def test_host_path_messages(manager: VolumeManager, tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    pod = make_pod([{"name": "h", "hostPath": {"path": str(missing), "type": "Directory"}}])
    with pytest.raises(VolumeError) as info:
        await manager.setup(pod)
    assert (
        info.value.message == f"volume h: hostPath type check failed: {missing} is not a directory"
    )
    for path in ("relative/dir", "/var/../etc"):
        pod = make_pod([{"name": "h", "hostPath": {"path": path}}])
        with pytest.raises(VolumeError, match=r"volume h: hostPath\.path"):
            await manager.setup(pod)


async def test_file_or_create_does_not_make_the_parent(
    manager: VolumeManager, tmp_path: Path
) -> None:
    pod = make_pod(
        [{"name": "h", "hostPath": {"path": str(tmp_path / "a" / "f"), "type": "FileOrCreate"}}]
    )
    with pytest.raises(VolumeError, match="cannot create"):
        await manager.setup(pod)


@pytest.mark.parametrize("kind", ["configMap", "secret", "persistentVolumeClaim", "projected"])
async def test_api_server_volumes_are_refused(manager: VolumeManager, kind: str) -> None:
    pod = make_pod([{"name": "v", kind: {"name": "x"}}])
    with pytest.raises(VolumeError, match=f"volume v: type {kind} needs an API server"):
        await manager.setup(pod)


async def test_unknown_volume_type(manager: VolumeManager) -> None:
    pod = make_pod([{"name": "v", "nfs": {"server": "s", "path": "/"}}])
    with pytest.raises(VolumeError, match="type nfs is not supported"):
        await manager.setup(pod)


async def test_bad_names_cannot_escape(manager: VolumeManager) -> None:
    with pytest.raises(VolumeError, match="cannot name a directory"):
        await manager.setup(make_pod([{"name": "../x", "emptyDir": {}}]))
    with pytest.raises(VolumeError, match="cannot name a directory"):
        await manager.teardown("../..")


async def test_downward_api_files(manager: VolumeManager) -> None:
    pod = make_pod(
        [
            {
                "name": "info",
                "downwardAPI": {
                    "items": [
                        {"path": "name", "fieldRef": {"fieldPath": "metadata.name"}},
                        {"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}},
                        {
                            "path": "meta/build",
                            "fieldRef": {"fieldPath": "metadata.annotations['build']"},
                        },
                        {
                            "path": "cpu",
                            "mode": 0o600,
                            "resourceFieldRef": {
                                "containerName": "app",
                                "resource": "limits.cpu",
                                "divisor": "1m",
                            },
                        },
                    ]
                },
            }
        ]
    )
    paths = await manager.setup(pod)
    target = paths["info"]
    assert (
        target
        == manager.root_dir / "pods" / UID / "volumes" / "kubernetes.io~downward-api" / "info"
    )
    assert (target / "name").read_text() == "web"
    assert (target / "labels").read_text() == 'app="web"\ntier="front"'
    assert (target / "meta" / "build").read_text() == "42"
    assert (target / "cpu").read_text() == "500"
    assert stat.S_IMODE((target / "cpu").stat().st_mode) == 0o600
    assert stat.S_IMODE((target / "name").stat().st_mode) == 0o644
    # the atomic writer's layout: ..data -> ..<timestamp>, user files link into ..data
    assert (target / "..data").is_symlink()
    assert os.readlink(target / "..data").startswith("..")
    assert os.readlink(target / "name") == "..data/name"
    assert os.readlink(target / "meta") == "..data/meta"
    first = os.readlink(target / "..data")
    await manager.setup(pod)  # unchanged: nothing rewritten
    assert os.readlink(target / "..data") == first


def test_atomic_write_replaces_the_whole_set(tmp_path: Path) -> None:
    target = tmp_path / "vol"
    assert atomic_write(target, {"a": (b"1", 0o644), "b": (b"2", 0o644)})
    old = os.readlink(target / "..data")
    assert atomic_write(target, {"a": (b"one", 0o644), "c": (b"3", 0o644)})
    assert (target / "a").read_text() == "one" and (target / "c").read_text() == "3"
    assert not (target / "b").exists() and not os.path.lexists(target / "b")
    assert not (target / old).exists()  # the previous generation is gone
    assert not atomic_write(target, {"a": (b"one", 0o644), "c": (b"3", 0o644)})


@pytest.mark.parametrize("path", ["../x", "/abs", "a/../../b", "..hidden", ""])
async def test_downward_api_bad_paths(manager: VolumeManager, path: str) -> None:
    pod = make_pod(
        [
            {
                "name": "info",
                "downwardAPI": {
                    "items": [{"path": path, "fieldRef": {"fieldPath": "metadata.name"}}]
                },
            }
        ]
    )
    with pytest.raises(VolumeError, match="downwardAPI"):
        await manager.setup(pod)


async def test_downward_api_only_reads_metadata(manager: VolumeManager) -> None:
    pod = make_pod(
        [
            {
                "name": "info",
                "downwardAPI": {
                    "items": [{"path": "ip", "fieldRef": {"fieldPath": "status.podIP"}}]
                },
            }
        ]
    )
    with pytest.raises(VolumeError, match="unsupported fieldPath"):
        await manager.setup(pod)


async def test_mounts(manager: VolumeManager) -> None:
    volumes = [
        {"name": "cache", "emptyDir": {}},
        {
            "name": "info",
            "downwardAPI": {
                "items": [{"path": "name", "fieldRef": {"fieldPath": "metadata.name"}}]
            },
        },
    ]
    mounts: list[dict[str, Any]] = [
        {"name": "cache", "mountPath": "/cache"},
        {
            "name": "cache",
            "mountPath": "relative/ro",
            "readOnly": True,
            "mountPropagation": "HostToContainer",
        },
        {"name": "info", "mountPath": "/etc/info"},
        {"name": "cache", "mountPath": "/sub", "subPath": "a/b"},
        {"name": "cache", "mountPath": "/expr", "subPathExpr": "logs/$(POD_NAME)"},
    ]
    pod = make_pod(volumes, mounts)
    container = pod.spec.containers[0]
    paths = await manager.setup(pod)
    result = await manager.make_mounts(pod, container, paths, env=[("POD_NAME", "web")])
    cache = paths["cache"]
    term = result.termination_message_path
    assert term is not None
    assert list(result.mounts) == [
        pb.Mount(container_path="/cache", host_path=str(cache)),
        pb.Mount(
            container_path="/relative/ro",
            host_path=str(cache),
            readonly=True,
            propagation=pb.PROPAGATION_HOST_TO_CONTAINER,
        ),
        pb.Mount(container_path="/etc/info", host_path=str(paths["info"]), readonly=True),
        pb.Mount(container_path="/sub", host_path=os.path.realpath(cache / "a" / "b")),
        pb.Mount(container_path="/expr", host_path=os.path.realpath(cache / "logs" / "web")),
        pb.Mount(container_path="/dev/termination-log", host_path=str(term)),
    ]
    assert (cache / "a" / "b").is_dir() and (cache / "logs" / "web").is_dir()
    assert stat.S_IMODE((cache / "a").stat().st_mode) == 0o777  # the volume's mode


async def test_termination_message_file(manager: VolumeManager) -> None:
    pod = make_pod([])
    container = pod.spec.containers[0]
    first = await manager.termination_message_file(pod, container)
    second = await manager.termination_message_file(pod, container)
    assert first != second
    assert first.parent == manager.root_dir / "pods" / UID / "containers" / "app"
    assert len(first.name) == 8 and int(first.name, 16) >= 0
    assert first.read_bytes() == b""
    assert stat.S_IMODE(first.stat().st_mode) == 0o666
    mounts = mounts_for(pod, container, {}, termination_message_path=first)
    assert list(mounts) == [pb.Mount(container_path="/dev/termination-log", host_path=str(first))]
    first.write_text("bye")  # what the container writes, the kubelet reads back
    assert first.read_text() == "bye"


async def test_sub_path_escape_via_dotdot_refused(manager: VolumeManager) -> None:
    pod = make_pod(
        [{"name": "cache", "emptyDir": {}}],
        [{"name": "cache", "mountPath": "/x", "subPath": "../../etc"}],
    )
    paths = await manager.setup(pod)
    with pytest.raises(VolumeError, match=r"must not contain '\.\.'") as info:
        mounts_for(pod, pod.spec.containers[0], paths)
    assert info.value.reason == "CreateContainerConfigError"
    with pytest.raises(VolumeError, match=r"must not contain '\.\.'"):
        await manager.make_mounts(pod, pod.spec.containers[0], paths)


async def test_absolute_sub_path_refused(manager: VolumeManager) -> None:
    pod = make_pod(
        [{"name": "cache", "emptyDir": {}}],
        [{"name": "cache", "mountPath": "/x", "subPath": "/etc"}],
    )
    paths = await manager.setup(pod)
    with pytest.raises(VolumeError, match="must not be an absolute path"):
        mounts_for(pod, pod.spec.containers[0], paths)


async def test_sub_path_escape_via_symlink_refused(manager: VolumeManager, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    pod = make_pod(
        [{"name": "cache", "emptyDir": {}}],
        [{"name": "cache", "mountPath": "/x", "subPath": "link"}],
    )
    paths = await manager.setup(pod)
    (paths["cache"] / "link").symlink_to(outside)
    with pytest.raises(VolumeError, match="not within volume path"):
        mounts_for(pod, pod.spec.containers[0], paths)
    # a missing directory below the escaping link is not created outside either
    pod = make_pod(
        [{"name": "cache", "emptyDir": {}}],
        [{"name": "cache", "mountPath": "/x", "subPath": "link/new"}],
    )
    with pytest.raises(VolumeError, match="not within"):
        await manager.make_mounts(pod, pod.spec.containers[0], paths)
    assert not (outside / "new").exists()


async def test_sub_path_symlink_inside_the_volume_is_resolved(manager: VolumeManager) -> None:
    pod = make_pod(
        [{"name": "cache", "emptyDir": {}}],
        [{"name": "cache", "mountPath": "/x", "subPath": "alias"}],
    )
    paths = await manager.setup(pod)
    (paths["cache"] / "real").mkdir()
    (paths["cache"] / "alias").symlink_to("real")
    mounts = mounts_for(pod, pod.spec.containers[0], paths)
    assert mounts[0].host_path == os.path.realpath(paths["cache"] / "real")
    assert resolve_sub_path(paths["cache"], "alias") == Path(
        os.path.realpath(paths["cache"] / "real")
    )


async def test_unknown_volume_and_bad_propagation(manager: VolumeManager) -> None:
    pod = make_pod([], [{"name": "ghost", "mountPath": "/x"}])
    with pytest.raises(VolumeError, match="cannot find volume 'ghost'"):
        mounts_for(pod, pod.spec.containers[0], {})
    pod = make_pod(
        [{"name": "c", "emptyDir": {}}],
        [{"name": "c", "mountPath": "/x", "mountPropagation": "Sideways"}],
    )
    paths = await manager.setup(pod)
    with pytest.raises(VolumeError, match="invalid MountPropagation"):
        mounts_for(pod, pod.spec.containers[0], paths)


def test_mount_points_decodes_escapes() -> None:
    text = "36 35 98:0 /mnt1 /mnt\\040with\\040space rw - ext3 /dev/root rw\n"
    assert mount_points(text) == ["/mnt with space"]
