"""The one subprocess helper: output, input, errors, and no process left on a timeout or cancel."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from pathlib import Path

import pytest

from minikubelet.util import proc
from tests.harness.wait import wait_until

PY = sys.executable


def _gone(pid: int) -> bool:
    """No process (not even a zombie) has ``pid``."""
    return not Path(f"/proc/{pid}").exists()


async def _read_pid(path: Path) -> int:
    await wait_until(
        lambda: path.exists() and path.read_text().strip().isdigit(),
        timeout=10,
        interval=0.01,
        message=f"a pid in {path}",
    )
    return int(path.read_text())


async def test_captures_output_and_exit_code() -> None:
    done = await proc.run([PY, "-c", "import sys; print('out'); print('err', file=sys.stderr)"])
    assert done.returncode == 0
    assert done.stdout == b"out\n" and done.stderr == b"err\n"
    assert done.argv == (PY, "-c", "import sys; print('out'); print('err', file=sys.stderr)")


async def test_input_is_passed_and_env_replaced() -> None:
    script = "import os, sys; sys.stdout.write(sys.stdin.read().upper() + os.environ['K'])"
    done = await proc.run([PY, "-c", script], input=b"hello ", env={"K": "v"})
    assert done.stdout == b"HELLO v"


async def test_no_input_reads_dev_null() -> None:
    done = await proc.run([PY, "-c", "import sys; print(repr(sys.stdin.read()))"])
    assert done.stdout == b"''\n"


async def test_non_zero_exit_carries_command_code_and_stderr() -> None:
    argv = [PY, "-c", "import sys; sys.stderr.write('it broke'); sys.exit(3)"]
    with pytest.raises(proc.CommandError) as caught:
        await proc.run(argv)
    error = caught.value
    assert error.argv == tuple(argv) and error.returncode == 3
    assert error.stderr == b"it broke" and error.output == "it broke"
    assert "exit status 3" in str(error) and "it broke" in str(error) and PY in str(error)
    assert not isinstance(error, TimeoutError)


async def test_unchecked_exit_is_returned() -> None:
    done = await proc.run([PY, "-c", "raise SystemExit(4)"], check=False)
    assert done.returncode == 4


async def test_missing_program_is_an_os_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        await proc.run([str(tmp_path / "no-such-program")])


async def test_timeout_kills_and_reaps(tmp_path: Path) -> None:
    pidfile = tmp_path / "pid"
    script = f"import os, time; open({str(pidfile)!r}, 'w').write(str(os.getpid())); time.sleep(60)"
    started = time.monotonic()
    with pytest.raises(proc.CommandTimeout) as caught:
        await proc.run([PY, "-c", script], timeout=1.0)
    assert time.monotonic() - started < 10
    error = caught.value
    assert isinstance(error, TimeoutError) and isinstance(error, proc.CommandError)
    assert error.timeout == 1.0 and error.returncode == -9
    assert "timed out after 1s" in str(error)
    assert _gone(int(pidfile.read_text()))  # killed and reaped: no zombie either


async def test_cancel_kills_and_reaps(tmp_path: Path) -> None:
    pidfile = tmp_path / "pid"
    script = f"import os, time; open({str(pidfile)!r}, 'w').write(str(os.getpid())); time.sleep(60)"
    task = asyncio.create_task(proc.run([PY, "-c", script], timeout=None))
    pid = await _read_pid(pidfile)
    assert not _gone(pid)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert _gone(pid)  # by the time the cancellation is seen, the process is reaped


async def test_an_outer_timeout_is_not_ours(tmp_path: Path) -> None:
    pidfile = tmp_path / "pid"
    script = f"import os, time; open({str(pidfile)!r}, 'w').write(str(os.getpid())); time.sleep(60)"
    with pytest.raises(TimeoutError) as caught:
        async with asyncio.timeout(1.0):
            await proc.run([PY, "-c", script], timeout=30)
    assert not isinstance(caught.value, proc.CommandTimeout)
    assert _gone(int(pidfile.read_text()))


async def test_new_session_kills_the_whole_group(tmp_path: Path) -> None:
    pidfile = tmp_path / "pid"
    child = f"import os, time; open({str(pidfile)!r}, 'w').write(str(os.getpid())); time.sleep(60)"
    script = (
        "import subprocess, sys, time; "
        f"subprocess.Popen([sys.executable, '-c', {child!r}]); time.sleep(60)"
    )
    task = asyncio.create_task(proc.run([PY, "-c", script], start_new_session=True))
    grandchild = await _read_pid(pidfile)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    # the grandchild is not ours to reap (init adopts it): wait for it to be gone
    await wait_until(
        lambda: _gone(grandchild) or _zombie(grandchild),
        timeout=10,
        interval=0.01,
        message=f"the grandchild {grandchild} to be gone",
    )


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] == "Z"
    except (OSError, IndexError):
        return True


async def test_terminate_hook_runs_before_the_kill(tmp_path: Path) -> None:
    seen: list[int] = []

    async def terminate(process: proc.Process) -> None:
        seen.append(process.pid)
        process.terminate()
        await process.wait()

    pidfile = tmp_path / "pid"
    script = f"import os, time; open({str(pidfile)!r}, 'w').write(str(os.getpid())); time.sleep(60)"
    with pytest.raises(proc.CommandTimeout) as caught:
        await proc.run([PY, "-c", script], timeout=1.0, terminate=terminate)
    pid = int(pidfile.read_text())
    assert seen == [pid] and _gone(pid)
    assert caught.value.returncode == -15  # the hook's SIGTERM ended it


async def test_a_failing_terminate_hook_still_kills(tmp_path: Path) -> None:
    async def terminate(process: proc.Process) -> None:
        raise RuntimeError("hook broke")

    pidfile = tmp_path / "pid"
    script = f"import os, time; open({str(pidfile)!r}, 'w').write(str(os.getpid())); time.sleep(60)"
    with pytest.raises(proc.CommandTimeout):
        await proc.run([PY, "-c", script], timeout=1.0, terminate=terminate)
    assert _gone(int(pidfile.read_text()))


async def test_pass_fds_and_cwd(tmp_path: Path) -> None:
    read_fd, write_fd = os.pipe()
    try:
        script = f"import os; os.write({write_fd}, os.getcwd().encode())"
        await proc.run([PY, "-c", script], pass_fds=(write_fd,), cwd=tmp_path)
        os.close(write_fd)
        write_fd = -1
        assert os.read(read_fd, 4096) == str(tmp_path).encode()
    finally:
        os.close(read_fd)
        if write_fd >= 0:
            os.close(write_fd)
