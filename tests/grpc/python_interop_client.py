#!/usr/bin/env python3
"""A stock python3-grpcio client (Debian's) running gRPC's interop cases
against a grpc.testing.TestService server, through grpcio's generic
multicallables (Debian has no grpc_tools generator of grpcio's version; the
messages come from protoc --python_out).

Usage: python_interop_client.py MESSAGES_DIR HOST:PORT [CASE ...]
Prints PASS/FAIL per case; exits 1 if any failed."""
import sys

import grpc  # noqa: E402

# protoc --python_out puts them under grpc/testing/, which must not shadow
# grpcio's own `grpc` package: imported as top-level modules.
sys.path.insert(0, sys.argv[1] + "/grpc/testing")
import empty_pb2  # noqa: E402
import messages_pb2  # noqa: E402

target = sys.argv[2]
SERVICE = "/grpc.testing.TestService/"
channel = grpc.insecure_channel(target)


def method(kind, name, request_type, response_type):
    make = getattr(channel, kind)
    return make(SERVICE + name if name.find("/") < 0 else name, request_serializer=request_type.SerializeToString,
                response_deserializer=response_type.FromString)


empty_call = method("unary_unary", "EmptyCall", empty_pb2.Empty, empty_pb2.Empty)
unary_call = method("unary_unary", "UnaryCall", messages_pb2.SimpleRequest, messages_pb2.SimpleResponse)
streaming_output = method("unary_stream", "StreamingOutputCall", messages_pb2.StreamingOutputCallRequest,
                          messages_pb2.StreamingOutputCallResponse)
streaming_input = method("stream_unary", "StreamingInputCall", messages_pb2.StreamingInputCallRequest,
                         messages_pb2.StreamingInputCallResponse)
full_duplex = method("stream_stream", "FullDuplexCall", messages_pb2.StreamingOutputCallRequest,
                     messages_pb2.StreamingOutputCallResponse)
unimplemented_call = method("unary_unary", "UnimplementedCall", empty_pb2.Empty, empty_pb2.Empty)
unimplemented_service_call = method("unary_unary", "/grpc.testing.UnimplementedService/UnimplementedCall",
                               empty_pb2.Empty, empty_pb2.Empty)


def payload(size):
    return messages_pb2.Payload(body=b"\0" * size)


def expect(condition, why):
    if not condition:
        raise AssertionError(why)


def empty_unary():
    expect(empty_call(empty_pb2.Empty(), timeout=10) == empty_pb2.Empty(), "not empty")


def large_unary():
    response = unary_call(messages_pb2.SimpleRequest(response_size=314159, payload=payload(271828)), timeout=10)
    expect(len(response.payload.body) == 314159, "wrong size")


def client_streaming():
    requests = (messages_pb2.StreamingInputCallRequest(payload=payload(n)) for n in (27182, 8, 1828, 45904))
    expect(streaming_input(requests, timeout=10).aggregated_payload_size == 74922, "wrong aggregate")


def server_streaming():
    sizes = [31415, 9, 2653, 58979]
    request = messages_pb2.StreamingOutputCallRequest(
        response_parameters=[messages_pb2.ResponseParameters(size=n) for n in sizes])
    got = [len(r.payload.body) for r in streaming_output(request, timeout=10)]
    expect(got == sizes, f"sizes {got}")


def ping_pong():
    sizes = [(27182, 31415), (8, 9), (1828, 2653), (45904, 58979)]
    requests = (messages_pb2.StreamingOutputCallRequest(payload=payload(a),
                                                        response_parameters=[messages_pb2.ResponseParameters(size=b)])
                for a, b in sizes)
    got = [len(r.payload.body) for r in full_duplex(requests, timeout=10)]
    expect(got == [b for _, b in sizes], f"sizes {got}")


def empty_stream():
    expect(list(full_duplex(iter(()), timeout=10)) == [], "responses to nothing")


