"""The CLI's client-side commands: ``get pods``, ``describe pod``, ``logs``, ``exec``, ``events``.

Each is an async function over a :class:`~minikubelet.server.client.LocalClient`
that prints to the text streams it is given and returns the exit code, so the
CLI only parses flags and the tests only read strings. Messages follow kubectl's:
``Error from server (NotFound): pods "web" not found``, ``Defaulted container
"app" out of: app, sidecar``, ``command terminated with exit code 3``.

A pod is named ``NAME`` (namespace ``default``) or ``NAMESPACE/NAME``. Tables,
ages and ``describe`` come from :mod:`minikubelet.status.printer`, imported
when used.
"""

from __future__ import annotations

import argparse
import codecs
import functools
import inspect
import json
import sys
from collections.abc import Callable, Coroutine, Sequence
from datetime import UTC, datetime
from typing import Any, BinaryIO, Final, Literal, ParamSpec, TextIO, cast

import yaml

from minikubelet import errors
from minikubelet.cli.common import Subcommands, default_root_dir, run_command
from minikubelet.server.client import KubeletUnreachable, LocalClient

DEFAULT_NAMESPACE: Final = "default"
#: The annotation that names the container ``logs`` and ``exec`` pick without ``-c``.
DEFAULT_CONTAINER_ANNOTATION: Final = "kubectl.kubernetes.io/default-container"

#: ``kubectl get events -A`` columns.
EVENT_COLUMNS: Final = ["NAMESPACE", "LAST SEEN", "TYPE", "REASON", "OBJECT", "MESSAGE"]

Output = Literal["table", "wide", "json", "yaml"]
P = ParamSpec("P")


def _reports_errors(
    command: Callable[P, Coroutine[Any, Any, int]],
) -> Callable[P, Coroutine[Any, Any, int]]:
    """Turn the kubelet's error answers and its absence into a message and exit code 1.

    The message goes to the ``err`` keyword argument (standard error when not given).
    """

    signature = inspect.signature(command)

    @functools.wraps(command)
    async def run(*args: P.args, **kwargs: P.kwargs) -> int:
        err = signature.bind(*args, **kwargs).arguments.get("err")
        stream = cast(TextIO, err) if err is not None else sys.stderr
        try:
            return await command(*args, **kwargs)
        except KubeletUnreachable as exc:
            print(f"error: {exc}", file=stream)
        except TimeoutError:
            print("error: the kubelet did not answer in time", file=stream)
        except errors.InvalidArgument as exc:
            print(f"error: {exc.message}", file=stream)
        except errors.CRIError as exc:
            print(f"Error from server ({type(exc).__name__}): {exc.message}", file=stream)
        return 1

    return run


class _BytesWriter:
    """Bytes to a text stream: as they are to its binary buffer when it has one (a real
    stdout), else decoded as UTF-8 (a bad byte becomes U+FFFD), flushed at every write."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self._buffer: BinaryIO | None = getattr(stream, "buffer", None)
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def write(self, data: bytes) -> None:
        if self._buffer is not None:
            self._stream.flush()
            self._buffer.write(data)
            self._buffer.flush()
        else:
            self._stream.write(self._decoder.decode(data))
            self._stream.flush()

    def close(self, data: bytes = b"") -> None:
        if self._buffer is not None:
            self.write(data)
        else:
            self._stream.write(self._decoder.decode(data, final=True))
            self._stream.flush()


def split_name(name: str) -> tuple[str, str]:
    """``NAME`` or ``NAMESPACE/NAME`` as ``(namespace, name)``."""
    namespace, slash, rest = name.partition("/")
    if not slash:
        return DEFAULT_NAMESPACE, name
    if not namespace or not rest or "/" in rest:
        raise errors.InvalidArgument(f"a pod is NAME or NAMESPACE/NAME, not {name!r}")
    return namespace, rest


def _namespace(pod: dict[str, Any]) -> str:
    return str((pod.get("metadata") or {}).get("namespace") or DEFAULT_NAMESPACE)


async def _find_pod(client: LocalClient, name: str) -> dict[str, Any]:
    namespace, pod_name = split_name(name)
    for pod in await client.pods():
        if (pod.get("metadata") or {}).get("name") == pod_name and _namespace(pod) == namespace:
            return pod
    where = "" if namespace == DEFAULT_NAMESPACE else f' in namespace "{namespace}"'
    raise errors.NotFound(f'pods "{pod_name}" not found{where}')


def _container_names(pod: dict[str, Any]) -> list[tuple[str, str]]:
    """Every container of the pod with its kind's suffix as kubectl lists them."""
    spec = pod.get("spec") or {}
    names: list[tuple[str, str]] = []
    for key, suffix in (
        ("containers", ""),
        ("initContainers", " (init)"),
        ("ephemeralContainers", " (ephem)"),
    ):
        names += [(str(c.get("name")), suffix) for c in spec.get(key) or () if c.get("name")]
    return names


