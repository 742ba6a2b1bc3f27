"""The kubelet API's authentication and authorization (minikubelet/server/kubeletapi/auth.py),
with fake TokenReview and SubjectAccessReview clients and virtual time."""

from __future__ import annotations

import logging
from typing import Any
from unittest import mock

import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from minikubelet.clock import ManualClock
from minikubelet.server.kubeletapi.auth import (
    ANONYMOUS,
    USER_KEY,
    AlwaysAllow,
    Attributes,
    Authenticator,
    AuthorizationError,
    CachedTokenAuthenticator,
    Decision,
    ReviewFailed,
    TokenReviewResult,
    Unauthenticated,
    UserInfo,
    WebhookAuthorizer,
    auth_middleware,
    bearer_token,
    request_attributes,
    subresource_for,
    user_from_peercert,
    verb_for,
)

NODE = "node-a"
SECRET = "eyJhbGciOiJSUzI1NiJ9.very-secret-token-value"


class FakeTokens:
    def __init__(self, users: dict[str, UserInfo] | None = None) -> None:
        self.users = users or {}
        self.calls: list[str] = []
        self.fail: Exception | None = None

    async def review_token(self, token: str) -> TokenReviewResult:
        self.calls.append(token)
        if self.fail is not None:
            raise self.fail
        user = self.users.get(token)
        return TokenReviewResult(user is not None, user, "" if user else "invalid")


class FakeAccess:
    def __init__(self, allowed: set[tuple[str, str, str]] | None = None) -> None:
        self.allowed = allowed or set()  # (user, verb, subresource)
        self.calls: list[Attributes] = []
        self.fail: Exception | None = None

    async def review_access(self, attrs: Attributes) -> Decision:
        self.calls.append(attrs)
        if self.fail is not None:
            raise self.fail
        return Decision((attrs.user.name, attrs.verb, attrs.subresource) in self.allowed)


def _request(
    method: str = "GET",
    path: str = "/pods",
    *,
    token: str | None = None,
    peercert: dict[str, Any] | None = None,
) -> web.Request:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    transport = mock.Mock()
    transport.get_extra_info.side_effect = lambda name, default=None: (
        peercert if name == "peercert" else default
    )
    return make_mocked_request(method, path, headers=headers, transport=transport)


def _cert(cn: str, *orgs: str) -> dict[str, Any]:
    subject: list[tuple[tuple[str, str], ...]] = [(("organizationName", o),) for o in orgs]
    subject.append((("commonName", cn),))
    return {"subject": tuple(subject)}


# -- the path and verb tables ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "subresource"),
    [
        ("/stats/summary", "stats"),
        ("/stats", "stats"),
        ("/stats/", "stats"),
        ("/statsfoo", "proxy"),
        ("/metrics", "metrics"),
        ("/metrics/cadvisor", "metrics"),
        ("/metrics/resource", "metrics"),
        ("/metrics/probes", "metrics"),
        ("/metricsx", "proxy"),
        ("/logs/", "log"),
        ("/logs/syslog", "log"),
        ("/logs", "log"),
        ("/spec/", "spec"),
        ("/spec", "spec"),
        ("/pods", "proxy"),
        ("/runningpods/", "proxy"),
        ("/run/ns/pod/c", "proxy"),
        ("/exec/ns/pod/c", "proxy"),
        ("/attach/ns/pod/c", "proxy"),
        ("/portForward/ns/pod", "proxy"),
        ("/containerLogs/ns/pod/c", "proxy"),
        ("/configz", "proxy"),
        ("/healthz", "proxy"),
        ("/", "proxy"),
    ],
)
def test_path_to_subresource(path: str, subresource: str) -> None:
    assert subresource_for(path) == subresource


@pytest.mark.parametrize(
    ("method", "verb"),
    [
        ("GET", "get"),
        ("POST", "create"),
        ("PUT", "update"),
        ("PATCH", "patch"),
        ("DELETE", "delete"),
        ("HEAD", ""),
        ("OPTIONS", ""),
    ],
)
def test_method_to_verb(method: str, verb: str) -> None:
    assert verb_for(method) == verb


def test_attributes_name_the_node() -> None:
    user = UserInfo("alice", ("devs",))
    attrs = request_attributes(user, "POST", "/exec/default/p/c", NODE)
    assert (attrs.resource, attrs.api_group, attrs.api_version) == ("nodes", "", "v1")
    assert (attrs.verb, attrs.subresource, attrs.name, attrs.user) == (
        "create",
        "proxy",
        NODE,
        user,
    )


