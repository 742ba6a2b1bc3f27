"""The kubelet API's port as an attacker and a careless client meet it, on a native-runtime
node joined to the real control plane: who is let in (no credentials, a token RBAC limits
to ``nodes/log``, the API server's client certificate, a token of a deleted service
account), what a path or query cannot reach, what an oversized request gets, that a
hundred abandoned log follows and exec sessions leave nothing behind, and that bearer
tokens never reach the node's log or its CRI trace.

The port is the one the Node advertises (``status.daemonEndpoints.kubeletEndpoint``);
the client trusts the node's own serving certificate (``ROOT/pki/kubelet.crt``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as ws_connect
from websockets.typing import Subprotocol

from tests.e2e.cluster import api_node, apply, kubectl_json
from tests.e2e.conftest import unmount_under
from tests.e2e.node import Node
from tests.harness.controlplane import ControlPlane
from tests.harness.fixtures import HarnessImages
from tests.harness.native import NativeRuntime
from tests.harness.wait import wait_until

NODE = "ksec-native"
LABEL = "minikubelet.test/node"
POD, CONTAINER = "ksec", "main"
OTHER_POD, OTHER_CONTAINER = "ksec-other", "other"
LOG_READER = "ksec-log-reader"
GONE = "ksec-gone"

PODS = """apiVersion: v1
kind: Pod
metadata:
  name: {pod}
  namespace: default
spec:
  nodeSelector: {{"{label}": "{node}"}}
  terminationGracePeriodSeconds: 1
  containers:
    - name: {container}
      image: busybox:1.36
      command: ["sh", "-c", "i=0; while true; do echo line $i; i=$((i+1)); sleep 1; done"]
---
apiVersion: v1
kind: Pod
metadata:
  name: {other_pod}
  namespace: default
spec:
  nodeSelector: {{"{label}": "{node}"}}
  terminationGracePeriodSeconds: 1
  containers:
    - name: {other_container}
      image: busybox:1.36
      command: ["sleep", "100000"]
