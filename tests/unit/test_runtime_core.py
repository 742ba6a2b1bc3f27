"""The CRI core the simulated, native and Docker-backed runtimes share (runtimes/base/core.py,
runtimes/base/names.py): lookups, filters, name reservation, idempotent stop and remove,
preconditions, exits; and the simulated runtime as one user of all of it."""

from __future__ import annotations

import asyncio
import stat
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import pytest

from minikubelet.errors import (
    AlreadyExists,
    DeadlineExceeded,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
)
from runtimes.base import core
from runtimes.base import model as m
from runtimes.base.names import NameReservations, container_name_reserved, sandbox_name_reserved
from runtimes.fake.images import FakeImages
from runtimes.fake.server import FakeRuntime

POD = m.SandboxMetadata(name="web", uid="u-1", namespace="prod", attempt=0)
APP = m.ContainerMetadata(name="app", attempt=1)
A = "a" * 64
AB = "ab" + "0" * 62
AC = "ac" + "0" * 62


def _sandbox(
    sandbox_id: str, *, ready: bool = True, labels: dict[str, str] | None = None
) -> m.PodSandbox:
    return m.PodSandbox(
        id=sandbox_id,
        spec=m.PodSandboxSpec(metadata=POD, labels=labels or {}),
        state=m.SandboxState.READY if ready else m.SandboxState.NOTREADY,
        created_at=1,
    )


def _container(
    container_id: str,
    sandbox_id: str = A,
    state: m.ContainerState = m.ContainerState.RUNNING,
    labels: dict[str, str] | None = None,
) -> m.Container:
    return m.Container(
        id=container_id,
        sandbox_id=sandbox_id,
        spec=m.ContainerSpec(metadata=APP, image="busybox", labels=labels or {}),
        image_ref="sha256:1",
        image_name="busybox",
        state=state,
        created_at=1,
    )


# -- lookup ------------------------------------------------------------------------------


def test_lookup_by_full_id_and_by_unique_prefix() -> None:
    table = {AB: _sandbox(AB), AC: _sandbox(AC)}
    assert core.get_sandbox(table, AB).id == AB
    assert core.get_sandbox(table, "ab0").id == AB


@pytest.mark.parametrize("key", ["a", "ab", "abc", "zzz", ""])
def test_lookup_of_a_short_ambiguous_or_unknown_id_is_not_found(key: str) -> None:
    table = {AB: _container(AB), "abc" + "1" * 61: _container("abc" + "1" * 61)}
    table["abc" + "2" * 61] = _container("abc" + "2" * 61)  # "abc" names two
    with pytest.raises(NotFound) as caught:
        core.get_container(table, key)
    assert caught.value.message == f"container {key!r} not found"
    assert isinstance(caught.value, core.Missing) and caught.value.object_id == key


def test_a_missing_sandbox_is_named_as_a_pod_sandbox() -> None:
    with pytest.raises(NotFound, match=r"^pod sandbox 'abc' not found"):
        core.get_sandbox({}, "abc")


@pytest.mark.parametrize(
    ("key", "usable"), [("", False), ("ab", False), ("abc", True), (A, True), (A + "0", False)]
)
def test_could_be_id(key: str, usable: bool) -> None:
    assert core.could_be_id(key) is usable


# -- list filters ------------------------------------------------------------------------


def test_filter_sandboxes_by_id_prefix_state_and_labels() -> None:
    ready = _sandbox(AB, labels={"app": "web"})
    stopped = _sandbox(AC, ready=False, labels={"app": "db"})
    table = {s.id: s for s in (ready, stopped)}
    assert core.filter_sandboxes(table, m.SandboxFilter()) == [ready, stopped]
    assert core.filter_sandboxes(table, m.SandboxFilter(id="ac0")) == [stopped]
    assert core.filter_sandboxes(table, m.SandboxFilter(id="a")) == []  # too short to be a prefix
    assert core.filter_sandboxes(table, m.SandboxFilter(state=m.SandboxState.READY)) == [ready]
    assert core.filter_sandboxes(table, m.SandboxFilter(label_selector={"app": "db"})) == [stopped]
    # candidates narrow the search (an index), but an id is looked up in the whole table
    assert core.filter_sandboxes(table, m.SandboxFilter(), [stopped]) == [stopped]
    assert core.filter_sandboxes(table, m.SandboxFilter(id=AB), [stopped]) == [ready]


def test_filter_containers_by_sandbox_state_and_labels() -> None:
    running = _container(AB, sandbox_id=A, labels={"tier": "front"})
    exited = _container(AC, sandbox_id="b" * 64, state=m.ContainerState.EXITED)
    table = {c.id: c for c in (running, exited)}
    assert core.filter_containers(table, m.ContainerFilter()) == [running, exited]
    assert core.filter_containers(table, m.ContainerFilter(pod_sandbox_id="b" * 64)) == [exited]
    assert core.filter_containers(table, m.ContainerFilter(state=m.ContainerState.RUNNING)) == [
        running
    ]
    assert core.filter_containers(table, m.ContainerFilter(label_selector={"tier": "front"})) == [
        running
    ]
    assert core.filter_containers(table, m.ContainerFilter(id="ac0")) == [exited]


