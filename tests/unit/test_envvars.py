"""$(VAR) expansion, the container environment, and command/args expansion (table-driven)."""

from __future__ import annotations

from typing import Any

import pytest

from minikubelet.api.pod import Pod
from minikubelet.kuberuntime.envvars import (
    ConfigError,
    command_and_args,
    expand,
    expand_sub_path_expr,
    format_map,
    make_environment,
)

ENV = {"VAR_A": "A", "VAR_B": "B", "VAR_C": "C", "VAR_REF": "$(VAR_A)", "VAR_EMPTY": ""}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # the cases of third_party/forked/golang/expansion's table
        ("$(VAR_A)", "A"),
        ("___$(VAR_B)___", "___B___"),
        ("$(VAR_A)-$(VAR_A)", "A-A"),
        ("$(VAR_A)-1", "A-1"),
        ("$(VAR_A)_$(VAR_B)_$(VAR_C)", "A_B_C"),
        ("f000-$$VAR_A", "f000-$VAR_A"),
        ("foo\\$(VAR_C)bar", "foo\\Cbar"),
        ("foo\\\\$(VAR_C)bar", "foo\\\\Cbar"),
        ("$(VAR_EMPTY)", ""),
        ("$(VAR_DNE)", "$(VAR_DNE)"),  # unknown: left as written
        ("$(VAR_REF)", "$(VAR_A)"),  # single pass: a value is not expanded again
        ("$$(VAR_B)_$(VAR_A)", "$(VAR_B)_A"),  # $$ escapes
        ("$$$(VAR_A)", "$A"),
        ("$$$$(VAR_A)", "$$(VAR_A)"),
        ("$(VAR_A", "$(VAR_A"),  # unclosed
        ("$VAR_A", "$VAR_A"),  # not an expression
        ("$", "$"),
        ("$$", "$"),
        ("$(", "$("),
        ("$()", "$()"),  # empty name: undefined, kept
        ("$($(VAR_A))", "$($(VAR_A))"),  # nested: the name is "$(VAR_A", undefined
        ("$(VAR_A)$(VAR_B)$", "AB$"),
        ("ünïcode $(VAR_A) ✓", "ünïcode A ✓"),
        ("", ""),
        ("no refs", "no refs"),
    ],
)
def test_expand(text: str, expected: str) -> None:
    assert expand(text, ENV) == expected


def pod(container: dict[str, Any], **spec: Any) -> Pod:
    return Pod.from_dict(
        {
            "metadata": {
                "name": "web",
                "namespace": "shop",
                "uid": "uid-1",
                "labels": {"app": "web", "tier": "front"},
                "annotations": {"note": 'say "hi"\n'},
            },
            "spec": {"containers": [{"image": "busybox", **container}], **spec},
        }
    )


def env_of(container: dict[str, Any], **kwargs: Any) -> list[tuple[str, str]]:
    p = pod({"name": "c", "image": "busybox", **container})
    return make_environment(p, p.spec.containers[0], **kwargs)


def test_order_and_expansion_of_earlier_variables_only() -> None:
    env = env_of(
        {
            "env": [
                {"name": "LATER_REF", "value": "$(LAST)"},
                {"name": "FIRST", "value": "one"},
                {"name": "SECOND", "value": "$(FIRST)-two"},
                {"name": "ESCAPED", "value": "$$(FIRST)"},
                {"name": "EMPTY"},
                {"name": "LAST", "value": "z"},
            ]
        }
    )
    assert env == [
        ("LATER_REF", "$(LAST)"),
        ("FIRST", "one"),
        ("SECOND", "one-two"),
        ("ESCAPED", "$(FIRST)"),
        ("EMPTY", ""),
        ("LAST", "z"),
    ]


def test_a_redefinition_keeps_the_first_position_and_takes_the_last_value() -> None:
    env = env_of(
        {
            "env": [
                {"name": "A", "value": "1"},
                {"name": "B", "value": "$(A)"},
                {"name": "A", "value": "x$(A)"},
            ]
        }
    )
    assert env == [("A", "x1"), ("B", "1")]


def test_field_refs() -> None:
    refs = {
        "NAME": "metadata.name",
        "NS": "metadata.namespace",
        "UID": "metadata.uid",
        "APP": "metadata.labels['app']",
        "MISSING": "metadata.labels['nope']",
        "NOTE": "metadata.annotations['note']",
        "NODE": "spec.nodeName",
        "SA": "spec.serviceAccountName",
        "HOST_IP": "status.hostIP",
        "HOST_IPS": "status.hostIPs",
        "POD_IP": "status.podIP",
        "POD_IPS": "status.podIPs",
    }
    env = env_of(
        {
            "env": [
                {"name": k, "valueFrom": {"fieldRef": {"fieldPath": v}}} for k, v in refs.items()
            ]
        },
        pod_ips=["10.0.0.5", "fd00::5"],
        host_ips=["192.168.1.2"],
        node_name="node-1",
    )
    assert dict(env) == {
        "NAME": "web",
        "NS": "shop",
        "UID": "uid-1",
        "APP": "web",
        "MISSING": "",
        "NOTE": 'say "hi"\n',
        "NODE": "node-1",
        "SA": "",
        "HOST_IP": "192.168.1.2",
        "HOST_IPS": "192.168.1.2",
        "POD_IP": "10.0.0.5",
        "POD_IPS": "10.0.0.5,fd00::5",
    }


