"""The native runtime's image half: pull from OCI registries, store blobs, unpack layers.

``NativeImages`` (service.py) is the ImageService backend; ``RegistryConfig``
(hosts.py) says how registries are reached; the rest is its machinery:
registry.py (the HTTP API v2 client), manifest.py (documents and platforms),
store.py (the on-disk layout), layers.py (safe unpacking into overlay lowerdirs).
"""

from runtimes.native.images.hosts import HostConfig, RegistryConfig
from runtimes.native.images.manifest import ImageConfig, Platform
from runtimes.native.images.service import NativeImages

__all__ = ["HostConfig", "ImageConfig", "NativeImages", "Platform", "RegistryConfig"]
