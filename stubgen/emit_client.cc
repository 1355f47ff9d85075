// The client shape: `Name::Stub`, with a blocking and a callback overload
// for every unary method. Streaming methods are listed in a comment until
// the streaming issue generates their stream objects.
#include <sstream>

#include "stubgen/emit.h"

namespace zcrpc::stubgen {

std::string ClientDeclaration(const ServiceModel& service) {
  std::ostringstream out;
  out << "  // Client for " << service.full_name << ". Thread-safe; cheap to create.\n"
      << "  class Stub final {\n"
      << "   public:\n"
      << "    explicit Stub(std::shared_ptr<::zcrpc::Channel> channel) : channel_(std::move(channel)) {}\n";
  for (const MethodModel& m : service.methods) {
    out << "\n";
    if (!m.unary()) {
      out << "    // " << m.name << " (" << m.kind_name()
          << "): not generated yet; zcrpc generates streaming methods once streaming lands.\n";
      continue;
    }
    out << DocComment(m.comment_lines, "    ")
        << "    ::zcrpc::Status " << m.name << "(::zcrpc::ClientContext* context, const " << m.request_type
        << "& request, " << m.response_type << "* response);\n"
        << "    // Callback form: `done` runs once, on a transport thread; `context` and\n"
        << "    // `response` must stay valid until then.\n"
        << "    void " << m.name << "(::zcrpc::ClientContext* context, const " << m.request_type
        << "& request, " << m.response_type << "* response, std::function<void(::zcrpc::Status)> done);\n";
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
    if (!m.unary()) continue;
    const std::string q = service.name + "::Stub::" + m.name;
    out << "::zcrpc::Status " << q << "(::zcrpc::ClientContext* context, const " << m.request_type
        << "& request, " << m.response_type << "* response) {\n"
        << "  return channel_->CallUnary(" << service.name << "::k" << m.name
        << "Method, context, request, response);\n"
        << "}\n\n"
        << "void " << q << "(::zcrpc::ClientContext* context, const " << m.request_type << "& request, "
        << m.response_type << "* response, std::function<void(::zcrpc::Status)> done) {\n"
        << "  channel_->CallUnaryAsync(" << service.name << "::k" << m.name
        << "Method, context, request, response, std::move(done));\n"
        << "}\n\n";
  }
  return out.str();
}

}  // namespace zcrpc::stubgen
