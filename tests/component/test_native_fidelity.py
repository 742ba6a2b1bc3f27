"""The native runtime as containerd 2.1 and CRI-O 1.31 behave: Localhost seccomp
profiles at any absolute path, and image volumes (CRI ``Mount.image``).

They share the session's native runtime; each test makes and removes its own pod.
"""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from minikubelet.cri.client import CRIClient
from minikubelet.cri.v1 import api_pb2 as pb
from minikubelet.errors import InvalidArgument, NotFound
from minikubelet.util.mountinfo import read_mount_points
from tests.contract.pods import container_config, pod, sandbox_config, wait_exited
from tests.harness.fixtures import BUSYBOX_TAG, HarnessImages
from tests.harness.images import build_busybox_image, build_whiteout_image, push_image
from tests.harness.native import NativeRuntime
from tests.harness.registry import LocalRegistry

#: Deny mkdir (and mkdirat, which busybox may use) with EPERM; allow everything else.
DENY_MKDIR = {
    "defaultAction": "SCMP_ACT_ALLOW",
    "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1}],
}


@pytest.fixture
async def cri(
    native_runtime: NativeRuntime, test_images: HarnessImages
) -> AsyncIterator[CRIClient]:
    async with CRIClient(native_runtime.endpoint, timeout=60) as client:
        await client.pull_image(test_images.busybox)
        yield client


@pytest.fixture(scope="module")
def whiteout_image(
    local_registry: LocalRegistry,
    test_images: HarnessImages,
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
) -> str:
    """busybox plus two layers: ``/data`` holds only ``y`` and ``/etc/a`` is gone."""
    cache = getattr(request.config, "cache", None)
    cache_dir = (
        cache.mkdir("minikubelet-test-images")
        if cache is not None
        else tmp_path_factory.mktemp("images")
    )
    busybox = build_busybox_image(cache_dir, tag=BUSYBOX_TAG)
    assert busybox.manifest_digest == test_images.busybox_digest
    return push_image(
        build_whiteout_image(cache_dir, busybox), local_registry.host, "fidelity/whiteout"
    )


async def _run(
    cri: CRIClient, sandbox_id: str, sb: pb.PodSandboxConfig, config: pb.ContainerConfig
) -> tuple[pb.ContainerStatus, str]:
    """Run ``config`` to its end: its status and its log."""
    cid = await cri.create_container(sandbox_id, config, sb)
    await cri.start_container(cid)
    status = await wait_exited(cri, cid)
    log = Path(sb.log_directory, config.log_path).read_text()
    return status, log


# -- Localhost seccomp ----------------------------------------------------------------------


async def test_localhost_seccomp_profile_at_any_absolute_path(
    cri: CRIClient, test_images: HarnessImages, tmp_path: Path
) -> None:
    """A profile the user keeps anywhere is loaded and applied: mkdir is refused."""
    profile = tmp_path / "my-profiles" / "deny-mkdir.json"
    profile.parent.mkdir()
    profile.write_text(json.dumps(DENY_MKDIR))
    sb = sandbox_config(tmp_path / "logs")
    async with pod(cri, sb) as sandbox_id:
        config = container_config(
            test_images.busybox,
            "confined",
            ["sh", "-c", "mkdir /tmp/d && echo made || echo refused; touch /tmp/f && echo wrote"],
        )
        config.linux.security_context.seccomp.CopyFrom(
            pb.SecurityProfile(
                profile_type=pb.SecurityProfile.Localhost, localhost_ref=str(profile)
            )
        )
        status, log = await _run(cri, sandbox_id, sb, config)
        assert status.exit_code == 0
        lines = [line.split(" ", 3)[3] for line in log.splitlines()]
        assert "refused" in lines and "made" not in lines
        assert "wrote" in lines  # what the profile allows still works
        assert any("Operation not permitted" in line for line in lines), lines


@pytest.mark.parametrize(
    ("content", "why"),
    [
        (None, "no such file"),
        ("{not json", "Expecting property name"),
        ('{"syscalls": []}', "defaultAction"),
    ],
)
async def test_localhost_seccomp_profile_missing_or_malformed(
    cri: CRIClient, test_images: HarnessImages, tmp_path: Path, content: str | None, why: str
) -> None:
    profile = tmp_path / "profile.json"
    if content is not None:
        profile.write_text(content)
    sb = sandbox_config(tmp_path / "logs")
    async with pod(cri, sb) as sandbox_id:
        config = container_config(test_images.busybox, "bad-profile", ["true"])
        config.linux.security_context.seccomp.CopyFrom(
            pb.SecurityProfile(
                profile_type=pb.SecurityProfile.Localhost, localhost_ref=str(profile)
            )
        )
        with pytest.raises(InvalidArgument, match=f"{profile}.*{why}"):
            await cri.create_container(sandbox_id, config, sb)
        assert not await cri.list_containers(pb.ContainerFilter(pod_sandbox_id=sandbox_id))


