"""The generated CRI modules match api.proto, and api.proto keeps the runtime.v1 wire numbers."""

from __future__ import annotations

import re
from importlib import metadata
from pathlib import Path

import pytest
from google.protobuf.descriptor import FieldDescriptor

from minikubelet.cri.v1 import api_pb2, generate

REGEN_HINT = "python -m minikubelet.cri.v1.generate"


def _installed(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def _committed_grpc_version() -> str:
    text = (generate.PACKAGE_DIR / "api_pb2_grpc.py").read_text()
    match = re.search(r"^GRPC_GENERATED_VERSION = '([^']+)'", text, re.MULTILINE)
    return match.group(1) if match else "unknown"


@pytest.mark.parametrize("name", generate.GENERATED_FILES)
def test_generated_file_matches_proto(name: str, tmp_path: Path) -> None:
    generate.generate(tmp_path)
    fresh = (tmp_path / name).read_bytes()
    committed = (generate.PACKAGE_DIR / name).read_bytes()
    assert fresh == committed, (
        f"minikubelet/cri/v1/{name} is out of date with api.proto. Regenerate with "
        f"`{REGEN_HINT}` and commit the result. The output depends on the generator "
        f"versions: installed grpcio-tools {_installed('grpcio-tools')} and mypy-protobuf "
        f"{_installed('mypy-protobuf')}; the committed api_pb2_grpc.py was made by "
        f"grpcio-tools {_committed_grpc_version()}. If only the versions differ, regenerate "
        "with matching versions or regenerate and commit with the new ones."
    )


def _method_counts() -> dict[str, int]:
    return {name: len(svc.methods) for name, svc in api_pb2.DESCRIPTOR.services_by_name.items()}


def test_service_method_counts() -> None:
    assert _method_counts() == {"RuntimeService": 35, "ImageService": 6}


def test_message_and_enum_counts() -> None:
    assert len(api_pb2.DESCRIPTOR.message_types_by_name) == 170
    assert len(api_pb2.DESCRIPTOR.enum_types_by_name) == 10


SERVER_STREAMING = {
    ("RuntimeService", "StreamPodSandboxes"),
    ("RuntimeService", "StreamContainers"),
    ("RuntimeService", "StreamContainerStats"),
    ("RuntimeService", "StreamPodSandboxStats"),
    ("RuntimeService", "GetContainerEvents"),
    ("RuntimeService", "StreamPodSandboxMetrics"),
    ("ImageService", "StreamImages"),
}


def test_streaming_shapes() -> None:
    seen: set[tuple[str, str]] = set()
    for svc in api_pb2.DESCRIPTOR.services_by_name.values():
        for method in svc.methods:
            assert not method.client_streaming, method.full_name
            if method.server_streaming:
                seen.add((svc.name, method.name))
    assert seen == SERVER_STREAMING


# (message, field, number) triples that runtimes on the other end of the wire rely on.
FIELD_NUMBERS = [
    ("VersionRequest", "version", 1),
    ("VersionResponse", "runtime_api_version", 4),
    ("PodSandboxConfig", "metadata", 1),
    ("PodSandboxConfig", "log_directory", 3),
    ("PodSandboxConfig", "linux", 8),
    ("RunPodSandboxRequest", "runtime_handler", 2),
    ("ContainerConfig", "log_path", 11),
    ("ContainerConfig", "CDI_devices", 17),
    ("ContainerConfig", "stop_signal", 18),
    ("ContainerStatus", "stop_signal", 19),
    ("ImageSpec", "user_specified_image", 18),
    ("ImageSpec", "runtime_handler", 19),
    ("ImageSpec", "image_ref", 20),
    ("Mount", "uidMappings", 6),
    ("Namespace", "options", 2),
    ("LinuxSandboxSecurityContext", "run_as_group", 8),
    ("LinuxSandboxSecurityContext", "supplemental_groups_policy", 11),
    ("LinuxContainerSecurityContext", "run_as_group", 12),
    ("LinuxContainerSecurityContext", "supplemental_groups_policy", 17),
    ("AttachRequest", "stdin", 2),
    ("AttachRequest", "tty", 3),
    ("ExecRequest", "tty", 3),
    ("ExecRequest", "stdin", 4),
    ("PodSandboxStatusResponse", "containers_statuses", 3),
    ("ImageFsInfoResponse", "container_filesystems", 2),
]


@pytest.mark.parametrize(("message", "field", "number"), FIELD_NUMBERS)
def test_field_numbers(message: str, field: str, number: int) -> None:
    descriptor = api_pb2.DESCRIPTOR.message_types_by_name[message]
    assert descriptor.fields_by_name[field].number == number


def test_field_shapes() -> None:
    msgs = api_pb2.DESCRIPTOR.message_types_by_name
    labels = msgs["PodSandboxConfig"].fields_by_name["labels"]
    assert labels.message_type is not None
    assert labels.message_type.GetOptions().map_entry
    port_mappings = msgs["PodSandboxConfig"].fields_by_name["port_mappings"]
    assert port_mappings.is_repeated
    assert msgs["ExecSyncResponse"].fields_by_name["stdout"].type == FieldDescriptor.TYPE_BYTES
    assert msgs["PsiData"].fields_by_name["Avg10"].type == FieldDescriptor.TYPE_DOUBLE


def test_enum_values() -> None:
    enums = api_pb2.DESCRIPTOR.enum_types_by_name
    assert enums["NamespaceMode"].values_by_name["TARGET"].number == 3
    assert enums["ContainerState"].values_by_name["CONTAINER_UNKNOWN"].number == 3
    assert enums["Signal"].values_by_name["SIGRTMAX"].number == 65
    assert enums["CgroupDriver"].values_by_name["CGROUPFS"].number == 1
    profile = api_pb2.DESCRIPTOR.message_types_by_name["SecurityProfile"]
    assert profile.enum_types_by_name["ProfileType"].values_by_name["Localhost"].number == 2
