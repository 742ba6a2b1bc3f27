"""What the tests of a node joined to the session's control plane share: kubectl as the
admin, and a ``minikubelet run --kubeconfig`` node with the node's own credentials."""

from __future__ import annotations

import json
import socket
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


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def api_node(workdir: Path, cp: ControlPlane, runtime: str, name: str, *extra: str) -> Node:
    """A node (not started) that joins ``cp`` as ``system:node:NAME``, with its kubelet
    API on a port of its own on 127.0.0.1 (where its Node says it is), trusting the
    cluster CA's client certificates (the API server's among them)."""
    return Node(
        workdir,
        runtime=runtime,
        node_name=name,
        extra_args=(
            *FAST,
            "--kubeconfig",
            str(cp.node_kubeconfig(name)),
            "--node-ip",
            "127.0.0.1",
            "--address",
            "127.0.0.1",
            "--port",
            str(free_port()),
            "--client-ca-file",
            str(cp.ca_path),
            *extra,
        ),
    )
