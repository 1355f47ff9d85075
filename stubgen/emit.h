// Renderers: turn a FileModel into the text of <base>.zcrpc.h and
// <base>.zcrpc.cc. emit_client.cc renders each service's Stub, and
// emit_server.cc its Service; emit_file.cc assembles the files around them.
#pragma once

#include <string>

#include "stubgen/model.h"

namespace zcrpc::stubgen {

// Text appended to an output, indented by the renderer's own conventions.
std::string ClientDeclaration(const ServiceModel& service);
std::string ClientDefinitions(const ServiceModel& service);
std::string ServerDeclaration(const ServiceModel& service);
std::string ServerDefinitions(const ServiceModel& service);

std::string RenderHeader(const FileModel& file);
std::string RenderSource(const FileModel& file);

// "// line" for each comment line, prefixed by `indent`.
std::string DocComment(const std::vector<std::string>& lines, const std::string& indent);

}  // namespace zcrpc::stubgen
