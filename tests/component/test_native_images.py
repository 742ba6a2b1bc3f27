"""The native runtime's image half against a real registry (and a tiny fake one).

Images are built locally from busybox-static and pushed with skopeo to the
harness's ``docker-registry`` on 127.0.0.1. What that registry cannot be made to
do (answer with tampered bytes, serve hostile layers, demand a Bearer token) a
small aiohttp registry in this file does, also on 127.0.0.1. Requests are
counted with aiohttp's trace hooks on the client, so "no second download" is
observed, not assumed. Needs root (overlay mounts, whiteout device nodes).
"""

from __future__ import annotations

import asyncio
import base64
import gzip
import hashlib
import io
import json
import os
import secrets
import stat
import tarfile
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import pytest
import zstandard
from aiohttp import web

from minikubelet.errors import (
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    Unavailable,
)
from minikubelet.reference import parse
from runtimes.native.images import NativeImages, RegistryConfig
from runtimes.native.images.hosts import HostConfig
from runtimes.native.images.layers import OPAQUE_XATTR, LayerError, unpack_layer
from runtimes.native.images.manifest import (
    Descriptor,
    Index,
    Platform,
    host_platform,
    image_user,
    select_platform,
)
from runtimes.native.images.registry import ContentMismatch, RegistryClient
from runtimes.native.oci.user import resolve_user
from tests.harness.fixtures import BUSYBOX_TAG, HarnessImages
from tests.harness.images import (
    build_busybox_image,
    build_index_image,
    build_user_image,
    build_whiteout_image,
    push_image,
)
from tests.harness.registry import LocalRegistry, free_port

# -- fixtures ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Pushed:
    """References of the images this module pushes next to the harness's busybox."""

    host: str
    busybox: str
    busybox_digest: str
    whiteout: str
    user: str
    index: str
    index_digest: str


@pytest.fixture(scope="module")
def pushed(
    local_registry: LocalRegistry,
    test_images: HarnessImages,
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
) -> Pushed:
    if os.geteuid() != 0:
        pytest.fail("the native image tests need root (overlay, whiteouts)", pytrace=False)
    cache = getattr(request.config, "cache", None)
    cache_dir = (
        cache.mkdir("minikubelet-test-images")
        if cache is not None
        else tmp_path_factory.mktemp("images")
    )
    busybox = build_busybox_image(cache_dir, tag=BUSYBOX_TAG)  # the one test_images pushed
    assert busybox.manifest_digest == test_images.busybox_digest
    host = local_registry.host
    index = build_index_image(cache_dir, busybox)
    return Pushed(
        host=host,
        busybox=test_images.busybox,
        busybox_digest=test_images.busybox_digest,
        whiteout=push_image(build_whiteout_image(cache_dir, busybox), host, "native/whiteout"),
        user=push_image(build_user_image(cache_dir, busybox), host, "native/user"),
        index=push_image(index, host, "native/multi", all_images=True),
        index_digest=index.manifest_digest,
    )


