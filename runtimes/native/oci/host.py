"""The :class:`SpecDefaults` this host implies: read once, at start-up, off the event loop."""

from __future__ import annotations

import asyncio
import dataclasses
import platform
from pathlib import Path
from typing import Any, Final

from runtimes.native.oci import cgroups
from runtimes.native.oci.devices import list_host_devices
from runtimes.native.oci.spec import ALL_CAPABILITIES, SpecDefaults

#: ``uname -m`` -> GOARCH, the spelling seccomp profiles use.
GOARCH: Final = {
    "x86_64": "amd64",
    "aarch64": "arm64",
    "arm64": "arm64",
    "i386": "386",
    "i686": "386",
    "armv7l": "arm",
    "ppc64le": "ppc64le",
    "s390x": "s390x",
    "riscv64": "riscv64",
}


def capabilities_from_mask(mask: int) -> tuple[str, ...]:
    """Capability names of a ``CapBnd``-style bit mask (bits we have no name for are left out)."""
    return tuple(name for bit, name in enumerate(ALL_CAPABILITIES) if mask >> bit & 1)


def parse_status_mask(status: str, field: str = "CapBnd") -> int:
    for line in status.splitlines():
        key, _, value = line.partition(":")
        if key == field:
            return int(value.strip(), 16)
    raise ValueError(f"{field} not in /proc/self/status")


def read_spec_defaults(*, privileged_devices: bool = True, **overrides: Any) -> SpecDefaults:
    """This host's defaults (blocking); ``overrides`` replace any field."""
    oom = int(Path("/proc/self/oom_score_adj").read_text().strip())
    caps = capabilities_from_mask(parse_status_mask(Path("/proc/self/status").read_text()))
    layout = cgroups.read_layout()
    if layout.mode is cgroups.CgroupMode.UNIFIED:
        swap = False
    else:
        memory = layout.v1.get("memory", "")
        swap = bool(memory) and Path(memory, "memory.memsw.limit_in_bytes").exists()
    found = SpecDefaults(
        arch=GOARCH.get(platform.machine(), platform.machine()),
        min_oom_score_adj=oom,
        all_capabilities=caps,
        host_devices=list_host_devices() if privileged_devices else (),
        swap_accounting=swap,
    )
    return dataclasses.replace(found, **overrides)


async def spec_defaults(*, privileged_devices: bool = True, **overrides: Any) -> SpecDefaults:
    return await asyncio.to_thread(
        read_spec_defaults, privileged_devices=privileged_devices, **overrides
    )
