"""Pod networking through real CNI plugins, as libcni drives them for CRI-O and containerd.

Every subprocess call of the native runtime's networking lives here. A pod
gets two networks, like CRI-O's ocicni and containerd's CRI plugin do:
``cni-loopback`` (the ``loopback`` plugin on ``lo``), then the node's default
network (the first ``.conflist``/``.conf``/``.json`` in the conf dir, by name)
on ``eth0``. When the conf dir holds no network at all, :meth:`CNIManager.start`
installs ours (:func:`default_conflist`): ``bridge`` on ``mkbr0`` with
``host-local`` addresses from 10.89.0.0/16, then ``portmap`` for hostPorts.

The CNI protocol, as libcni speaks it (SPEC.md, version 1.0.0):

* a plugin is ``<CNI_PATH dir>/<type>``, run with ``CNI_COMMAND``,
  ``CNI_CONTAINERID``, ``CNI_NETNS``, ``CNI_IFNAME``, ``CNI_PATH`` and ``CNI_ARGS``
  (``IgnoreUnknown=1;K8S_POD_NAMESPACE=..;K8S_POD_NAME=..;K8S_POD_INFRA_CONTAINER_ID=..;K8S_POD_UID=..``)
  in its environment and its configuration on stdin;
* in a list, each plugin's configuration gets the list's ``name`` and
  ``cniVersion``, the previous plugin's result as ``prevResult``, and
  ``runtimeConfig`` for each capability it declares that the runtime has
  (``portMappings``); ADD and CHECK run the list in order, DEL in reverse,
  CHECK and DEL with the ADD result as ``prevResult``;
* a failing plugin exits non-zero with ``{"code", "msg", "details"}`` on stdout.

Like libcni's cache (``/var/lib/cni/results``), every ADD is recorded under
``<state_dir>/results`` with the configuration it used, the arguments and the
result, so a DEL after a restart (or after the conf dir changed) undoes exactly
what was done. We write the record *before* ADD as well, so even a crash in the
middle of an ADD leaves enough for the DEL that cleans it up.

Verified on this host (containernetworking-plugins 1.1.1, Debian 12):

* the plugins speak 0.1.0 ... 1.0.0 (``CNI_COMMAND=VERSION``);
* DEL is idempotent, but with a ``CNI_NETNS`` that names a file which is no
  longer a namespace, ``bridge`` and ``loopback`` fail ("unknown FS magic"): a
  DEL whose namespace is gone passes an empty ``CNI_NETNS``, which they accept
  (host-local still releases the address, portmap still removes its rules);
* portmap (``snat`` by default) sets ``route_localnet=1`` on the bridge and
  masquerades hairpin and localhost traffic (mark 0x2000), so a hostPort
  answers on 127.0.0.1 as well as on the node's addresses; its top-level chains
  (``CNI-HOSTPORT-DNAT``/``-SETMARK``/``-MASQ`` and their jumps) stay after the
  last DEL, as with every runtime that uses portmap; the per-pod ``CNI-DN-*``
  chain goes;
* portmap's CHECK fails for an IPv4-only pod with hostPorts whenever ip6tables
  works ("could not check ipv6 dnat: chain ... not found"), a bug of 1.1.1;
* bridge with ``isGateway`` turns on ``net.ipv4.ip_forward`` (it already is on
  hosts that run containers); ``ipMasq`` stays false so the host's NAT is not
  touched, and there is no default route: pods reach the node and each other.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import os
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Final

from minikubelet.errors import FailedPrecondition, Internal
from minikubelet.util.proc import CommandTimeout
from minikubelet.util.proc import run as run_command
from runtimes.base.model import Condition, PortMapping, SandboxMetadata
from runtimes.native.namespaces import is_pinned
from runtimes.native.network.files import write_atomic

log = logging.getLogger(__name__)

CNI_VERSION: Final = "1.0.0"
NETWORK_NAME: Final = "minikubelet"
DEFAULT_BRIDGE: Final = "mkbr0"
DEFAULT_SUBNET: Final = "10.89.0.0/16"
DEFAULT_CONF_NAME: Final = "10-minikubelet.conflist"
DEFAULT_PLUGIN_DIRS: Final = (Path("/usr/lib/cni"), Path("/opt/cni/bin"))
POD_IFNAME: Final = "eth0"
LOOPBACK_CONF: Final[Mapping[str, str]] = {
    "cniVersion": CNI_VERSION,
    "name": "cni-loopback",
    "type": "loopback",
}
CONF_EXTENSIONS: Final = (".conflist", ".conf", ".json")
PROTOCOLS: Final[Mapping[int, str]] = {0: "tcp", 1: "udp", 2: "sctp"}
NETWORK_READY: Final = "NetworkReady"
NOT_READY_REASON: Final = "NetworkPluginNotReady"
_SBIN_PATH: Final = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

JSON = dict[str, Any]


class CNIError(Internal):
    """A plugin failed: its type, the command, and the CNI error it reported."""

    def __init__(self, plugin: str, command: str, message: str, *, code: int = 0) -> None:
        super().__init__(f"CNI {plugin} {command}: {message}" + (f" (code {code})" if code else ""))
        self.plugin = plugin
        self.command = command
        self.cni_code = code


class NetworkNotReady(FailedPrecondition):
    """No network configuration, or a plugin it names is not installed."""


@dataclass(frozen=True, slots=True)
class CNIOptions:
    """Where the runtime's CNI configuration, plugins and state are.

    ``bridge``, ``subnet`` and ``masquerade`` shape only the default network
    that :meth:`CNIManager.start` installs into an empty ``conf_dir``.
    """

    conf_dir: Path
    state_dir: Path  # results cache and host-local's dataDir
    plugin_dirs: tuple[Path, ...] = DEFAULT_PLUGIN_DIRS
    bridge: str = DEFAULT_BRIDGE
    subnet: str = DEFAULT_SUBNET
    network_name: str = NETWORK_NAME
    masquerade: bool = False  # pod egress: a default route and ipMasq (host NAT rules)
    install_default: bool = True
    timeout: float = 60.0  # per plugin call

    @property
    def cache_dir(self) -> Path:
        return self.state_dir / "results"

    @property
    def ipam_dir(self) -> Path:
        return self.state_dir / "ipam"


@dataclass(frozen=True, slots=True)
class NetworkList:
    """A parsed network configuration list (a single ``.conf`` becomes a list of one)."""

    name: str
    cni_version: str
    plugins: tuple[JSON, ...]
    raw: bytes  # what was parsed: cached with each ADD, so DEL uses the same
    source: str = ""
    disable_check: bool = False

    @property
    def types(self) -> tuple[str, ...]:
        return tuple(str(p["type"]) for p in self.plugins)


@dataclass(frozen=True, slots=True)
class PodNetwork:
    """What ADD gave the pod: its IP (IPv4 first, as the kubelet prefers) and the others."""

    ip: str
    additional_ips: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class _Attachment:
    """One pod's attachment as cached: enough to CHECK or DEL it without the conf dir."""

    sandbox_id: str
    network: NetworkList
    netns: str
    cni_args: tuple[tuple[str, str], ...]
    capability_args: JSON
    result: JSON | None = None

    def to_json(self) -> JSON:
        return {
            "kind": "cniCacheV1",
            "containerId": self.sandbox_id,
            "config": base64.b64encode(self.network.raw).decode(),
            "ifName": POD_IFNAME,
            "networkName": self.network.name,
            "netns": self.netns,
            "cniArgs": [list(pair) for pair in self.cni_args],
            "capabilityArgs": self.capability_args,
            "result": self.result,
        }

    @classmethod
    def from_json(cls, doc: JSON) -> _Attachment:
        return cls(
            sandbox_id=str(doc["containerId"]),
            network=parse_network(base64.b64decode(doc["config"]), source="cache"),
            netns=str(doc.get("netns") or ""),
            cni_args=tuple((str(k), str(v)) for k, v in doc.get("cniArgs") or ()),
            capability_args=dict(doc.get("capabilityArgs") or {}),
            result=doc.get("result"),
        )


