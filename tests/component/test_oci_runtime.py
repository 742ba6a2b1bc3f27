"""The native runtime's container half against the real thing: runc 1.1 under conmon 2.1.

Every test builds a rootfs from busybox-static, generates the bundle with
:func:`generate_spec` (fresh namespaces, our RuntimeDefault seccomp profile)
and drives it through :class:`OCIRuntime`. Conditions are awaited by polling
with deadlines, never by sleeping a fixed time.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import secrets
import shutil
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from minikubelet.errors import DeadlineExceeded, FailedPrecondition, Internal, NotFound
from minikubelet.logs import crilog
from runtimes.base.model import ContainerMetadata, ContainerSpec, Resources, SecurityOptions
from runtimes.native.oci import cgroups
from runtimes.native.oci.devices import list_host_devices
from runtimes.native.oci.host import spec_defaults
from runtimes.native.oci.runtime import ContainerHandle, ExitStatus, OCIRuntime
from runtimes.native.oci.spec import Namespace, SandboxInfo, SpecDefaults, generate_spec
from runtimes.native.oci.user import container_user, resolve_user
from tests.harness.fixtures import require
from tests.harness.wait import wait_until

REPO = Path(__file__).resolve().parents[2]
APPLETS = ("sh", "echo", "sleep", "cat", "id", "ls", "dd", "head", "true", "printf")
PASSWD = "root:x:0:0:root:/root:/bin/sh\nalice:x:1000:1000::/home/alice:/bin/sh\n"
GROUP = "root:x:0:\nalice:x:1000:\nstaff:x:50:alice\n"
SANDBOX = SandboxInfo(id="sb-oci-test", hostname="oci-test")  # every namespace fresh


def _read(path: Path | str) -> str:
    try:
        return Path(path).read_text()
    except FileNotFoundError:
        return ""


def _alive(pid: int) -> bool:
    stat = _read(f"/proc/{pid}/stat")
    return bool(stat) and stat.rpartition(")")[2].split()[0] != "Z"


def _ppid(pid: int) -> int:
    return int(_read(f"/proc/{pid}/stat").rpartition(")")[2].split()[1])


@pytest.fixture(scope="module")
def rootfs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A busybox-static root filesystem: /bin/busybox, its applets, /etc/passwd and group."""
    busybox = require("/bin/busybox", "busybox-static")
    require("runc", "runc")
    require("conmon", "conmon")
    root = tmp_path_factory.mktemp("busybox") / "rootfs"
    for d in ("bin", "etc", "proc", "dev", "sys", "tmp", "root"):
        (root / d).mkdir(parents=True)
    shutil.copy2(busybox, root / "bin" / "busybox")
    for applet in APPLETS:
        (root / "bin" / applet).symlink_to("busybox")
    (root / "etc" / "passwd").write_text(PASSWD)
    (root / "etc" / "group").write_text(GROUP)
    return root


@pytest.fixture(scope="module")
async def defaults() -> SpecDefaults:
    return await spec_defaults(privileged_devices=False)


@dataclass
class Env:
    runtime: OCIRuntime
    rootfs: Path
    defaults: SpecDefaults
    base: Path
    handles: list[ContainerHandle] = field(default_factory=list)

    def handle(self, *, spec: dict[str, Any], handler: str = "") -> ContainerHandle:
        cid = spec["annotations"]["test-id"]
        handle = ContainerHandle.from_spec(
            id=cid,
            bundle=str(self.base / "bundles" / cid),
            log_path=str(self.base / "logs" / f"{cid}.log"),
            spec=spec,
            handler=handler,
            name=f"test_{cid}",
        )
        self.handles.append(handle)
        return handle

    def spec(
        self,
        *command: str,
        memory: int = 0,
        security: SecurityOptions | None = None,
        sandbox: SandboxInfo = SANDBOX,
    ) -> dict[str, Any]:
        cid = f"t{secrets.token_hex(6)}"
        security = security or SecurityOptions(seccomp="runtime/default")
        container = ContainerSpec(
            metadata=ContainerMetadata(name="c"),
            image="busybox",
            command=command,
            resources=Resources(memory_limit_in_bytes=memory),
            security=security,
            annotations={"test-id": cid},
        )
        user = resolve_user(
            container_user(security, ""), PASSWD, GROUP, security.supplemental_groups
        )
        return generate_spec(
            container_id=cid,
            container=container,
            image_config={"Env": ["PATH=/bin"]},
            sandbox=sandbox,
            rootfs=str(self.rootfs),
            user=user,
            defaults=self.defaults,
        )

    async def run(self, *command: str, **kw: Any) -> ContainerHandle:
        handle = self.handle(spec=(spec := self.spec(*command, **kw)))
        await self.runtime.create(handle, spec)
        await self.runtime.start(handle)
        return handle


