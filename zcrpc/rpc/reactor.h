// Reactors: the callback API, for every RPC kind, in the shape of gRPC's
// (docs/streaming.md, "Reactors"). A reactor is an object of yours, derived
// from one of the classes below; you start operations on it (StartRead,
// StartWrite, ...) and zcrpc calls its reactions (OnReadDone, OnWriteDone,
// ...) as they complete, with no thread waiting per call.
//
//   server handler returns            client passes to the stub
//   ServerUnaryReactor*               (unary: the stub's `done` callback)
//   ServerReadReactor<Req>*           ClientWriteReactor<Req>*   client streaming
//   ServerWriteReactor<Resp>*         ClientReadReactor<Resp>*   server streaming
//   ServerBidiReactor<Req, Resp>*     ClientBidiReactor<Req, Resp>*
//
// Rules, which are gRPC's, minus holds:
//  - At most one read and one write outstanding per call; start the next
//    from the previous one's reaction (or any thread once it ran). A second
//    one while one is outstanding completes at once with ok = false.
//  - Reactions of one call run one at a time, never inside a call of yours
//    (Start*, Finish, StartCall), so never under your locks. They run on
//    the thread that brought the news (a transport thread, for a message)
//    or on zcrpc's reaction thread: keep them short, and never block in
//    them (a blocking RPC fails there with FAILED_PRECONDITION).
//  - OnDone is the last reaction. It runs once the call has ended, every
//    operation you started has completed (its reaction ran), and, on the
//    server, Finish() was carried out. No holds are needed: an operation
//    outstanding keeps OnDone away. Delete the reactor in OnDone (or
//    after); touch it no more once OnDone began.
//  - The server must call Finish() exactly once, also after OnCancel();
//    until then the call's record stays, and Server::Shutdown waits for it.
//
// Objects passed by pointer to Start*() (messages to write, messages to
// read into) must stay valid until that operation's reaction runs.
// Messages travel as in the blocking API: serialized straight into the
// connection's memory, received as buffers handed over, attachments
// beside them.
#pragma once

#include <functional>
#include <memory>
#include <vector>

#include "zcrpc/base/buffer.h"
#include "zcrpc/base/status.h"
#include "zcrpc/rpc/method.h"

namespace google::protobuf {
class MessageLite;
}

namespace zcrpc {

class Channel;
class ClientContext;

namespace internal {
class ReactorDriver;

// What the runtime calls on a reactor; the public classes forward each to
// the reaction of the same name.
class ReactorHooks {
 public:
  virtual void ReadDone(bool) {}
  virtual void WriteDone(bool) {}
  virtual void WritesDoneDone(bool) {}
  virtual void Cancelled() {}
  virtual void Done(const Status& status) = 0;

 protected:
  ~ReactorHooks() = default;
};

// The driver behind a reactor, for the runtime and generated code.
ReactorDriver& DriverOf(class ReactorCore& reactor);

// Holds the driver; the base of every reactor below.
class ReactorCore : private ReactorHooks {
 public:
  ReactorCore(const ReactorCore&) = delete;
  ReactorCore& operator=(const ReactorCore&) = delete;

 protected:
  ReactorCore();
  virtual ~ReactorCore();

  void StartReadUntyped(google::protobuf::MessageLite* message, std::vector<Buffer>* attachments);
  void StartWriteUntyped(const google::protobuf::MessageLite* message, std::vector<Buffer> attachments);
  void StartWriteLastUntyped(const google::protobuf::MessageLite* message, std::vector<Buffer> attachments);
  void StartWriteAndFinishUntyped(const google::protobuf::MessageLite* message, std::vector<Buffer> attachments,
                                  Status status);
  void StartWritesDoneUntyped();
  void FinishUntyped(Status status);

