"""``minikubelet run``, and the composition root: every part of a node is made here.

:func:`build_kubelet` makes the kubelet's parts from its configuration and the
node's runtimes (a :class:`~minikubelet.cri.services.RuntimeHandlers`) and wires
them; :func:`run_node` starts the runtime (bundled or given), its CRI client with
the trace, and the kubelet.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import socket
import ssl
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from minikubelet.admission import PredicateAdmitHandler, reject_into
from minikubelet.api.pod import Pod
from minikubelet.backoff import Backoff
from minikubelet.bootstrap.certmanager import (
    ClientCertificateManager,
    RotationOptions,
    ServingCertificateManager,
    csr_api,
)
from minikubelet.bootstrap.identity import Identity
from minikubelet.cli.common import (
    Subcommands,
    default_manifests,
    default_node_name,
    default_root_dir,
    run_reporting,
)
from minikubelet.cli.launch import node_runtime
from minikubelet.cli.leave import LEAVE_GRACE, LEAVING
from minikubelet.clock import Clock, RealClock
from minikubelet.config.api import APISource
from minikubelet.config.file import FileSource
from minikubelet.config.http import URLSource
from minikubelet.config.types import FILE_SOURCE, HTTP_SOURCE
from minikubelet.cri.client import CRIClient
from minikubelet.cri.services import RuntimeHandlers
from minikubelet.cri.trace import JsonlTraceWriter, TraceRecorder
from minikubelet.events import EventRecorder
from minikubelet.images import ImageManager
from minikubelet.kubeapi.client import KubeClient
from minikubelet.kubeapi.credentials import APISecretGetter, PodPullCredentials
from minikubelet.kubeapi.events import APIEventSink, EventWriter
from minikubelet.kubeapi.objects.managers import KubeObjects
from minikubelet.kubelet import Kubelet, KubeletConfig, PodSource, Server, host_ip
from minikubelet.kuberuntime.gc import ContainerGC, PodContainerDeletor
from minikubelet.kuberuntime.manager import KubeRuntimeManager
from minikubelet.kuberuntime.podsetup import PodSetup
from minikubelet.logs.rotate import ContainerLogManager
from minikubelet.mirror import MirrorPods
from minikubelet.nodelease import LeaseController
from minikubelet.nodestatus import NodeStatusManager
from minikubelet.nodeview import KubeletNodeView, NodeInfo
from minikubelet.pleg import GenericPLEG
from minikubelet.podmanager import AdmitHandler, PodManager
from minikubelet.podworkers import PodWorkers
from minikubelet.prober.manager import ProbeManager
from minikubelet.server.api import LocalAPI
from minikubelet.server.kubeletapi.server import ServingOptions, make_server
from minikubelet.stats.metrics import KubeletMetrics
from minikubelet.stats.service import build_node_stats
from minikubelet.status.apisync import StatusSync
from minikubelet.status.manager import StatusManager

log = logging.getLogger(__name__)


def build_kubelet(
    config: KubeletConfig,
    runtimes: RuntimeHandlers,
    *,
    clock: Clock | None = None,
    trace: TraceRecorder | None = None,
    kube: KubeClient | None = None,
    serving: ServingOptions | None = None,
    rotation: RotationOptions | None = None,
) -> Kubelet:
    """Make and wire every part of the kubelet; nothing runs until :meth:`Kubelet.run`.

    With ``kube`` (API server mode) the node also takes its pods from the API server and
    keeps its Node, Lease, pod statuses, mirror pods and events there. With ``serving``
    it serves the kubelet's HTTPS API (port 10250) as well. With ``rotation`` a node run
    from its joined identity renews its client certificate, and with
    ``rotation.rotate_server`` it asks the cluster for its serving certificate.
    """
    clock = clock or RealClock()
    recorder = EventRecorder(node_name=config.node_name, clock=clock)
    crash_backoff = Backoff(
        initial=config.crash_loop_initial,
        maximum=config.crash_loop_max,
        reset_after=config.crash_loop_reset,
        clock=clock,
    )
    image_backoff = Backoff(
        initial=config.image_backoff_initial, maximum=config.image_backoff_max, clock=clock
    )
    statuses = StatusManager()

    runtime: KubeRuntimeManager  # probes and hooks exec through it; it is made below

    async def exec_in_container(container_id: str, cmd: list[str], timeout: int) -> Any:
        return await runtime.exec_sync(container_id, cmd, timeout)

    prober = ProbeManager(exec_in_container, clock=clock, on_event=recorder.container_event)
    setup = PodSetup(
        root_dir=config.root_dir,
        log_root=config.pod_log_root,
        node_name=config.node_name,
        host_ip=config.node_ip,
        cgroup_parent=config.cgroup_parent,
        exec_runner=exec_in_container,
    )
    admit_handlers: list[AdmitHandler] = []
    pull_credentials: PodPullCredentials | None = None
    if kube is not None:
        # kubelet admission: a pod must fit the node's allocatable and match its labels, as
        # the node status manager (made below) knows them
        admission = PredicateAdmitHandler(
            None,
            node_name=config.node_name,
            # pods that have finished take nothing (filterOutInactivePods)
            active=lambda pod: (
                (statuses.get(pod.uid) or {}).get("phase") not in ("Succeeded", "Failed")
            ),
        )
        admit_handlers.append(admission)
        # imagePullSecrets: the pod's registry credentials for CRI PullImage
        pull_credentials = PodPullCredentials(APISecretGetter(kube), recorder)
    runtime = KubeRuntimeManager(
        runtimes,
        events=recorder,
        images=ImageManager(recorder, image_backoff, credentials=pull_credentials),
        backoff=crash_backoff,
        configs=setup,
        probes=setup.probe_results(prober),
        hooks=setup,
        clock=clock,
    )
    metrics = KubeletMetrics()  # /metrics: the PLEG, pod starts and every traced call feed it
    pleg = GenericPLEG(runtime.list_pods, period=config.relist_period, clock=clock, metrics=metrics)
    workers = PodWorkers(resync=config.resync, clock=clock)
    pods = PodManager(
        workers=workers,
        probes=prober,
        recorder=recorder,
        clock=clock,
        admit_handlers=admit_handlers,
        on_rejected=reject_into(statuses, clock) if admit_handlers else None,
    )

    sources: list[tuple[str, PodSource]] = []
    file_source: FileSource | None = None
    if config.manifests is not None:
        file_source = FileSource(
            config.manifests,
            node_name=config.node_name,
            period=config.file_check_period,
            validate=Pod.from_dict,  # a pod that cannot be read is the file's fault
        )
        sources.append(("file", file_source))
    if config.manifest_url:
        sources.append(("url", URLSource(config.manifest_url, node_name=config.node_name)))
    if kube is not None:
        sources.append(("api", APISource(kube, config.node_name)))

    def source_errors() -> list[dict[str, Any]]:
        if file_source is None:
            return []
        return [
            {"source": str(path), "line": error.line, "reason": error.reason}
            for path, error in file_source.errors.items()
        ]

    servers: list[tuple[str, Server]] = []
    api_server_status: Callable[[], dict[str, Any]] | None = None
    if kube is not None:
        # the Node (registered, its status computed every 10 s) and its Lease (renewed every 10 s)
        node_status = NodeStatusManager(
            kube,
            node_name=config.node_name,
            runtime=runtime,
            root_dir=config.root_dir,
            node_ip=config.node_ip,
            node_labels=config.node_labels,
            register_with_taints=config.register_with_taints,
            max_pods=config.max_pods,
            kubelet_port=config.kubelet_port,
            clock=clock,
        )
        node_lease = LeaseController(
            kube, config.node_name, clock=clock, node_uid=node_status.node_uid
        )
        servers += [("node-status", node_status), ("node-lease", node_lease)]
        api_server_url = kube.server

        def node_api_status() -> dict[str, Any]:
            return {
                "server": api_server_url,
                **node_status.summary(),
                "leaseRenewed": node_lease.last_renewal,
                "lease": node_lease.summary(),
            }

        api_server_status = node_api_status

    view = KubeletNodeView(
        NodeInfo(config.node_name, config.manifests),
        pods=pods,
        statuses=statuses,
        recorder=recorder,
        runtime=runtime,
        pleg=pleg,
        logs=setup,
        workers=workers,
        clock=clock,
        source_errors=source_errors,
        trace=trace,
        api_server=api_server_status,
    )
    if config.serve_api:
        servers.append(("local-api", LocalAPI(view, config.api_socket)))
    if serving is not None:
        why_not = serving.serves(kube is not None)
        if why_not is None:
            node_stats = build_node_stats(
                runtime=runtimes.default,
                node_name=config.node_name,
                root_dir=config.root_dir,
                log_root=config.pod_log_root,
                trace=trace,
                metrics=metrics,
                api_host=urlsplit(kube.server).netloc if kube is not None else "",
            )
            kubelet_server = make_server(
                view,
                serving,
                root_dir=config.root_dir,
                node_ips=[config.node_ip] if config.node_ip else [],
                api=kube.api if kube is not None else None,
                stats=node_stats,
                configz=partial(configz, config, serving, kube is not None),
            )
            servers.append(("kubelet-api", kubelet_server))
            if kube is not None and rotation is not None and rotation.rotate_server:
                serving_certs = serving_certificate_manager(
                    config, kube, kubelet_server.ssl_context, rotation, clock
                )
                kubelet_server.ssl_context = serving_certs.context
                servers.append(("serving-certificate", serving_certs.manager))
        else:
            log.info("the kubelet API (port %d) is not served: %s", serving.port, why_not)
    if kube is not None and rotation is not None:
        identity = Identity(config.root_dir)
        if joined_identity(identity, config.kubeconfig):
            client_certs = ClientCertificateManager(
                identity,
                kube.api,
                config.node_name,
                clock=clock,
                first_after=rotation.first_after,
            )
            kube.on_unauthorized(client_certs.refused)
            servers.append(("client-certificate", client_certs))
    if kube is not None:
        admission.node = node_status  # admission reads the Node as its manager has it
        # the recorder's events, written to the API server as core/v1 Events
        event_writer = EventWriter(APIEventSink(kube), node_name=config.node_name, clock=clock)
        event_writer.attach(recorder)
        servers.append(("api-events", event_writer))
    if kube is not None:
        # ConfigMaps, Secrets and service account tokens for pods' volumes and env; the
        # volume manager keeps the mounted files current
        setup.use_objects(KubeObjects(kube, clock=clock), recorder)
        servers.append(("api-volumes", setup.volumes))
    status_sync: StatusSync | None = None
    if kube is not None:
        # the status manager's API side, and the static pods' mirror pods
        status_sync = StatusSync(kube, statuses, pods, clock=clock)
        static_sources = [
            name
            for name, wanted in ((FILE_SOURCE, file_source), (HTTP_SOURCE, config.manifest_url))
            if wanted
        ]
        mirrors = MirrorPods(
            kube,
            pods,
            config.node_name,
            clock=clock,
            sources_ready=lambda: kubelet.pod_config.seen_all_sources(static_sources),
            recorder=recorder,
        )
        servers += [("status-sync", status_sync), ("mirror-pods", mirrors)]
    kubelet = Kubelet(
        config,
        clock=clock,
        recorder=recorder,
        pods=pods,
        workers=workers,
        runtime=runtime,
        pleg=pleg,
        prober=prober,
        setup=setup,
        statuses=statuses,
        gc=ContainerGC(runtime, max_per_pod_container=config.max_per_pod_container),
        deletor=PodContainerDeletor(runtime, max_per_pod_container=config.max_per_pod_container),
        log_manager=ContainerLogManager(
            runtimes,
            max_size=config.container_log_max_size,
            max_files=config.container_log_max_files,
            interval=config.container_log_monitor_interval,
        ),
        backoffs=(crash_backoff, image_backoff),
        sources=sources,
        servers=servers,
        metrics=metrics,
    )
    if status_sync is not None:
        kubelet.terminated_hooks.append(status_sync.pod_terminated)
    return kubelet


def joined_identity(identity: Identity, kubeconfig: Path | None) -> bool:
    """Whether the node runs from the identity it joined with (its client certificate is
    then its own to renew)."""
    if kubeconfig is None or not identity.joined():
        return False
    try:
        return kubeconfig.resolve() == identity.kubeconfig.resolve()
    except OSError:
        return False


@dataclass
class _ServingRotation:
    manager: ServingCertificateManager
    context: Callable[[], ssl.SSLContext]


def serving_certificate_manager(
    config: KubeletConfig,
    kube: KubeClient,
    make_context: Callable[[], ssl.SSLContext],
    rotation: RotationOptions,
    clock: Clock,
) -> _ServingRotation:
    """``--rotate-server-certificates``: the manager, and the kubelet API's TLS context
    maker that hands each context to it (the self-signed certificate until one is issued)."""
    manager = ServingCertificateManager(
        Identity(config.root_dir),
        csr_api(kube.api),
        config.node_name,
        [config.node_name, socket.gethostname(), config.node_ip],
        clock=clock,
        first_after=rotation.first_after,
    )

    def context() -> ssl.SSLContext:
        return manager.attach(make_context())

    return _ServingRotation(manager, context)


def configz(config: KubeletConfig, serving: ServingOptions, has_api: bool) -> dict[str, Any]:
    """``/configz``: the node's settings in the KubeletConfiguration's names."""
    return {
        "kind": "KubeletConfiguration",
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "staticPodPath": str(config.manifests) if config.manifests else "",
        "staticPodURL": config.manifest_url or "",
        "rootDirectory": str(config.root_dir),
        "address": serving.address,
        "port": serving.port,
        "tlsCertFile": str(serving.tls_cert_file or ""),
        "authentication": {
            "x509": {"clientCAFile": str(serving.client_ca_file or "")},
            "webhook": {"enabled": serving.token_webhook(has_api), "cacheTTL": "2m0s"},
            "anonymous": {"enabled": serving.anonymous_auth},
        },
        "authorization": {
            "mode": serving.authorizer(has_api),
            "webhook": {"cacheAuthorizedTTL": "5m0s", "cacheUnauthorizedTTL": "30s"},
        },
        "syncFrequency": f"{config.resync:g}s",
        "fileCheckFrequency": f"{config.file_check_period:g}s",
        "streamingConnectionIdleTimeout": f"{serving.streaming_idle_timeout:g}s",
        "maxPods": config.max_pods,
        "podLogsDir": str(config.pod_log_root),
        "containerLogMaxSize": str(config.container_log_max_size),
        "containerLogMaxFiles": config.container_log_max_files,
        "shutdownGracePeriod": f"{config.shutdown_grace_period:g}s",
        "nodeLabels": dict(config.node_labels or {}),
        "registerWithTaints": list(config.register_with_taints or []),
    }


async def run_node(
    *,
    runtime: str,
    manifests: Path | None,
    manifest_url: str | None,
    node_name: str | None,
    root_dir: Path | None,
    node_ip: str | None,
    trace_file: Path | None,
    tuning: dict[str, float],
    runtime_args: Sequence[str] = (),
    api: dict[str, Any] | None = None,
    serving: ServingOptions | None = None,
    trace: TraceRecorder | None = None,
    rotation: RotationOptions | None = None,
) -> int:
    root = root_dir or default_root_dir()
    await asyncio.to_thread(root.mkdir, parents=True, exist_ok=True, mode=0o700)
    config = KubeletConfig(
        node_name=node_name or default_node_name(),
        root_dir=root,
        manifests=manifests,
        manifest_url=manifest_url,
        node_ip=node_ip or host_ip(),
    )
    for key, value in {**tuning, **(api or {})}.items():
        setattr(config, key, value)
    if serving is not None:
        config.kubelet_port = serving.port  # the Node's daemonEndpoints say where it listens
    await asyncio.to_thread((root / LEAVING).unlink, missing_ok=True)  # a stale one
    recorder = trace or TraceRecorder()  # join's requests come first in it
    async with contextlib.AsyncExitStack() as stack:
        started = await stack.enter_async_context(
            node_runtime(runtime, root, extra_args=runtime_args)
        )
        cri = CRIClient(started.endpoint, recorder=recorder)
        await cri.connect()
        stack.push_async_callback(cri.close)
        kube: KubeClient | None = None
        if config.kubeconfig is not None:
            kube = await KubeClient.from_kubeconfig(config.kubeconfig, trace=recorder)
            stack.push_async_callback(kube.close)
        kubelet = build_kubelet(
            config,
            RuntimeHandlers(cri),
            trace=recorder,
            kube=kube,
            serving=serving,
            rotation=rotation or RotationOptions(),
        )
        served = serving is not None and serving.serves(kube is not None) is None
        runtime_name = cri.version_info.runtime_name if cri.version_info else "?"
        print(
            f"minikubelet: node {config.node_name} on {runtime_name} ({started.endpoint}); "
            f"manifests {manifests or '-'}; "
            + (f"API server {kube.server}; " if kube is not None else "")
            + f"API unix://{config.api_socket}"
            + (f", https://{serving.address}:{serving.port}" if served and serving else ""),
            flush=True,
        )
        try:
            async with asyncio.TaskGroup() as tg:
                if trace_file is not None:
                    tg.create_task(
                        JsonlTraceWriter(recorder, trace_file).run(), name="trace-writer"
                    )
                tg.create_task(kubelet.run(), name="kubelet")
        finally:
            leaving = (root / LEAVING).exists()  # `minikubelet leave` stops the node
            if leaving and not started.ephemeral:
                grace = max(config.shutdown_grace_period, LEAVE_GRACE)
                await asyncio.shield(kubelet.shutdown_pods(grace))
            elif config.shutdown_grace_period > 0 and not started.ephemeral:
                await asyncio.shield(kubelet.shutdown_pods(config.shutdown_grace_period))
            if started.ephemeral:
                # the simulated runtime's containers end with it: so do the pods' volumes
                await asyncio.shield(kubelet.release_host())
    return 0


def preflight_runtime(args: argparse.Namespace, name: str = "run") -> bool:
    """Whether the native runtime can run here (any other runtime: yes); says why not."""
    if args.runtime == "native":
        from runtimes.native.main import NotSupportedHere, preflight

        try:
            preflight()
        except NotSupportedHere as exc:
            print(
                f"minikubelet {name}: {exc}.\nInstall what is missing (scripts/install-deps), "
                "or run the simulated runtime: minikubelet run --runtime fake",
                file=sys.stderr,
            )
            return False
    return True


def use_joined_identity(args: argparse.Namespace) -> None:
    """Without --kubeconfig, a root dir that has joined a cluster (``minikubelet join``)
    runs with its identity: ``<root>/kubelet.kubeconfig``, the node name its certificate
    is for, and the cluster CA as the kubelet API's client CA unless --client-ca-file
    says otherwise (ValueError: a --node-name the identity is not for)."""
    from minikubelet.bootstrap.tlsbootstrap import certificate_node_name

    if args.kubeconfig:
        return
    identity = Identity((Path(args.root_dir) if args.root_dir else default_root_dir()).absolute())
    if identity.joined():
        args.kubeconfig = str(identity.kubeconfig)
        if not args.client_ca_file and identity.cluster_ca.is_file():
            args.client_ca_file = str(identity.cluster_ca)
        joined_as = certificate_node_name(identity.current().read_bytes())
        if joined_as is not None and args.node_name and args.node_name != joined_as:
            raise ValueError(
                f"--node-name {args.node_name}, but {identity.root} holds the identity of "
                f"node {joined_as} (system:node:{joined_as})"
            )
        args.node_name = args.node_name or joined_as


def node_options(args: argparse.Namespace) -> dict[str, Any]:
    """:func:`run_node`'s arguments from the node's flags (ValueError: a bad flag)."""
    manifests = Path(args.manifests) if args.manifests else default_manifests()
    tuning = {
        key: value
        for key, value in (
            ("crash_loop_initial", args.crash_loop_initial),
            ("crash_loop_max", args.crash_loop_max),
            ("relist_period", args.relist_period),
            ("file_check_period", args.file_check_period),
            ("container_log_max_size", args.container_log_max_size),
            ("container_log_max_files", args.container_log_max_files),
            ("container_log_monitor_interval", args.container_log_monitor_interval),
            ("shutdown_grace_period", args.shutdown_grace_period),
        )
        if value is not None
    }
    return {
        "runtime": args.runtime,
        "manifests": manifests,
        "manifest_url": args.manifest_url,
        "node_name": args.node_name,
        "root_dir": Path(args.root_dir) if args.root_dir else None,
        "node_ip": args.node_ip,
        "trace_file": Path(args.trace_file) if args.trace_file else None,
        "tuning": tuning,
        "runtime_args": args.runtime_arg or (),
        "api": api_settings(args),
        "serving": serving_options(args),
        "rotation": RotationOptions(
            rotate_server=args.rotate_server_certificates,
            first_after=args.rotate_certificates_after,
        ),
    }


def command(args: argparse.Namespace) -> int:
    if not preflight_runtime(args):
        return 1
    try:
        use_joined_identity(args)
        options = node_options(args)
    except ValueError as exc:
        print(f"minikubelet run: {exc}", file=sys.stderr)
        return 2
    return run_reporting("run", run_node(**options), (OSError, RuntimeError, ValueError))


def parse_labels(text: str) -> dict[str, str]:
    """``k=v,k2=v2`` (``--node-labels``)."""
    labels: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--node-labels: {item!r} is not KEY=VALUE")
        labels[key] = value
    return labels


def parse_taints(text: str) -> list[str]:
    """``key[=value]:Effect,...`` (``--register-with-taints``); the effect is checked."""
    taints = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        _, sep, effect = item.rpartition(":")
        if not sep or effect not in ("NoSchedule", "PreferNoSchedule", "NoExecute"):
            raise ValueError(
                f"--register-with-taints: {item!r} is not KEY[=VALUE]:"
                "NoSchedule|PreferNoSchedule|NoExecute"
            )
        taints.append(item)
    return taints


def api_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The API server mode's settings from the flags (empty without --kubeconfig)."""
    settings: dict[str, Any] = {"max_pods": args.max_pods}
    if args.kubeconfig:
        settings["kubeconfig"] = Path(args.kubeconfig)
    if args.node_labels:
        settings["node_labels"] = parse_labels(args.node_labels)
    if args.register_with_taints:
        settings["register_with_taints"] = parse_taints(args.register_with_taints)
    return settings