@pytest.fixture
async def env(tmp_path: Path, rootfs: Path, defaults: SpecDefaults) -> AsyncIterator[Env]:
    runtime = OCIRuntime(root=tmp_path / "oci", command_timeout=20)
    env = Env(runtime, rootfs, defaults, tmp_path)
    try:
        yield env
    finally:
        for handle in env.handles:
            await runtime.delete(handle)
    stray = [pid for pid in _conmons() if str(tmp_path) in _read(f"/proc/{pid}/cmdline")]
    assert not stray, f"conmon processes left behind: {stray}"


def _log_lines(handle: ContainerHandle) -> list[crilog.LogLine]:
    return [crilog.parse_line(line) for line in _read(handle.log_path).splitlines()]


def _output(handle: ContainerHandle) -> list[str]:
    """The container's output lines, partial (P) pieces joined to their full (F) line."""
    lines, pending = [], ""
    for line in _log_lines(handle):
        pending += line.message
        if not line.partial:
            lines.append(pending)
            pending = ""
    return lines


# -- status ----------------------------------------------------------------------------------


async def test_check_runc(env: Env) -> None:
    check = await env.runtime.check()
    assert check.ok, check.message
    assert check.handler == "runc" and check.binary.endswith("runc")
    assert check.version.startswith("runc version 1.")
    assert check.conmon_version.startswith("conmon version 2.")
    unknown = await env.runtime.check("kata")
    assert not unknown.ok and "unknown runtime handler" in unknown.message


async def test_check_crun_reports_what_crun_does_here(env: Env) -> None:
    """crun 1.8 refuses a hybrid layout whose cgroup2 has controllers (as on the dev VM).

    The check predicts that from the layout; where crun is installed the
    prediction is held against a real ``crun create``.
    """
    layout = await asyncio.to_thread(cgroups.read_layout)
    controllers = await asyncio.to_thread(cgroups.read_unified_controllers, layout)
    refusal = cgroups.crun_refusal(layout, controllers)
    check = await env.runtime.check("crun")
    if shutil.which("crun") is None:
        assert not check.ok and check.message == "not installed"
        return
    assert check.ok is (not refusal), check.message
    assert check.message == refusal
    spec = env.spec("true")
    handle = env.handle(spec=spec, handler="crun")
    if refusal:
        with pytest.raises(Internal, match="cgroups in hybrid mode not supported"):
            await env.runtime.create(handle, spec)
        assert await env.runtime.state(handle) is None
    else:
        await env.runtime.create(handle, spec)
        await env.runtime.start(handle)
        assert (await env.runtime.wait_exit(handle, 10)).exit_code == 0


# -- lifecycle -------------------------------------------------------------------------------


async def test_exit_code_and_cri_log(env: Env) -> None:
    handle = await env.run("sh", "-c", "echo hello; echo oops >&2; exit 3")
    status = await env.runtime.wait_exit(handle, 10)
    assert status.exit_code == 3 and status.reason == "Error" and not status.oom_killed
    assert abs(status.finished_at - time.time_ns()) < 60 * 10**9
    # conmon's exit file in the exit dir: written just after the bundle's copy that
    # wait_exit reads, so it may still be on its way
    exit_file = env.runtime.exit_dir / handle.id
    await wait_until(
        lambda: exit_file.exists() and _read(exit_file) == "3", message="the exit dir's file"
    )
    lines = _log_lines(handle)
    assert [(ln.stream, ln.partial, ln.message) for ln in lines] == [
        ("stdout", False, "hello"),
        ("stderr", False, "oops"),
    ]
    state = await env.runtime.state(handle)
    assert state is not None and state.status == "stopped"


async def test_failed_create_is_reported_and_leaves_nothing(env: Env) -> None:
    spec = env.spec("/bin/no-such-program")
    handle = env.handle(spec=spec)
    with pytest.raises(Internal, match="no-such-program"):
        await env.runtime.create(handle, spec)
    assert await env.runtime.state(handle) is None
    assert await env.runtime.list_containers() == []


