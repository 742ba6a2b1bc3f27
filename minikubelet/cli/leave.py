"""``minikubelet leave``: the node leaves its cluster.

In order:

1. the Node is cordoned (``spec.unschedulable``), so nothing new is placed on it;
2. its pods from the API server are evicted through the Eviction API (``policy/v1``),
   which honours PodDisruptionBudgets: an eviction refused with 429 is tried again with
   back-off, saying which budget blocks it, until ``--timeout``. Mirror pods (static
   pods) are not evicted, and neither are DaemonSet pods (their controller would put
   them back; they go with the Node);
3. when the node runs on this root dir, leave waits for the evicted pods to be gone
   (the node stops them), then stops the node, which stops its static pods on the way
   out (it would otherwise register its Node again);
4. the Node is deleted (the node's own credentials may not: RBAC's ``system:node`` role
   has no ``delete`` on nodes; leave then says so, finishes the rest and exits 1, and the
   Node is deleted by an administrator, or by ``leave --kubeconfig ADMIN --node-name``);
5. the identity files under the root dir (``kubelet.kubeconfig``,
   ``bootstrap-kubelet.kubeconfig``, ``pki/kubelet-client-*``, ``pki/kubelet-server-*``,
   ``pki/ca.crt``) are removed.

The node's own credentials are used unless ``--kubeconfig`` says otherwise; the node
authorizer lets a node cordon itself and evict the pods bound to it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import socket
import struct
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from cryptography import x509
from cryptography.x509.oid import NameOID
from kubernetes_asyncio import client as k8s

from minikubelet.bootstrap.identity import CLIENT_PREFIX, SERVER_PREFIX, Identity
from minikubelet.cli.common import Subcommands, default_root_dir, run_reporting
from minikubelet.kubeapi.client import ApiException, KubeClient

log = logging.getLogger(__name__)

MIRROR_ANNOTATION: Final = "kubernetes.io/config.mirror"
#: Written under the root dir while leave stops the node: the node stops its pods on the
#: way out (static ones included) instead of leaving them running as on a restart.
LEAVING: Final = "leaving"
#: The grace a leaving node gives its pods when ``--shutdown-grace-period`` is not longer.
LEAVE_GRACE: Final = 30
EVICT_RETRY_INITIAL: Final = 1.0
EVICT_RETRY_MAX: Final = 10.0
POLL: Final = 1.0
STOP_TIMEOUT: Final = 90.0


class LeaveError(RuntimeError):
    """What keeps the node from leaving, as a person reads it."""


def say(text: str) -> None:
    print(f"minikubelet leave: {text}", flush=True)


# --- which pods, and what the API server said ------------------------------------------


@dataclass
class Plan:
    evict: list[Any] = field(default_factory=list)
    mirror: list[Any] = field(default_factory=list)
    daemonset: list[Any] = field(default_factory=list)


def _ref(pod: Any) -> str:
    return f"{pod.metadata.namespace}/{pod.metadata.name}"


def plan(pods: Iterable[Any]) -> Plan:
    """Mirror pods and DaemonSet pods stay; every other pod is evicted."""
    result = Plan()
    for pod in pods:
        meta = pod.metadata
        if MIRROR_ANNOTATION in (meta.annotations or {}):
            result.mirror.append(pod)
        elif any(owner.kind == "DaemonSet" for owner in meta.owner_references or ()):
            result.daemonset.append(pod)
        else:
            result.evict.append(pod)
    return result


def blocked_by(exc: ApiException) -> str:
    """What a refused eviction says: the disruption budget's own words when given."""
    try:
        status = json.loads(exc.body or "{}")
    except (TypeError, ValueError):
        status = {}
    causes = (status.get("details") or {}).get("causes") or []
    budgets = [c.get("message", "") for c in causes if c.get("reason") == "DisruptionBudget"]
    if budgets:
        return "; ".join(budgets)
    return str(status.get("message") or exc.reason or f"HTTP {exc.status}")


class Backoff:
    def __init__(self, initial: float = EVICT_RETRY_INITIAL, maximum: float = EVICT_RETRY_MAX):
        self.delay = initial
        self.maximum = maximum

    def next(self) -> float:
        delay = self.delay
        self.delay = min(self.delay * 2, self.maximum)
        return delay