  // The typed classes route the hooks they use to their reactions.
  void ReadDone(bool ok) override { ReadDoneHook(ok); }
  void WriteDone(bool ok) override { WriteDoneHook(ok); }
  void WritesDoneDone(bool ok) override { WritesDoneDoneHook(ok); }
  void Cancelled() override { CancelledHook(); }
  void Done(const Status& status) override { DoneHook(status); }
  virtual void ReadDoneHook(bool) {}
  virtual void WriteDoneHook(bool) {}
  virtual void WritesDoneDoneHook(bool) {}
  virtual void CancelledHook() {}
  virtual void DoneHook(const Status& status) = 0;

 private:
  friend ReactorDriver& DriverOf(ReactorCore& reactor);
  std::shared_ptr<ReactorDriver> driver_;
};
}  // namespace internal

// ---------------------------------------------------------------- server

// The base of the server reactors. Owned by you (the handler returns it,
// typically `new`); valid until OnDone.
class ServerReactor : public internal::ReactorCore {
 public:
  // Ends the call: the client gets `status` (and, for unary and client
  // streaming methods when OK, the response the handler was given, which
  // must be filled by then). Waits for the outstanding write, if any. Any
  // thread; once (later calls are ignored).
  void Finish(Status status) { FinishUntyped(std::move(status)); }

  // The call was cancelled: the client gave up or its deadline passed, the
  // connection was lost, or the server shut down. Operations outstanding
  // complete with ok = false; call Finish() still.
  virtual void OnCancel() {}
  // The last reaction (see the top of this file).
  virtual void OnDone() = 0;

 private:
  void CancelledHook() final { OnCancel(); }
  void DoneHook(const Status&) final { OnDone(); }
};

// Unary: fill the response, then Finish(), from any thread, now or later.
class ServerUnaryReactor : public ServerReactor {};

// Client streaming: read the client's messages, fill the response, Finish().
template <typename Req>
class ServerReadReactor : public ServerReactor {
 public:
  // Reads the next message into `*message`; OnReadDone(false) once the
  // client closed its writes (or the call is over).
  void StartRead(Req* message) { StartReadUntyped(message, nullptr); }
  void StartRead(Req* message, std::vector<Buffer>* attachments) { StartReadUntyped(message, attachments); }
  virtual void OnReadDone(bool /*ok*/) {}

 private:
  void ReadDoneHook(bool ok) final { OnReadDone(ok); }
};

// Server streaming: write messages, then Finish().
template <typename Resp>
class ServerWriteReactor : public ServerReactor {
 public:
  // Sends `*message` once the client's window has room; OnWriteDone(false)
  // if the call ended first.
  void StartWrite(const Resp* message) { StartWriteUntyped(message, {}); }
  void StartWrite(const Resp* message, std::vector<Buffer> attachments) {
    StartWriteUntyped(message, std::move(attachments));
  }
  // StartWrite then Finish(status), without an OnWriteDone.
  void StartWriteAndFinish(const Resp* message, Status status) {
    StartWriteAndFinishUntyped(message, {}, std::move(status));
  }
  virtual void OnWriteDone(bool /*ok*/) {}

 private:
  void WriteDoneHook(bool ok) final { OnWriteDone(ok); }
};

// Bidirectional: reads and writes, independently; then Finish().
template <typename Req, typename Resp>
class ServerBidiReactor : public ServerReactor {
 public:
  void StartRead(Req* message) { StartReadUntyped(message, nullptr); }
  void StartRead(Req* message, std::vector<Buffer>* attachments) { StartReadUntyped(message, attachments); }
  void StartWrite(const Resp* message) { StartWriteUntyped(message, {}); }
  void StartWrite(const Resp* message, std::vector<Buffer> attachments) {
    StartWriteUntyped(message, std::move(attachments));
  }
  void StartWriteAndFinish(const Resp* message, Status status) {
    StartWriteAndFinishUntyped(message, {}, std::move(status));
  }
  virtual void OnReadDone(bool /*ok*/) {}
  virtual void OnWriteDone(bool /*ok*/) {}

