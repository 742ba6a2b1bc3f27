"""The node's registration and status heartbeat, as the kubelet's ``kubelet_node_status.go``.

:class:`NodeStatusManager` registers the Node (``registerWithAPIServer``: create it,
or, when it exists already, take it over and put the kubelet's default labels
right), then computes its status every ``update_frequency`` (10 s,
``nodeStatusUpdateFrequency``) and PATCHes ``nodes/status`` at once when the status
changed, else when ``report_frequency`` (5 min, ``nodeStatusReportFrequency``) has
passed since the last report. A Node deleted under it (404) is registered again.

The host is read in a worker thread at start and every ``facts_refresh`` after; the
runtime's readiness comes from each CRI ``Status`` at every tick, when the Node is
read back too (so a Node deleted under the kubelet is noticed within a tick). The
Node as last read or written (:meth:`node`), its readiness and what it may hold
(:meth:`allocatable`, :meth:`labels`, for admission) are there for the rest of the
kubelet.
"""

from __future__ import annotations

import asyncio
import copy
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

from minikubelet.clock import Clock, RealClock, rfc3339
from minikubelet.kubeapi.client import ApiException, KubeClient
from minikubelet.nodelease import describe_error
from minikubelet.nodestatus import setters
from minikubelet.nodestatus.facts import (
    HostFacts,
    Pressure,
    RuntimeFacts,
    gather_host_facts,
    status_errors,
)

log = logging.getLogger(__name__)

#: ``nodeStatusUpdateFrequency``: how often the status is computed.
UPDATE_FREQUENCY = 10.0
#: ``nodeStatusReportFrequency``: the longest a status goes unreported when nothing changes.
REPORT_FREQUENCY = 300.0
#: How often the host's facts are read again.
FACTS_REFRESH = 60.0
#: A runtime whose Status has not been good for this long is down (``maxWaitForContainerRuntime``).
RUNTIME_SYNC_THRESHOLD = 30.0
#: Registration back-off: 100 ms doubling up to 7 s, as the kubelet's.
REGISTER_BACKOFF_INITIAL = 0.1
REGISTER_BACKOFF_MAX = 7.0


class RuntimeInfo(Protocol):
    """What the node status needs of the runtime manager."""

    @property
    def runtime_name(self) -> str: ...

    @property
    def runtime_version(self) -> str: ...

    async def runtime_status(self) -> Sequence[tuple[str, Any]]: ...


@dataclass(frozen=True, slots=True)
class Allocatable:
    """What the node may give its pods (allocatable), in numbers."""

    cpu_millis: int
    memory_bytes: int
    pods: int
    ephemeral_storage_bytes: int = 0


class RuntimeState:
    """The runtime's health as the kubelet's ``runtimeState`` keeps it from CRI ``Status``."""

    def __init__(self, threshold: float = RUNTIME_SYNC_THRESHOLD) -> None:
        self.threshold = threshold
        self.last_sync: float | None = None
        self.runtime_errors: list[str] = []
        self.network_errors: list[str] = []

    def update(self, results: Sequence[tuple[str, Any]], now: float) -> None:
        """Take each runtime's ``StatusResponse``; a runtime whose Status failed leaves the
        state as it was (it is down once ``threshold`` passes without a good one)."""
        runtime: list[str] = []
        network: list[str] = []
        for endpoint, result in results:
            if isinstance(result, Exception):
                log.warning("container runtime %s sanity check failed: %s", endpoint, result)
                return
            r_errors, n_errors, _ = status_errors(result)
            runtime += r_errors
            network += n_errors
        self.network_errors = network
        self.runtime_errors = runtime
        if not runtime:
            self.last_sync = now

    def errors(self, now: float) -> list[str]:
        """``runtimeErrors`` then ``networkErrors``."""
        out: list[str] = []
        if self.last_sync is None:
            out.append("container runtime status check may not have completed yet")
        elif self.last_sync + self.threshold <= now:
            out.append("container runtime is down")
        return out + self.runtime_errors + self.network_errors


def _iso_to_rfc3339(value: Any) -> Any:
    """A timestamp the client gave back (``...+00:00``, or a datetime) in the API's ``Z`` form."""
    if isinstance(value, datetime):
        return rfc3339(value.timestamp())
    if isinstance(value, str) and value.endswith("+00:00"):
        try:
            return rfc3339(datetime.fromisoformat(value).timestamp())
        except ValueError:
            return value
    return value


def _conditions_of(node: Mapping[str, Any]) -> list[dict[str, Any]]:
    out = []
    for cond in (node.get("status") or {}).get("conditions") or ():
        cond = dict(cond)
        for key in ("lastHeartbeatTime", "lastTransitionTime"):
            if key in cond:
                cond[key] = _iso_to_rfc3339(cond[key])
        out.append(cond)
    return out


