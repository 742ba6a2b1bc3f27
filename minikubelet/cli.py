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
    if args.runtime == "fake":
        from runtimes.fake.main import serve

        patterns = args.fail_image if args.fail_image is not None else None
        kwargs: dict[str, Any] = {}
        if patterns is not None:
            kwargs["fail_patterns"] = patterns
        try:
            parse_endpoint(args.listen)
        except InvalidEndpoint as exc:
            print(f"minikubelet runtime serve: {exc}", file=sys.stderr)
            return 1
        try:
            return _run(serve(args.listen, **kwargs))
        except (OSError, RuntimeError, ExceptionGroup) as exc:
            errors = _leaves(exc)
            if not all(isinstance(e, OSError | RuntimeError) for e in errors):
                raise
            for error in errors:
                print(f"minikubelet runtime serve: {error}", file=sys.stderr)
            return 1
    print(
        f"minikubelet runtime serve: runtime {args.runtime!r} is not available yet", file=sys.stderr
    )
    return 2


def _cmd_demo(args: argparse.Namespace) -> int:
    from minikubelet.demo import pod_life

    return _run(
        pod_life(
            args.manifest, runtime=args.runtime, trace_file=args.trace_file, output=args.output
        )
    )


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
    serve.add_argument("runtime", choices=["fake"], help="which runtime to serve")
    serve.add_argument(
        "--listen", required=True, help="unix:///PATH (made 0600) or tcp://HOST:PORT"
    )
    serve.add_argument(
        "--fail-image",
        action="append",
        metavar="PATTERN",
        help="fake: references matching this glob fail to pull (default: *.invalid/*); repeatable",
    )
    serve.set_defaults(func=_cmd_runtime_serve)

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
    args = build_parser().parse_args(argv)
    level = [logging.WARNING, logging.INFO, logging.DEBUG][min(args.verbose, 2)]
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    with contextlib.suppress(BrokenPipeError):
        result: int = args.func(args)
        return result
    return 0


if __name__ == "__main__":
    sys.exit(main())
