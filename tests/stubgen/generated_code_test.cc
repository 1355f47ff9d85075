// The generated code compiles (for the golden protos and for every .proto
// Debian's grpc-proto ships) and behaves: default handlers answer
// UNIMPLEMENTED, streaming methods are registered with stream handlers,
// streaming stubs and services have gRPC's synchronous shapes, keyword names
// are escaped.
#include <gtest/gtest.h>

#include <memory>
#include <string>
#include <string_view>
#include <utility>

#include "golden/shapes.zcrpc.h"
#include "grpc/health/v1/health.zcrpc.h"
#include "grpc/testing/benchmark_service.zcrpc.h"
#include "grpc/testing/test.zcrpc.h"

namespace zcrpc {
namespace {

const Service::Method* Find(const Service& s, std::string_view path) {
  for (const auto& m : s.methods()) {
    if (m.descriptor.path == path) return &m;
  }
  return nullptr;
}

TEST(GeneratedCode, DefaultHandlersAreUnimplemented) {
  grpc::health::v1::Health::Service health;
  EXPECT_EQ(health.name(), "grpc.health.v1.Health");
  grpc::health::v1::HealthCheckRequest request;
  grpc::health::v1::HealthCheckResponse response;
  EXPECT_EQ(health.Check(nullptr, &request, &response).code(), StatusCode::kUnimplemented);
}

TEST(GeneratedCode, EveryMethodIsInTheTable) {
  golden::v1::Shapes::Service shapes;
  ASSERT_EQ(shapes.methods().size(), 5u);
  EXPECT_NE(Find(shapes, "/golden.v1.Shapes/Area"), nullptr);
  EXPECT_NE(Find(shapes, "/golden.v1.Shapes/delete"), nullptr);  // the wire keeps the proto name
  static_assert(golden::v1::Shapes::kdelete_Method.kind == MethodKind::kUnary);
  static_assert(golden::v1::Shapes::kChatMethod.kind == MethodKind::kBidiStreaming);
  golden::v1::class_::Service keyword_service;
  EXPECT_EQ(keyword_service.name(), "golden.v1.class");
}

TEST(GeneratedCode, StreamingMethodsHaveStreamHandlers) {
  golden::v1::Shapes::Service shapes;
  const std::pair<std::string_view, MethodKind> streaming[] = {
      {"/golden.v1.Shapes/Upload", MethodKind::kClientStreaming},
      {"/golden.v1.Shapes/Watch", MethodKind::kServerStreaming},
      {"/golden.v1.Shapes/Chat", MethodKind::kBidiStreaming},
  };
  for (const auto& [path, kind] : streaming) {
    SCOPED_TRACE(path);
    const Service::Method* m = Find(shapes, path);
    ASSERT_NE(m, nullptr);
    EXPECT_EQ(m->descriptor.kind, kind);
    EXPECT_NE(m->stream_handler, nullptr);
    EXPECT_EQ(m->handler, nullptr);
  }
  const Service::Method* area = Find(shapes, "/golden.v1.Shapes/Area");
  ASSERT_NE(area, nullptr);
  EXPECT_EQ(area->descriptor.kind, MethodKind::kUnary);
  EXPECT_NE(area->handler, nullptr);
  EXPECT_EQ(area->stream_handler, nullptr);
}

TEST(GeneratedCode, StreamingStubsHaveGrpcShapes) {
  // Only needs to compile: each assignment fails unless the signature is
  // exactly this one.
  using golden::common::Measure;
  using golden::v1::Shape;
  using ShapesStub = golden::v1::Shapes::Stub;
  std::unique_ptr<ClientWriter<Shape>> (ShapesStub::*upload)(ClientContext*, Measure*) = &ShapesStub::Upload;
  std::unique_ptr<ClientReader<Measure>> (ShapesStub::*watch)(ClientContext*, const Shape&) = &ShapesStub::Watch;
  std::unique_ptr<ClientReaderWriter<Shape, Shape>> (ShapesStub::*chat)(ClientContext*) = &ShapesStub::Chat;
  EXPECT_NE(upload, nullptr);
  EXPECT_NE(watch, nullptr);
  EXPECT_NE(chat, nullptr);

  // Request and response types differ here, so their order is checked too.
  using grpc::testing::StreamingInputCallRequest;
  using grpc::testing::StreamingInputCallResponse;
  using grpc::testing::StreamingOutputCallRequest;
  using grpc::testing::StreamingOutputCallResponse;
  using TestStub = grpc::testing::TestService::Stub;
  std::unique_ptr<ClientReader<StreamingOutputCallResponse>> (TestStub::*output)(
      ClientContext*, const StreamingOutputCallRequest&) = &TestStub::StreamingOutputCall;
  std::unique_ptr<ClientWriter<StreamingInputCallRequest>> (TestStub::*input)(
      ClientContext*, StreamingInputCallResponse*) = &TestStub::StreamingInputCall;
  std::unique_ptr<ClientReaderWriter<StreamingOutputCallRequest, StreamingOutputCallResponse>> (
      TestStub::*duplex)(ClientContext*) = &TestStub::FullDuplexCall;
  EXPECT_NE(output, nullptr);
  EXPECT_NE(input, nullptr);
  EXPECT_NE(duplex, nullptr);
}

TEST(GeneratedCode, StreamingServicesHaveGrpcShapes) {
  // Only needs to compile, as above.
  using golden::common::Measure;
  using golden::v1::Shape;
  using ShapesService = golden::v1::Shapes::Service;
  Status (ShapesService::*upload)(ServerContext*, ServerReader<Shape>*, Measure*) = &ShapesService::Upload;
  Status (ShapesService::*watch)(ServerContext*, const Shape*, ServerWriter<Measure>*) = &ShapesService::Watch;
  Status (ShapesService::*chat)(ServerContext*, ServerReaderWriter<Shape, Shape>*) = &ShapesService::Chat;
  EXPECT_NE(upload, nullptr);
  EXPECT_NE(watch, nullptr);
  EXPECT_NE(chat, nullptr);

  using grpc::testing::StreamingInputCallRequest;
  using grpc::testing::StreamingInputCallResponse;
  using grpc::testing::StreamingOutputCallRequest;
  using grpc::testing::StreamingOutputCallResponse;
  using TestService = grpc::testing::TestService::Service;
  Status (TestService::*output)(ServerContext*, const StreamingOutputCallRequest*,
                                ServerWriter<StreamingOutputCallResponse>*) = &TestService::StreamingOutputCall;
  Status (TestService::*input)(ServerContext*, ServerReader<StreamingInputCallRequest>*,
                               StreamingInputCallResponse*) = &TestService::StreamingInputCall;
  // The server writes responses: ServerReaderWriter<W = response, R = request>.
  Status (TestService::*duplex)(ServerContext*,
                                ServerReaderWriter<StreamingOutputCallResponse, StreamingOutputCallRequest>*) =
      &TestService::FullDuplexCall;
  EXPECT_NE(output, nullptr);
  EXPECT_NE(input, nullptr);
  EXPECT_NE(duplex, nullptr);
}

TEST(GeneratedCode, DefaultStreamingHandlersAreUnimplemented) {
  // The virtual methods themselves (a registered stream_handler would need a
  // ServerContext and a stream, which only the runtime makes); the defaults
  // touch none of their arguments.
  golden::v1::Shapes::Service shapes;
  golden::v1::Shape request;
  golden::common::Measure response;
  EXPECT_EQ(shapes.Upload(nullptr, nullptr, &response).code(), StatusCode::kUnimplemented);
  EXPECT_EQ(shapes.Watch(nullptr, &request, nullptr).code(), StatusCode::kUnimplemented);
  Status chat = shapes.Chat(nullptr, nullptr);
  EXPECT_EQ(chat.code(), StatusCode::kUnimplemented);
  EXPECT_NE(chat.message().find("/golden.v1.Shapes/Chat"), std::string::npos);
}

TEST(GeneratedCode, BenchmarkServiceHasUnaryStub) {
  // Only needs to compile: the stub's unary method and its descriptor.
  using Stub = grpc::testing::BenchmarkService::Stub;
  Status (Stub::*unary)(ClientContext*, const grpc::testing::SimpleRequest&, grpc::testing::SimpleResponse*) =
      &Stub::UnaryCall;
  EXPECT_NE(unary, nullptr);
  EXPECT_EQ(grpc::testing::BenchmarkService::kUnaryCallMethod.path, "/grpc.testing.BenchmarkService/UnaryCall");
}

}  // namespace
}  // namespace zcrpc
