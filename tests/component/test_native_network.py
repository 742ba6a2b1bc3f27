"""The native runtime's pod namespaces and CNI networking, on this host with the real plugins.

Runs as root with util-linux, iproute2, iptables and containernetworking-plugins
(``/usr/lib/cni``). Pods get a bridge and subnet of the tests' own
(``mkbrtest0``, 10.90.0.0/24), apart from the runtime's default (``mkbr0``,
10.89.0.0/16) and from the other harnesses', and all traffic stays on that
bridge or on 127.0.0.1. Every test checks that what it created is gone again:
mounts, veths, iptables rules, IPAM allocations, records and directories.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import os
import socket
import stat
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from minikubelet.errors import InvalidArgument
from minikubelet.volumes.manager import mount_points
from runtimes.base.model import DNSConfig, PortMapping, SandboxMetadata
from runtimes.native.namespaces import (
    NamespaceError,
    NamespaceManager,
    NamespacePaths,
    pinned_type,
)
from runtimes.native.network import cni as cnimod
from runtimes.native.network.cni import CNIError, CNIManager, CNIOptions, PodNetwork
from runtimes.native.network.files import (
    SandboxFiles,
    remove_sandbox_files,
    render_hosts,
    render_resolv_conf,
    write_sandbox_files,
)
from tests.harness.wait import WaitTimeout, wait_until

BRIDGE = "mkbrtest0"
SUBNET = ipaddress.ip_network("10.90.0.0/24")
GATEWAY = "10.90.0.1"
SUBNET_PREFIX = "10.90.0."
TIMEOUT = 10.0
POLL = 0.02
#: What portmap creates once and never removes (shared by every pod of every runtime using it).
PORTMAP_SCAFFOLDING = {
    ":CNI-HOSTPORT-DNAT - [0:0]",
    ":CNI-HOSTPORT-MASQ - [0:0]",
    ":CNI-HOSTPORT-SETMARK - [0:0]",
    "-A PREROUTING -m addrtype --dst-type LOCAL -j CNI-HOSTPORT-DNAT",
    "-A OUTPUT -m addrtype --dst-type LOCAL -j CNI-HOSTPORT-DNAT",
    '-A POSTROUTING -m comment --comment "CNI portfwd requiring masquerade" -j CNI-HOSTPORT-MASQ',
    "-A CNI-HOSTPORT-MASQ -m mark --mark 0x2000/0x2000 -j MASQUERADE",
    '-A CNI-HOSTPORT-SETMARK -m comment --comment "CNI portfwd masquerade mark" '
    "-j MARK --set-xmark 0x2000/0x2000",
}
#: host-local's per-network files that outlive every allocation.
IPAM_BOOKKEEPING = {"lock", "last_reserved_ip.0"}

#: A TCP server for inside a pod: says "listening", then answers each connection with
#: "hello <peer address>" until it has answered ``argv[2]`` of them.
LISTENER = """
import socket, sys
server = socket.socket()
server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
server.bind(("0.0.0.0", int(sys.argv[1])))
server.listen()
print("listening", flush=True)
for _ in range(int(sys.argv[2])):
    conn, peer = server.accept()
    conn.sendall(("hello %s\\n" % peer[0]).encode())
    conn.close()
