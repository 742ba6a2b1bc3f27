"""Env from ConfigMaps and Secrets (valueFrom and envFrom), with the kubelet's messages."""

from __future__ import annotations

from typing import Any

import pytest

from minikubelet.api.pod import Pod
from minikubelet.cri.v1 import api_pb2 as pb
from minikubelet.kubeapi.objects import ConfigMapData, SecretData
from minikubelet.kuberuntime.convert import container_config
from minikubelet.kuberuntime.envvars import ConfigError, fetch_env_objects, make_environment
from tests.unit.fake_objects import FakeObjects


def pod(container: dict[str, Any]) -> Pod:
    return Pod.from_dict(
        {
            "metadata": {"name": "p", "namespace": "default", "uid": "u1"},
            "spec": {"containers": [{"name": "c", "image": "busybox", **container}]},
        },
        validate=False,
    )


@pytest.fixture
def objects() -> FakeObjects:
    fake = FakeObjects()
    fake.config_maps["default", "x"] = ConfigMapData(
        data={"k": "v", "MODE": "fast", "has space": "1", "1st": "2"}
    )
    fake.secrets["default", "s"] = SecretData(data={"password": b"hunter2", "USER": b"root"})
    return fake


async def env_of(
    container: dict[str, Any], objects: FakeObjects, warnings: list[tuple[str, str]] | None = None
) -> list[tuple[str, str]]:
    p = pod(container)
    c = p.spec.containers[0]
    found = await fetch_env_objects(p, c, objects)
    sink = warnings if warnings is not None else []
    return make_environment(
        p, c, objects=found, warn=lambda reason, message: sink.append((reason, message))
    )


async def test_value_from_config_map_and_secret(objects: FakeObjects) -> None:
    env = await env_of(
        {
            "env": [
                {"name": "K", "valueFrom": {"configMapKeyRef": {"name": "x", "key": "k"}}},
                {"name": "PW", "valueFrom": {"secretKeyRef": {"name": "s", "key": "password"}}},
                {"name": "BOTH", "value": "$(K)/$(PW)"},
            ]
        },
        objects,
    )
    assert env == [("K", "v"), ("PW", "hunter2"), ("BOTH", "v/hunter2")]


@pytest.mark.parametrize(
    ("value_from", "message"),
    [
        ({"configMapKeyRef": {"name": "nope", "key": "k"}}, 'configmap "nope" not found'),
        ({"secretKeyRef": {"name": "nope", "key": "k"}}, 'secret "nope" not found'),
        (
            {"configMapKeyRef": {"name": "x", "key": "missing"}},
            "couldn't find key missing in ConfigMap default/x",
        ),
        (
            {"secretKeyRef": {"name": "s", "key": "missing"}},
            "couldn't find key missing in Secret default/s",
        ),
    ],
)
async def test_missing_objects_and_keys(
    objects: FakeObjects, value_from: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigError) as info:
        await env_of({"env": [{"name": "X", "valueFrom": value_from}]}, objects)
    assert info.value.message == message
    assert info.value.reason == "CreateContainerConfigError"


async def test_optional_missing_objects_and_keys_are_skipped(objects: FakeObjects) -> None:
    env = await env_of(
        {
            "envFrom": [{"configMapRef": {"name": "nope", "optional": True}}],
            "env": [
                {
                    "name": "A",
                    "valueFrom": {
                        "configMapKeyRef": {"name": "nope", "key": "k", "optional": True}
                    },
                },
                {
                    "name": "B",
                    "valueFrom": {"configMapKeyRef": {"name": "x", "key": "zz", "optional": True}},
                },
                {
                    "name": "C",
                    "valueFrom": {"secretKeyRef": {"name": "s", "key": "zz", "optional": True}},
                },
                {"name": "D", "value": "d"},
            ],
        },
        objects,
    )
    assert env == [("D", "d")]


async def test_an_api_error_fails_even_an_optional_reference(objects: FakeObjects) -> None:
    objects.failing = "failed to get configmap default/x: connection refused"
    with pytest.raises(ConfigError, match="connection refused"):
        await env_of({"envFrom": [{"configMapRef": {"name": "x", "optional": True}}]}, objects)


async def test_env_from_with_prefix_skips_invalid_names_with_one_event(
    objects: FakeObjects,
) -> None:
    warnings: list[tuple[str, str]] = []
    env = await env_of(
        {
            "envFrom": [
                {"configMapRef": {"name": "x"}},
                {"prefix": "DB_", "secretRef": {"name": "s"}},
            ],
            "env": [{"name": "k", "value": "override"}],
        },
        objects,
        warnings,
    )
    assert dict(env) == {
        "k": "override",  # env comes after envFrom and wins
        "MODE": "fast",
        "DB_password": "hunter2",
        "DB_USER": "root",
    }
    assert warnings == [
        (
            "InvalidEnvironmentVariableNames",
            "Keys [1st, has space] from the EnvFrom configMap default/x were skipped since they "
            "are considered invalid environment variable names.",
        )
    ]


async def test_a_prefix_can_make_a_key_valid(objects: FakeObjects) -> None:
    env = await env_of({"envFrom": [{"prefix": "P_", "configMapRef": {"name": "x"}}]}, objects)
    assert ("P_1st", "2") in env and ("P_has space", "1") not in env


async def test_a_missing_env_from_source_fails(objects: FakeObjects) -> None:
    with pytest.raises(ConfigError, match=r'configmap "gone" not found$'):
        await env_of({"envFrom": [{"configMapRef": {"name": "gone"}}]}, objects)


async def test_binary_secret_reaches_the_cri_request_byte_for_byte() -> None:
    # A Secret's data is any bytes; the kubelet hands them to the runtime as they are
    # (KeyValue.value is bytes since cri-api v0.36.3), not only when they are UTF-8.
    blob = b"caf\xc3\xa9 \xff\xfe\x80 end"
    fake = FakeObjects()
    fake.secrets["default", "bin"] = SecretData(data={"BLOB": blob})
    p = pod(
        {
            "env": [{"name": "KEY", "valueFrom": {"secretKeyRef": {"name": "bin", "key": "BLOB"}}}],
            "envFrom": [{"secretRef": {"name": "bin"}, "prefix": "ALL_"}],
        }
    )
    c = p.spec.containers[0]
    env = make_environment(p, c, objects=await fetch_env_objects(p, c, fake))
    config = container_config(p, c, restart_count=0, image="sha256:abc", env=env)
    wire = pb.CreateContainerRequest(pod_sandbox_id="s", config=config).SerializeToString()
    received = pb.CreateContainerRequest.FromString(wire).config
    assert [(kv.key, kv.value) for kv in received.envs] == [("ALL_BLOB", blob), ("KEY", blob)]
