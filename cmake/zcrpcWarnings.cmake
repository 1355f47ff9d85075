# Warnings are errors in the project's own code only (not in generated
# protobuf code, whose warnings we cannot fix).
function(zcrpc_strict_warnings target)
  target_compile_options(${target} PRIVATE -Wall -Wextra -Werror)
endfunction()
