"""The file source against a real directory, watched through watchfiles."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from minikubelet.config.file import FileSource
from minikubelet.config.types import FILE_SOURCE, Pod, PodOperation, SourceUpdate

NODE = "node-1"


def manifest(name: str, image: str = "nginx:1.27") -> bytes:
    return (
        f"apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n"
        f"spec:\n  containers:\n    - name: main\n      image: {image}\n"
    ).encode()


BROKEN = b"apiVersion: v1\nkind: Pod\nmetadata:\n  name: broken\n  labels: [oops\n"
BROKEN_LINE = 6  # the parser notices the unclosed sequence at the end of the stream


def write(path: Path, data: bytes) -> None:
    """Replace a file the way editors and config tools do: a dotfile renamed into place."""
    temp = path.with_name(f".{path.name}.tmp")
    temp.write_bytes(data)
    os.replace(temp, path)


def names(update: SourceUpdate) -> list[str]:
    return sorted(p["metadata"]["name"] for p in update.pods)


def uids(update: SourceUpdate) -> list[str]:
    return [p["metadata"]["uid"] for p in update.pods]


async def next_set(
    queue: asyncio.Queue[SourceUpdate],
    condition: Callable[[SourceUpdate], bool] = lambda _: True,
    timeout: float = 5.0,
) -> SourceUpdate:
    """The next snapshot that satisfies ``condition`` (earlier ones are skipped)."""
    async with asyncio.timeout(timeout):
        while True:
            update = await queue.get()
            assert update.op is PodOperation.SET
            assert update.source == FILE_SOURCE
            if condition(update):
                return update


@asynccontextmanager
async def running(source: FileSource) -> AsyncIterator[asyncio.Queue[SourceUpdate]]:
    queue: asyncio.Queue[SourceUpdate] = asyncio.Queue()
    task = asyncio.create_task(source.run(queue), name="file-source-under-test")
    try:
        yield queue
    finally:
        task.cancel()
        async with asyncio.timeout(5):  # cancellation must also release the watcher thread
            with pytest.raises(asyncio.CancelledError):
                await task


async def test_add_edit_delete(tmp_path: Path) -> None:
    web = tmp_path / "web.yaml"
    web.write_bytes(manifest("web"))
    async with running(FileSource(tmp_path, node_name=NODE, period=3600)) as queue:
        first = await next_set(queue)
        assert names(first) == ["web-node-1"]
        (pod,) = first.pods
        assert pod["spec"]["nodeName"] == NODE
        old_uid = pod["metadata"]["uid"]

        write(web, manifest("web", image="nginx:1.28"))
        edited = await next_set(queue, lambda u: uids(u) not in ([old_uid], []))
        assert names(edited) == ["web-node-1"]
        assert edited.pods[0]["spec"]["containers"][0]["image"] == "nginx:1.28"
        assert edited.pods[0]["metadata"]["uid"] != old_uid

        web.unlink()
        await next_set(queue, lambda u: u.pods == [])


async def test_dotfiles_and_subdirectories_are_ignored(tmp_path: Path) -> None:
    (tmp_path / ".hidden.yaml").write_bytes(manifest("hidden"))
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "nested.yaml").write_bytes(manifest("nested"))
    (tmp_path / "web.yaml").write_bytes(manifest("web"))
    async with running(FileSource(tmp_path, node_name=NODE, period=3600)) as queue:
        assert names(await next_set(queue)) == ["web-node-1"]
        (tmp_path / ".other.yaml").write_bytes(manifest("other"))
        (tmp_path / "sub" / "more.yaml").write_bytes(manifest("more"))
        write(tmp_path / "db.yaml", manifest("db"))
        latest = await next_set(queue, lambda u: "db-node-1" in names(u))
        assert names(latest) == ["db-node-1", "web-node-1"]


async def test_broken_file_is_reported_and_others_still_arrive(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_bytes(BROKEN)
    (tmp_path / "good.yaml").write_bytes(manifest("good"))
    source = FileSource(tmp_path, node_name=NODE, period=3600)
    with caplog.at_level(logging.WARNING, logger="minikubelet.config"):
        async with running(source) as queue:
            assert names(await next_set(queue)) == ["good-node-1"]
            error = source.errors[broken]
            assert (error.path, error.line) == (str(broken), BROKEN_LINE)
            assert error.reason.startswith("not YAML")
            assert f"file={broken} line={BROKEN_LINE}" in caplog.text

            # A broken edit of a good file drops that pod only; a fix brings it back.
            write(tmp_path / "good.yaml", b"kind: Service\n")
            write(tmp_path / "other.yaml", manifest("other"))
            latest = await next_set(queue, lambda u: names(u) == ["other-node-1"])
            assert latest.pods[0]["metadata"]["annotations"]["kubernetes.io/config.hash"]
            assert source.errors[tmp_path / "good.yaml"].reason.startswith("kind is Service")
            write(broken, manifest("fixed"))
            await next_set(queue, lambda u: names(u) == ["fixed-node-1", "other-node-1"])
            assert broken not in source.errors


async def test_periodic_resync_without_changes(tmp_path: Path) -> None:
    (tmp_path / "web.yaml").write_bytes(manifest("web"))
    async with running(FileSource(tmp_path, node_name=NODE, period=0.05)) as queue:
        first = await next_set(queue)
        second = await next_set(queue)
        assert uids(first) == uids(second)


async def test_single_manifest_file(tmp_path: Path) -> None:
    web = tmp_path / "web.yaml"
    web.write_bytes(manifest("web"))
    (tmp_path / "neighbour.yaml").write_bytes(manifest("neighbour"))
    source = FileSource(web, node_name=NODE, period=3600)
    async with running(source) as queue:
        first = await next_set(queue)
        assert names(first) == ["web-node-1"]
        write(web, manifest("web", image="nginx:1.28"))
        await next_set(queue, lambda u: uids(u) != uids(first))


async def test_single_broken_file_sends_nothing(tmp_path: Path) -> None:
    web = tmp_path / "web.yaml"
    web.write_bytes(BROKEN)
    source = FileSource(web, node_name=NODE, period=3600)
    queue: asyncio.Queue[SourceUpdate] = asyncio.Queue()
    await source.list_once(queue)
    assert queue.empty(), "the kubelet keeps what it had when a lone manifest breaks"
    assert source.errors[web].line == BROKEN_LINE


async def test_missing_path_is_an_empty_snapshot(tmp_path: Path) -> None:
    source = FileSource(tmp_path / "absent", node_name=NODE)
    queue: asyncio.Queue[SourceUpdate] = asyncio.Queue()
    await source.list_once(queue)
    update = queue.get_nowait()
    assert (update.op, update.pods) == (PodOperation.SET, [])


async def test_uid_follows_the_kubelet_hash(tmp_path: Path) -> None:
    from minikubelet.config.manifest import decode_manifest, static_pod_uid

    web = tmp_path / "web.yaml"
    web.write_bytes(manifest("web"))
    queue: asyncio.Queue[SourceUpdate] = asyncio.Queue()
    await FileSource(tmp_path, node_name=NODE).list_once(queue)
    (pod,) = queue.get_nowait().pods
    (decoded,) = decode_manifest(manifest("web"), str(web))
    expected: Pod = decoded
    assert pod["metadata"]["uid"] == static_pod_uid(
        expected, node_name=NODE, source=FILE_SOURCE, source_path=str(web)
    )


HUNGRY = manifest("hungry") + b'      resources:\n        requests: {cpu: "1e999999999"}\n'
TWINS = manifest("twins") + b"    - name: main\n      image: nginx:1.27\n"
LONG_INTEGER = (
    manifest("long") + b"      resources:\n        limits: {memory: " + b"9" * 5000 + b"}\n"
)
DEEP = b'{"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "deep"}, "x": ' + (
    b"[" * 100_000 + b"]" * 100_000 + b"}"
)


async def test_invalid_pods_are_reported_at_once_and_others_still_arrive(tmp_path: Path) -> None:
    """As in the kubelet: the source validates each defaulted pod with Pod.from_dict."""
    from minikubelet.api.pod import Pod as PodModel

    bad = {
        "hungry.yaml": (
            HUNGRY,
            'spec.containers[0].resources.requests[cpu]: Invalid value: "1e999999999": '
            "exponent out of range (at most 1000 in magnitude)",
        ),
        "twins.yaml": (TWINS, 'spec.containers[1].name: Duplicate value: "main"'),
        "long.yaml": (LONG_INTEGER, "not YAML: Exceeds the limit (4300 digits)"),
        "deep.json": (DEEP, "not JSON: nested too deeply"),
        # valid as written, too long once the node's name is appended
        "named.yaml": (
            manifest("a" * 250),
            f'metadata.name: Invalid value: "{"a" * 250}-node-1": must be no more than 253 '
            "characters",
        ),
    }
    for name, (data, _) in bad.items():
        (tmp_path / name).write_bytes(data)
    (tmp_path / "good.yaml").write_bytes(manifest("good"))
    source = FileSource(tmp_path, node_name=NODE, period=3600, validate=PodModel.from_dict)
    async with running(source) as queue:
        assert names(await next_set(queue, timeout=2.0)) == ["good-node-1"]
        reasons = {path.name: error.reason for path, error in source.errors.items()}
        assert set(reasons) == set(bad)
        for name, (_, reason) in bad.items():
            assert reasons[name].startswith(reason), (name, reasons[name])

        # fixing the request brings the pod in, the others stay reported
        write(tmp_path / "hungry.yaml", HUNGRY.replace(b"1e999999999", b"100m"))
        latest = await next_set(queue, lambda u: "hungry-node-1" in names(u), timeout=2.0)
        assert names(latest) == ["good-node-1", "hungry-node-1"]
        assert set(p.name for p in source.errors) == set(bad) - {"hungry.yaml"}


def counting_decodes(source: FileSource, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The names of the files ``source`` decodes, in order."""
    decode = source._pod
    seen: list[str] = []

    def counted(path: Path, data: bytes) -> Pod:
        seen.append(path.name)
        return decode(path, data)

    monkeypatch.setattr(source, "_pod", counted)
    return seen


