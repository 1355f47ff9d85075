// The server shape: `Name::Service`, a zcrpc::Service whose virtual
// handlers default to UNIMPLEMENTED. Streaming handlers get the server's
// stream objects (zcrpc/rpc/stream.h), in gRPC's synchronous shapes:
//   unary             Name(context, const Req* request, Resp* response)
//   client streaming  Name(context, ServerReader<Req>* reader, Resp* response)
//   server streaming  Name(context, const Req* request, ServerWriter<Resp>* writer)
//   bidirectional     Name(context, ServerReaderWriter<Resp, Req>* stream)
// and `Name::CallbackService`, the same service in gRPC's callback shapes
// (zcrpc/rpc/reactor.h): each method returns the reactor that serves the
// call, and defaults to nullptr, which answers UNIMPLEMENTED:
//   unary             ServerUnaryReactor*          Name(context, const Req*, Resp*)
//   client streaming  ServerReadReactor<Req>*      Name(context, Resp*)
//   server streaming  ServerWriteReactor<Resp>*    Name(context, const Req*)
//   bidirectional     ServerBidiReactor<Req, Resp>* Name(context)
#include <sstream>
#include <utility>
#include <vector>

#include "stubgen/emit.h"

namespace zcrpc::stubgen {
namespace {

// A handler's parameters after `context`, as (type, name); one list per kind.
using Params = std::vector<std::pair<std::string, std::string>>;

Params UnaryParams(const MethodModel& m) {
  return {{"const " + m.request_type + "*", "request"}, {m.response_type + "*", "response"}};
}

Params ClientStreamingParams(const MethodModel& m) {
  return {{"::zcrpc::ServerReader<" + m.request_type + ">*", "reader"}, {m.response_type + "*", "response"}};
}

Params ServerStreamingParams(const MethodModel& m) {
  return {{"const " + m.request_type + "*", "request"}, {"::zcrpc::ServerWriter<" + m.response_type + ">*", "writer"}};
}

Params BidiStreamingParams(const MethodModel& m) {
  return {{"::zcrpc::ServerReaderWriter<" + m.response_type + ", " + m.request_type + ">*", "stream"}};
}

Params ParamsOf(const MethodModel& m) {
  if (m.client_streaming && m.server_streaming) return BidiStreamingParams(m);
  if (m.client_streaming) return ClientStreamingParams(m);
  if (m.server_streaming) return ServerStreamingParams(m);
  return UnaryParams(m);
}

// The Service member that registers a handler of m's kind.
const char* Registrar(const MethodModel& m) {
  if (m.client_streaming && m.server_streaming) return "AddBidiStreamingMethod";
  if (m.client_streaming) return "AddClientStreamingMethod";
  if (m.server_streaming) return "AddServerStreamingMethod";
  return "AddUnaryMethod";
}

// The callback form of m: its reactor type, its parameters after
// `context`, and the Service member that registers it.
struct CallbackShape {
  std::string reactor;
  Params params;
  const char* registrar;
};

CallbackShape CallbackShapeOf(const MethodModel& m) {
  const std::string& req = m.request_type;
  const std::string& resp = m.response_type;
  if (m.client_streaming && m.server_streaming) {
    return {"::zcrpc::ServerBidiReactor<" + req + ", " + resp + ">", {}, "AddCallbackBidiStreamingMethod"};
  }
  if (m.client_streaming) {
    return {"::zcrpc::ServerReadReactor<" + req + ">", {{resp + "*", "response"}}, "AddCallbackClientStreamingMethod"};
  }
  if (m.server_streaming) {
    return {"::zcrpc::ServerWriteReactor<" + resp + ">", {{"const " + req + "*", "request"}},
            "AddCallbackServerStreamingMethod"};
  }
  return {"::zcrpc::ServerUnaryReactor", {{"const " + req + "*", "request"}, {resp + "*", "response"}},
          "AddCallbackUnaryMethod"};
}

std::string CallbackParameterList(const MethodModel& m, bool named) {
  std::string out = named ? "(::zcrpc::ServerContext* context" : "(::zcrpc::ServerContext*";
  for (const auto& [type, name] : CallbackShapeOf(m).params) out += ", " + type + (named ? " " + name : "");
  return out + ")";
}

// "(::zcrpc::ServerContext* context, T1 n1, ...)"; without names for the
// default bodies, which use none (-Wunused-parameter).
std::string ParameterList(const MethodModel& m, bool named) {
  std::string out = named ? "(::zcrpc::ServerContext* context" : "(::zcrpc::ServerContext*";
  for (const auto& [type, name] : ParamsOf(m)) out += ", " + type + (named ? " " + name : "");
  return out + ")";
}

}  // namespace

std::string ServerDeclaration(const ServiceModel& service) {
  std::ostringstream out;
  out << "  // Server side of " << service.full_name
      << ": derive, override the methods you serve, and register\n"
      << "  // an instance with zcrpc::Server::RegisterService(). Unoverridden methods\n"
      << "  // answer UNIMPLEMENTED.\n"
      << "  class Service : public ::zcrpc::Service {\n"
      << "   public:\n"
      << "    Service();\n";
  for (const MethodModel& m : service.methods) {
    out << "\n"
        << DocComment(m.comment_lines, "    ")
        << "    virtual ::zcrpc::Status " << m.name << ParameterList(m, /*named=*/true) << ";\n";
  }
  out << "  };\n\n"
      << "  // The callback form of the same service: derive, override, and return\n"
      << "  // a reactor (zcrpc/rpc/reactor.h) from each method you serve; it runs\n"
      << "  // on a transport thread and must not block. nullptr (the default)\n"
      << "  // answers UNIMPLEMENTED.\n"
      << "  class CallbackService : public ::zcrpc::Service {\n"
      << "   public:\n"
      << "    CallbackService();\n";
  for (const MethodModel& m : service.methods) {
    out << "\n"
        << DocComment(m.comment_lines, "    ") << "    virtual " << CallbackShapeOf(m).reactor << "* " << m.name
        << CallbackParameterList(m, /*named=*/true) << ";\n";
  }
  out << "  };\n";
  return out.str();
}

std::string ServerDefinitions(const ServiceModel& service) {
  std::ostringstream out;
  out << service.name << "::Service::Service() : ::zcrpc::Service(kServiceName) {\n";
  for (const MethodModel& m : service.methods) {
    out << "  " << Registrar(m) << "(k" << m.name << "Method, this, &Service::" << m.name << ");\n";
  }
  out << "}\n\n";
  for (const MethodModel& m : service.methods) {
    out << "::zcrpc::Status " << service.name << "::Service::" << m.name << ParameterList(m, /*named=*/false)
        << " {\n"
        << "  return ::zcrpc::UnimplementedMethod(k" << m.name << "Method.path);\n"
        << "}\n\n";
  }
  out << service.name << "::CallbackService::CallbackService() : ::zcrpc::Service(kServiceName) {\n";
  for (const MethodModel& m : service.methods) {
    out << "  " << CallbackShapeOf(m).registrar << "(k" << m.name << "Method, this, &CallbackService::" << m.name
        << ");\n";
  }
  out << "}\n\n";
  for (const MethodModel& m : service.methods) {
    out << CallbackShapeOf(m).reactor << "* " << service.name << "::CallbackService::" << m.name
        << CallbackParameterList(m, /*named=*/false) << " {\n"
        << "  return nullptr;\n"
        << "}\n\n";
  }
  return out.str();
}

}  // namespace zcrpc::stubgen
