"""Image references as Docker and the OCI distribution spec spell them.

``busybox`` means ``docker.io/library/busybox:latest``; ``127.0.0.1:5000/app@sha256:...``
names a manifest by digest. Every runtime and the kubelet's pull policy parse
references here, so they all agree on what a name means.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

DEFAULT_DOMAIN = "docker.io"
LEGACY_DOMAIN = "index.docker.io"
OFFICIAL_NAMESPACE = "library"
DEFAULT_TAG = "latest"

_ALNUM = r"[a-z0-9]+"
_SEPARATOR = r"(?:[._]|__|[-]+)"
_PATH_COMPONENT = rf"{_ALNUM}(?:{_SEPARATOR}{_ALNUM})*"
_DOMAIN_LABEL = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_HOST = rf"(?:{_DOMAIN_LABEL}(?:\.{_DOMAIN_LABEL})*|\[[a-fA-F0-9:]+\])"
_DOMAIN = rf"{_HOST}(?::[0-9]+)?"
_TAG = r"[\w][\w.-]{0,127}"
_DIGEST = r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}"

_REFERENCE = re.compile(
    rf"^(?P<name>(?:(?P<domain>{_DOMAIN})/)?{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*)"
    rf"(?::(?P<tag>{_TAG}))?(?:@(?P<digest>{_DIGEST}))?$"
)
_PATH = re.compile(rf"^{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*$")
_SHA256 = re.compile(r"^sha256:[0-9a-f]{64}$")
_MAX_NAME = 255


class InvalidReference(ValueError):
    """A string that is not an image reference; the message says why."""


@dataclass(frozen=True, slots=True)
class Reference:
    """A fully qualified reference: domain, repository path, and a tag and/or digest."""

    domain: str
    path: str
    tag: str = ""
    digest: str = ""

    @property
    def repository(self) -> str:
        """``domain/path``, e.g. ``docker.io/library/busybox``."""
        return f"{self.domain}/{self.path}"

    @property
    def familiar_name(self) -> str:
        """The short name people type: ``busybox`` for ``docker.io/library/busybox``."""
        if self.domain == DEFAULT_DOMAIN:
            if self.path.startswith(OFFICIAL_NAMESPACE + "/"):
                return self.path[len(OFFICIAL_NAMESPACE) + 1 :]
            return self.path
        return self.repository

    def with_tag(self, tag: str) -> Reference:
        return Reference(self.domain, self.path, tag, "")

    def with_digest(self, digest: str) -> Reference:
        return Reference(self.domain, self.path, "", digest)

    def __str__(self) -> str:
        out = self.repository
        if self.tag:
            out += ":" + self.tag
        if self.digest:
            out += "@" + self.digest
        return out


def _split_domain(name: str) -> tuple[str, str]:
    first, sep, rest = name.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost" or first != first.lower()):
        domain, path = first, rest
    else:
        domain, path = DEFAULT_DOMAIN, name
    if domain == LEGACY_DOMAIN:
        domain = DEFAULT_DOMAIN
    if domain == DEFAULT_DOMAIN and "/" not in path:
        path = f"{OFFICIAL_NAMESPACE}/{path}"
    return domain, path


def parse(text: str) -> Reference:
    """Parse and normalise a reference; a bare name gets the ``latest`` tag.

    Raises InvalidReference with a message that names the problem.
    """
    if not text:
        raise InvalidReference("image reference is empty")
    if text != text.strip():
        raise InvalidReference(f"image reference {text!r} has surrounding whitespace")
    if _SHA256.match(text) or re.fullmatch(r"[0-9a-f]{64}", text):
        raise InvalidReference(f"{text!r} is an image ID, not a reference; use repository@{text}")
    match = _REFERENCE.match(text)
    if match is None:
        if text != text.lower() and _REFERENCE.match(text.lower()):
            raise InvalidReference(f"repository name in {text!r} must be lowercase")
        raise InvalidReference(f"{text!r} is not a valid image reference")
    name = match.group("name")
    if len(name) > _MAX_NAME:
        raise InvalidReference(f"repository name in {text!r} is longer than {_MAX_NAME}")
    first, sep, _ = name.partition("/")
    if sep and match.group("domain") is None and ("." in first or ":" in first):
        raise InvalidReference(f"{first!r} in {text!r} is not a valid registry host")
    domain, path = _split_domain(name)
    if not _PATH.match(path):
        raise InvalidReference(f"repository path in {text!r} must be lowercase")
    tag = match.group("tag") or ""
    digest = match.group("digest") or ""
    if digest.startswith("sha256:") and not _SHA256.match(digest):
        raise InvalidReference(f"digest in {text!r} must be sha256 followed by 64 hex digits")
    if not tag and not digest:
        tag = DEFAULT_TAG
    return Reference(domain, path, tag, digest)


def is_digest(text: str) -> bool:
    """True for ``sha256:<64 hex>``."""
    return bool(_SHA256.match(text))
