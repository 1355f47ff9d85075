// grpc.testing.TestService served with reactors (the generated
// CallbackService), behaving as examples/interop/grpc_test_service.h's blocking one does.
// UnaryCall replies from a thread of its own after the handler returned:
// the "reply later" case the callback form exists for.
#pragma once

#include <atomic>
#include <string>
#include <thread>
#include <vector>

#include "grpc/testing/test.zcrpc.h"

namespace zcrpc::testing {

class GrpcCallbackTestService final : public grpc::testing::TestService::CallbackService {
 public:
  // Reactors that reached OnDone, and cancels seen (by OnCancel).
  std::atomic<int> done{0};
  std::atomic<int> cancelled{0};

  ServerUnaryReactor* EmptyCall(ServerContext*, const grpc::testing::Empty*, grpc::testing::Empty*) override {
    auto* reactor = new Unary(this);
    reactor->Finish(Status());
    return reactor;
  }

  ServerUnaryReactor* UnaryCall(ServerContext* ctx, const grpc::testing::SimpleRequest* request,
                                grpc::testing::SimpleResponse* response) override {
    auto* reactor = new Unary(this);
    EchoTrailing(ctx);
    const int size = request->response_size();
    const Status status(static_cast<StatusCode>(request->response_status().code()),
                        request->response_status().message());
    std::thread([reactor, response, size, status] {
      response->mutable_payload()->set_body(std::string(static_cast<size_t>(size), '\0'));
      reactor->Finish(status);
    }).detach();
    return reactor;
  }

  ServerWriteReactor<grpc::testing::StreamingOutputCallResponse>* StreamingOutputCall(
      ServerContext* ctx, const grpc::testing::StreamingOutputCallRequest* request) override {
    EchoTrailing(ctx);
    return new Writer(this, request);
  }

  ServerReadReactor<grpc::testing::StreamingInputCallRequest>* StreamingInputCall(
      ServerContext* ctx, grpc::testing::StreamingInputCallResponse* response) override {
    EchoTrailing(ctx);
    return new Reader(this, response);
  }

  ServerBidiReactor<grpc::testing::StreamingOutputCallRequest, grpc::testing::StreamingOutputCallResponse>*
  FullDuplexCall(ServerContext* ctx) override {
    EchoTrailing(ctx);
    return new Duplex(this);
  }
  // HalfDuplexCall and UnimplementedCall: not overridden, UNIMPLEMENTED.

 private:
  // A reactor of `Base` that counts its cancel and its end in the service,
  // and deletes itself at OnDone.
  template <typename Base>
  class Counted : public Base {
   public:
    explicit Counted(GrpcCallbackTestService* service) : service_(service) {}
    void OnCancel() override { ++service_->cancelled; }
    void OnDone() override {
      ++service_->done;
      delete this;
    }

   protected:
    GrpcCallbackTestService* const service_;
  };

  using Unary = Counted<ServerUnaryReactor>;

  // One response per ResponseParameters, then the status asked for.
  class Writer final : public Counted<ServerWriteReactor<grpc::testing::StreamingOutputCallResponse>> {
   public:
    Writer(GrpcCallbackTestService* service, const grpc::testing::StreamingOutputCallRequest* request)
        : Counted(service), request_(request) {
      Next();
    }
    void OnWriteDone(bool ok) override {
      if (!ok) return Finish(absl::CancelledError("the client went away"));
      Next();
    }

   private:
    void Next() {
      if (next_ == request_->response_parameters_size()) {
        return Finish(Status(static_cast<StatusCode>(request_->response_status().code()),
                             request_->response_status().message()));
      }
      response_.mutable_payload()->set_body(
          std::string(static_cast<size_t>(request_->response_parameters(next_++).size()), '\0'));
      StartWrite(&response_);
    }
    const grpc::testing::StreamingOutputCallRequest* const request_;
    grpc::testing::StreamingOutputCallResponse response_;
    int next_ = 0;
  };

  class Reader final : public Counted<ServerReadReactor<grpc::testing::StreamingInputCallRequest>> {
   public:
    Reader(GrpcCallbackTestService* service, grpc::testing::StreamingInputCallResponse* response)
        : Counted(service), response_(response) {
      StartRead(&request_);
    }
    void OnReadDone(bool ok) override {
      if (ok) {
        total_ += static_cast<int64_t>(request_.payload().body().size());
        return StartRead(&request_);
      }
      response_->set_aggregated_payload_size(static_cast<int32_t>(total_));
      Finish(Status());
    }

   private:
    grpc::testing::StreamingInputCallResponse* const response_;
    grpc::testing::StreamingInputCallRequest request_;
    int64_t total_ = 0;
  };

  // Each request's responses, in order; reads and writes overlap.
  class Duplex final : public Counted<ServerBidiReactor<grpc::testing::StreamingOutputCallRequest,
                                                        grpc::testing::StreamingOutputCallResponse>> {
   public:
    explicit Duplex(GrpcCallbackTestService* service) : Counted(service) { this->StartRead(&request_); }
    void OnReadDone(bool ok) override {
      if (!ok) {
        reads_over_ = true;
        return MaybeFinish();
      }
      if (request_.response_status().code() != 0) {
        return Finish(Status(static_cast<StatusCode>(request_.response_status().code()),
                             request_.response_status().message()));
      }
      for (const auto& params : request_.response_parameters()) pending_.push_back(params.size());
      if (!writing_) WriteNext();
      // Reading on only while at most one request's responses wait: the
      // client's pace, not an unbounded queue here.
      if (pending_.size() <= 1) {
        StartRead(&request_);
      } else {
        read_paused_ = true;
      }
    }
    void OnWriteDone(bool ok) override {
      writing_ = false;
      if (!ok) return Finish(absl::CancelledError("the client went away"));
      WriteNext();
      if (read_paused_ && pending_.size() <= 1) {
        read_paused_ = false;
        StartRead(&request_);
      }
      MaybeFinish();
    }

   private:
    void WriteNext() {
      if (pending_.empty()) return;
      response_.mutable_payload()->set_body(std::string(static_cast<size_t>(pending_.front()), '\0'));
      pending_.erase(pending_.begin());
      writing_ = true;
      StartWrite(&response_);
    }
    void MaybeFinish() {
      if (reads_over_ && !writing_ && pending_.empty() && !finished_) {
        finished_ = true;
        Finish(Status());
      }
    }
    grpc::testing::StreamingOutputCallRequest request_;
    grpc::testing::StreamingOutputCallResponse response_;
    std::vector<int> pending_;
    bool writing_ = false;
    bool reads_over_ = false;
    bool read_paused_ = false;
    bool finished_ = false;
  };

  static void EchoTrailing(ServerContext* ctx) {
    for (const auto& [key, value] : ctx->client_metadata()) {
      if (key == "x-grpc-test-echo-trailing-bin") (void)ctx->AddTrailingMetadata(key, value);
    }
  }
};

}  // namespace zcrpc::testing
