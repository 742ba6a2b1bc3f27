"""SPDY/3.1 framing: encode and decode frames, with the zlib header-block context.

Pure and I/O free. A :class:`FrameWriter` turns frames into bytes and a
:class:`FrameReader` is fed bytes as they arrive and hands back complete frames.
Each owns the per-connection zlib context SPDY requires (one compressor per
direction, seeded with the SPDY/3 dictionary, every header block ended with a
SYNC_FLUSH), so one reader and one writer belong to exactly one connection.

Layouts follow the SPDY/3.1 draft (chromium.org spdy-protocol-draft3-1); the
dictionary is the one from that draft, 1423 bytes, Adler-32 ``0xe3c6a7c2``.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass, field
from enum import IntEnum
from typing import TypeAlias

VERSION = 3
#: Frame header: 8 bytes, for control and data frames alike.
HEADER_SIZE = 8
#: The 24-bit length field caps a frame's payload.
MAX_FRAME_LENGTH = (1 << 24) - 1
MAX_STREAM_ID = (1 << 31) - 1
MAX_PRIORITY = 7

FLAG_FIN = 0x01
FLAG_UNIDIRECTIONAL = 0x02
FLAG_SETTINGS_CLEAR_SETTINGS = 0x01
SETTINGS_FLAG_PERSIST_VALUE = 0x01
SETTINGS_FLAG_PERSISTED = 0x02


class FrameType(IntEnum):
    """Control frame types of SPDY/3.1 (5, NOOP, was dropped after SPDY/2)."""

    SYN_STREAM = 1
    SYN_REPLY = 2
    RST_STREAM = 3
    SETTINGS = 4
    PING = 6
    GOAWAY = 7
    HEADERS = 8
    WINDOW_UPDATE = 9


class RstStatus(IntEnum):
    """RST_STREAM status codes."""

    PROTOCOL_ERROR = 1
    INVALID_STREAM = 2
    REFUSED_STREAM = 3
    UNSUPPORTED_VERSION = 4
    CANCEL = 5
    INTERNAL_ERROR = 6
    FLOW_CONTROL_ERROR = 7
    STREAM_IN_USE = 8
    STREAM_ALREADY_CLOSED = 9
    INVALID_CREDENTIALS = 10
    FRAME_TOO_LARGE = 11


class GoAwayStatus(IntEnum):
    """GOAWAY status codes."""

    OK = 0
    PROTOCOL_ERROR = 1
    INTERNAL_ERROR = 2


class SettingsId(IntEnum):
    """SETTINGS ids."""

    UPLOAD_BANDWIDTH = 1
    DOWNLOAD_BANDWIDTH = 2
    ROUND_TRIP_TIME = 3
    MAX_CONCURRENT_STREAMS = 4
    CURRENT_CWND = 5
    DOWNLOAD_RETRANS_RATE = 6
    INITIAL_WINDOW_SIZE = 7
    CLIENT_CERTIFICATE_VECTOR_SIZE = 8


class ProtocolError(Exception):
    """Malformed SPDY input (or a frame that cannot be encoded)."""


def _dictionary() -> bytes:
    # The draft's dictionary: length-prefixed names and values, then a raw tail.
    words = [
        "options",
        "head",
        "post",
        "put",
        "delete",
        "trace",
        "accept",
        "accept-charset",
        "accept-encoding",
        "accept-language",
        "accept-ranges",
        "age",
        "allow",
        "authorization",
        "cache-control",
        "connection",
        "content-base",
        "content-encoding",
        "content-language",
        "content-length",
        "content-location",
        "content-md5",
        "content-range",
        "content-type",
        "date",
        "etag",
        "expect",
        "expires",
        "from",
        "host",
        "if-match",
        "if-modified-since",
        "if-none-match",
        "if-range",
        "if-unmodified-since",
        "last-modified",
        "location",
        "max-forwards",
        "pragma",
        "proxy-authenticate",
        "proxy-authorization",
        "range",
        "referer",
        "retry-after",
        "server",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "user-agent",
        "vary",
        "via",
        "warning",
        "www-authenticate",
        "method",
        "get",
        "status",
        "200 OK",
        "version",
        "HTTP/1.1",
        "url",
        "public",
        "set-cookie",
        "keep-alive",
        "origin",
    ]
    words = [w.replace("_", " ") for w in words]  # "200 OK" stands for "200 OK"
    tail = (
        "100101201202205206300302303304305306307402405406407408409410411412413414415416"
        "417502504505203 Non-Authoritative Information204 No Content301 Moved Permanently"
        "400 Bad Request401 Unauthorized403 Forbidden404 Not Found500 Internal Server Error"
        "501 Not Implemented503 Service UnavailableJan Feb Mar Apr May Jun Jul Aug Sept Oct"
        " Nov Dec 00:00:00 Mon, Tue, Wed, Thu, Fri, Sat, Sun, GMTchunked,text/html,"
        "image/png,image/jpg,image/gif,application/xml,application/xhtml+xml,text/plain,"
        "text/javascript,publicprivatemax-age=gzip,deflate,sdchcharset=utf-8"
        "charset=iso-8859-1,utf-,*,enq=0."
    )
    prefixed = b"".join(struct.pack(">I", len(w)) + w.encode("ascii") for w in words)
    return prefixed + tail.encode("ascii")


#: The SPDY/3 header-compression dictionary.
DICTIONARY: bytes = _dictionary()

#: Header pairs in order; a name repeated means several values (sent NUL-joined).
Headers: TypeAlias = tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class SynStream:
    stream_id: int
    headers: Headers = ()
    associated_stream_id: int = 0
    priority: int = 0
    slot: int = 0
    flags: int = 0

    @property
    def fin(self) -> bool:
        return bool(self.flags & FLAG_FIN)

    @property
    def unidirectional(self) -> bool:
        return bool(self.flags & FLAG_UNIDIRECTIONAL)


@dataclass(frozen=True)
class SynReply:
    stream_id: int
    headers: Headers = ()
    flags: int = 0

    @property
    def fin(self) -> bool:
        return bool(self.flags & FLAG_FIN)


@dataclass(frozen=True)
class RstStream:
    stream_id: int
    status: int


@dataclass(frozen=True)
class Setting:
    id: int
    value: int
    flags: int = 0


@dataclass(frozen=True)
class Settings:
    settings: tuple[Setting, ...] = ()
    flags: int = 0


@dataclass(frozen=True)
class Ping:
    id: int


@dataclass(frozen=True)
class GoAway:
    last_good_stream_id: int
    status: int = GoAwayStatus.OK


@dataclass(frozen=True)
class HeadersFrame:
    stream_id: int
    headers: Headers = ()
    flags: int = 0

    @property
    def fin(self) -> bool:
        return bool(self.flags & FLAG_FIN)


@dataclass(frozen=True)
class WindowUpdate:
    stream_id: int
    delta_window_size: int


@dataclass(frozen=True)
class DataFrame:
    stream_id: int
    data: bytes = b""
    flags: int = 0

    @property
    def fin(self) -> bool:
        return bool(self.flags & FLAG_FIN)


@dataclass(frozen=True)
class UnknownControlFrame:
    """A control frame of a type this module does not know; SPDY says ignore it."""

    type: int
    flags: int
    payload: bytes = field(repr=False)


Frame: TypeAlias = (
    SynStream
    | SynReply
    | RstStream
    | Settings
    | Ping
    | GoAway
    | HeadersFrame
    | WindowUpdate
    | DataFrame
    | UnknownControlFrame
)


# ---------------------------------------------------------------- header blocks


def encode_header_block(headers: Headers) -> bytes:
    """The uncompressed name/value block: names lowercased, repeated names NUL-joined."""
    grouped: dict[str, list[str]] = {}
    for name, value in headers:
        lname = name.lower()
        if not lname:
            raise ProtocolError("header name must not be empty")
        grouped.setdefault(lname, []).append(value)
    out = [struct.pack(">I", len(grouped))]
    for name, values in grouped.items():
        raw_name = name.encode("utf-8")
        raw_value = "\x00".join(values).encode("utf-8")
        out.append(struct.pack(">I", len(raw_name)) + raw_name)
        out.append(struct.pack(">I", len(raw_value)) + raw_value)
    return b"".join(out)


def decode_header_block(block: bytes) -> Headers:
    """Parse an uncompressed name/value block; raises :class:`ProtocolError` if malformed."""
    view = memoryview(block)
    pos = 0

    def take(n: int, what: str) -> bytes:
        nonlocal pos
        if pos + n > len(view):
            raise ProtocolError(
                f"header block truncated: {what} needs {n} bytes, {len(view) - pos} left"
            )
        chunk = bytes(view[pos : pos + n])
        pos += n
        return chunk

    def take_u32(what: str) -> int:
        value: int = struct.unpack(">I", take(4, what))[0]
        return value

    count = take_u32("pair count")
    pairs: list[tuple[str, str]] = []
    seen: set[str] = set()
    for _ in range(count):
        raw_name = take(take_u32("name length"), "name")
        raw_value = take(take_u32("value length"), "value")
        try:
            name = raw_name.decode("utf-8")
            value = raw_value.decode("utf-8")
        except UnicodeDecodeError as e:
            raise ProtocolError(f"header block is not valid UTF-8: {e}") from None
        if not name:
            raise ProtocolError("header name must not be empty")
        if name != name.lower():
            raise ProtocolError(f"header name {name!r} is not lowercase")
        if name in seen:
            raise ProtocolError(f"header name {name!r} appears twice")
        seen.add(name)
        pairs.extend((name, v) for v in value.split("\x00"))
    if pos != len(view):
        raise ProtocolError(f"header block has {len(view) - pos} trailing bytes")
    return tuple(pairs)


class HeaderCompressor:
    """One direction's zlib context: every block ends with a SYNC_FLUSH."""

    def __init__(self, level: int = zlib.Z_DEFAULT_COMPRESSION) -> None:
        self._z = zlib.compressobj(level, zlib.DEFLATED, 15, 8, zlib.Z_DEFAULT_STRATEGY, DICTIONARY)

    def compress(self, headers: Headers) -> bytes:
        block = encode_header_block(headers)
        return self._z.compress(block) + self._z.flush(zlib.Z_SYNC_FLUSH)


