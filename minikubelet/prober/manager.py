"""The probe manager: one worker per (pod, container, probe type), results in three caches.

Follows the kubelet's ``pkg/kubelet/prober`` (``prober_manager.go``, ``worker.go``,
``prober.go``):

* :meth:`ProbeManager.add_pod` creates a worker for each probe of each regular container
  and each sidecar (an init container with ``restartPolicy: Always``). Probe parameters
  are read once; a later ``add_pod`` of the same UID only refreshes the pod object.
* The kubelet tells the manager about container instances with
  :meth:`ProbeManager.update_container` (the part the kubelet's workers read from its
  status manager): a new ID, or ``None`` when the container is no longer running.
* A worker waits a random part of its period first if the manager started less than a
  period ago, then probes on a ``periodSeconds`` ticker. Each round, as ``doProbe``:
  no container yet -> wait; a new container ID -> drop the old ID's result and set the
  initial value (readiness ``FAILURE``, liveness ``SUCCESS``, startup ``UNKNOWN``) and
  leave the hold; on hold -> wait; container not running -> ``FAILURE``, and the worker
  ends if it will not be restarted (pod ``restartPolicy: Never``, not a sidecar); pod
  being deleted -> liveness and startup set ``SUCCESS`` and end; before
  ``initialDelaySeconds`` (whole seconds since the container started) -> wait; liveness
  and readiness wait until the container has started (its startup probe succeeded, or it
  has none), and the startup probe stops probing once it has.
* A probe that errors is tried up to three times; if it still errors, its result is
  thrown away. Otherwise equal results are counted in a row and the cache changes only
  at ``failureThreshold`` failures or ``successThreshold`` successes in a row. A liveness or
  startup failure puts the worker on hold (and zeroes the count) until a new container ID
  shows up. The counts are *not* reset for a new container, as in the kubelet.
* Events as the kubelet records them (type ``Warning``): ``Unhealthy`` "Liveness probe
  failed: <output>", ``Unhealthy`` "... probe errored and resulted in unknown state: ...",
  ``ProbeWarning`` "... probe warning: <output>".
* Readiness is worth asking only once the container started; with no readiness result
  yet and a readiness worker present the container is not ready, and that worker is
  triggered at once (``UpdatePodStatus``'s manual run). The same trigger fires when a
  container's startup probe succeeds and when a new container ID arrives, so the new
  instance does not wait a whole period for its readiness; its liveness and startup
  probes keep to their ticker.

Time comes from an injectable :class:`Clock`, so tests run in virtual time. Every
worker is a task of the :class:`asyncio.TaskGroup` that :meth:`ProbeManager.run` owns;
workers added before ``run()`` start when it does.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import AsyncGenerator, Callable, Iterable
from dataclasses import dataclass
from typing import Final, NamedTuple

from minikubelet.api.pod import Container, Pod, Probe, RestartPolicy
from minikubelet.clock import Clock, RealClock
from minikubelet.prober.probe import ExecRunner, ProbeResult, run_probe
from minikubelet.prober.results import (
    DEFAULT_UPDATES_SIZE,
    ProbeType,
    Result,
    ResultsManager,
)
from minikubelet.types import ContainerID, PodUID

logger = logging.getLogger(__name__)

#: ``maxProbeRetries``: attempts of a probe that errors before its result is thrown away.
MAX_PROBE_RETRIES: Final = 3
EVENT_TYPE_WARNING: Final = "Warning"
REASON_UNHEALTHY: Final = "Unhealthy"
REASON_PROBE_WARNING: Final = "ProbeWarning"

INITIAL_RESULTS: Final = {
    ProbeType.READINESS: Result.FAILURE,
    ProbeType.LIVENESS: Result.SUCCESS,
    ProbeType.STARTUP: Result.UNKNOWN,
}


#: ``on_event(pod, container_name, event_type, reason, message)``.
EventSink = Callable[[Pod, str, str, str, str], None]


def _no_events(pod: Pod, container: str, event_type: str, reason: str, message: str) -> None:
    return None


class ProbeKey(NamedTuple):
    pod_uid: PodUID
    container_name: str
    probe_type: ProbeType


@dataclass(slots=True)
class _Instance:
    """What the kubelet last reported about one container of a pod."""

    container_id: ContainerID | None = None
    running: bool = False
    started_at: float = 0.0


class ProbeManager:
    """Probe workers for the pods of this node, and the results they produce."""

    def __init__(
        self,
        exec_runner: ExecRunner,
        *,
        clock: Clock | None = None,
        on_event: EventSink | None = None,
        rng: Callable[[], float] = random.random,
    ) -> None:
        self._exec_runner = exec_runner
        self._clock: Clock = clock or RealClock()
        self._on_event = on_event or _no_events
        self._rng = rng
        self.readiness_manager = ResultsManager()
        self.liveness_manager = ResultsManager()
        self.startup_manager = ResultsManager()
        self._pods: dict[PodUID, Pod] = {}
        self._pod_ips: dict[PodUID, str] = {}
        self._instances: dict[tuple[PodUID, str], _Instance] = {}
        self._owners: dict[ContainerID, tuple[PodUID, str]] = {}
        self._workers: dict[ProbeKey, _Worker] = {}
        self._group: asyncio.TaskGroup | None = None
        self._started_at: float | None = None
        self._changes: asyncio.Queue[PodUID] = asyncio.Queue(maxsize=DEFAULT_UPDATES_SIZE)
        self._changes_subscribed = False

    # -- wiring -----------------------------------------------------------------------

    async def run(self) -> None:
        """Own every worker until cancelled."""
        if self._group is not None:
            raise RuntimeError("ProbeManager.run() is already running")
        try:
            async with asyncio.TaskGroup() as group:
                self._group = group
                self._started_at = self._clock.now()
                for worker in list(self._workers.values()):
                    self._start(worker)
                await asyncio.Event().wait()
        finally:
            self._group = None

    async def changes(self) -> AsyncGenerator[PodUID, None]:
        """A pod's UID each time one of its cached results changes (any probe type).

        The kubelet's sync loop reads this to sync the pod. Like the per-type streams, it
        queues nothing before the first read and makes workers wait while it is full.
        """
        self._changes_subscribed = True
        while True:
            yield await self._changes.get()

    async def notify(self, pod_uid: PodUID) -> None:
        if self._changes_subscribed:
            await self._changes.put(pod_uid)

    def results_for(self, probe_type: ProbeType) -> ResultsManager:
        return {
            ProbeType.READINESS: self.readiness_manager,
            ProbeType.LIVENESS: self.liveness_manager,
            ProbeType.STARTUP: self.startup_manager,
        }[probe_type]

    @property
    def worker_count(self) -> int:
        return len(self._workers)

    def has_worker(self, pod_uid: PodUID, container_name: str, probe_type: ProbeType) -> bool:
        return ProbeKey(pod_uid, container_name, probe_type) in self._workers

    # -- what the kubelet tells the manager --------------------------------------------

    def add_pod(self, pod: Pod) -> None:
        """Start a worker for every probe of the pod's containers and sidecars."""
        self._pods[pod.uid] = pod
        containers = list(pod.spec.containers)
        containers += [c for c in pod.spec.init_containers if c.is_restartable]
        for container in containers:
            for probe_type, probe in _probes(container):
                key = ProbeKey(pod.uid, container.name, probe_type)
                if key in self._workers:
                    continue
                worker = _Worker(self, key, container, probe)
                self._workers[key] = worker
                logger.debug(
                    "probe worker added pod=%s uid=%s container=%s type=%s",
                    pod,
                    pod.uid,
                    container.name,
                    probe_type,
                )
                if self._group is not None:
                    self._start(worker)

    def remove_pod(self, pod_uid: PodUID) -> None:
        """Stop the pod's workers and forget its results (``RemovePod``)."""
        for key in [key for key in self._workers if key.pod_uid == pod_uid]:
            self._workers[key].stop()
        self._pods.pop(pod_uid, None)
        self._pod_ips.pop(pod_uid, None)
        for instance_key in [k for k in self._instances if k[0] == pod_uid]:
            del self._instances[instance_key]
        for container_id in [cid for cid, owner in self._owners.items() if owner[0] == pod_uid]:
            del self._owners[container_id]

    def update_container(
        self,
        pod: Pod,
        container_name: str,
        container_id: ContainerID | str | None,
        started_at: float | None = None,
        *,
        pod_ip: str | None = None,
    ) -> None:
        """Report the container's current instance: its ID while running, else ``None``.

        ``started_at`` is on the clock's timeline (seconds since the epoch for the real
        clock, so a CRI timestamp in nanoseconds goes in divided by 1e9); ``None`` means now.
        """
        self._pods[pod.uid] = pod
        if pod_ip is not None:
            self._pod_ips[pod.uid] = pod_ip
        key = (pod.uid, container_name)
        instance = self._instances.setdefault(key, _Instance())
        if container_id is None:
            if not instance.running:
                return
            instance.running = False
            logger.debug(
                "probe target stopped pod=%s uid=%s container=%s id=%s",
                pod,
                pod.uid,
                container_name,
                instance.container_id,
            )
        else:
            new_id = ContainerID(container_id)
            changed = new_id != instance.container_id
            if changed and instance.container_id is not None:
                self._owners.pop(instance.container_id, None)
            instance.container_id = new_id
            instance.running = True
            instance.started_at = self._clock.now() if started_at is None else started_at
            self._owners[new_id] = key
            if not changed:
                return
            # A new instance is asked about readiness at once (UpdatePodStatus' manual run);
            # liveness and startup wait for their ticker, as the kubelet's workers do: a
            # failing liveness probe never kills a container the moment it starts.
            self._trigger(ProbeKey(pod.uid, container_name, ProbeType.READINESS))
            return
        for probe_type in ProbeType:
            self._trigger(ProbeKey(pod.uid, container_name, probe_type))

    # -- what the kubelet asks ----------------------------------------------------------

    def is_started(self, container_id: ContainerID | str) -> bool:
        """Whether the container passed its startup probe (or has none)."""
        result = self.startup_manager.get(ContainerID(container_id))
        if result is not None:
            return result is Result.SUCCESS
        owner = self._owners.get(ContainerID(container_id))
        return owner is None or not self.has_worker(owner[0], owner[1], ProbeType.STARTUP)

    def is_ready(self, container_id: ContainerID | str) -> bool:
        """Whether a started container is ready as far as its readiness probe says.

        The caller still checks that the container is running.
        """
        cid = ContainerID(container_id)
        if not self.is_started(cid):
            return False
        result = self.readiness_manager.get(cid)
        if result is not None:
            return result is Result.SUCCESS
        owner = self._owners.get(cid)
        if owner is None:
            return True
        key = ProbeKey(owner[0], owner[1], ProbeType.READINESS)
        if key not in self._workers:
            return True
        self._trigger(key)
        return False

    def liveness_failed(self, pod_uid: PodUID) -> set[str]:
        """Containers whose running instance failed its liveness probe."""
        return self._current_with(pod_uid, self.liveness_manager, Result.FAILURE)

    def startup_failed(self, pod_uid: PodUID) -> set[str]:
        """Containers whose running instance failed its startup probe."""
        return self._current_with(pod_uid, self.startup_manager, Result.FAILURE)

    def startup_succeeded(self, pod_uid: PodUID) -> set[str]:
        """Containers whose running instance has started (startup probe passed, or none)."""
        return {
            name
            for (uid, name), instance in self._instances.items()
            if uid == pod_uid
            and instance.running
            and instance.container_id is not None
            and self.is_started(instance.container_id)
        }

    def _current_with(self, pod_uid: PodUID, results: ResultsManager, wanted: Result) -> set[str]:
        return {
            name
            for (uid, name), instance in self._instances.items()
            if uid == pod_uid
            and instance.running
            and instance.container_id is not None
            and results.get(instance.container_id) is wanted
        }

    # -- for the workers --------------------------------------------------------------

    @property
    def clock(self) -> Clock:
        return self._clock

    def jitter(self, period: float) -> float:
        """A random part of ``period`` if the manager started less than a period ago, else 0."""
        started = self._started_at
        if started is not None and period > self._clock.now() - started:
            return self._rng() * period
        return 0.0

    def pod(self, pod_uid: PodUID) -> Pod | None:
        return self._pods.get(pod_uid)

    def pod_ip(self, pod_uid: PodUID) -> str:
        return self._pod_ips.get(pod_uid, "")

    def instance(self, pod_uid: PodUID, container_name: str) -> _Instance | None:
        return self._instances.get((pod_uid, container_name))

    def record_event(
        self, pod: Pod, container: str, event_type: str, reason: str, message: str
    ) -> None:
        self._on_event(pod, container, event_type, reason, message)

    async def probe(
        self, probe: Probe, container: Container, container_id: str, pod_ip: str
    ) -> tuple[ProbeResult, str]:
        return await run_probe(
            probe,
            container_id=container_id,
            pod_ip=pod_ip,
            container_ports=container.ports,
            exec_runner=self._exec_runner,
        )

    def worker_done(self, worker: _Worker) -> None:
        if self._workers.get(worker.key) is worker:
            del self._workers[worker.key]

    def trigger(self, key: ProbeKey) -> None:
        self._trigger(key)

    def _trigger(self, key: ProbeKey) -> None:
        worker = self._workers.get(key)
        if worker is not None:
            worker.trigger()

    def _start(self, worker: _Worker) -> None:
        assert self._group is not None
        key = worker.key
        worker.task = self._group.create_task(
            worker.run(), name=f"probe {key.probe_type} {key.pod_uid}/{key.container_name}"
        )


