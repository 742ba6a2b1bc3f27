"""The Docker-backed runtime's pure parts: label schema, create bodies, log framing, names,
and reading containers back from Docker's JSON."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import struct
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, cast

import pytest

from minikubelet import reference
from minikubelet.errors import InvalidArgument, Unimplemented
from minikubelet.logs import crilog
from runtimes.base import model as m
from runtimes.docker import dockerconfig
from runtimes.docker import labels as lb
from runtimes.docker.client import DockerClient, FrameDecoder, docker_time_ns, registry_auth
from runtimes.docker.convert import Decoder, container_state, labels_of
from runtimes.docker.copiers import LogCopiers
from runtimes.docker.images import Mirror, _user
from runtimes.docker.logs import DRIVER_BUFFER, Position, format_frames, position_in, read_position
from runtimes.docker.pause import docker_archive

POD = m.SandboxMetadata(name="web", uid="u-1", namespace="prod", attempt=2)
SANDBOX = m.PodSandboxSpec(
    metadata=POD,
    hostname="web",
    log_directory="/var/log/pods/prod_web_u-1",
    dns=m.DNSConfig(("10.0.0.10",), ("prod.svc",), ("ndots:5",)),
    port_mappings=(m.PortMapping(0, 80, 8080, "127.0.0.1"), m.PortMapping(1, 53, 0)),
    labels={"io.kubernetes.pod.name": "web", "app": "web"},
    annotations={"note": "a=b, c"},
    cgroup_parent="/kubepods/pod-u-1",
    namespaces=m.NamespaceOptions(network=0, pid=0, ipc=0),
    sysctls={"net.ipv4.ip_forward": "1"},
)
CONTAINER = m.ContainerSpec(
    metadata=m.ContainerMetadata("app", 3),
    image="busybox:1.36",
    command=("sh", "-c"),
    args=("echo hi",),
    working_dir="/w",
    envs=(("A", "1"), ("B", "two words")),
    mounts=(m.Mount("/data", "/srv/data", readonly=True, propagation=1),),
    devices=(m.Device("/dev/fuse", "/dev/fuse", "rw"),),
    labels={"io.kubernetes.container.name": "app"},
    annotations={"io.kubernetes.container.hash": "abc"},
    log_path="app/3.log",
    resources=m.Resources(cpu_period=100000, cpu_quota=50000, cpu_shares=512, oom_score_adj=500),
    security=m.SecurityOptions(
        run_as_user=1000,
        run_as_group=3000,
        supplemental_groups=(4000,),
        readonly_rootfs=True,
        no_new_privs=True,
        add_capabilities=("NET_ADMIN",),
        drop_capabilities=("ALL",),
        seccomp="runtime/default",
    ),
)


# -- label schema ---------------------------------------------------------------------------


@pytest.mark.parametrize("spec", [SANDBOX, CONTAINER], ids=["sandbox", "container"])
def test_specs_survive_the_labels(spec: object) -> None:
    assert lb.decode(type(spec), lb.encode(spec)) == spec


def test_a_label_that_is_not_a_spec_does_not_decode() -> None:
    with pytest.raises(ValueError):
        lb.decode(m.ContainerSpec, json.dumps({"image": "x"}))
    with pytest.raises(ValueError):
        lb.decode(m.ContainerSpec, "not json")


def test_labels_carry_the_whole_cri_state() -> None:
    labels = lb.container_labels(
        CONTAINER,
        sandbox_id="s" * 64,
        log_path="/var/log/pods/x/app/3.log",
        image_name="docker.io/library/busybox:1.36",
        repo_digest="docker.io/library/busybox@sha256:" + "a" * 64,
        created_ns=123,
    )
    assert labels["io.kubernetes.container.name"] == "app"  # verbatim, for dockerd's filters
    assert labels[lb.TYPE] == lb.CONTAINER
    assert labels[lb.SANDBOX_ID] == "s" * 64
    assert labels[lb.CREATED] == "123"
    assert lb.decode(m.ContainerSpec, labels[lb.SPEC]) == CONTAINER


def test_reserved_label_prefix_is_refused() -> None:
    spec = m.PodSandboxSpec(metadata=POD, labels={"io.minikubelet.cri.type": "container"})
    with pytest.raises(InvalidArgument, match="reserved prefix"):
        lb.sandbox_labels(spec, 0)


def test_names_follow_dockershim() -> None:
    assert lb.sandbox_name(POD) == "k8s_POD_web_prod_u-1_2"
    assert lb.container_name(CONTAINER.metadata, POD) == "k8s_app_web_prod_u-1_3"


# -- create bodies ----------------------------------------------------------------------------


def test_sandbox_body_owns_the_pod_namespaces() -> None:
    body = dockerconfig.sandbox_body(SANDBOX, image="sha256:p", labels={"k": "v"})
    hc = body["HostConfig"]
    assert (body["Hostname"], hc["NetworkMode"], hc["IpcMode"]) == ("web", "bridge", "shareable")
    assert body["ExposedPorts"] == {"80/tcp": {}}  # a mapping without a host port publishes none
    assert hc["PortBindings"] == {"80/tcp": [{"HostIp": "127.0.0.1", "HostPort": "8080"}]}
    assert (hc["Dns"], hc["DnsSearch"], hc["DnsOptions"]) == (
        ["10.0.0.10"],
        ["prod.svc"],
        ["ndots:5"],
    )
    assert hc["Sysctls"] == {"net.ipv4.ip_forward": "1"}
    assert hc["CgroupParent"] == "/kubepods/pod-u-1"


def test_host_network_sandbox_uses_the_node_namespaces() -> None:
    spec = m.PodSandboxSpec(
        metadata=POD,
        hostname="web",
        port_mappings=(m.PortMapping(0, 80, 8080),),
        namespaces=m.NamespaceOptions(network=2, pid=2, ipc=2),
    )
    body = dockerconfig.sandbox_body(spec, image="p", labels={})
    hc = body["HostConfig"]
    assert (hc["NetworkMode"], hc["UTSMode"], hc["PidMode"], hc["IpcMode"]) == ("host",) * 4
    assert body["Hostname"] == "" and hc["PortBindings"] == {}


def test_container_body_translates_the_cri_config() -> None:
    body = dockerconfig.container_body(
        CONTAINER, infra_id="i" * 64, sandbox=SANDBOX, image="sha256:b", labels={}, oom_floor=0
    )
    hc = body["HostConfig"]
    assert (body["Entrypoint"], body["Cmd"]) == (["sh", "-c"], ["echo hi"])
    assert body["Env"] == ["A=1", "B=two words"]
    assert (body["User"], body["WorkingDir"]) == ("1000:3000", "/w")
    for mode in ("NetworkMode", "IpcMode", "PidMode"):
        assert hc[mode] == "container:" + "i" * 64
    assert hc["Binds"] == ["/srv/data:/data:ro,rslave"]
    assert hc["Devices"] == [
        {"PathOnHost": "/dev/fuse", "PathInContainer": "/dev/fuse", "CgroupPermissions": "rw"}
    ]
    assert (hc["CapAdd"], hc["CapDrop"]) == (["NET_ADMIN"], ["ALL"])
    assert hc["SecurityOpt"] == ["no-new-privileges"]  # runtime/default: Docker's own seccomp
    assert hc["ReadonlyRootfs"] and hc["GroupAdd"] == ["4000"]
    assert (hc["CpuShares"], hc["CpuQuota"], hc["CpuPeriod"]) == (512, 50000, 100000)
    assert hc["OomScoreAdj"] == 500
    assert hc["CgroupParent"] == "/kubepods/pod-u-1"


def test_without_command_or_args_the_image_decides() -> None:
    spec = m.ContainerSpec(metadata=m.ContainerMetadata("c"), image="i")
    body = dockerconfig.container_body(
        spec, infra_id="i", sandbox=SANDBOX, image="i", labels={}, oom_floor=0
    )
    assert "Entrypoint" not in body and "Cmd" not in body
    assert body["HostConfig"]["SecurityOpt"] == ["seccomp=unconfined"]  # dockershim's default


@pytest.mark.parametrize(
    ("requested", "floor", "applied"),
    [(1000, 0, 1000), (-997, 0, None), (-997, -999, -997), (5, None, None), (0, -500, None)],
)
def test_oom_score_adj_never_goes_below_the_daemons(
    requested: int, floor: int | None, applied: int | None
) -> None:
    spec = m.ContainerSpec(
        metadata=m.ContainerMetadata("c"), image="i", resources=m.Resources(oom_score_adj=requested)
    )
    hc = dockerconfig.container_body(
        spec, infra_id="i", sandbox=SANDBOX, image="i", labels={}, oom_floor=floor
    )["HostConfig"]
    assert hc.get("OomScoreAdj") == applied


@pytest.mark.parametrize(
    ("pid", "mode"),
    [(0, "container:infra"), (1, ""), (2, "host")],
    ids=["pod", "container", "node"],
)
def test_pid_namespace_modes(pid: int, mode: str) -> None:
    sandbox = m.PodSandboxSpec(metadata=POD, namespaces=m.NamespaceOptions(pid=pid))
    spec = m.ContainerSpec(metadata=m.ContainerMetadata("c"), image="i")
    body = dockerconfig.container_body(
        spec, infra_id="infra", sandbox=sandbox, image="i", labels={}, oom_floor=0
    )
    assert body["HostConfig"]["PidMode"] == mode


@pytest.mark.parametrize(
    ("mount", "says"),
    [
        (m.Mount("data", "/srv"), "must be an absolute path"),
        (m.Mount("/data", "srv"), "must be an absolute path"),
        (m.Mount("/a:b", "/srv"), "are not supported"),
        (m.Mount("/", "/srv"), "over the root"),
        (m.Mount("/data", "/srv", propagation=7), "propagation 7"),
    ],
)
def test_bad_mounts_are_refused(mount: m.Mount, says: str) -> None:
    with pytest.raises(InvalidArgument, match=says):
        dockerconfig.binds((mount,))


def _user_of(security: m.SecurityOptions) -> str:
    spec = m.ContainerSpec(metadata=m.ContainerMetadata("c"), image="i", security=security)
    body = dockerconfig.container_body(
        spec, infra_id="i", sandbox=SANDBOX, image="i", labels={}, oom_floor=0
    )
    return str(body["User"])


def test_run_as_group_without_a_user_is_refused() -> None:
    with pytest.raises(InvalidArgument, match="user group 3000 is specified without user"):
        _user_of(m.SecurityOptions(run_as_group=3000))
    assert _user_of(m.SecurityOptions(run_as_username="app", run_as_group=3000)) == "app:3000"
    assert _user_of(m.SecurityOptions(run_as_user=0, run_as_group=3000)) == "0:3000"
    assert _user_of(m.SecurityOptions()) == ""  # the image's user


#: A host whose bounding set lacks CAP_SYS_RESOURCE, with two devices.
HOST = dockerconfig.HostPrivileges(
    capabilities=("CAP_CHOWN", "CAP_NET_ADMIN", "CAP_SYS_ADMIN"),
    devices=("/dev/fuse", "/dev/kmsg"),
)


def test_privileged_is_what_the_host_has_not_dockers_privileged() -> None:
    sandbox = m.PodSandboxSpec(metadata=POD, privileged=True)
    security = m.SecurityOptions(privileged=True, seccomp="runtime/default", no_new_privs=True)
    spec = m.ContainerSpec(
        metadata=m.ContainerMetadata("c"),
        image="i",
        devices=(m.Device("/dev/fuse", "/dev/fuse"), m.Device("/dev/mine", "/dev/null")),
        security=security,
    )
    sandbox_hc = dockerconfig.sandbox_body(sandbox, image="i", labels={}, host=HOST)["HostConfig"]
    hc = dockerconfig.container_body(
        spec, infra_id="i", sandbox=sandbox, image="i", labels={}, oom_floor=0, host=HOST
    )["HostConfig"]
    for config in (sandbox_hc, hc):
        assert not config["Privileged"]
        assert config["CapAdd"] == list(HOST.capabilities) and config["CapDrop"] == []
        assert config["SecurityOpt"][:2] == ["seccomp=unconfined", "apparmor=unconfined"]
        assert config["MaskedPaths"] == [] and config["ReadonlyPaths"] == []
        assert config["DeviceCgroupRules"] == ["a *:* rwm"]
    assert [d["PathInContainer"] for d in hc["Devices"]] == ["/dev/mine", "/dev/fuse", "/dev/kmsg"]
    assert hc["SecurityOpt"] == ["seccomp=unconfined", "apparmor=unconfined", "no-new-privileges"]


def test_adding_all_capabilities_adds_the_bounding_sets() -> None:
    def body(*adds: str, drops: tuple[str, ...] = ()) -> dict[str, object]:
        security = m.SecurityOptions(add_capabilities=adds, drop_capabilities=drops)
        spec = m.ContainerSpec(metadata=m.ContainerMetadata("c"), image="i", security=security)
        hc: dict[str, object] = dockerconfig.container_body(
            spec, infra_id="i", sandbox=SANDBOX, image="i", labels={}, oom_floor=0, host=HOST
        )["HostConfig"]
        return hc

    assert body("ALL")["CapAdd"] == list(HOST.capabilities)
    assert body("net_admin", "ALL", drops=("chown",))["CapAdd"] == [
        "CAP_NET_ADMIN",
        "CAP_CHOWN",
        "CAP_SYS_ADMIN",
    ]
    assert body("ALL", drops=("chown",))["CapDrop"] == ["CAP_CHOWN"]
    with pytest.raises(InvalidArgument, match="CAP_SYS_RESOURCE is not in this host's bounding"):
        body("SYS_RESOURCE")


def test_an_image_volume_is_refused_by_name() -> None:
    mount = m.Mount("/data", "", image="docker.io/library/busybox:1.36")
    with pytest.raises(Unimplemented, match=r"image volume 'docker\.io/library/busybox:1\.36'"):
        dockerconfig.binds((mount,))


# -- log framing --------------------------------------------------------------------------------


def _frame(stream: int, stamp: str, body: bytes) -> tuple[int, bytes]:
    return stream, stamp.encode() + b" " + body


T1 = "2026-01-02T03:04:05.000000001Z"
T2 = "2026-01-02T03:04:05.500000000Z"


def test_frames_become_cri_lines_with_stream_and_tags() -> None:
    long_piece = b"x" * DRIVER_BUFFER
    frames = [
        _frame(1, T1, b"hello\n"),
        _frame(2, T1, b"oops\n"),
        _frame(1, T2, long_piece),  # cut by the driver: partial
        _frame(1, T2, b"rest\n"),
        _frame(1, T2, b"last words"),  # the process's final output, unterminated: full
    ]
    text, position, _ = format_frames(frames, Position(), 0)
    lines = [crilog.parse_line(raw) for raw in text.splitlines()]
    assert [(x.stream, x.partial, x.message) for x in lines] == [
        ("stdout", False, "hello"),
        ("stderr", False, "oops"),
        ("stdout", True, long_piece.decode()),
        ("stdout", False, "rest"),
        ("stdout", False, "last words"),
    ]
    assert lines[0].timestamp == "2026-01-02T03:04:05.000000001Z"
    assert position == Position(docker_time_ns(T2), 3)
    assert position_in(text) == position


def test_resuming_skips_exactly_what_the_file_has() -> None:
    frames = [_frame(1, T1, b"old\n"), _frame(1, T2, b"a\n"), _frame(1, T2, b"b\n")]
    written, position, _ = format_frames(frames[:2], Position(), 0)
    # dockerd's `since` is inclusive: the resumed stream repeats everything at T2
    again = [frames[1], frames[2], _frame(1, T2, b"c\n")]
    text, position, skip = format_frames(again, position_in(written), position_in(written).count)
    assert [crilog.parse_line(x).message for x in text.splitlines()] == ["b", "c"]
    assert (position.count, skip) == (3, 0)


def test_a_message_stamped_before_the_one_written_last_is_written_too() -> None:
    # dockerd stamps stdout and stderr in two goroutines and files them as they get its lock
    frames = [_frame(1, T2, b"out\n"), _frame(2, T1, b"err\n"), _frame(1, T2, b"more\n")]
    text, position, _ = format_frames(frames, Position(), 0)
    lines = [crilog.parse_line(raw) for raw in text.splitlines()]
    assert [(x.stream, x.message) for x in lines] == [
        ("stdout", "out"),
        ("stderr", "err"),
        ("stdout", "more"),
    ]
    # resuming from the newest time repeats only what carries it, nothing is lost or doubled
    assert position == position_in(text) == Position(docker_time_ns(T2), 2)
    again = [frames[0], frames[2], _frame(2, T2, b"new\n")]
    text, _, _ = format_frames(again, position, position.count)
    assert [crilog.parse_line(x).message for x in text.splitlines()] == ["new"]


class _ExitedContainer:
    """A dockerd that knows one container, exited after writing one line."""

    async def logs(
        self, container_id: str, *, tty: bool, since: str = "0", follow: bool = True
    ) -> AsyncIterator[list[tuple[int, bytes]]]:
        if since == "0":
            yield [_frame(1, T1, b"bye\n")]

    async def inspect_container(self, container_id: str, *, size: bool = False) -> dict[str, Any]:
        return {"Id": container_id, "State": {"Running": False, "Status": "exited"}}


async def test_a_status_waits_for_the_copiers_a_restarted_server_resumes(tmp_path: Path) -> None:
    copiers = LogCopiers(cast(DockerClient, _ExitedContainer()))
    log = tmp_path / "0.log"
    async with asyncio.TaskGroup() as tg:
        with copiers.running_in(tg):
            settled = tg.create_task(copiers.settle("c1"))  # a status right after a restart
            for _ in range(20):
                await asyncio.sleep(0)
            assert not settled.done(), "reported before the copiers were resumed"
            copiers.start("c1", str(log), tty=False)  # resumed: the container had exited
            copiers.resumed()
            await settled
            assert [crilog.parse_line(x).message for x in log.read_text().splitlines()] == ["bye"]


def test_position_of_a_file_ignores_lines_that_do_not_parse() -> None:
    text = crilog.format_line(5, "stdout", "a") + crilog.format_line(7, "stdout", "b") + "junk\n"
    assert position_in(text) == Position(7, 1)
    assert position_in("") == Position()


def test_a_rotated_file_gives_the_position_after_a_rotation(tmp_path: Path) -> None:
    log = tmp_path / "0.log"
    log.write_text("")
    (tmp_path / "0.log.20260101-000000").write_text(crilog.format_line(9, "stdout", "x"))
    (tmp_path / "0.log.20250101-000000.gz").write_bytes(b"\x1f\x8b")
    os.utime(tmp_path / "0.log.20260101-000000")
    assert read_position(log) == Position(9, 1)


def test_frame_decoder_joins_frames_split_across_reads() -> None:
    data = struct.pack(">BxxxL", 1, 5) + b"hello" + struct.pack(">BxxxL", 2, 3) + b"err"
    decoder = FrameDecoder()
    frames = []
    for i in range(len(data)):
        frames += decoder.feed(data[i : i + 1])
    assert frames == [(1, b"hello"), (2, b"err")]
    assert decoder.pending == 0


@pytest.mark.parametrize(
    ("text", "ns"),
    [
        ("0001-01-01T00:00:00Z", 0),
        ("", 0),
        ("1970-01-01T00:00:01.5Z", 1_500_000_000),
        ("1970-01-01T00:00:01.000000007Z", 1_000_000_007),
        ("1970-01-01T01:00:01+01:00", 1_000_000_000),
        ("1970-01-01T00:00:02Z", 2_000_000_000),
    ],
)
def test_docker_times(text: str, ns: int) -> None:
    assert docker_time_ns(text) == ns


# -- images and pause -----------------------------------------------------------------------------


def test_registry_auth_from_cri_fields() -> None:
    header = registry_auth({"auth": base64.b64encode(b"me:secret").decode(), "server_address": "r"})
    body = json.loads(base64.urlsafe_b64decode(header))
    assert body == {"username": "me", "password": "secret", "serveraddress": "r"}


def test_a_mirror_maps_references_to_its_host() -> None:
    mirror = Mirror.parse("docker.io=http://127.0.0.1:5000/hub/")
    ref = reference.parse("busybox:1.36")
    assert str(mirror.source(ref)) == "127.0.0.1:5000/hub/library/busybox:1.36"
    with pytest.raises(ValueError):
        Mirror.parse("docker.io")


@pytest.mark.parametrize(
    ("user", "expected"),
    [
        ("", (None, "")),
        ("1000", (1000, "")),
        ("1000:1000", (1000, "")),
        ("nobody", (None, "nobody")),
    ],
)
def test_image_user(user: str, expected: tuple[int | None, str]) -> None:
    assert _user(user) == expected


def test_pause_archive_is_a_loadable_docker_archive() -> None:
    import io
    import tarfile

    archive = docker_archive(
        b"\x7fELF", tag="minikubelet/pause:3.9", source="sha256:s", arch="amd64"
    )
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        manifest = json.load(tar.extractfile("manifest.json"))  # type: ignore[arg-type]
        [entry] = manifest
        config = json.load(tar.extractfile(entry["Config"]))  # type: ignore[arg-type]
        layer = tar.extractfile(entry["Layers"][0]).read()  # type: ignore[union-attr]
    assert entry["RepoTags"] == ["minikubelet/pause:3.9"]
    assert config["config"]["Entrypoint"] == ["/pause"]
    with tarfile.open(fileobj=io.BytesIO(layer)) as inner:
        member = inner.getmember("pause")
        assert member.mode == 0o755
    assert docker_archive(b"x", tag="t", source="s", arch="amd64") == docker_archive(
        b"x", tag="t", source="s", arch="amd64"
    )  # deterministic: the same source loads as the same image


# -- reading containers back (runtimes/docker/convert.py) ------------------------------------

CID = "c" * 64
SID = "5" * 64


def _inspected(state: dict[str, object]) -> dict[str, object]:
    labels = lb.container_labels(
        CONTAINER,
        sandbox_id=SID,
        log_path="/var/log/pods/prod_web_u-1/app/3.log",
        image_name="docker.io/library/busybox:1.36",
        repo_digest="docker.io/library/busybox@sha256:" + "d" * 64,
        created_ns=1_000,
    )
    return {"Id": CID, "Image": "sha256:" + "e" * 64, "Config": {"Labels": labels}, "State": state}


@pytest.mark.parametrize(
    ("state", "expected"),
    [
        (
            {"Status": "exited", "ExitCode": 0, "FinishedAt": "2024-01-01T00:00:01Z"},
            (m.ContainerState.EXITED, 0, "Completed"),
        ),
        ({"Status": "exited", "ExitCode": 3}, (m.ContainerState.EXITED, 3, "Error")),
        (
            {"Status": "exited", "ExitCode": 137, "OOMKilled": True},
            (m.ContainerState.EXITED, 137, "OOMKilled"),
        ),
        (
            {"Status": "created", "ExitCode": 0, "Error": "exec: no such file"},
            (m.ContainerState.EXITED, 128, "StartError"),
        ),
        ({"Status": "running", "Running": True, "Pid": 42}, (m.ContainerState.RUNNING, 0, "")),
        ({"Status": "created"}, (m.ContainerState.CREATED, 0, "")),
    ],
)
def test_an_inspected_container_reports_its_exit_as_containerd_does(
    state: dict[str, object], expected: tuple[m.ContainerState, int, str]
) -> None:
    container = Decoder().container_from_inspect(_inspected(state))  # type: ignore[arg-type]
    assert (container.state, container.exit_code, container.reason) == expected
    assert (container.id, container.sandbox_id, container.spec) == (CID, SID, CONTAINER)


def test_a_listed_sandbox_has_its_ip_only_while_it_runs() -> None:
    raw = {
        "Id": SID,
        "Labels": lb.sandbox_labels(SANDBOX, 5),
        "State": "running",
        "NetworkSettings": {"Networks": {"bridge": {"IPAddress": "172.17.0.2"}}},
    }
    decoder = Decoder()
    assert decoder.ours(SID, labels_of(raw), lb.SANDBOX)
    assert not decoder.ours(SID, labels_of(raw), lb.CONTAINER)
    sandbox = decoder.sandbox(raw)
    assert (sandbox.state, sandbox.ip, sandbox.created_at) == (
        m.SandboxState.READY,
        "172.17.0.2",
        5,
    )
    stopped = decoder.sandbox({**raw, "State": "exited"})
    assert (stopped.state, stopped.ip) == (m.SandboxState.NOTREADY, "")
    assert stopped.generation != sandbox.generation


@pytest.mark.parametrize(
    ("word", "state"),
    [
        ("created", m.ContainerState.CREATED),
        ("running", m.ContainerState.RUNNING),
        ("paused", m.ContainerState.RUNNING),
        ("dead", m.ContainerState.EXITED),
        ("what", m.ContainerState.UNKNOWN),
    ],
)
def test_docker_state_words(word: str, state: m.ContainerState) -> None:
    assert container_state(word) == state