REFUSING_RUNC = """#!/bin/sh
# runc, except that create fails after creating the container, and delete fails while
# {refuse} exists (the state that runc delete cannot clean up: a stuck mount, say)
for arg; do
    case "$arg" in
    create) {runc} "$@" || exit $?; echo 'level=error msg="create failed late"' >&2; exit 1 ;;
    delete) [ -e {refuse} ] && {{ echo 'level=error msg="delete refused"' >&2; exit 1; }} ;;
    esac
done
exec {runc} "$@"
"""


async def test_a_failed_delete_after_a_failed_create_is_reported_and_retried(
    env: Env, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Undoing a half-done create can fail too: that is logged and told, and the container
    stays in the OCI runtime's state until a later delete succeeds (never silently left)."""
    runc, refuse = shutil.which("runc"), tmp_path / "refuse-delete"
    wrapper = tmp_path / "refusing-runc"
    wrapper.write_text(REFUSING_RUNC.format(runc=runc, refuse=refuse))
    wrapper.chmod(0o755)
    refuse.touch()
    runtime = OCIRuntime(root=env.runtime.root, handlers={"runc": str(wrapper)}, command_timeout=20)
    spec = env.spec("true")
    handle = env.handle(spec=spec)
    with caplog.at_level("ERROR"), pytest.raises(Internal) as caught:
        await runtime.create(handle, spec)
    assert "delete refused" in caught.value.message
    logged = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert any(handle.id in m and "delete refused" in m for m in logged), logged
    kept = await runtime.state(handle)
    assert kept is not None and kept.status == "created"  # not forgotten: still in runc's state
    with pytest.raises(Internal, match="delete refused"):
        await runtime.delete(handle)  # every failed delete is an error, not a silent success
    refuse.unlink()
    await runtime.delete(handle)  # the retry
    assert await runtime.state(handle) is None


CHILD = """
import asyncio, json, sys
from runtimes.native.oci.runtime import ContainerHandle, OCIRuntime

async def main() -> None:
    args = json.loads(sys.argv[1])
    runtime = OCIRuntime(root=args["root"])
    handle = ContainerHandle(**args["handle"])
    pid = await runtime.create(handle, args["spec"])
    await runtime.start(handle)
    print(pid)

asyncio.run(main())
"""


async def test_container_outlives_the_process_that_created_it(env: Env) -> None:
    spec = env.spec("sleep", "3600")
    handle = env.handle(spec=spec)
    args = {
        "root": str(env.runtime.root),
        "handle": {"id": handle.id, "bundle": handle.bundle, "log_path": handle.log_path,
                   "cgroups_path": handle.cgroups_path},
        "spec": spec,
    }  # fmt: skip
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        CHILD,
        json.dumps(args),
        stdout=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    out, _ = await asyncio.wait_for(child.communicate(), 30)
    assert child.returncode == 0
    pid = int(out)
    assert not _alive(child.pid)  # the creator is gone ...
    state = await env.runtime.state(handle)
    assert state is not None and state.status == "running" and state.pid == pid
    assert _alive(pid)  # ... the container runs on, supervised by conmon
    monitor = _ppid(pid)
    assert _read(f"/proc/{monitor}/comm").strip() == "conmon"
    assert _ppid(monitor) != child.pid
    # and this process can still stop it: sleep as pid 1 ignores SIGTERM, so SIGKILL follows
    status = await env.runtime.stop(handle, timeout=0.3)
    assert status == ExitStatus(137, status.finished_at, False)


async def test_exec_sync(env: Env) -> None:
    handle = await env.run("sleep", "3600")
    result = await env.runtime.exec_sync(handle, ["echo", "hi"], timeout=10)
    assert (result.stdout, result.stderr, result.exit_code) == (b"hi\n", b"", 0)
    result = await env.runtime.exec_sync(
        handle, ["sh", "-c", "echo out; echo err >&2; exit 7"], timeout=10
    )
    assert (result.stdout, result.stderr, result.exit_code) == (b"out\n", b"err\n", 7)
    result = await env.runtime.exec_sync(handle, ["cat", "/proc/self/status"], timeout=10)
    assert b"Seccomp:\t2" in result.stdout  # our RuntimeDefault profile is in force
    assert b"NoNewPrivs:\t0" in result.stdout
    result = await env.runtime.exec_sync(handle, ["no-such-command"], timeout=10)
    assert result.exit_code != 0


async def test_exec_sync_timeout_kills_the_command(env: Env) -> None:
    handle = await env.run("sleep", "3600")
    state = await env.runtime.state(handle)
    assert state is not None
    dirs = await env.runtime.cgroup_dirs(handle)
    procs = (dirs["pids"] if "pids" in dirs else dirs[""]) / "cgroup.procs"
    started = time.monotonic()
    with pytest.raises(DeadlineExceeded):
        await env.runtime.exec_sync(handle, ["sh", "-c", "sleep 300; echo never"], timeout=0.5)
    assert time.monotonic() - started < 10

    async def only_init_left() -> bool:
        return _read(procs).split() == [str(state.pid)]

    await wait_until(only_init_left, timeout=10, message="the exec'd processes to be gone")
    assert not list(Path(handle.bundle).glob("exec-*.pid"))


async def test_exec_in_a_stopped_container(env: Env) -> None:
    handle = await env.run("true")
    await env.runtime.wait_exit(handle, 10)
    with pytest.raises(FailedPrecondition, match="stopped"):
        await env.runtime.exec_sync(handle, ["echo"], timeout=5)
    with pytest.raises(FailedPrecondition, match="not running"):
        await env.runtime.reopen_log(handle)


async def test_user_from_the_image_passwd(env: Env) -> None:
    security = SecurityOptions(
        run_as_username="alice", supplemental_groups=(4000,), seccomp="runtime/default"
    )
    handle = await env.run("sh", "-c", "id; cat /proc/self/status", security=security)
    assert (await env.runtime.wait_exit(handle, 10)).exit_code == 0
    output = _output(handle)
    assert output[0] == "uid=1000(alice) gid=1000(alice) groups=50(staff),1000(alice),4000"
    assert "CapEff:\t0000000000000000" in output  # a non-root process keeps no capabilities


async def test_delete_leaves_no_state_cgroup_process_or_mount(env: Env) -> None:
    handle = await env.run("sleep", "3600")
    state = await env.runtime.state(handle)
    assert state is not None and state.status == "running"
    conmon_pid = int(_read(handle.conmon_pidfile))
    dirs = await env.runtime.cgroup_dirs(handle)
    assert all(d.is_dir() for d in dirs.values())
    assert _read(dirs["memory"] / "cgroup.procs").split() == [str(state.pid)]
    own = cgroups.parse_proc_cgroup(_read(f"/proc/{state.pid}/cgroup"))
    assert str(dirs["memory"]).endswith(own["memory"])

    await env.runtime.delete(handle)
    assert await env.runtime.state(handle) is None
    assert not (env.runtime.state_root() / handle.id).exists()
    assert not [d for d in dirs.values() if d.exists()]
    assert not _alive(state.pid) and not _alive(conmon_pid)
    assert not (env.runtime.exit_dir / handle.id).exists()
    mountinfo = _read("/proc/self/mountinfo")
    assert handle.bundle not in mountinfo and str(env.rootfs) not in mountinfo
    await env.runtime.delete(handle)  # idempotent
    assert not await env.runtime.kill(handle)


async def test_oom_killed(env: Env) -> None:
    handle = await env.run(
        "sh", "-c", "echo started; dd if=/dev/zero of=/dev/null bs=64M count=1", memory=8 << 20
    )
    status = await env.runtime.wait_exit(handle, 20)
    assert status.oom_killed and status.reason == "OOMKilled" and status.exit_code == 137
    # the kernel's word for it, in the container's memory cgroup ...
    assert (await env.runtime.stats(handle)).oom_kills >= 1
    # ... recorded next to the exit code (by conmon, or by us when conmon missed it),
    # so the reason survives the cgroup
    assert (handle.persist_dir / "oom").exists()
    await env.runtime.delete(handle)
    assert not (env.runtime.exit_dir / handle.id).exists()
    assert await env.runtime.exit_status(handle) == status  # from the bundle's persist dir
    assert _output(handle) == ["started"]


async def test_reopen_log_after_rotation(env: Env) -> None:
    handle = await env.run(
        "sh", "-c", "i=0; while true; do echo line $i; i=$((i+1)); sleep 0.05; done"
    )

    async def logged(path: str) -> bool:
        return "line" in _read(path)

    await wait_until(lambda: logged(handle.log_path), timeout=10, message="first log lines")
    rotated = handle.log_path + ".1"
    os.rename(handle.log_path, rotated)
    await env.runtime.reopen_log(handle)
    await wait_until(
        lambda: logged(handle.log_path), timeout=10, message="lines in the new log file"
    )
    old, new = _read(rotated).splitlines(), _read(handle.log_path).splitlines()
    assert os.stat(rotated).st_ino != os.stat(handle.log_path).st_ino
    last_old = int(crilog.parse_line(old[-1]).message.split()[1])
    first_new = int(crilog.parse_line(new[0]).message.split()[1])
    assert first_new == last_old + 1  # not a line lost or repeated across the rotation
    assert len(_read(rotated).splitlines()) == len(old)  # the old file no longer grows
    await env.runtime.stop(handle, timeout=0.3)


async def test_stats(env: Env) -> None:
    handle = await env.run("sh", "-c", "while true; do i=1; done")  # burns CPU until deleted
    first = await env.runtime.stats(handle)
    assert first.memory_usage_bytes > 0
    assert 0 < first.memory_working_set_bytes <= first.memory_usage_bytes

    async def busier() -> bool:
        return (await env.runtime.stats(handle)).cpu_usage_ns > first.cpu_usage_ns

    await wait_until(busier, timeout=10, message="CPU use to grow")
    await env.runtime.delete(handle)
    with pytest.raises(NotFound):
        await env.runtime.stats(handle)


async def test_containers_join_a_sandbox_s_namespaces_and_sysctls_apply(env: Env) -> None:
    """A pod: an infra container holds the namespaces, an app container joins them."""
    infra = await env.run("sleep", "3600")
    state = await env.runtime.state(infra)
    assert state is not None
    ns = f"/proc/{state.pid}/ns"
    pod = SandboxInfo(
        id="sb-pod",
        hostname="pod-host",
        network=Namespace.join(f"{ns}/net"),
        ipc=Namespace.join(f"{ns}/ipc"),
        uts=Namespace.join(f"{ns}/uts"),
        pid=Namespace.join(f"{ns}/pid"),  # shareProcessNamespace
        sysctls={"kernel.shm_rmid_forced": "1", "net.ipv4.ping_group_range": "0 0"},
    )
    script = (
        "cat /proc/sys/kernel/shm_rmid_forced /proc/sys/net/ipv4/ping_group_range"
        " /proc/1/cmdline; echo; cat /proc/sys/kernel/hostname; echo $HOSTNAME"
    )
    app = env.handle(spec=(spec := env.spec("sh", "-c", script, sandbox=pod)))
    await env.runtime.create(app, spec)
    await env.runtime.start(app)
    assert (await env.runtime.wait_exit(app, 10)).exit_code == 0
    lines = _output(app)
    # pid 1 is the infra container's; the pod's hostname is in the UTS namespace and env
    assert lines == ["1", "0\t0", "sleep\x003600\x00", "pod-host", "pod-host"]
    for kind in ("net", "ipc", "uts", "pid"):
        assert os.readlink(f"/proc/{state.pid}/ns/{kind}") != os.readlink(f"/proc/self/ns/{kind}")


async def test_a_created_container_can_be_stopped_and_deleted(env: Env) -> None:
    spec = env.spec("sleep", "3600")
    handle = env.handle(spec=spec)
    pid = await env.runtime.create(handle, spec)
    state = await env.runtime.state(handle)
    assert state is not None and state.status == "created" and state.pid == pid
    status = await env.runtime.stop(handle, timeout=0.3)
    # runc's init (Go) dies of SIGTERM as 143, or exits 2 once Go's handlers are in place
    assert status.exit_code in (2, 137, 143) and status.reason == "Error"
    await env.runtime.delete(handle)
    assert await env.runtime.state(handle) is None


async def test_privileged(env: Env) -> None:
    devices = await asyncio.to_thread(list_host_devices)
    env.defaults = dataclasses.replace(env.defaults, host_devices=devices)
    sandbox = dataclasses.replace(SANDBOX, privileged=True)
    security = SecurityOptions(privileged=True, seccomp="runtime/default")
    script = "cat /proc/self/status; ls /dev"
    spec = env.spec("sh", "-c", script, security=security, sandbox=sandbox)
    handle = env.handle(spec=spec)
    await env.runtime.create(handle, spec)
    await env.runtime.start(handle)
    assert (await env.runtime.wait_exit(handle, 10)).exit_code == 0
    lines = _output(handle)
    assert "Seccomp:\t0" in lines  # privileged: unconfined
    assert f"CapEff:\t{_read('/proc/self/status').split('CapBnd:')[1].split()[0]}" in lines
    assert "null" in lines and "kmsg" in lines  # the host's devices


def _conmons() -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        name = entry.name
        if name.isdigit() and _read(entry / "comm").strip() == "conmon" and _alive(int(name)):
            found.append(int(name))
    return found
