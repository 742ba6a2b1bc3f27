"""Who may call the kubelet's HTTPS API, as the kubelet's ``server/auth`` decides.

**Authentication**, in the kubelet's order, the first that knows the request wins:

1. x509: a client certificate that chained to ``--client-ca-file`` (the TLS handshake
   verified it, see :mod:`.tls`) is the user its CN names, in the groups its O name.
   The API server comes in this way with its ``--kubelet-client-certificate``.
2. A bearer token (``Authorization: Bearer T``), when token authentication is on
   (``--authentication-token-webhook``), is reviewed by the API server's TokenReview
   API. An answer is kept two minutes when the token is good and ten seconds when it
   is not or the review failed (the kubelet's webhook cache). A token the API server
   refuses is 401 even with anonymous auth on, as the kubelet's union of
   authenticators stops at a failure. Tokens are never logged; the cache keys on
   their SHA-256.
3. Anything else is ``system:anonymous`` in ``system:unauthenticated`` when anonymous
   auth is on, and 401 when it is off.

**Authorization** is ``AlwaysAllow`` or ``Webhook``: a SubjectAccessReview for verb
(from the HTTP method: GET get, POST create, PUT update, PATCH patch, DELETE delete,
any other method an empty verb, as the kubelet; an exec upgrade keeps its method, so
the API server's POST is ``create``) on ``nodes/SUBRESOURCE`` named after the node,
API group ``""`` version ``v1``. The subresource comes from the path: ``/stats``
is ``stats``, ``/metrics`` is ``metrics``, ``/logs`` is ``log``, ``/spec`` is
``spec`` (each the path itself or below it), and every other path, ``/healthz``
included, is ``proxy``. Answers are kept five minutes when allowed and thirty
seconds when denied (the kubelet's webhook cache); a review that fails is not kept
and answers 500.

The refusals are the kubelet's plain text: ``Unauthorized`` (401),
``Forbidden (user=U, verb=V, resource=nodes, subresource=S)`` (403) and
``Authorization error (user=..., ...)`` (500).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Protocol

from aiohttp import web
from aiohttp.typedefs import Middleware
from kubernetes_asyncio import client as k8s
from kubernetes_asyncio.client.exceptions import ApiException

from minikubelet.clock import Clock, RealClock

log = logging.getLogger(__name__)

#: The kubelet's webhook caches (``--authentication-token-webhook-cache-ttl``,
#: ``--authorization-webhook-cache-authorized-ttl``/``-unauthorized-ttl``).
TOKEN_SUCCESS_TTL: Final = 120.0
TOKEN_FAILURE_TTL: Final = 10.0
AUTHZ_ALLOWED_TTL: Final = 300.0
AUTHZ_DENIED_TTL: Final = 30.0

ANONYMOUS_USER: Final = "system:anonymous"
UNAUTHENTICATED_GROUP: Final = "system:unauthenticated"
AUTHENTICATED_GROUP: Final = "system:authenticated"

_VERBS: Final = {
    "GET": "get",
    "POST": "create",
    "PUT": "update",
    "PATCH": "patch",
    "DELETE": "delete",
}
#: Path prefixes with their own subresource; everything else is ``proxy``.
_SUBRESOURCES: Final = (
    ("/stats/", "stats"),
    ("/metrics", "metrics"),
    ("/logs/", "log"),
    ("/spec/", "spec"),
)


@dataclass(frozen=True)
class UserInfo:
    name: str
    groups: tuple[str, ...] = ()
    uid: str = ""
    extra: tuple[tuple[str, tuple[str, ...]], ...] = ()

    def extra_dict(self) -> dict[str, list[str]]:
        return {key: list(values) for key, values in self.extra}


ANONYMOUS: Final = UserInfo(ANONYMOUS_USER, (UNAUTHENTICATED_GROUP,))

#: Where the authenticated user of a request is kept (``request[USER_KEY]``).
USER_KEY: Final = web.RequestKey("kubeletapi.user", UserInfo)


@dataclass(frozen=True)
class Attributes:
    """What a request asks of the node, as a SubjectAccessReview states it."""

    user: UserInfo
    verb: str
    name: str  # the node
    subresource: str
    path: str = field(default="", compare=False)  # not part of a resource review
    resource: str = "nodes"
    api_group: str = ""
    api_version: str = "v1"


def _is_subpath(path: str, prefix: str) -> bool:
    prefix = prefix.rstrip("/")
    return path == prefix or (path.startswith(prefix) and path[len(prefix)] == "/")


def subresource_for(path: str) -> str:
    """The node subresource a kubelet API path is authorized as."""
    for prefix, subresource in _SUBRESOURCES:
        if _is_subpath(path, prefix):
            return subresource
    return "proxy"


def verb_for(method: str) -> str:
    """The API verb of an HTTP method, as the kubelet maps it ("" for any other)."""
    return _VERBS.get(method.upper(), "")


def request_attributes(user: UserInfo, method: str, path: str, node_name: str) -> Attributes:
    return Attributes(
        user=user,
        verb=verb_for(method),
        name=node_name,
        subresource=subresource_for(path),
        path=path,
    )


def user_from_peercert(peercert: Mapping[str, Any] | None) -> UserInfo | None:
    """The user of a verified client certificate (:meth:`ssl.SSLSocket.getpeercert`):
    CN is the name, each O a group. ``None`` without a certificate or without a CN."""
    if not peercert:
        return None
    common_names: list[str] = []
    groups: list[str] = []
    for rdn in peercert.get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                common_names.append(str(value))
            elif key == "organizationName":
                groups.append(str(value))
    if not common_names or not common_names[0]:
        return None
    return UserInfo(common_names[0], tuple(groups))


def bearer_token(request: web.BaseRequest) -> str | None:
    """The token of an ``Authorization: Bearer TOKEN`` header, ``None`` without one."""
    header = request.headers.get("Authorization", "")
    parts = header.strip().split(" ")
    if len(parts) != 2 or parts[0].lower() != "bearer" or not parts[1]:
        return None
    return parts[1]


# -- authentication -------------------------------------------------------------------------


@dataclass(frozen=True)
class TokenReviewResult:
    authenticated: bool
    user: UserInfo | None = None
    error: str = ""


class TokenReviewer(Protocol):
    async def review_token(self, token: str) -> TokenReviewResult: ...


class ReviewFailed(Exception):
    """The API server could not be asked (its answer carries no token)."""


class ApiTokenReviewer:
    """TokenReview (``authentication.k8s.io/v1``) on the API server."""

    def __init__(self, api: k8s.ApiClient) -> None:
        self._api = k8s.AuthenticationV1Api(api)

    async def review_token(self, token: str) -> TokenReviewResult:
        body = k8s.V1TokenReview(
            api_version="authentication.k8s.io/v1",
            kind="TokenReview",
            spec=k8s.V1TokenReviewSpec(token=token),
        )
        try:
            review = await self._api.create_token_review(body)
        except ApiException as exc:  # its str() may hold bodies: keep status and reason only
            raise ReviewFailed(f"TokenReview failed: {exc.status} {exc.reason}") from None
        status = review.status
        if status is None or not status.authenticated or status.user is None:
            return TokenReviewResult(False, error=str(getattr(status, "error", "") or ""))
        user = status.user
        extra = tuple(sorted((k, tuple(v or ())) for k, v in (user.extra or {}).items()))
        return TokenReviewResult(
            True,
            UserInfo(
                str(user.username or ""), tuple(user.groups or ()), str(user.uid or ""), extra
            ),
        )


class CachedTokenAuthenticator:
    """Tokens through a :class:`TokenReviewer`, answers kept for a while (by SHA-256)."""

    def __init__(
        self,
        reviewer: TokenReviewer,
        *,
        clock: Clock | None = None,
        success_ttl: float = TOKEN_SUCCESS_TTL,
        failure_ttl: float = TOKEN_FAILURE_TTL,
    ) -> None:
        self._reviewer = reviewer
        self._clock = clock or RealClock()
        self._success_ttl = success_ttl
        self._failure_ttl = failure_ttl
        self._cache: dict[bytes, tuple[float, UserInfo | None]] = {}

    async def authenticate(self, token: str) -> UserInfo | None:
        """The token's user, or ``None`` when it is not good (or could not be reviewed)."""
        key = hashlib.sha256(token.encode()).digest()
        now = self._clock.monotonic()
        cached = self._cache.get(key)
        if cached is not None and cached[0] > now:
            return cached[1]
        try:
            result = await self._reviewer.review_token(token)
        except ReviewFailed as exc:
            log.warning("bearer token not reviewed: %s", exc)
            result = TokenReviewResult(False, error=str(exc))
        except Exception as exc:
            log.warning("bearer token not reviewed: %s", type(exc).__name__)
            result = TokenReviewResult(False, error=type(exc).__name__)
        user = result.user if result.authenticated else None
        ttl = self._success_ttl if user is not None else self._failure_ttl
        now = self._clock.monotonic()
        self._cache = {k: v for k, v in self._cache.items() if v[0] > now}
        self._cache[key] = (now + ttl, user)
        return user