class HeaderDecompressor:
    """The matching inflate context; blocks must be fed in frame order."""

    def __init__(self) -> None:
        self._z = zlib.decompressobj(zdict=DICTIONARY)

    def decompress(self, data: bytes) -> Headers:
        try:
            block = self._z.decompress(data)
        except zlib.error as e:
            raise ProtocolError(f"header block does not decompress: {e}") from None
        if self._z.unconsumed_tail or self._z.eof:
            raise ProtocolError("header block ended the zlib stream")
        return decode_header_block(block)


# ---------------------------------------------------------------- writing


def _check_stream_id(stream_id: int, *, zero_ok: bool = False) -> None:
    if not (0 if zero_ok else 1) <= stream_id <= MAX_STREAM_ID:
        raise ProtocolError(f"stream id {stream_id} out of range")


def _check_u32(value: int, what: str) -> None:
    if not 0 <= value <= 0xFFFFFFFF:
        raise ProtocolError(f"{what} {value} does not fit in 32 bits")


def _control(frame_type: int, flags: int, payload: bytes) -> bytes:
    if len(payload) > MAX_FRAME_LENGTH:
        raise ProtocolError(f"frame payload of {len(payload)} bytes exceeds {MAX_FRAME_LENGTH}")
    if not 0 <= flags <= 0xFF:
        raise ProtocolError(f"flags {flags} do not fit in 8 bits")
    return struct.pack(">HHI", 0x8000 | VERSION, frame_type, (flags << 24) | len(payload)) + payload


