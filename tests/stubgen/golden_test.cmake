# Runs protoc-gen-zcrpc on the golden protos and compares its output with
# the checked-in files under golden/. With ZCRPC_UPDATE_GOLDEN=1 in the
# environment it rewrites them instead (then review the diff).
#   cmake -DPROTOC=... -DPLUGIN=... -DSRC=... -DOUT=... -P golden_test.cmake
file(REMOVE_RECURSE "${OUT}")
file(MAKE_DIRECTORY "${OUT}")
execute_process(
  COMMAND "${PROTOC}" "-I${SRC}/testdata" "--plugin=protoc-gen-zcrpc=${PLUGIN}" "--zcrpc_out=${OUT}"
          golden/shapes.proto golden/common.proto
  RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "protoc failed (${rc})")
endif()
set(failed FALSE)
foreach(f shapes.zcrpc.h shapes.zcrpc.cc common.zcrpc.h common.zcrpc.cc)
  set(expected "${SRC}/golden/${f}.expected")
  set(actual "${OUT}/golden/${f}")
  if(DEFINED ENV{ZCRPC_UPDATE_GOLDEN})
    configure_file("${actual}" "${expected}" COPYONLY)
    message(STATUS "updated ${expected}")
    continue()
  endif()
  execute_process(COMMAND diff -u "${expected}" "${actual}" RESULT_VARIABLE differs)
  if(NOT differs EQUAL 0)
    message(SEND_ERROR "${f} differs from ${expected} (ZCRPC_UPDATE_GOLDEN=1 to accept)")
    set(failed TRUE)
  else()
    message(STATUS "${f}: matches golden")
  endif()
endforeach()
if(failed)
  message(FATAL_ERROR "generated code differs from the golden files")
endif()