# -- pure: configuration, arguments, results -------------------------------------------------


def default_conflist(options: CNIOptions) -> JSON:
    ipam: JSON = {
        "type": "host-local",
        "ranges": [[{"subnet": options.subnet}]],
        "dataDir": str(options.ipam_dir),
    }
    if options.masquerade:
        ipam["routes"] = [{"dst": "0.0.0.0/0"}]
    return {
        "cniVersion": CNI_VERSION,
        "name": options.network_name,
        "plugins": [
            {
                "type": "bridge",
                "bridge": options.bridge,
                "isGateway": True,
                "ipMasq": options.masquerade,
                "hairpinMode": True,
                "ipam": ipam,
            },
            {"type": "portmap", "capabilities": {"portMappings": True}},
        ],
    }


def parse_network(raw: bytes, *, source: str = "") -> NetworkList:
    """A ``.conflist``, or a single plugin's ``.conf`` (wrapped as libcni does)."""
    try:
        doc = json.loads(raw)
    except ValueError as e:
        raise ValueError(f"{source}: not JSON: {e}") from None
    if not isinstance(doc, dict):
        raise ValueError(f"{source}: not a JSON object")
    if "plugins" in doc:
        plugins = doc["plugins"]
    elif "type" in doc:
        plugins = [{k: v for k, v in doc.items() if k not in ("name", "cniVersion")}]
    else:
        raise ValueError(f"{source}: neither a plugin list nor a plugin")
    if not isinstance(plugins, list) or not plugins:
        raise ValueError(f"{source}: no plugins")
    for plugin in plugins:
        kind = plugin.get("type") if isinstance(plugin, dict) else None
        if not isinstance(kind, str) or not kind or "/" in kind:
            raise ValueError(f"{source}: a plugin without a valid type")
    name = doc.get("name")
    if not isinstance(name, str) or not name:
        raise ValueError(f"{source}: no network name")
    return NetworkList(
        name=name,
        cni_version=str(doc.get("cniVersion") or "0.1.0"),
        plugins=tuple(plugins),
        raw=bytes(raw),
        source=source,
        disable_check=bool(doc.get("disableCheck", False)),
    )


