// The client shape: `Name::Stub`, with a blocking and a callback overload
// for every unary method, and for every streaming method one overload that
// opens the stream and hands out its object (zcrpc/rpc/stream.h), in
// gRPC's synchronous shapes:
//   server streaming  std::unique_ptr<ClientReader<Resp>>          Name(context, request)
//   client streaming  std::unique_ptr<ClientWriter<Req>>           Name(context, response)
//   bidirectional     std::unique_ptr<ClientReaderWriter<Req, Resp>> Name(context)
// and a reactor overload per streaming method (zcrpc/rpc/reactor.h), in
// gRPC's callback shapes, which binds the caller's reactor to the call:
//   server streaming  void Name(context, const Req* request, ClientReadReactor<Resp>*)
//   client streaming  void Name(context, Resp* response, ClientWriteReactor<Req>*)
//   bidirectional     void Name(context, ClientBidiReactor<Req, Resp>*)
#include <sstream>

#include "stubgen/emit.h"

namespace zcrpc::stubgen {
namespace {

// What a streaming method's stub overload looks like; one per kind.
struct StreamShape {
  std::string stream_type;  // "::zcrpc::ClientReader<Resp>"
  std::string params;       // after `context`: ", const Req& request"
  std::string open;         // "OpenServerStream"
  std::string open_args;    // after `context`: ", request"
  const char* usage;        // one line for the doc comment
  std::string reactor_type;    // "::zcrpc::ClientReadReactor<Resp>"
  std::string reactor_params;  // after `context`: ", const Req* request"
  std::string bind_args;       // after `context`: ", request, nullptr"
};

StreamShape ServerStreamingShape(const MethodModel& m) {
  return {"::zcrpc::ClientReader<" + m.response_type + ">", ", const " + m.request_type + "& request",
          "OpenServerStream", ", request", "Read() until false, then Finish().",
          "::zcrpc::ClientReadReactor<" + m.response_type + ">", ", const " + m.request_type + "* request",
          ", request, nullptr"};
}

StreamShape ClientStreamingShape(const MethodModel& m) {
  return {"::zcrpc::ClientWriter<" + m.request_type + ">", ", " + m.response_type + "* response",
          "OpenClientStream", ", response",
          "Write() each message, then Finish(), which fills `response` (it must outlive the stream).",
          "::zcrpc::ClientWriteReactor<" + m.request_type + ">", ", " + m.response_type + "* response",
          ", nullptr, response"};
}

StreamShape BidiStreamingShape(const MethodModel& m) {
  return {"::zcrpc::ClientReaderWriter<" + m.request_type + ", " + m.response_type + ">", "", "OpenBidiStream",
          "", "Read() and Write() (one thread each at most), WritesDone(), then Finish().",
          "::zcrpc::ClientBidiReactor<" + m.request_type + ", " + m.response_type + ">", "", ", nullptr, nullptr"};
}

StreamShape ShapeOf(const MethodModel& m) {
  if (m.client_streaming && m.server_streaming) return BidiStreamingShape(m);
  if (m.client_streaming) return ClientStreamingShape(m);
  return ServerStreamingShape(m);
}

void DeclareUnary(const MethodModel& m, std::ostringstream& out) {
  out << DocComment(m.comment_lines, "    ")
      << "    ::zcrpc::Status " << m.name << "(::zcrpc::ClientContext* context, const " << m.request_type
      << "& request, " << m.response_type << "* response);\n"
      << "    // Callback form: `done` runs once, on a transport thread; `context` and\n"
      << "    // `response` must stay valid until then.\n"
      << "    void " << m.name << "(::zcrpc::ClientContext* context, const " << m.request_type << "& request, "
      << m.response_type << "* response, std::function<void(::zcrpc::Status)> done);\n";
}

void DeclareStreaming(const MethodModel& m, std::ostringstream& out) {
  const StreamShape shape = ShapeOf(m);
  // The usage line is a paragraph of its own after the .proto's comment.
  out << DocComment(m.comment_lines, "    ") << (m.comment_lines.empty() ? "" : "    //\n")
      << "    // " << shape.usage << "\n"
      << "    std::unique_ptr<" << shape.stream_type << "> " << m.name << "(::zcrpc::ClientContext* context"
      << shape.params << ");\n"
      << "    // Reactor form: binds `reactor` to the call; start its operations,\n"
      << "    // then reactor->StartCall(). Pointers must stay valid until OnDone.\n"
      << "    void " << m.name << "(::zcrpc::ClientContext* context" << shape.reactor_params << ", "
      << shape.reactor_type << "* reactor);\n";
}

void DefineUnary(const ServiceModel& service, const MethodModel& m, std::ostringstream& out) {
  const std::string q = service.name + "::Stub::" + m.name;
  out << "::zcrpc::Status " << q << "(::zcrpc::ClientContext* context, const " << m.request_type << "& request, "
      << m.response_type << "* response) {\n"
      << "  return channel_->CallUnary(" << service.name << "::k" << m.name
      << "Method, context, request, response);\n"
      << "}\n\n"
      << "void " << q << "(::zcrpc::ClientContext* context, const " << m.request_type << "& request, "
      << m.response_type << "* response, std::function<void(::zcrpc::Status)> done) {\n"
      << "  channel_->CallUnaryAsync(" << service.name << "::k" << m.name
      << "Method, context, request, response, std::move(done));\n"
      << "}\n\n";
}

void DefineStreaming(const ServiceModel& service, const MethodModel& m, std::ostringstream& out) {
  const StreamShape shape = ShapeOf(m);
  out << "std::unique_ptr<" << shape.stream_type << "> " << service.name << "::Stub::" << m.name
      << "(::zcrpc::ClientContext* context" << shape.params << ") {\n"
      << "  return std::make_unique<" << shape.stream_type << ">(::zcrpc::" << shape.open << "(*channel_, "
      << service.name << "::k" << m.name << "Method, context" << shape.open_args << "));\n"
      << "}\n\n"
      << "void " << service.name << "::Stub::" << m.name << "(::zcrpc::ClientContext* context"
      << shape.reactor_params << ", " << shape.reactor_type << "* reactor) {\n"
      << "  reactor->Bind(channel_, " << service.name << "::k" << m.name << "Method, context" << shape.bind_args
      << ");\n"
      << "}\n\n";
}

}  // namespace

std::string ClientDeclaration(const ServiceModel& service) {
  std::ostringstream out;
  out << "  // Client for " << service.full_name << ". Thread-safe; cheap to create.\n"
      << "  class Stub final {\n"
      << "   public:\n"
      << "    explicit Stub(std::shared_ptr<::zcrpc::Channel> channel) : channel_(std::move(channel)) {}\n";
  for (const MethodModel& m : service.methods) {
    out << "\n";
    if (m.unary()) {
      DeclareUnary(m, out);
    } else {
      DeclareStreaming(m, out);
    }
  }
  out << "\n   private:\n"
      << "    std::shared_ptr<::zcrpc::Channel> channel_;\n"
      << "  };\n\n"
      << "  static std::unique_ptr<Stub> NewStub(std::shared_ptr<::zcrpc::Channel> channel) {\n"
      << "    return std::make_unique<Stub>(std::move(channel));\n"
      << "  }\n";
  return out.str();
}

std::string ClientDefinitions(const ServiceModel& service) {
  std::ostringstream out;
  for (const MethodModel& m : service.methods) {
    if (m.unary()) {
      DefineUnary(service, m, out);
    } else {
      DefineStreaming(service, m, out);
    }
  }
  return out.str();
}

}  // namespace zcrpc::stubgen
