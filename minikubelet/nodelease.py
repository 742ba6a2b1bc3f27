"""The node's Lease, its heartbeat, as the kubelet's ``nodelease`` controller keeps it.

A Lease ``kube-node-lease/<node>`` (holder: the node, ``leaseDurationSeconds`` 40)
whose ``renewTime`` is set to now every ``renew_interval`` (10 s, a quarter of the
duration). The node lifecycle controller reads it to tell a live node from a dead
one between the Node's less frequent status reports.

As upstream's controller: the Lease last written is updated with its
resourceVersion (up to 5 tries); on a conflict it is read again; when updating does
not work it is ensured (read, or created when missing) with a back-off of 200 ms
doubling to 7 s. Once the Node's uid is known the Lease is owned by the Node, so
that deleting the Node takes its Lease with it; a Node registered again owns it anew.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from minikubelet.clock import Clock, RealClock
from minikubelet.kubeapi.client import ApiException, KubeClient

log = logging.getLogger(__name__)

NAMESPACE = "kube-node-lease"
LEASE_DURATION_SECONDS = 40
#: renewIntervalFraction 0.25 of the duration.
RENEW_INTERVAL = 10.0
MAX_UPDATE_RETRIES = 5
MAX_BACKOFF = 7.0


def micro_time(seconds: float) -> str:
    """metav1.MicroTime: RFC 3339 with microseconds, in UTC."""
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def describe_error(exc: Exception) -> str:
    """A failed request as the log and ``last_error`` say it: the API server's code,
    reason and own message (its Status), or the error's type and text."""
    if not isinstance(exc, ApiException):
        return f"{type(exc).__name__}: {exc}"
    text = f"{exc.status} {exc.reason}"
    body: Any = exc.body
    if isinstance(body, bytes):
        body = body.decode(errors="replace")
    if isinstance(body, str) and body:
        try:
            status = json.loads(body)
        except ValueError:
            status = None
        if isinstance(status, dict) and isinstance(status.get("message"), str):
            text += f": {status['message']}"
        else:
            text += f": {body[:300]}"
    return text


class LeaseController:
    """Renews the node's Lease; :meth:`run` until cancelled."""

    def __init__(
        self,
        kube: KubeClient,
        node_name: str,
        *,
        clock: Clock | None = None,
        node_uid: Callable[[], str | None] = lambda: None,
        namespace: str = NAMESPACE,
        duration_seconds: int = LEASE_DURATION_SECONDS,
        renew_interval: float = RENEW_INTERVAL,
    ) -> None:
        self.kube = kube
        self.node_name = node_name
        self.clock: Clock = clock or RealClock()
        self.node_uid = node_uid
        self.namespace = namespace
        self.duration_seconds = duration_seconds
        self.renew_interval = renew_interval
        #: When the Lease was last renewed (wall-clock seconds), None before.
        self.last_renewal: float | None = None
        #: Why the last request failed (None after a success).
        self.last_error: str | None = None
        self.renewals = 0
        self._latest: dict[str, Any] | None = None

    def lease(self) -> dict[str, Any] | None:
        """The Lease as the API server last returned it."""
        return self._latest

    def summary(self) -> dict[str, Any]:
        """For the local API's ``/status``."""
        return {
            "name": f"{self.namespace}/{self.node_name}",
            "lastRenewal": self.last_renewal,
            "lastError": self.last_error,
        }

    async def run(self) -> None:
        while True:
            await self.sync()
            await self.clock.sleep(self.renew_interval)

    async def sync(self) -> None:
        """Renew once: update the Lease last known, else ensure it and update that."""
        if self._latest is not None and await self._retry_update(self._latest):
            return
        lease, created = await self._backoff_ensure()
        self._latest = lease
        if not created:
            await self._retry_update(lease)

    # -- the requests ------------------------------------------------------------------------

    def _failed(self, what: str, exc: Exception) -> None:
        self.last_error = f"{what}: {describe_error(exc)}"
        log.warning("node %s: %s", self.node_name, self.last_error)

    def _renewed(self, lease: Any) -> dict[str, Any]:
        self._latest = self.kube.to_dict(lease)
        self.last_renewal = self.clock.now()
        self.last_error = None
        self.renewals += 1
        return self._latest

    def new_lease(self, base: dict[str, Any] | None) -> dict[str, Any]:
        """The Lease to write: ``base``'s identity (resourceVersion, labels, owners) with
        the holder, the duration and a renew time of now; owned by the Node once known."""
        meta: dict[str, Any] = {"name": self.node_name, "namespace": self.namespace}
        if base is not None:
            old = base.get("metadata") or {}
            for key in ("resourceVersion", "labels", "annotations", "ownerReferences"):
                if old.get(key):
                    meta[key] = old[key]
        uid = self.node_uid()
        if uid:
            # Owned by the Node as it is now: a Node deleted and registered again has a
            # new uid, and a Lease left owned by the old one would be collected.
            others = [
                ref
                for ref in meta.get("ownerReferences") or ()
                if not (ref.get("kind") == "Node" and ref.get("apiVersion") == "v1")
            ]
            meta["ownerReferences"] = [
                *others,
                {"apiVersion": "v1", "kind": "Node", "name": self.node_name, "uid": uid},
            ]
        return {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": meta,
            "spec": {
                "holderIdentity": self.node_name,
                "leaseDurationSeconds": self.duration_seconds,
                "renewTime": micro_time(self.clock.now()),
            },
        }

    async def _ensure(self) -> tuple[dict[str, Any], bool]:
        """The Lease as it is, or a new one created; and whether it was created."""
        try:
            found = await self.kube.coordination.read_namespaced_lease(
                self.node_name, self.namespace
            )
        except ApiException as exc:
            if exc.status != 404:
                raise
        else:
            return self.kube.to_dict(found), False
        created = await self.kube.coordination.create_namespaced_lease(
            self.namespace,
            self.new_lease(None),  # type: ignore[arg-type]  # a dict is sent as it is
        )
        return self._renewed(created), True

    async def _backoff_ensure(self) -> tuple[dict[str, Any], bool]:
        delay = 0.1
        while True:
            try:
                return await self._ensure()
            except Exception as exc:
                delay = min(delay * 2, MAX_BACKOFF)
                self._failed(f"ensuring lease (retry in {delay:g}s)", exc)
                await self.clock.sleep(delay)

    async def _retry_update(self, base: dict[str, Any]) -> bool:
        for _ in range(MAX_UPDATE_RETRIES):
            try:
                updated = await self.kube.coordination.replace_namespaced_lease(
                    self.node_name,
                    self.namespace,
                    self.new_lease(base),  # type: ignore[arg-type]  # a dict is sent as it is
                )
            except ApiException as exc:
                self._failed("updating lease", exc)
                if exc.status == 409:  # someone else wrote it: start from theirs
                    base, _ = await self._backoff_ensure()
                    continue
                if exc.status == 404:  # gone: ensuring it will create it again
                    return False
            except Exception as exc:
                self._failed("updating lease", exc)
            else:
                self._renewed(updated)
                return True
        return False
