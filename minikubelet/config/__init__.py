"""Pod sources (file, http) and the PodConfig merge that turns their snapshots into changes."""

from minikubelet.config.types import (
    ALL_SOURCE,
    API_SOURCE,
    CONFIG_FIRST_SEEN_ANNOTATION,
    CONFIG_HASH_ANNOTATION,
    CONFIG_MIRROR_ANNOTATION,
    CONFIG_SOURCE_ANNOTATION,
    FILE_SOURCE,
    HTTP_SOURCE,
    Pod,
    PodOperation,
    SourceUpdate,
)

__all__ = [
    "ALL_SOURCE",
    "API_SOURCE",
    "CONFIG_FIRST_SEEN_ANNOTATION",
    "CONFIG_HASH_ANNOTATION",
    "CONFIG_MIRROR_ANNOTATION",
    "CONFIG_SOURCE_ANNOTATION",
    "FILE_SOURCE",
    "HTTP_SOURCE",
    "Pod",
    "PodOperation",
    "SourceUpdate",
]
