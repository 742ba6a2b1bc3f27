"""Decoding, validation and static-pod defaults of pod manifests."""

from __future__ import annotations

import json

import pytest

from minikubelet.config.manifest import (
    ManifestError,
    apply_static_defaults,
    decode_manifest,
    fnv1a_128,
    generate_pod_name,
    static_pod_uid,
)
from minikubelet.config.types import (
    CONFIG_HASH_ANNOTATION,
    CONFIG_SOURCE_ANNOTATION,
    FILE_SOURCE,
    HTTP_SOURCE,
    Pod,
)

POD_YAML = b"""\
apiVersion: v1
kind: Pod
metadata:
  name: web
  labels:
    app: web
spec:
  containers:
    - name: nginx
      image: nginx:1.27
"""


def test_decodes_one_pod_from_yaml() -> None:
    (pod,) = decode_manifest(POD_YAML, "/etc/kubernetes/manifests/web.yaml")
    assert pod["metadata"]["name"] == "web"
    assert pod["spec"]["containers"][0]["image"] == "nginx:1.27"


def test_decodes_json() -> None:
    data = json.dumps(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "web"},
            "spec": {"containers": [{"name": "c", "image": "busybox"}]},
        },
        indent="\t",
    ).encode()
    (pod,) = decode_manifest(data, "web.json")
    assert pod["metadata"]["name"] == "web"


def test_timestamps_stay_strings() -> None:
    data = POD_YAML.replace(b"    app: web", b"    app: web\n    day: 2024-01-02")
    (pod,) = decode_manifest(data, "web.yaml")
    assert pod["metadata"]["labels"]["day"] == "2024-01-02"


@pytest.mark.parametrize(
    ("data", "line", "reason"),
    [
        (b"apiVersion: v1\nkind: Pod\nmetadata:\n  name: [unclosed\n", 5, "not YAML"),
        (b"kind: Pod\n  bad: indent\n", 2, "not YAML"),
        (b'{"kind": "Pod",\n "x": }', 2, "not JSON"),
        (b"", None, "empty manifest"),
        (b"- a\n- b\n", None, "not a Kubernetes object: the document is a list"),
        (b"apiVersion: v1\nkind: Service\n", None, "kind is Service, expected Pod"),
        (b"apiVersion: v1\nkind: PodList\nitems: []\n", None, "kind is PodList, expected Pod"),
        (b"apiVersion: v1\nmetadata: {name: a}\n", None, "kind is missing, expected Pod"),
        (b"apiVersion: v2\nkind: Pod\n", None, "apiVersion is v2, expected v1"),
        (
            b"apiVersion: v1\nkind: Pod\nspec:\n  containers: [{name: a, image: b}]\n",
            None,
            "metadata.name: Required value: name or generateName is required",
        ),
        (
            b"apiVersion: v1\nkind: Pod\nmetadata: {name: Web_1}\n"
            b"spec:\n  containers: [{name: a, image: b}]\n",
            None,
            'metadata.name: Invalid value: "Web_1": a lowercase RFC 1123 subdomain must consist',
        ),
        (
            b"apiVersion: v1\nkind: Pod\nmetadata: {name: a}\nspec:\n  containers: []\n",
            None,
            "spec.containers: Required value",
        ),
        (b"apiVersion: v1\nkind: Pod\nmetadata: {name: a}\n", None, "spec.containers: Required"),
        (
            b"apiVersion: v1\nkind: Pod\nmetadata: {name: a}\nspec:\n"
            b"  containers: [{name: x, image: b}, {name: x, image: c}]\n",
            None,
            'spec.containers[1].name: Duplicate value: "x"',
        ),
        (
            b"apiVersion: v1\nkind: Pod\nmetadata: {name: a}\nspec:\n"
            b"  initContainers: [{name: x, image: b}]\n  containers: [{name: x, image: c}]\n",
            None,
            'spec.initContainers[0].name: Duplicate value: "x"',
        ),
        (
            b"apiVersion: v1\nkind: Pod\nmetadata: {name: a}\nspec:\n  containers: [{name: x}]\n",
            None,
            "spec.containers[0].image: Required value",
        ),
    ],
)
def test_rejects_with_line_and_reason(data: bytes, line: int | None, reason: str) -> None:
    with pytest.raises(ManifestError) as caught:
        decode_manifest(data, "/m/pod.yaml")
    assert caught.value.path == "/m/pod.yaml"
    assert caught.value.line == line
    assert caught.value.reason.startswith(reason), caught.value.reason


def test_error_text_names_file_and_line() -> None:
    error = ManifestError("/m/pod.yaml", 4, "not YAML: found unexpected end of stream")
    assert str(error) == "/m/pod.yaml:4: not YAML: found unexpected end of stream"
    assert str(ManifestError("/m/pod.yaml", None, "x")) == "/m/pod.yaml: x"


def test_multiple_documents_are_rejected() -> None:
    with pytest.raises(ManifestError) as caught:
        decode_manifest(POD_YAML + b"---\n" + POD_YAML, "two.yaml")
    assert caught.value.reason.startswith("not YAML")
    assert caught.value.line == 11


