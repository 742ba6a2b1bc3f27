"""Container log rotation against the simulated runtime's ReopenContainerLog."""

from __future__ import annotations

import gzip
from pathlib import Path

from minikubelet.cri.client import CRIClient
from minikubelet.cri.services import RuntimeHandlers
from minikubelet.logs.rotate import ContainerLogManager
from runtimes.fake.server import FakeRuntime
from tests.component.test_fake_runtime import IMAGE, fake  # noqa: F401 - the fixture
from tests.contract.pods import container_config, sandbox_config
from tests.harness.wait import wait_until


async def test_a_big_log_is_rotated_and_the_runtime_writes_a_new_one(
    fake: tuple[CRIClient, FakeRuntime, Path],  # noqa: F811
    tmp_path: Path,
) -> None:
    cri, _, _ = fake
    sb = sandbox_config(tmp_path)
    sandbox_id = await cri.run_pod_sandbox(sb)
    script = "echo first line of output; sleep 0.5; echo after rotation; sleep 3600"
    cid = await cri.create_container(
        sandbox_id, container_config(IMAGE, "chatty", ["sh", "-c", script]), sb
    )
    await cri.start_container(cid)
    path = Path((await cri.container_status(cid)).status.log_path)

    async def written() -> bool | None:
        return True if path.stat().st_size > 0 else None

    await wait_until(written, message="the first line")
    manager = ContainerLogManager(RuntimeHandlers(cri), max_size=10, max_files=3)
    await manager.rotate_all()
    assert manager.rotations == 1
    [rotated] = list(path.parent.glob("0.log.*"))
    assert "first line of output" in rotated.read_text()

    async def second() -> bool | None:
        return True if path.exists() and "after rotation" in path.read_text() else None

    await wait_until(second, message="output in the reopened file")
    assert "first line" not in path.read_text()


def test_old_files_are_compressed_and_pruned(tmp_path: Path) -> None:
    live = tmp_path / "0.log"
    live.write_text("live\n")
    for stamp in ("20260101-000001", "20260101-000002", "20260101-000003"):
        (tmp_path / f"0.log.{stamp}").write_text(f"rotated {stamp}\n")
    (tmp_path / "0.log.20260101-000000.gz.tmp").write_text("half-written")
    manager = ContainerLogManager(None, max_size=1, max_files=3)  # type: ignore[arg-type]
    manager._prepare(live)
    names = sorted(p.name for p in tmp_path.iterdir())
    # max 3 files: the live one, the one about to be rotated, and one older (compressed)
    assert names == ["0.log", "0.log.20260101-000003.gz"]
    with gzip.open(tmp_path / "0.log.20260101-000003.gz", "rt") as f:
        assert f.read() == "rotated 20260101-000003\n"