def encode_data(frame: DataFrame) -> bytes:
    """A data frame; needs no compression context."""
    _check_stream_id(frame.stream_id)
    if len(frame.data) > MAX_FRAME_LENGTH:
        raise ProtocolError(f"data of {len(frame.data)} bytes exceeds {MAX_FRAME_LENGTH}")
    if not 0 <= frame.flags <= 0xFF:
        raise ProtocolError(f"flags {frame.flags} do not fit in 8 bits")
    return struct.pack(">II", frame.stream_id, (frame.flags << 24) | len(frame.data)) + frame.data


class FrameWriter:
    """Serialises frames for one connection (owns its header compressor)."""

    def __init__(self, level: int = zlib.Z_DEFAULT_COMPRESSION) -> None:
        self._compressor = HeaderCompressor(level)

    def write(self, frame: Frame) -> bytes:
        match frame:
            case DataFrame():
                return encode_data(frame)
            case SynStream():
                _check_stream_id(frame.stream_id)
                _check_stream_id(frame.associated_stream_id, zero_ok=True)
                if not 0 <= frame.priority <= MAX_PRIORITY:
                    raise ProtocolError(f"priority {frame.priority} not in 0..{MAX_PRIORITY}")
                if not 0 <= frame.slot <= 0xFF:
                    raise ProtocolError(f"slot {frame.slot} does not fit in 8 bits")
                block = self._compressor.compress(frame.headers)
                fixed = struct.pack(
                    ">IIBB",
                    frame.stream_id,
                    frame.associated_stream_id,
                    frame.priority << 5,
                    frame.slot,
                )
                return _control(FrameType.SYN_STREAM, frame.flags, fixed + block)
            case SynReply():
                _check_stream_id(frame.stream_id)
                block = self._compressor.compress(frame.headers)
                payload = struct.pack(">I", frame.stream_id) + block
                return _control(FrameType.SYN_REPLY, frame.flags, payload)
            case HeadersFrame():
                _check_stream_id(frame.stream_id)
                block = self._compressor.compress(frame.headers)
                payload = struct.pack(">I", frame.stream_id) + block
                return _control(FrameType.HEADERS, frame.flags, payload)
            case RstStream():
                _check_stream_id(frame.stream_id)
                _check_u32(frame.status, "RST_STREAM status")
                payload = struct.pack(">II", frame.stream_id, frame.status)
                return _control(FrameType.RST_STREAM, 0, payload)
            case Settings():
                parts = [struct.pack(">I", len(frame.settings))]
                for s in frame.settings:
                    if not 0 <= s.id <= 0xFFFFFF or not 0 <= s.flags <= 0xFF:
                        raise ProtocolError(f"setting id {s.id} / flags {s.flags} out of range")
                    _check_u32(s.value, "setting value")
                    parts.append(struct.pack(">II", (s.flags << 24) | s.id, s.value))
                return _control(FrameType.SETTINGS, frame.flags, b"".join(parts))
            case Ping():
                _check_u32(frame.id, "PING id")
                return _control(FrameType.PING, 0, struct.pack(">I", frame.id))
            case GoAway():
                _check_stream_id(frame.last_good_stream_id, zero_ok=True)
                _check_u32(frame.status, "GOAWAY status")
                payload = struct.pack(">II", frame.last_good_stream_id, frame.status)
                return _control(FrameType.GOAWAY, 0, payload)
            case WindowUpdate():
                _check_stream_id(frame.stream_id, zero_ok=True)
                if not 1 <= frame.delta_window_size <= 0x7FFFFFFF:
                    raise ProtocolError(f"window delta {frame.delta_window_size} out of range")
                payload = struct.pack(">II", frame.stream_id, frame.delta_window_size)
                return _control(FrameType.WINDOW_UPDATE, 0, payload)
            case UnknownControlFrame():
                return _control(frame.type, frame.flags, frame.payload)
        raise TypeError(f"not a SPDY frame: {frame!r}")  # pragma: no cover


