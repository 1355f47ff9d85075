// Streams, in the shapes gRPC's synchronous API has (README, "Streams").
#include <cinttypes>
#include <cstdio>

#include "ticker.zcrpc.h"

class TickerImpl final : public demo::Ticker::Service {
  zcrpc::Status Watch(zcrpc::ServerContext*, const demo::WatchRequest* request,
                      zcrpc::ServerWriter<demo::Tick>* writer) override {
    demo::Tick tick;
    for (uint64_t i = 0; i < request->count(); ++i) {
      tick.set_seq(i);
      // Waits while the client's window is full; false once it went away.
      if (!writer->Write(tick)) return zcrpc::Status(zcrpc::StatusCode::kCancelled, "client gone");
    }
    return zcrpc::Status();  // the client's Finish() returns this
  }

  zcrpc::Status Echo(zcrpc::ServerContext*,
                     zcrpc::ServerReaderWriter<demo::Tick, demo::Tick>* stream) override {
    demo::Tick tick;
    while (stream->Read(&tick)) {  // false once the client called WritesDone()
      tick.set_note("echoed");
      if (!stream->Write(tick)) break;
    }
    return zcrpc::Status();
  }
};

int Fail(const char* what, const zcrpc::Status& status) {
  std::fprintf(stderr, "%s: %s\n", what, status.ToString().c_str());
  return 1;
}

int main() {
  TickerImpl service;
  zcrpc::Server server;  // each streaming handler runs on a thread of its own
  if (zcrpc::Status s = server.RegisterService(&service); !s.ok()) return Fail("RegisterService", s);
  auto uri = server.AddListener("tcp://127.0.0.1:0");
  if (!uri.ok()) return Fail("AddListener", uri.status());
  auto channel = zcrpc::Channel::Create(*uri);
  if (!channel.ok()) return Fail("Channel::Create", channel.status());
  auto stub = demo::Ticker::NewStub(*channel);

  // Server streaming: Read() until false, then Finish().
  zcrpc::ClientContext watch;
  demo::WatchRequest request;
  request.set_count(3);
  auto ticks = stub->Watch(&watch, request);
  demo::Tick tick;
  while (ticks->Read(&tick)) std::printf("tick %" PRIu64 "\n", tick.seq());
  if (zcrpc::Status s = ticks->Finish(); !s.ok()) return Fail("Watch", s);

  // Bidirectional: write and read in turn, WritesDone(), then Finish().
  zcrpc::ClientContext echo;
  echo.set_timeout(std::chrono::seconds(5));  // covers the whole stream
  auto stream = stub->Echo(&echo);
  for (uint64_t i = 0; i < 3; ++i) {
    tick.set_seq(i);
    if (!stream->Write(tick) || !stream->Read(&tick)) break;  // Finish() says why
    std::printf("%s %" PRIu64 "\n", tick.note().c_str(), tick.seq());
  }
  stream->WritesDone();
  if (zcrpc::Status s = stream->Finish(); !s.ok()) return Fail("Echo", s);

  server.Shutdown(std::chrono::steady_clock::now() + std::chrono::seconds(1));
  return 0;
}
