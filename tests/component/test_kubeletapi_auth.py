"""The kubelet API's TLS, authentication and authorization against the real control plane.

A tiny aiohttp app behind the middleware of minikubelet/server/kubeletapi/auth.py, on
127.0.0.1 over TLS with the self-signed serving certificate and the cluster CA as client
CA, reviews tokens (TokenReview) and access (SubjectAccessReview) with the node's own
credentials (``system:node:NAME``: the Node authorizer lets a node create both), as a
kubelet joined to the cluster does.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from minikubelet.kubeapi.client import KubeClient
from minikubelet.server.kubeletapi.auth import (
    USER_KEY,
    ApiAccessReviewer,
    ApiTokenReviewer,
    UserInfo,
    build_auth,
    request_attributes,
)
from minikubelet.server.kubeletapi.tls import ensure_serving_certificate, server_ssl_context
from tests.harness.controlplane import ControlPlane
from tests.harness.wait import wait_until


@dataclass
class KubeletPort:
    node: str
    url: str
    server_ca: Path  # what a client trusts to reach it
    kube: KubeClient


async def _echo(request: web.Request) -> web.StreamResponse:
    user = request[USER_KEY]
    return web.json_response({"user": user.name, "groups": list(user.groups)})


@contextlib.asynccontextmanager
async def kubelet_port(plane: ControlPlane, tmp_path: Path) -> AsyncIterator[KubeletPort]:
    node = f"authn-{uuid.uuid4().hex[:8]}"
    kube = await KubeClient.from_kubeconfig(plane.node_kubeconfig(node))
    cert = ensure_serving_certificate(
        tmp_path, node_name=node, hostname="localhost", node_ips=["127.0.0.1"]
    )
    context = server_ssl_context(cert.cert_file, cert.key_file, client_ca_file=plane.ca_path)
    app = web.Application(middlewares=[build_auth(node, api=kube.api)])
    app.router.add_route("*", "/{tail:.*}", _echo)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield KubeletPort(node, f"https://127.0.0.1:{port}", cert.cert_file, kube)
    finally:
        await runner.cleanup()
        await kube.close()


def client_context(port: KubeletPort, cert: tuple[Path, Path] | None = None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(port.server_ca))
    if cert is not None:
        context.load_cert_chain(str(cert[0]), str(cert[1]))
    return context


async def call(
    port: KubeletPort,
    method: str,
    path: str,
    *,
    token: str | None = None,
    cert: tuple[Path, Path] | None = None,
) -> tuple[int, str]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    connector = aiohttp.TCPConnector(ssl=client_context(port, cert))
    async with (
        aiohttp.ClientSession(connector=connector) as session,
        session.request(method, port.url + path, headers=headers) as response,
    ):
        return response.status, await response.text()


async def kubectl(plane: ControlPlane, *args: str, input: str | None = None) -> str:
    proc = await asyncio.to_thread(plane.kubectl, *args, input=input)
    assert proc.returncode == 0, f"kubectl {' '.join(args)}: {proc.stderr}"
    return proc.stdout


@pytest.fixture
async def log_reader(control_plane: ControlPlane) -> AsyncIterator[tuple[str, str]]:
    """A service account whose RBAC grants ``get nodes/log`` only: ``(namespace, name)``."""
    ns, name = "default", f"log-reader-{uuid.uuid4().hex[:6]}"
    objects = [
        {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": {"name": name, "namespace": ns},
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {"name": name},
            "rules": [{"apiGroups": [""], "resources": ["nodes/log"], "verbs": ["get"]}],
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
            "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": ns}],
        },
    ]
    await kubectl(
        control_plane,
        "apply",
        "-f",
        "-",
        input=json.dumps({"kind": "List", "apiVersion": "v1", "items": objects}),
    )
    yield ns, name
    for kind in ("clusterrolebinding", "clusterrole"):
        await asyncio.to_thread(control_plane.kubectl, "delete", kind, name, "--ignore-not-found")
    await asyncio.to_thread(
        control_plane.kubectl, "delete", "sa", "-n", ns, name, "--ignore-not-found"
    )


async def test_no_certificate_and_no_token_is_401(
    control_plane: ControlPlane, tmp_path: Path
) -> None:
    async with kubelet_port(control_plane, tmp_path) as port:
        assert await call(port, "GET", "/pods") == (401, "Unauthorized")
        assert await call(port, "GET", "/healthz", token="not-a-token") == (401, "Unauthorized")


async def test_the_apiservers_kubelet_client_certificate_is_allowed(
    control_plane: ControlPlane, tmp_path: Path
) -> None:
    pki = control_plane.pki
    cert = (pki / "apiserver-kubelet-client.crt", pki / "apiserver-kubelet-client.key")
    async with kubelet_port(control_plane, tmp_path) as port:
        for method, path in [
            ("GET", "/pods"),
            ("GET", "/stats/summary"),
            ("GET", "/logs/"),
            ("POST", "/exec/default/p/c"),
        ]:
            status, body = await call(port, method, path, cert=cert)
            assert status == 200, (method, path, body)
            assert json.loads(body) == {
                "user": "kube-apiserver-kubelet-client",
                "groups": ["system:masters"],
            }


async def test_a_certificate_of_another_ca_is_refused(
    control_plane: ControlPlane, tmp_path: Path
) -> None:
    async with kubelet_port(control_plane, tmp_path) as port:
        other = ensure_serving_certificate(tmp_path / "other", node_name="x", hostname="x")
        with pytest.raises(aiohttp.ClientError):
            await call(port, "GET", "/pods", cert=(other.cert_file, other.key_file))


async def until_the_api_server_knows(port: KubeletPort, token: str, user: str) -> None:
    """Wait (uncached) until the new service account's token and RBAC binding are seen:
    the API server's informers follow a write by a moment, and the port keeps a refusal."""
    tokens, access = ApiTokenReviewer(port.kube.api), ApiAccessReviewer(port.kube.api)

    async def known() -> UserInfo | None:
        return (await tokens.review_token(token)).user

    who = await wait_until(known, timeout=30, message=f"TokenReview knows {user}")
    assert who.name == user
    attrs = request_attributes(who, "GET", "/logs/", port.node)

    async def granted() -> bool:
        return (await access.review_access(attrs)).allowed

    await wait_until(granted, timeout=30, message=f"RBAC grants {user} nodes/log")


