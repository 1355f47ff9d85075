#!/usr/bin/env python3
"""Writes the fuzz targets' seed inputs into fuzz/corpus/<target>/, from
docs/wire.md: well-formed frames of every type, prefaces, metadata blocks,
tcp byte streams with inline and spilled parts, stream operation scripts
and .proto files. Run it again after a wire change; findings that
libFuzzer saves (crash-*) are added by hand beside these, named for what
they caught."""
import pathlib
import struct

root = pathlib.Path(__file__).resolve().parent
corpus = root / "corpus"

MAGIC, VERSION = 0x5052435A, 2
REQUEST, RESPONSE, CANCEL, GO_AWAY, MESSAGE, HALF_CLOSE, CREDIT, INITIAL_MD, PING, PING_ACK = range(1, 11)
FLAG_PATH, FLAG_STREAM = 1, 2


def header(type_, call_id=1, flags=0, method_id=0, status=0, timeout=0, md=0, msg=0, att_count=0, att_len=0,
           padding=0):
    return struct.pack("<IBBHQIIQIIIIQQ", MAGIC, VERSION, type_, flags, call_id, method_id, status, timeout, md, msg,
                       att_count, 0, att_len, padding)


def preface(role, features=0b1110, max_body=64 << 20, max_md=64 << 10, max_att=64):
    return struct.pack("<IBBHQQII", 0x4650435A, VERSION, role, 0, features, max_body, max_md, max_att) + bytes(32)


def entry(key, value):
    return struct.pack("<II", len(key), len(value)) + key + value


def align(v, a):
    return (v + a - 1) // a * a


def body(parts):
    """Lays parts out as tcp does (zcrpc/transport/tcp/stream_layout.h):
    parts are (bytes, is_table). Returns (body, padding)."""
    out = bytearray()
    end = padding = 0
    spilled = False
    for data, is_table in parts:
        if not data:
            continue
        start = align(end, 8 if is_table else 64)
        if spilled or start + len(data) > 8192:
            spilled = True
            start = max(end, 8192)
            if not is_table:
                start = align(start, 4096)
        out += bytes(start - end) + data
        padding += start - end
        end = start + len(data)
    final = align(end, 64)
    out += bytes(final - end)
    return bytes(out), padding + final - end


def frame(type_, metadata=b"", message=b"", attachments=(), **fields):
    parts = [(metadata, False), (message, False)]
    table = b"".join(struct.pack("<Q", len(a)) for a in attachments)
    if attachments:
        parts.append((table, True))
        parts += [(a, False) for a in attachments]
    data, padding = body(parts)
    att_len = len(table) + sum(len(a) for a in attachments)
    return header(type_, md=len(metadata), msg=len(message), att_count=len(attachments), att_len=att_len,
                  padding=padding, **fields) + data


def write(target, name, data):
    (corpus / target).mkdir(parents=True, exist_ok=True)
    (corpus / target / name).write_bytes(data)


path_block = entry(b":path", b"/zcrpc.test.TestService/Echo")
user_md = entry(b"k", b"v") + entry(b"trace-bin", bytes(range(256)))

# frame_header_fuzzer: one header or preface each.
for name, data in {
        "request": header(REQUEST, flags=FLAG_PATH, method_id=1, timeout=1_000_000, md=40, msg=5, padding=87),
        "stream_open": header(REQUEST, flags=FLAG_PATH | FLAG_STREAM, method_id=2, md=40),
        "response_error": header(RESPONSE, status=5, msg=9),
        "cancel": header(CANCEL),
        "go_away": header(GO_AWAY, call_id=0),
        "stream_message": header(MESSAGE, msg=100, att_count=1, att_len=108),
        "half_close": header(HALF_CLOSE),
        "credit": header(CREDIT, timeout=1 << 20),
        "initial_metadata": header(INITIAL_MD, md=16),
        "ping": header(PING, call_id=0x1234),
        "ping_ack": header(PING_ACK, call_id=0x1234),
        "preface_client": preface(1),
        "preface_server": preface(2),
}.items():
    write("frame_header_fuzzer", name, data)

# metadata_fuzzer: blocks as requests carry them.
write("metadata_fuzzer", "path_and_entries", path_block + user_md)
write("metadata_fuzzer", "entries", user_md)
write("metadata_fuzzer", "empty_value", entry(b"x-empty", b""))
write("metadata_fuzzer", "path_only", path_block)