"""


# -- host helpers ----------------------------------------------------------------------------


async def run(*argv: str, check: bool = True) -> str:
    proc = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(proc.communicate(), TIMEOUT)
    if check and proc.returncode != 0:
        raise AssertionError(f"{argv}: exit {proc.returncode}: {err.decode()}")
    return out.decode()


async def nat_rules() -> set[str]:
    """Both families' nat rules of CNI or for our subnet (others' rules may come and go)."""
    lines: set[str] = set()
    for tool, family in (("iptables-save", ""), ("ip6tables-save", "ip6 ")):
        for line in (await run(tool, "-t", "nat")).splitlines():
            if "CNI-" in line or SUBNET_PREFIX in line:
                lines.add(family + line)
    return lines


async def bridge_ports() -> list[str]:
    if not Path(f"/sys/class/net/{BRIDGE}").exists():
        return []
    links = json.loads(await run("ip", "-j", "link", "show", "master", BRIDGE) or "[]")
    return sorted(link["ifname"] for link in links)


@dataclass(frozen=True)
class HostState:
    mounts: tuple[str, ...]
    ports: tuple[str, ...]
    nat: frozenset[str]
    files: tuple[str, ...]


async def host_state(root: Path) -> HostState:
    real = str(root.resolve())
    mounts = [p for p in mount_points(Path("/proc/self/mountinfo").read_text()) if real in p]
    files = sorted(
        str(p.relative_to(root))
        for p in root.rglob("*")
        if not p.is_dir() and p.name not in IPAM_BOOKKEEPING
    )
    return HostState(
        mounts=tuple(sorted(mounts)),
        ports=tuple(await bridge_ports()),
        nat=frozenset(await nat_rules()),
        files=tuple(files),
    )


async def settled(root: Path, before: HostState) -> HostState:
    """The host state once the kernel has finished destroying dropped network namespaces.

    A namespace whose last reference goes is cleaned up by a kernel worker a moment
    later, taking its veth (and the bridge port) along: poll for that, with a deadline.
    """

    async def ports_back() -> HostState | None:
        state = await host_state(root)
        return state if state.ports == before.ports else None

    try:
        return await wait_until(
            ports_back, timeout=TIMEOUT, interval=POLL, message="the bridge ports as before"
        )
    except WaitTimeout:
        return await host_state(root)  # the caller's comparison says what is left


def assert_nothing_left(before: HostState, after: HostState) -> None:
    assert after.mounts == before.mounts
    assert after.ports == before.ports
    assert after.files == before.files
    assert before.nat - after.nat == set()
    assert after.nat - before.nat <= PORTMAP_SCAFFOLDING


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


async def addresses(netns: Path) -> dict[str, Any]:
    out = await run("nsenter", f"--net={netns}", "ip", "-j", "addr")
    return {link["ifname"]: link for link in json.loads(out)}


async def fetch(host: str, port: int) -> str:
    reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), TIMEOUT)
    try:
        return (await asyncio.wait_for(reader.readline(), TIMEOUT)).decode().strip()
    finally:
        writer.close()
        await writer.wait_closed()


def options(root: Path, **changes: Any) -> CNIOptions:
    base = {
        "conf_dir": root / "cni" / "net.d",
        "state_dir": root / "cni",
        "bridge": BRIDGE,
        "subnet": str(SUBNET),
    }
    return CNIOptions(**{**base, **changes})


@dataclass
class Node:
    """The two managers on one root, as the native runtime's server holds them."""

    root: Path
    namespaces: NamespaceManager
    cni: CNIManager

    def options(self, **changes: Any) -> CNIOptions:
        return options(self.root, **changes)

    @classmethod
    async def started(cls, root: Path) -> Node:
        node = cls(root, NamespaceManager(root), CNIManager(options(root)))
        await node.namespaces.start()
        await node.cni.start()
        return node

    async def restarted(self) -> Node:
        """Fresh managers on the same root: what a restarted runtime server has."""
        return await Node.started(self.root)

    async def pod(
        self, sandbox_id: str, ports: Sequence[PortMapping] = (), **ns: Any
    ) -> tuple[NamespacePaths, PodNetwork]:
        kinds = {"network": True, "ipc": True, "uts": True, "hostname": sandbox_id, **ns}
        paths = await self.namespaces.create(sandbox_id, **kinds)
        assert paths.network is not None
        meta = SandboxMetadata(name=sandbox_id, uid=f"uid-{sandbox_id}", namespace="default")
        net = await self.cni.setup(sandbox_id, paths.network, meta, ports)
        return paths, net

    async def remove(self, sandbox_id: str) -> None:
        await self.cni.teardown(sandbox_id, self.namespaces.paths(sandbox_id).network)
        await self.namespaces.remove(sandbox_id)


@pytest.fixture(scope="module")
async def node(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Node]:
    routes = await run("ip", "-4", "route", "show", "to", "match", str(SUBNET[1]))
    others = [r for r in routes.splitlines() if not r.startswith("default") and BRIDGE not in r]
    assert others == [], f"{SUBNET} is routed elsewhere on this host"
    scaffolding_before = PORTMAP_SCAFFOLDING & await nat_rules()
    node = await Node.started(tmp_path_factory.mktemp("native-net"))
    yield node
    for sandbox_id in node.cni.attached():
        await node.cni.teardown(sandbox_id)
    for sandbox_id in await node.namespaces.recover():
        await node.namespaces.remove(sandbox_id)
    await node.namespaces.uninstall()
    await run("ip", "link", "del", BRIDGE, check=False)
    if not scaffolding_before:
        await remove_portmap_scaffolding()


