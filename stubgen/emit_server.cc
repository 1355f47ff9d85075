// The server shape: `Name::Service`, a zcrpc::Service whose virtual
// handlers default to UNIMPLEMENTED.
#include <sstream>

#include "stubgen/emit.h"

namespace zcrpc::stubgen {

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
    out << "\n";
    if (!m.unary()) {
      out << "    // " << m.name << " (" << m.kind_name()
          << "): not generated yet; calls to it answer UNIMPLEMENTED.\n";
      continue;
    }
    out << DocComment(m.comment_lines, "    ")
        << "    virtual ::zcrpc::Status " << m.name << "(::zcrpc::ServerContext* context, const "
        << m.request_type << "* request, " << m.response_type << "* response);\n";
  }
  out << "  };\n";
  return out.str();
}

std::string ServerDefinitions(const ServiceModel& service) {
  std::ostringstream out;
  out << service.name << "::Service::Service() : ::zcrpc::Service(kServiceName) {\n";
  for (const MethodModel& m : service.methods) {
    if (m.unary()) {
      out << "  AddUnaryMethod(k" << m.name << "Method, this, &Service::" << m.name << ");\n";
    } else {
      out << "  AddUnsupportedMethod(k" << m.name << "Method);\n";
    }
  }
  out << "}\n\n";
  for (const MethodModel& m : service.methods) {
    if (!m.unary()) continue;
    out << "::zcrpc::Status " << service.name << "::Service::" << m.name
        << "(::zcrpc::ServerContext*, const " << m.request_type << "*, " << m.response_type << "*) {\n"
        << "  return ::zcrpc::UnimplementedMethod(k" << m.name << "Method.path);\n"
        << "}\n\n";
  }
  return out.str();
}

}  // namespace zcrpc::stubgen