# tcp_frame_reader_fuzzer: a chunk-size byte (0: one byte at a time), then
# a byte stream of frames.
small_request = frame(REQUEST, metadata=path_block + user_md, message=b"hello", flags=FLAG_PATH, method_id=1)
spilled = frame(RESPONSE, message=bytes(range(256)) * 48)  # 12 KiB: spills to a page
attachments = frame(MESSAGE, message=b"m" * 100, attachments=(b"a" * 10, b"b" * 9000))
stream = (frame(REQUEST, metadata=path_block, flags=FLAG_PATH | FLAG_STREAM, method_id=2) +
          frame(MESSAGE, message=b"x" * 64) + header(CREDIT, timeout=65536) + header(HALF_CLOSE))
write("tcp_frame_reader_fuzzer", "one_request_bytewise", b"\x00" + small_request)
write("tcp_frame_reader_fuzzer", "requests_in_chunks", b"\x07" + small_request * 3)
write("tcp_frame_reader_fuzzer", "spilled_message", b"\xff" + spilled)
write("tcp_frame_reader_fuzzer", "attachments", b"\x40" + attachments)
write("tcp_frame_reader_fuzzer", "stream_frames", b"\x11" + stream + header(PING, call_id=9))
write("tcp_frame_reader_fuzzer", "truncated", b"\x05" + small_request[:-20])

# stream_frames_fuzzer: window (3 bytes), half-close flag, then operations
# (see the target: 0 message, 1 discarded, 2 half-close, 3 credit, 4 bad
# frame, 5 read, 6 write, 7 close writes, 8 end).
write("stream_frames_fuzzer", "read_write", bytes([0, 0x10, 0, 1, 0, 0, 5, 0x0a, 0x03, 0x61, 0x62, 0x63, 0, 5, 6, 0,
                                                   16, 7, 2, 5]))
write("stream_frames_fuzzer", "credit_overflow", bytes([0, 0, 0, 0, 3, 0xff, 0xff, 0xff, 0xff, 0xff, 3, 0xff, 0xff,
                                                        0xff, 0xff, 0xff, 6, 1, 0]))
write("stream_frames_fuzzer", "window_overrun", bytes([0, 0, 0, 0]) + bytes([0, 0xff, 0xff, 0]) * 6)
write("stream_frames_fuzzer", "discarded_and_bad", bytes([1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 1, 4, 3, 4, 5, 8, 1]))

# shm_region_fuzzer: operations (see the target: 0 lend, 1 return, 2 return
# index, 3 reclaim, 4 take a peer block, 5 release it, 6 consumed index,
# 7 take back our block, 8 scribble), each with its argument bytes.
write("shm_region_fuzzer", "lend_return_reclaim", bytes([0, 0x10, 0x00, 0, 0x01, 0x00, 1, 0, 1, 1, 3, 0, 0x20, 0x00, 7, 0,
                                                         5, 3]))
write("shm_region_fuzzer", "take_and_release", bytes([4, 0, 10, 4, 1, 10, 4, 0, 10, 5, 0, 5, 0, 4, 3, 200, 5, 0]))
write("shm_region_fuzzer", "bad_indices", bytes([0, 0, 9, 2, 8, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 3,
                                                 6, 8, 0x80, 0, 0, 0, 0, 0, 0, 0, 4, 0, 1, 5, 0]))
write("shm_region_fuzzer", "wild_offsets", bytes([4, 250, 1, 2, 3, 4, 5, 6, 7, 8, 250, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
                                                  0xff, 0xff, 7, 200, 240, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
                                                  0xff, 10]))

# stubgen_fuzzer: the golden .proto files and a few odd ones.
for proto in sorted((root.parent / "tests" / "stubgen" / "testdata" / "golden").glob("*.proto")):
    write("stubgen_fuzzer", proto.name, proto.read_bytes())
write("stubgen_fuzzer", "all_kinds.proto", b"""syntax = "proto3";
package a.b_c;
// A service whose names collide with what the generator emits.
service Stub { rpc Service(M) returns (M); rpc Stub(stream M) returns (M);
  rpc Reader(M) returns (stream M); rpc ReaderWriter(stream M) returns (stream M); }
message M { message Nested {} Nested nested = 1; }
""")
write("stubgen_fuzzer", "no_package.proto", b"""syntax = "proto2";
/* block comment with */ service S { rpc R(E) returns (E) {} }
message E { optional int32 x = 1; }
""")