# -- credentials ----------------------------------------------------------------------------


def test_certificate_cn_is_the_user_and_o_the_groups() -> None:
    got = user_from_peercert(_cert("kube-apiserver-kubelet-client", "system:masters", "ops"))
    assert got == UserInfo("kube-apiserver-kubelet-client", ("system:masters", "ops"))
    assert user_from_peercert(None) is None
    assert user_from_peercert({}) is None  # presented but not verified
    assert user_from_peercert({"subject": ((("organizationName", "x"),),)}) is None


@pytest.mark.parametrize(
    ("header", "token"),
    [
        ("Bearer abc", "abc"),
        ("bearer abc", "abc"),
        ("Bearer ", None),
        ("Basic abc", None),
        ("Bearer a b", None),
        ("", None),
    ],
)
def test_bearer_header(header: str, token: str | None) -> None:
    request = make_mocked_request("GET", "/", headers={"Authorization": header} if header else {})
    assert bearer_token(request) == token


async def test_certificate_wins_over_a_token() -> None:
    tokens = FakeTokens()
    authn = Authenticator(tokens=CachedTokenAuthenticator(tokens, clock=ManualClock()))
    user = await authn.authenticate(_request(token="t", peercert=_cert("admin", "system:masters")))
    assert user == UserInfo("admin", ("system:masters",))
    assert tokens.calls == []


async def test_anonymous_off_is_unauthenticated_and_on_is_system_anonymous() -> None:
    with pytest.raises(Unauthenticated):
        await Authenticator(anonymous=False).authenticate(_request())
    user = await Authenticator(anonymous=True).authenticate(_request())
    assert user == ANONYMOUS
    assert (user.name, user.groups) == ("system:anonymous", ("system:unauthenticated",))


async def test_a_refused_token_is_not_anonymous() -> None:
    tokens = CachedTokenAuthenticator(FakeTokens(), clock=ManualClock())
    authn = Authenticator(tokens=tokens, anonymous=True)
    with pytest.raises(Unauthenticated):
        await authn.authenticate(_request(token="bad"))


async def test_without_token_webhook_a_token_is_anonymous_or_401() -> None:
    assert await Authenticator(anonymous=True).authenticate(_request(token="t")) == ANONYMOUS
    with pytest.raises(Unauthenticated):
        await Authenticator(anonymous=False).authenticate(_request(token="t"))


# -- caches ---------------------------------------------------------------------------------


async def test_token_answers_are_kept_two_minutes_when_good_ten_seconds_when_not() -> None:
    clock = ManualClock()
    alice = UserInfo("alice", ("system:authenticated",))
    fake = FakeTokens({"good": alice})
    tokens = CachedTokenAuthenticator(fake, clock=clock)

    assert await tokens.authenticate("good") == alice
    assert await tokens.authenticate("bad") is None
    assert fake.calls == ["good", "bad"]

    await clock.advance(9)
    assert await tokens.authenticate("good") == alice
    assert await tokens.authenticate("bad") is None
    assert fake.calls == ["good", "bad"]

    await clock.advance(2)  # 11 s: the refusal is asked again, the user is still kept
    fake.users["bad"] = UserInfo("bob")
    assert await tokens.authenticate("bad") == UserInfo("bob")
    assert await tokens.authenticate("good") == alice
    assert fake.calls == ["good", "bad", "bad"]

    await clock.advance(110)  # 121 s since the first review
    del fake.users["good"]
    assert await tokens.authenticate("good") is None
    assert fake.calls == ["good", "bad", "bad", "good"]


async def test_a_failed_token_review_is_kept_ten_seconds() -> None:
    clock = ManualClock()
    fake = FakeTokens({"t": UserInfo("alice")})
    fake.fail = ReviewFailed("TokenReview failed: 503 Service Unavailable")
    tokens = CachedTokenAuthenticator(fake, clock=clock)
    assert await tokens.authenticate("t") is None
    fake.fail = None
    assert await tokens.authenticate("t") is None
    await clock.advance(10.5)
    assert await tokens.authenticate("t") == UserInfo("alice")
    assert len(fake.calls) == 2