class NodeStatusManager:
    """Registers the Node and keeps its status; :meth:`run` until cancelled."""

    def __init__(
        self,
        kube: KubeClient,
        *,
        node_name: str,
        runtime: RuntimeInfo,
        root_dir: Path,
        node_ip: str = "",
        node_labels: Mapping[str, str] | None = None,
        register_with_taints: Sequence[str] = (),
        max_pods: int = 110,
        kubelet_port: int = 10250,
        clock: Clock | None = None,
        gather: Callable[[], HostFacts] | None = None,
        pressure: Callable[[], Pressure] | None = None,
        update_frequency: float = UPDATE_FREQUENCY,
        report_frequency: float = REPORT_FREQUENCY,
        facts_refresh: float = FACTS_REFRESH,
    ) -> None:
        self.kube = kube
        self.node_name = node_name
        self.runtime = runtime
        self.node_ip = node_ip
        self.node_labels = dict(node_labels or {})
        self.register_with_taints = list(register_with_taints)
        setters.parse_taints(self.register_with_taints)  # a bad taint fails here, not later
        self.max_pods = max_pods
        self.kubelet_port = kubelet_port
        self.clock: Clock = clock or RealClock()
        self._gather = gather or (lambda: gather_host_facts(root_dir))
        self._pressure = pressure
        self.update_frequency = update_frequency
        self.report_frequency = report_frequency
        self.facts_refresh = facts_refresh
        self.runtime_state = RuntimeState()
        #: Set while the Node is registered (cleared when it was found deleted).
        self.registered = asyncio.Event()
        #: When the status was last written (wall-clock seconds), None before.
        self.last_status_update: float | None = None
        #: Why the last request failed (None after a success).
        self.last_error: str | None = None
        self.registrations = 0
        self.patches = 0
        self._host: HostFacts | None = None
        self._node: dict[str, Any] | None = None
        self._sent: dict[str, Any] = {}  # the status last written
        self._last_report: float | None = None  # monotonic

    # -- for the rest of the kubelet ---------------------------------------------------------

    def node(self) -> dict[str, Any] | None:
        """The Node as the API server last returned it (None before registration)."""
        return copy.deepcopy(self._node) if self._node is not None else None

    def node_uid(self) -> str | None:
        if self._node is None:
            return None
        uid = self._node.get("metadata", {}).get("uid")
        return str(uid) if uid else None

    def ready_condition(self) -> dict[str, Any] | None:
        """The Ready condition last written."""
        return setters.condition({"status": self._sent}, setters.READY)

    @property
    def ready(self) -> bool:
        cond = self.ready_condition()
        return cond is not None and cond.get("status") == "True"

    def resources(self) -> Allocatable:
        """What pods may use on this node (allocatable), in numbers. The host is read
        here if :meth:`run` has not read it yet (a few small files)."""
        host = self._host_facts()
        return Allocatable(
            cpu_millis=host.cpu_millis,
            memory_bytes=host.memory_bytes,
            pods=self.max_pods,
            ephemeral_storage_bytes=host.ephemeral_storage_bytes,
        )

    def allocatable(self) -> tuple[int, int, int]:
        """``(milli_cpu, memory_bytes, pods)`` for admission
        (:class:`minikubelet.admission.NodeResources`)."""
        res = self.resources()
        return res.cpu_millis, res.memory_bytes, res.pods

    def labels(self) -> dict[str, str]:
        """The Node's labels as the API server has them (those it registers with before)."""
        if self._node is not None:
            return dict(self._node.get("metadata", {}).get("labels") or {})
        return dict(self._initial_node()["metadata"]["labels"])

    def summary(self) -> dict[str, Any]:
        """The node's registration and Ready condition, for the local API's ``/status``."""
        ready = self.ready_condition() or {}
        return {
            "registered": self.registered.is_set(),
            "nodeReady": ready.get("status", "Unknown"),
            "nodeReadyReason": ready.get("reason", ""),
            "nodeReadyMessage": ready.get("message", ""),
            "lastStatusUpdate": self.last_status_update,
            "lastError": self.last_error,
        }

    # -- running -----------------------------------------------------------------------------

    async def run(self) -> None:
        """Read the host, register, then keep the status; until cancelled."""
        self._host = await asyncio.to_thread(self._gather)
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self._refresh_facts(), name="node-facts")
            tg.create_task(self._status_loop(), name="node-status")

    async def _refresh_facts(self) -> None:
        while True:
            await self.clock.sleep(self.facts_refresh)
            try:
                self._host = await asyncio.to_thread(self._gather)
            except Exception as exc:  # a host that cannot be read keeps its last facts
                log.warning("reading the host's facts failed: %s", exc)

    async def _status_loop(self) -> None:
        while True:
            if not self.registered.is_set():
                await self.register()
            try:
                await self.sync_status()
            except ApiException as exc:
                self._failed("updating node status", exc)
                if exc.status == 404:
                    log.warning(
                        "node %s is gone from the API server: registering again", self.node_name
                    )
                    self.registered.clear()
                    continue
            except Exception as exc:
                self._failed("updating node status", exc)
            await self.clock.sleep(self.update_frequency)

    def _failed(self, what: str, exc: Exception) -> None:
        self.last_error = f"{what}: {describe_error(exc)}"
        log.warning("node %s: %s", self.node_name, self.last_error)

    # -- registration ------------------------------------------------------------------------

    def _host_facts(self) -> HostFacts:
        if self._host is None:
            self._host = self._gather()
        return self._host

    def _initial_node(self) -> dict[str, Any]:
        return setters.initial_node(
            self.node_name,
            self._host_facts(),
            node_labels=self.node_labels,
            taints=self.register_with_taints,
        )

    async def register(self) -> None:
        """Register the Node, retrying with back-off until it is done."""
        delay = REGISTER_BACKOFF_INITIAL
        while not await self.try_register():
            await self.clock.sleep(delay)
            delay = min(delay * 2, REGISTER_BACKOFF_MAX)

    async def try_register(self) -> bool:
        """``tryRegisterWithAPIServer``: create the Node with its status; when it exists,
        take it (its conditions' transition times too) and put the default labels right."""
        node = self._initial_node()
        status = await self._compute_status([])
        node["status"] = status
        try:
            created = await self.kube.core.create_node(node)  # type: ignore[arg-type]
        except ApiException as exc:
            if exc.status != 409:
                self._failed(f"registering node {self.node_name}", exc)
                return False
        except Exception as exc:
            self._failed(f"registering node {self.node_name}", exc)
            return False
        else:
            self._registered(self.kube.to_dict(created), status)
            log.info("node %s registered", self.node_name)
            return True
        try:
            existing = self.kube.to_dict(await self.kube.core.read_node(self.node_name))
            labels = setters.reconcile_default_labels(node, existing)
            status = await self._compute_status(_conditions_of(existing))
            patch: dict[str, Any] = {"status": status}
            if labels:
                patch["metadata"] = {"labels": labels}
            patched = await self.kube.core.patch_node_status(self.node_name, patch)
        except Exception as exc:
            self._failed(f"registering node {self.node_name} (it exists)", exc)
            return False
        self._registered(self.kube.to_dict(patched), status)
        log.info("node %s was registered already: taken over", self.node_name)
        return True

    def _registered(self, node: dict[str, Any], status: dict[str, Any]) -> None:
        self._node = node
        self._reported(status)
        self.registrations += 1
        self.registered.set()

    def _reported(self, status: dict[str, Any]) -> None:
        self._sent = status
        self.last_status_update = self.clock.now()
        self._last_report = self.clock.monotonic()
        self.last_error = None

    # -- status ------------------------------------------------------------------------------

    async def _runtime_facts(self) -> RuntimeFacts:
        results = await self.runtime.runtime_status()
        now = self.clock.monotonic()
        self.runtime_state.update(results, now)
        return RuntimeFacts(
            name=self.runtime.runtime_name,
            version=self.runtime.runtime_version,
            errors=tuple(self.runtime_state.errors(now)),
        )

    async def _compute_status(self, previous: list[dict[str, Any]]) -> dict[str, Any]:
        """The status from the facts, keeping ``previous`` conditions' transition times."""
        runtime = await self._runtime_facts()
        node: dict[str, Any] = {"status": {"conditions": copy.deepcopy(previous)}}
        setters.set_node_status(
            node,
            host=self._host_facts(),
            runtime=runtime,
            node_ip=self.node_ip,
            hostname=self.node_name,
            max_pods=self.max_pods,
            kubelet_port=self.kubelet_port,
            now=self.clock.now(),
            pressure=self._pressure() if self._pressure is not None else None,
        )
        status: dict[str, Any] = node["status"]
        return status

    async def sync_status(self) -> bool:
        """One tick: read the Node (as the kubelet does, to notice it is gone), compute the
        status and write it if it changed or is due; whether it was written. An
        :class:`ApiException` (404: the Node is gone) goes to the caller."""
        self._node = self.kube.to_dict(await self.kube.core.read_node(self.node_name))
        in_api = _conditions_of(self._node)
        ours = {c.get("type"): c.get("status") for c in self._sent.get("conditions") or ()}
        # someone else wrote a condition (the node lifecycle controller sets Ready Unknown
        # when the Lease went stale, say while the API server was away): the API's
        # conditions are the previous ones then, as the kubelet compares with the Node it read
        drifted = any(
            c.get("status") != ours.get(c.get("type")) for c in in_api if c.get("type") in ours
        )
        previous = in_api if drifted else self._sent.get("conditions") or []
        status = await self._compute_status(previous)
        changed = drifted or (
            setters.without_heartbeats(status) != setters.without_heartbeats(self._sent)
        )
        due = (
            self._last_report is None
            or self.clock.monotonic() - self._last_report >= self.report_frequency
        )
        if not changed and not due:
            return False
        patched = await self.kube.core.patch_node_status(self.node_name, {"status": status})
        self._node = self.kube.to_dict(patched)
        self._reported(status)
        self.patches += 1
        return True
