"""Identifiers shared by the kubelet core and the runtimes."""

from __future__ import annotations

from typing import NewType

PodSandboxID = NewType("PodSandboxID", str)
ContainerID = NewType("ContainerID", str)
ImageRef = NewType("ImageRef", str)
PodUID = NewType("PodUID", str)
