"""``minikubelet tui``: the dashboard of a running kubelet, through its local API."""

from __future__ import annotations

import argparse

from minikubelet.cli.common import Subcommands, default_root_dir


def command(args: argparse.Namespace) -> int:
    """The dashboard: a terminal view of a running kubelet, through its local API."""
    from pathlib import Path

    from tui.app import run_app  # the composition root may name the dashboard

    return run_app(Path(args.root_dir) if args.root_dir else default_root_dir())


def add_parser(sub: Subcommands) -> None:
    """Add the tui command to the ``minikubelet`` subcommands."""
    tui = sub.add_parser("tui", help="a k9s-like dashboard of a running kubelet")
    tui.add_argument("--root-dir", help="the kubelet's root dir (as given to run)")
    tui.set_defaults(func=command)
