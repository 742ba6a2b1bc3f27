"""SPDY/3.1 framing, table-tested against the draft and Chromium's test vectors."""

from __future__ import annotations

import struct
import zlib

import pytest

from minikubelet.streaming import spdy
from minikubelet.streaming.spdy import (
    DataFrame,
    FrameReader,
    FrameWriter,
    GoAway,
    HeadersFrame,
    Ping,
    ProtocolError,
    RstStream,
    Setting,
    Settings,
    SynReply,
    SynStream,
    WindowUpdate,
)

HDRS = (("streamtype", "stdin"), ("x-multi", "a"), ("x-multi", "b"))

FRAMES: list[spdy.Frame] = [
    SynStream(1, HDRS, priority=3, flags=spdy.FLAG_FIN | spdy.FLAG_UNIDIRECTIONAL),
    SynStream(3, (), associated_stream_id=1, priority=7, slot=2),
    SynReply(1, (("status", "200"),), flags=spdy.FLAG_FIN),
    HeadersFrame(5, (("a", ""),)),
    RstStream(1, spdy.RstStatus.CANCEL),
    Settings((Setting(spdy.SettingsId.INITIAL_WINDOW_SIZE, 65536, 1),), flags=1),
    Settings(),
    Ping(7),
    GoAway(9, spdy.GoAwayStatus.INTERNAL_ERROR),
    WindowUpdate(0, 1024),
    WindowUpdate(1, 0x7FFFFFFF),
    DataFrame(1, b"hello", spdy.FLAG_FIN),
    DataFrame(spdy.MAX_STREAM_ID, b""),
]


def test_dictionary_is_the_spdy3_one() -> None:
    # Size from the draft; Adler-32 is the DICTID every SPDY/3 peer writes (38 EA E3 C6 A7 C2).
    assert len(spdy.DICTIONARY) == 1423
    assert zlib.adler32(spdy.DICTIONARY) == 0xE3C6A7C2
    assert spdy.DICTIONARY.startswith(b"\x00\x00\x00\x07options\x00\x00\x00\x04head")
    assert spdy.DICTIONARY.endswith(b"charset=iso-8859-1,utf-,*,enq=0.")


@pytest.mark.parametrize("frame", FRAMES, ids=lambda f: type(f).__name__)
def test_round_trip(frame: spdy.Frame) -> None:
    assert FrameReader().feed(FrameWriter().write(frame)) == [frame]


def test_round_trip_all_frames_one_connection_byte_by_byte() -> None:
    writer, reader = FrameWriter(), FrameReader()
    wire = b"".join(writer.write(f) for f in FRAMES)
    got: list[spdy.Frame] = []
    for i in range(len(wire)):
        got += reader.feed(wire[i : i + 1])
    assert got == FRAMES
    assert reader.buffered == 0


@pytest.mark.parametrize(
    ("frame", "wire"),
    [
        (RstStream(1, 5), "80030003 00000008 00000001 00000005"),
        (Ping(0x12345678), "80030006 00000004 12345678"),
        (GoAway(3, 1), "80030007 00000008 00000003 00000001"),
        (WindowUpdate(5, 256), "80030009 00000008 00000005 00000100"),
        (Settings((Setting(4, 100, 1),)), "80030004 0000000c 00000001 01000004 00000064"),
        (DataFrame(1, b"hi", spdy.FLAG_FIN), "00000001 01000002 6869"),
    ],
)
def test_fixed_layouts(frame: spdy.Frame, wire: str) -> None:
    assert FrameWriter().write(frame) == bytes.fromhex(wire)


# Chromium spdy_framer_test "SYN_STREAM frame, low pri, no FIN" (SPDY/3): headers
# bar=foo, foo=bar, compressed by Chromium's own zlib context.
CHROMIUM_SYN_STREAM = bytes.fromhex(
    "80030001 00000037 00000001 00000000 800038ea e3c6a7c2 02e50e50 c24b4a04"
    "e50b6680 004acbcf 07082010 95969f0f a2000228 29b10820 80000000 00ffff"
)


def test_decodes_a_chromium_frame() -> None:
    assert FrameReader().feed(CHROMIUM_SYN_STREAM) == [
        SynStream(1, (("bar", "foo"), ("foo", "bar")), priority=4)
    ]


def test_header_context_spans_frames_known_answer() -> None:
    writer = FrameWriter()
    first = writer.write(SynStream(1, (("streamtype", "stdout"),)))
    second = writer.write(SynStream(3, (("streamtype", "stderr"),)))
    # zlib header with FDICT and the SPDY/3 DICTID, then a SYNC_FLUSH tail on each block.
    assert first[18] == 0x78 and first[19] & 0x20  # deflate, FDICT set
    assert first[20:24] == bytes.fromhex("e3c6a7c2")
    assert first.endswith(b"\x00\x00\xff\xff") and second.endswith(b"\x00\x00\xff\xff")
    # The second block refers back into the first: it only inflates in the shared context.
    with pytest.raises(zlib.error):
        zlib.decompressobj(zdict=spdy.DICTIONARY).decompress(second[18:])
    inflate = zlib.decompressobj(zdict=spdy.DICTIONARY)
    block1 = inflate.decompress(first[18:])
    block2 = inflate.decompress(second[18:])
    expected = b"\x00\x00\x00\x01\x00\x00\x00\x0astreamtype\x00\x00\x00\x06"
    assert block1 == expected + b"stdout"
    assert block2 == expected + b"stderr"
    reader = FrameReader()
    assert reader.feed(first + second) == [
        SynStream(1, (("streamtype", "stdout"),)),
        SynStream(3, (("streamtype", "stderr"),)),
    ]
    # A fresh reader that missed the first frame cannot follow the stream.
    with pytest.raises(ProtocolError):
        FrameReader().feed(second)


