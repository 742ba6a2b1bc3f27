"""Who a container runs as: the CRI's user rules, and names resolved from the image's files.

Pure: the caller reads ``/etc/passwd`` and ``/etc/group`` from the container's
rootfs (either may be missing: pass ``""``) and hands the texts in.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from minikubelet.errors import InvalidArgument
from runtimes.base.model import SecurityOptions


@dataclass(frozen=True, slots=True)
class ResolvedUser:
    """``process.user`` of the OCI spec."""

    uid: int = 0
    gid: int = 0
    additional_gids: tuple[int, ...] = ()
    name: str = ""  # the passwd name, when the image knows the uid


@dataclass(frozen=True, slots=True)
class _Passwd:
    name: str
    uid: int
    gid: int


@dataclass(frozen=True, slots=True)
class _Group:
    name: str
    gid: int
    members: tuple[str, ...]


def _fields(text: str, count: int) -> Iterable[list[str]]:
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split(":")
        if len(parts) >= count:
            yield parts


def _passwd(text: str) -> list[_Passwd]:
    out = []
    for p in _fields(text, 4):
        if p[2].isdigit() and p[3].isdigit():
            out.append(_Passwd(p[0], int(p[2]), int(p[3])))
    return out


def _groups(text: str) -> list[_Group]:
    out = []
    for p in _fields(text, 3):
        if p[2].isdigit():
            members = tuple(m for m in (p[3].split(",") if len(p) > 3 else ()) if m)
            out.append(_Group(p[0], int(p[2]), members))
    return out


def container_user(security: SecurityOptions, image_user: str) -> str:
    """The ``user[:group]`` a container runs as, by the CRI's rules (as CRI-O applies them).

    RunAsUser (a uid) or RunAsUsername override the image's ``User``; RunAsGroup
    overrides its group, and is refused without one of them.
    """
    if (
        security.run_as_group is not None
        and security.run_as_user is None
        and not security.run_as_username
    ):
        raise InvalidArgument("user group is specified without user or username")
    if security.run_as_user is not None:
        user = str(security.run_as_user)
    elif security.run_as_username:
        user = security.run_as_username
    else:
        user = image_user
    if security.run_as_group is not None:
        return f"{user.split(':', 1)[0]}:{security.run_as_group}"
    return user


def resolve_user(
    spec_user: str,
    passwd_text: str,
    group_text: str,
    supplemental_groups: Sequence[int] = (),
) -> ResolvedUser:
    """Resolve ``uid|name[:gid|group]`` against the image's passwd and group files.

    A numeric uid need not exist in passwd (its gid is then 0); a name must.
    The additional gids are the primary gid, the groups that list the user as a
    member, then ``supplemental_groups``, without duplicates.
    """
    user_part, _, group_part = spec_user.partition(":")
    users = _passwd(passwd_text)
    groups = _groups(group_text)
    entry: _Passwd | None
    if user_part == "":
        entry = next((u for u in users if u.uid == 0), None)
        uid = 0
    elif user_part.isdigit():
        uid = int(user_part)
        entry = next((u for u in users if u.uid == uid), None)
    else:
        entry = next((u for u in users if u.name == user_part), None)
        if entry is None:
            raise InvalidArgument(f"user {user_part!r} not found in the image's /etc/passwd")
        uid = entry.uid
    gid = entry.gid if entry is not None else 0
    if group_part:
        if group_part.isdigit():
            gid = int(group_part)
        else:
            group = next((g for g in groups if g.name == group_part), None)
            if group is None:
                raise InvalidArgument(f"group {group_part!r} not found in the image's /etc/group")
            gid = group.gid
    name = entry.name if entry is not None else ""
    gids: list[int] = [gid]
    if name:
        gids += [g.gid for g in groups if name in g.members]
    gids += supplemental_groups
    return ResolvedUser(uid=uid, gid=gid, additional_gids=tuple(dict.fromkeys(gids)), name=name)
