"""``minikubelet runtime serve``: one of the bundled CRI runtimes as a server on a socket.

Part of the composition root: the one place (with ``run``'s preflight) that imports
a runtime's package.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Coroutine
from typing import Any

from minikubelet.cli.common import Subcommands, run_reporting
from minikubelet.cri.endpoint import InvalidEndpoint, parse_endpoint


def command(args: argparse.Namespace) -> int:
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
    return run_reporting("runtime serve", main, (OSError, RuntimeError))


def add_parser(sub: Subcommands) -> None:
    """Add the runtime serve command to the ``minikubelet`` subcommands."""
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
    serve.set_defaults(func=command)