# --- the API part ------------------------------------------------------------------------


async def cordon(core: k8s.CoreV1Api, name: str) -> None:
    await core.patch_node(name, {"spec": {"unschedulable": True}})


async def evict(
    core: k8s.CoreV1Api,
    pod: Any,
    *,
    deadline: float,
    sleep: Callable[[float], Any] = asyncio.sleep,
    now: Callable[[], float] = time.monotonic,
) -> None:
    """Evict ``pod``, trying again while a disruption budget refuses (429)."""
    backoff = Backoff()
    said = ""
    body = k8s.V1Eviction(
        api_version="policy/v1",
        kind="Eviction",
        metadata=k8s.V1ObjectMeta(name=pod.metadata.name, namespace=pod.metadata.namespace),
    )
    while True:
        try:
            await core.create_namespaced_pod_eviction(
                pod.metadata.name, pod.metadata.namespace, body
            )
        except ApiException as exc:
            if exc.status == 404:
                return  # gone already
            if exc.status != 429:
                raise LeaveError(f"evicting pod {_ref(pod)}: {blocked_by(exc)}") from None
            why = blocked_by(exc)
            if now() >= deadline:
                raise LeaveError(f"pod {_ref(pod)} could not be evicted in time: {why}") from None
            if why != said:
                say(f"pod {_ref(pod)} cannot be evicted yet ({why}); trying again")
                said = why
            await sleep(min(backoff.next(), max(deadline - now(), 0.0)))
            continue
        say(f"evicted pod {_ref(pod)}")
        return


async def pods_on(core: k8s.CoreV1Api, node: str) -> list[Any]:
    listed = await core.list_pod_for_all_namespaces(field_selector=f"spec.nodeName={node}")
    return list(listed.items or ())


async def wait_gone(core: k8s.CoreV1Api, node: str, uids: set[str], *, deadline: float) -> bool:
    """Whether the pods ``uids`` left the node before ``deadline``."""
    while True:
        left = {p.metadata.uid for p in await pods_on(core, node)} & uids
        if not left:
            return True
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(POLL)


# --- the node process --------------------------------------------------------------------


def running_node(root: Path) -> int | None:
    """The pid of the node serving ``<root>/kubelet.sock``, if one does."""
    path = root / "kubelet.sock"
    if not path.exists():
        return None
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        try:
            sock.connect(str(path))
        except OSError:
            return None
        creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    pid, _, _ = struct.unpack("3i", creds)
    return pid if pid > 0 else None


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] not in ("Z", "X")  # a zombie has exited


async def stop_node(root: Path, pid: int, *, timeout: float = STOP_TIMEOUT) -> None:
    """Stop the node ``pid`` running on ``root``, its pods with it."""
    marker = root / LEAVING
    marker.write_text(f"{os.getpid()}\n")
    try:
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while _alive(pid):
            if time.monotonic() >= deadline:
                raise LeaveError(f"the node (pid {pid}) did not stop within {timeout:g}s")
            await asyncio.sleep(0.2)
    except ProcessLookupError:
        pass
    finally:
        marker.unlink(missing_ok=True)


# --- local files -------------------------------------------------------------------------


def node_name_of(identity: Identity) -> str | None:
    """``NAME`` of the current client certificate's ``system:node:NAME``."""
    try:
        cert = x509.load_pem_x509_certificates(identity.current(CLIENT_PREFIX).read_bytes())[0]
    except (OSError, ValueError, IndexError):
        return None
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    value = str(names[0].value) if names else ""
    prefix = "system:node:"
    return value[len(prefix) :] if value.startswith(prefix) else None


def remove_identity(identity: Identity) -> list[Path]:
    """Remove the node's identity files; the ones removed."""
    candidates = [identity.kubeconfig, identity.bootstrap_kubeconfig, identity.cluster_ca]
    if identity.pki.is_dir():
        for prefix in (CLIENT_PREFIX, SERVER_PREFIX):
            candidates += sorted(identity.pki.glob(f"{prefix}-*.pem"))
            candidates += sorted(identity.pki.glob(f".{prefix}-*.tmp"))
    removed = []
    for path in candidates:
        if path.is_symlink() or path.exists():
            path.unlink()
            removed.append(path)
    return removed