def cni_args(sandbox_id: str, metadata: SandboxMetadata) -> tuple[tuple[str, str], ...]:
    """``CNI_ARGS`` as the kubelet's runtimes pass them."""
    return (
        ("IgnoreUnknown", "1"),
        ("K8S_POD_NAMESPACE", metadata.namespace),
        ("K8S_POD_NAME", metadata.name),
        ("K8S_POD_INFRA_CONTAINER_ID", sandbox_id),
        ("K8S_POD_UID", metadata.uid),
    )


def capability_args(port_mappings: Sequence[PortMapping]) -> JSON:
    """``runtimeConfig`` the runtime offers: hostPorts (a container port alone is no mapping)."""
    mappings = []
    for pm in port_mappings:
        if pm.host_port <= 0:
            continue
        entry: JSON = {
            "hostPort": pm.host_port,
            "containerPort": pm.container_port,
            "protocol": PROTOCOLS.get(pm.protocol, "tcp"),
        }
        if pm.host_ip:
            entry["hostIP"] = pm.host_ip
        mappings.append(entry)
    return {"portMappings": mappings} if mappings else {}


def plugin_config(
    network: NetworkList, plugin: JSON, *, prev_result: JSON | None, capabilities: JSON
) -> bytes:
    """One plugin's stdin within a list (libcni's ``buildOneConfig``)."""
    conf = dict(plugin)
    conf["name"] = network.name
    conf["cniVersion"] = network.cni_version
    if prev_result is not None:
        conf["prevResult"] = prev_result
    declared = plugin.get("capabilities") or {}
    runtime = {k: v for k, v in capabilities.items() if declared.get(k)}
    if runtime:
        conf["runtimeConfig"] = runtime
    return json.dumps(conf).encode()


def _version(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in text.split("."))
    except ValueError:
        return (0,)


