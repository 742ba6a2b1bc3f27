"""fsGroup: volumes that support ownership management get the pod's fsGroup as their
group, group permissions and setgid directories, as the kubelet's SetVolumeOwnership
leaves them (the tests run as root, so they can chown)."""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from minikubelet.api.pod import Pod
from minikubelet.kubeapi.objects import ConfigMapData, SecretData
from minikubelet.volumes import VolumeManager
from minikubelet.volumes.ownership import requires_permission_change, set_volume_ownership
from tests.unit.fake_objects import FakeObjects

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="chown needs root")

UID = "f5-group-uid"
FS_GROUP = 2000


def _mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def _gid(path: Path) -> int:
    return os.lstat(path).st_gid


def _tree(root: Path) -> Path:
    """root/ (0755), root/f (0644), root/d/ (0700), root/d/g (0600), root/link -> f."""
    root.mkdir(mode=0o755)
    os.chmod(root, 0o755)
    (root / "f").write_text("f")
    os.chmod(root / "f", 0o644)
    (root / "d").mkdir()
    os.chmod(root / "d", 0o700)
    (root / "d" / "g").write_text("g")
    os.chmod(root / "d" / "g", 0o600)
    (root / "link").symlink_to("f")
    return root


def test_walk_gives_group_rw_and_setgid_directories(tmp_path: Path) -> None:
    root = _tree(tmp_path / "vol")
    assert set_volume_ownership(root, FS_GROUP)
    assert {p.name: _gid(p) for p in (root, *root.rglob("*"))} == {
        "vol": FS_GROUP,
        "f": FS_GROUP,
        "d": FS_GROUP,
        "g": FS_GROUP,
        "link": FS_GROUP,  # the link itself (lchown)
    }
    assert _mode(root) == 0o2775
    assert _mode(root / "d") == 0o2770
    assert _mode(root / "f") == 0o664
    assert _mode(root / "d" / "g") == 0o660


def test_read_only_volumes_get_group_read_only(tmp_path: Path) -> None:
    root = _tree(tmp_path / "vol")
    set_volume_ownership(root, FS_GROUP, readonly=True)
    assert (_mode(root), _mode(root / "d")) == (0o2755, 0o2750)
    assert (_mode(root / "f"), _mode(root / "d" / "g")) == (0o644, 0o640)


def test_no_fs_group_changes_nothing(tmp_path: Path) -> None:
    root = _tree(tmp_path / "vol")
    assert not set_volume_ownership(root, None)
    assert (_gid(root / "f"), _mode(root / "f"), _mode(root)) == (0, 0o644, 0o755)


@pytest.mark.parametrize("policy", [None, "Always"])
def test_always_walks_every_time(tmp_path: Path, policy: str | None) -> None:
    root = _tree(tmp_path / "vol")
    set_volume_ownership(root, FS_GROUP, policy=policy)
    (root / "new").write_text("n")
    os.chown(root / "new", 0, 0)
    os.chmod(root / "new", 0o600)
    assert set_volume_ownership(root, FS_GROUP, policy=policy)
    assert (_gid(root / "new"), _mode(root / "new")) == (FS_GROUP, 0o660)


def test_on_root_mismatch_skips_a_volume_whose_root_is_right(tmp_path: Path) -> None:
    root = _tree(tmp_path / "vol")
    assert requires_permission_change(root, FS_GROUP, readonly=False)
    assert set_volume_ownership(root, FS_GROUP, policy="OnRootMismatch")
    assert not requires_permission_change(root, FS_GROUP, readonly=False)
    (root / "new").write_text("n")
    os.chown(root / "new", 0, 0)
    os.chmod(root / "new", 0o600)
    assert not set_volume_ownership(root, FS_GROUP, policy="OnRootMismatch")
    assert (_gid(root / "new"), _mode(root / "new")) == (0, 0o600)  # not walked
    # any mismatch at the root walks again: its group, its setgid bit, its permissions
    spoils: list[Callable[[], None]] = [
        lambda: os.chown(root, -1, 0),
        lambda: os.chmod(root, 0o775),
        lambda: os.chmod(root, 0o2705),
    ]
    for spoil in spoils:
        spoil()
        assert requires_permission_change(root, FS_GROUP, readonly=False)
        assert set_volume_ownership(root, FS_GROUP, policy="OnRootMismatch")
    assert (_gid(root / "new"), _mode(root / "new")) == (FS_GROUP, 0o660)
    # another group is a mismatch too
    assert requires_permission_change(root, 3000, readonly=False)


def _pod(volumes: list[dict[str, Any]], sc: dict[str, Any]) -> Pod:
    return Pod.from_dict(
        {
            "metadata": {"name": "fs", "namespace": "shop", "uid": UID},
            "spec": {
                "securityContext": sc,
                "containers": [{"name": "c", "image": "busybox"}],
                "volumes": volumes,
            },
        },
        validate=False,
    )


