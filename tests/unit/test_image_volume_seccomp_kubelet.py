"""The kubelet's side of image volumes and Localhost seccomp profiles.

Image volumes (``volumes[].image``, Kubernetes 1.31+): validated as the API server
does, mounted as CRI ``Mount{image, image_sub_path, readonly}``; the image is pulled
with the volume's pull policy. Localhost seccomp profiles: validated as local
descending paths and sent as ``<root-dir>/seccomp/<localhostProfile>``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from minikubelet.api.pod import Pod
from minikubelet.api.validation import PodValidationError
from minikubelet.backoff import Backoff
from minikubelet.clock import ManualClock
from minikubelet.cri.v1 import api_pb2 as pb
from minikubelet.events import EventRecorder
from minikubelet.images import ImageManager, ImagePullError, with_default_tag
from minikubelet.kuberuntime.convert import container_config
from minikubelet.kuberuntime.envvars import ConfigError
from minikubelet.kuberuntime.podsetup import PodSetup
from minikubelet.volumes.manager import VolumeError, mounts_for


def pod(
    *, volumes: list[dict[str, Any]], container: dict[str, Any] | None = None, **spec: Any
) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "web", "namespace": "shop", "uid": "u1"},
        "spec": {
            "volumes": volumes,
            "containers": [{"name": "app", "image": "busybox:1.36", **(container or {})}],
            **spec,
        },
    }


def rejection(data: dict[str, Any]) -> str:
    with pytest.raises(PodValidationError) as caught:
        Pod.from_dict(data)
    return str(caught.value)


# -- validation -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ({}, "spec.volumes[0].image.reference: Required value"),
        (
            {"reference": "busybox:1.36", "pullPolicy": "Sometimes"},
            'spec.volumes[0].image.pullPolicy: Unsupported value: "Sometimes": supported values: '
            '"Always", "IfNotPresent", "Never"',
        ),
    ],
)
def test_image_volume_refusals(source: dict[str, Any], message: str) -> None:
    assert message in rejection(pod(volumes=[{"name": "tools", "image": source}]))


@pytest.mark.parametrize(
    ("profile", "message"),
    [
        (
            {"type": "Localhost"},
            "spec.securityContext.seccompProfile.localhostProfile: Required value: must be set "
            "when seccomp type is Localhost",
        ),
        (
            {"type": "Localhost", "localhostProfile": "../../etc/profile.json"},
            "spec.securityContext.seccompProfile.localhostProfile: Invalid value: "
            "\"../../etc/profile.json\": must not contain '..'",
        ),
        (
            {"type": "Localhost", "localhostProfile": "/etc/profile.json"},
            "spec.securityContext.seccompProfile.localhostProfile: Invalid value: "
            '"/etc/profile.json": must be a relative path',
        ),
        (
            {"type": "RuntimeDefault", "localhostProfile": "p.json"},
            'spec.securityContext.seccompProfile.localhostProfile: Invalid value: "p.json": '
            "can only be set when seccomp type is Localhost",
        ),
        (
            {"type": "Strict"},
            'spec.securityContext.seccompProfile.type: Unsupported value: "Strict": supported '
            'values: "Localhost", "RuntimeDefault", "Unconfined"',
        ),
        ({}, "spec.securityContext.seccompProfile.type: Required value"),
    ],
)
def test_seccomp_profile_refusals(profile: dict[str, Any], message: str) -> None:
    assert message in rejection(pod(volumes=[], securityContext={"seccompProfile": profile}))


def test_container_seccomp_profile_is_validated_too() -> None:
    data = pod(
        volumes=[],
        container={
            "securityContext": {
                "seccompProfile": {"type": "Localhost", "localhostProfile": "a/../../b"}
            }
        },
    )
    assert "spec.containers[0].securityContext.seccompProfile.localhostProfile" in rejection(data)


# -- what the runtime is sent ---------------------------------------------------------------


def test_image_volume_mounts() -> None:
    p = Pod.from_dict(
        pod(
            volumes=[
                {"name": "tools", "image": {"reference": "busybox:1.36"}},
                {"name": "scratch", "emptyDir": {}},
            ],
            container={
                "volumeMounts": [
                    {"name": "tools", "mountPath": "/tools", "subPath": "bin"},
                    {"name": "tools", "mountPath": "/img"},
                    {"name": "scratch", "mountPath": "/scratch"},
                ]
            },
        )
    )
    image = pb.ImageSpec(image="sha256:abc", user_specified_image="busybox:1.36")
    mounts = mounts_for(
        p, p.spec.containers[0], {"scratch": Path("/tmp")}, image_volumes={"tools": image}
    )
    assert mounts == [
        pb.Mount(container_path="/tools", image=image, image_sub_path="bin", readonly=True),
        pb.Mount(container_path="/img", image=image, readonly=True),
        pb.Mount(container_path="/scratch", host_path="/tmp"),
    ]


def test_image_volume_sub_path_may_not_leave_the_image() -> None:
    p = Pod.from_dict(
        pod(
            volumes=[{"name": "tools", "image": {"reference": "busybox:1.36"}}],
            container={
                "volumeMounts": [{"name": "tools", "mountPath": "/t", "subPathExpr": "../$(X)"}]
            },
        )
    )
    with pytest.raises(VolumeError, match=r"must be a relative path without '\.\.'"):
        mounts_for(
            p, p.spec.containers[0], {}, env=[("X", "etc")], image_volumes={"tools": pb.ImageSpec()}
        )


async def test_localhost_profile_is_sent_under_the_root_dir(tmp_path: Path) -> None:
    """The kubelet's ``<root-dir>/seccomp``, as the real kubelet's ``/var/lib/kubelet/seccomp``."""
    p = Pod.from_dict(
        pod(
            volumes=[],
            securityContext={
                "seccompProfile": {"type": "Localhost", "localhostProfile": "profiles/audit.json"}
            },
        )
    )
    setup = PodSetup(
        root_dir=tmp_path / "root",
        log_root=tmp_path / "logs",
        node_name="n",
        host_ip="10.0.0.1",
        exec_runner=None,  # type: ignore[arg-type]
    )
    await setup.prepare_pod(p, ["10.1.0.2"])
    config = await setup.container_config(
        p, p.spec.containers[0], restart_count=0, image="i", pod_ips=["10.1.0.2"]
    )
    assert config.linux.security_context.seccomp == pb.SecurityProfile(
        profile_type=pb.SecurityProfile.Localhost,
        localhost_ref=str(tmp_path / "root" / "seccomp" / "profiles" / "audit.json"),
    )


def test_localhost_profile_outside_the_root_is_refused() -> None:
    """A pod that skipped validation still never names a file outside the root."""
    p = Pod.from_dict(pod(volumes=[]))
    sc = {"seccompProfile": {"type": "Localhost", "localhostProfile": "../../etc/shadow"}}
    object.__setattr__(p.spec.containers[0], "security_context", sc)
    with pytest.raises(ConfigError, match=r"without '\.\.'"):
        container_config(p, p.spec.containers[0], restart_count=0, image="i")


# -- pulling the volume's image ---------------------------------------------------------------


class Images:
    """An image service holding ``present`` (reference -> image ID)."""

    def __init__(self, present: dict[str, str]) -> None:
        self.present = present
        self.pulls: list[str] = []

    async def pull_image(
        self,
        image: str,
        auth: pb.AuthConfig | None = None,
        sandbox_config: pb.PodSandboxConfig | None = None,
    ) -> str:
        self.pulls.append(image)
        self.present[image] = "sha256:" + "2" * 64
        return self.present[image]

    async def image_status(self, image: str, verbose: bool = False) -> pb.Image | None:
        found = self.present.get(image)
        return pb.Image(id=found) if found else None


@pytest.mark.parametrize(
    ("source", "pulls"),
    [
        ({"reference": "reg.example/tools:1"}, []),  # IfNotPresent, the default for a tag
        ({"reference": "reg.example/tools:1", "pullPolicy": "Always"}, ["reg.example/tools:1"]),
        ({"reference": "reg.example/tools"}, ["reg.example/tools:latest"]),  # Always: no tag
        ({"reference": "reg.example/tools:2"}, ["reg.example/tools:2"]),  # not present
    ],
)
async def test_volume_image_is_pulled_by_its_policy(
    source: dict[str, str], pulls: list[str]
) -> None:
    clock = ManualClock()
    recorder = EventRecorder(node_name="n", clock=clock)
    manager = ImageManager(recorder, Backoff(initial=10, maximum=300, clock=clock))
    service = Images({"reg.example/tools:1": "sha256:" + "1" * 64, "reg.example/tools:latest": "x"})
    p = Pod.from_dict(pod(volumes=[{"name": "tools", "image": source}]))
    ref = await manager.ensure_volume_image(service, p, source, pb.PodSandboxConfig())
    assert service.pulls == pulls
    assert ref == service.present[with_default_tag(source["reference"])]


async def test_volume_image_never_pulled_is_err_image_never_pull() -> None:
    clock = ManualClock()
    manager = ImageManager(
        EventRecorder(node_name="n", clock=clock), Backoff(initial=10, maximum=300, clock=clock)
    )
    source = {"reference": "reg.example/tools:1", "pullPolicy": "Never"}
    p = Pod.from_dict(pod(volumes=[{"name": "tools", "image": source}]))
    with pytest.raises(ImagePullError) as caught:
        await manager.ensure_volume_image(Images({}), p, source, pb.PodSandboxConfig())
    assert caught.value.reason == "ErrImageNeverPull"