def choose_container(pod: dict[str, Any], container: str | None, err: TextIO) -> str:
    """``container`` if the pod has it; without one, the default container as kubectl picks
    it (the default-container annotation, else the first), saying so when there is a choice."""
    names = _container_names(pod)
    name = (pod.get("metadata") or {}).get("name", "")
    if container is not None:
        if container not in {n for n, _ in names}:
            raise errors.InvalidArgument(f"container {container} is not valid for pod {name}")
        return container
    annotations = (pod.get("metadata") or {}).get("annotations") or {}
    preferred = annotations.get(DEFAULT_CONTAINER_ANNOTATION)
    if preferred and preferred in {n for n, _ in names}:
        return str(preferred)
    main = [n for n, suffix in names if not suffix]
    if not main:
        raise errors.InvalidArgument(f"pod {name} has no containers")
    if len(names) > 1:
        listed = ", ".join(n + suffix for n, suffix in names)
        print(f'Defaulted container "{main[0]}" out of: {listed}', file=err)
    return main[0]


async def find_container(
    client: LocalClient, pod: str, container: str | None, err: TextIO
) -> tuple[str, str, str]:
    """(namespace, pod name, container) for ``POD [-c CONTAINER]`` as a command names it."""
    found = await _find_pod(client, pod)
    chosen = choose_container(found, container, err)
    return _namespace(found), str(found["metadata"]["name"]), chosen


@_reports_errors
async def get_pods(
    client: LocalClient, output: Output, out: TextIO, *, err: TextIO | None = None
) -> int:
    """``get pods``: every pod on the node, as a table or the v1 PodList."""
    err = err or sys.stderr
    if output in ("json", "yaml"):
        pod_list = await client.pod_list()
        if output == "json":
            out.write(json.dumps(pod_list, indent=4) + "\n")
        else:
            out.write(yaml.safe_dump(pod_list, sort_keys=False, default_flow_style=False))
        return 0
    from minikubelet.status.printer import format_table, pod_row

    pods = await client.pods()
    rejected = await client.rejected()
    if pods:
        now = datetime.now(UTC)
        out.write(format_table([pod_row(p, now) for p in pods], output == "wide"))
    else:
        print("No resources found", file=err)
    for manifest in rejected:
        where = str(manifest.get("source", "?"))
        if manifest.get("line") is not None:
            where += f":{manifest['line']}"
        print(f"Warning: manifest {where} was rejected: {manifest.get('reason', '')}", file=err)
    return 0


@_reports_errors
async def describe_pod(
    client: LocalClient, name: str, out: TextIO, *, err: TextIO | None = None
) -> int:
    """``describe pod NAME``: the pod and its events."""
    from minikubelet.status.printer import describe_pod as describe

    pod = await _find_pod(client, name)
    metadata = pod.get("metadata") or {}
    uid, namespace = metadata.get("uid"), _namespace(pod)

    def about_pod(event: dict[str, Any]) -> bool:
        involved = event.get("involvedObject") or {}
        if uid and involved.get("uid"):
            return bool(involved.get("uid") == uid)
        return bool(
            involved.get("name") == metadata.get("name")
            and (involved.get("namespace") or DEFAULT_NAMESPACE) == namespace
        )

    events = [e for e in await client.events() if about_pod(e)]
    text = describe(pod, events)
    out.write(text if text.endswith("\n") else text + "\n")
    return 0


@_reports_errors
async def logs(
    client: LocalClient,
    pod: str,
    container: str | None,
    follow: bool,
    previous: bool,
    tail: int | None,
    timestamps: bool,
    out: TextIO,
    *,
    err: TextIO | None = None,
) -> int:
    """``logs POD [-c CONTAINER] [-f] [-p] [--tail N] [--timestamps]``."""
    err = err or sys.stderr
    namespace, pod_name, chosen = await find_container(client, pod, container, err)
    writer = _BytesWriter(out)
    chunks = client.logs(
        namespace,
        pod_name,
        chosen,
        follow=follow,
        previous=previous,
        tail_lines=None if tail is None or tail < 0 else tail,
        timestamps=timestamps,
    )
    async for chunk in chunks:
        writer.write(chunk)
    writer.close()
    return 0


