// Fuzzes the stub generator (stubgen/) on odd .proto input: any text that
// protobuf's own parser and descriptor pool accept must render into a
// header and a source without crashing, whatever its names, comments,
// nesting and streaming kinds. (That the output compiles is the stubgen
// label's job, on real files.)
#include <google/protobuf/compiler/parser.h>
#include <google/protobuf/descriptor.h>
#include <google/protobuf/descriptor.pb.h>
#include <google/protobuf/io/tokenizer.h>
#include <google/protobuf/io/zero_copy_stream_impl_lite.h>
#include <google/protobuf/stubs/logging.h>

#include <cstddef>
#include <cstdint>
#include <string>

#include "stubgen/emit.h"
#include "stubgen/model.h"

namespace {

namespace pb = google::protobuf;

// Parse and build errors are the input's fault: dropped.
class Quiet final : public pb::io::ErrorCollector, public pb::DescriptorPool::ErrorCollector {
 public:
  void AddError(int, pb::io::ColumnNumber, const std::string&) override {}
  void AddError(const std::string&, const std::string&, const pb::Message*, ErrorLocation,
                const std::string&) override {}
};

}  // namespace

// Protobuf logs a warning for every file without a `syntax` line: at
// thousands of inputs a second that is most of the run's time and output.
extern "C" int LLVMFuzzerInitialize(int*, char***) {
  pb::SetLogHandler(nullptr);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  pb::io::ArrayInputStream stream(data, static_cast<int>(size));
  Quiet errors;
  pb::io::Tokenizer tokenizer(&stream, &errors);
  pb::compiler::Parser parser;
  parser.RecordErrorsTo(&errors);
  pb::FileDescriptorProto proto;
  if (!parser.Parse(&tokenizer, &proto)) return 0;
  proto.set_name("fuzz/input.proto");
  proto.clear_dependency();  // imports cannot resolve here; a file that needs them fails to build
  pb::DescriptorPool pool;
  const pb::FileDescriptor* file = pool.BuildFileCollectingErrors(proto, &errors);
  if (file == nullptr) return 0;
  const zcrpc::stubgen::FileModel model = zcrpc::stubgen::BuildModel(*file);
  const std::string header = zcrpc::stubgen::RenderHeader(model);
  const std::string source = zcrpc::stubgen::RenderSource(model);
  if (header.empty() || source.empty()) __builtin_trap();
  return 0;
}
