"""The native runtime's record store: atomic, per-record files that concurrent writers share."""

from __future__ import annotations

import json
import threading
from pathlib import Path

from runtimes.native.state import StateStore


def test_concurrent_saves_of_one_record_all_succeed_and_leave_one_whole_file(
    tmp_path: Path,
) -> None:
    store = StateStore(tmp_path)
    errors: list[BaseException] = []
    start = threading.Barrier(8)

    def writer(n: int) -> None:
        start.wait()
        try:
            for i in range(50):
                store.save("containers", "abc", {"writer": n, "i": i})
        except BaseException as exc:  # collected for the assertion
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    assert errors == []
    files = sorted(p.name for p in (tmp_path / "state" / "containers").iterdir())
    assert files == ["abc.json"]
    record = json.loads((tmp_path / "state" / "containers" / "abc.json").read_text())
    assert record["i"] == 49


def test_load_all_drops_temporaries_a_crash_left_behind(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    store.save("sandboxes", "s1", {"id": "s1"})
    leftover = tmp_path / "state" / "sandboxes" / ".s1.json.123-456.tmp"
    leftover.write_text("{half")
    assert store.load_all("sandboxes") == [{"id": "s1"}]
    assert not leftover.exists()