# ---------------------------------------------------------------- reading


class FrameReader:
    """Incremental parser for one connection: ``feed()`` bytes, get complete frames.

    Holds partial input across calls. After a :class:`ProtocolError` the connection's
    zlib context is undefined, so the reader refuses further input.
    """

    def __init__(self, max_frame_length: int = MAX_FRAME_LENGTH) -> None:
        self._buf = bytearray()
        self._decompressor = HeaderDecompressor()
        self._max = max_frame_length
        self._failed: ProtocolError | None = None

    @property
    def buffered(self) -> int:
        """Bytes held that do not yet make a complete frame."""
        return len(self._buf)

    def feed(self, data: bytes) -> list[Frame]:
        if self._failed is not None:
            raise ProtocolError(f"reader already failed: {self._failed}")
        self._buf += data
        frames: list[Frame] = []
        try:
            while len(self._buf) >= HEADER_SIZE:
                word1, word2 = struct.unpack_from(">II", self._buf)
                length = word2 & 0xFFFFFF
                if length > self._max:
                    raise ProtocolError(f"frame of {length} bytes exceeds the limit of {self._max}")
                if word1 & 0x80000000:
                    version = (word1 >> 16) & 0x7FFF
                    if version != VERSION:
                        raise ProtocolError(f"unsupported SPDY version {version} (want 3)")
                if len(self._buf) < HEADER_SIZE + length:
                    break
                payload = bytes(self._buf[HEADER_SIZE : HEADER_SIZE + length])
                del self._buf[: HEADER_SIZE + length]
                frames.append(self._parse(word1, word2 >> 24, payload))
        except ProtocolError as e:
            self._failed = e
            raise
        return frames

    def _parse(self, word1: int, flags: int, payload: bytes) -> Frame:
        if not word1 & 0x80000000:
            stream_id = word1 & MAX_STREAM_ID
            if stream_id == 0:
                raise ProtocolError("data frame on stream 0")
            return DataFrame(stream_id, payload, flags)
        frame_type = word1 & 0xFFFF
        n = len(payload)

        def need(size: int, name: str, exact: bool = False) -> None:
            if n < size or (exact and n != size):
                rel = "exactly" if exact else "at least"
                raise ProtocolError(f"{name} frame length {n}, want {rel} {size}")

        def stream(offset: int, name: str) -> int:
            sid: int = struct.unpack_from(">I", payload, offset)[0] & MAX_STREAM_ID
            if sid == 0:
                raise ProtocolError(f"{name} frame on stream 0")
            return sid

        if frame_type == FrameType.SYN_STREAM:
            need(10, "SYN_STREAM")
            sid = stream(0, "SYN_STREAM")
            assoc = struct.unpack_from(">I", payload, 4)[0] & MAX_STREAM_ID
            pri, slot = payload[8] >> 5, payload[9]
            headers = self._decompressor.decompress(payload[10:])
            return SynStream(sid, headers, assoc, pri, slot, flags)
        if frame_type == FrameType.SYN_REPLY:
            need(4, "SYN_REPLY")
            sid = stream(0, "SYN_REPLY")
            return SynReply(sid, self._decompressor.decompress(payload[4:]), flags)
        if frame_type == FrameType.HEADERS:
            need(4, "HEADERS")
            sid = stream(0, "HEADERS")
            return HeadersFrame(sid, self._decompressor.decompress(payload[4:]), flags)
        if frame_type == FrameType.RST_STREAM:
            need(8, "RST_STREAM", exact=True)
            sid = stream(0, "RST_STREAM")
            status = struct.unpack_from(">I", payload, 4)[0]
            if status == 0:
                raise ProtocolError("RST_STREAM with status 0")
            return RstStream(sid, status)
        if frame_type == FrameType.SETTINGS:
            need(4, "SETTINGS")
            (count,) = struct.unpack_from(">I", payload)
            if n != 4 + 8 * count:
                raise ProtocolError(f"SETTINGS frame length {n} does not fit {count} entries")
            entries = []
            for i in range(count):
                flag_id, value = struct.unpack_from(">II", payload, 4 + 8 * i)
                entries.append(Setting(flag_id & 0xFFFFFF, value, flag_id >> 24))
            return Settings(tuple(entries), flags)
        if frame_type == FrameType.PING:
            need(4, "PING", exact=True)
            return Ping(struct.unpack_from(">I", payload)[0])
        if frame_type == FrameType.GOAWAY:
            need(8, "GOAWAY", exact=True)
            last, status = struct.unpack_from(">II", payload)
            return GoAway(last & MAX_STREAM_ID, status)
        if frame_type == FrameType.WINDOW_UPDATE:
            need(8, "WINDOW_UPDATE", exact=True)
            sid, delta = struct.unpack_from(">II", payload)
            delta &= 0x7FFFFFFF
            if delta == 0:
                raise ProtocolError("WINDOW_UPDATE with delta 0")
            return WindowUpdate(sid & MAX_STREAM_ID, delta)
        return UnknownControlFrame(frame_type, flags, payload)