class Unauthenticated(Exception):
    """The request is 401."""


class Authenticator:
    """The kubelet's union: x509, then bearer tokens, then (maybe) anonymous."""

    def __init__(
        self,
        *,
        x509: bool = True,
        tokens: CachedTokenAuthenticator | None = None,
        anonymous: bool = False,
    ) -> None:
        self.x509 = x509
        self.tokens = tokens
        self.anonymous = anonymous

    async def authenticate(self, request: web.BaseRequest) -> UserInfo:
        if self.x509 and request.transport is not None:
            user = user_from_peercert(request.transport.get_extra_info("peercert"))
            if user is not None:
                return user
        if self.tokens is not None:
            token = bearer_token(request)
            if token is not None:
                user = await self.tokens.authenticate(token)
                if user is None:
                    raise Unauthenticated("invalid bearer token")
                return user
        if self.anonymous:
            return ANONYMOUS
        raise Unauthenticated("no credentials")


# -- authorization --------------------------------------------------------------------------


@dataclass(frozen=True)
class Decision:
    allowed: bool
    reason: str = ""


class AuthorizationError(Exception):
    """The authorizer could not decide: the request is 500."""


class Authorizer(Protocol):
    async def authorize(self, attrs: Attributes) -> Decision: ...


class AlwaysAllow:
    async def authorize(self, attrs: Attributes) -> Decision:
        return Decision(True)