class RequestLog:
    """Every HTTP request the registry client starts: (method, url)."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, str]] = []
        self.trace = aiohttp.TraceConfig()
        self.trace.on_request_start.append(self._start)

    async def _start(
        self,
        session: aiohttp.ClientSession,
        context: object,
        params: aiohttp.TraceRequestStartParams,
    ) -> None:
        self.requests.append((params.method, str(params.url)))

    def paths(self, kind: str) -> list[str]:
        """URL paths containing ``/<kind>/`` (``blobs``, ``manifests``)."""
        return [url.split("/v2/", 1)[1] for _, url in self.requests if f"/{kind}/" in url]

    def clear(self) -> None:
        self.requests.clear()


@dataclass
class Store:
    root: Path
    log: RequestLog
    make: Callable[..., NativeImages]
    images: NativeImages


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    """A NativeImages on a fresh root; ``make()`` opens more on the same root (a restart)."""
    root = tmp_path / "images"
    log = RequestLog()
    made: list[tuple[NativeImages, RegistryClient]] = []

    def make(config: RegistryConfig | None = None, **kwargs: object) -> NativeImages:
        client = RegistryClient(config or RegistryConfig(), trace_configs=[log.trace])
        images = NativeImages(root, client=client, **kwargs)  # type: ignore[arg-type]
        made.append((images, client))
        return images

    try:
        yield Store(root, log, make, make())
    finally:
        for images, client in made:
            await images.close()
            await client.close()


def _files(root: Path, sub: str) -> list[str]:
    path = root / sub
    return sorted(p.name for p in path.iterdir()) if path.is_dir() else []


def _nothing_stored(root: Path, *, but: tuple[bytes, ...] = ()) -> None:
    """No image, nothing half-done; only the layers ``but`` (complete, for a retry) may stay."""
    allowed = {hashlib.sha256(t).hexdigest() for t in but}
    assert set(_files(root, "layers")) <= allowed
    assert _files(root, "tmp") == []
    meta = root / "images.json"
    assert not meta.exists() or json.loads(meta.read_text())["images"] == {}


# -- a tiny registry for what docker-registry will not do ------------------------------


def _sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _tar(build: Callable[[tarfile.TarFile], None]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        build(tar)
    return buf.getvalue()


def _add(
    tar: tarfile.TarFile,
    name: str,
    kind: bytes = tarfile.REGTYPE,
    data: bytes = b"",
    linkname: str = "",
    mode: int = 0o644,
    **attrs: int,
) -> None:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.mode = mode
    info.linkname = linkname
    info.mtime = attrs.pop("mtime", 1_000_000)
    for key, value in attrs.items():
        setattr(info, key, value)
    if kind == tarfile.REGTYPE:
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    else:
        tar.addfile(info)


@dataclass
class TinyImage:
    manifest: bytes
    config_digest: str
    layer_digests: list[str]
    blobs: dict[str, bytes]

    @property
    def digest(self) -> str:
        return _sha(self.manifest)


def tiny_image(*layers: bytes, user: str = "") -> TinyImage:
    blobs: dict[str, bytes] = {}
    descs = []
    for tar_bytes in layers:
        blob = gzip.compress(tar_bytes, mtime=0)
        blobs[_sha(blob)] = blob
        descs.append(
            {
                "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                "digest": _sha(blob),
                "size": len(blob),
            }
        )
    config = json.dumps(
        {
            "architecture": host_platform().architecture,
            "os": "linux",
            "config": {"User": user, "Cmd": ["/bin/true"]},
            "rootfs": {"type": "layers", "diff_ids": [_sha(t) for t in layers]},
        }
    ).encode()
    blobs[_sha(config)] = config
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": _sha(config),
                "size": len(config),
            },
            "layers": descs,
        }
    ).encode()
    return TinyImage(manifest, _sha(config), [str(d["digest"]) for d in descs], blobs)


@dataclass
class TinyRegistry:
    """An OCI registry in a few routes: in-memory images, optional auth, tampering."""

    auth: str = ""  # "", "bearer" or "basic"
    username: str = "puller"
    password: str = "s3cret"
    refresh_token: str = "refresh-me"
    token: str = field(default_factory=lambda: "tok-" + secrets.token_hex(8))
    manifests: dict[tuple[str, str], bytes] = field(default_factory=dict)
    blobs: dict[str, bytes] = field(default_factory=dict)
    tampered: dict[str, bytes] = field(default_factory=dict)  # digest -> bytes served instead
    token_requests: list[str] = field(default_factory=list)  # "GET" / "POST"
    port: int = 0

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def add(self, repo: str, tag: str, image: TinyImage) -> str:
        self.manifests[(repo, tag)] = image.manifest
        self.manifests[(repo, image.digest)] = image.manifest
        self.blobs.update(image.blobs)
        return f"{self.host}/{repo}:{tag}"

    def _basic(self) -> str:
        return "Basic " + base64.b64encode(f"{self.username}:{self.password}".encode()).decode()

    def _denied(self, request: web.Request, repo: str) -> web.Response | None:
        given = request.headers.get("Authorization", "")
        if self.auth == "bearer" and given != f"Bearer {self.token}":
            challenge = (
                f'Bearer realm="http://{self.host}/token",service="tiny",'
                f'scope="repository:{repo}:pull"'
            )
            return web.json_response(
                {"errors": [{"code": "UNAUTHORIZED", "message": "authentication required"}]},
                status=401,
                headers={"WWW-Authenticate": challenge},
            )
        if self.auth == "basic" and given != self._basic():
            return web.Response(status=401, headers={"WWW-Authenticate": 'Basic realm="tiny"'})
        return None

    async def _manifest(self, request: web.Request) -> web.StreamResponse:
        repo, ref = request.match_info["name"], request.match_info["ref"]
        denied = self._denied(request, repo)
        if denied is not None:
            return denied
        body = self.manifests.get((repo, ref))
        if body is None:
            return web.json_response(
                {"errors": [{"code": "MANIFEST_UNKNOWN", "message": "manifest unknown"}]},
                status=404,
            )
        media = json.loads(body)["mediaType"]
        return web.Response(body=body, headers={"Content-Type": media})

    async def _blob(self, request: web.Request) -> web.StreamResponse:
        repo, digest = request.match_info["name"], request.match_info["digest"]
        denied = self._denied(request, repo)
        if denied is not None:
            return denied
        body = self.tampered.get(digest, self.blobs.get(digest))
        if body is None:
            return web.json_response({"errors": [{"code": "BLOB_UNKNOWN"}]}, status=404)
        return web.Response(body=body, content_type="application/octet-stream")

    async def _token(self, request: web.Request) -> web.StreamResponse:
        self.token_requests.append(request.method)
        if request.method == "POST":
            form = await request.post()
            if form.get("grant_type") == "refresh_token" and (
                form.get("refresh_token") == self.refresh_token
            ):
                return web.json_response({"access_token": self.token, "expires_in": 300})
            return web.Response(status=401)
        if request.headers.get("Authorization") != self._basic():
            return web.Response(status=401)
        assert request.query.get("scope", "").startswith("repository:")
        return web.json_response({"token": self.token})

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get(r"/v2/{name:.+}/manifests/{ref}", self._manifest)
        app.router.add_get(r"/v2/{name:.+}/blobs/{digest}", self._blob)
        app.router.add_route("*", "/token", self._token)
        return app


@pytest.fixture
async def tiny() -> AsyncIterator[TinyRegistry]:
    registry = TinyRegistry()
    runner = web.AppRunner(registry.app(), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    server = site._server
    assert isinstance(server, asyncio.Server)
    registry.port = server.sockets[0].getsockname()[1]
    try:
        yield registry
    finally:
        await runner.cleanup()


async def _run(*cmd: str) -> None:
    proc = await asyncio.create_subprocess_exec(
        *cmd, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    out, _ = await proc.communicate()
    assert proc.returncode == 0, f"{cmd}: {out.decode()}"


# -- pulling from the real registry --------------------------------------------------------


async def test_pull_by_tag(store: Store, pushed: Pushed) -> None:
    images = store.images
    image_id = await images.pull_image(pushed.busybox, {})
    assert image_id.startswith("sha256:")
    status = await images.image_status(pushed.busybox)
    assert status is not None and status.id == image_id
    repo = parse(pushed.busybox).repository
    assert status.repo_tags == (str(parse(pushed.busybox)),)
    assert status.repo_digests == (f"{repo}@{pushed.busybox_digest}",)
    assert status.size > 1_000_000  # busybox, compressed
    assert status.uid is None and status.username == ""  # no USER: as containerd reports it
    assert [i.id for i in await images.list_images("")] == [image_id]
    assert await images.image_status(image_id) == status  # by ID, and by a short one
    assert await images.image_status(image_id[7:19]) == status

    config = await images.image_config(image_id)
    assert config.cmd == ("sh",)
    assert any(e.startswith("PATH=") for e in config.env)
    [layer] = await images.layer_dirs(pushed.busybox)
    busybox = layer / "bin" / "busybox"
    assert busybox.is_file() and os.access(busybox, os.X_OK)
    assert os.readlink(layer / "bin" / "sh") == "/bin/busybox"
    assert stat.S_IMODE((layer / "tmp").stat().st_mode) == 0o1777
    assert (layer / "etc" / "passwd").stat().st_mtime == 0  # the tar's mtime

    [fs] = await images.image_fs_info()
    assert fs.mountpoint == str(store.root)
    assert fs.used_bytes >= busybox.stat().st_size and fs.inodes_used > 100
    # the compressed layer was dropped once unpacked; manifest and config are kept
    assert len(_files(store.root, "blobs/sha256")) == 2
    assert _files(store.root, "tmp") == []


async def test_pull_by_digest(store: Store, pushed: Pushed) -> None:
    repo = parse(pushed.busybox).repository
    by_digest = f"{repo}@{pushed.busybox_digest}"
    image_id = await store.images.pull_image(by_digest, {})
    status = await store.images.image_status(by_digest)
    assert status is not None and status.id == image_id
    assert status.repo_tags == () and status.repo_digests == (by_digest,)
    assert await store.images.image_status(pushed.busybox) is None  # the tag was never pulled
    # the tag now resolves to the same image
    assert await store.images.pull_image(pushed.busybox, {}) == image_id


async def test_pulling_twice_downloads_nothing_again(store: Store, pushed: Pushed) -> None:
    image_id = await store.images.pull_image(pushed.whiteout, {})
    assert len(store.log.paths("blobs")) == 4  # config and three layers
    store.log.clear()
    assert await store.images.pull_image(pushed.whiteout, {}) == image_id
    assert store.log.paths("blobs") == []
    assert store.log.paths("manifests") == ["native/whiteout/manifests/1"]  # a tag may move
    # by digest, once the manifest is here, not even that
    store.log.clear()
    repo = parse(pushed.whiteout).repository
    [digest_ref] = (await store.images.image_status(image_id) or pytest.fail()).repo_digests
    assert digest_ref.startswith(repo + "@")
    assert await store.images.pull_image(digest_ref, {}) == image_id
    assert store.log.requests == []


async def test_concurrent_pulls_fetch_each_blob_once(store: Store, pushed: Pushed) -> None:
    ids = await asyncio.gather(
        store.images.pull_image(pushed.whiteout, {}),
        store.images.pull_image(pushed.busybox, {}),
        store.images.pull_image(pushed.whiteout, {}),
        store.images.pull_image(pushed.user, {}),
    )
    assert ids[0] == ids[2] and len(set(ids)) == 3
    digests = [p.rsplit("/", 1)[1] for p in store.log.paths("blobs")]
    assert len(digests) == len(set(digests)), "a blob was fetched twice"
    # the busybox layer is shared by all three images and unpacked once
    assert len(_files(store.root, "layers")) == 1 + 2 + 1


async def test_image_index_picks_this_platform(store: Store, pushed: Pushed) -> None:
    image_id = await store.images.pull_image(pushed.index, {})
    busybox_id = await store.images.pull_image(pushed.busybox, {})
    assert image_id == busybox_id  # the amd64/arm64 entry is the busybox manifest
    status = await store.images.image_status(pushed.index)
    assert status is not None
    repo = parse(pushed.index).repository
    assert f"{repo}@{pushed.index_digest}" in status.repo_digests  # the digest the tag names
    fetched = store.log.paths("manifests")
    assert fetched[:2] == [
        "native/multi/manifests/multi",
        f"native/multi/manifests/{pushed.busybox_digest}",
    ]
    config = await store.images.image_config(image_id)
    assert config.architecture == host_platform().architecture


async def test_whiteouts_and_opaque_dirs_stack_under_overlay(
    store: Store, pushed: Pushed, tmp_path: Path
) -> None:
    await store.images.pull_image(pushed.busybox, {})
    image_id = await store.images.pull_image(pushed.whiteout, {})
    layers = await store.images.layer_dirs(image_id)
    assert layers[0] == (await store.images.layer_dirs(pushed.busybox))[0]  # shared
    _, added, removed = layers
    assert (added / "etc" / "a").read_text() == "a\n"  # the zstd layer
    whiteout = (removed / "etc" / "a").lstat()  # the uncompressed one
    assert stat.S_ISCHR(whiteout.st_mode) and whiteout.st_rdev == 0
    assert os.getxattr(removed / "data", OPAQUE_XATTR) == b"y"
    assert not (removed / "data" / ".wh..wh..opq").exists()

    merged = tmp_path / "merged"
    merged.mkdir()
    lower = ":".join(str(p) for p in reversed(layers))  # overlay wants the top first
    await _run("mount", "-t", "overlay", "overlay", "-o", f"lowerdir={lower}", str(merged))
    try:
        assert not (merged / "etc" / "a").exists()
        assert (merged / "etc" / "passwd").is_file()
        assert sorted(os.listdir(merged / "data")) == ["y"]
        assert (merged / "bin" / "busybox").is_file()
        assert (merged / "data" / "y").read_text() == "y\n"
    finally:
        await _run("umount", str(merged))


async def test_non_root_user(store: Store, pushed: Pushed) -> None:
    image_id = await store.images.pull_image(pushed.user, {})
    status = await store.images.image_status(image_id)
    assert status is not None
    assert (status.uid, status.username) == (None, "app")  # a name, as containerd reports it
    config = await store.images.image_config(image_id)
    assert (config.user, config.working_dir) == ("app", "/home/app")
    layers = await store.images.layer_dirs(image_id)
    home = (layers[-1] / "home" / "app").stat()
    assert (home.st_uid, home.st_gid, stat.S_IMODE(home.st_mode)) == (1000, 1000, 0o750)
    # what the container half does with it (it reads these from the mounted rootfs)
    etc = layers[-1] / "etc"
    user = resolve_user(config.user, (etc / "passwd").read_text(), (etc / "group").read_text())
    assert (user.uid, user.gid, user.name) == (1000, 1000, "app")
    assert set(user.additional_gids) >= {29, 50}  # the named groups app is in


@pytest.mark.parametrize(
    ("user", "expected"),
    [("", (None, "")), ("0", (0, "")), ("1000:50", (1000, "")), ("app:staff", (None, "app"))],
)
def test_image_user_as_the_cri_reports_it(user: str, expected: tuple[int | None, str]) -> None:
    assert image_user(user) == expected


async def test_missing_image_is_not_found(store: Store, pushed: Pushed) -> None:
    for missing in (f"{pushed.host}/does-not-exist:1", f"{pushed.host}/busybox:no-such-tag"):
        with pytest.raises(NotFound) as err:
            await store.images.pull_image(missing, {})
        assert str(parse(missing)) in err.value.message and pushed.host in err.value.message
    _nothing_stored(store.root)


async def test_malformed_reference(store: Store) -> None:
    with pytest.raises(InvalidArgument, match="not a valid image reference"):
        await store.images.pull_image("Not A Reference!", {})


async def test_registry_down_is_unavailable_quickly(store: Store) -> None:
    host = f"127.0.0.1:{free_port()}"
    started = time.monotonic()
    with pytest.raises(Unavailable) as err:
        await store.images.pull_image(f"{host}/busybox:1", {})
    assert time.monotonic() - started < 2
    assert host in err.value.message and "busybox" in err.value.message


# -- mirrors and configuration ----------------------------------------------------------------


async def test_mirror_first_then_origin(store: Store, pushed: Pushed) -> None:
    dead = f"127.0.0.1:{free_port()}"
    # the origin is down, its mirror (the real registry) answers
    via_mirror = store.make(
        RegistryConfig.from_flags(registry_mirrors=[f"{dead}=http://{pushed.host}"])
    )
    image_id = await via_mirror.pull_image(f"{dead}/busybox:{BUSYBOX_TAG}", {})
    status = await via_mirror.image_status(f"{dead}/busybox:{BUSYBOX_TAG}")
    assert status is not None and status.id == image_id
    await via_mirror.close()
    # the mirror is down: the origin answers
    store.log.clear()
    config = RegistryConfig(hosts={pushed.host: HostConfig(mirrors=(f"http://{dead}",))})
    fallback = store.make(config)
    await fallback.remove_image(image_id)
    assert await fallback.pull_image(pushed.busybox, {}) == image_id
    tried = [url.split("/v2/")[0] for _, url in store.log.requests]
    assert tried[:2] == [f"http://{dead}", f"http://{pushed.host}"]


def test_registry_config_file_and_flags(tmp_path: Path) -> None:
    path = tmp_path / "registries.toml"
    path.write_text(
        "max_concurrent_downloads = 2\n"
        "request_timeout = 5\n"
        '[registry."docker.io"]\n'
        'mirrors = ["http://127.0.0.1:5000", "mirror.example.com/v2"]\n'
        '[registry."internal.example:5000"]\n'
        "insecure = true\n"
    )
    config = RegistryConfig.from_flags(
        config_file=path,
        insecure_registries=["other.example"],
        registry_mirrors=["docker.io=http://127.0.0.2:5000"],
    )
    assert config.max_concurrent_downloads == 2 and config.request_timeout == 5
    hub = [(e.url, e.verify_tls, e.mirror) for e in config.endpoints("docker.io")]
    assert hub == [
        ("http://127.0.0.2:5000", False, True),
        ("http://127.0.0.1:5000", False, True),
        ("https://mirror.example.com", True, True),
        ("https://registry-1.docker.io", True, False),
    ]
    internal = [(e.url, e.verify_tls) for e in config.endpoints("internal.example:5000")]
    assert internal == [
        ("https://internal.example:5000", False),
        ("http://internal.example:5000", False),
    ]
    assert [e.url for e in config.endpoints("localhost:5000")] == ["http://localhost:5000"]
    assert [e.url for e in config.endpoints("[::1]:5000")] == ["http://[::1]:5000"]
    assert [e.url for e in config.endpoints("quay.io")] == ["https://quay.io"]
    path.write_text('[registry."docker.io"]\nmirors = []\n')
    with pytest.raises(InvalidArgument, match="mirors"):
        RegistryConfig.load(path)
    with pytest.raises(InvalidArgument, match="HOST=URL"):
        RegistryConfig.from_flags(registry_mirrors=["docker.io"])


def test_platform_selection() -> None:
    def desc(arch: str, variant: str = "", n: int = 0) -> Descriptor:
        return Descriptor("m", "sha256:" + f"{n:x}" * 64, 1, Platform("linux", arch, variant))

    index = Index(
        "sha256:" + "0" * 64,
        "i",
        b"",
        (desc("arm", "v7", 1), desc("arm64", "", 2), desc("arm64", "v8", 3), desc("amd64", "", 4)),
    )
    assert select_platform(index, host_platform("x86_64"), "t").digest.endswith("4" * 64)
    assert select_platform(index, host_platform("aarch64"), "t").digest.endswith("3" * 64)
    assert select_platform(index, Platform("linux", "arm", "v8"), "t").digest.endswith("1" * 64)
    with pytest.raises(NotFound, match="linux/s390x"):
        select_platform(index, host_platform("s390x"), "t")


# -- auth, tampering and hostile layers (the tiny registry) ------------------------------------


def _busybox_like() -> bytes:
    return _tar(lambda t: _add(t, "bin/true", data=b"\x7fELF", mode=0o755))


async def test_bearer_token_flow(store: Store, tiny: TinyRegistry) -> None:
    tiny.auth = "bearer"
    ref = tiny.add("private/app", "1", tiny_image(_busybox_like()))
    with pytest.raises(PermissionDenied) as err:
        await store.images.pull_image(ref, {})  # the token service wants credentials
    assert tiny.host in err.value.message and "private/app" in err.value.message
    with pytest.raises(PermissionDenied):
        await store.images.pull_image(ref, {"username": tiny.username, "password": "wrong"})

    image_id = await store.images.pull_image(
        ref, {"username": tiny.username, "password": tiny.password}
    )
    assert tiny.token_requests.count("GET") == 3
    encoded = base64.b64encode(f"{tiny.username}:{tiny.password}".encode()).decode()
    assert await store.images.pull_image(ref, {"auth": encoded}) == image_id
    tiny.token_requests.clear()
    assert await store.images.pull_image(ref, {"registry_token": tiny.token}) == image_id
    assert tiny.token_requests == []  # a registry token is used as it is
    assert await store.images.pull_image(ref, {"identity_token": tiny.refresh_token}) == image_id
    assert tiny.token_requests == ["POST"]  # an identity token is an OAuth2 refresh token


async def test_basic_auth(store: Store, tiny: TinyRegistry) -> None:
    tiny.auth = "basic"
    ref = tiny.add("private/app", "1", tiny_image(_busybox_like()))
    with pytest.raises(PermissionDenied, match="requires credentials"):
        await store.images.pull_image(ref, {})
    await store.images.pull_image(ref, {"username": tiny.username, "password": tiny.password})


@pytest.mark.parametrize("how", ["flipped", "longer", "shorter"])
async def test_tampered_blob_is_refused(store: Store, tiny: TinyRegistry, how: str) -> None:
    base = _busybox_like()
    image = tiny_image(base, _tar(lambda t: _add(t, "etc/motd", data=b"hello\n")))
    ref = tiny.add("app", "1", image)
    layer = image.layer_digests[1]
    good = image.blobs[layer]
    tiny.tampered[layer] = {
        "flipped": good[:-5] + bytes([good[-5] ^ 1]) + good[-4:],
        "longer": good + b"\0",
        "shorter": good[:-1],
    }[how]
    with pytest.raises(ContentMismatch) as err:
        await store.images.pull_image(ref, {})
    assert layer in err.value.message and tiny.host in err.value.message
    _nothing_stored(store.root, but=(base,))
    assert layer[7:] not in _files(store.root, "blobs/sha256")


def _escape_dotdot(t: tarfile.TarFile) -> None:
    _add(t, "../evil", data=b"x")


def _escape_absolute(t: tarfile.TarFile) -> None:
    _add(t, "/tmp/evil-absolute", data=b"x")


def _escape_nested_dotdot(t: tarfile.TarFile) -> None:
    _add(t, "etc/../../evil", data=b"x")


def _escape_hardlink(t: tarfile.TarFile) -> None:
    _add(t, "passwd", tarfile.LNKTYPE, linkname="../../../../etc/passwd")


@pytest.mark.parametrize(
    "build",
    [_escape_dotdot, _escape_absolute, _escape_nested_dotdot, _escape_hardlink],
    ids=["dotdot", "absolute", "nested-dotdot", "hardlink"],
)
async def test_hostile_layer_is_refused(
    store: Store, tiny: TinyRegistry, build: Callable[[tarfile.TarFile], None]
) -> None:
    def layer(t: tarfile.TarFile) -> None:
        _add(t, "ok", data=b"fine")  # something unpacked before the bad entry
        build(t)

    base = _busybox_like()
    ref = tiny.add("app", "1", tiny_image(base, _tar(layer)))
    with pytest.raises(LayerError, match=r"absolute|'\.\.'"):
        await store.images.pull_image(ref, {})
    _nothing_stored(store.root, but=(base,))
    assert not Path("/tmp/evil-absolute").exists()


async def test_symlink_parent_escape_is_refused(
    store: Store, tiny: TinyRegistry, tmp_path: Path
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()

    def layer(t: tarfile.TarFile) -> None:
        _add(t, "link", tarfile.SYMTYPE, linkname=str(outside))
        _add(t, "link/evil", data=b"pwned")

    def relative(t: tarfile.TarFile) -> None:
        _add(t, "a", tarfile.DIRTYPE, mode=0o755)
        _add(t, "a/up", tarfile.SYMTYPE, linkname="../../../../../../" + str(outside))
        _add(t, "a/up/evil", data=b"pwned")

    for i, build in enumerate((layer, relative)):
        ref = tiny.add("app", str(i), tiny_image(_tar(build)))
        with pytest.raises(LayerError, match="symlink"):
            await store.images.pull_image(ref, {})
        assert list(outside.iterdir()) == []
        _nothing_stored(store.root)


# -- unpacking, directly ----------------------------------------------------------------------


def _unpack(tmp_path: Path, tar_bytes: bytes, compress: str = "gzip") -> Path:
    if compress == "gzip":
        blob = gzip.compress(tar_bytes, mtime=0)
    elif compress == "zstd":
        blob = zstandard.ZstdCompressor().compress(tar_bytes)
    else:
        blob = tar_bytes
    (tmp_path / "scratch").mkdir(exist_ok=True)
    src = tmp_path / f"blob-{_sha(blob)[7:19]}"
    src.write_bytes(blob)
    dest = tmp_path / f"layer-{_sha(tar_bytes)[7:19]}"
    unpack_layer(src, dest, diff_id=_sha(tar_bytes), scratch=tmp_path / "scratch", what="test")
    return dest


@pytest.mark.parametrize("compress", ["gzip", "zstd", "none"])
def test_unpack_keeps_links_nodes_and_attributes(tmp_path: Path, compress: str) -> None:
    def build(t: tarfile.TarFile) -> None:
        _add(t, "./", tarfile.DIRTYPE, mode=0o755)
        _add(t, "usr", tarfile.DIRTYPE, mode=0o711, mtime=1234)
        _add(t, "usr/bin/tool", data=b"#!/bin/sh\n", mode=0o4755, uid=7, gid=8, mtime=42)
        _add(t, "usr/bin/alias", tarfile.LNKTYPE, linkname="usr/bin/tool")
        _add(t, "usr/bin/sym", tarfile.SYMTYPE, linkname="tool", mtime=43)
        _add(t, "dev/null", tarfile.CHRTYPE, mode=0o666, devmajor=1, devminor=3)
        _add(t, "run/fifo", tarfile.FIFOTYPE, mode=0o600)
        info = tarfile.TarInfo("cap")
        info.size = 1
        info.pax_headers = {"SCHILY.xattr.user.note": "hello"}
        t.addfile(info, io.BytesIO(b"c"))

    layer = _unpack(tmp_path, _tar(build), compress)
    tool = (layer / "usr/bin/tool").stat()
    assert (stat.S_IMODE(tool.st_mode), tool.st_uid, tool.st_gid, tool.st_mtime) == (
        0o4755, 7, 8, 42,
    )  # fmt: skip
    assert (layer / "usr/bin/alias").stat().st_ino == tool.st_ino
    assert os.readlink(layer / "usr/bin/sym") == "tool"
    assert (layer / "usr/bin/sym").lstat().st_mtime == 43
    null = (layer / "dev/null").stat()
    assert stat.S_ISCHR(null.st_mode) and null.st_rdev == os.makedev(1, 3)
    assert stat.S_ISFIFO((layer / "run/fifo").lstat().st_mode)
    usr = (layer / "usr").stat()
    assert (stat.S_IMODE(usr.st_mode), usr.st_mtime) == (0o711, 1234)  # set after its children
    assert os.getxattr(layer / "cap", "user.note") == b"hello"
    assert list((tmp_path / "scratch").iterdir()) == []


def test_unpack_refuses_a_wrong_diff_id(tmp_path: Path) -> None:
    tar_bytes = _tar(lambda t: _add(t, "f", data=b"x"))
    src = tmp_path / "blob"
    src.write_bytes(tar_bytes)
    (tmp_path / "scratch").mkdir()
    with pytest.raises(LayerError, match="uncompressed digest"):
        unpack_layer(
            src, tmp_path / "l", diff_id=_sha(b"other"), scratch=tmp_path / "scratch", what="t"
        )
    assert not (tmp_path / "l").exists() and list((tmp_path / "scratch").iterdir()) == []
    src.write_bytes(b"\x1f\x8b not really gzip")
    with pytest.raises(LayerError, match=r"gzip|tar"):
        unpack_layer(src, tmp_path / "l", diff_id=_sha(b""), scratch=tmp_path / "scratch", what="t")


# -- removal, garbage collection, restarts ------------------------------------------------------


async def test_remove_image_keeps_layers_another_image_uses(store: Store, pushed: Pushed) -> None:
    images = store.images
    busybox_id = await images.pull_image(pushed.busybox, {})
    whiteout_id = await images.pull_image(pushed.whiteout, {})
    [base] = await images.layer_dirs(busybox_id)
    _, added, removed = await images.layer_dirs(whiteout_id)

    await images.remove_image(pushed.whiteout)
    assert await images.image_status(whiteout_id) is None
    assert base.is_dir() and not added.exists() and not removed.exists()
    assert len(_files(store.root, "blobs/sha256")) == 2  # busybox's manifest and config
    assert (await images.image_status(pushed.busybox)) is not None
    await images.remove_image(pushed.whiteout)  # already gone: fine

    await images.remove_image(busybox_id)
    assert _files(store.root, "layers") == [] and _files(store.root, "blobs/sha256") == []
    assert await images.list_images("") == []


async def test_gc_spares_layers_containers_use(store: Store, pushed: Pushed) -> None:
    mounted: list[Path] = []
    images = store.make(layers_in_use=lambda: mounted)
    image_id = await images.pull_image(pushed.busybox, {})
    mounted.extend(await images.layer_dirs(image_id))
    await images.remove_image(image_id)
    assert mounted[0].is_dir()  # a running container still has it as a lowerdir
    mounted.clear()
    assert await images.gc() == (0, 1)
    assert _files(store.root, "layers") == []


async def test_restart_sees_the_images_and_cleans_up_a_crash(store: Store, pushed: Pushed) -> None:
    busybox_id = await store.images.pull_image(pushed.busybox, {})
    user_id = await store.images.pull_image(pushed.user, {})
    before = await store.images.list_images("")
    # what a crash in the middle of a pull leaves behind
    (store.root / "tmp" / "layer-0123").write_bytes(b"half a download")
    (store.root / "tmp" / "unpack-4567" / "usr").mkdir(parents=True)
    with pytest.raises(FailedPrecondition, match="in use"):
        await store.make().load()  # one runtime per root: the first still holds it
    assert _files(store.root, "tmp") == ["layer-0123", "unpack-4567"]
    await store.images.close()

    again = store.make()
    assert await again.list_images("") == before
    assert _files(store.root, "tmp") == []
    status = await again.image_status(pushed.user)
    assert status is not None and status.id == user_id and status.username == "app"
    assert all(p.is_dir() for p in await again.layer_dirs(busybox_id))
    store.log.clear()
    assert await again.pull_image(pushed.busybox, {}) == busybox_id
    assert store.log.paths("blobs") == []