def result_ips(result: Mapping[str, Any]) -> list[str]:
    """The pod's addresses in a result: those on its own interfaces, IPv4 first."""
    found: list[str] = []
    if "ips" in result:  # 0.3.0 and later
        interfaces = result.get("interfaces") or []
        for entry in result.get("ips") or []:
            index = entry.get("interface")
            known = isinstance(index, int) and 0 <= index < len(interfaces)
            if known and not interfaces[index].get("sandbox"):
                continue  # the host's side (the bridge, a veth)
            found.append(str(entry["address"]).split("/")[0])
    else:  # 0.1.0, 0.2.0
        for key in ("ip4", "ip6"):
            if isinstance(result.get(key), dict) and result[key].get("ip"):
                found.append(str(result[key]["ip"]).split("/")[0])
    return [ip for ip in found if ":" not in ip] + [ip for ip in found if ":" in ip]


def pod_network(result: Mapping[str, Any]) -> PodNetwork:
    ips = result_ips(result)
    if not ips:
        raise CNIError("result", "ADD", "the network gave the pod no IP address")
    return PodNetwork(ip=ips[0], additional_ips=tuple(ips[1:]))


# -- the manager -----------------------------------------------------------------------------


class CNIManager:
    """Attaches pod sandboxes to the node's CNI network and detaches them.

    The constructor touches nothing; :meth:`start` creates the directories and,
    when ``conf_dir`` has no network, installs the default one. The conf dir is
    read again on every ADD and status, so a changed configuration applies to
    the next pod (and DEL still uses what each pod was attached with).
    """

    def __init__(self, options: CNIOptions) -> None:
        self.options = options
        self._locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()

    async def start(self) -> None:
        await asyncio.to_thread(self._prepare)

    def _prepare(self) -> None:
        opts = self.options
        for directory in (opts.conf_dir, opts.cache_dir, opts.ipam_dir):
            directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        if opts.install_default and not _conf_files(opts.conf_dir):
            path = opts.conf_dir / DEFAULT_CONF_NAME
            write_atomic(path, json.dumps(default_conflist(opts), indent=2).encode() + b"\n")
            log.info("installed the default CNI network %s", path)

    # -- status --------------------------------------------------------------------------------

    async def status(self) -> Condition:
        """The CRI's NetworkReady condition: a network configured and its plugins installed."""
        try:
            network = await asyncio.to_thread(self._load)
            for kind in (*network.types, "loopback"):
                self._find_plugin(kind)
        except NetworkNotReady as e:
            return Condition(NETWORK_READY, False, NOT_READY_REASON, e.message)
        return Condition(NETWORK_READY, True)

    def _load(self) -> NetworkList:
        """The default network: the first configuration file in the conf dir that parses."""
        problems = []
        for path in _conf_files(self.options.conf_dir):
            try:
                return parse_network(path.read_bytes(), source=str(path))
            except (OSError, ValueError) as e:
                problems.append(str(e))
        detail = f" ({'; '.join(problems)})" if problems else ""
        raise NetworkNotReady(f"no network config found in {self.options.conf_dir}{detail}")

    def _find_plugin(self, kind: str) -> Path:
        for directory in self.options.plugin_dirs:
            path = directory / kind
            if path.is_file() and os.access(path, os.X_OK):
                return path
        dirs = ", ".join(str(d) for d in self.options.plugin_dirs)
        raise NetworkNotReady(f'failed to find plugin "{kind}" in path [{dirs}]')

    # -- ADD, CHECK, DEL -----------------------------------------------------------------------

    async def setup(
        self,
        sandbox_id: str,
        netns_path: Path,
        metadata: SandboxMetadata,
        port_mappings: Sequence[PortMapping] = (),
    ) -> PodNetwork:
        """Attach the pod's network namespace: ``lo`` up, then the default network on eth0.

        Idempotent: a pod already attached in this namespace gets its cached
        result back. A failed ADD is undone (DEL) before the error is raised.
        """
        async with self._lock(sandbox_id):
            cached = await asyncio.to_thread(self._read_cache, sandbox_id)
            if cached is not None:
                if cached.result is not None and cached.netns == str(netns_path):
                    return pod_network(cached.result)
                await self._delete(cached)  # half done, or an older namespace: undo first
            network = await asyncio.to_thread(self._load)
            for kind in (*network.types, "loopback"):
                self._find_plugin(kind)
            attachment = _Attachment(
                sandbox_id=sandbox_id,
                network=network,
                netns=str(netns_path),
                cni_args=cni_args(sandbox_id, metadata),
                capability_args=capability_args(port_mappings),
            )
            await asyncio.to_thread(self._write_cache, attachment)  # DEL can undo a crash
            try:
                await self._invoke_loopback(attachment, "ADD")
                result = await self._add(attachment)
                net = pod_network(result)
            except BaseException as error:
                log.warning("sandbox %s: CNI ADD failed, undoing it: %s", sandbox_id, error)
                try:
                    await self._delete(attachment)
                except (CNIError, NetworkNotReady) as undo:  # the record stays for a later DEL
                    log.error("sandbox %s: undoing the failed ADD failed: %s", sandbox_id, undo)
                raise
            done = replace(attachment, result=result)
            await asyncio.to_thread(self._write_cache, done)
            log.info("sandbox %s: network %s gave %s", sandbox_id, network.name, net.ip)
            return net

    async def teardown(self, sandbox_id: str, netns_path: Path | None = None) -> None:
        """Detach the pod (DEL), with what ADD used if it was recorded. Idempotent.

        ``netns_path`` may be gone already: the plugins then release what lives
        outside the namespace (addresses, iptables rules, the host's veth).
        """
        async with self._lock(sandbox_id):
            cached = await asyncio.to_thread(self._read_cache, sandbox_id)
            if cached is None:
                try:
                    network = await asyncio.to_thread(self._load)
                except NetworkNotReady:
                    log.info("sandbox %s: no network recorded or configured: no DEL", sandbox_id)
                    return
                cached = _Attachment(
                    sandbox_id=sandbox_id,
                    network=network,
                    netns="",
                    cni_args=cni_args(sandbox_id, SandboxMetadata(name="", uid="", namespace="")),
                    capability_args={},
                )
            if netns_path is not None:
                cached = replace(cached, netns=str(netns_path))
            await self._delete(cached)

    async def check(self, sandbox_id: str, netns_path: Path) -> None:
        """CHECK the pod's attachment against what ADD recorded; raises what a plugin reports."""
        async with self._lock(sandbox_id):
            cached = await asyncio.to_thread(self._read_cache, sandbox_id)
            if cached is None or cached.result is None:
                raise CNIError("network", "CHECK", f"sandbox {sandbox_id} is not attached")
            network = cached.network
            if network.disable_check or _version(network.cni_version) < (0, 4, 0):
                return
            cached = replace(cached, netns=str(netns_path))
            for plugin in network.plugins:
                stdin = plugin_config(
                    network,
                    plugin,
                    prev_result=cached.result,
                    capabilities=cached.capability_args,
                )
                await self._invoke(str(plugin["type"]), "CHECK", cached, POD_IFNAME, stdin)

    def attached(self) -> list[str]:
        """The sandboxes with an attachment recorded (for garbage collection after a restart)."""
        try:
            names = os.listdir(self.options.cache_dir)
        except FileNotFoundError:
            return []
        out = []
        for name in sorted(names):
            with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
                doc = json.loads((self.options.cache_dir / name).read_bytes())
                out.append(str(doc["containerId"]))
        return out

    def cached_network(self, sandbox_id: str) -> PodNetwork | None:
        """The pod's addresses as recorded by its ADD, None when it has none."""
        cached = self._read_cache(sandbox_id)
        if cached is None or cached.result is None:
            return None
        return pod_network(cached.result)

    # -- the work ------------------------------------------------------------------------------

    def _lock(self, sandbox_id: str) -> asyncio.Lock:
        lock = self._locks.get(sandbox_id)
        if lock is None:
            lock = self._locks[sandbox_id] = asyncio.Lock()
        return lock

    async def _add(self, attachment: _Attachment) -> JSON:
        network = attachment.network
        result: JSON | None = None
        for plugin in network.plugins:
            stdin = plugin_config(
                network, plugin, prev_result=result, capabilities=attachment.capability_args
            )
            out = await self._invoke(str(plugin["type"]), "ADD", attachment, POD_IFNAME, stdin)
            if out is None:
                raise CNIError(str(plugin["type"]), "ADD", "no result on stdout")
            result = out
        assert result is not None  # a list has at least one plugin
        return result

    async def _delete(self, attachment: _Attachment) -> None:
        """DEL in reverse order (the network, then lo); the record goes once all succeeded."""
        network = attachment.network
        if attachment.netns and not is_pinned(Path(attachment.netns), "net"):
            attachment = replace(attachment, netns="")  # gone: plugins skip what was inside
        prev = attachment.result if _version(network.cni_version) >= (0, 4, 0) else None
        for plugin in reversed(network.plugins):
            stdin = plugin_config(
                network, plugin, prev_result=prev, capabilities=attachment.capability_args
            )
            await self._invoke(str(plugin["type"]), "DEL", attachment, POD_IFNAME, stdin)
        if attachment.netns:
            await self._invoke_loopback(attachment, "DEL")
        await asyncio.to_thread(self._remove_cache, attachment.sandbox_id)
        log.info("sandbox %s: detached from network %s", attachment.sandbox_id, network.name)

    async def _invoke_loopback(self, attachment: _Attachment, command: str) -> None:
        stdin = json.dumps(LOOPBACK_CONF).encode()
        await self._invoke("loopback", command, attachment, "lo", stdin)

    async def _invoke(
        self, kind: str, command: str, attachment: _Attachment, ifname: str, stdin: bytes
    ) -> JSON | None:
        """Run one plugin; its parsed stdout, or CNIError with what it reported."""
        binary = self._find_plugin(kind)
        env = {k: v for k, v in os.environ.items() if not k.startswith("CNI_")}
        env.setdefault("PATH", _SBIN_PATH)  # plugins run iptables, ip6tables ...
        env.update(
            CNI_COMMAND=command,
            CNI_CONTAINERID=attachment.sandbox_id,
            CNI_NETNS=attachment.netns,
            CNI_IFNAME=ifname,
            CNI_PATH=":".join(str(d) for d in self.options.plugin_dirs),
            CNI_ARGS=";".join(f"{k}={v}" for k, v in attachment.cni_args),
        )
        try:
            done = await run_command(
                [str(binary)],
                input=stdin,
                env=env,
                cwd="/",
                timeout=self.options.timeout,
                check=False,
            )
        except CommandTimeout:
            raise CNIError(kind, command, f"no answer within {self.options.timeout}s") from None
        out = done.stdout
        doc: Any = None
        if out.strip():
            with contextlib.suppress(ValueError):
                doc = json.loads(out)
        if done.returncode != 0:
            if isinstance(doc, dict) and "msg" in doc:
                message = str(doc["msg"]) + (f": {doc['details']}" if doc.get("details") else "")
                raise CNIError(kind, command, message, code=int(doc.get("code") or 0))
            raise CNIError(kind, command, f"exit {done.returncode}: {done.output}")
        return doc if isinstance(doc, dict) else None

    # -- the cache -----------------------------------------------------------------------------

    def _cache_path(self, sandbox_id: str) -> Path:
        if "/" in sandbox_id or sandbox_id in ("", ".", ".."):
            raise CNIError("cache", "-", f"invalid sandbox id {sandbox_id!r}")
        return self.options.cache_dir / f"{self.options.network_name}-{sandbox_id}-{POD_IFNAME}"

    def _read_cache(self, sandbox_id: str) -> _Attachment | None:
        try:
            raw = self._cache_path(sandbox_id).read_bytes()
        except FileNotFoundError:
            return None
        try:
            return _Attachment.from_json(json.loads(raw))
        except (ValueError, KeyError, TypeError) as e:
            raise CNIError("cache", "read", f"sandbox {sandbox_id}: corrupt record: {e}") from e

    def _write_cache(self, attachment: _Attachment) -> None:
        path = self._cache_path(attachment.sandbox_id)
        write_atomic(path, json.dumps(attachment.to_json()).encode(), 0o600)

    def _remove_cache(self, sandbox_id: str) -> None:
        self._cache_path(sandbox_id).unlink(missing_ok=True)


def _conf_files(conf_dir: Path) -> list[Path]:
    try:
        names = sorted(os.listdir(conf_dir))
    except FileNotFoundError:
        return []
    return [conf_dir / n for n in names if n.endswith(CONF_EXTENSIONS) and not n.startswith(".")]