class AccessReviewer(Protocol):
    async def review_access(self, attrs: Attributes) -> Decision: ...


class ApiAccessReviewer:
    """SubjectAccessReview (``authorization.k8s.io/v1``) on the API server."""

    def __init__(self, api: k8s.ApiClient) -> None:
        self._api = k8s.AuthorizationV1Api(api)

    async def review_access(self, attrs: Attributes) -> Decision:
        user = attrs.user
        body = k8s.V1SubjectAccessReview(
            api_version="authorization.k8s.io/v1",
            kind="SubjectAccessReview",
            spec=k8s.V1SubjectAccessReviewSpec(
                user=user.name,
                groups=list(user.groups),
                uid=user.uid or None,
                extra=user.extra_dict() or None,
                resource_attributes=k8s.V1ResourceAttributes(
                    namespace="",
                    verb=attrs.verb,
                    group=attrs.api_group,
                    version=attrs.api_version,
                    resource=attrs.resource,
                    subresource=attrs.subresource,
                    name=attrs.name,
                ),
            ),
        )
        try:
            review = await self._api.create_subject_access_review(body)
        except ApiException as exc:
            raise AuthorizationError(
                f"SubjectAccessReview failed: {exc.status} {exc.reason}"
            ) from None
        status = review.status
        if status is None:
            raise AuthorizationError("SubjectAccessReview answered without a status")
        if status.evaluation_error and not status.allowed and not status.denied:
            log.info("SubjectAccessReview evaluation error: %s", status.evaluation_error)
        return Decision(bool(status.allowed) and not status.denied, str(status.reason or ""))


