// The callback (reactor) API on ticker.proto: a server write reactor and a
// client read reactor, with no thread waiting for either stream.
#include <cinttypes>
#include <cstdio>
#include <future>

#include "ticker.zcrpc.h"

// Server: Watch returns a reactor that writes `count` ticks, one at a time.
class Ticks final : public zcrpc::ServerWriteReactor<demo::Tick> {
 public:
  explicit Ticks(uint64_t count) : count_(count) { Next(); }
  void OnWriteDone(bool ok) override {
    if (!ok) return Finish(zcrpc::Status(zcrpc::StatusCode::kCancelled, "client gone"));
    Next();
  }
  void OnDone() override { delete this; }  // the last reaction

 private:
  void Next() {
    if (tick_.seq() == count_) return Finish(zcrpc::Status());
    tick_.set_seq(tick_.seq() + 1);
    StartWrite(&tick_);  // tick_ must stay valid until OnWriteDone
  }
  const uint64_t count_;
  demo::Tick tick_;
};

class TickerImpl final : public demo::Ticker::CallbackService {
  zcrpc::ServerWriteReactor<demo::Tick>* Watch(zcrpc::ServerContext*, const demo::WatchRequest* request) override {
    return new Ticks(request->count());  // runs on a transport thread: never block here
  }
  // Echo is not overridden: it answers UNIMPLEMENTED.
};

// Client: reads until the server ends the stream; OnDone has the status.
class Watcher final : public zcrpc::ClientReadReactor<demo::Tick> {
 public:
  void OnReadDone(bool ok) override {
    if (!ok) return;  // no more ticks: OnDone follows
    std::printf("tick %" PRIu64 "\n", tick_.seq());
    StartRead(&tick_);
  }
  void OnDone(const zcrpc::Status& status) override { done_.set_value(status); }
  void Start() {
    StartRead(&tick_);
    StartCall();
  }
  zcrpc::Status Wait() { return done_.get_future().get(); }

 private:
  demo::Tick tick_;
  std::promise<zcrpc::Status> done_;
};

int main() {
  TickerImpl service;
  zcrpc::Server server;
  if (zcrpc::Status s = server.RegisterService(&service); !s.ok()) return 1;
  auto uri = server.AddListener("shm://reactors-example-*");
  if (!uri.ok()) return 1;
  auto channel = zcrpc::Channel::Create(*uri);
  if (!channel.ok()) return 1;
  auto stub = demo::Ticker::NewStub(*channel);

  zcrpc::ClientContext context;
  demo::WatchRequest request;
  request.set_count(3);
  Watcher watcher;
  stub->Watch(&context, &request, &watcher);  // binds the reactor to the call
  watcher.Start();
  zcrpc::Status status = watcher.Wait();
  std::printf("Watch ended: %s\n", status.ToString().c_str());
  server.Shutdown();
  return status.ok() ? 0 : 1;
}