# ---------------------------------------------------------------- for people


def _enum_name(kind: type[IntEnum], value: int) -> str:
    try:
        return kind(value).name
    except ValueError:
        return str(value)


def describe(frame: Frame, *, limit: int = 60) -> str:
    """One line per frame, for traces: type, stream, headers or data, flags."""

    def flags(fin: bool) -> str:
        return " FIN" if fin else ""

    def headers(pairs: Headers) -> str:
        return "{" + ", ".join(f"{k}: {v}" for k, v in pairs) + "}"

    match frame:
        case DataFrame():
            shown = frame.data[:limit].decode("utf-8", "backslashreplace")
            more = f"... ({len(frame.data)} bytes)" if len(frame.data) > limit else ""
            return f"DATA          stream={frame.stream_id} {shown!r}{more}{flags(frame.fin)}"
        case SynStream() | SynReply() | HeadersFrame():
            name = {SynStream: "SYN_STREAM", SynReply: "SYN_REPLY", HeadersFrame: "HEADERS"}
            shown = f"{headers(frame.headers)}{flags(frame.fin)}"
            return f"{name[type(frame)]:<13} stream={frame.stream_id} {shown}"
        case RstStream():
            reason = _enum_name(RstStatus, frame.status)
            return f"RST_STREAM    stream={frame.stream_id} {reason}"
        case Ping():
            return f"PING          id={frame.id}"
        case GoAway():
            status = _enum_name(GoAwayStatus, frame.status)
            return f"GOAWAY        last-good-stream={frame.last_good_stream_id} {status}"
        case WindowUpdate():
            return f"WINDOW_UPDATE stream={frame.stream_id} +{frame.delta_window_size}"
        case Settings():
            return f"SETTINGS      {[(s.id, s.value) for s in frame.settings]}"
        case UnknownControlFrame():
            return f"CONTROL type={frame.type}"
    raise TypeError(f"not a SPDY frame: {frame!r}")  # pragma: no cover
