"""Container lifecycle hooks: postStart and preStop (the kubelet's ``lifecycle/handlers.go``).

:func:`run_handler` runs one ``LifecycleHandler`` and returns ``None`` on success or the
message the kubelet puts in its ``FailedPostStartHook`` event (a failed preStop hook's
message only goes to the log; its ``FailedPreStopHook`` event says "PreStopHook failed"):

* ``exec``: the command runs through ``exec_runner`` with a CRI timeout of 0 (none), as the
  kubelet does; a non-zero exit code fails with
  ``Exec lifecycle hook ([cmd]) for Container "c" in Pod "name_ns(uid)" failed - error:
  command 'cmd' exited with N: <stderr>, message: "<stdout+stderr>"``.
* ``httpGet``: built like an HTTP probe (``host`` defaults to the pod IP, port by number or
  name, the hook's headers, ``User-Agent: kube-lifecycle/<major>.<minor>``) and sent by a
  default HTTP client: redirects are followed (10 at most), certificates are verified, and
  the status code is *not* looked at -- only a request that gets no response fails
  (``HTTP lifecycle hook (/path) for Container ... failed - error: ...``).
* ``sleep``: waits ``seconds``; cut short by ``timeout`` it fails with "container
  terminated before sleep hook finished".

``timeout`` bounds the whole handler (the kubelet bounds preStop by the grace period and
postStart not at all; pass ``None`` for no bound). Left out: the kubelet's retry over plain
HTTP when an HTTPS hook gets an HTTP answer (``LifecycleHTTPFallback``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Final

from minikubelet.api.pod import ContainerPort, Pod
from minikubelet.errors import CRIError, DeadlineExceeded
from minikubelet.prober.probe import (
    ExecRunner,
    HTTPGetError,
    PortError,
    command_output,
    go_duration,
    go_quote,
    http_get,
    http_get_request,
)

#: Event reasons the caller records with the returned message.
REASON_FAILED_POST_START_HOOK: Final = "FailedPostStartHook"
REASON_FAILED_PRE_STOP_HOOK: Final = "FailedPreStopHook"

Sleeper = Callable[[float], Awaitable[None]]


def pod_desc(pod: Pod | None) -> str:
    """The kubelet's ``format.Pod``: ``name_namespace(uid)``."""
    if pod is None:
        return "<nil>"
    return f"{pod.name}_{pod.namespace}({pod.uid})"


async def run_handler(
    handler: Mapping[str, Any],
    *,
    container_id: str,
    pod_ip: str,
    container_ports: Sequence[ContainerPort],
    exec_runner: ExecRunner,
    timeout: float | None,
    pod: Pod | None = None,
    container_name: str = "",
    sleep: Sleeper = asyncio.sleep,
) -> str | None:
    """Run a postStart or preStop handler; ``None`` on success, else the failure message."""
    where = f"for Container {go_quote(container_name)} in Pod {go_quote(pod_desc(pod))}"
    exec_action = handler.get("exec")
    http_action = handler.get("httpGet")
    sleep_action = handler.get("sleep")
    if isinstance(exec_action, Mapping):
        command = [str(arg) for arg in exec_action.get("command") or ()]
        error, output = await _bounded(_run_exec(command, container_id, exec_runner), timeout)
        if error is None:
            return None
        return (
            f"Exec lifecycle hook ([{' '.join(command)}]) {where} failed - error: {error}, "
            f"message: {go_quote(output)}"
        )
    if isinstance(http_action, Mapping):
        path = str(http_action.get("path") or "")
        error, _ = await _bounded(_run_http(http_action, pod_ip, container_ports, timeout), timeout)
        if error is None:
            return None
        return f"HTTP lifecycle hook ({path}) {where} failed - error: {error}"
    if isinstance(sleep_action, Mapping):
        seconds = sleep_action.get("seconds")
        if not isinstance(seconds, int) or isinstance(seconds, bool) or seconds < 0:
            return f"Cannot run handler: invalid sleep seconds: {seconds!r}"
        if timeout is not None and seconds > timeout:
            await sleep(max(timeout, 0.0))
            return (
                f"Sleep lifecycle hook ({seconds}) {where} failed - error: "
                "container terminated before sleep hook finished"
            )
        await sleep(float(seconds))
        return None
    return f"Cannot run handler: invalid handler: {dict(handler)!r}"


async def _bounded(
    work: Awaitable[tuple[str | None, str]], timeout: float | None
) -> tuple[str | None, str]:
    if timeout is None:
        return await work
    try:
        async with asyncio.timeout(timeout):
            return await work
    except TimeoutError:
        return f"hook did not complete within {go_duration(timeout)}", ""


async def _run_exec(
    command: list[str], container_id: str, exec_runner: ExecRunner
) -> tuple[str | None, str]:
    try:
        result = await exec_runner(container_id, command, 0)
    except DeadlineExceeded:
        return f"command {go_quote(' '.join(command))} timed out", ""
    except CRIError as exc:
        return str(exc), ""
    output = command_output(result, limit=len(result.stdout) + len(result.stderr))
    if result.exit_code == 0:
        return None, output
    stderr = bytes(result.stderr).decode("utf-8", "replace")
    return f"command '{' '.join(command)}' exited with {result.exit_code}: {stderr}", output


async def _run_http(
    action: Mapping[str, Any],
    pod_ip: str,
    container_ports: Sequence[ContainerPort],
    timeout: float | None,
) -> tuple[str | None, str]:
    if not action.get("host") and not pod_ip:
        return "failed to find networking container: no pod IP", ""
    try:
        request = http_get_request(
            action, pod_ip=pod_ip, container_ports=container_ports, purpose="lifecycle"
        )
    except PortError as exc:
        return str(exc), ""
    try:
        await http_get(request, timeout=timeout, follow_non_local_redirects=True, verify_tls=True)
    except HTTPGetError as exc:
        return str(exc), ""
    return None, ""
