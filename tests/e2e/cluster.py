"""What the tests of a node joined to the session's control plane share: kubectl as the
admin, and a ``minikubelet run --kubeconfig`` node with the node's own credentials."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.e2e.node import FAST, Node
from tests.harness.controlplane import ControlPlane


def kubectl_json(cp: ControlPlane, *args: str) -> Any:
    """``kubectl ARGS -o json`` as the admin, parsed; fails the test on an error."""
    done = cp.kubectl(*args, "-o", "json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def apply(cp: ControlPlane, text: str) -> None:
    """``kubectl apply -f -`` of ``text`` as the admin."""
    done = cp.kubectl("apply", "-f", "-", input=text)
    assert done.returncode == 0, done.stderr


def api_node(workdir: Path, cp: ControlPlane, runtime: str, name: str, *extra: str) -> Node:
    """A node (not started) that joins ``cp`` as ``system:node:NAME``."""
    return Node(
        workdir,
        runtime=runtime,
        node_name=name,
        extra_args=(*FAST, "--kubeconfig", str(cp.node_kubeconfig(name)), *extra),
    )
