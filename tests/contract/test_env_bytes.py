"""An environment value that is not UTF-8 is accepted, as cri-api v0.36.3+ clients send it.

``KeyValue.value`` is ``bytes`` on the wire: the client here sends raw bytes, as the
kubelet does for a Secret holding binary data. The simulated runtime hands the process
the exact bytes. The runtimes that start real processes with runc (native, Docker,
containerd) deliver what runc can carry: its config is JSON read by Go, which turns each
byte that is not UTF-8 into U+FFFD, and leaves the rest, multi-byte characters included,
as sent. That is also what CRI-O and containerd give a container.
"""

from __future__ import annotations

from pathlib import Path

from minikubelet.cri.client import CRIClient
from minikubelet.cri.v1 import api_pb2 as pb
from tests.contract.conftest import RuntimeUnderTest
from tests.contract.pods import container_config, pod, sandbox_config
from tests.harness.wait import wait_until

VALUE = b"caf\xc3\xa9 \xff\xfe\x80 end"


def as_runc_delivers(value: bytes) -> bytes:
    """Go's JSON decoding: every byte that is not part of valid UTF-8 becomes U+FFFD."""
    text = value.decode("utf-8", "surrogateescape")
    return "".join("\ufffd" if "\udc80" <= ch <= "\udcff" else ch for ch in text).encode()


def expected(rt: RuntimeUnderTest) -> bytes:
    return VALUE if rt.name == "fake" else as_runc_delivers(VALUE)


async def test_an_env_value_that_is_not_utf8_reaches_the_process(
    cri: CRIClient, rt: RuntimeUnderTest, log_dir: Path
) -> None:
    sb_config = sandbox_config(log_dir)
    async with pod(cri, sb_config) as sandbox_id:
        config = container_config(rt.busybox, "binary-env", ["sh", "-c", 'echo "$X"; sleep 3600'])
        config.envs.append(pb.KeyValue(key="X", value=VALUE))
        cid = await cri.create_container(sandbox_id, config, sb_config)
        await cri.start_container(cid)
        log = log_dir / "binary-env" / "0.log"

        async def first_line() -> bytes | None:
            lines = log.read_bytes().splitlines() if log.exists() else []
            return lines[0].split(b" ", 3)[3] if lines else None

        assert await wait_until(first_line, timeout=30, message="the container's echo") == (
            expected(rt)
        )
        printed = await cri.exec_sync(cid, ["sh", "-c", 'echo "$X"'], timeout=10)
        assert (printed.exit_code, printed.stdout) == (0, expected(rt) + b"\n")
        await cri.stop_container(cid, 0)
        await cri.remove_container(cid)