def _bool_flag(text: str) -> bool:
    value = text.strip().lower()
    if value in ("true", "1", "yes"):
        return True
    if value in ("false", "0", "no"):
        return False
    raise argparse.ArgumentTypeError(f"{text!r} is not true or false")


def serving_options(args: argparse.Namespace) -> ServingOptions:
    """The kubelet API's settings from the flags."""
    if not 0 <= args.port < 65536:
        raise ValueError(f"--port {args.port} is not a port (0 turns the kubelet API off)")
    if args.authorization_mode not in (None, "Webhook", "AlwaysAllow"):
        raise ValueError(
            f"--authorization-mode {args.authorization_mode!r}: Webhook or AlwaysAllow"
        )
    if args.authorization_mode == "Webhook" and not args.kubeconfig:
        raise ValueError("--authorization-mode Webhook needs --kubeconfig (the API server)")
    if args.authentication_token_webhook and not args.kubeconfig:
        raise ValueError("--authentication-token-webhook needs --kubeconfig (the API server)")
    if bool(args.tls_cert_file) != bool(args.tls_private_key_file):
        raise ValueError("--tls-cert-file and --tls-private-key-file go together")
    return ServingOptions(
        address=args.address,
        port=args.port,
        tls_cert_file=Path(args.tls_cert_file) if args.tls_cert_file else None,
        tls_private_key_file=Path(args.tls_private_key_file) if args.tls_private_key_file else None,
        client_ca_file=Path(args.client_ca_file) if args.client_ca_file else None,
        anonymous_auth=args.anonymous_auth,
        authentication_token_webhook=args.authentication_token_webhook,
        authorization_mode=args.authorization_mode,
        streaming_idle_timeout=args.streaming_connection_idle_timeout,
    )


