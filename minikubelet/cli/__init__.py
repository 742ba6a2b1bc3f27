"""The ``minikubelet`` command: flags become objects, objects run in one task group."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
from collections.abc import Coroutine, Sequence
from typing import Any

from minikubelet.cri.endpoint import InvalidEndpoint, parse_endpoint

log = logging.getLogger("minikubelet")


def _run(main: Coroutine[Any, Any, int | None]) -> int:
    """Run ``main``; SIGINT/SIGTERM cancel it, which is a clean exit."""

    async def guarded() -> int:
        task = asyncio.current_task()
        assert task is not None
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, task.cancel)
        try:
            return (await main) or 0
        except asyncio.CancelledError:
            return 0

    return asyncio.run(guarded())


def _leaves(exc: BaseException) -> list[BaseException]:
    """The errors inside (possibly nested) exception groups, as a person wants to read them."""
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for inner in exc.exceptions for leaf in _leaves(inner)]
    return [exc]


def _cmd_runtime_serve(args: argparse.Namespace) -> int:
    try:
        parse_endpoint(args.listen)
    except InvalidEndpoint as exc:
        print(f"minikubelet runtime serve: {exc}", file=sys.stderr)
        return 1
    main: Coroutine[Any, Any, None]
    if args.runtime == "fake":
        from runtimes.fake.main import serve

        patterns = args.fail_image if args.fail_image is not None else None
        kwargs: dict[str, Any] = {}
        if patterns is not None:
            kwargs["fail_patterns"] = patterns
        main = serve(args.listen, **kwargs)
    elif args.runtime == "docker":
        from runtimes.docker.client import DockerClient
        from runtimes.docker.images import Mirror
        from runtimes.docker.main import serve as serve_docker

        try:
            DockerClient(args.docker_host)
            for mirror in args.registry_mirror or ():
                Mirror.parse(mirror)
        except ValueError as exc:
            print(f"minikubelet runtime serve: {exc}", file=sys.stderr)
            return 1
        main = serve_docker(
            args.listen,
            args.docker_host,
            registry_mirrors=args.registry_mirror or (),
            streaming_address=args.streaming_address,
        )
    elif args.runtime == "native":
        from pathlib import Path

        from runtimes.native.main import DEFAULT_ROOT, DEFAULT_RUN_ROOT, NotSupportedHere, preflight
        from runtimes.native.main import serve as serve_native

        try:
            preflight()
        except NotSupportedHere as exc:
            print(f"minikubelet runtime serve: {exc}", file=sys.stderr)
            return 1
        main = serve_native(
            args.listen,
            root=Path(args.root) if args.root else DEFAULT_ROOT,
            run_root=Path(args.run_root) if args.run_root else DEFAULT_RUN_ROOT,
            insecure_registries=args.insecure_registry or (),
            registry_mirrors=args.registry_mirror or (),
            config_file=Path(args.config) if args.config else None,
            streaming_address=args.streaming_address,
        )
    else:
        print(
            f"minikubelet runtime serve: runtime {args.runtime!r} is not available yet",
            file=sys.stderr,
        )
        return 2
    try:
        return _run(main)
    except (OSError, RuntimeError, ExceptionGroup) as exc:
        errors = _leaves(exc)
        if not all(isinstance(e, OSError | RuntimeError) for e in errors):
            raise
        for error in errors:
            print(f"minikubelet runtime serve: {error}", file=sys.stderr)
        return 1


def _cmd_demo(args: argparse.Namespace) -> int:
    from minikubelet.cli.demo import pod_life

    return _run(
        pod_life(
            args.manifest, runtime=args.runtime, trace_file=args.trace_file, output=args.output
        )
    )


def _cmd_run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from minikubelet.cli.launch import LaunchError
    from minikubelet.cli.run import default_manifests, run_node

    if args.runtime == "native":
        from runtimes.native.main import NotSupportedHere, preflight

        try:
            preflight()
        except NotSupportedHere as exc:
            print(
                f"minikubelet run: {exc}.\nInstall what is missing (scripts/install-deps), "
                "or run the simulated runtime: minikubelet run --runtime fake",
                file=sys.stderr,
            )
            return 1
    manifests = Path(args.manifests) if args.manifests else default_manifests()
    tuning = {
        key: value
        for key, value in (
            ("crash_loop_initial", args.crash_loop_initial),
            ("crash_loop_max", args.crash_loop_max),
            ("relist_period", args.relist_period),
            ("file_check_period", args.file_check_period),
            ("container_log_max_size", args.container_log_max_size),
            ("container_log_max_files", args.container_log_max_files),
            ("container_log_monitor_interval", args.container_log_monitor_interval),
            ("shutdown_grace_period", args.shutdown_grace_period),
        )
        if value is not None
    }
    try:
        return _run(
            run_node(
                runtime=args.runtime,
                manifests=manifests,
                manifest_url=args.manifest_url,
                node_name=args.node_name,
                root_dir=Path(args.root_dir) if args.root_dir else None,
                node_ip=args.node_ip,
                trace_file=Path(args.trace_file) if args.trace_file else None,
                tuning=tuning,
                runtime_args=args.runtime_arg or (),
            )
        )
    except (OSError, LaunchError, InvalidEndpoint, ExceptionGroup) as exc:
        errors = _leaves(exc)
        if not all(isinstance(e, OSError | RuntimeError | ValueError) for e in errors):
            raise
        for error in errors:
            print(f"minikubelet run: {error}", file=sys.stderr)
        return 1


def _client_command(args: argparse.Namespace) -> int:
    """get / describe / logs / exec / events: ask the running kubelet over its local API."""
    from pathlib import Path

    from minikubelet.cli import client as commands
    from minikubelet.cli import stream as streamcmds
    from minikubelet.cli import terminal
    from minikubelet.cli.run import default_root_dir
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

    async def main() -> int:
        async with LocalClient(root / "kubelet.sock") as client:
            if args.command == "get":
                return await commands.get_pods(client, args.output, sys.stdout)
            if args.command == "describe":
                return await commands.describe_pod(client, args.name, sys.stdout)
            if args.command == "logs":
                return await commands.logs(
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
                    client,
                    args.pod,
                    args.container,
                    args.cmd,
                    sys.stdout,
                    sys.stderr,
                    stdin=streamcmds.stdin_chunks(args.stdin),
                    tty=use_tty,
                    term=term,
                    transport=args.transport,
                )
            if args.command == "exec":
                return await commands.exec_(
                    client, args.pod, args.container, args.cmd, sys.stdout, sys.stderr
                )
            if args.command == "attach":
                return await streamcmds.attach(
                    client,
                    args.pod,
                    args.container,
                    sys.stdout,
                    sys.stderr,
                    stdin=streamcmds.stdin_chunks(args.stdin),
                    tty=use_tty,
                    term=term,
                    transport=args.transport,
                )
            if args.command == "port-forward":
                return await streamcmds.port_forward(
                    client, args.pod, args.ports, sys.stdout, sys.stderr, address=args.address
                )
            if args.command == "trace":
                return await commands.trace(client, args.pod, args.follow, args.format, sys.stdout)
            return await commands.events(client, sys.stdout)

    try:
        return _run(main())
    except KubeletUnreachable as exc:
        print(f"minikubelet {args.command}: {exc}", file=sys.stderr)
        return 1


def _cmd_tui(args: argparse.Namespace) -> int:
    """The dashboard: a terminal view of a running kubelet, through its local API."""
    from pathlib import Path

    from minikubelet.cli.run import default_root_dir
    from tui.app import run_app  # the composition root may name the dashboard

    return run_app(Path(args.root_dir) if args.root_dir else default_root_dir())


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="minikubelet",
        description="A Kubernetes node in Python, driving containers through the CRI.",
    )
    parser.add_argument(
        "-v", "--verbose", action="count", default=0, help="more log output (-v info, -vv debug)"
    )
    sub = parser.add_subparsers(dest="command", required=True)

    runtime = sub.add_parser("runtime", help="container runtimes shipped with minikubelet")
    runtime_sub = runtime.add_subparsers(dest="runtime_command", required=True)
    serve = runtime_sub.add_parser("serve", help="serve a CRI runtime on a socket")
    serve.add_argument(
        "runtime", choices=["fake", "native", "docker"], help="which runtime to serve"
    )
    serve.add_argument(
        "--listen", required=True, help="unix:///PATH (made 0600) or tcp://HOST:PORT"
    )
    serve.add_argument(
        "--fail-image",
        action="append",
        metavar="PATTERN",
        help="fake: references matching this glob fail to pull (default: *.invalid/*); repeatable",
    )
    serve.add_argument(
        "--streaming-address",
        default="127.0.0.1:0",
        metavar="HOST:PORT",
        help="native, docker: where Exec/Attach/PortForward URLs point (default 127.0.0.1:0, "
        "loopback on any free port)",
    )
    serve.add_argument(
        "--docker-host",
        default="unix:///var/run/docker.sock",
        help="docker: the dockerd API socket (default unix:///var/run/docker.sock)",
    )
    serve.add_argument(
        "--registry-mirror",
        action="append",
        metavar="HOST=URL",
        help="native, docker: pull images of registry HOST from URL instead; repeatable",
    )
    serve.add_argument(
        "--root", help="native: state, images and containers (default /var/lib/minikubelet/native)"
    )
    serve.add_argument(
        "--run-root",
        help="native: sockets, pinned namespaces, runc state (default /run/minikubelet/native)",
    )
    serve.add_argument(
        "--insecure-registry",
        action="append",
        metavar="HOST",
        help="native: plain HTTP (or unverified TLS) for this registry; repeatable",
    )
    serve.add_argument(
        "--config",
        help='native: registries file (TOML: [registry."HOST"] mirrors = [...], insecure = true)',
    )
    serve.set_defaults(func=_cmd_runtime_serve)

    run = sub.add_parser("run", help="run the kubelet on pods from a manifest directory")
    run.add_argument(
        "--manifests",
        metavar="DIR",
        help="static pod manifests (default: the project's manifests/ in a checkout)",
    )
    run.add_argument("--manifest-url", metavar="URL", help="also poll pods from this URL")
    run.add_argument(
        "--runtime",
        default="native",
        help="a bundled runtime started for this node (native, the default: runc, as root; "
        "fake: simulated; docker: over dockerd), or the endpoint of a running one, "
        "unix:///PATH",
    )
    run.add_argument(
        "--shutdown-grace-period",
        type=int,
        metavar="S",
        help="when the node stops, stop and remove its pods within S seconds "
        "(graceful node shutdown; default 0: pods keep running, as on a kubelet restart)",
    )
    run.add_argument(
        "--runtime-arg",
        action="append",
        metavar="ARG",
        help="pass ARG to a bundled runtime, e.g. --runtime-arg=--registry-mirror=H=URL",
    )
    run.add_argument("--node-name", help="default: the host name")
    run.add_argument("--node-ip", help="the node's address shown as hostIP")
    run.add_argument(
        "--root-dir",
        help="state, sockets and pod logs "
        "(default: /var/lib/minikubelet for root, else ~/.local/state/minikubelet)",
    )
    run.add_argument("--trace-file", help="append every CRI call to this JSON-lines file")
    run.add_argument(
        "--crash-loop-initial",
        type=float,
        metavar="S",
        help="first crash-loop back-off in seconds (default 10)",
    )
    run.add_argument(
        "--crash-loop-max",
        type=float,
        metavar="S",
        help="crash-loop back-off cap in seconds (default 300)",
    )
    run.add_argument("--relist-period", type=float, metavar="S", help="PLEG relist (default 1)")
    run.add_argument(
        "--file-check-period",
        type=float,
        metavar="S",
        help="manifest directory resync (default 20)",
    )
    run.add_argument(
        "--container-log-max-size",
        type=int,
        metavar="BYTES",
        help="rotate a container's log beyond this size (default 10 MiB)",
    )
    run.add_argument(
        "--container-log-max-files",
        type=int,
        metavar="N",
        help="log files kept per container, the live one included (default 5)",
    )
    run.add_argument(
        "--container-log-monitor-interval",
        type=float,
        metavar="S",
        help="how often log sizes are checked (default 10)",
    )
    run.set_defaults(func=_cmd_run)

    def client_parser(name: str, help_text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text)
        p.add_argument("--root-dir", help="the kubelet's root dir (as given to run)")
        p.set_defaults(func=_client_command)
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

    tui = sub.add_parser("tui", help="a k9s-like dashboard of a running kubelet")
    tui.add_argument("--root-dir", help="the kubelet's root dir (as given to run)")
    tui.set_defaults(func=_cmd_tui)

    demo = sub.add_parser(
        "demo",
        help="play one pod's life through a CRI runtime and print every CRI call",
    )
    demo.add_argument("manifest", help="a Pod YAML file (e.g. manifests/hello.yaml)")
    demo.add_argument(
        "--runtime",
        default="fake",
        help="'fake' (started for the demo) or a CRI endpoint unix:///PATH",
    )
    demo.add_argument("--trace-file", help="also write the trace as JSON lines to this file")
    demo.add_argument("-o", "--output", choices=["text", "jsonl"], default="text")
    demo.set_defaults(func=_cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command: list[str] = []
    if "--" in argv:  # what follows is the command to exec, never our flags
        split = argv.index("--")
        argv, command = argv[:split], argv[split + 1 :]
    args = build_parser().parse_args(argv)
    if command:
        if getattr(args, "command", None) != "exec":
            build_parser().error("'--' is only for exec")
        args.cmd = [*args.cmd, *command]
    level = [logging.WARNING, logging.INFO, logging.DEBUG][min(args.verbose, 2)]
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)  # one line per API call
    with contextlib.suppress(BrokenPipeError):
        result: int = args.func(args)
        return result
    return 0


if __name__ == "__main__":
    sys.exit(main())