def test_pod_list_only_where_allowed() -> None:
    data = json.dumps(
        {
            "apiVersion": "v1",
            "kind": "PodList",
            "items": [
                {"metadata": {"name": "a"}, "spec": {"containers": [{"name": "c", "image": "i"}]}},
                {
                    "kind": "Pod",
                    "metadata": {"name": "b"},
                    "spec": {"containers": [{"name": "c", "image": "i"}]},
                },
            ],
        }
    ).encode()
    pods = decode_manifest(data, "http://x/pods", allow_list=True)
    assert [p["metadata"]["name"] for p in pods] == ["a", "b"]
    with pytest.raises(ManifestError, match="kind is PodList, expected Pod"):
        decode_manifest(data, "/m/list.json")


def test_invalid_item_rejects_the_whole_list() -> None:
    data = (
        b"apiVersion: v1\nkind: PodList\nitems:\n"
        b"- metadata: {name: a}\n  spec: {containers: [{name: c, image: i}]}\n"
        b"- metadata: {name: b}\n  spec: {containers: []}\n"
    )
    with pytest.raises(ManifestError, match=r": items\[1\]: spec\.containers: Required value$"):
        decode_manifest(data, "http://x/pods", allow_list=True)


def test_fnv1a_128_known_vectors() -> None:
    # Published FNV-1a 128-bit test vectors.
    assert fnv1a_128(b"").hex() == "6c62272e07bb014262b821756295c58d"
    assert fnv1a_128(b"a").hex() == "d228cb696f1a8caf78912b704e4a8964"


def test_generate_pod_name_lowercases_node() -> None:
    assert generate_pod_name("web", "Node-A") == "web-node-a"


def _pod() -> Pod:
    (pod,) = decode_manifest(POD_YAML, "/m/web.yaml")
    return pod


def test_static_defaults() -> None:
    pod = _pod()
    before = json.dumps(pod, sort_keys=True)
    out = apply_static_defaults(
        pod, node_name="Node-A", source=FILE_SOURCE, source_path="/m/web.yaml"
    )
    assert json.dumps(pod, sort_keys=True) == before, "input must not be modified"
    uid = static_pod_uid(pod, node_name="Node-A", source=FILE_SOURCE, source_path="/m/web.yaml")
    assert len(uid) == 32
    int(uid, 16)
    assert out["metadata"]["uid"] == uid
    assert out["metadata"]["name"] == "web-node-a"
    assert out["metadata"]["namespace"] == "default"
    assert out["metadata"]["annotations"][CONFIG_HASH_ANNOTATION] == uid
    assert out["metadata"]["annotations"][CONFIG_SOURCE_ANNOTATION] == FILE_SOURCE
    assert out["spec"]["nodeName"] == "Node-A"
    assert out["spec"]["tolerations"] == [{"operator": "Exists", "effect": "NoExecute"}]
    assert out["status"] == {"phase": "Pending"}
    assert out["metadata"]["labels"] == {"app": "web"}


def test_static_defaults_keep_given_uid_namespace_and_toleration() -> None:
    pod = _pod()
    pod["metadata"]["uid"] = "given"
    pod["metadata"]["namespace"] = "kube-system"
    pod["spec"]["tolerations"] = [
        {"operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 5},
        {"key": "k", "operator": "Equal", "value": "v", "effect": "NoSchedule"},
    ]
    out = apply_static_defaults(pod, node_name="n", source=FILE_SOURCE, source_path="/m/a")
    assert out["metadata"]["uid"] == "given"
    assert out["metadata"]["annotations"][CONFIG_HASH_ANNOTATION] == "given"
    assert out["metadata"]["namespace"] == "kube-system"
    assert out["spec"]["tolerations"] == [
        {"operator": "Exists", "effect": "NoExecute"},
        {"key": "k", "operator": "Equal", "value": "v", "effect": "NoSchedule"},
    ]


def test_http_pods_get_no_toleration() -> None:
    out = apply_static_defaults(_pod(), node_name="n", source=HTTP_SOURCE, source_path="http://x")
    assert "tolerations" not in out["spec"]


def test_uid_depends_on_content_node_and_path_but_not_formatting() -> None:
    base = dict(node_name="n1", source=FILE_SOURCE, source_path="/m/web.yaml")
    uid = static_pod_uid(_pod(), **base)
    reformatted = b"# a comment\n" + POD_YAML.replace(b"  name: web", b"  name:    web")
    (same,) = decode_manifest(reformatted, "/m/web.yaml")
    assert static_pod_uid(same, **base) == uid
    edited = _pod()
    edited["spec"]["containers"][0]["image"] = "nginx:1.28"
    assert static_pod_uid(edited, **base) != uid
    assert static_pod_uid(_pod(), **{**base, "node_name": "n2"}) != uid
    assert static_pod_uid(_pod(), **{**base, "source_path": "/m/other.yaml"}) != uid
    url_uid = static_pod_uid(_pod(), node_name="n1", source=HTTP_SOURCE, source_path="http://x")
    assert url_uid == static_pod_uid(
        _pod(), node_name="other", source=HTTP_SOURCE, source_path="http://x"
    ), "the http source hashes the URL, not the node"


def test_uid_is_the_documented_hash() -> None:
    pod = _pod()
    expected = fnv1a_128(
        json.dumps(pod, sort_keys=True, separators=(",", ":")).encode() + b"host:n1file:/m/web.yaml"
    ).hex()
    assert static_pod_uid(pod, node_name="n1", source=FILE_SOURCE, source_path="/m/web.yaml") == (
        expected
    )