async def test_empty_dir_gets_the_fs_group_once_when_made(tmp_path: Path) -> None:
    manager = VolumeManager(tmp_path / "root", mount_tmpfs=False)
    pod = _pod(
        [{"name": "scratch", "emptyDir": {}}],
        {"fsGroup": FS_GROUP, "fsGroupChangePolicy": "OnRootMismatch"},
    )
    path = (await manager.setup(pod))["scratch"]
    assert (_gid(path), _mode(path)) == (FS_GROUP, 0o2777)
    # what the container leaves there stays as it is when the volume is set up again
    # (a kubelet restart), as the kubelet leaves an emptyDir that is ready
    (path / "private").write_text("p")
    assert _gid(path / "private") == FS_GROUP  # the setgid directory gives its group
    os.chown(path / "private", 0, 0)
    os.chmod(path / "private", 0o600)
    again = VolumeManager(tmp_path / "root", mount_tmpfs=False)
    await again.setup(pod)
    assert (_gid(path / "private"), _mode(path / "private")) == (0, 0o600)
    assert (_gid(path), _mode(path)) == (FS_GROUP, 0o2777)
    # without fsGroup: root's, 0777
    other = VolumeManager(tmp_path / "other", mount_tmpfs=False)
    path = (await other.setup(_pod([{"name": "scratch", "emptyDir": {}}], {})))["scratch"]
    assert (_gid(path), _mode(path)) == (0, 0o777)


async def test_written_volumes_get_the_fs_group_read_only_on_every_write(
    tmp_path: Path,
) -> None:
    objects = FakeObjects()
    objects.config_maps["shop", "cfg"] = ConfigMapData(data={"app.conf": "v1"})
    objects.secrets["shop", "creds"] = SecretData(data={"pass": b"s3cr3t"})
    manager = VolumeManager(tmp_path / "root", mount_tmpfs=False, objects=objects)
    pod = _pod(
        [
            {"name": "cfg", "configMap": {"name": "cfg"}},
            {"name": "creds", "secret": {"secretName": "creds", "defaultMode": 0o400}},
            {
                "name": "info",
                "downwardAPI": {
                    "items": [{"path": "name", "fieldRef": {"fieldPath": "metadata.name"}}]
                },
            },
        ],
        {"fsGroup": FS_GROUP},
    )
    paths = await manager.setup(pod)
    for name, file, mode in (("cfg", "app.conf", 0o644), ("creds", "pass", 0o440)):
        root = paths[name]
        data = root / "..data"
        assert (_gid(root), _mode(root)) == (FS_GROUP, 0o2755), name
        assert _mode(data.resolve()) == 0o2755
        real = (root / file).resolve()
        assert (_gid(real), _mode(real)) == (FS_GROUP, mode), name
    assert _gid(paths["info"] / "name") == FS_GROUP
    # a resync with nothing new writes nothing, though the walk changed the modes
    written = {name: (paths[name] / "..data").resolve() for name in ("cfg", "creds")}
    await manager.resync()
    assert {name: (paths[name] / "..data").resolve() for name in written} == written
    # an update writes new files: they get the group too
    objects.config_maps["shop", "cfg"] = ConfigMapData(data={"app.conf": "v2"})
    await manager.resync()
    target = (paths["cfg"] / "app.conf").resolve()
    assert target.read_text() == "v2"
    assert (target.stat().st_gid, stat.S_IMODE(target.stat().st_mode)) == (FS_GROUP, 0o644)


def _token_pod(sc: dict[str, Any], users: list[int | None]) -> Pod:
    containers = [
        {
            "name": f"c{i}",
            "image": "busybox",
            **({"securityContext": {"runAsUser": u}} if u else {}),
        }
        for i, u in enumerate(users)
    ]
    return Pod.from_dict(
        {
            "metadata": {"name": "fs", "namespace": "shop", "uid": UID},
            "spec": {
                "securityContext": sc,
                "containers": containers,
                "volumes": [
                    {
                        "name": "kube-api-access",
                        "projected": {
                            "sources": [
                                {"serviceAccountToken": {"path": "token"}},
                                {
                                    "downwardAPI": {
                                        "items": [
                                            {
                                                "path": "namespace",
                                                "fieldRef": {"fieldPath": "metadata.namespace"},
                                            }
                                        ]
                                    }
                                },
                            ]
                        },
                    }
                ],
            },
        },
        validate=False,
    )


TOKEN_CASES: list[
    tuple[dict[str, Any], list[int | None], tuple[int, int, int], tuple[int, int, int] | None]
] = [
    # the kubelet writes the token 0600 and the fsGroup walk makes it 0640
    ({"fsGroup": FS_GROUP}, [None], (0, FS_GROUP, 0o640), (0, FS_GROUP, 0o644)),
    # every container runs as 1000: the token is its own, 0600
    ({"runAsUser": 1000}, [None, None], (1000, 0, 0o600), (0, 0, 0o644)),
    ({}, [1000, 1000], (1000, 0, 0o600), (0, 0, 0o644)),
    ({"runAsUser": 1000, "fsGroup": FS_GROUP}, [None], (1000, FS_GROUP, 0o640), None),
    # users that differ, or one that runs as the image says: the default mode
    ({}, [1000, 1001], (0, 0, 0o644), None),
    ({}, [1000, None], (0, 0, 0o644), None),
]


async def test_projected_token_owner_and_mode(tmp_path: Path) -> None:
    for index, (sc, users, token, namespace) in enumerate(TOKEN_CASES):
        manager = VolumeManager(tmp_path / str(index), mount_tmpfs=False, objects=FakeObjects())
        path = (await manager.setup(_token_pod(sc, users)))["kube-api-access"]

        def owner(name: str, path: Path = path) -> tuple[int, int, int]:
            st = (path / name).stat()
            return (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode))

        assert owner("token") == token, (sc, users)
        if namespace is not None:
            assert owner("namespace") == namespace, (sc, users)