def _probes(container: Container) -> Iterable[tuple[ProbeType, Probe]]:
    for probe_type, probe in (
        (ProbeType.READINESS, container.readiness_probe),
        (ProbeType.LIVENESS, container.liveness_probe),
        (ProbeType.STARTUP, container.startup_probe),
    ):
        if probe is not None:
            yield probe_type, probe


class _Worker:
    """Probes one container for one probe type (the kubelet's ``worker``)."""

    def __init__(self, manager: ProbeManager, key: ProbeKey, container: Container, probe: Probe):
        self.manager = manager
        self.key = key
        self.container = container
        self.spec = probe
        self.results = manager.results_for(key.probe_type)
        self.initial = INITIAL_RESULTS[key.probe_type]
        self.task: asyncio.Task[None] | None = None
        self.container_id: ContainerID | None = None
        self.last_result: Result | None = None
        self.result_run = 0
        self.on_hold = False
        self._period = float(max(probe.period_seconds, 1))
        self._next_tick = 0.0
        self._triggered = False
        self._wake: asyncio.Timeout | None = None
        self._stopped = False

    # -- control ----------------------------------------------------------------------

    def trigger(self) -> None:
        """Probe now instead of at the next tick (``manualTriggerCh``)."""
        self._triggered = True
        if self._wake is not None:
            self._wake.reschedule(asyncio.get_running_loop().time())

    def stop(self) -> None:
        """Stop probing and clean up at once; safe to call more than once."""
        if self.task is not None and not self.task.done():
            self.task.cancel()
        self._cleanup()

    def _cleanup(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        if self.container_id is not None:
            self.results.remove(self.container_id)
        self.manager.worker_done(self)

    # -- the loop ---------------------------------------------------------------------

    async def run(self) -> None:
        """Probe until told to stop or the container is gone for good.

        Cancelled by :meth:`stop` (which cleans up) or by the manager's shutdown (which
        keeps the worker, so a new ``run()`` of the manager starts it again).
        """
        clock = self.manager.clock
        # After a kubelet restart, spread the first probes over a period.
        delay = self.manager.jitter(self._period)
        if delay:
            await clock.sleep(delay)
        self._next_tick = clock.now() + self._period
        while not self._stopped:
            self._triggered = False  # this round answers any trigger so far
            if not await self.do_probe():
                break
            await self._wait()
        self._cleanup()

    async def _wait(self) -> None:
        """Until the next tick or a manual trigger, whichever comes first."""
        clock = self.manager.clock
        now = clock.now()
        if self._next_tick <= now:
            # A tick came while probing; Go's ticker holds one and drops the rest.
            while self._next_tick <= now:
                self._next_tick += self._period
            return
        if self._triggered:
            return
        try:
            async with asyncio.timeout(None) as wake:
                self._wake = wake
                await clock.sleep(self._next_tick - now)
            self._next_tick += self._period
        except TimeoutError:
            pass  # triggered: the timeout was moved to now
        finally:
            self._wake = None

    async def do_probe(self) -> bool:
        """One round; whether the worker goes on (``doProbe``)."""
        manager, key = self.manager, self.key
        pod = manager.pod(key.pod_uid)
        instance = manager.instance(key.pod_uid, key.container_name)
        if pod is None or instance is None or instance.container_id is None:
            return True  # not created yet, or not reported yet
        if instance.container_id != self.container_id:
            if self.container_id is not None:
                self.results.remove(self.container_id)
            self.container_id = instance.container_id
            await self._set(self.container_id, self.initial)
            self.on_hold = False  # a new container: probe again
        if self.on_hold:
            return True
        if not instance.running:
            await self._set(self.container_id, Result.FAILURE)
            restarts = (
                pod.spec.restart_policy is not RestartPolicy.NEVER or self.container.is_restartable
            )
            if not restarts:
                logger.debug(
                    "probe worker ends, container will not restart pod=%s uid=%s container=%s",
                    pod,
                    pod.uid,
                    key.container_name,
                )
            return restarts
        if pod.is_deleting and key.probe_type is not ProbeType.READINESS:
            # Quiet shutdown: a last success, then stop probing.
            await self._set(self.container_id, Result.SUCCESS)
            return False
        if int(manager.clock.now() - instance.started_at) < self.spec.initial_delay_seconds:
            return True
        started = manager.is_started(self.container_id)
        if started == (key.probe_type is ProbeType.STARTUP):
            # Startup probes stop once started; the others wait for it.
            return True

        result = await self._probe(pod, self.container_id, manager.pod_ip(key.pod_uid))
        if result is None:
            return True  # the probe errored; throw the result away

        if result == self.last_result:
            self.result_run += 1
        else:
            self.last_result = result
            self.result_run = 1
        if (result is Result.FAILURE and self.result_run < self.spec.failure_threshold) or (
            result is Result.SUCCESS and self.result_run < self.spec.success_threshold
        ):
            return True

        await self._set(self.container_id, result)
        if key.probe_type is ProbeType.STARTUP and result is Result.SUCCESS:
            manager.trigger(key._replace(probe_type=ProbeType.READINESS))
        if key.probe_type is not ProbeType.READINESS and result is Result.FAILURE:
            # The container will be restarted; wait for the new one.
            self.on_hold = True
            self.result_run = 0
        return True

    async def _set(self, container_id: ContainerID, result: Result) -> None:
        if await self.results.set(container_id, result, self.key.pod_uid):
            await self.manager.notify(self.key.pod_uid)

    async def _probe(self, pod: Pod, container_id: ContainerID, pod_ip: str) -> Result | None:
        """Run the probe with retries; record events; ``None`` when it errored."""
        outcome, output = ProbeResult.UNKNOWN, ""
        for _ in range(MAX_PROBE_RETRIES):
            try:
                outcome, output = await self.manager.probe(
                    self.spec, self.container, container_id, pod_ip
                )
            except Exception as exc:
                # The kubelet recovers from a crashing probe and keeps the worker going.
                logger.exception(
                    "probe crashed pod=%s uid=%s container=%s type=%s",
                    pod,
                    pod.uid,
                    self.key.container_name,
                    self.key.probe_type,
                )
                outcome, output = ProbeResult.UNKNOWN, str(exc)
            if outcome is not ProbeResult.UNKNOWN:
                break
        name = self.key.probe_type.display
        container = self.key.container_name
        if outcome is ProbeResult.UNKNOWN:
            logger.info(
                "probe errored pod=%s uid=%s container=%s type=%s: %s",
                pod,
                pod.uid,
                container,
                self.key.probe_type,
                output,
            )
            self.manager.record_event(
                pod,
                container,
                EVENT_TYPE_WARNING,
                REASON_UNHEALTHY,
                f"{name} probe errored and resulted in unknown state: {output}",
            )
            return None
        if outcome is ProbeResult.FAILURE:
            logger.info(
                "probe failed pod=%s uid=%s container=%s type=%s: %s",
                pod,
                pod.uid,
                container,
                self.key.probe_type,
                output,
            )
            self.manager.record_event(
                pod,
                container,
                EVENT_TYPE_WARNING,
                REASON_UNHEALTHY,
                f"{name} probe failed: {output}",
            )
            return Result.FAILURE
        if outcome is ProbeResult.WARNING:
            self.manager.record_event(
                pod,
                container,
                EVENT_TYPE_WARNING,
                REASON_PROBE_WARNING,
                f"{name} probe warning: {output}",
            )
        return Result.SUCCESS