async def test_a_listing_decodes_only_the_files_that_changed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "a.yaml").write_bytes(manifest("a"))
    (tmp_path / "b.yaml").write_bytes(manifest("b"))
    (tmp_path / "c.yaml").write_bytes(BROKEN)
    source = FileSource(tmp_path, node_name=NODE, period=3600)
    decodes = counting_decodes(source, monkeypatch)
    queue: asyncio.Queue[SourceUpdate] = asyncio.Queue()
    await source.list_once(queue)
    first = queue.get_nowait()
    assert decodes == ["a.yaml", "b.yaml", "c.yaml"]

    decodes.clear()
    await source.list_once(queue)
    again = queue.get_nowait()
    assert decodes == [], "unchanged files are not decoded again"
    assert again.pods == first.pods and uids(again) == uids(first)
    assert set(source.errors) == {tmp_path / "c.yaml"}, "a broken file stays reported"

    write(tmp_path / "b.yaml", manifest("b", image="nginx:1.28"))
    (tmp_path / "a.yaml").unlink()
    (tmp_path / "d.yaml").write_bytes(manifest("d"))
    decodes.clear()
    await source.list_once(queue)
    update = queue.get_nowait()
    assert decodes == ["b.yaml", "d.yaml"]
    assert names(update) == ["b-node-1", "d-node-1"]
    b = next(p for p in update.pods if p["metadata"]["name"] == "b-node-1")
    assert b["spec"]["containers"][0]["image"] == "nginx:1.28"


async def test_a_file_rewritten_in_place_with_its_times_kept_is_decoded_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Whether a file changed is told by its bytes, not its times: a write within one
    timestamp tick of the file system leaves them as they were."""
    web = tmp_path / "web.yaml"
    web.write_bytes(manifest("web", image="nginx:1.27"))
    times = os.stat(web)
    source = FileSource(tmp_path, node_name=NODE, period=3600)
    decodes = counting_decodes(source, monkeypatch)
    queue: asyncio.Queue[SourceUpdate] = asyncio.Queue()
    await source.list_once(queue)
    web.write_bytes(manifest("web", image="nginx:1.28"))  # same size
    os.utime(web, ns=(times.st_atime_ns, times.st_mtime_ns))
    await source.list_once(queue)
    assert decodes == ["web.yaml", "web.yaml"]
    first, second = queue.get_nowait(), queue.get_nowait()
    assert uids(first) != uids(second)
    assert second.pods[0]["spec"]["containers"][0]["image"] == "nginx:1.28"