def test_pod_name_override_and_pods_own_node_name() -> None:
    p = pod(
        {
            "name": "c",
            "env": [
                {"name": "N", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                {"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
            ],
        },
        nodeName="pinned",
    )
    env = make_environment(p, p.spec.containers[0], pod_name="web-node-1", node_name="other")
    assert env == [("N", "web-node-1"), ("NODE", "pinned")]


@pytest.mark.parametrize(
    ("field_ref", "match"),
    [
        ({"fieldPath": "spec.restartPolicy"}, "unsupported fieldPath"),
        ({"fieldPath": "metadata.name['x']"}, "does not support subscript"),
        ({"fieldPath": "metadata.name", "apiVersion": "v2"}, "unsupported pod version"),
        ({"fieldPath": "status.hostIP"}, "node's IP is not known"),
    ],
)
def test_bad_field_refs(field_ref: dict[str, str], match: str) -> None:
    with pytest.raises(ConfigError, match=match) as info:
        env_of({"env": [{"name": "X", "valueFrom": {"fieldRef": field_ref}}]})
    assert info.value.reason == "CreateContainerConfigError"


def test_resource_field_refs() -> None:
    def ref(
        resource: str, divisor: str | None = None, container: str | None = None
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"resource": resource}
        if divisor is not None:
            body["divisor"] = divisor
        if container is not None:
            body["containerName"] = container
        return {"valueFrom": {"resourceFieldRef": body}}

    p = Pod.from_dict(
        {
            "metadata": {"name": "web", "uid": "u"},
            "spec": {
                "containers": [
                    {
                        "name": "c",
                        "image": "busybox",
                        "resources": {"limits": {"cpu": "250m", "memory": "64Mi"}},
                        "env": [
                            {"name": "CPU_LIMIT", **ref("limits.cpu")},
                            {"name": "CPU_LIMIT_M", **ref("limits.cpu", "1m")},
                            {"name": "MEM_LIMIT_MI", **ref("limits.memory", "1Mi")},
                            {"name": "CPU_REQ_M", **ref("requests.cpu", "1m")},  # = limit
                            {"name": "MEM_REQ", **ref("requests.memory")},
                            {"name": "OTHER_MEM", **ref("limits.memory", "1Mi", "side")},
                            {"name": "STORAGE", **ref("limits.ephemeral-storage", "1Gi")},
                        ],
                    },
                    {
                        "name": "side",
                        "image": "busybox",
                        "resources": {"requests": {"memory": "1Gi"}},
                    },
                ]
            },
        }
    )
    env = dict(
        make_environment(
            p,
            p.spec.containers[0],
            node_allocatable={"memory": "8Gi", "ephemeral-storage": "100Gi"},
        )
    )
    assert env == {
        "CPU_LIMIT": "1",
        "CPU_LIMIT_M": "250",
        "MEM_LIMIT_MI": "64",
        "CPU_REQ_M": "250",
        "MEM_REQ": str(64 * 1024 * 1024),
        "OTHER_MEM": str(8 * 1024),  # no limit: node allocatable stands in
        "STORAGE": "100",
    }


def test_unsupported_resource() -> None:
    with pytest.raises(ConfigError, match="unsupported container resource"):
        env_of(
            {"env": [{"name": "X", "valueFrom": {"resourceFieldRef": {"resource": "limits.gpu"}}}]}
        )


@pytest.mark.parametrize(
    "value_from",
    [
        {"configMapKeyRef": {"name": "cm", "key": "k"}},
        {"secretKeyRef": {"name": "s", "key": "k"}},
        {"configMapKeyRef": {"name": "cm", "key": "k", "optional": False}},
    ],
)
def test_api_server_sources_fail(value_from: dict[str, Any]) -> None:
    with pytest.raises(ConfigError, match="no API server") as info:
        env_of({"env": [{"name": "X", "valueFrom": value_from}]})
    assert info.value.reason == "CreateContainerConfigError"


def test_optional_api_server_sources_are_skipped() -> None:
    env = env_of(
        {
            "envFrom": [{"configMapRef": {"name": "cm", "optional": True}}],
            "env": [
                {
                    "name": "A",
                    "valueFrom": {"configMapKeyRef": {"name": "c", "key": "k", "optional": True}},
                },
                {
                    "name": "B",
                    "valueFrom": {"secretKeyRef": {"name": "s", "key": "k", "optional": True}},
                },
                {"name": "C", "value": "c"},
            ],
        }
    )
    assert env == [("C", "c")]


def test_env_from_fails_without_optional() -> None:
    with pytest.raises(ConfigError, match=r"couldn't get secret .*/creds, no API server"):
        env_of({"envFrom": [{"secretRef": {"name": "creds"}}]})


def test_command_and_args() -> None:
    p = pod(
        {
            "name": "c",
            "command": ["/bin/sh", "-c", "echo $(GREETING) $$(GREETING) $(UNKNOWN)"],
            "args": ["$(GREETING)", "$(TARGET)s"],
        }
    )
    command, args = command_and_args(
        p.spec.containers[0], [("GREETING", "hi"), ("TARGET", "world")]
    )
    assert command == ["/bin/sh", "-c", "echo hi $(GREETING) $(UNKNOWN)"]
    assert args == ["hi", "worlds"]


def test_command_and_args_empty() -> None:
    p = pod({"name": "c"})
    assert command_and_args(p.spec.containers[0], {}) == ([], [])


def test_sub_path_expr() -> None:
    assert expand_sub_path_expr("logs/$(POD)", [("POD", "web")]) == "logs/web"
    with pytest.raises(ConfigError, match="missing value for EMPTY, NOPE"):
        expand_sub_path_expr("$(NOPE)/$(EMPTY)", {"EMPTY": ""})


def test_format_map_is_sorted_and_quoted() -> None:
    assert format_map({"b": 'x"y', "a": "1\n2"}) == 'a="1\\n2"\nb="x\\"y"'