async def remove_portmap_scaffolding() -> None:
    """Undo portmap's shared chains once no pod of anyone's uses them (nothing jumps per pod)."""
    if (await run("iptables", "-t", "nat", "-S", "CNI-HOSTPORT-DNAT", check=False)).count("-A "):
        return
    for jump in (
        ("PREROUTING", "-m", "addrtype", "--dst-type", "LOCAL", "-j", "CNI-HOSTPORT-DNAT"),
        ("OUTPUT", "-m", "addrtype", "--dst-type", "LOCAL", "-j", "CNI-HOSTPORT-DNAT"),
        (
            "POSTROUTING",
            "-m",
            "comment",
            "--comment",
            "CNI portfwd requiring masquerade",
            "-j",
            "CNI-HOSTPORT-MASQ",
        ),
    ):
        await run("iptables", "-t", "nat", "-D", *jump, check=False)
    for chain in ("CNI-HOSTPORT-DNAT", "CNI-HOSTPORT-MASQ", "CNI-HOSTPORT-SETMARK"):
        await run("iptables", "-t", "nat", "-F", chain, check=False)
        await run("iptables", "-t", "nat", "-X", chain, check=False)


# -- a pod, end to end -----------------------------------------------------------------------


async def test_a_pod_is_reachable_on_its_ip_and_its_host_port(node: Node) -> None:
    before = await host_state(node.root)
    host_port = free_port()
    ports = (PortMapping(protocol=0, container_port=8080, host_port=host_port),)
    paths, net = await node.pod("web-0", ports)

    assert ipaddress.ip_address(net.ip) in SUBNET and net.additional_ips == ()
    links = await addresses(paths.network or Path())
    eth0 = [a["local"] for a in links["eth0"]["addr_info"] if a["family"] == "inet"]
    assert eth0 == [net.ip]
    assert "UP" in links["lo"]["flags"]
    assert "127.0.0.1" in [a["local"] for a in links["lo"]["addr_info"]]
    uts = await run("nsenter", f"--uts={paths.uts}", "hostname")
    assert uts.strip() == "web-0"
    assert node.cni.cached_network("web-0") == net

    listener = await asyncio.create_subprocess_exec(
        "nsenter", f"--net={paths.network}", "python3", "-c", LISTENER, "8080", "3",
        stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert listener.stdout is not None
    try:
        ready = await asyncio.wait_for(listener.stdout.readline(), TIMEOUT)
        assert ready == b"listening\n"
        # From the host to the pod on the bridge, then through portmap's DNAT: on the
        # bridge's address, and on 127.0.0.1 (route_localnet + masquerade, so the pod
        # sees the bridge's address as the peer).
        assert await fetch(net.ip, 8080) == f"hello {GATEWAY}"
        assert await fetch(GATEWAY, host_port) == f"hello {GATEWAY}"
        assert await fetch("127.0.0.1", host_port) == f"hello {GATEWAY}"
        assert await asyncio.wait_for(listener.wait(), TIMEOUT) == 0
    finally:
        if listener.returncode is None:
            listener.kill()
            await listener.wait()

    dnat = [r for r in await nat_rules() if f"--to-destination {net.ip}:8080" in r]
    assert len(dnat) == 1 and f"--dport {host_port}" in dnat[0]
    await node.remove("web-0")
    assert node.namespaces.paths("web-0") == NamespacePaths()
    assert_nothing_left(before, await host_state(node.root))


async def test_namespaces_carry_hostname_sysctls_and_a_shared_pid_namespace(node: Node) -> None:
    before = await host_state(node.root)
    paths = await node.namespaces.create(
        "tools",
        network=True,
        ipc=True,
        uts=True,
        hostname="tools-1",
        pid=True,
        sysctls={"net.ipv4.ip_unprivileged_port_start": "99", "kernel/shmmni": "1234"},
    )
    assert paths.by_type().keys() == {"net", "ipc", "uts", "pid"}
    assert {k: pinned_type(p) for k, p in paths.by_type().items()} == {
        k: k for k in paths.by_type()
    }
    net_sysctl = "/proc/sys/net/ipv4/ip_unprivileged_port_start"
    assert (await run("nsenter", f"--net={paths.network}", "cat", net_sysctl)).strip() == "99"
    shmmni = await run("nsenter", f"--ipc={paths.ipc}", "cat", "/proc/sys/kernel/shmmni")
    assert shmmni.strip() == "1234"
    assert Path(net_sysctl).read_text().strip() != "99"  # the node's own is untouched
    # The shared PID namespace has a live init (the holder): a process joining it is not pid 1.
    holder = paths.pid_holder
    assert holder is not None and Path(f"/proc/{holder}").exists()
    inside = await run("nsenter", f"--pid={paths.pid}", "sh", "-c", "echo $$")
    assert int(inside) > 1
    # Idempotent: the same namespaces again, even from a restarted runtime.
    assert (
        await node.namespaces.create(
            "tools", network=True, ipc=True, uts=True, hostname="tools-1", pid=True
        )
        == paths
    )
    restarted = await node.restarted()
    assert (await restarted.namespaces.recover())["tools"] == paths
    await restarted.namespaces.remove("tools")
    await restarted.namespaces.remove("tools")
    assert _exited(holder)
    assert_nothing_left(before, await host_state(node.root))


def _exited(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return True
    return state == "Z"  # a zombie of whoever reaps the recovered holder


async def test_bad_namespace_requests_leave_nothing(node: Node) -> None:
    before = await host_state(node.root)
    with pytest.raises(InvalidArgument, match="not namespaced"):
        await node.namespaces.create(
            "bad", network=True, ipc=True, uts=True, hostname="b", sysctls={"kernel.panic": "1"}
        )
    with pytest.raises(InvalidArgument, match="network namespace"):
        await node.namespaces.create(
            "bad", network=False, ipc=True, uts=True, hostname="b", sysctls={"net.core.x": "1"}
        )
    with pytest.raises(InvalidArgument, match="sandbox id"):
        await node.namespaces.create("../x", network=True, ipc=False, uts=False, hostname="")
    with pytest.raises(InvalidArgument, match="hostname"):
        await node.namespaces.create("bad", network=True, ipc=False, uts=True, hostname="a_b")
    with pytest.raises(NamespaceError, match="ip_unprivileged_port_start"):  # the kernel says no
        await node.namespaces.create(
            "bad",
            network=True,
            ipc=True,
            uts=True,
            hostname="b",
            pid=True,
            sysctls={"net.ipv4.ip_unprivileged_port_start": "not-a-number"},
        )
    assert node.namespaces.paths("bad") == NamespacePaths()
    assert_nothing_left(before, await host_state(node.root))


async def test_host_network_pod_pins_only_what_it_owns(node: Node) -> None:
    paths = await node.namespaces.create("hostnet", network=False, ipc=True, uts=False, hostname="")
    assert paths == NamespacePaths(ipc=paths.ipc)
    await node.namespaces.remove("hostnet")
    assert node.namespaces.paths("hostnet") == NamespacePaths()


# -- teardown, failures, restarts ------------------------------------------------------------


async def test_teardown_is_idempotent_and_works_without_the_namespace(node: Node) -> None:
    before = await host_state(node.root)
    ports = (PortMapping(protocol=1, container_port=53, host_port=free_port()),)
    paths, net = await node.pod("gone-ns", ports)
    assert (
        await node.cni.setup(
            "gone-ns", paths.network or Path(), SandboxMetadata("gone-ns", "u", "default"), ports
        )
        == net
    )  # a second ADD for the same namespace: the recorded result
    # The namespace goes first (as after a crash): DEL still frees the address and the rules.
    await node.namespaces.remove("gone-ns")
    await node.cni.teardown("gone-ns", paths.network)
    await node.cni.teardown("gone-ns", paths.network)
    await node.cni.teardown("never-attached")
    assert_nothing_left(before, await settled(node.root, before))


async def test_a_restarted_runtime_detaches_with_the_recorded_configuration(node: Node) -> None:
    before = await host_state(node.root)
    paths, net = await node.pod("survivor", (PortMapping(0, 80, free_port()),))
    # The node's network changes while the pod runs; its DEL must still use the old one.
    conf = node.root / "cni" / "net.d" / cnimod.DEFAULT_CONF_NAME
    original = conf.read_bytes()
    changed = json.loads(original)
    changed["plugins"][0]["bridge"] = "mkbrother0"
    changed["plugins"][0]["ipam"]["dataDir"] = str(node.root / "elsewhere")
    conf.write_text(json.dumps(changed))
    try:
        restarted = await node.restarted()
        recovered = await restarted.namespaces.start()
        assert recovered["survivor"].network == paths.network
        assert restarted.cni.attached() == ["survivor"]
        assert restarted.cni.cached_network("survivor") == net
        await restarted.remove("survivor")
    finally:
        conf.write_bytes(original)
    assert not Path("/sys/class/net/mkbrother0").exists()
    assert_nothing_left(before, await host_state(node.root))


async def test_check_finds_a_broken_attachment(node: Node) -> None:
    before = await host_state(node.root)
    paths, _ = await node.pod("checked")
    await node.cni.check("checked", paths.network or Path())
    await run("nsenter", f"--net={paths.network}", "ip", "link", "del", "eth0")
    with pytest.raises(CNIError, match="bridge CHECK"):
        await node.cni.check("checked", paths.network or Path())
    await node.remove("checked")
    assert_nothing_left(before, await host_state(node.root))


async def test_a_failed_add_is_undone(node: Node, tmp_path: Path) -> None:
    """A plugin after bridge fails: the pod's veth, address and record are gone again."""
    before = await host_state(node.root)
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    failing = plugins / "failing"
    failing.write_text(
        "#!/bin/sh\n"
        'if [ "$CNI_COMMAND" = ADD ]; then\n'
        '  echo \'{"cniVersion":"1.0.0","code":7,"msg":"no luck","details":"on purpose"}\'\n'
        "  exit 1\n"
        "fi\n"
        'if [ "$CNI_COMMAND" = DEL ]; then\n'
        '  echo "$CNI_CONTAINERID" >> "$(dirname "$0")/deleted"\n'
        "fi\n"
    )
    failing.chmod(0o755)
    conf_dir = tmp_path / "net.d"
    conf_dir.mkdir()
    conflist = cnimod.default_conflist(node.options())
    conflist["plugins"].append({"type": "failing"})
    (conf_dir / "50-failing.conflist").write_text(json.dumps(conflist))
    cni = CNIManager(
        node.options(conf_dir=conf_dir, plugin_dirs=(plugins, *cnimod.DEFAULT_PLUGIN_DIRS))
    )
    await cni.start()
    paths = await node.namespaces.create("unlucky", network=True, ipc=False, uts=False, hostname="")
    assert paths.network is not None
    with pytest.raises(CNIError, match=r"CNI failing ADD: no luck: on purpose \(code 7\)"):
        await cni.setup("unlucky", paths.network, SandboxMetadata("unlucky", "u", "default"))
    assert (plugins / "deleted").read_text() == "unlucky\n"
    assert cni.attached() == []
    links = await addresses(paths.network)
    assert "eth0" not in links
    await node.namespaces.remove("unlucky")
    assert_nothing_left(before, await host_state(node.root))


async def test_status_reports_why_the_network_is_not_ready(node: Node, tmp_path: Path) -> None:
    assert (await node.cni.status()).status is True
    empty = CNIManager(node.options(conf_dir=tmp_path / "empty", install_default=False))
    await empty.start()
    status = await empty.status()
    assert (status.type, status.status, status.reason) == (
        "NetworkReady",
        False,
        "NetworkPluginNotReady",
    )
    assert "no network config found" in status.message
    with pytest.raises(cnimod.NetworkNotReady):
        await empty.setup("x", Path("/nonexistent"), SandboxMetadata("x", "u", "default"))
    (tmp_path / "empty" / "10-odd.conflist").write_text(
        json.dumps({"cniVersion": "1.0.0", "name": "odd", "plugins": [{"type": "nosuch"}]})
    )
    status = await empty.status()
    assert status.status is False and 'failed to find plugin "nosuch"' in status.message


# -- many pods -------------------------------------------------------------------------------


async def test_fifty_pods_come_and_go_without_leaking(node: Node) -> None:
    await node.pod("warm-up", (PortMapping(0, 80, free_port()),))  # portmap's shared chains
    await node.remove("warm-up")
    before = await host_state(node.root)
    ips: set[str] = set()

    async def cycle(i: int) -> None:
        sandbox_id = f"cycle-{i}"
        ports = (PortMapping(0, 80, free_port()),) if i % 5 == 0 else ()
        _, net = await node.pod(sandbox_id, ports)
        ips.add(net.ip)
        files = await write_sandbox_files(
            node.root / "sandboxes" / sandbox_id,
            hostname=sandbox_id,
            dns=DNSConfig(servers=("10.90.0.10",)),
            pod_ips=(net.ip,),
        )
        assert files.hosts.read_text().endswith(f"{net.ip}\t{sandbox_id}\n")
        await node.remove(sandbox_id)
        await remove_sandbox_files(node.root / "sandboxes" / sandbox_id)

    for start in range(0, 50, 5):
        await asyncio.gather(*(cycle(i) for i in range(start, start + 5)))
    assert len(ips) > 5  # addresses were really allocated, concurrently
    (node.root / "sandboxes").rmdir()
    assert_nothing_left(before, await host_state(node.root))
    assert await nat_rules() >= PORTMAP_SCAFFOLDING & before.nat


# -- pure pieces -----------------------------------------------------------------------------


def test_plugin_config_injects_name_version_prev_result_and_capabilities() -> None:
    network = cnimod.parse_network(
        json.dumps(
            {
                "cniVersion": "1.0.0",
                "name": "n",
                "plugins": [
                    {"type": "bridge"},
                    {"type": "portmap", "capabilities": {"portMappings": True}},
                ],
            }
        ).encode()
    )
    caps = cnimod.capability_args(
        [PortMapping(0, 80, 8080), PortMapping(1, 53, 0), PortMapping(2, 9, 99, "127.0.0.1")]
    )
    assert caps == {
        "portMappings": [
            {"hostPort": 8080, "containerPort": 80, "protocol": "tcp"},
            {"hostPort": 99, "containerPort": 9, "protocol": "sctp", "hostIP": "127.0.0.1"},
        ]
    }
    bridge = json.loads(
        cnimod.plugin_config(network, network.plugins[0], prev_result=None, capabilities=caps)
    )
    assert bridge == {"type": "bridge", "name": "n", "cniVersion": "1.0.0"}
    portmap = json.loads(
        cnimod.plugin_config(
            network, network.plugins[1], prev_result={"ips": []}, capabilities=caps
        )
    )
    assert portmap["prevResult"] == {"ips": []}
    assert portmap["runtimeConfig"] == caps
    assert cnimod.capability_args([PortMapping(0, 80, 0)]) == {}


def test_a_single_plugin_conf_becomes_a_list() -> None:
    network = cnimod.parse_network(
        b'{"cniVersion": "0.4.0", "name": "one", "type": "bridge", "bridge": "b0"}'
    )
    assert network.name == "one" and network.cni_version == "0.4.0"
    assert network.plugins == ({"type": "bridge", "bridge": "b0"},)
    for bad in (b"[]", b"{}", b'{"name": "x", "plugins": []}', b'{"plugins": [{"type": "a"}]}'):
        with pytest.raises(ValueError):
            cnimod.parse_network(bad)


def test_result_ips_are_the_pods_own_ipv4_first() -> None:
    result = {
        "interfaces": [{"name": "br"}, {"name": "veth"}, {"name": "eth0", "sandbox": "/ns"}],
        "ips": [
            {"interface": 0, "address": "10.1.0.1/16"},
            {"interface": 2, "address": "fd00::5/64"},
            {"interface": 2, "address": "10.1.0.5/16"},
        ],
    }
    assert cnimod.pod_network(result) == PodNetwork("10.1.0.5", ("fd00::5",))
    assert cnimod.result_ips({"ip4": {"ip": "10.2.0.3/24"}}) == ["10.2.0.3"]
    with pytest.raises(CNIError):
        cnimod.pod_network({"ips": []})


def test_cni_args_name_the_pod() -> None:
    args = cnimod.cni_args("sb1", SandboxMetadata(name="web", uid="u1", namespace="shop"))
    assert ";".join(f"{k}={v}" for k, v in args) == (
        "IgnoreUnknown=1;K8S_POD_NAMESPACE=shop;K8S_POD_NAME=web;"
        "K8S_POD_INFRA_CONTAINER_ID=sb1;K8S_POD_UID=u1"
    )


def test_resolv_conf_from_dns_config_or_the_host() -> None:
    dns = DNSConfig(
        servers=("10.96.0.10", "10.96.0.11"),
        searches=("shop.svc.cluster.local", "svc.cluster.local"),
        options=("ndots:5",),
    )
    assert render_resolv_conf(dns, "nameserver 1.1.1.1\n") == (
        "search shop.svc.cluster.local svc.cluster.local\n"
        "nameserver 10.96.0.10\n"
        "nameserver 10.96.0.11\n"
        "options ndots:5\n"
    )
    assert render_resolv_conf(DNSConfig(), "nameserver 1.1.1.1\n") == "nameserver 1.1.1.1\n"


def test_hosts_file_as_the_kubelet_manages_it() -> None:
    hosts = render_hosts("web-0", ["10.90.0.7", "fd00::7"], domain="web.shop.svc.cluster.local")
    assert hosts.startswith("# Kubernetes-managed hosts file.\n127.0.0.1\tlocalhost\n")
    assert hosts.endswith(
        "10.90.0.7\tweb-0.web.shop.svc.cluster.local\tweb-0\n"
        "fd00::7\tweb-0.web.shop.svc.cluster.local\tweb-0\n"
    )
    node_hosts = "127.0.0.1 localhost\n192.0.2.2 node1\n"
    assert render_hosts("node1", [], host_network=True, host_hosts=node_hosts) == (
        "# Kubernetes-managed hosts file (host network).\n" + node_hosts
    )


async def test_sandbox_files_are_written_whole_and_removed(tmp_path: Path) -> None:
    host_resolv = tmp_path / "host-resolv.conf"
    host_resolv.write_text("nameserver 192.0.2.53\n")
    old = os.umask(0o077)
    try:
        files = await write_sandbox_files(
            tmp_path / "sb",
            hostname="web-0",
            dns=DNSConfig(),
            pod_ips=("10.90.0.9",),
            host_resolv_conf=host_resolv,
        )
    finally:
        os.umask(old)
    assert files == SandboxFiles(
        tmp_path / "sb" / "resolv.conf", tmp_path / "sb" / "hostname", tmp_path / "sb" / "hosts"
    )
    assert files.resolv_conf.read_text() == "nameserver 192.0.2.53\n"
    assert files.hostname.read_text() == "web-0\n"
    assert "10.90.0.9\tweb-0\n" in files.hosts.read_text()
    assert {stat.S_IMODE(p.stat().st_mode) for p in (tmp_path / "sb").iterdir()} == {0o644}
    assert sorted(p.name for p in (tmp_path / "sb").iterdir()) == [
        "hostname",
        "hosts",
        "resolv.conf",
    ]
    await remove_sandbox_files(tmp_path / "sb")
    await remove_sandbox_files(tmp_path / "sb")
    assert not (tmp_path / "sb").exists()


def test_default_network_is_ours_and_keeps_host_nat_alone(tmp_path: Path) -> None:
    options = CNIOptions(conf_dir=tmp_path / "net.d", state_dir=tmp_path / "state")
    conflist = cnimod.default_conflist(options)
    bridge, portmap = conflist["plugins"]
    assert (conflist["name"], conflist["cniVersion"]) == ("minikubelet", "1.0.0")
    assert (bridge["bridge"], bridge["ipMasq"], bridge["isGateway"]) == ("mkbr0", False, True)
    assert bridge["ipam"] == {
        "type": "host-local",
        "ranges": [[{"subnet": "10.89.0.0/16"}]],
        "dataDir": str(tmp_path / "state" / "ipam"),
    }
    assert portmap == {"type": "portmap", "capabilities": {"portMappings": True}}
    egress = cnimod.default_conflist(CNIOptions(tmp_path, tmp_path, masquerade=True))
    assert egress["plugins"][0]["ipMasq"] is True
    assert egress["plugins"][0]["ipam"]["routes"] == [{"dst": "0.0.0.0/0"}]