async def test_a_token_granted_nodes_log_gets_logs_but_not_exec(
    control_plane: ControlPlane, tmp_path: Path, log_reader: tuple[str, str]
) -> None:
    ns, name = log_reader
    token = (await kubectl(control_plane, "create", "token", "-n", ns, name)).strip()
    user = f"system:serviceaccount:{ns}:{name}"
    async with kubelet_port(control_plane, tmp_path) as port:
        await until_the_api_server_knows(port, token, user)
        status, body = await call(port, "GET", "/logs/", token=token)
        assert status == 200, body
        got = json.loads(body)
        assert got["user"] == user
        assert "system:serviceaccounts" in got["groups"]
        assert await call(port, "POST", "/exec/default/p/c", token=token) == (
            403,
            f"Forbidden (user={user}, verb=create, resource=nodes, subresource=proxy)",
        )
        assert await call(port, "GET", "/stats/summary", token=token) == (
            403,
            f"Forbidden (user={user}, verb=get, resource=nodes, subresource=stats)",
        )


async def test_a_token_of_a_deleted_service_account_is_401(
    control_plane: ControlPlane, tmp_path: Path, log_reader: tuple[str, str]
) -> None:
    ns, name = log_reader
    token = (await kubectl(control_plane, "create", "token", "-n", ns, name)).strip()
    async with kubelet_port(control_plane, tmp_path) as port:
        await kubectl(control_plane, "delete", "sa", "-n", ns, name, "--wait=true")
        reviewer = ApiTokenReviewer(port.kube.api)

        async def refused() -> bool:
            return not (await reviewer.review_token(token)).authenticated

        await wait_until(refused, timeout=30, message="the API server refuses the token")
        assert await call(port, "GET", "/logs/", token=token) == (401, "Unauthorized")
