"""Smoke test of the harness: the registry serves our images and containerd's CRI is up."""

from __future__ import annotations

import hashlib
import subprocess

import pytest

from tests.harness.containerd import CRI_PLUGIN, Containerd, parse_plugins
from tests.harness.fixtures import BUSYBOX_REPO, BUSYBOX_TAG, HarnessImages
from tests.harness.images import MEDIA_MANIFEST
from tests.harness.registry import LocalRegistry, http_get

pytestmark = pytest.mark.containerd


def test_registry_serves_busybox_manifest(
    local_registry: LocalRegistry, test_images: HarnessImages
) -> None:
    assert test_images.busybox == f"{local_registry.host}/{BUSYBOX_REPO}:{BUSYBOX_TAG}"
    status, body = http_get(
        local_registry.host,
        f"/v2/{BUSYBOX_REPO}/manifests/{BUSYBOX_TAG}",
        {"Accept": MEDIA_MANIFEST},
    )
    assert status == 200
    assert "sha256:" + hashlib.sha256(body).hexdigest() == test_images.busybox_digest


def test_containerd_cri_plugin_loaded(containerd: Containerd) -> None:
    assert containerd.endpoint == "unix://" + containerd.address
    out = subprocess.run(
        ["ctr", "--address", containerd.address, "plugins", "ls"],
        check=True,
        capture_output=True,
        text=True,
        timeout=10,
    ).stdout
    assert parse_plugins(out).get(CRI_PLUGIN) == "ok", out