async def test_decisions_are_kept_five_minutes_when_allowed_thirty_seconds_when_denied() -> None:
    clock = ManualClock()
    fake = FakeAccess({("alice", "get", "log")})
    authz = WebhookAuthorizer(fake, clock=clock)
    alice = UserInfo("alice")
    logs = request_attributes(alice, "GET", "/logs/syslog", NODE)
    other_logs = request_attributes(alice, "GET", "/logs/messages", NODE)  # same review
    execs = request_attributes(alice, "POST", "/exec/ns/p/c", NODE)

    assert (await authz.authorize(logs)).allowed
    assert (await authz.authorize(other_logs)).allowed
    assert not (await authz.authorize(execs)).allowed
    assert len(fake.calls) == 2

    fake.allowed = {("alice", "create", "proxy")}  # RBAC changes: exec granted, logs taken
    await clock.advance(29)
    assert not (await authz.authorize(execs)).allowed
    await clock.advance(2)
    assert (await authz.authorize(execs)).allowed
    assert (await authz.authorize(logs)).allowed  # still kept
    assert len(fake.calls) == 3
    await clock.advance(270)  # 301 s since logs were allowed
    assert not (await authz.authorize(logs)).allowed
    assert len(fake.calls) == 4


async def test_a_failed_access_review_is_an_error_and_not_kept() -> None:
    fake = FakeAccess({("alice", "get", "proxy")})
    fake.fail = RuntimeError("connection refused")
    authz = WebhookAuthorizer(fake, clock=ManualClock())
    attrs = request_attributes(UserInfo("alice"), "GET", "/pods", NODE)
    with pytest.raises(AuthorizationError):
        await authz.authorize(attrs)
    fake.fail = None
    assert (await authz.authorize(attrs)).allowed


# -- the middleware -------------------------------------------------------------------------


async def _ok(request: web.Request) -> web.StreamResponse:
    return web.Response(text=f"hello {request[USER_KEY].name}")


def _middleware(
    *, anonymous: bool = False, access: FakeAccess | None = None, tokens: FakeTokens | None = None
) -> Any:
    clock = ManualClock()
    authn = Authenticator(
        tokens=CachedTokenAuthenticator(tokens or FakeTokens(), clock=clock), anonymous=anonymous
    )
    authz = AlwaysAllow() if access is None else WebhookAuthorizer(access, clock=clock)
    return auth_middleware(authn, authz, NODE)


async def test_middleware_401_without_credentials() -> None:
    response = await _middleware()(_request(), _ok)
    assert (response.status, response.text, response.content_type) == (
        401,
        "Unauthorized",
        "text/plain",
    )


async def test_middleware_anonymous_is_authorized_as_system_anonymous() -> None:
    access = FakeAccess({("system:anonymous", "get", "proxy")})
    response = await _middleware(anonymous=True, access=access)(_request(path="/healthz"), _ok)
    assert (response.status, response.text) == (200, "hello system:anonymous")
    assert access.calls[0].user.groups == ("system:unauthenticated",)


async def test_middleware_403_names_user_verb_and_subresource() -> None:
    alice = UserInfo("alice", ("system:authenticated",))
    access = FakeAccess({("alice", "get", "log")})
    mw = _middleware(access=access, tokens=FakeTokens({SECRET: alice}))
    allowed = await mw(_request(path="/logs/syslog", token=SECRET), _ok)
    assert (allowed.status, allowed.text) == (200, "hello alice")
    denied = await mw(_request("POST", "/exec/ns/p/c", token=SECRET), _ok)
    assert (denied.status, denied.text) == (
        403,
        "Forbidden (user=alice, verb=create, resource=nodes, subresource=proxy)",
    )


async def test_middleware_500_when_authorization_fails() -> None:
    access = FakeAccess()
    access.fail = AuthorizationError("SubjectAccessReview failed: 500 Internal Server Error")
    response = await _middleware(access=access)(
        _request(path="/stats/summary", peercert=_cert("admin", "system:masters")), _ok
    )
    assert (response.status, response.text) == (
        500,
        "Authorization error (user=admin, verb=get, resource=nodes, subresource=stats)",
    )


async def test_the_token_is_never_logged(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    alice = UserInfo("alice")
    tokens = FakeTokens({SECRET: alice})
    mw = _middleware(access=FakeAccess(), tokens=tokens)
    await mw(_request(path="/pods", token=SECRET), _ok)  # 403
    await mw(_request(path="/pods", token=SECRET + "x"), _ok)  # 401
    tokens.fail = ReviewFailed("TokenReview failed: 503 Service Unavailable")
    await mw(_request(path="/pods", token=SECRET + "y"), _ok)  # review failed
    tokens.fail = RuntimeError(f"something echoing {SECRET}z")
    await mw(_request(path="/pods", token=SECRET + "z"), _ok)
    assert caplog.records  # something was logged...
    assert "very-secret" not in caplog.text  # ...but never the token