@_reports_errors
async def exec_(
    client: LocalClient,
    pod: str,
    container: str | None,
    cmd: Sequence[str],
    out: TextIO,
    err: TextIO,
    *,
    timeout: int = 0,
) -> int:
    """``exec POD [-c CONTAINER] -- CMD...``: the command's output, and its exit code as ours."""
    if not cmd:
        raise errors.InvalidArgument("you must specify at least one command for the container")
    namespace, pod_name, chosen = await find_container(client, pod, container, err)
    result = await client.exec(namespace, pod_name, chosen, list(cmd), timeout=timeout)
    _BytesWriter(out).close(result.stdout)
    _BytesWriter(err).close(result.stderr)
    if result.exit_code != 0:
        print(f"command terminated with exit code {result.exit_code}", file=err)
    err.flush()
    return result.exit_code


def _event_row(event: dict[str, Any], now: datetime) -> list[str]:
    from minikubelet.status.printer import human_duration, parse_time

    last = parse_time(
        event.get("lastTimestamp") or event.get("eventTime") or event.get("firstTimestamp")
    )
    seen = human_duration(now - last) if last is not None else "<unknown>"
    count = event.get("count") or 1
    if count > 1:
        seen += f" (x{count})"
    involved = event.get("involvedObject") or {}
    obj = f"{str(involved.get('kind', '')).lower()}/{involved.get('name', '')}"
    if involved.get("fieldPath"):
        obj += f" ({involved['fieldPath']})"
    return [
        str(involved.get("namespace") or (event.get("metadata") or {}).get("namespace", "")),
        seen,
        str(event.get("type", "")),
        str(event.get("reason", "")),
        obj,
        str(event.get("message", "")).replace("\n", " "),
    ]


@_reports_errors
async def events(client: LocalClient, out: TextIO, *, err: TextIO | None = None) -> int:
    """``events``: what happened on the node, oldest first, as ``kubectl get events -A``."""
    items = await client.events()
    if not items:
        print("No events found", file=err or sys.stderr)
        return 0
    from minikubelet.status.printer import tabwrite

    now = datetime.now(UTC)
    rows = [EVENT_COLUMNS, *(_event_row(e, now) for e in items)]
    out.write(tabwrite("".join("\t".join(r) + "\n" for r in rows), minwidth=6, padding=3))
    return 0


async def trace(
    client: LocalClient,
    pod: str | None,
    follow: bool,
    fmt: str,
    out: TextIO,
) -> int:
    """``minikubelet trace``: the kubelet's CRI calls as text, JSON lines or a Mermaid diagram."""
    from minikubelet.cri.trace import format_text, format_text_header, to_mermaid

    records = client.trace(pod=pod, follow=follow and fmt != "mermaid")
    if fmt == "mermaid":
        collected = [r async for r in records]
        out.write(to_mermaid(collected, title=f"pod {pod}" if pod else ""))
        return 0
    if fmt == "text":
        out.write(format_text_header() + "\n")
    async for rec in records:
        out.write((rec.to_json() if fmt == "jsonl" else format_text(rec)) + "\n")
        out.flush()
    return 0