# --- the command -------------------------------------------------------------------------


async def leave(
    *,
    root: Path,
    kubeconfig: Path | None,
    node_name: str | None,
    timeout: float,
) -> int:
    identity = Identity(root)
    config = kubeconfig or identity.kubeconfig
    if not config.is_file():
        raise LeaveError(
            f"{config} is not there: this root dir has not joined a cluster "
            "(give --root-dir, or --kubeconfig and --node-name)"
        )
    name = node_name or node_name_of(identity)
    if not name:
        raise LeaveError("which node? its certificate does not say: give --node-name")
    deadline = time.monotonic() + timeout
    pid = await asyncio.to_thread(running_node, root)
    async with await KubeClient.from_kubeconfig(config) as kube:
        core = kube.core
        exists = True
        try:
            await cordon(core, name)
            say(f"node {name} cordoned")
        except ApiException as exc:
            if exc.status != 404:
                raise LeaveError(f"cordoning node {name}: {blocked_by(exc)}") from None
            exists = False
            say(f"node {name} is not registered: nothing to drain")
        if exists:
            todo = plan(await pods_on(core, name))
            for pod in todo.mirror:
                say(f"static pod {_ref(pod)} is not evicted: the node stops it")
            for pod in todo.daemonset:
                say(f"DaemonSet pod {_ref(pod)} is not evicted: it goes with the Node")
            async with asyncio.TaskGroup() as tg:
                for pod in todo.evict:
                    tg.create_task(evict(core, pod, deadline=deadline))
            if pid is not None and todo.evict:
                uids = {p.metadata.uid for p in todo.evict}
                if not await wait_gone(core, name, uids, deadline=deadline):
                    say("some evicted pods are still terminating; the node stops them now")
        if pid is not None:
            say(f"stopping the node (pid {pid}) and its static pods")
            await stop_node(root, pid)
        kept = ""
        if exists:
            try:
                await core.delete_node(name)
                say(f"node {name} deleted")
            except ApiException as exc:
                if exc.status != 403:
                    if exc.status != 404:
                        raise LeaveError(f"deleting node {name}: {blocked_by(exc)}") from None
                else:
                    # RBAC's system:node role does not let a node delete its Node
                    kept = (
                        f"{config} may not delete the Node ({blocked_by(exc)}): an "
                        f"administrator deletes it with: kubectl delete node {name} "
                        f"(or: minikubelet leave --kubeconfig ADMIN.kubeconfig --node-name {name})"
                    )
    removed = await asyncio.to_thread(remove_identity, identity)
    if removed:
        say(f"removed the node's identity from {root} ({len(removed)} files)")
    if kept:
        raise LeaveError(kept)
    return 0


def command(args: argparse.Namespace) -> int:
    root = (Path(args.root_dir) if args.root_dir else default_root_dir()).absolute()
    return run_reporting(
        "leave",
        leave(
            root=root,
            kubeconfig=Path(args.kubeconfig) if args.kubeconfig else None,
            node_name=args.node_name,
            timeout=args.timeout,
        ),
        (LeaveError, OSError, ApiException),
    )


def add_parser(sub: Subcommands) -> None:
    parser = sub.add_parser(
        "leave",
        help="leave the cluster: drain the node (evictions honour disruption budgets), "
        "stop it, delete its Node and remove its identity",
    )
    parser.add_argument(
        "--root-dir",
        help="the node's root dir (default: /var/lib/minikubelet for root, "
        "else ~/.local/state/minikubelet)",
    )
    parser.add_argument(
        "--kubeconfig",
        metavar="FILE",
        help="credentials to use (default: the node's own, <root-dir>/kubelet.kubeconfig)",
    )
    parser.add_argument(
        "--node-name", help="the Node (default: the one the node's certificate names)"
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=300.0,
        metavar="S",
        help="give up draining after S seconds (default 300)",
    )
    parser.set_defaults(func=command)
