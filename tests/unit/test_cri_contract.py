"""api.proto follows the cri-api release its header names, and real clients' bytes parse.

The header of ``minikubelet/cri/v1/api.proto`` records the release (``// cri-api
release: vX.Y.Z``). This module pins that release's fields that changed across recent
releases and a digest of the whole rendering (every message, field, enum value and RPC,
comments and layout aside): editing the proto without moving the record, or the record
without the proto, fails here. The descriptor crictl 1.36 is built with is read out of
its binary and compared too, as a second upstream witness.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import pytest
from google.protobuf import descriptor_pb2
from google.protobuf.descriptor import FieldDescriptor as F

from minikubelet.cri.v1 import api_pb2 as pb
from minikubelet.cri.v1 import generate

RELEASE = "v0.37.0"

#: sha256 of :func:`rendering` for each release this proto has followed.
DIGESTS = {
    "v0.37.0": "7212ad3feb22c1118b61bc4533824e9ab563cccc9f7c2a8db6bdc7c0ecc5138c",
}

# (message, field, number, type) for fields added or retyped across releases, and where.
CHANGED_FIELDS = [
    ("KeyValue", "value", 2, F.TYPE_BYTES),  # string until v0.34.10 / v0.36.3 (k8s#139168)
    ("ExecRequest", "audit_request_id", 7, F.TYPE_STRING),  # v0.37 (KEP-6035)
    ("AttachRequest", "audit_request_id", 6, F.TYPE_STRING),  # v0.37 (KEP-6035)
    ("StreamPodSandboxesResponse", "pod_sandboxes", 1, F.TYPE_MESSAGE),  # v0.36 (KEP-5825)
    ("StreamImagesResponse", "images", 1, F.TYPE_MESSAGE),  # v0.36 (KEP-5825)
    ("ContainerConfig", "stop_signal", 18, F.TYPE_ENUM),  # v0.33
    ("ContainerStatus", "stop_signal", 19, F.TYPE_ENUM),  # v0.33
    ("Mount", "image_sub_path", 10, F.TYPE_STRING),  # v0.33
    ("ImageSpec", "image_ref", 20, F.TYPE_STRING),  # v0.33
    ("RuntimeFeatures", "user_namespaces_host_network", 2, F.TYPE_BOOL),  # v0.35
    ("IoUsage", "psi", 2, F.TYPE_MESSAGE),  # v0.34
]


def header_release() -> str:
    text = (generate.PACKAGE_DIR / "api.proto").read_text()
    match = re.search(r"^// cri-api release: (v\d+\.\d+\.\d+)$", text, re.MULTILINE)
    assert match, "api.proto's header must name its release: // cri-api release: vX.Y.Z"
    return match.group(1)


def _file(fdp: descriptor_pb2.FileDescriptorProto) -> list[str]:
    """One line per message, field, enum value and RPC, sorted: layout and comments aside."""
    out: list[str] = [f"package {fdp.package} {fdp.syntax} {list(fdp.dependency)}"]

    def options(o: object) -> str:
        return str(o).replace("\n", " ").strip()

    def enum(e: descriptor_pb2.EnumDescriptorProto, prefix: str) -> None:
        out.append(f"enum {prefix}{e.name} {options(e.options)}")
        out.extend(
            f"value {prefix}{e.name}.{v.name} = {v.number} {options(v.options)}" for v in e.value
        )

    def message(m: descriptor_pb2.DescriptorProto, prefix: str) -> None:
        name = prefix + m.name
        out.append(f"message {name} {options(m.options)}")
        for f in m.field:
            oneof = m.oneof_decl[f.oneof_index].name if f.HasField("oneof_index") else ""
            out.append(
                f"field {name}.{f.name} = {f.number} type={f.type} label={f.label} "
                f"{f.type_name} {oneof} {f.proto3_optional} {options(f.options)}"
            )
        for nested in m.nested_type:
            message(nested, name + ".")
        for e in m.enum_type:
            enum(e, name + ".")

    for m in fdp.message_type:
        message(m, "")
    for e in fdp.enum_type:
        enum(e, "")
    for s in fdp.service:
        out.extend(
            f"rpc {s.name}.{r.name}({'stream ' * r.client_streaming}{r.input_type}) "
            f"returns ({'stream ' * r.server_streaming}{r.output_type}) {options(r.options)}"
            for r in s.method
        )
    return sorted(out)


def ours() -> descriptor_pb2.FileDescriptorProto:
    fdp = descriptor_pb2.FileDescriptorProto()
    pb.DESCRIPTOR.CopyToProto(fdp)
    return fdp


def rendering() -> str:
    return "\n".join(_file(ours())) + "\n"


def test_header_names_the_release_this_test_pins() -> None:
    assert header_release() == RELEASE


def test_rendering_is_the_recorded_release() -> None:
    digest = hashlib.sha256(rendering().encode()).hexdigest()
    assert digest == DIGESTS[header_release()], (
        "api.proto no longer renders the release its header names. Compare it with that "
        "cri-api release again, then record the release in the header and its digest here "
        f"(now {digest})."
    )


@pytest.mark.parametrize(("message", "field", "number", "type_"), CHANGED_FIELDS)
def test_fields_that_changed_across_releases(
    message: str, field: str, number: int, type_: int
) -> None:
    descriptor = pb.DESCRIPTOR.message_types_by_name[message].fields_by_name[field]
    assert (descriptor.number, descriptor.type) == (number, type_)


def test_a_non_utf8_environment_value_parses() -> None:
    # What a Go client built on cri-api v0.36.3+ puts on the wire for a binary Secret.
    value = b"\xff\xfe not UTF-8 \x80"
    raw = (
        b"\x12"  # CreateContainerRequest.config
        + _len(b"\x32" + _len(b"\x0a\x01X" + b"\x12" + _len(value)))  # envs: {key, value}
    )
    request = pb.CreateContainerRequest.FromString(raw)
    assert [(kv.key, kv.value) for kv in request.config.envs] == [("X", value)]


def _len(payload: bytes) -> bytes:
    assert len(payload) < 128
    return bytes([len(payload)]) + payload


CRICTL = Path(__file__).resolve().parents[3] / "shared" / "bin" / "crictl"
_CRICTL_PROTO = b"staging/src/k8s.io/cri-api/pkg/apis/runtime/v1/api.proto"


def _embedded_descriptor(binary: bytes) -> descriptor_pb2.FileDescriptorProto:
    """The runtime.v1 FileDescriptorProto a Go program carries (its raw descriptor)."""
    start = binary.find(b"\n" + bytes([len(_CRICTL_PROTO)]) + _CRICTL_PROTO + b"\x12\nruntime.v1")
    assert start >= 0, "no runtime.v1 descriptor in the binary"
    end, pos = start, start
    while True:  # top-level fields of the FileDescriptorProto, until one is not
        key, pos = _varint(binary, pos)
        number, wire = key >> 3, key & 7
        if not 1 <= number <= 14 or wire not in (0, 2):
            break
        size, pos = _varint(binary, pos)
        pos += size if wire == 2 else 0
        try:
            descriptor_pb2.FileDescriptorProto.FromString(binary[start:pos])
        except Exception:
            break
        end = pos
    return descriptor_pb2.FileDescriptorProto.FromString(binary[start:end])


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return result, pos


@pytest.mark.skipif(not CRICTL.is_file(), reason="needs ../shared/bin/crictl")
def test_everything_crictl_136_knows_is_rendered_the_same() -> None:
    # crictl 1.36 is built on cri-api v0.36.x; v0.37 only adds audit_request_id.
    theirs = set(_file(_embedded_descriptor(CRICTL.read_bytes())))
    mine = set(_file(ours()))
    assert theirs - mine == set()
    assert {line.split(" = ")[0] for line in mine - theirs} == {
        "field ExecRequest.audit_request_id",
        "field AttachRequest.audit_request_id",
    }