def add_serving_flags(run: argparse.ArgumentParser) -> None:
    """The kubelet API's flags, as the kubelet names them."""
    group = run.add_argument_group("kubelet API (HTTPS, what the API server calls)")
    group.add_argument("--address", default="0.0.0.0", help="address to serve on (0.0.0.0)")
    group.add_argument(
        "--port", type=int, default=10250, help="port to serve on (10250; 0 turns it off)"
    )
    group.add_argument("--tls-cert-file", metavar="FILE", help="serving certificate (PEM)")
    group.add_argument(
        "--tls-private-key-file",
        metavar="FILE",
        help="its key; without both, a self-signed pair is made under the root dir",
    )
    group.add_argument(
        "--client-ca-file",
        metavar="FILE",
        help="client certificates signed by this CA are users (CN) in groups (O)",
    )
    group.add_argument(
        "--anonymous-auth",
        type=_bool_flag,
        default=False,
        metavar="BOOL",
        help="let unauthenticated requests in as system:anonymous (default false)",
    )
    group.add_argument(
        "--authentication-token-webhook",
        type=_bool_flag,
        default=None,
        metavar="BOOL",
        help="check bearer tokens with TokenReview (default: true with --kubeconfig)",
    )
    group.add_argument(
        "--authorization-mode",
        metavar="MODE",
        help="Webhook (SubjectAccessReview; the default with --kubeconfig) or AlwaysAllow",
    )
    group.add_argument(
        "--rotate-server-certificates",
        action="store_true",
        help="request the serving certificate from the cluster (a kubernetes.io/kubelet-serving "
        "CSR, approved with kubectl certificate approve) and renew it; the self-signed one "
        "is served until it is issued",
    )
    group.add_argument(
        "--rotate-certificates-after",
        type=float,
        metavar="S",
        help="test only: rotate the node's certificates S seconds after the start instead "
        "of at 70-90%% of their lifetime",
    )
    group.add_argument(
        "--streaming-connection-idle-timeout",
        type=float,
        default=4 * 3600.0,
        metavar="S",
        help="close an exec/attach/port-forward stream idle this long (default 4h)",
    )