def command(args: argparse.Namespace) -> int:
    """get / describe / logs / exec / events: ask the running kubelet over its local API."""
    from pathlib import Path

    from minikubelet.cli import stream as streamcmds
    from minikubelet.cli import terminal
    from minikubelet.server.client import KubeletUnreachable, LocalClient

    root = Path(args.root_dir) if args.root_dir else default_root_dir()
    use_tty, term = False, streamcmds.Terminal()
    if getattr(args, "tty", False):
        stdin_fd = sys.stdin.fileno()
        if args.stdin and terminal.is_terminal(stdin_fd):
            use_tty = True
            term = streamcmds.Terminal(stdin_fd, lambda: terminal.size(stdin_fd))
        else:  # as kubectl: a tty needs -i and a terminal on stdin
            print(
                "Unable to use a TTY - input is not a terminal or the right kind of file",
                file=sys.stderr,
            )

    streams = (sys.stdout, sys.stderr)
    interactive: dict[str, Any] = {
        "stdin": streamcmds.stdin_chunks(getattr(args, "stdin", False)),
        "tty": use_tty,
        "term": term,
        "transport": getattr(args, "transport", "websocket"),
    }

    async def main() -> int:
        async with LocalClient(root / "kubelet.sock") as client:
            if args.command == "get":
                return await get_pods(client, args.output, sys.stdout)
            if args.command == "describe":
                return await describe_pod(client, args.name, sys.stdout)
            if args.command == "logs":
                return await logs(
                    client,
                    args.pod,
                    args.container,
                    args.follow,
                    args.previous,
                    args.tail,
                    args.timestamps,
                    sys.stdout,
                )
            if args.command == "exec" and (args.stdin or args.tty):
                return await streamcmds.exec_stream(
                    client, args.pod, args.container, args.cmd, *streams, **interactive
                )
            if args.command == "exec":
                return await exec_(
                    client, args.pod, args.container, args.cmd, sys.stdout, sys.stderr
                )
            if args.command == "attach":
                return await streamcmds.attach(
                    client, args.pod, args.container, *streams, **interactive
                )
            if args.command == "port-forward":
                return await streamcmds.port_forward(
                    client, args.pod, args.ports, sys.stdout, sys.stderr, address=args.address
                )
            if args.command == "trace":
                return await trace(client, args.pod, args.follow, args.format, sys.stdout)
            return await events(client, sys.stdout)

    try:
        return run_command(main())
    except KubeletUnreachable as exc:
        print(f"minikubelet {args.command}: {exc}", file=sys.stderr)
        return 1


def add_parsers(sub: Subcommands) -> None:
    """Add the commands that ask a running kubelet (get, describe, logs, exec, attach,
    port-forward, events, trace)."""

    def client_parser(name: str, help_text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text)
        p.add_argument("--root-dir", help="the kubelet's root dir (as given to run)")
        p.set_defaults(func=command)
        return p

    get = client_parser("get", "list pods as kubectl does")
    get.add_argument("resource", choices=["pods", "pod", "po"])
    get.add_argument("-o", "--output", choices=["table", "wide", "json", "yaml"], default="table")
    describe = client_parser("describe", "show one pod in detail, with its events")
    describe.add_argument("resource", choices=["pod", "pods", "po"])
    describe.add_argument("name", help="NAME or NAMESPACE/NAME")
    logs = client_parser("logs", "print a container's log")
    logs.add_argument("pod", help="NAME or NAMESPACE/NAME")
    logs.add_argument("-c", "--container")
    logs.add_argument("-f", "--follow", action="store_true")
    logs.add_argument("-p", "--previous", action="store_true")
    logs.add_argument("--tail", type=int, default=None)
    logs.add_argument("--timestamps", action="store_true")
    exec_ = client_parser(
        "exec",
        "run a command in a container (-i/-t: streamed through CRI Exec, else CRI ExecSync)",
    )
    exec_.add_argument("pod", help="NAME or NAMESPACE/NAME")
    exec_.add_argument("-c", "--container")
    exec_.add_argument("cmd", nargs="*", help="-- COMMAND [ARGS...]")

    def stream_flags(p: argparse.ArgumentParser) -> None:
        p.add_argument("-i", "--stdin", action="store_true", help="pass our stdin to it")
        p.add_argument("-t", "--tty", action="store_true", help="a terminal (with -i)")
        p.add_argument(
            "--transport",
            choices=["websocket", "spdy"],
            default="websocket",
            help="how to talk to the runtime's streaming server (default websocket)",
        )

    stream_flags(exec_)
    attach = client_parser("attach", "attach to a running container's stdio (CRI Attach)")
    attach.add_argument("pod", help="NAME or NAMESPACE/NAME")
    attach.add_argument("-c", "--container")
    stream_flags(attach)
    forward = client_parser(
        "port-forward", "forward local ports into a pod (CRI PortForward, over SPDY)"
    )
    forward.add_argument("pod", help="NAME or NAMESPACE/NAME")
    forward.add_argument("ports", nargs="+", help="[LOCAL]:REMOTE or PORT")
    forward.add_argument("--address", default="127.0.0.1", help="where to listen (loopback)")
    client_parser("events", "list the node's events")
    trace = client_parser("trace", "the kubelet's CRI calls (kubelet -> runtime), as recorded")
    trace.add_argument("--pod", help="only the calls about this pod (NAME or NAMESPACE/NAME)")
    trace.add_argument("-f", "--follow", action="store_true", help="keep printing new calls")
    trace.add_argument("--format", choices=["text", "jsonl", "mermaid"], default="text")
