#include "zcrpc/transport/registry.h"

#include <gtest/gtest.h>

#include "zcrpc/transport/uri.h"

namespace zcrpc::transport {
namespace {

TEST(Uri, ParsesSchemeAndAddress) {
  auto uri = Uri::Parse("tcp://127.0.0.1:50051");
  ASSERT_TRUE(uri.ok());
  EXPECT_EQ(uri->scheme, "tcp");
  EXPECT_EQ(uri->address, "127.0.0.1:50051");
  EXPECT_EQ(uri->ToString(), "tcp://127.0.0.1:50051");
}

TEST(Uri, RejectsMalformed) {
  for (const char* bad : {"", "tcp", "tcp:/x", "://x", "tcp://", "TCP://x:1", "t cp://x:1"}) {
    EXPECT_EQ(Uri::Parse(bad).status().code(), StatusCode::kInvalidArgument) << bad;
  }
}

TEST(SplitHostPort, HandlesV4V6AndErrors) {
  std::string host;
  uint16_t port;
  ASSERT_TRUE(SplitHostPort("localhost:80", &host, &port).ok());
  EXPECT_EQ(host, "localhost");
  EXPECT_EQ(port, 80);
  ASSERT_TRUE(SplitHostPort("[::1]:443", &host, &port).ok());
  EXPECT_EQ(host, "::1");
  EXPECT_EQ(port, 443);
  for (const char* bad : {"nohost", ":80", "h:", "h:99999", "h:x", "[::1]80", "[::1"}) {
    EXPECT_FALSE(SplitHostPort(bad, &host, &port).ok()) << bad;
  }
}

TEST(Registry, UnknownSchemeNamesTheKnownOnes) {
  auto found = Registry::Default().Find("carrier-pigeon");
  ASSERT_FALSE(found.ok());
  EXPECT_EQ(found.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(found.status().message().find("tcp"), std::string::npos) << found.status();
}

TEST(Registry, UserTransportsCanBeAddedOnce) {
  Registry registry;
  int created = 0;
  auto factory = [&created]() -> std::unique_ptr<Transport> {
    ++created;
    return nullptr;  // a real transport would be returned here
  };
  ASSERT_TRUE(registry.Register("mine", factory).ok());
  EXPECT_EQ(registry.Register("mine", factory).code(), StatusCode::kAlreadyExists);
  EXPECT_EQ(created, 0);  // created on first use, not on registration
  (void)registry.Find("mine");
  EXPECT_EQ(created, 1);
}

}  // namespace
}  // namespace zcrpc::transport
