"""Pull secrets to CRI AuthConfig: the keyring's matching and the image manager's tries."""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from typing import Any

import pytest

from minikubelet.api.pod import Pod
from minikubelet.backoff import Backoff
from minikubelet.clock import ManualClock
from minikubelet.cri.trace import TraceRecorder, format_text
from minikubelet.cri.v1 import api_pb2 as pb
from minikubelet.errors import PermissionDenied
from minikubelet.events import EventRecorder
from minikubelet.images import ImageManager, ImagePullError
from minikubelet.kubeapi.credentials import (
    CredentialError,
    Keyring,
    PodPullCredentials,
    RegistryAuth,
    keyring_from_secrets,
    parse_docker_config,
    registry_key,
    urls_match,
)


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def dockerconfigjson(
    name: str, auths: dict[str, Any], namespace: str = "default"
) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "namespace": namespace},
        "type": "kubernetes.io/dockerconfigjson",
        "data": {".dockerconfigjson": b64(json.dumps({"auths": auths}))},
    }


def dockercfg(name: str, auths: dict[str, Any]) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "namespace": "default"},
        "type": "kubernetes.io/dockercfg",
        "data": {".dockercfg": b64(json.dumps(auths))},
    }


def users(found: list[RegistryAuth]) -> list[str]:
    return [a.username for a in found]


# -- parsing ---------------------------------------------------------------------------------


def test_auth_is_decoded_and_wins_over_username_and_password() -> None:
    config = parse_docker_config(
        json.dumps(
            {
                "auths": {
                    "reg.example": {"auth": b64("alice:s3:cret"), "username": "x", "password": "y"},
                    "tok.example": {"identitytoken": "idt", "registrytoken": "rt"},
                }
            }
        ),
        json_format=True,
    )
    assert config["reg.example"].username == "alice"
    assert config["reg.example"].password == "s3:cret"  # split on the first colon
    assert config["tok.example"].identity_token == "idt"
    assert config["tok.example"].registry_token == "rt"
    assert "s3:cret" not in repr(config["reg.example"])


@pytest.mark.parametrize(
    "content",
    [
        "not json",
        json.dumps({"auths": {"reg": {"auth": b64("no-colon")}}}),
        json.dumps({"auths": {"reg": {"auth": "%%%"}}}),
        json.dumps({"auths": {"reg": "a string"}}),
        json.dumps({"auths": {"reg": {"username": 5}}}),
        json.dumps(["a list"]),
    ],
)
def test_a_bad_docker_config_is_a_credential_error(content: str) -> None:
    with pytest.raises(CredentialError):
        parse_docker_config(content, json_format=True)


@pytest.mark.parametrize(
    ("location", "key"),
    [
        ("reg.example", "reg.example"),
        ("https://index.docker.io/v1/", "index.docker.io"),
        ("http://reg.example:5000/v2/", "reg.example:5000"),
        ("reg.example/team", "reg.example/team"),
        ("https://reg.example/v2/team/app", "reg.example/team/app"),
        ("*.example.com", "*.example.com"),
    ],
)
def test_registry_keys(location: str, key: str) -> None:
    assert registry_key(location) == key


# -- matching --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("glob", "target", "matches"),
    [
        ("reg.example", "reg.example/team/app", True),
        ("reg.example", "other.example/team/app", False),
        ("*.example.com", "registry.example.com/app", True),
        ("*.example.com", "example.com/app", False),  # as many host parts
        ("*.example.com", "a.b.example.com/app", False),
        ("reg.*.com", "reg.eu.com/app", True),
        ("reg.example:5000", "reg.example:5000/app", True),
        ("reg.example:5000", "reg.example/app", False),  # the port must be the same
        ("reg.example", "reg.example:5000/app", False),
        ("reg.example/team", "reg.example/team/app", True),
        ("reg.example/team", "reg.example/other/app", False),
        ("127.0.0.1:5000", "127.0.0.1:5000/busybox", True),
    ],
)
def test_urls_match(glob: str, target: str, matches: bool) -> None:
    assert urls_match(glob, target) is matches


