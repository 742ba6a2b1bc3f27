"""OCI bundle generation for the native runtime: pure, table-driven.

Covers :mod:`runtimes.native.oci.spec` (``generate_spec`` and its rules),
:mod:`runtimes.native.oci.user` (the CRI's user rules against passwd/group),
:mod:`runtimes.native.seccomp` (RuntimeDefault, Localhost) and the pure
parsers the runtime uses (cgroup layout, crun's refusal, runc's messages).
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from minikubelet.errors import InvalidArgument
from runtimes.base.model import (
    ContainerMetadata,
    ContainerSpec,
    Device,
    Mount,
    Resources,
    SecurityOptions,
)
from runtimes.native.oci import cgroups
from runtimes.native.oci.devices import HostDevice
from runtimes.native.oci.host import capabilities_from_mask, parse_status_mask
from runtimes.native.oci.runtime import ContainerHandle, ExitStatus, runc_message
from runtimes.native.oci.spec import (
    ALL_CAPABILITIES,
    DEFAULT_CAPABILITIES,
    DEFAULT_MASKED_PATHS,
    DEFAULT_PATH_ENV,
    DEFAULT_READONLY_PATHS,
    Namespace,
    SandboxInfo,
    SpecDefaults,
    generate_spec,
    normalize_sysctl,
    process_args,
)
from runtimes.native.oci.user import ResolvedUser, container_user, resolve_user
from runtimes.native.seccomp import profile as seccomp

CID = "c0ffee"
ROOT = ResolvedUser()
ROOTFS = "/var/lib/minikubelet/rootfs/c0ffee"
DEFAULTS = SpecDefaults(min_oom_score_adj=0, seccomp_profile_root="/var/lib/kubelet/seccomp")
SANDBOX = SandboxInfo(
    id="sb1",
    hostname="web-0",
    network=Namespace.join("/proc/100/ns/net"),
    ipc=Namespace.join("/proc/100/ns/ipc"),
    uts=Namespace.join("/proc/100/ns/uts"),
    pid=Namespace.new(),
)
IMAGE: dict[str, Any] = {
    "User": "",
    "Env": ["PATH=/usr/bin:/bin", "LANG=C.UTF-8", "MODE=image"],
    "Entrypoint": ["/entry"],
    "Cmd": ["serve", "--port=80"],
    "WorkingDir": "/srv",
}


def _container(**kw: Any) -> ContainerSpec:
    security = kw.pop("security", SecurityOptions())
    return ContainerSpec(
        metadata=ContainerMetadata(name="app"), image="registry.test/app:1", security=security, **kw
    )


def _spec(
    container: ContainerSpec | None = None,
    *,
    image: Mapping[str, Any] = IMAGE,
    sandbox: SandboxInfo = SANDBOX,
    defaults: SpecDefaults = DEFAULTS,
    user: ResolvedUser = ROOT,
    **kw: Any,
) -> dict[str, Any]:
    return generate_spec(
        container_id=CID,
        container=container or _container(),
        image_config=image,
        sandbox=sandbox,
        rootfs=ROOTFS,
        user=user,
        defaults=defaults,
        **kw,
    )


def _mount(spec: dict[str, Any], dest: str) -> dict[str, Any]:
    found: list[dict[str, Any]] = [m for m in spec["mounts"] if m["destination"] == dest]
    assert len(found) == 1, f"{dest}: {found}"
    return found[0]


# -- process args ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("command", "args", "entrypoint", "cmd", "expected"),
    [
        # neither: the image's Entrypoint + Cmd
        ((), (), ("/entry",), ("serve",), ["/entry", "serve"]),
        # args only: Entrypoint + args (Cmd dropped)
        ((), ("x", "y"), ("/entry",), ("serve",), ["/entry", "x", "y"]),
        # command only: command (Entrypoint and Cmd both dropped)
        (("/bin/sh",), (), ("/entry",), ("serve",), ["/bin/sh"]),
        # both: command + args
        (("/bin/sh", "-c"), ("echo hi",), ("/entry",), ("serve",), ["/bin/sh", "-c", "echo hi"]),
        # image without Entrypoint: Cmd alone, or args alone
        ((), (), (), ("sh",), ["sh"]),
        ((), ("echo", "hi"), (), ("sh",), ["echo", "hi"]),
        # image without Cmd
        ((), (), ("/entry",), (), ["/entry"]),
    ],
)
def test_process_args(
    command: tuple[str, ...],
    args: tuple[str, ...],
    entrypoint: tuple[str, ...],
    cmd: tuple[str, ...],
    expected: list[str],
) -> None:
    assert process_args(command, args, entrypoint, cmd) == expected


def test_no_command_anywhere_is_invalid() -> None:
    with pytest.raises(InvalidArgument, match="no command"):
        _spec(image={"Entrypoint": None, "Cmd": None})


def test_args_from_the_image_config_json() -> None:
    spec = _spec(_container(args=("--debug",)), image={"config": IMAGE})
    assert spec["process"]["args"] == ["/entry", "--debug"]


# -- env and cwd -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("image_env", "cri_env", "expected"),
    [
        # image env first (its PATH replaces the default in place), HOSTNAME from the sandbox
        (
            ["PATH=/usr/bin:/bin", "LANG=C"],
            (),
            ["PATH=/usr/bin:/bin", "HOSTNAME=web-0", "LANG=C"],
        ),
        # CRI envs replace by name, in place; new names append in order
        (
            ["PATH=/bin", "MODE=image", "LANG=C"],
            (("MODE", "cri"), ("EXTRA", "1")),
            ["PATH=/bin", "HOSTNAME=web-0", "MODE=cri", "LANG=C", "EXTRA=1"],
        ),
        # PATH defaulted when neither gives one; values keep their '='
        ([], (("Q", "a=b"),), [f"PATH={DEFAULT_PATH_ENV}", "HOSTNAME=web-0", "Q=a=b"]),
        # the CRI may override PATH and HOSTNAME too
        (
            [],
            (("PATH", "/opt/bin"), ("HOSTNAME", "mine")),
            ["PATH=/opt/bin", "HOSTNAME=mine"],
        ),
    ],
)
def test_env_merge(
    image_env: list[str], cri_env: tuple[tuple[str, str], ...], expected: list[str]
) -> None:
    spec = _spec(_container(envs=cri_env), image={**IMAGE, "Env": image_env})
    assert spec["process"]["env"] == expected


@pytest.mark.parametrize(
    ("working_dir", "image_dir", "expected"),
    [("/work", "/srv", "/work"), ("", "/srv", "/srv"), ("", None, "/"), ("", "rel", "/rel")],
)
def test_cwd(working_dir: str, image_dir: str | None, expected: str) -> None:
    spec = _spec(_container(working_dir=working_dir), image={**IMAGE, "WorkingDir": image_dir})
    assert spec["process"]["cwd"] == expected


def test_relative_working_dir_is_invalid() -> None:
    with pytest.raises(InvalidArgument, match="not absolute"):
        _spec(_container(working_dir="srv"))


def test_terminal_follows_tty() -> None:
    assert _spec(_container(tty=True))["process"]["terminal"] is True
    assert _spec()["process"]["terminal"] is False


# -- user ------------------------------------------------------------------------------------

PASSWD = """\
root:x:0:0:root:/root:/bin/sh
daemon:x:1:1::/:/usr/sbin/nologin
alice:x:1000:1000:Alice:/home/alice:/bin/sh
# a comment
bob:x:1001:100::/home/bob:/bin/sh
broken line
"""
GROUP = """\
root:x:0:
users:x:100:alice
alice:x:1000:
staff:x:50:alice,bob
wheel:x:10:root
"""


@pytest.mark.parametrize(
    ("spec_user", "supplemental", "expected"),
    [
        ("", (), ResolvedUser(0, 0, (0, 10), "root")),
        ("0", (), ResolvedUser(0, 0, (0, 10), "root")),
        # a numeric uid the image does not know: gid 0, no memberships
        ("4242", (), ResolvedUser(4242, 0, (0,), "")),
        ("4242:77", (5,), ResolvedUser(4242, 77, (77, 5), "")),
        # names: primary gid from passwd, memberships from group
        ("alice", (), ResolvedUser(1000, 1000, (1000, 100, 50), "alice")),
        ("1000", (), ResolvedUser(1000, 1000, (1000, 100, 50), "alice")),
        ("bob", (), ResolvedUser(1001, 100, (100, 50), "bob")),
        # an explicit group, by number or name; supplemental groups last, no duplicates
        ("alice:50", (3000, 100), ResolvedUser(1000, 50, (50, 100, 3000), "alice")),
        ("alice:wheel", (), ResolvedUser(1000, 10, (10, 100, 50), "alice")),
        ("1001:staff", (), ResolvedUser(1001, 50, (50,), "bob")),
    ],
)
def test_resolve_user(
    spec_user: str, supplemental: tuple[int, ...], expected: ResolvedUser
) -> None:
    assert resolve_user(spec_user, PASSWD, GROUP, supplemental) == expected


@pytest.mark.parametrize(
    ("spec_user", "message"),
    [("carol", "user 'carol' not found"), ("alice:nogroup", "group 'nogroup' not found")],
)
def test_resolve_user_unknown_names(spec_user: str, message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        resolve_user(spec_user, PASSWD, GROUP)


def test_resolve_user_without_passwd_files() -> None:
    assert resolve_user("", "", "") == ResolvedUser(0, 0, (0,), "")
    with pytest.raises(InvalidArgument):
        resolve_user("nobody", "", "")


@pytest.mark.parametrize(
    ("security", "image_user", "expected"),
    [
        (SecurityOptions(), "", ""),
        (SecurityOptions(), "alice:staff", "alice:staff"),
        (SecurityOptions(run_as_user=1000), "bob:staff", "1000"),
        (SecurityOptions(run_as_username="bob"), "alice", "bob"),
        (SecurityOptions(run_as_user=0), "alice", "0"),
        (SecurityOptions(run_as_user=1000, run_as_group=3000), "bob:staff", "1000:3000"),
        (SecurityOptions(run_as_username="alice", run_as_group=50), "", "alice:50"),
    ],
)
def test_container_user(security: SecurityOptions, image_user: str, expected: str) -> None:
    assert container_user(security, image_user) == expected


@pytest.mark.parametrize("image_user", ["", "alice", "1000:1000"])
def test_run_as_group_without_user_is_invalid(image_user: str) -> None:
    with pytest.raises(InvalidArgument, match="group is specified without user"):
        container_user(SecurityOptions(run_as_group=3000), image_user)


def test_user_in_the_spec() -> None:
    spec = _spec(user=ResolvedUser(1000, 3000, (3000, 4000)))
    assert spec["process"]["user"] == {"uid": 1000, "gid": 3000, "additionalGids": [3000, 4000]}


# -- capabilities, privileged ----------------------------------------------------------------

DEFAULT_CAPS = list(DEFAULT_CAPABILITIES)


@pytest.mark.parametrize(
    ("add", "drop", "expected"),
    [
        ((), (), DEFAULT_CAPS),
        (("NET_ADMIN",), (), [*DEFAULT_CAPS, "CAP_NET_ADMIN"]),
        (
            ("cap_sys_ptrace",),
            ("KILL",),
            [*(c for c in DEFAULT_CAPS if c != "CAP_KILL"), "CAP_SYS_PTRACE"],
        ),
        # drop ALL, then add back
        (("NET_BIND_SERVICE",), ("ALL",), ["CAP_NET_BIND_SERVICE"]),
        ((), ("all",), []),
        # add ALL minus a drop
        (("ALL",), ("CHOWN",), [c for c in ALL_CAPABILITIES if c != "CAP_CHOWN"]),
        # add and drop the same: the drop wins
        (("NET_ADMIN",), ("NET_ADMIN",), DEFAULT_CAPS),
        # adding one already there is a no-op
        (("CHOWN",), (), DEFAULT_CAPS),
    ],
)
def test_capabilities(add: tuple[str, ...], drop: tuple[str, ...], expected: list[str]) -> None:
    security = SecurityOptions(add_capabilities=add, drop_capabilities=drop)
    caps = _spec(_container(security=security))["process"]["capabilities"]
    assert caps == {"bounding": expected, "effective": expected, "permitted": expected}


def test_unknown_capability_is_invalid() -> None:
    with pytest.raises(InvalidArgument, match="unknown capability CAP_FLY"):
        _spec(_container(security=SecurityOptions(add_capabilities=("FLY",))))


def test_capability_the_runtime_lacks_is_invalid() -> None:
    lacking = dataclasses.replace(
        DEFAULTS, all_capabilities=tuple(c for c in ALL_CAPABILITIES if c != "CAP_SYS_RESOURCE")
    )
    security = SecurityOptions(add_capabilities=("SYS_RESOURCE",))
    with pytest.raises(InvalidArgument, match="not available"):
        _spec(_container(security=security), defaults=lacking)
    # add ALL means all the runtime has
    all_of_them = SecurityOptions(add_capabilities=("ALL",))
    caps = _spec(_container(security=all_of_them), defaults=lacking)["process"]["capabilities"]
    assert "CAP_SYS_RESOURCE" not in caps["bounding"]


NULL_DEV = HostDevice("/dev/null", "c", 1, 3, 0o666)
FUSE_DEV = HostDevice("/dev/fuse", "c", 10, 229, 0o666)


def test_privileged() -> None:
    defaults = dataclasses.replace(DEFAULTS, host_devices=(NULL_DEV, FUSE_DEV))
    security = SecurityOptions(
        privileged=True, seccomp="runtime/default", masked_paths=("/proc/kcore",)
    )
    spec = _spec(
        _container(security=security),
        sandbox=dataclasses.replace(SANDBOX, privileged=True),
        defaults=defaults,
    )
    assert spec["process"]["capabilities"]["bounding"] == list(ALL_CAPABILITIES)
    linux = spec["linux"]
    assert "maskedPaths" not in linux and "readonlyPaths" not in linux
    assert "seccomp" not in linux
    assert linux["resources"]["devices"] == [{"allow": True, "access": "rwm"}]
    assert [d["path"] for d in linux["devices"]] == ["/dev/null", "/dev/fuse"]
    assert "ro" not in _mount(spec, "/sys")["options"]
    assert "ro" not in _mount(spec, "/sys/fs/cgroup")["options"]


def test_unprivileged_sys_is_read_only() -> None:
    spec = _spec()
    assert "ro" in _mount(spec, "/sys")["options"]
    assert "ro" in _mount(spec, "/sys/fs/cgroup")["options"]
    assert spec["linux"]["resources"]["devices"] == [{"allow": False, "access": "rwm"}]


def test_privileged_container_needs_a_privileged_sandbox() -> None:
    with pytest.raises(InvalidArgument, match="non-privileged sandbox"):
        _spec(_container(security=SecurityOptions(privileged=True)))


@pytest.mark.parametrize("readonly", [True, False])
def test_readonly_rootfs(readonly: bool) -> None:
    sandbox = dataclasses.replace(
        SANDBOX, resolv_conf_path="/run/sb1/resolv.conf", hostname_path="/run/sb1/hostname"
    )
    security = SecurityOptions(readonly_rootfs=readonly)
    spec = _spec(_container(security=security), sandbox=sandbox)
    assert spec["root"] == {"path": ROOTFS, "readonly": readonly}
    mode = "ro" if readonly else "rw"
    assert _mount(spec, "/etc/resolv.conf") == {
        "destination": "/etc/resolv.conf",
        "type": "bind",
        "source": "/run/sb1/resolv.conf",
        "options": ["rbind", "rprivate", mode],
    }
    assert _mount(spec, "/etc/hostname")["options"][-1] == mode
    assert not [m for m in spec["mounts"] if m["destination"] == "/etc/hosts"]


@pytest.mark.parametrize("no_new_privs", [True, False])
def test_no_new_privs(no_new_privs: bool) -> None:
    spec = _spec(_container(security=SecurityOptions(no_new_privs=no_new_privs)))
    assert spec["process"]["noNewPrivileges"] is no_new_privs


@pytest.mark.parametrize(
    ("masked", "readonly", "expected_masked", "expected_readonly"),
    [
        ((), (), list(DEFAULT_MASKED_PATHS), list(DEFAULT_READONLY_PATHS)),
        (("/proc/x",), ("/proc/y",), ["/proc/x"], ["/proc/y"]),
        (("/proc/x",), (), ["/proc/x"], list(DEFAULT_READONLY_PATHS)),
    ],
)
def test_masked_and_readonly_paths(
    masked: tuple[str, ...],
    readonly: tuple[str, ...],
    expected_masked: list[str],
    expected_readonly: list[str],
) -> None:
    security = SecurityOptions(masked_paths=masked, readonly_paths=readonly)
    linux = _spec(_container(security=security))["linux"]
    assert linux["maskedPaths"] == expected_masked
    assert linux["readonlyPaths"] == expected_readonly
    assert "/proc/kcore" in DEFAULT_MASKED_PATHS and "/proc/sys" in DEFAULT_READONLY_PATHS


# -- seccomp ---------------------------------------------------------------------------------


def _names(profile: dict[str, Any]) -> set[str]:
    return {
        n
        for rule in profile["syscalls"]
        if rule["action"] == "SCMP_ACT_ALLOW"
        for n in rule["names"]
    }


@pytest.mark.parametrize(
    ("ref", "empty_default", "expect"),
    [
        ("", "unconfined", None),
        ("unconfined", "runtime/default", None),
        ("", "runtime/default", "default"),
        ("runtime/default", "unconfined", "default"),
        ("docker/default", "unconfined", "default"),
    ],
)
def test_seccomp_choice(ref: str, empty_default: str, expect: str | None) -> None:
    defaults = dataclasses.replace(DEFAULTS, empty_seccomp=empty_default)
    linux = _spec(_container(security=SecurityOptions(seccomp=ref)), defaults=defaults)["linux"]
    if expect is None:
        assert "seccomp" not in linux
    else:
        profile = linux["seccomp"]
        assert profile["defaultAction"] == "SCMP_ACT_ERRNO"
        assert profile["defaultErrnoRet"] == 1
        assert profile["architectures"] == ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"]


def test_runtime_default_profile_shape() -> None:
    profile = seccomp.runtime_default(caps=DEFAULT_CAPABILITIES, arch="amd64")
    allowed = _names(profile)
    # what busybox sh/echo/sleep/cat/ls/id/dd need is there
    for name in (
        "read",
        "write",
        "execve",
        "clone",
        "wait4",
        "rt_sigaction",
        "openat",
        "mmap",
        "getdents64",
        "nanosleep",
        "clock_nanosleep",
        "exit_group",
        "arch_prctl",
    ):
        assert name in allowed, name
    # what a container without CAP_SYS_ADMIN must not do
    for name in (
        "mount",
        "umount2",
        "unshare",
        "setns",
        "reboot",
        "kexec_load",
        "init_module",
        "bpf",
        "keyctl",
        "add_key",
        "open_by_handle_at",
        "swapon",
    ):
        assert name not in allowed, name
    clone = next(r for r in profile["syscalls"] if r["names"] == ["clone"])
    assert clone["args"] == [
        {"index": 0, "value": 0x7E020000, "valueTwo": 0, "op": "SCMP_CMP_MASKED_EQ"}
    ]
    clone3 = next(r for r in profile["syscalls"] if r["names"] == ["clone3"])
    assert clone3 == {"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38}
    assert all(set(r) <= {"names", "action", "args", "errnoRet"} for r in profile["syscalls"])


def test_runtime_default_follows_capabilities_and_arch() -> None:
    admin = seccomp.runtime_default(caps=(*DEFAULT_CAPABILITIES, "CAP_SYS_ADMIN"), arch="amd64")
    assert {"mount", "unshare", "setns", "clone3"} <= _names(admin)
    assert not [r for r in admin["syscalls"] if r["names"] == ["clone"] and "args" in r]
    arm = seccomp.runtime_default(caps=DEFAULT_CAPABILITIES, arch="arm64")
    assert arm["architectures"] == ["SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"]
    assert "arch_prctl" not in _names(arm)


LOCAL_PROFILE = {
    "defaultAction": "SCMP_ACT_LOG",
    "archMap": [{"architecture": "SCMP_ARCH_X86_64", "subArchitectures": ["SCMP_ARCH_X86"]}],
    "syscalls": [
        {"name": "mkdir", "action": "SCMP_ACT_ERRNO", "comment": "docker-style single name"},
        {"names": ["mount"], "action": "SCMP_ACT_ALLOW", "includes": {"caps": ["CAP_SYS_ADMIN"]}},
    ],
}


@pytest.mark.parametrize(
    "ref",
    ["localhost/profiles/audit.json", "localhost//var/lib/kubelet/seccomp/profiles/audit.json"],
)
def test_seccomp_localhost(ref: str) -> None:
    spec = _spec(_container(security=SecurityOptions(seccomp=ref)), seccomp_localhost=LOCAL_PROFILE)
    assert spec["linux"]["seccomp"] == {
        "defaultAction": "SCMP_ACT_LOG",
        "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86"],
        "syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_ERRNO"}],
    }


@pytest.mark.parametrize(
    ("ref", "message"),
    [
        ("localhost/../../../etc/passwd", "outside the profile root"),
        ("localhost/profiles/../../escape.json", "outside the profile root"),
        ("localhost/", "empty path"),
        ("localhost/profiles/missing.json", "was not loaded"),
        ("weird/profile", "unknown seccomp profile"),
    ],
)
def test_seccomp_refusals(ref: str, message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        _spec(_container(security=SecurityOptions(seccomp=ref)))


@pytest.mark.parametrize(
    "ref", ["localhost//etc/seccomp.json", "localhost//var/lib/kubelet/seccomp-other/x.json"]
)
def test_seccomp_localhost_absolute_path_anywhere(ref: str) -> None:
    """containerd and CRI-O load the absolute path they are given, under no root."""
    spec = _spec(_container(security=SecurityOptions(seccomp=ref)), seccomp_localhost=LOCAL_PROFILE)
    assert spec["linux"]["seccomp"]["syscalls"] == [
        {"names": ["mkdir"], "action": "SCMP_ACT_ERRNO"}
    ]


def test_localhost_profile_without_default_action_is_invalid() -> None:
    with pytest.raises(InvalidArgument, match=r"/var/lib/kubelet/seccomp/p\.json: .*defaultAction"):
        _spec(
            _container(security=SecurityOptions(seccomp="localhost/p.json")),
            seccomp_localhost={"syscalls": []},
        )


def test_load_localhost_profile(tmp_path: Path) -> None:
    root = tmp_path / "seccomp"
    (root / "profiles").mkdir(parents=True)
    (root / "profiles" / "ok.json").write_text(json.dumps(LOCAL_PROFILE))
    (root / "profiles" / "bad.json").write_text("{not json")
    (root / "profiles" / "noaction.json").write_text('{"syscalls": []}')
    (tmp_path / "secret.json").write_text(json.dumps(LOCAL_PROFILE))
    os.symlink(tmp_path / "secret.json", root / "profiles" / "link.json")
    assert seccomp.load_localhost_profile("localhost/profiles/ok.json", str(root)) == LOCAL_PROFILE
    with pytest.raises(InvalidArgument, match="resolves outside"):
        seccomp.load_localhost_profile("localhost/profiles/link.json", str(root))
    with pytest.raises(InvalidArgument, match="outside the profile root"):
        seccomp.load_localhost_profile("localhost/../secret.json", str(root))
    with pytest.raises(InvalidArgument, match=r"bad\.json"):
        seccomp.load_localhost_profile("localhost/profiles/bad.json", str(root))
    with pytest.raises(InvalidArgument, match=r"noaction\.json: .*defaultAction"):
        seccomp.load_localhost_profile("localhost/profiles/noaction.json", str(root))
    with pytest.raises(InvalidArgument, match=r"none\.json: no such file"):
        seccomp.load_localhost_profile("localhost/profiles/none.json", str(root))


def test_load_localhost_profile_at_an_absolute_path(tmp_path: Path) -> None:
    """An absolute path is loaded wherever it lies, through symlinks too."""
    (tmp_path / "mine.json").write_text(json.dumps(LOCAL_PROFILE))
    os.symlink(tmp_path / "mine.json", tmp_path / "link.json")
    root = str(tmp_path / "elsewhere")
    for name in ("mine.json", "link.json"):
        ref = f"localhost/{tmp_path / name}"
        assert seccomp.load_localhost_profile(ref, root) == LOCAL_PROFILE


# -- sysctls ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sysctls", "network", "ipc", "expected"),
    [
        (
            {
                "kernel.shm_rmid_forced": "1",
                "kernel.msgmax": "8192",
                "kernel.sem": "250 32000 32 128",
                "fs.mqueue.msg_max": "20",
                "net.ipv4.ip_unprivileged_port_start": "0",
            },
            Namespace.new(),
            Namespace.new(),
            None,  # as given
        ),
        # the slash spelling is normalized
        (
            {"net/ipv4/conf/eth0.100/forwarding": "1"},
            Namespace.new(),
            Namespace.new(),
            {"net.ipv4.conf.eth0/100.forwarding": "1"},
        ),
        # ipc sysctls are fine with host networking
        ({"kernel.shmmax": "1"}, Namespace.host(), Namespace.new(), None),
    ],
)
def test_sysctls_allowed(
    sysctls: dict[str, str], network: Namespace, ipc: Namespace, expected: dict[str, str] | None
) -> None:
    sandbox = dataclasses.replace(SANDBOX, sysctls=sysctls, network=network, ipc=ipc)
    assert _spec(sandbox=sandbox)["linux"]["sysctl"] == (expected or sysctls)


@pytest.mark.parametrize(
    ("sysctls", "network", "ipc", "message"),
    [
        ({"kernel.hostname": "x"}, Namespace.new(), Namespace.new(), "not namespaced"),
        ({"vm.overcommit_memory": "1"}, Namespace.new(), Namespace.new(), "not namespaced"),
        ({"kernel.pid_max": "9"}, Namespace.new(), Namespace.new(), "not namespaced"),
        ({"fs.file-max": "9"}, Namespace.new(), Namespace.new(), "not namespaced"),
        ({"net.core.somaxconn": "1"}, Namespace.host(), Namespace.new(), "host networking"),
        ({"kernel.msgmax": "1"}, Namespace.new(), Namespace.host(), "host IPC"),
    ],
)
def test_sysctls_refused(
    sysctls: dict[str, str], network: Namespace, ipc: Namespace, message: str
) -> None:
    sandbox = dataclasses.replace(SANDBOX, sysctls=sysctls, network=network, ipc=ipc)
    with pytest.raises(InvalidArgument, match=message):
        _spec(sandbox=sandbox)


def test_no_sysctls_no_key() -> None:
    assert "sysctl" not in _spec()["linux"]
    assert normalize_sysctl("kernel.shm_rmid_forced") == "kernel.shm_rmid_forced"


# -- resources -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("resources", "defaults", "expected", "oom"),
    [
        (Resources(), DEFAULTS, {}, 0),
        (
            Resources(
                cpu_shares=512,
                cpu_quota=50000,
                cpu_period=100000,
                memory_limit_in_bytes=64 << 20,
                oom_score_adj=900,
            ),
            DEFAULTS,
            {
                "cpu": {"shares": 512, "quota": 50000, "period": 100000},
                "memory": {"limit": 64 << 20},
            },
            900,
        ),
        # swap accounting: swap = limit, so no swap beyond the limit
        (
            Resources(memory_limit_in_bytes=8 << 20),
            dataclasses.replace(DEFAULTS, swap_accounting=True, pids_limit=1024),
            {"memory": {"limit": 8 << 20, "swap": 8 << 20}, "pids": {"limit": 1024}},
            0,
        ),
        (
            Resources(cpuset_cpus="0-1", cpuset_mems="0"),
            DEFAULTS,
            {"cpu": {"cpus": "0-1", "mems": "0"}},
            0,
        ),
        # guaranteed pods ask for -997: never below the runtime's own
        (Resources(oom_score_adj=-997), DEFAULTS, {}, 0),
        (
            Resources(oom_score_adj=-997),
            dataclasses.replace(DEFAULTS, min_oom_score_adj=300),
            {},
            300,
        ),
        (
            Resources(oom_score_adj=-997),
            dataclasses.replace(DEFAULTS, min_oom_score_adj=-1000),
            {},
            -997,
        ),
        (Resources(oom_score_adj=5000), DEFAULTS, {}, 1000),
    ],
)
def test_resources(
    resources: Resources, defaults: SpecDefaults, expected: dict[str, Any], oom: int
) -> None:
    spec = _spec(_container(resources=resources), defaults=defaults)
    got = dict(spec["linux"]["resources"])
    assert got.pop("devices") == [{"allow": False, "access": "rwm"}]
    assert got == expected
    assert spec["process"]["oomScoreAdj"] == oom


def test_negative_memory_limit_is_invalid() -> None:
    with pytest.raises(InvalidArgument, match="memory limit"):
        _spec(_container(resources=Resources(memory_limit_in_bytes=-1)))


# -- namespaces, cgroups, hostname -----------------------------------------------------------


@pytest.mark.parametrize(
    ("sandbox", "expected"),
    [
        (
            SANDBOX,
            [
                {"type": "pid"},
                {"type": "network", "path": "/proc/100/ns/net"},
                {"type": "ipc", "path": "/proc/100/ns/ipc"},
                {"type": "uts", "path": "/proc/100/ns/uts"},
                {"type": "mount"},
            ],
        ),
        # a shared pid namespace is joined
        (
            dataclasses.replace(SANDBOX, pid=Namespace.join("/proc/100/ns/pid")),
            [
                {"type": "pid", "path": "/proc/100/ns/pid"},
                {"type": "network", "path": "/proc/100/ns/net"},
                {"type": "ipc", "path": "/proc/100/ns/ipc"},
                {"type": "uts", "path": "/proc/100/ns/uts"},
                {"type": "mount"},
            ],
        ),
        # host namespaces are not in the spec at all
        (
            SandboxInfo(
                id="sb",
                network=Namespace.host(),
                ipc=Namespace.host(),
                uts=Namespace.host(),
                pid=Namespace.host(),
            ),
            [{"type": "mount"}],
        ),
        # fresh everything (the component tests' sandbox)
        (
            SandboxInfo(id="sb"),
            [{"type": t} for t in ("pid", "network", "ipc", "uts", "mount")],
        ),
    ],
)
def test_namespaces(sandbox: SandboxInfo, expected: list[dict[str, str]]) -> None:
    assert _spec(sandbox=sandbox)["linux"]["namespaces"] == expected
    assert sandbox.shared_pid is (sandbox.pid.path != "")


def test_join_without_path_is_invalid() -> None:
    with pytest.raises(InvalidArgument, match="network namespace"):
        _spec(sandbox=dataclasses.replace(SANDBOX, network=Namespace.join("")))


@pytest.mark.parametrize(
    ("parent", "expected"),
    [
        ("", f"minikubelet-{CID}"),
        ("/kubepods/besteffort/pod123", f"/kubepods/besteffort/pod123/{CID}"),
        ("/kubepods/", f"/kubepods/{CID}"),
    ],
)
def test_cgroups_path(parent: str, expected: str) -> None:
    sandbox = dataclasses.replace(SANDBOX, cgroup_parent=parent)
    assert _spec(sandbox=sandbox)["linux"]["cgroupsPath"] == expected


def test_hostname_unless_host_uts() -> None:
    assert _spec()["hostname"] == "web-0"
    assert "hostname" not in _spec(sandbox=dataclasses.replace(SANDBOX, uts=Namespace.host()))


@pytest.mark.parametrize("cid", ["", "../x", "a/b", "-x"])
def test_bad_container_id(cid: str) -> None:
    with pytest.raises(InvalidArgument, match="container id"):
        generate_spec(
            container_id=cid,
            container=_container(),
            image_config=IMAGE,
            sandbox=SANDBOX,
            rootfs=ROOTFS,
            user=ResolvedUser(),
            defaults=DEFAULTS,
        )


def test_annotations() -> None:
    spec = _spec(_container(annotations={"team": "web"}))
    assert spec["annotations"] == {
        "team": "web",
        "io.kubernetes.cri.container-type": "container",
        "io.kubernetes.cri.container-name": "app",
        "io.kubernetes.cri.sandbox-id": "sb1",
        "io.kubernetes.cri.image-name": "registry.test/app:1",
    }
    assert spec["ociVersion"] == "1.0.2"


# -- mounts and devices ----------------------------------------------------------------------


def test_standard_mounts() -> None:
    spec = _spec()
    assert [m["destination"] for m in spec["mounts"]] == [
        "/proc",
        "/dev",
        "/dev/pts",
        "/dev/shm",
        "/dev/mqueue",
        "/sys",
        "/sys/fs/cgroup",
    ]
    assert _mount(spec, "/dev/shm")["type"] == "tmpfs"
    shared = _spec(sandbox=dataclasses.replace(SANDBOX, shm_path="/run/sb1/shm"))
    assert _mount(shared, "/dev/shm") == {
        "destination": "/dev/shm",
        "type": "bind",
        "source": "/run/sb1/shm",
        "options": ["rbind", "rprivate", "nosuid", "nodev", "noexec", "rw"],
    }


@pytest.mark.parametrize(
    ("mount", "options", "rootfs_propagation"),
    [
        (Mount("/data", "/srv/data"), ["rbind", "rprivate", "rw"], None),
        (Mount("/data", "/srv/data", readonly=True), ["rbind", "rprivate", "ro"], None),
        (Mount("/data", "/srv/data", propagation=1), ["rbind", "rslave", "rw"], "rslave"),
        (Mount("/data", "/srv/data", propagation=2), ["rbind", "rshared", "rw"], "rshared"),
    ],
)
def test_cri_mounts(mount: Mount, options: list[str], rootfs_propagation: str | None) -> None:
    spec = _spec(_container(mounts=(mount,)))
    assert _mount(spec, "/data") == {
        "destination": "/data",
        "type": "bind",
        "source": "/srv/data",
        "options": options,
    }
    assert spec["linux"].get("rootfsPropagation") == rootfs_propagation


def test_cri_mounts_parents_first_and_override_standard_ones() -> None:
    sandbox = dataclasses.replace(SANDBOX, hosts_path="/run/sb1/hosts")
    mounts = (
        Mount("/var/log/app/deep", "/h/deep"),
        Mount("/dev/shm", "/h/shm"),
        Mount("/var/log", "/h/log"),
        Mount("/etc/hosts", "/kubelet/etc-hosts"),
    )
    spec = _spec(_container(mounts=mounts), sandbox=sandbox)
    destinations = [m["destination"] for m in spec["mounts"]]
    assert destinations.count("/dev/shm") == 1 and destinations.count("/etc/hosts") == 1
    assert _mount(spec, "/dev/shm")["source"] == "/h/shm"
    assert _mount(spec, "/etc/hosts")["source"] == "/kubelet/etc-hosts"
    assert destinations.index("/var/log") < destinations.index("/var/log/app/deep")


@pytest.mark.parametrize(
    ("mount", "message"),
    [
        (Mount("data", "/srv"), "not absolute"),
        (Mount("/data", ""), "no host path"),
        (Mount("/data", "/srv", propagation=7), "unknown propagation"),
    ],
)
def test_bad_mounts(mount: Mount, message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        _spec(_container(mounts=(mount,)))


def test_devices() -> None:
    container = _container(devices=(Device("/dev/myfuse", "/dev/fuse", "rw"),))
    linux = _spec(container, devices={"/dev/fuse": FUSE_DEV})["linux"]
    assert linux["devices"] == [
        {
            "path": "/dev/myfuse",
            "type": "c",
            "major": 10,
            "minor": 229,
            "fileMode": 0o666,
            "uid": 0,
            "gid": 0,
        },
    ]
    assert linux["resources"]["devices"] == [
        {"allow": False, "access": "rwm"},
        {"allow": True, "type": "c", "major": 10, "minor": 229, "access": "rw"},
    ]


@pytest.mark.parametrize(
    ("device", "resolved", "message"),
    [
        (Device("/dev/x", "/dev/fuse"), {}, "not resolved"),
        (Device("/dev/x", "/dev/fuse", "rwx"), {"/dev/fuse": FUSE_DEV}, "bad permissions"),
    ],
)
def test_bad_devices(device: Device, resolved: dict[str, HostDevice], message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        _spec(_container(devices=(device,)), devices=resolved)


def test_bad_rootfs() -> None:
    with pytest.raises(InvalidArgument, match="rootfs"):
        generate_spec(
            container_id=CID,
            container=_container(),
            image_config=IMAGE,
            sandbox=SANDBOX,
            rootfs="relative/rootfs",
            user=ResolvedUser(),
            defaults=DEFAULTS,
        )


def test_spec_is_json() -> None:
    security = SecurityOptions(seccomp="runtime/default", add_capabilities=("NET_ADMIN",))
    spec = _spec(_container(security=security, mounts=(Mount("/d", "/h"),)))
    assert json.loads(json.dumps(spec)) == spec


# -- host facts and the runtime's parsers ----------------------------------------------------

HYBRID_MOUNTINFO = """\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,xattr,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
22 1 253:0 / / rw,relatime - ext4 /dev/vda rw
"""
UNIFIED_MOUNTINFO = "30 23 0:26 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n"
LEGACY_MOUNTINFO = "\n".join(HYBRID_MOUNTINFO.splitlines()[:5])


def test_cgroup_layouts() -> None:
    hybrid = cgroups.parse_layout(HYBRID_MOUNTINFO)
    assert hybrid.mode is cgroups.CgroupMode.HYBRID
    assert hybrid.unified == "/sys/fs/cgroup/unified"
    assert dict(hybrid.v1) == {
        "cpu": "/sys/fs/cgroup/cpu",
        "cpuacct": "/sys/fs/cgroup/cpuacct",
        "memory": "/sys/fs/cgroup/memory",
        "name=systemd": "/sys/fs/cgroup/systemd",
    }
    assert cgroups.parse_layout(UNIFIED_MOUNTINFO).mode is cgroups.CgroupMode.UNIFIED
    assert cgroups.parse_layout(LEGACY_MOUNTINFO).mode is cgroups.CgroupMode.LEGACY


@pytest.mark.parametrize(
    ("mountinfo", "controllers", "refused"),
    [
        (HYBRID_MOUNTINFO, "hugetlb\n", True),  # this machine
        (HYBRID_MOUNTINFO, "", False),  # hybrid with an empty cgroup2: crun copes
        (UNIFIED_MOUNTINFO, "cpu memory pids", False),
        (LEGACY_MOUNTINFO, "", False),
    ],
)
def test_crun_refusal(mountinfo: str, controllers: str, refused: bool) -> None:
    message = cgroups.crun_refusal(cgroups.parse_layout(mountinfo), controllers)
    assert bool(message) is refused
    if refused:
        assert "hybrid" in message and "hugetlb" in message


OWN_CGROUP = "4:memory:/process_api/abc\n2:cpuacct:/\n1:cpu:/\n9:name=systemd:/\n0::/\n"


@pytest.mark.parametrize(
    ("path", "expected_memory", "expected_cpuacct"),
    [
        (
            "minikubelet-c1",
            "/sys/fs/cgroup/memory/process_api/abc/minikubelet-c1",
            "/sys/fs/cgroup/cpuacct/minikubelet-c1",
        ),
        (
            "/kubepods/pod1/c1",
            "/sys/fs/cgroup/memory/kubepods/pod1/c1",
            "/sys/fs/cgroup/cpuacct/kubepods/pod1/c1",
        ),
    ],
)
def test_cgroup_dirs(path: str, expected_memory: str, expected_cpuacct: str) -> None:
    own = cgroups.parse_proc_cgroup(OWN_CGROUP)
    dirs = cgroups.cgroup_dirs(cgroups.parse_layout(HYBRID_MOUNTINFO), path, own)
    assert str(dirs["memory"]) == expected_memory
    assert str(dirs["cpuacct"]) == expected_cpuacct
    assert "name=systemd" not in dirs
    unified = cgroups.cgroup_dirs(cgroups.parse_layout(UNIFIED_MOUNTINFO), path, {"": "/user"})
    assert list(unified) == [""]


def test_working_set() -> None:
    stat = cgroups.parse_flat_keyed("cache 10\ntotal_inactive_file 4096\nbogus x\n")
    assert cgroups.working_set(10000, stat) == 10000 - 4096
    assert cgroups.working_set(100, stat) == 0
    assert cgroups.working_set(100, {"inactive_file": 40}) == 60


@pytest.mark.parametrize(
    ("stderr", "message"),
    [
        (
            b'time="2026-01-01T00:00:00Z" level=error msg="container does not exist"\n',
            "container does not exist",
        ),
        (b'level=warning msg="a"\nlevel=error msg="say \\"no\\""\n', 'say "no"'),
        (b"cgroups in hybrid mode not supported\n", "cgroups in hybrid mode not supported"),
    ],
)
def test_runc_message(stderr: bytes, message: str) -> None:
    assert runc_message(stderr) == message


def test_capability_mask_of_this_kind_of_host() -> None:
    status = "Name:\tpython\nCapBnd:\t000001fffeffffff\n"
    caps = capabilities_from_mask(parse_status_mask(status))
    assert "CAP_SYS_RESOURCE" not in caps
    assert len(caps) == len(ALL_CAPABILITIES) - 1


@pytest.mark.parametrize(
    ("status", "reason"),
    [
        (ExitStatus(0, 1), "Completed"),
        (ExitStatus(3, 1), "Error"),
        (ExitStatus(137, 1, oom_killed=True), "OOMKilled"),
    ],
)
def test_exit_reason(status: ExitStatus, reason: str) -> None:
    assert status.reason == reason


def test_handle_from_spec() -> None:
    spec = _spec(_container(tty=True))
    handle = ContainerHandle.from_spec(id=CID, bundle="/b", log_path="/l", spec=spec)
    assert handle.cgroups_path == f"minikubelet-{CID}"
    assert handle.terminal is True
    assert str(handle.persist_dir) == "/b/persist"
