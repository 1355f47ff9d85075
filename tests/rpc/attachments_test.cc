// Attachments through the runtime, client and server in this process, so
// that the copy counters see both sides: exact framework copies per path.
#include <gtest/gtest.h>

#include "zcrpc/base/copy_stats.h"
#include "test_service.zcrpc.h"

namespace zcrpc {
namespace {

using test::EchoMessage;
using test::TestService;

// Sends each request attachment back: the received buffer itself.
class BounceService final : public TestService::Service {
  Status Echo(ServerContext* ctx, const EchoMessage* request, EchoMessage* reply) override {
    reply->set_id(request->id());
    for (Buffer& attachment : ctx->request_attachments()) ctx->AddResponseAttachment(std::move(attachment));
    // id N > 1000: answer with N - 1000 fresh attachments of 64 bytes.
    for (uint64_t i = 1000; i < request->id(); ++i) ctx->AddResponseAttachment(ctx->AllocateBuffer(64));
    return Status();
  }
};

// A server with BounceService on the transport under test, and a channel
// and stub to it, all in this process.
class Attachments : public ::testing::TestWithParam<std::string> {
 protected:
  void Start() {
    ASSERT_TRUE(server_.RegisterService(&service_).ok());
    auto uri = server_.AddListener(GetParam());
    ASSERT_TRUE(uri.ok()) << uri.status();
    auto channel = Channel::Create(*uri);
    ASSERT_TRUE(channel.ok());
    channel_ = *channel;
    stub_ = TestService::NewStub(channel_);
  }

  BounceService service_;
  Server server_;
  std::shared_ptr<Channel> channel_;
  std::unique_ptr<TestService::Stub> stub_;
};

TEST_P(Attachments, OneMebibyteRoundTripCopiesNoPayloadBytes) {
  ASSERT_NO_FATAL_FAILURE(Start());

  for (int call = 0; call < 5; ++call) {
    Buffer attachment = channel_->AllocateBuffer(1 << 20);
    ASSERT_EQ(attachment.size(), 1u << 20);
    for (size_t i = 0; i < attachment.size(); ++i) attachment.data()[i] = static_cast<uint8_t>(i * 7 + call);
    ClientContext ctx;
    ctx.AddAttachment(std::move(attachment));
    EchoMessage request, reply;
    request.set_id(static_cast<uint64_t>(call));
    const uint64_t before = CopyStats::TotalBytesCopied();
    ASSERT_TRUE(stub_->Echo(&ctx, request, &reply).ok());
    // tcp: gathered into sendmsg from the buffer, received by the kernel's
    // copy into a page-aligned buffer (not a framework copy); shm: lent and
    // sent back by reference. Either way the framework copies nothing.
    EXPECT_EQ(CopyStats::TotalBytesCopied() - before, 0u);
    ASSERT_EQ(ctx.response_attachments().size(), 1u);
    const Buffer& back = ctx.response_attachments()[0];
    ASSERT_EQ(back.size(), 1u << 20);
    for (size_t i = 0; i < back.size(); i += 997) ASSERT_EQ(back.data()[i], static_cast<uint8_t>(i * 7 + call));
  }
}

TEST_P(Attachments, MoreAttachmentsThanTheTransportCarriesEndTheCallWithAnError) {
  ASSERT_NO_FATAL_FAILURE(Start());
  ClientContext ctx;
  for (int i = 0; i < 65; ++i) ctx.AddAttachment(channel_->AllocateBuffer(64));  // limit: 64 (shm: 9)
  ctx.set_timeout(std::chrono::seconds(5));
  EchoMessage request, reply;
  Status status = stub_->Echo(&ctx, request, &reply);
  EXPECT_FALSE(status.ok());
  EXPECT_NE(status.code(), StatusCode::kDeadlineExceeded) << "the call must end with an error, not hang: " << status;
}

TEST_P(Attachments, AReplyTheTransportCannotCarryBecomesAnErrorNotAHang) {
  ASSERT_NO_FATAL_FAILURE(Start());
  ClientContext ctx;
  ctx.set_timeout(std::chrono::seconds(5));
  EchoMessage request, reply;
  request.set_id(1010);  // ten attachments back: tcp carries them, shm at most nine
  Status status = stub_->Echo(&ctx, request, &reply);
  if (GetParam().rfind("shm", 0) == 0) {
    // Over what the connection carries (its capabilities): the client gets
    // why, as RESOURCE_EXHAUSTED, as gRPC does for an oversized response.
    EXPECT_EQ(status.code(), StatusCode::kResourceExhausted) << status;
    EXPECT_NE(status.message().find("max_attachments 9"), std::string_view::npos) << status;
  } else {
    EXPECT_TRUE(status.ok()) << status;
    EXPECT_EQ(ctx.response_attachments().size(), 10u);
  }
}

INSTANTIATE_TEST_SUITE_P(Transports, Attachments, ::testing::Values("tcp://127.0.0.1:0", "shm://attachments-*"),
                         [](const auto& info) { return info.param.substr(0, info.param.find(':')); });

}  // namespace
}  // namespace zcrpc