"""

#: Every bearer token a test here sent to the node: none may reach its log or trace.
SENT_TOKENS: list[str] = []


@dataclass
class Kubelet:
    node: Node
    port: int
    server_ca: Path  # the node's self-signed serving certificate
    client_cert: tuple[Path, Path]  # the API server's kubelet client certificate

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def context(self, *, cert: bool = False) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(self.server_ca))
        if cert:
            context.load_cert_chain(str(self.client_cert[0]), str(self.client_cert[1]))
        return context


def pod_running(cp: ControlPlane, name: str) -> bool:
    pod = kubectl_json(cp, "get", "pod", name)
    return pod.get("status", {}).get("phase") == "Running" and all(
        c.get("ready") for c in pod["status"].get("containerStatuses", [])
    )


@pytest.fixture(scope="module")
async def kubelet(
    control_plane: ControlPlane,
    native_runtime: NativeRuntime,
    test_images: HarnessImages,
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[Kubelet]:
    workdir = tmp_path_factory.mktemp("ksec-native")
    node = api_node(
        workdir, control_plane, native_runtime.endpoint, NODE, "--node-labels", f"{LABEL}={NODE}"
    )
    asked = int(node.extra_args[node.extra_args.index("--port") + 1])
    node.start()
    try:
        await node.wait_ready()
        apply(
            control_plane,
            PODS.format(
                label=LABEL,
                node=NODE,
                pod=POD,
                container=CONTAINER,
                other_pod=OTHER_POD,
                other_container=OTHER_CONTAINER,
            ),
        )

        def advertised() -> int:
            status = kubectl_json(control_plane, "get", "node", NODE).get("status", {})
            return int(status.get("daemonEndpoints", {}).get("kubeletEndpoint", {}).get("Port", 0))

        port = await wait_until(advertised, timeout=30, message="the Node's kubeletEndpoint")
        assert port == asked, f"the Node advertises port {port}, the kubelet was given {asked}"
        for name in (POD, OTHER_POD):
            await wait_until(
                partial(pod_running, control_plane, name),
                timeout=90,
                message=f"pod {name} Running",
            )
        pki = control_plane.pki
        yield Kubelet(
            node,
            port,
            node.root_dir / "pki" / "kubelet.crt",
            (pki / "apiserver-kubelet-client.crt", pki / "apiserver-kubelet-client.key"),
        )
    finally:
        for name in (POD, OTHER_POD):
            control_plane.kubectl("delete", "pod", name, "--wait=false")
        assert node.stop() == 0
        control_plane.kubectl("delete", "node", NODE, "--wait=false")
        unmount_under(workdir)
        assert "Traceback" not in node.log(), node.log()[-6000:]


# -- clients ------------------------------------------------------------------------------


async def call(
    k: Kubelet,
    method: str,
    path: str,
    *,
    token: str | None = None,
    cert: bool = False,
) -> tuple[int, str]:
    """One request through aiohttp (which normalizes the path): status and body."""
    headers = {}
    if token is not None:
        SENT_TOKENS.append(token)
        headers["Authorization"] = f"Bearer {token}"
    connector = aiohttp.TCPConnector(ssl=k.context(cert=cert))
    async with (
        aiohttp.ClientSession(connector=connector) as session,
        session.request(
            method, k.url + path, headers=headers, timeout=aiohttp.ClientTimeout(total=30)
        ) as response,
    ):
        return response.status, await response.text()


async def raw(k: Kubelet, target: str, *, extra: str = "") -> tuple[int, bytes]:
    """``GET target`` exactly as written (no client normalizes it), with the API server's
    certificate: status and body. ``extra`` is more header lines (each ending CRLF)."""
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", k.port, ssl=k.context(cert=True), server_hostname="127.0.0.1"
    )
    try:
        head = f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\n{extra}Connection: close\r\n\r\n"
        writer.write(head.encode("latin-1"))
        with contextlib.suppress(ConnectionError):
            await writer.drain()
        async with asyncio.timeout(30):
            answer = await reader.read()  # until the server closes: Connection: close
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()
    status_line, _, rest = answer.partition(b"\r\n")
    assert status_line.startswith(b"HTTP/1."), f"not an HTTP answer to {target!r}: {answer[:200]!r}"
    headers, _, body = rest.partition(b"\r\n\r\n")
    if b"transfer-encoding: chunked" in headers.lower():
        body = dechunk(body)
    return int(status_line.split()[1]), body


def dechunk(data: bytes) -> bytes:
    out = b""
    while data:
        size_line, _, data = data.partition(b"\r\n")
        size = int(size_line.split(b";")[0] or b"0", 16)
        if size == 0:
            break
        out, data = out + data[:size], data[size + 2 :]
    return out


def kubectl_ok(cp: ControlPlane, *args: str, input: str | None = None) -> str:
    done = cp.kubectl(*args, input=input)
    assert done.returncode == 0, f"kubectl {' '.join(args)}: {done.stderr}"
    return done.stdout


def token_user(cp: ControlPlane, token: str) -> str | None:
    """Who the API server says ``token`` is (a TokenReview as the admin), ``None`` if nobody."""
    review = {
        "apiVersion": "authentication.k8s.io/v1",
        "kind": "TokenReview",
        "spec": {"token": token},
    }
    answer = json.loads(kubectl_ok(cp, "create", "-f", "-", "-o", "json", input=json.dumps(review)))
    status = answer.get("status", {})
    return str(status["user"]["username"]) if status.get("authenticated") else None


def service_account(cp: ControlPlane, name: str, resources: list[str] | None) -> str:
    """A service account in default (with a ClusterRole granting ``get`` on
    ``resources``, bound to it, when given); a new token of it."""
    objects: list[dict[str, Any]] = [
        {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": {"name": name, "namespace": "default"},
        }
    ]
    if resources:
        objects += [
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "ClusterRole",
                "metadata": {"name": name},
                "rules": [{"apiGroups": [""], "resources": resources, "verbs": ["get"]}],
            },
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "ClusterRoleBinding",
                "metadata": {"name": name},
                "roleRef": {
                    "apiGroup": "rbac.authorization.k8s.io",
                    "kind": "ClusterRole",
                    "name": name,
                },
                "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": "default"}],
            },
        ]
    apply(cp, json.dumps({"apiVersion": "v1", "kind": "List", "items": objects}))
    return kubectl_ok(cp, "create", "token", "-n", "default", name).strip()


@pytest.fixture(scope="module")
async def log_reader_token(control_plane: ControlPlane) -> AsyncIterator[str]:
    """A token of a service account RBAC lets ``get nodes/log`` and nothing else, once
    the API server knows both (the kubelet keeps a refusal for a while)."""
    token = service_account(control_plane, LOG_READER, ["nodes/log"])
    user = f"system:serviceaccount:default:{LOG_READER}"
    await wait_until(
        lambda: token_user(control_plane, token) == user, timeout=30, message="TokenReview"
    )

    def granted() -> bool:
        done = control_plane.kubectl(
            "auth", "can-i", "get", "nodes", "--subresource=log", "--as", user
        )
        return done.stdout.strip() == "yes"

    await wait_until(granted, timeout=30, message=f"RBAC grants {user} nodes/log")
    yield token
    for kind in ("clusterrolebinding", "clusterrole"):
        control_plane.kubectl("delete", kind, LOG_READER, "--ignore-not-found")
    control_plane.kubectl("delete", "sa", "-n", "default", LOG_READER, "--ignore-not-found")


# -- 1. no credentials ----------------------------------------------------------------------


async def test_no_certificate_and_no_token_is_401(kubelet: Kubelet) -> None:
    for method, path in [
        ("GET", "/pods"),
        ("GET", f"/containerLogs/default/{POD}/{CONTAINER}"),
        ("POST", f"/exec/default/{POD}/{CONTAINER}?command=true&output=1"),
    ]:
        assert await call(kubelet, method, path) == (401, "Unauthorized"), path


# -- 2. a token RBAC limits to nodes/log ----------------------------------------------------


async def test_a_token_granted_nodes_log_reads_logs_only(
    kubelet: Kubelet, log_reader_token: str
) -> None:
    user = f"system:serviceaccount:default:{LOG_READER}"
    status, body = await call(kubelet, "GET", "/logs/", token=log_reader_token)
    assert status == 200, body
    listed = {line.rstrip("/") for line in body.splitlines()}
    assert listed == set(os.listdir("/var/log")), body  # the node's /var/log, listed

    assert await call(
        kubelet,
        "POST",
        f"/exec/default/{POD}/{CONTAINER}?command=true&output=1",
        token=log_reader_token,
    ) == (403, f"Forbidden (user={user}, verb=create, resource=nodes, subresource=proxy)")
    assert await call(kubelet, "GET", "/stats/summary", token=log_reader_token) == (
        403,
        f"Forbidden (user={user}, verb=get, resource=nodes, subresource=stats)",
    )


# -- 3. the API server's client certificate ---------------------------------------------------


async def test_the_apiservers_client_certificate_is_allowed(kubelet: Kubelet) -> None:
    status, body = await call(kubelet, "GET", "/pods", cert=True)
    assert status == 200, body
    pods = json.loads(body)
    assert pods["kind"] == "PodList"
    assert POD in {p["metadata"]["name"] for p in pods["items"]}

    status, body = await call(kubelet, "GET", "/runningpods/", cert=True)
    assert status == 200, body
    assert POD in {p["metadata"]["name"] for p in json.loads(body)["items"]}

    assert await call(kubelet, "GET", "/healthz", cert=True) == (200, "ok")

    status, body = await call(kubelet, "GET", "/configz", cert=True)
    assert status == 200, body
    assert json.loads(body)["kubeletconfig"]["authorization"]["mode"] == "Webhook"


# -- 4. a token of a deleted service account --------------------------------------------------


async def test_a_token_of_a_deleted_service_account_is_401(
    control_plane: ControlPlane, kubelet: Kubelet
) -> None:
    token = service_account(control_plane, GONE, None)
    kubectl_ok(control_plane, "delete", "sa", "-n", "default", GONE, "--wait=true")
    # the API server's own informers follow the delete by a moment: the kubelet is asked
    # (and keeps the answer) only once the API server itself refuses the token
    await wait_until(
        lambda: token_user(control_plane, token) is None,
        timeout=30,
        message="the API server to refuse the deleted account's token",
    )
    assert await call(kubelet, "GET", "/logs/", token=token) == (401, "Unauthorized")
    assert await call(kubelet, "GET", "/pods", token=token) == (401, "Unauthorized")


# -- 5. paths and queries --------------------------------------------------------------------

TRICKS = [
    # names that are not names
    f"/containerLogs/default/{POD}/..",
    f"/containerLogs/default/{POD}/%2e%2e",
    f"/containerLogs/default/..%2F..%2Fetc/{CONTAINER}",
    f"/containerLogs/%2e%2e/{POD}/{CONTAINER}",
    f"/containerLogs/default/{POD}/..%2F{CONTAINER}",
    f"/containerLogs/default/{POD}%2F..%2F{OTHER_POD}/{OTHER_CONTAINER}",
    f"/containerLogs/default%00/{POD}/{CONTAINER}",
    f"/containerLogs/../default/{POD}/{CONTAINER}",
    f"/exec/default/%2e%2e/{CONTAINER}?command=cat&command=/etc/passwd&output=1",
    f"/exec/default/{POD}/..%2F..%2F{CONTAINER}?command=true&output=1",
    f"/portForward/%2e%2e/{POD}?port=80",
    # names of nothing on this node
    f"/containerLogs/nowhere/{POD}/{CONTAINER}",
    f"/containerLogs/default/no-such-pod/{CONTAINER}",
    f"/containerLogs/default/{POD}/{OTHER_CONTAINER}",  # the other pod's container
    f"/exec/default/{POD}/{OTHER_CONTAINER}?command=true&output=1",
    f"/exec/default/no-such-pod/{CONTAINER}?command=true&output=1",
]


@pytest.mark.parametrize("target", TRICKS)
async def test_names_that_name_nothing_are_400_or_404(kubelet: Kubelet, target: str) -> None:
    status, body = await raw(kubelet, target)
    assert status in (400, 404), (target, status, body)
    assert b"Traceback" not in body and b"root:" not in body, body


@pytest.mark.parametrize(
    "target",
    [
        "/logs/../../etc/shadow",
        "/logs/../../etc/passwd",
        "/logs/%2e%2e/etc/passwd",
        "/logs/%2e%2e/%2e%2e/etc/passwd",
        "/logs/..%2F..%2Fetc%2Fpasswd",
        "/logs/%2e%2e%2f%2e%2e%2fetc%2fshadow",
        "/logs//etc/passwd",
        "/logs/%2Fetc%2Fpasswd",
    ],
)
async def test_host_logs_do_not_leave_var_log(kubelet: Kubelet, target: str) -> None:
    status, body = await raw(kubelet, target)
    assert status in (400, 404), (target, status, body[:300])
    assert b"root:" not in body, body[:300]


async def test_a_symlink_out_of_var_log_is_not_followed(kubelet: Kubelet) -> None:
    link = Path("/var/log") / f"ksec-escape-{os.getpid()}"
    link.symlink_to("/etc/passwd")
    try:
        status, body = await raw(kubelet, f"/logs/{link.name}")
    finally:
        link.unlink()
    assert status == 404, (status, body[:300])
    assert b"root:" not in body


@pytest.mark.parametrize(
    ("query", "named"),
    [
        ("tailLines=abc", "tailLines"),
        ("follow=maybe", "follow"),
        ("limitBytes=lots", "limitBytes"),
        ("sinceSeconds=-x", "sinceSeconds"),
        ("timestamps=2", "timestamps"),
    ],
)
async def test_a_query_parameter_of_the_wrong_type_is_400_naming_it(
    kubelet: Kubelet, query: str, named: str
) -> None:
    status, body = await call(
        kubelet, "GET", f"/containerLogs/default/{POD}/{CONTAINER}?{query}", cert=True
    )
    assert status == 400, (query, status, body)
    assert named in body, body


async def test_the_log_has_no_traceback_after_the_tricks(kubelet: Kubelet) -> None:
    assert "Traceback" not in kubelet.node.log(), kubelet.node.log()[-4000:]
    assert await call(kubelet, "GET", "/healthz", cert=True) == (200, "ok")


# -- 6. limits ----------------------------------------------------------------------------------


async def test_an_oversized_header_is_refused_and_the_port_stays_up(kubelet: Kubelet) -> None:
    status, _ = await raw(kubelet, "/healthz", extra=f"X-Big: {'a' * 100_000}\r\n")
    assert status in (400, 431), status
    status, _ = await raw(kubelet, "/healthz?" + "a" * 100_000)
    assert status in (400, 414), status
    many = "".join(f"X-H{i}: {'b' * 200}\r\n" for i in range(1000))
    status, _ = await raw(kubelet, "/healthz", extra=many)
    assert status in (400, 431), status
    secret = "ksec-secret-" + os.urandom(8).hex()
    SENT_TOKENS.append(secret)
    status, _ = await raw(
        kubelet, "/healthz", extra=f"Authorization: Bearer {secret}{'c' * 100_000}\r\n"
    )
    assert status in (400, 431), status
    assert await call(kubelet, "GET", "/healthz", cert=True) == (200, "ok")
    assert kubelet.node.proc is not None and kubelet.node.proc.poll() is None
    log = kubelet.node.log()
    assert "Traceback" not in log, log[-4000:]


# -- 7. abandoned streams -------------------------------------------------------------------------


def fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def thread_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/task"))


async def sleepers(node: Node) -> int:
    """``sleep 3600`` processes in the pod's container (ExecSync through the local API)."""
    async with node.client() as client:
        result = await client.exec(
            "default", POD, CONTAINER, ["sh", "-c", "ps -o args | grep -c '^sleep 3600' || true"]
        )
    return int(result.stdout.strip() or 0)


