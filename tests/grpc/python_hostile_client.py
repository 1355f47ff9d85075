#!/usr/bin/env python3
"""Hostile gRPC peers against zcrpc's grpc:// listener, compared with a
stock gRPC C++ server given the very same bytes, while a well-behaved
python3-grpcio stream stays open on its own connection:

  - bytes that are not HTTP/2 at all, instead of the connection preface;
  - a valid preface, then: a DATA frame on stream 0; a HEADERS frame whose
    block is not HPACK; a frame longer than SETTINGS_MAX_FRAME_SIZE; a
    SETTINGS frame with an out-of-range value; a HEADERS frame on an even
    (server-initiated) stream;
  - a message larger than the server's receive limit (RESOURCE_EXHAUSTED).

"gRPC's usual error" is whatever the stock server answers, and it is not
always what RFC 9113 says (it ignores DATA on stream 0, and mostly closes the
socket without a GOAWAY): so each malformed connection must end the same way
on both servers (closed, or left open), with the same stream-level answers
(HEADERS decoded to grpc-status and grpc-message, RST_STREAM codes), and
never a served message. Connection housekeeping (SETTINGS, WINDOW_UPDATE,
PING, and a GOAWAY that may or may not beat the close) is not compared. The
open stream must then go on and end OK, and a new call must be served: one
bad peer disturbs nobody else.

Usage: python_hostile_client.py MESSAGES_DIR STOCK_HOST:PORT ZCRPC_HOST:PORT
Prints PASS/FAIL per case; exits 1 if any failed."""
import queue
import socket
import struct
import sys

import grpc

sys.path.insert(0, sys.argv[1] + "/grpc/testing")
import empty_pb2  # noqa: E402
import messages_pb2  # noqa: E402

stock_target, target = sys.argv[2], sys.argv[3]
SERVICE = "/grpc.testing.TestService/"
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DATA, HEADERS, RST_STREAM, SETTINGS, PING, GOAWAY, WINDOW_UPDATE = 0x0, 0x1, 0x3, 0x4, 0x6, 0x7, 0x8
END_HEADERS = 0x4
HOUSEKEEPING = (SETTINGS, PING, GOAWAY, WINDOW_UPDATE)


def frame(kind, flags, stream, payload=b"", declared_length=None):
    length = len(payload) if declared_length is None else declared_length
    return struct.pack(">I", length)[1:] + bytes([kind, flags]) + struct.pack(">I", stream) + payload


def hpack_literals(block):
    """The header block as (name, value) pairs when it holds only literals
    with new, non-Huffman names (what gRPC writes for a trailers-only error);
    otherwise the raw bytes, compared as they are."""
    fields = []
    i = 0
    try:
        while i < len(block):
            if block[i] not in (0x00, 0x10):
                return block
            i += 1
            pair = []
            for _ in range(2):
                if block[i] & 0x80 or block[i] & 0x7f == 0x7f:
                    return block
                n = block[i]
                pair.append(block[i + 1:i + 1 + n].decode())
                i += 1 + n
            fields.append(tuple(pair))
    except (IndexError, UnicodeDecodeError):
        return block
    return fields


def answer(hostport, sent):
    """Sends bytes on a new connection and reads until the server closes it,
    or for 2 s. Returns how it ended and the stream-level frames received."""
    host, port = hostport.rsplit(":", 1)
    ended = "closed"
    received = b""
    with socket.create_connection((host, int(port)), timeout=10) as s:
        s.sendall(sent)
        s.settimeout(2)
        while True:
            try:
                chunk = s.recv(65536)
            except socket.timeout:
                ended = "left open"
                break
            except ConnectionResetError:
                break
            if not chunk:
                break
            received += chunk
    frames = []
    while len(received) >= 9:
        length, kind = int.from_bytes(received[:3], "big"), received[3]
        stream = struct.unpack(">I", received[5:9])[0] & 0x7FFFFFFF
        payload = received[9:9 + length]
        received = received[9 + length:]
        if kind == HEADERS:
            frames.append(("HEADERS", stream, hpack_literals(payload)))
        elif kind == RST_STREAM:
            frames.append(("RST_STREAM", stream, struct.unpack(">I", payload[:4])[0]))
        elif kind not in HOUSEKEEPING:
            frames.append((kind, stream, payload))
    return ended, frames