# -- image volumes ----------------------------------------------------------------------------


def _image_mount(path: str, image: str, sub_path: str = "") -> pb.Mount:
    return pb.Mount(
        container_path=path, image=pb.ImageSpec(image=image), readonly=True, image_sub_path=sub_path
    )


async def test_image_volume_is_mounted_read_only_and_reported(
    cri: CRIClient,
    native_runtime: NativeRuntime,
    test_images: HarnessImages,
    whiteout_image: str,
    tmp_path: Path,
) -> None:
    """A one-layer image and a layered one (whiteouts applied), a subPath of it, read-only;
    the status names the image and the digest mounted; removal leaves no mount."""
    await cri.pull_image(whiteout_image)
    sb = sandbox_config(tmp_path / "logs")
    async with pod(cri, sb) as sandbox_id:
        config = container_config(
            test_images.busybox,
            "reader",
            [
                "sh",
                "-c",
                "ls /img/bin/busybox; ls /layered/data; ls /layered/etc/a 2>/dev/null || "
                "echo no-a; ls /sub; touch /img/x 2>&1; touch /layered/x 2>&1; "
                "grep -E ' /(img|layered|sub) ' /proc/self/mounts | cut -d' ' -f2,4",
            ],
        )
        config.mounts.extend(
            [
                _image_mount("/img", test_images.busybox),
                _image_mount("/layered", whiteout_image),
                _image_mount("/sub", whiteout_image, sub_path="data"),
            ]
        )
        status, log = await _run(cri, sandbox_id, sb, config)
        lines = [line.split(" ", 3)[3] for line in log.splitlines()]
        assert lines[:4] == ["/img/bin/busybox", "y", "no-a", "y"], lines
        assert lines[4:6] == [
            "touch: /img/x: Read-only file system",
            "touch: /layered/x: Read-only file system",
        ]
        options = dict(line.split(" ", 1) for line in lines[6:])
        assert sorted(options) == ["/img", "/layered", "/sub"]
        for opts in options.values():
            assert {"ro", "nosuid", "nodev"} <= set(opts.split(","))
        pulled = await cri.image_status(whiteout_image)
        assert pulled is not None
        whiteout_digest = pulled.repo_digests[0]
        busybox_digest = f"{test_images.busybox.rsplit(':', 1)[0]}@{test_images.busybox_digest}"
        reported = {
            mt.container_path: (mt.image.image, mt.image.image_ref, mt.image_sub_path, mt.readonly)
            for mt in status.mounts
        }
        assert reported == {
            "/img": (test_images.busybox, busybox_digest, "", True),
            "/layered": (whiteout_image, whiteout_digest, "", True),
            "/sub": (whiteout_image, whiteout_digest, "data", True),
        }
        await cri.remove_container(status.id)
        root = str(native_runtime.root / "containers" / status.id)
        assert not [p for p in read_mount_points() if p.startswith(root)]
        assert not os.path.exists(root)


async def test_image_volume_refusals(
    cri: CRIClient, native_runtime: NativeRuntime, test_images: HarnessImages, tmp_path: Path
) -> None:
    """An image not pulled is NotFound; a subPath missing from the image, or leaving it
    through a symlink's target, is InvalidArgument naming it; nothing stays behind."""
    sb = sandbox_config(tmp_path / "logs")
    async with pod(cri, sb) as sandbox_id:
        missing = container_config(test_images.busybox, "missing", ["true"])
        missing.mounts.append(_image_mount("/img", f"{test_images.busybox}-not-pulled"))
        with pytest.raises(NotFound, match=r"not-pulled.*/img"):
            await cri.create_container(sandbox_id, missing, sb)
        no_dir = container_config(test_images.busybox, "nodir", ["true"])
        no_dir.mounts.append(_image_mount("/img", test_images.busybox, sub_path="no/such"))
        with pytest.raises(InvalidArgument, match="'no/such' does not exist"):
            await cri.create_container(sandbox_id, no_dir, sb)
        assert not await cri.list_containers(pb.ContainerFilter(pod_sandbox_id=sandbox_id))
    containers = native_runtime.root / "containers"
    assert not [p for p in read_mount_points() if p.startswith(f"{containers}/")]


async def test_image_sub_path_stays_inside_the_image(
    cri: CRIClient, test_images: HarnessImages, tmp_path: Path
) -> None:
    """``..`` stops at the image's root, as a path inside the image would."""
    sb = sandbox_config(tmp_path / "logs")
    async with pod(cri, sb) as sandbox_id:
        config = container_config(test_images.busybox, "up", ["ls", "/img/busybox"])
        config.mounts.append(_image_mount("/img", test_images.busybox, sub_path="../../../bin"))
        status, log = await _run(cri, sandbox_id, sb, config)
        assert status.exit_code == 0, log
        assert log.splitlines()[0].endswith("/img/busybox")
