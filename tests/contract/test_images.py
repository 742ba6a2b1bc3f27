"""ImageService: pull, status, list, remove, and the errors a person can hit."""

from __future__ import annotations

import pytest

from minikubelet.cri.client import CRIClient
from minikubelet.cri.v1 import api_pb2 as pb
from minikubelet.errors import CRIError, InvalidArgument, NotFound
from minikubelet.reference import parse
from tests.contract.conftest import RuntimeUnderTest
from tests.harness.wait import wait_until


async def test_pull_then_status_and_list(cri: CRIClient, rt: RuntimeUnderTest) -> None:
    image_ref = await cri.pull_image(rt.busybox)
    assert image_ref.startswith("sha256:")
    image = await cri.image_status(rt.busybox)
    assert image is not None
    assert image.id == image_ref
    assert str(parse(rt.busybox)) in image.repo_tags
    assert any(d.startswith(parse(rt.busybox).repository + "@sha256:") for d in image.repo_digests)
    assert image.size > 0
    listed = {i.id for i in await cri.list_images()}
    assert image_ref in listed
    # by ID too
    by_id = await cri.image_status(image_ref)
    assert by_id is not None and by_id.id == image_ref


async def test_pulling_twice_gives_the_same_image(cri: CRIClient, rt: RuntimeUnderTest) -> None:
    assert await cri.pull_image(rt.busybox) == await cri.pull_image(rt.busybox)


async def test_pull_by_digest(cri: CRIClient, rt: RuntimeUnderTest) -> None:
    image = await cri.image_status(rt.busybox)
    assert image is not None
    by_digest = next(d for d in image.repo_digests)
    if rt.busybox_digest:
        assert by_digest.endswith("@" + rt.busybox_digest)
    assert await cri.pull_image(by_digest) == image.id
    status = await cri.image_status(by_digest)
    assert status is not None and status.id == image.id


async def test_image_status_of_an_absent_image_is_empty(
    cri: CRIClient, rt: RuntimeUnderTest
) -> None:
    assert await cri.image_status(rt.missing_image) is None


async def test_pulling_a_missing_image_fails(cri: CRIClient, rt: RuntimeUnderTest) -> None:
    with pytest.raises(CRIError) as err:
        await cri.pull_image(rt.missing_image)
    assert "does-not-exist" in err.value.message
    if rt.ours:
        assert isinstance(err.value, NotFound)
    assert await cri.image_status(rt.missing_image) is None


async def test_a_malformed_reference_is_refused(cri: CRIClient, rt: RuntimeUnderTest) -> None:
    with pytest.raises(CRIError) as err:
        await cri.pull_image("Not A Reference!")
    if rt.ours:
        assert isinstance(err.value, InvalidArgument)
        assert "not a valid image reference" in err.value.message


async def test_remove_image_is_idempotent(cri: CRIClient, rt: RuntimeUnderTest) -> None:
    await cri.pull_image(rt.busybox)
    await cri.remove_image(rt.busybox)
    assert await cri.image_status(rt.busybox) is None
    await cri.remove_image(rt.busybox)  # already gone: still fine
    await cri.pull_image(rt.busybox)  # the rest of the suite needs it back
    assert await cri.image_status(rt.busybox) is not None


async def test_image_fs_info(cri: CRIClient) -> None:
    async def used() -> pb.FilesystemUsage | None:
        # containerd refreshes usage periodically, so a fresh pull may not show yet
        info = await cri.image_fs_info()
        fs = info.image_filesystems[0] if info.image_filesystems else None
        return fs if fs is not None and fs.used_bytes.value > 0 else None

    fs = await wait_until(used, timeout=15, message="image filesystem usage")
    assert fs.fs_id.mountpoint
