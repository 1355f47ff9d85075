#include "zcrpc/transport/shm/shm_address.h"

#include <unistd.h>

#include <gtest/gtest.h>

namespace zcrpc::transport::shm {
namespace {

TEST(ShmAddress, NameAloneTakesDefaults) {
  auto a = ShmAddress::Parse("orders");
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_EQ(a->name, "orders");
  EXPECT_FALSE(a->is_path());
  EXPECT_EQ(a->params.slab_bytes, 64u << 20);
  EXPECT_EQ(a->params.ring_depth, 256u);
  EXPECT_EQ(a->allow_uid, geteuid()) << "by default only our own uid may connect";
  EXPECT_EQ(a->mode, 0600u);
  EXPECT_FALSE(a->options.busy_poll);
  EXPECT_EQ(a->uri(), "shm://orders");
}

TEST(ShmAddress, OptionsAreParsed) {
  auto a = ShmAddress::Parse("/run/x.sock?slab_mb=8&ring_depth=64&allow_uid=any&mode=0660&spin_us=7&busy_poll=1");
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_TRUE(a->is_path());
  EXPECT_EQ(a->params.slab_bytes, 8u << 20);
  EXPECT_EQ(a->params.ring_depth, 64u);
  EXPECT_FALSE(a->allow_uid.has_value());
  EXPECT_EQ(a->mode, 0660u);
  EXPECT_EQ(a->options.spin, std::chrono::microseconds(7));
  EXPECT_TRUE(a->options.busy_poll);
  EXPECT_EQ(a->uri(), "shm:///run/x.sock") << "server-side options are not part of the dialled URI";
}

TEST(ShmAddress, BadInputIsInvalidArgumentNamingTheProblem) {
  for (const char* bad : {"", "?slab_mb=8", "x?slab_mb=3", "x?slab_mb=abc", "x?ring_depth=100", "x?ring_depth=1",
                          "x?busy_poll=yes", "x?mode=0999", "x?colour=blue", "x?allow_uid=-1"}) {
    auto a = ShmAddress::Parse(bad);
    EXPECT_EQ(a.status().code(), absl::StatusCode::kInvalidArgument) << bad;
  }
  EXPECT_NE(ShmAddress::Parse("x?colour=blue").status().message().find("colour"), std::string_view::npos);
}

}  // namespace
}  // namespace zcrpc::transport::shm