def timeout_on_sleeping_server():
    def forever():
        yield messages_pb2.StreamingOutputCallRequest(payload=payload(27182))
        import threading
        threading.Event().wait(5)
    try:
        list(full_duplex(forever(), timeout=0.001))
    except grpc.RpcError as error:
        expect(error.code() == grpc.StatusCode.DEADLINE_EXCEEDED, f"got {error.code()}")
        return
    raise AssertionError("no deadline")


def cancel_after_begin():
    import threading
    release = threading.Event()

    def requests():
        release.wait(5)
        return
        yield
    future = streaming_input.future(requests(), timeout=10)
    future.cancel()
    release.set()
    expect(future.cancelled(), "not cancelled")


def cancel_after_first_response():
    import queue
    q = queue.Queue()
    q.put(messages_pb2.StreamingOutputCallRequest(payload=payload(27182),
                                                  response_parameters=[messages_pb2.ResponseParameters(size=31415)]))
    call = full_duplex(iter(q.get, None), timeout=10)
    expect(len(next(call).payload.body) == 31415, "first response")
    call.cancel()
    try:
        next(call)
    except grpc.RpcError as error:
        expect(error.code() == grpc.StatusCode.CANCELLED, f"got {error.code()}")
        return
    raise AssertionError("not cancelled")


def custom_metadata():
    metadata = (("x-grpc-test-echo-initial", "test_initial_metadata_value"),
                ("x-grpc-test-echo-trailing-bin", b"\x0a\x0b\x0a\x0b\x0a\x0b"))
    _, call = unary_call.with_call(messages_pb2.SimpleRequest(response_size=1), metadata=metadata, timeout=10)
    expect(("x-grpc-test-echo-initial", "test_initial_metadata_value") in call.initial_metadata(), "initial")
    expect(("x-grpc-test-echo-trailing-bin", b"\x0a\x0b\x0a\x0b\x0a\x0b") in call.trailing_metadata(), "trailing")


def asked_for_status(message):
    status = messages_pb2.EchoStatus(code=2, message=message)
    try:
        unary_call(messages_pb2.SimpleRequest(response_status=status), timeout=10)
    except grpc.RpcError as error:
        expect(error.code() == grpc.StatusCode.UNKNOWN and error.details() == message,
               f"unary: {error.code()} {error.details()!r}")
    else:
        raise AssertionError("unary: OK")
    try:
        list(full_duplex(iter([messages_pb2.StreamingOutputCallRequest(response_status=status)]), timeout=10))
    except grpc.RpcError as error:
        expect(error.code() == grpc.StatusCode.UNKNOWN and error.details() == message,
               f"full duplex: {error.code()} {error.details()!r}")
    else:
        raise AssertionError("full duplex: OK")


def status_code_and_message():
    asked_for_status("test status message")


def special_status_message():
    asked_for_status("\t\ntest with whitespace\r\nand Unicode BMP \u263a and non-BMP \U0001f608\t\n")


def expect_unimplemented(call):
    try:
        call(empty_pb2.Empty(), timeout=10)
    except grpc.RpcError as error:
        expect(error.code() == grpc.StatusCode.UNIMPLEMENTED, f"got {error.code()}")
        return
    raise AssertionError("OK")


def unimplemented_method():
    expect_unimplemented(unimplemented_call)


def unimplemented_service():
    expect_unimplemented(unimplemented_service_call)


CASES = [empty_unary, large_unary, client_streaming, server_streaming, ping_pong, empty_stream,
         timeout_on_sleeping_server, cancel_after_begin, cancel_after_first_response, custom_metadata,
         status_code_and_message, special_status_message, unimplemented_method, unimplemented_service]
wanted = sys.argv[3:] or [case.__name__ for case in CASES]
failed = 0
for case in CASES:
    if case.__name__ not in wanted:
        continue
    try:
        case()
        print(f"PASS {case.__name__}")
    except Exception as error:  # noqa: BLE001 - every failure is reported
        failed += 1
        print(f"FAIL {case.__name__}: {error}")
sys.exit(1 if failed else 0)