def test_a_sandbox_id_prefix_in_a_container_filter_names_the_sandbox() -> None:
    sandboxes = {AB: _sandbox(AB), AC: _sandbox(AC)}
    f = m.ContainerFilter(pod_sandbox_id="ab0")
    assert core.resolve_sandbox_prefix(f, sandboxes).pod_sandbox_id == AB
    unknown = m.ContainerFilter(pod_sandbox_id="fff")
    assert core.resolve_sandbox_prefix(unknown, sandboxes) == unknown
    assert core.resolve_sandbox_prefix(m.ContainerFilter(), sandboxes) == m.ContainerFilter()


# -- names -------------------------------------------------------------------------------


def test_a_sandbox_name_is_reserved_for_its_holder() -> None:
    names = NameReservations()
    names.reserve_sandbox(POD, AB)
    names.reserve_sandbox(POD, AB)  # the holder again: fine
    with pytest.raises(AlreadyExists) as caught:
        names.reserve_sandbox(POD, AC)
    assert caught.value.message == (
        f"pod sandbox name prod/web (uid u-1, attempt 0) is reserved for {AB}"
    )
    names.reserve_sandbox(replace(POD, attempt=1), AC)  # another attempt is another name
    names.release_sandbox(POD, AC)  # not the holder: nothing happens
    with pytest.raises(AlreadyExists):
        names.reserve_sandbox(POD, AC)
    names.release_sandbox(POD, AB)
    names.reserve_sandbox(POD, AC)


def test_a_container_name_is_reserved_within_its_sandbox() -> None:
    names = NameReservations()
    names.reserve_container(A, APP, AB)
    names.reserve_container("b" * 64, APP, AC)  # the same name in another sandbox
    with pytest.raises(AlreadyExists) as caught:
        names.reserve_container(A, APP, AC)
    assert caught.value.message == (
        f"container name 'app' (attempt 1) in pod sandbox {A} is reserved for {AB}"
    )
    names.release_container(A, APP, AB)
    names.reserve_container(A, APP, AC)


def test_a_failed_creation_frees_its_name_and_a_successful_one_keeps_it() -> None:
    names = NameReservations()
    with pytest.raises(InvalidArgument), names.sandbox(POD, AB):
        raise InvalidArgument("bad config")
    with names.sandbox(POD, AC):
        pass
    with pytest.raises(AlreadyExists, match=f"reserved for {AC}"):
        names.reserve_sandbox(POD, AB)
    with pytest.raises(NotFound), names.container(A, APP, AB):
        raise NotFound("no image")
    names.reserve_container(A, APP, AC)


def test_a_taken_name_reported_by_a_backend_reads_the_same() -> None:
    assert sandbox_name_reserved(POD, "x").message.endswith("is reserved for x")
    assert isinstance(container_name_reserved(APP, A, "y"), AlreadyExists)


# -- idempotent stop and remove ----------------------------------------------------------


class _Store:
    def __init__(self) -> None:
        self.objects = {AB: _container(AB)}
        self.removed: list[str] = []

    @core.idempotent
    async def remove(self, object_id: str) -> None:
        container = core.get_container(self.objects, object_id)
        del self.objects[container.id]
        self.removed.append(container.id)

    @core.idempotent
    async def remove_with_other(self, object_id: str, other: str) -> None:
        core.get_container(self.objects, other)

    @core.idempotent
    async def remove_backend_fails(self, object_id: str) -> None:
        raise NotFound("the backend lost its state directory")


async def test_removing_twice_succeeds() -> None:
    store = _Store()
    await store.remove(AB)
    await store.remove(AB)
    await store.remove("never-was")
    assert store.removed == [AB]


async def test_only_the_missing_object_itself_is_success() -> None:
    store = _Store()
    with pytest.raises(NotFound, match="'zzz' not found"):
        await store.remove_with_other(AB, "zzz")
    with pytest.raises(NotFound, match="state directory"):
        await store.remove_backend_fails(AB)


# -- preconditions -----------------------------------------------------------------------


def test_preconditions_and_their_messages() -> None:
    assert core.require_ready(_sandbox(AB)).id == AB
    with pytest.raises(FailedPrecondition, match=f"^pod sandbox {AC} is not ready"):
        core.require_ready(_sandbox(AC, ready=False))
    assert core.require_running(_container(AB)).id == AB
    with pytest.raises(FailedPrecondition, match=f"^container {AB} is not running"):
        core.require_running(_container(AB, state=m.ContainerState.EXITED))
    assert core.require_created(_container(AB, state=m.ContainerState.CREATED)).id == AB
    with pytest.raises(FailedPrecondition, match="is in state RUNNING, not CREATED"):
        core.require_created(_container(AB))
    with pytest.raises(FailedPrecondition, match=r"^the docker runtime is not running"):
        core.require_serving(False, "docker")
    core.require_serving(True, "docker")


