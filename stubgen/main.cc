// protoc-gen-zcrpc: the protoc plugin that writes <file>.zcrpc.h/.cc for
// every .proto it is given, next to protobuf's own <file>.pb.h/.cc.
//   protoc --plugin=protoc-gen-zcrpc=PATH --zcrpc_out=DIR --cpp_out=DIR x.proto
#include <google/protobuf/compiler/code_generator.h>
#include <google/protobuf/compiler/plugin.h>
#include <google/protobuf/descriptor.h>
#include <google/protobuf/io/zero_copy_stream.h>

#include <memory>

#include "stubgen/emit.h"
#include "stubgen/model.h"

namespace {

namespace pb = google::protobuf;

void Write(pb::compiler::GeneratorContext* context, const std::string& name, const std::string& text) {
  std::unique_ptr<pb::io::ZeroCopyOutputStream> out(context->Open(name));
  void* data;
  int size;
  size_t written = 0;
  while (written < text.size() && out->Next(&data, &size)) {
    size_t n = std::min(text.size() - written, static_cast<size_t>(size));
    std::memcpy(data, text.data() + written, n);
    written += n;
    if (n < static_cast<size_t>(size)) out->BackUp(size - static_cast<int>(n));
  }
}

class ZcrpcGenerator final : public pb::compiler::CodeGenerator {
 public:
  bool Generate(const pb::FileDescriptor* file, const std::string& parameter,
                pb::compiler::GeneratorContext* context, std::string* error) const override {
    if (!parameter.empty()) {
      *error = "protoc-gen-zcrpc takes no options (got '" + parameter + "')";
      return false;
    }
    zcrpc::stubgen::FileModel model = zcrpc::stubgen::BuildModel(*file);
    Write(context, model.base_name + ".zcrpc.h", zcrpc::stubgen::RenderHeader(model));
    Write(context, model.base_name + ".zcrpc.cc", zcrpc::stubgen::RenderSource(model));
    return true;
  }
  uint64_t GetSupportedFeatures() const override { return FEATURE_PROTO3_OPTIONAL; }
};

}  // namespace

int main(int argc, char** argv) {
  ZcrpcGenerator generator;
  return pb::compiler::PluginMain(argc, argv, &generator);
}
