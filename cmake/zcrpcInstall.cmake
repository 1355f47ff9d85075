# cmake --install build --prefix P installs the headers, the library,
# P/bin/protoc-gen-zcrpc and P/lib/cmake/zcrpc/zcrpcConfig.cmake.
include(CMakePackageConfigHelpers)

install(TARGETS zcrpc protoc-gen-zcrpc EXPORT zcrpcTargets
  ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR}
  LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR}
  RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})
# Headers keep their zcrpc/ prefix: #include <zcrpc/zcrpc.h>, never a bare
# <rpc/...> that a user's own files could shadow.
install(DIRECTORY zcrpc DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}
  FILES_MATCHING PATTERN "*.h")
install(EXPORT zcrpcTargets NAMESPACE zcrpc:: DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/zcrpc)
configure_package_config_file(cmake/zcrpcConfig.cmake.in
  "${CMAKE_CURRENT_BINARY_DIR}/zcrpcConfig.cmake"
  INSTALL_DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/zcrpc)
write_basic_package_version_file("${CMAKE_CURRENT_BINARY_DIR}/zcrpcConfigVersion.cmake"
  COMPATIBILITY SameMinorVersion)
install(FILES
  "${CMAKE_CURRENT_BINARY_DIR}/zcrpcConfig.cmake"
  "${CMAKE_CURRENT_BINARY_DIR}/zcrpcConfigVersion.cmake"
  cmake/zcrpcGenerate.cmake
  DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/zcrpc)