MALFORMED = {
    "not_http2": b"GET / HTTP/1.1\r\nHost: x\r\n\r\n" + b"\xff" * 64,
    "data_on_stream_zero": PREFACE + frame(SETTINGS, 0, 0) + frame(DATA, 0, 0, b"hello"),
    # 0x7f then bytes that never end an integer: no HPACK decoder accepts it.
    "headers_not_hpack": PREFACE + frame(SETTINGS, 0, 0) + frame(HEADERS, END_HEADERS, 1, b"\x7f" + b"\xff" * 16),
    "frame_too_long": PREFACE + frame(SETTINGS, 0, 0) + frame(DATA, 0, 1, b"\0" * 64, declared_length=1 << 23),
    # SETTINGS_INITIAL_WINDOW_SIZE above 2^31-1: FLOW_CONTROL_ERROR.
    "settings_out_of_range": PREFACE + frame(SETTINGS, 0, 0, b"\x00\x04\xff\xff\xff\xff"),
    "headers_on_even_stream": PREFACE + frame(SETTINGS, 0, 0) + frame(HEADERS, END_HEADERS | 0x1, 2, b"\x83"),
}


def malformed_case(name, sent):
    def case():
        stock, zcrpc = answer(stock_target, sent), answer(target, sent)
        if zcrpc != stock:
            raise AssertionError(f"zcrpc answered {zcrpc}, stock gRPC {stock}")
        if any(kind == DATA for kind, _, _ in zcrpc[1]):
            raise AssertionError("a message was served")
        return f"both {zcrpc[0]}, stream frames {zcrpc[1]}"
    case.__name__ = name
    return case


def expect(condition, why):
    if not condition:
        raise AssertionError(why)


channel = grpc.insecure_channel(target)
unary_call = channel.unary_unary(SERVICE + "UnaryCall", request_serializer=messages_pb2.SimpleRequest.SerializeToString,
                                 response_deserializer=messages_pb2.SimpleResponse.FromString)
empty_call = channel.unary_unary(SERVICE + "EmptyCall", request_serializer=empty_pb2.Empty.SerializeToString,
                                 response_deserializer=empty_pb2.Empty.FromString)
full_duplex = channel.stream_stream(SERVICE + "FullDuplexCall",
                                    request_serializer=messages_pb2.StreamingOutputCallRequest.SerializeToString,
                                    response_deserializer=messages_pb2.StreamingOutputCallResponse.FromString)


def oversize_message():
    # Over both gRPC's default 4 MiB and zcrpc's default 64 MiB limits.
    request = messages_pb2.SimpleRequest(response_size=1, payload=messages_pb2.Payload(body=b"\0" * (65 << 20)))
    try:
        unary_call(request, timeout=20)
    except grpc.RpcError as error:
        expect(error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, f"got {error.code()}: {error.details()}")
        return
    raise AssertionError("an oversize message was accepted")


def ask(size):
    return messages_pb2.StreamingOutputCallRequest(response_parameters=[messages_pb2.ResponseParameters(size=size)])


# A bystander: a stream opened before the hostile peers and finished after them.
requests = queue.Queue()
requests.put(ask(100))
bystander = full_duplex(iter(requests.get, None), timeout=60)
first = next(bystander)

failed = 0
for case in [malformed_case(name, sent) for name, sent in MALFORMED.items()] + [oversize_message]:
    try:
        detail = case()
        print(f"PASS {case.__name__}" + (f": {detail}" if detail else ""))
    except Exception as error:  # noqa: BLE001 - every failure is reported
        failed += 1
        print(f"FAIL {case.__name__}: {error}")

try:
    requests.put(ask(200))
    second = next(bystander)
    requests.put(None)
    rest = list(bystander)
    expect(len(first.payload.body) == 100 and len(second.payload.body) == 200 and not rest, "wrong responses")
    expect(bystander.code() == grpc.StatusCode.OK, f"ended {bystander.code()}")
    expect(empty_call(empty_pb2.Empty(), timeout=10) == empty_pb2.Empty(), "a new call failed")
    print("PASS others_undisturbed")
except Exception as error:  # noqa: BLE001
    failed += 1
    print(f"FAIL others_undisturbed: {error}")
sys.exit(1 if failed else 0)
