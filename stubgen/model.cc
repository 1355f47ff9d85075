#include "stubgen/model.h"

#include <google/protobuf/compiler/cpp/names.h>
#include <google/protobuf/descriptor.h>

#include <set>
#include <sstream>

namespace zcrpc::stubgen {
namespace {

namespace pb = google::protobuf;

// C++20 keywords and alternative tokens: a service or method with such a
// name gets a trailing underscore, as protobuf does for fields.
bool IsCppKeyword(const std::string& name) {
  static const std::set<std::string> kKeywords = {
      "alignas", "alignof", "and", "and_eq", "asm", "auto", "bitand", "bitor", "bool", "break", "case",
      "catch", "char", "char8_t", "char16_t", "char32_t", "class", "compl", "concept", "const", "consteval",
      "constexpr", "constinit", "const_cast", "continue", "co_await", "co_return", "co_yield", "decltype",
      "default", "delete", "do", "double", "dynamic_cast", "else", "enum", "explicit", "export", "extern",
      "false", "float", "for", "friend", "goto", "if", "inline", "int", "long", "mutable", "namespace", "new",
      "noexcept", "not", "not_eq", "nullptr", "operator", "or", "or_eq", "private", "protected", "public",
      "register", "reinterpret_cast", "requires", "return", "short", "signed", "sizeof", "static",
      "static_assert", "static_cast", "struct", "switch", "template", "this", "thread_local", "throw", "true",
      "try", "typedef", "typeid", "typename", "union", "unsigned", "using", "virtual", "void", "volatile",
      "wchar_t", "while", "xor", "xor_eq",
      // Names the generated classes use themselves.
      "Stub", "Service", "NewStub"};
  return kKeywords.count(name) > 0;
}

std::string Identifier(const std::string& name) { return IsCppKeyword(name) ? name + "_" : name; }

std::vector<std::string> CommentLines(const pb::SourceLocation& loc) {
  std::vector<std::string> lines;
  std::istringstream in(loc.leading_comments);
  std::string line;
  while (std::getline(in, line)) {
    if (!line.empty() && line.front() == ' ') line.erase(0, 1);
    while (!line.empty() && (line.back() == ' ' || line.back() == '\r')) line.pop_back();
    lines.push_back(line);
  }
  while (!lines.empty() && lines.back().empty()) lines.pop_back();
  return lines;
}

template <typename D>
std::vector<std::string> CommentsOf(const D& d) {
  pb::SourceLocation loc;
  return d.GetSourceLocation(&loc) ? CommentLines(loc) : std::vector<std::string>{};
}

}  // namespace

const char* MethodModel::kind_name() const {
  if (client_streaming && server_streaming) return "bidirectional streaming";
  if (client_streaming) return "client streaming";
  if (server_streaming) return "server streaming";
  return "unary";
}

const char* MethodModel::method_kind() const {
  if (client_streaming && server_streaming) return "::zcrpc::MethodKind::kBidiStreaming";
  if (client_streaming) return "::zcrpc::MethodKind::kClientStreaming";
  if (server_streaming) return "::zcrpc::MethodKind::kServerStreaming";
  return "::zcrpc::MethodKind::kUnary";
}

FileModel BuildModel(const pb::FileDescriptor& file) {
  FileModel model;
  model.proto_name = file.name();
  model.base_name = pb::compiler::cpp::StripProto(file.name());
  std::string package = file.package();
  size_t start = 0;
  while (!package.empty()) {
    size_t dot = package.find('.', start);
    model.namespaces.push_back(package.substr(start, dot - start));
    if (dot == std::string::npos) break;
    start = dot + 1;
  }
  for (int i = 0; i < file.service_count(); ++i) {
    const pb::ServiceDescriptor& s = *file.service(i);
    ServiceModel service{Identifier(s.name()), s.full_name(), CommentsOf(s), {}};
    for (int j = 0; j < s.method_count(); ++j) {
      const pb::MethodDescriptor& m = *s.method(j);
      MethodModel method;
      method.name = Identifier(m.name());
      method.path = "/" + s.full_name() + "/" + m.name();
      method.request_type = pb::compiler::cpp::QualifiedClassName(m.input_type());
      method.response_type = pb::compiler::cpp::QualifiedClassName(m.output_type());
      method.client_streaming = m.client_streaming();
      method.server_streaming = m.server_streaming();
      method.comment_lines = CommentsOf(m);
      service.methods.push_back(std::move(method));
    }
    model.services.push_back(std::move(service));
  }
  return model;
}

}  // namespace zcrpc::stubgen