class WebhookAuthorizer:
    """Decisions through an :class:`AccessReviewer`, kept for a while."""

    def __init__(
        self,
        reviewer: AccessReviewer,
        *,
        clock: Clock | None = None,
        allowed_ttl: float = AUTHZ_ALLOWED_TTL,
        denied_ttl: float = AUTHZ_DENIED_TTL,
    ) -> None:
        self._reviewer = reviewer
        self._clock = clock or RealClock()
        self._allowed_ttl = allowed_ttl
        self._denied_ttl = denied_ttl
        self._cache: dict[Attributes, tuple[float, Decision]] = {}

    async def authorize(self, attrs: Attributes) -> Decision:
        now = self._clock.monotonic()
        cached = self._cache.get(attrs)
        if cached is not None and cached[0] > now:
            return cached[1]
        try:
            decision = await self._reviewer.review_access(attrs)
        except AuthorizationError:
            raise
        except Exception as exc:
            raise AuthorizationError(f"{type(exc).__name__}: {exc}") from exc
        ttl = self._allowed_ttl if decision.allowed else self._denied_ttl
        now = self._clock.monotonic()
        self._cache = {k: v for k, v in self._cache.items() if v[0] > now}
        self._cache[attrs] = (now + ttl, decision)
        return decision


# -- the middleware -------------------------------------------------------------------------


def _text(status: int, message: str) -> web.Response:
    return web.Response(status=status, text=message, content_type="text/plain")


def _describe(attrs: Attributes) -> str:
    return (
        f"user={attrs.user.name}, verb={attrs.verb}, resource={attrs.resource}, "
        f"subresource={attrs.subresource}"
    )


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def auth_middleware(
    authenticator: Authenticator, authorizer: Authorizer, node_name: str
) -> Middleware:
    """An aiohttp middleware that authenticates, then authorizes, every request, and
    leaves the user in ``request[USER_KEY]`` for the handler."""

    @web.middleware
    async def kubelet_auth(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            user = await authenticator.authenticate(request)
        except Unauthenticated as exc:
            log.debug("%s %s: unauthorized (%s)", request.method, request.path, exc)
            return _text(401, "Unauthorized")
        attrs = request_attributes(user, request.method, request.path, node_name)
        try:
            decision = await authorizer.authorize(attrs)
        except AuthorizationError as exc:
            log.error("authorization error (%s): %s", _describe(attrs), exc)
            return _text(500, f"Authorization error ({_describe(attrs)})")
        if not decision.allowed:
            log.info("forbidden (%s): %s", _describe(attrs), decision.reason)
            return _text(403, f"Forbidden ({_describe(attrs)})")
        request[USER_KEY] = user
        return await handler(request)

    return kubelet_auth


def build_auth(
    node_name: str,
    *,
    api: k8s.ApiClient | None,
    x509: bool = True,
    token_webhook: bool = True,
    anonymous: bool = False,
    authorization_mode: str = "Webhook",
    clock: Clock | None = None,
) -> Middleware:
    """The middleware as the kubelet's flags describe it (``--anonymous-auth``,
    ``--authentication-token-webhook``, ``--authorization-mode``); ``api`` is the node's
    API connection, needed by the token webhook and the Webhook mode."""
    tokens = None
    if token_webhook:
        if api is None:
            raise ValueError("bearer token authentication needs the API server")
        tokens = CachedTokenAuthenticator(ApiTokenReviewer(api), clock=clock)
    authorizer: Authorizer
    if authorization_mode == "AlwaysAllow":
        authorizer = AlwaysAllow()
    elif authorization_mode == "Webhook":
        if api is None:
            raise ValueError("--authorization-mode=Webhook needs the API server")
        authorizer = WebhookAuthorizer(ApiAccessReviewer(api), clock=clock)
    else:
        raise ValueError(f"unknown authorization mode {authorization_mode!r}")
    return auth_middleware(
        Authenticator(x509=x509, tokens=tokens, anonymous=anonymous), authorizer, node_name
    )


__all__: Sequence[str] = (
    "ANONYMOUS",
    "AUTHZ_ALLOWED_TTL",
    "AUTHZ_DENIED_TTL",
    "TOKEN_FAILURE_TTL",
    "TOKEN_SUCCESS_TTL",
    "USER_KEY",
    "AccessReviewer",
    "AlwaysAllow",
    "ApiAccessReviewer",
    "ApiTokenReviewer",
    "Attributes",
    "Authenticator",
    "AuthorizationError",
    "Authorizer",
    "CachedTokenAuthenticator",
    "Decision",
    "ReviewFailed",
    "TokenReviewResult",
    "TokenReviewer",
    "Unauthenticated",
    "UserInfo",
    "WebhookAuthorizer",
    "auth_middleware",
    "bearer_token",
    "build_auth",
    "request_attributes",
    "subresource_for",
    "user_from_peercert",
    "verb_for",
)
