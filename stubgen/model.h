// The generator's model of one .proto file: just the names and comments the
// renderers need, built from protobuf descriptors by BuildModel(). The
// renderers (emit.h) never see a protobuf type.
#pragma once

#include <string>
#include <vector>

namespace google::protobuf {
class FileDescriptor;
}

namespace zcrpc::stubgen {

struct MethodModel {
  std::string name;           // C++ identifier (keywords get a trailing '_')
  std::string path;           // "/package.Service/Method"
  std::string request_type;   // fully qualified C++ type, "::pkg::Req"
  std::string response_type;
  bool client_streaming = false;
  bool server_streaming = false;
  std::vector<std::string> comment_lines;  // the .proto's leading comment

  bool unary() const { return !client_streaming && !server_streaming; }
  const char* kind_name() const;       // "unary", "client streaming", ...
  const char* method_kind() const;     // "::zcrpc::MethodKind::kUnary", ...
};

struct ServiceModel {
  std::string name;       // C++ identifier
  std::string full_name;  // "package.Service"
  std::vector<std::string> comment_lines;
  std::vector<MethodModel> methods;
};

struct FileModel {
  std::string proto_name;  // "dir/x.proto", as given to protoc
  std::string base_name;   // "dir/x": outputs are base_name + ".zcrpc.h/.cc"
  std::vector<std::string> namespaces;  // package split on '.'
  std::vector<ServiceModel> services;
};

FileModel BuildModel(const google::protobuf::FileDescriptor& file);

}  // namespace zcrpc::stubgen
