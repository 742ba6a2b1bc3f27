"""The volume manager and the env builder know API objects only through the
ObjectSource seam: nothing of theirs imports the API client (checked on the source,
transitively through minikubelet's own modules)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CLIENT = (
    "kubernetes_asyncio",
    "minikubelet.kubeapi.client",
    "minikubelet.kubeapi.objects.managers",
)


def _module_path(name: str) -> Path | None:
    base = ROOT / Path(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def _reaches(start: str) -> dict[str, str]:
    """Every module reachable from ``start`` by imports, with the module importing it."""
    seen: dict[str, str] = {start: ""}
    todo = [start]
    while todo:
        name = todo.pop()
        path = _module_path(name)
        if path is None:
            continue
        for imported in _imports(path):
            if imported not in seen and (
                imported.startswith("minikubelet") or imported.startswith(CLIENT[0])
            ):
                seen[imported] = name
                todo.append(imported)
    return seen


@pytest.mark.parametrize(
    "module",
    [
        "minikubelet.volumes.manager",
        "minikubelet.volumes.projection",
        "minikubelet.volumes.atomic",
        "minikubelet.kuberuntime.envvars",
        "minikubelet.kuberuntime.podsetup",
        "minikubelet.kubeapi.objects",
    ],
)
def test_no_api_client_behind_the_seam(module: str) -> None:
    reached = _reaches(module)
    bad = [
        f"{name} (imported by {reached[name]})"
        for name in reached
        if any(name == c or name.startswith(c + ".") for c in CLIENT)
    ]
    assert not bad, bad
