"""The ``minikubelet`` command: flags become objects, objects run in one task group.

One module per command group: :mod:`~minikubelet.cli.run` (``run``, and the
composition root that makes a node), :mod:`~minikubelet.cli.join` (``join``, a
kubeadm cluster's join line), :mod:`~minikubelet.cli.serve` (``runtime
serve``), :mod:`~minikubelet.cli.client` (``get``, ``describe``, ``logs``, ``exec``,
``attach``, ``port-forward``, ``events``, ``trace``, with the streams of
:mod:`~minikubelet.cli.stream`), :mod:`~minikubelet.cli.dashboard` (``tui``) and
:mod:`~minikubelet.cli.demo` (``demo``).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
from collections.abc import Sequence

from minikubelet.cli import client, dashboard, demo, join, leave, run, serve

log = logging.getLogger("minikubelet")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="minikubelet",
        description="A Kubernetes node in Python, driving containers through the CRI.",
    )
    parser.add_argument(
        "-v", "--verbose", action="count", default=0, help="more log output (-v info, -vv debug)"
    )
    sub = parser.add_subparsers(dest="command", required=True)
    serve.add_parser(sub)
    run.add_parser(sub)
    join.add_parser(sub)
    leave.add_parser(sub)
    client.add_parsers(sub)
    dashboard.add_parser(sub)
    demo.add_parser(sub)
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
