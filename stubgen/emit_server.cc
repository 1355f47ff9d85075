// The server shape: `Name::Service`, a zcrpc::Service whose virtual
// handlers default to UNIMPLEMENTED. Streaming handlers get the server's
// stream objects (zcrpc/rpc/stream.h), in gRPC's synchronous shapes:
//   unary             Name(context, const Req* request, Resp* response)
//   client streaming  Name(context, ServerReader<Req>* reader, Resp* response)
//   server streaming  Name(context, const Req* request, ServerWriter<Resp>* writer)
//   bidirectional     Name(context, ServerReaderWriter<Resp, Req>* stream)
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
  return out.str();
}

}  // namespace zcrpc::stubgen