def test_an_exec_needs_a_command() -> None:
    assert core.require_command(("sh", "-c", "true")) == ["sh", "-c", "true"]
    with pytest.raises(InvalidArgument, match="empty command"):
        core.require_command([])


def test_error_factories() -> None:
    timed_out = core.exec_timed_out(("sleep", "9"), 2, AB)
    assert isinstance(timed_out, DeadlineExceeded)
    assert timed_out.message == f"command ['sleep', '9'] timed out after 2s in container {AB}"
    assert core.image_not_pulled("busybox").message == "image 'busybox' not found: pull it first"


# -- exits -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "oom", "reason"),
    [(0, False, "Completed"), (1, False, "Error"), (137, False, "Error"), (137, True, "OOMKilled")],
)
def test_exit_reason(code: int, oom: bool, reason: str) -> None:
    assert core.exit_reason(code, oom_killed=oom) == reason


def test_a_signal_exit_code_is_128_plus_the_signal() -> None:
    assert core.signal_exit_code(9) == 137
    assert core.signal_exit_code(15) == 143


def test_start_and_exit_are_recorded_on_the_container() -> None:
    c = _container(AB, state=m.ContainerState.CREATED)
    core.mark_started(c, 10, 4242)
    assert (c.state, c.started_at, c.pid, c.generation) == (m.ContainerState.RUNNING, 10, 4242, 1)
    assert not core.has_exited(c)
    core.mark_exited(c, 137, 20, oom_killed=True)
    assert (c.state, c.exit_code, c.finished_at, c.reason, c.pid) == (
        m.ContainerState.EXITED,
        137,
        20,
        "OOMKilled",
        0,
    )
    assert c.generation == 2 and core.has_exited(c)


def test_new_ids_are_64_hex_digits_and_distinct() -> None:
    ids = {core.new_id() for _ in range(100)}
    assert len(ids) == 100 and all(len(i) == 64 and int(i, 16) >= 0 for i in ids)


def test_a_log_file_is_created_with_its_directory_and_never_truncated(tmp_path: Path) -> None:
    path = tmp_path / "pods" / "web" / "app" / "0.log"
    core.create_log_file(str(path))
    assert path.read_bytes() == b""
    assert stat.S_IMODE(path.stat().st_mode) & 0o077 in (0o040, 0o000)  # no write for others
    path.write_bytes(b"kept\n")
    core.create_log_file(str(path))
    assert path.read_bytes() == b"kept\n"


# -- the simulated runtime, one user of the core -----------------------------------------


@pytest.fixture
async def fake(tmp_path: Path) -> AsyncIterator[FakeRuntime]:
    images = FakeImages()
    await images.pull_image("busybox:1.36", {})
    runtime = FakeRuntime(images)
    runner = asyncio.create_task(runtime.run())
    await asyncio.sleep(0)  # let run() own its task group
    try:
        yield runtime
    finally:
        runner.cancel()
        with pytest.raises(asyncio.CancelledError):
            await runner


async def test_fake_runtime_follows_the_core(fake: FakeRuntime, tmp_path: Path) -> None:
    spec = m.PodSandboxSpec(metadata=POD, log_directory=str(tmp_path))
    sandbox_id = await fake.run_pod_sandbox(spec)
    with pytest.raises(AlreadyExists, match=f"reserved for {sandbox_id}"):
        await fake.run_pod_sandbox(spec)
    cspec = m.ContainerSpec(metadata=APP, image="busybox:1.36", command=("sleep", "3600"))
    with pytest.raises(NotFound, match="pull it first"):
        await fake.create_container(sandbox_id, replace(cspec, image="other:1"), spec)
    cid = await fake.create_container(sandbox_id, cspec, spec)  # the failure freed the name
    with pytest.raises(FailedPrecondition, match="is not running"):
        await fake.exec_sync(cid, ["true"], 0)
    await fake.start_container(cid)
    listed = await fake.list_containers(m.ContainerFilter(pod_sandbox_id=sandbox_id[:8]))
    assert [c.id for c in listed] == [cid]
    await fake.stop_container(cid, 0)
    status = await fake.container_status(cid[:5])
    assert (status.exit_code, status.reason) == (137, "Error")
    for _ in range(2):
        await fake.remove_container(cid)
        await fake.stop_pod_sandbox(sandbox_id)
        await fake.remove_pod_sandbox(sandbox_id)
    with pytest.raises(NotFound, match="not found"):
        await fake.pod_sandbox_status(sandbox_id)
    # the name is free again once the sandbox is removed
    await fake.run_pod_sandbox(spec)
