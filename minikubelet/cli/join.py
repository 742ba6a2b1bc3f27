"""``minikubelet join``: the line ``kubeadm token create --print-join-command`` prints,
with ``minikubelet`` for ``kubeadm``, makes this machine a node of that cluster.

Discovery (:mod:`minikubelet.bootstrap.discovery`) learns and verifies the API server's
CA from the token and the CA pin; TLS bootstrap
(:mod:`minikubelet.bootstrap.tlsbootstrap`) gets the node's client certificate through
a CSR with a key made here; the identity goes under the root dir
(:mod:`minikubelet.bootstrap.identity`) only once it is all there; then the node runs as
``minikubelet run --kubeconfig <root>/kubelet.kubeconfig`` would, and ``minikubelet run
--root-dir <root>`` runs it again later without the token.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import re
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from minikubelet.bootstrap.discovery import (
    DISCOVERY_TIMEOUT,
    BootstrapToken,
    ClusterInfo,
    DiscoveryError,
    discover,
    endpoint_url,
    parse_ca_hash,
)
from minikubelet.bootstrap.identity import Identity, render_kubeconfig, write_private
from minikubelet.bootstrap.tlsbootstrap import (
    BOOTSTRAP_TIMEOUT,
    KEY_TYPES,
    BootstrapError,
    IssuedCertificate,
    describe,
    node_name_in_use,
    request_node_client_certificate,
    retrying,
)
from minikubelet.cli import run
from minikubelet.cli.common import Subcommands, default_node_name, default_root_dir, run_reporting
from minikubelet.cri.trace import TraceRecorder
from minikubelet.kubeapi.client import ApiException, KubeClient

_NODE_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


class JoinError(Exception):
    """Joining cannot go on (what to do about it is in the message)."""


@dataclass(frozen=True)
class JoinRequest:
    """What the join line and the flags say."""

    endpoint: str
    token: BootstrapToken
    pins: tuple[str, ...]
    unsafe_skip_ca_verification: bool
    node_name: str
    identity: Identity
    discovery_timeout: float = DISCOVERY_TIMEOUT
    tls_bootstrap_timeout: float = BOOTSTRAP_TIMEOUT
    key_type: str = "ecdsa-p256"


@dataclass(frozen=True)
class Joined:
    """What a join left: the cluster it trusts and the certificate it holds."""

    cluster: ClusterInfo
    issued: IssuedCertificate
    seconds: float


def say(text: str) -> None:
    print(text, flush=True)


def check_node_name(name: str) -> str:
    if len(name) > 253 or _NODE_NAME.match(name) is None:
        raise JoinError(
            f"node name {name!r} is not a lowercase DNS name (RFC 1123): give --node-name"
        )
    return name


def write_identity(
    identity: Identity, cluster: ClusterInfo, token: str, issued: IssuedCertificate
) -> None:
    """The node's identity files, the kubeconfig (what makes the root dir joined) last;
    on any failure the files written so far (and directories made) are removed again."""
    root, pki = identity.root, identity.pki
    made_root, made_pki = not root.exists(), not pki.exists()
    written: list[Path] = []
    try:
        identity.write_cluster_ca(cluster.ca_pem)
        written.append(identity.cluster_ca)
        identity.write_bootstrap_kubeconfig(cluster.server, cluster.ca_pem, token)
        written.append(identity.bootstrap_kubeconfig)
        link = identity.store_pair(issued.cert_pem, issued.key_pem)
        written += [link.parent / link.readlink(), link]
        identity.write_kubeconfig(cluster.server, cluster.ca_pem)
        written.append(identity.kubeconfig)
    except BaseException:
        for path in reversed(written):
            with contextlib.suppress(OSError):
                path.unlink()
        for directory, made in ((pki, made_pki), (root, made_root)):
            if made:
                with contextlib.suppress(OSError):
                    directory.rmdir()  # only when empty
        raise


async def join(
    request: JoinRequest,
    *,
    trace: TraceRecorder | None = None,
    progress: Callable[[str], None] = say,
) -> Joined:
    """Discovery, the name check and TLS bootstrap; the identity is written at the end
    (nothing is, when any of it fails)."""
    started = time.monotonic()
    identity = request.identity
    if identity.joined():
        raise JoinError(_already(identity))
    url = endpoint_url(request.endpoint)
    progress(f"[discovery] reading cluster-info from {url} (token id {request.token.id})")
    cluster = await discover(
        request.endpoint,
        request.token,
        request.pins,
        unsafe_skip_ca_verification=request.unsafe_skip_ca_verification,
        timeout=request.discovery_timeout,
        trace=trace,
        progress=progress,
    )
    pinned = f"CA {cluster.ca_hash} pinned" if cluster.verified else "CA NOT verified"
    progress(
        f"[discovery] cluster-info signed with token {request.token.id}, {pinned}; "
        f"API server {cluster.server}"
    )
    with tempfile.TemporaryDirectory(prefix="minikubelet-join-") as tmp:
        bootstrap = Path(tmp) / "bootstrap.kubeconfig"
        text = render_kubeconfig(cluster.server, cluster.ca_pem, token=str(request.token))
        write_private(bootstrap, text.encode())
        kube = await KubeClient.from_kubeconfig(bootstrap, trace=trace)
    async with kube:
        loop_deadline = _deadline(request.tls_bootstrap_timeout)
        try:
            taken = await retrying(
                f"reading Node {request.node_name}",
                lambda: node_name_in_use(kube, request.node_name),
                server=cluster.server,
                deadline=loop_deadline,
                progress=progress,
            )
        except ApiException as exc:
            if exc.status == 401:
                raise JoinError(
                    f"the API server at {cluster.server} refuses the bootstrap token (401): "
                    "it has expired or was deleted"
                ) from None
            raise JoinError(f"reading Node {request.node_name}: {describe(exc)}") from None
        if taken is not None:
            raise JoinError(taken)
        issued = await request_node_client_certificate(
            kube,
            request.node_name,
            key_type=request.key_type,
            timeout=request.tls_bootstrap_timeout,
            progress=progress,
        )
    cert = issued.certificate
    progress(
        f"[tls-bootstrap] {issued.csr_name}: certificate for {cert.subject.rfc4514_string()} "
        f"until {cert.not_valid_after_utc:%Y-%m-%d %H:%M} UTC, issued by "
        f"{cert.issuer.rfc4514_string()}"
    )
    write_identity(identity, cluster, str(request.token), issued)
    return Joined(cluster=cluster, issued=issued, seconds=time.monotonic() - started)


def _deadline(timeout: float) -> float:
    return asyncio.get_running_loop().time() + timeout


def joined_message(request: JoinRequest, joined: Joined) -> str:
    root = request.identity.root
    return (
        "\nThis node has joined the cluster:\n"
        f"* Certificate signing request {joined.issued.csr_name} was sent to the API server "
        f"{joined.cluster.server} and a response was received.\n"
        f"* The node's identity (system:node:{request.node_name}) is in {root}: "
        f"{request.identity.kubeconfig.name}, pki/kubelet-client-current.pem, pki/ca.crt.\n"
        f"* It runs now; after a stop, `minikubelet run --root-dir {root}` starts it again "
        "(no token needed).\n\n"
        "Run 'kubectl get nodes' on the control-plane to see this node join the cluster.\n"
    )


async def join_and_run(request: JoinRequest, options: dict[str, Any]) -> int:
    trace = TraceRecorder()  # the node's trace starts with the join's requests
    joined = await join(request, trace=trace)
    say(joined_message(request, joined))
    return await run.run_node(**options, trace=trace)


def request_from(args: argparse.Namespace) -> JoinRequest:
    """The join request in the flags (JoinError, DiscoveryError: a bad one); the node's
    flags are set for its joined identity."""
    token = BootstrapToken.parse(args.token)
    pins = tuple(parse_ca_hash(text) for text in args.discovery_token_ca_cert_hash or ())
    if not pins and not args.discovery_token_unsafe_skip_ca_verification:
        raise DiscoveryError(
            "give --discovery-token-ca-cert-hash sha256:<hex> (kubeadm token create "
            "--print-join-command prints it), or accept any CA with "
            "--discovery-token-unsafe-skip-ca-verification"
        )
    endpoint_url(args.endpoint)  # a bad endpoint stops here
    if args.key_type not in KEY_TYPES:
        raise JoinError(f"--key-type {args.key_type!r}: one of {', '.join(KEY_TYPES)}")
    name = check_node_name(args.node_name or default_node_name())
    root = (Path(args.root_dir) if args.root_dir else default_root_dir()).absolute()
    identity = Identity(root)
    args.node_name, args.root_dir = name, str(root)
    args.kubeconfig = str(identity.kubeconfig)
    if not args.client_ca_file:
        args.client_ca_file = str(identity.cluster_ca)  # the CA discovery verifies
    return JoinRequest(
        endpoint=args.endpoint,
        token=token,
        pins=pins,
        unsafe_skip_ca_verification=args.discovery_token_unsafe_skip_ca_verification,
        node_name=name,
        identity=identity,
        discovery_timeout=args.discovery_timeout,
        tls_bootstrap_timeout=args.tls_bootstrap_timeout,
        key_type=args.key_type,
    )


def command(args: argparse.Namespace) -> int:
    try:
        request = request_from(args)
        options = run.node_options(args)
    except (JoinError, DiscoveryError, ValueError) as exc:
        print(f"minikubelet join: {exc}", file=sys.stderr)
        return 2
    if request.identity.joined():
        print(f"minikubelet join: {_already(request.identity)}", file=sys.stderr)
        return 1
    if not run.preflight_runtime(args, "join"):
        return 1
    return run_reporting(
        "join",
        join_and_run(request, options),
        (JoinError, DiscoveryError, BootstrapError, OSError, RuntimeError, ValueError),
    )


def _already(identity: Identity) -> str:
    return (
        f"{identity.root} holds the identity of a node that has joined a cluster already "
        f"({identity.kubeconfig}): start it with `minikubelet run --root-dir "
        f"{identity.root}`, or leave that cluster first"
    )


def add_parser(sub: Subcommands) -> None:
    """Add the join command to the ``minikubelet`` subcommands."""
    join_parser = sub.add_parser(
        "join",
        help="join a kubeadm cluster as a node (the line `kubeadm token create "
        "--print-join-command` prints, with minikubelet for kubeadm)",
        description="Discover the cluster with a bootstrap token, get this node's client "
        "certificate through a CertificateSigningRequest, and run the node.",
    )
    join_parser.add_argument("endpoint", metavar="HOST:PORT", help="the API server")
    join_parser.add_argument(
        "--token", required=True, metavar="ID.SECRET", help="a bootstrap token"
    )
    join_parser.add_argument(
        "--discovery-token-ca-cert-hash",
        action="append",
        metavar="sha256:HEX",
        help="the cluster CA's public key pin (repeatable: any one may match)",
    )
    join_parser.add_argument(
        "--discovery-token-unsafe-skip-ca-verification",
        action="store_true",
        help="trust whatever CA cluster-info names (the token's signature is still checked)",
    )
    join_parser.add_argument(
        "--discovery-timeout",
        type=float,
        default=DISCOVERY_TIMEOUT,
        metavar="S",
        help=f"give up discovery after S seconds (default {DISCOVERY_TIMEOUT:g})",
    )
    join_parser.add_argument(
        "--tls-bootstrap-timeout",
        type=float,
        default=BOOTSTRAP_TIMEOUT,
        metavar="S",
        help=f"wait this long for the node's certificate (default {BOOTSTRAP_TIMEOUT:g})",
    )
    join_parser.add_argument(
        "--key-type",
        default="ecdsa-p256",
        help=f"the node's new private key: {', '.join(KEY_TYPES)} (default ecdsa-p256)",
    )
    run.add_node_flags(join_parser, kubeconfig=False)
    join_parser.set_defaults(func=command)


__all__ = ("JoinError", "JoinRequest", "Joined", "add_parser", "command", "join")
