# zcrpc_generate(TARGET t PROTOS a.proto b.proto [IMPORT_DIRS dir ...] [OUT_DIR dir])
#
# Runs protoc on each .proto to produce protobuf's C++ (x.pb.h/.cc) and
# zcrpc's stubs (x.zcrpc.h/.cc), adds the generated sources to target `t`,
# and puts the output directory on its include path. Each proto is named
# relative to the first IMPORT_DIRS entry that contains it (default: the
# proto's own directory), exactly as protoc names it.
#
# Works in zcrpc's own tree and, installed, from find_package(zcrpc).
function(zcrpc_generate)
  cmake_parse_arguments(ZG "" "TARGET;OUT_DIR" "PROTOS;IMPORT_DIRS" ${ARGN})
  if(NOT ZG_TARGET OR NOT ZG_PROTOS)
    message(FATAL_ERROR "zcrpc_generate: TARGET and PROTOS are required")
  endif()
  if(NOT ZG_OUT_DIR)
    set(ZG_OUT_DIR "${CMAKE_CURRENT_BINARY_DIR}/zcrpc_gen")
  endif()
  if(TARGET protoc-gen-zcrpc)
    set(plugin "$<TARGET_FILE:protoc-gen-zcrpc>")
    set(plugin_dep protoc-gen-zcrpc)
  else()
    set(plugin "$<TARGET_FILE:zcrpc::protoc-gen-zcrpc>")
    set(plugin_dep zcrpc::protoc-gen-zcrpc)
  endif()
  if(NOT Protobuf_PROTOC_EXECUTABLE)
    find_program(Protobuf_PROTOC_EXECUTABLE protoc REQUIRED)
  endif()
  file(MAKE_DIRECTORY "${ZG_OUT_DIR}")

  set(import_dirs)
  foreach(dir IN LISTS ZG_IMPORT_DIRS)
    get_filename_component(abs "${dir}" ABSOLUTE)
    list(APPEND import_dirs "${abs}")
  endforeach()

  set(sources)
  foreach(proto IN LISTS ZG_PROTOS)
    get_filename_component(proto_abs "${proto}" ABSOLUTE)
    set(root "")
    foreach(dir IN LISTS import_dirs)
      string(FIND "${proto_abs}" "${dir}/" at)
      if(at EQUAL 0)
        set(root "${dir}")
        break()
      endif()
    endforeach()
    if(root STREQUAL "")
      get_filename_component(root "${proto_abs}" DIRECTORY)
    endif()
    file(RELATIVE_PATH rel "${root}" "${proto_abs}")
    string(REGEX REPLACE "\\.proto$" "" base "${rel}")
    set(outs "${ZG_OUT_DIR}/${base}.pb.h" "${ZG_OUT_DIR}/${base}.pb.cc"
             "${ZG_OUT_DIR}/${base}.zcrpc.h" "${ZG_OUT_DIR}/${base}.zcrpc.cc")
    set(include_flags "-I${root}")
    foreach(dir IN LISTS import_dirs)
      list(APPEND include_flags "-I${dir}")
    endforeach()
    list(REMOVE_DUPLICATES include_flags)
    add_custom_command(
      OUTPUT ${outs}
      COMMAND ${Protobuf_PROTOC_EXECUTABLE} ${include_flags}
              "--cpp_out=${ZG_OUT_DIR}" "--zcrpc_out=${ZG_OUT_DIR}"
              "--plugin=protoc-gen-zcrpc=${plugin}" "${proto_abs}"
      DEPENDS "${proto_abs}" ${plugin_dep}
      COMMENT "zcrpc: generating ${rel}"
      VERBATIM)
    list(APPEND sources "${ZG_OUT_DIR}/${base}.pb.cc" "${ZG_OUT_DIR}/${base}.zcrpc.cc")
  endforeach()
  target_sources(${ZG_TARGET} PRIVATE ${sources})
  target_include_directories(${ZG_TARGET} PUBLIC "$<BUILD_INTERFACE:${ZG_OUT_DIR}>")
  target_link_libraries(${ZG_TARGET} PUBLIC zcrpc::zcrpc)
endfunction()