 private:
  void ReadDoneHook(bool ok) final { OnReadDone(ok); }
  void WriteDoneHook(bool ok) final { OnWriteDone(ok); }
};

// ---------------------------------------------------------------- client

// The base of the client reactors. Owned by you; pass it to the stub's
// reactor overload (which binds it to the call), start the operations you
// want, then StartCall(). Valid until OnDone; cancel with the context's
// TryCancel().
class ClientReactor : public internal::ReactorCore {
 public:
  // Opens the call. Any thread; once (a second call does nothing), after
  // the stub bound the reactor. On an application thread it may wait for
  // the channel's connection (no longer than the context's deadline); on
  // a transport thread or inside a reaction it never waits: a thread of
  // its own waits for the connection if it is not up yet.
  void StartCall();

  // The last reaction, with the call's status (the server's, or why it
  // failed here); the server's trailing metadata is in the context.
  virtual void OnDone(const Status& /*status*/) {}

  // For generated code: binds this reactor to a call of `method`. For
  // server streaming, `request` is sent at StartCall (it must stay valid
  // until OnDone); for client streaming, `response` is filled before
  // OnDone. `context` must outlive the call.
  void Bind(std::shared_ptr<Channel> channel, const MethodDescriptor& method, ClientContext* context,
            const google::protobuf::MessageLite* request, google::protobuf::MessageLite* response);

 private:
  void DoneHook(const Status& status) final { OnDone(status); }

  // Opens the call; false (nothing done) if that would wait and may not.
  std::function<bool(bool may_wait)> start_;
  bool call_started_ = false;
};

// Server streaming: StartRead until OnReadDone(false); OnDone has the status.
template <typename Resp>
class ClientReadReactor : public ClientReactor {
 public:
  void StartRead(Resp* message) { StartReadUntyped(message, nullptr); }
  void StartRead(Resp* message, std::vector<Buffer>* attachments) { StartReadUntyped(message, attachments); }
  virtual void OnReadDone(bool /*ok*/) {}

 private:
  void ReadDoneHook(bool ok) final { OnReadDone(ok); }
};

// Client streaming: write messages, StartWritesDone(); OnDone has the
// status, and the response given to the stub is filled.
template <typename Req>
class ClientWriteReactor : public ClientReactor {
 public:
  void StartWrite(const Req* message) { StartWriteUntyped(message, {}); }
  void StartWrite(const Req* message, std::vector<Buffer> attachments) {
    StartWriteUntyped(message, std::move(attachments));
  }
  // StartWrite, then writes-done (no OnWritesDoneDone).
  void StartWriteLast(const Req* message) { StartWriteLastUntyped(message, {}); }
  void StartWritesDone() { StartWritesDoneUntyped(); }
  virtual void OnWriteDone(bool /*ok*/) {}
  virtual void OnWritesDoneDone(bool /*ok*/) {}

 private:
  void WriteDoneHook(bool ok) final { OnWriteDone(ok); }
  void WritesDoneDoneHook(bool ok) final { OnWritesDoneDone(ok); }
};

// Bidirectional.
template <typename Req, typename Resp>
class ClientBidiReactor : public ClientReactor {
 public:
  void StartRead(Resp* message) { StartReadUntyped(message, nullptr); }
  void StartRead(Resp* message, std::vector<Buffer>* attachments) { StartReadUntyped(message, attachments); }
  void StartWrite(const Req* message) { StartWriteUntyped(message, {}); }
  void StartWrite(const Req* message, std::vector<Buffer> attachments) {
    StartWriteUntyped(message, std::move(attachments));
  }
  void StartWriteLast(const Req* message) { StartWriteLastUntyped(message, {}); }
  void StartWritesDone() { StartWritesDoneUntyped(); }
  virtual void OnReadDone(bool /*ok*/) {}
  virtual void OnWriteDone(bool /*ok*/) {}
  virtual void OnWritesDoneDone(bool /*ok*/) {}

 private:
  void ReadDoneHook(bool ok) final { OnReadDone(ok); }
  void WriteDoneHook(bool ok) final { OnWriteDone(ok); }
  void WritesDoneDoneHook(bool ok) final { OnWritesDoneDone(ok); }
};

}  // namespace zcrpc