def test_the_most_specific_key_comes_first_and_every_match_is_offered() -> None:
    keyring = Keyring()
    keyring.add(
        {
            "reg.example": RegistryAuth(username="host"),
            "reg.example/team": RegistryAuth(username="team"),
            "*.example": RegistryAuth(username="wild"),
            "other.example": RegistryAuth(username="other"),
        }
    )
    assert users(keyring.lookup("reg.example/team/app")) == ["team", "host", "wild"]
    assert users(keyring.lookup("reg.example/solo")) == ["host", "wild"]
    assert users(keyring.lookup("nowhere.test/app")) == []


def test_docker_hub_credentials_serve_hub_images() -> None:
    keyring = Keyring()
    keyring.add({"https://index.docker.io/v1/": RegistryAuth(username="hub")})
    assert users(keyring.lookup("docker.io/library/busybox")) == ["hub"]
    assert users(keyring.lookup("reg.example/busybox")) == []


def test_secrets_of_both_types_in_order_and_others_ignored() -> None:
    keyring = keyring_from_secrets(
        [
            dockerconfigjson("a", {"reg.example": {"username": "json"}}),
            dockercfg("b", {"https://reg.example": {"auth": b64("cfg:pw")}}),
            {"metadata": {"name": "opaque"}, "type": "Opaque", "data": {"x": b64("y")}},
            # a dockercfg key in a dockerconfigjson secret is not read
            {
                "metadata": {"name": "c"},
                "type": "kubernetes.io/dockerconfigjson",
                "data": {".dockercfg": b64(json.dumps({"reg.example": {"username": "no"}}))},
            },
        ]
    )
    assert users(keyring.lookup("reg.example/app")) == ["json", "cfg"]


def test_a_secret_that_does_not_parse_names_itself() -> None:
    bad = {
        "metadata": {"name": "bad", "namespace": "ns"},
        "type": "kubernetes.io/dockerconfigjson",
        "data": {".dockerconfigjson": b64("{")},
    }
    with pytest.raises(CredentialError, match="pull secret ns/bad: invalid docker config"):
        keyring_from_secrets([bad])


# -- the image manager's pulls ---------------------------------------------------------------


class Secrets:
    def __init__(self, *secrets: dict[str, Any]) -> None:
        self.secrets = {s["metadata"]["name"]: s for s in secrets}

    async def get_secret(self, namespace: str, name: str) -> Mapping[str, Any]:
        if name not in self.secrets:
            raise LookupError(f'secrets "{name}" not found')
        return self.secrets[name]


class Images:
    """An image service whose registry accepts only the password ``good``."""

    def __init__(self, *, password: str | None = "good") -> None:
        self.password = password
        self.pulls: list[pb.AuthConfig | None] = []

    async def pull_image(
        self,
        image: str,
        auth: pb.AuthConfig | None = None,
        sandbox_config: pb.PodSandboxConfig | None = None,
    ) -> str:
        self.pulls.append(auth)
        if self.password is not None and (auth is None or auth.password != self.password):
            raise PermissionDenied(f"pulling {image}: 401 Unauthorized", method="PullImage")
        return "sha256:" + "1" * 64

    async def image_status(self, image: str, verbose: bool = False) -> pb.Image | None:
        return None


def pod_with(image: str, secrets: list[str]) -> Pod:
    return Pod.from_dict(
        {
            "metadata": {"name": "p", "namespace": "default", "uid": "uid-p"},
            "spec": {
                "containers": [{"name": "c", "image": image, "imagePullPolicy": "Always"}],
                "imagePullSecrets": [{"name": n} for n in secrets],
            },
        },
        validate=False,
    )


def manager(secrets: Secrets) -> tuple[ImageManager, EventRecorder]:
    clock = ManualClock()
    recorder = EventRecorder(node_name="n", clock=clock)
    images = ImageManager(
        recorder,
        Backoff(initial=10, maximum=300, clock=clock),
        credentials=PodPullCredentials(secrets, recorder),
    )
    return images, recorder


