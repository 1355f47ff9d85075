// The generated code compiles (for the golden protos and for every .proto
// Debian's grpc-proto ships) and behaves: default handlers answer
// UNIMPLEMENTED, streaming methods are registered but unsupported, keyword
// names are escaped.
#include <gtest/gtest.h>

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

TEST(GeneratedCode, StreamingMethodsAnswerUnimplementedForNow) {
  golden::v1::Shapes::Service shapes;
  const Service::Method* chat = Find(shapes, "/golden.v1.Shapes/Chat");
  ASSERT_NE(chat, nullptr);
  Buffer out;
  Status s = chat->handler(nullptr, {}, &out);
  EXPECT_EQ(s.code(), StatusCode::kUnimplemented);
  EXPECT_NE(s.message().find("streaming"), std::string::npos);
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