def add_parser(sub: Subcommands) -> None:
    """Add the run command to the ``minikubelet`` subcommands."""
    run = sub.add_parser("run", help="run the kubelet on pods from a manifest directory")
    add_node_flags(run)
    run.set_defaults(func=command)


def add_node_flags(run: argparse.ArgumentParser, *, kubeconfig: bool = True) -> None:
    """The flags of a node (``run``, and ``join`` without --kubeconfig)."""
    run.add_argument(
        "--manifests",
        metavar="DIR",
        help="static pod manifests (default: the project's manifests/ in a checkout)",
    )
    run.add_argument("--manifest-url", metavar="URL", help="also poll pods from this URL")
    if kubeconfig:
        run.add_argument(
            "--kubeconfig",
            metavar="FILE",
            help="join the API server this kubeconfig names: run the pods bound to this node, "
            "register the Node, write statuses back (static pods keep running beside them); "
            "default: <root-dir>/kubelet.kubeconfig once `minikubelet join` has made it",
        )
    run.add_argument("--node-labels", metavar="K=V,...", help="labels the Node is registered with")
    run.add_argument(
        "--register-with-taints",
        metavar="K[=V]:EFFECT,...",
        help="taints the Node is registered with",
    )
    run.add_argument(
        "--max-pods", type=int, default=110, metavar="N", help="pods this node runs (default 110)"
    )
    run.add_argument(
        "--runtime",
        default="native",
        help="a bundled runtime started for this node (native, the default: runc, as root; "
        "fake: simulated; docker: over dockerd), or the endpoint of a running one, "
        "unix:///PATH",
    )
    run.add_argument(
        "--shutdown-grace-period",
        type=int,
        metavar="S",
        help="when the node stops, stop and remove its pods within S seconds "
        "(graceful node shutdown; default 0: pods keep running, as on a kubelet restart)",
    )
    run.add_argument(
        "--runtime-arg",
        action="append",
        metavar="ARG",
        help="pass ARG to a bundled runtime, e.g. --runtime-arg=--registry-mirror=H=URL",
    )
    run.add_argument("--node-name", help="default: the host name")
    run.add_argument("--node-ip", help="the node's address shown as hostIP")
    run.add_argument(
        "--root-dir",
        help="state, sockets and pod logs "
        "(default: /var/lib/minikubelet for root, else ~/.local/state/minikubelet)",
    )
    run.add_argument("--trace-file", help="append every CRI call to this JSON-lines file")
    run.add_argument(
        "--crash-loop-initial",
        type=float,
        metavar="S",
        help="first crash-loop back-off in seconds (default 10)",
    )
    run.add_argument(
        "--crash-loop-max",
        type=float,
        metavar="S",
        help="crash-loop back-off cap in seconds (default 300)",
    )
    run.add_argument("--relist-period", type=float, metavar="S", help="PLEG relist (default 1)")
    run.add_argument(
        "--file-check-period",
        type=float,
        metavar="S",
        help="manifest directory resync (default 20)",
    )
    run.add_argument(
        "--container-log-max-size",
        type=int,
        metavar="BYTES",
        help="rotate a container's log beyond this size (default 10 MiB)",
    )
    run.add_argument(
        "--container-log-max-files",
        type=int,
        metavar="N",
        help="log files kept per container, the live one included (default 5)",
    )
    run.add_argument(
        "--container-log-monitor-interval",
        type=float,
        metavar="S",
        help="how often log sizes are checked (default 10)",
    )
    add_serving_flags(run)