def test_partial_input_is_kept() -> None:
    reader = FrameReader()
    wire = FrameWriter().write(DataFrame(1, b"abcdef"))
    assert reader.feed(wire[:3]) == []
    assert reader.feed(wire[3:10]) == []
    assert reader.buffered == 10
    assert reader.feed(wire[10:] + wire[:8]) == [DataFrame(1, b"abcdef")]
    assert reader.feed(wire[8:]) == [DataFrame(1, b"abcdef")]


def _control(ftype: int, payload: bytes, flags: int = 0, version: int = 3) -> bytes:
    return struct.pack(">HHI", 0x8000 | version, ftype, (flags << 24) | len(payload)) + payload


@pytest.mark.parametrize(
    ("wire", "message"),
    [
        (_control(6, b"\x00\x00\x00\x01", version=2), "unsupported SPDY version 2"),
        (_control(3, b"\x00\x00\x00\x01"), "RST_STREAM frame length 4"),
        (_control(3, b"\x00\x00\x00\x01\x00\x00\x00\x00"), "status 0"),
        (_control(3, b"\x00\x00\x00\x00\x00\x00\x00\x01"), "stream 0"),
        (_control(6, b"\x00\x00\x00\x01\x00"), "PING frame length 5"),
        (_control(7, b"\x00\x00\x00\x01"), "GOAWAY frame length 4"),
        (_control(9, b"\x00\x00\x00\x01\x00\x00\x00\x00"), "delta 0"),
        (_control(4, b"\x00\x00\x00\x02" + b"\x00" * 8), "does not fit 2 entries"),
        (_control(1, b"\x00\x00\x00\x01"), "SYN_STREAM frame length 4"),
        (_control(2, b"\x00\x00\x00\x01" + b"garbage!"), "does not decompress"),
        (b"\x00\x00\x00\x00\x00\x00\x00\x00", "data frame on stream 0"),
    ],
)
def test_malformed_input(wire: bytes, message: str) -> None:
    reader = FrameReader()
    with pytest.raises(ProtocolError, match=message):
        reader.feed(wire)
    with pytest.raises(ProtocolError, match="already failed"):
        reader.feed(b"")


def test_oversized_frame_rejected_from_header_alone() -> None:
    reader = FrameReader(max_frame_length=1024)
    with pytest.raises(ProtocolError, match="exceeds the limit of 1024"):
        reader.feed(b"\x00\x00\x00\x01\x00\x00\x04\x01")


def _compressed(block: bytes) -> bytes:
    z = zlib.compressobj(zdict=spdy.DICTIONARY)
    return z.compress(block) + z.flush(zlib.Z_SYNC_FLUSH)


@pytest.mark.parametrize(
    ("block", "message"),
    [
        (b"\x00\x00\x00\x01\x00\x00\x00\x09ab", "truncated"),
        (b"\x00\x00\x00\x01\x00\x00\x00\x01A\x00\x00\x00\x00", "not lowercase"),
        (b"\x00\x00\x00\x01\x00\x00\x00\x00\x00\x00\x00\x00", "empty"),
        (b"\x00\x00\x00\x02" + b"\x00\x00\x00\x01a\x00\x00\x00\x00" * 2, "appears twice"),
        (b"\x00\x00\x00\x00\xff", "trailing"),
    ],
)
def test_malformed_header_block(block: bytes, message: str) -> None:
    wire = _control(8, b"\x00\x00\x00\x01" + _compressed(block))
    with pytest.raises(ProtocolError, match=message):
        FrameReader().feed(wire)


@pytest.mark.parametrize(
    "frame",
    [
        DataFrame(0, b"x"),
        DataFrame(1, b"\x00" * (spdy.MAX_FRAME_LENGTH + 1)),
        SynStream(1, priority=8),
        SynStream(1 << 31),
        WindowUpdate(1, 0),
        Ping(1 << 32),
    ],
    ids=lambda f: type(f).__name__,
)
def test_unencodable_frames(frame: spdy.Frame) -> None:
    with pytest.raises(ProtocolError):
        FrameWriter().write(frame)


def test_unknown_control_frame_is_passed_through() -> None:
    (frame,) = FrameReader().feed(_control(10, b"cred", flags=0))
    assert frame == spdy.UnknownControlFrame(10, 0, b"cred")
