"""The node's API server client: kubeconfig loading and the typed API, from ``kubernetes_asyncio``.

``kubernetes_asyncio`` (the asyncio twin of the official ``kubernetes`` client,
generated from the same OpenAPI) loads kubeconfig files with everything they may
hold (client certificates, bearer tokens, exec credential plugins) or the
in-cluster service account, and gives the typed API groups. Its requests are
coroutines on the kubelet's own loop, so a watch is cancelled like any other task
and no thread is held per request or per watch.

:class:`KubeClient` adds what the node needs around it: every request (and every
watch event the node receives) is recorded in the trace beside the CRI calls, so
one pod's story reads from "WATCH pods ADDED" through the CRI calls to
"PATCH pods/status".
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from kubernetes_asyncio import client as k8s
from kubernetes_asyncio import config as k8s_config
from kubernetes_asyncio.client.exceptions import ApiException

from minikubelet.cri.trace import TraceRecorder

log = logging.getLogger(__name__)

#: ``/api/v1/namespaces/NS/pods/NAME/status`` -> resource ``pods/status``, name ``NS/NAME``.
_PATH = re.compile(
    r"^/(?:api/v1|apis/[^/]+/[^/]+)"
    r"(?:/namespaces/(?P<ns>[^/]+))?"
    r"/(?P<resource>[^/]+)(?:/(?P<name>[^/]+))?(?:/(?P<sub>[^/]+))?$"
)


def describe_path(method: str, url: str, query: Any = None) -> tuple[str, str]:
    """``(VERB resource[/sub], namespace/name)`` for a request, as the trace shows it."""
    path = urlsplit(url).path
    verb = method.upper()
    match = _PATH.match(path)
    if match is None:
        return f"{verb} {path}", ""
    resource = match["resource"]
    if match["ns"] is not None and resource == "namespaces":  # /namespaces/NS itself
        resource = "namespaces"
    if match["sub"]:
        resource = f"{resource}/{match['sub']}"
    params = dict(query or ())
    if verb == "GET" and not match["name"]:
        verb = "WATCH" if str(params.get("watch", "")).lower() == "true" else "LIST"
    name = match["name"] or ""
    who = f"{match['ns']}/{name}" if match["ns"] and name else name
    return f"{verb} {resource}", who


class _TracingApiClient(k8s.ApiClient):
    """The generated client, with each request recorded in a trace."""

    def __init__(self, configuration: k8s.Configuration, trace: TraceRecorder | None) -> None:
        super().__init__(configuration=configuration)
        self._trace = trace
        #: called when the API server answers 401 (it refused the node's credentials)
        self.unauthorized_hooks: list[Callable[[], None]] = []

    async def request(self, method: str, url: str, *args: Any, **kwargs: Any) -> Any:
        if self._trace is None:
            try:
                return await super().request(method, url, *args, **kwargs)
            except ApiException as exc:
                if exc.status == 401:
                    self._refused()
                raise
        started, t0 = time.time(), time.perf_counter()
        what, who = describe_path(method, url, kwargs.get("query_params"))
        pod = who if what.split(" ", 1)[1].startswith("pods") else ""
        details = {"name": who} if who and not pod else {}
        try:
            response = await super().request(method, url, *args, **kwargs)
        except ApiException as exc:
            if exc.status == 401:
                self._refused()
            self._trace.record_api(
                method=what,
                code=str(exc.status),
                started=started,
                duration_s=time.perf_counter() - t0,
                pod=pod,
                error=str(exc.reason or ""),
                details=details,
            )
            raise
        status = getattr(response, "status", 200)
        self._trace.record_api(
            method=what,
            code=str(status),
            started=started,
            duration_s=time.perf_counter() - t0,
            pod=pod,
            details=details,
        )
        return response

    def _refused(self) -> None:
        for hook in self.unauthorized_hooks:
            hook()


class KubeClient:
    """One API server connection: the typed API groups the node uses, over one session."""

    def __init__(self, api: k8s.ApiClient, *, trace: TraceRecorder | None = None) -> None:
        self.api = api
        self.trace = trace
        self.core = k8s.CoreV1Api(api)
        self.coordination = k8s.CoordinationV1Api(api)
        self.node_k8s_io = k8s.NodeV1Api(api)
        self.authentication = k8s.AuthenticationV1Api(api)

    @classmethod
    async def from_kubeconfig(
        cls,
        path: Path | None,
        *,
        context: str | None = None,
        trace: TraceRecorder | None = None,
    ) -> KubeClient:
        """Load ``path`` (``None``: the in-cluster service account) and connect lazily."""
        configuration = k8s.Configuration()
        if path is None:
            k8s_config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
        else:
            await k8s_config.load_kube_config(
                config_file=str(path), context=context, client_configuration=configuration
            )
        return cls(_TracingApiClient(configuration, trace), trace=trace)

    def on_unauthorized(self, hook: Callable[[], None]) -> None:
        """Call ``hook`` whenever the API server answers 401 to this client."""
        if isinstance(self.api, _TracingApiClient):
            self.api.unauthorized_hooks.append(hook)

    @property
    def server(self) -> str:
        """The API server's URL."""
        return str(self.api.configuration.host)

    def to_dict(self, obj: Any) -> dict[str, Any]:
        """A typed API object as the JSON the API server speaks (camelCase keys)."""
        data = self.api.sanitize_for_serialization(obj)
        assert isinstance(data, dict)
        return data

    def record_event(
        self, method: str, pod: str = "", *, code: str = "", details: dict[str, Any] | None = None
    ) -> None:
        """Put something the node received (a watch event) in the trace."""
        if self.trace is not None:
            self.trace.record_api(
                method=method,
                code=code,
                started=time.time(),
                duration_s=0.0,
                pod=pod,
                details=details,
            )

    async def close(self) -> None:
        await self.api.close()

    async def __aenter__(self) -> KubeClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


__all__ = ("ApiException", "KubeClient", "describe_path")