EXEC_SLEEP = f"/exec/default/{POD}/{CONTAINER}?command=sleep&command=3600&output=1"


async def open_exec(k: Kubelet) -> ClientConnection:
    return await ws_connect(
        "wss://127.0.0.1:%d%s" % (k.port, EXEC_SLEEP),  # noqa: UP031
        ssl=k.context(cert=True),
        subprotocols=[Subprotocol("v4.channel.k8s.io")],
        open_timeout=30,
        ping_interval=None,
    )


async def drop(ws: ClientConnection) -> None:
    """Walk away: the connection is cut with no close handshake."""
    ws.transport.abort()
    with contextlib.suppress(Exception):
        async with asyncio.timeout(10):
            await ws.wait_closed()


async def follow_logs(session: aiohttp.ClientSession, k: Kubelet) -> aiohttp.ClientResponse:
    response = await session.get(
        f"{k.url}/containerLogs/default/{POD}/{CONTAINER}?follow=true",
        timeout=aiohttp.ClientTimeout(total=None, sock_read=30),
    )
    assert response.status == 200, await response.text()
    first = await response.content.readany()
    assert first.startswith(b"line "), first
    return response


async def test_a_hundred_abandoned_log_follows_and_execs_leave_nothing_behind(
    kubelet: Kubelet,
) -> None:
    node = kubelet.node
    assert node.proc is not None
    pid = node.proc.pid

    # one of each first: whatever the first stream creates for good (connections to the
    # runtime, executor threads) is part of the baseline, not a leak
    connector = aiohttp.TCPConnector(ssl=kubelet.context(cert=True), limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:
        (await follow_logs(session, kubelet)).close()
    await drop(await open_exec(kubelet))

    async def no_sleepers() -> bool:
        return await sleepers(node) == 0

    await wait_until(no_sleepers, timeout=30, message="the warm-up exec to end")
    baseline_fds, baseline_threads = fd_count(pid), thread_count(pid)

    connector = aiohttp.TCPConnector(ssl=kubelet.context(cert=True), limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:
        follows = await asyncio.gather(*(follow_logs(session, kubelet) for _ in range(100)))
        assert fd_count(pid) >= baseline_fds + 100  # they were all held at once
        for response in follows:
            response.close()  # closes the connection: the client is gone

    execs = []
    for _ in range(100):
        execs.append(await open_exec(kubelet))

    async def hundred() -> int | None:
        n = await sleepers(node)
        return n if n == 100 else None

    await wait_until(hundred, timeout=60, interval=0.5, message="100 sleep 3600 running")
    await asyncio.gather(*(drop(ws) for ws in execs))

    # the default executor starts threads lazily and keeps them (at most
    # min(32, cores + 4)): the streams may be what first fills it; a leak per stream
    # would be a hundred
    pool = min(32, (os.cpu_count() or 1) + 4)
    last: list[str] = ["nothing yet"]

    async def settled() -> bool:
        left = await sleepers(node)
        fds, threads = fd_count(pid), thread_count(pid)
        last[0] = (
            f"{left} sleep processes, {fds} fds (baseline {baseline_fds}), "
            f"{threads} threads (baseline {baseline_threads})"
        )
        return left == 0 and fds <= baseline_fds and threads <= baseline_threads + pool

    try:
        await wait_until(settled, timeout=60, interval=0.5, message="nothing left")
    except AssertionError:
        raise AssertionError(f"streams left something behind: {last[0]}") from None


# -- 8. tokens stay secret ---------------------------------------------------------------------


async def test_bearer_tokens_reach_neither_the_log_nor_the_trace(
    kubelet: Kubelet, log_reader_token: str
) -> None:
    bogus = "ksec-not-a-token-" + os.urandom(12).hex()
    assert await call(kubelet, "GET", "/pods", token=bogus) == (401, "Unauthorized")
    status, _ = await call(kubelet, "GET", "/logs/", token=log_reader_token)
    assert status == 200
    status, _ = await call(
        kubelet,
        "GET",
        f"/exec/default/{POD}/{CONTAINER}?command=true&output=1",
        token=log_reader_token,
    )
    assert status == 403

    connector = aiohttp.UnixConnector(path=str(kubelet.node.root_dir / "kubelet.sock"))
    async with (
        aiohttp.ClientSession(connector=connector) as session,
        session.get("http://localhost/trace") as response,
    ):
        assert response.status == 200
        trace = await response.text()
    assert trace.count("\n") > 10  # the CRI calls were recorded: there is a trace to search
    log = kubelet.node.log()
    assert "unauthorized" in log.lower() or "forbidden" in log.lower()  # -v logs refusals
    for token in {*SENT_TOKENS, bogus, log_reader_token}:
        secret = token.rsplit(".", 1)[-1]  # a JWT's signature; all of a bogus token
        assert secret not in log, "a bearer token is in the node's log"
        assert secret not in trace, "a bearer token is in the node's CRI trace"