async def test_the_matching_credentials_reach_pull_image_tried_in_order() -> None:
    secrets = Secrets(
        dockerconfigjson(
            "team",
            {
                "reg.example:5000/team": {"username": "t", "password": "bad"},
                "reg.example:5000": {"auth": b64("h:good")},
            },
        )
    )
    images, recorder = manager(secrets)
    service = Images()
    p = pod_with("reg.example:5000/team/app:1", ["", "team"])
    await images.ensure_image(service, p, p.spec.containers[0], pb.PodSandboxConfig())
    assert [(a.username, a.password) for a in service.pulls if a] == [("t", "bad"), ("h", "good")]
    assert recorder.events()[-1]["reason"] == "Pulled"


async def test_no_matching_credentials_pull_anonymously() -> None:
    images, _ = manager(Secrets(dockerconfigjson("s", {"other.example": {"username": "u"}})))
    service = Images(password=None)
    p = pod_with("reg.example/app:1", ["s"])
    await images.ensure_image(service, p, p.spec.containers[0], pb.PodSandboxConfig())
    assert service.pulls == [None]


async def test_every_credential_refused_is_err_image_pull_with_each_reason() -> None:
    secrets = Secrets(
        dockerconfigjson("a", {"reg.example": {"username": "u1", "password": "x"}}),
        dockerconfigjson("b", {"reg.example/app": {"username": "u2", "password": "y"}}),
    )
    images, recorder = manager(secrets)
    service = Images()
    p = pod_with("reg.example/app:1", ["a", "b"])
    with pytest.raises(ImagePullError) as caught:
        await images.ensure_image(service, p, p.spec.containers[0], pb.PodSandboxConfig())
    assert caught.value.reason == "ErrImagePull"
    # the same message twice is told once, as apimachinery's aggregate does
    assert caught.value.message == (
        'Failed to pull image "reg.example/app:1": pulling reg.example/app:1: 401 Unauthorized'
    )
    assert [a.username for a in service.pulls if a] == ["u2", "u1"]
    assert recorder.events()[-1]["reason"] == "Failed"


async def test_a_missing_pull_secret_warns_and_the_pull_goes_on() -> None:
    images, recorder = manager(Secrets())
    service = Images(password=None)
    p = pod_with("reg.example/app:1", ["gone"])
    await images.ensure_image(service, p, p.spec.containers[0], pb.PodSandboxConfig())
    warning = next(e for e in recorder.events() if e["type"] == "Warning")
    assert warning["reason"] == "FailedToRetrieveImagePullSecret"
    assert warning["message"] == (
        "Unable to retrieve some image pull secrets (default/gone); "
        "attempting to pull the image may not succeed."
    )
    assert service.pulls == [None]


async def test_a_pull_secret_that_does_not_parse_fails_the_pull() -> None:
    bad = dockerconfigjson("bad", {})
    bad["data"] = {".dockerconfigjson": b64("{oops")}
    images, _ = manager(Secrets(bad))
    service = Images(password=None)
    p = pod_with("reg.example/app:1", ["bad"])
    with pytest.raises(ImagePullError) as caught:
        await images.ensure_image(service, p, p.spec.containers[0], pb.PodSandboxConfig())
    assert caught.value.message.startswith(
        'Failed to pull image "reg.example/app:1": pull secret default/bad: invalid docker config'
    )
    assert service.pulls == []


def test_the_trace_shows_who_a_pull_authenticates_as_never_the_secret() -> None:
    trace = TraceRecorder()
    pulled = trace.record(
        service="ImageService",
        method="PullImage",
        request=pb.PullImageRequest(
            image=pb.ImageSpec(image="reg.example/app:1"),
            auth=pb.AuthConfig(username="alice", password="s3cr3t", registry_token="t0k"),
        ),
        response=pb.PullImageResponse(image_ref="sha256:" + "1" * 64),
        code="OK",
        started=1.0,
        duration_s=0.1,
    )
    assert pulled.details["auth"] == {"username": "alice", "with": "password,registry_token"}
    line = format_text(pulled)
    assert "alice" in line and "s3cr3t" not in line and "t0k" not in line
    anonymous = trace.record(
        service="ImageService",
        method="PullImage",
        request=pb.PullImageRequest(image=pb.ImageSpec(image="reg.example/app:1")),
        response=pb.PullImageResponse(),
        code="OK",
        started=1.0,
        duration_s=0.1,
    )
    assert "auth" not in anonymous.details
