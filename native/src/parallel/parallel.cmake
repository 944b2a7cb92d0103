# Data-parallel collectives, included from the top CMakeLists.txt
# after the CUDA backend.
#
#   SPEED_MPI=AUTO|ON|OFF  MPI for launch, rendezvous and host collectives
#                          (find_package(MPI), then pkg-config ompi-c / mpich).
#   NCCL (under the CUDA backend): nccl.h + libnccl.so.2 from the CUDA toolkit,
#   the pip nvidia-nccl packages (site-packages/nvidia/nccl/{include,lib}), or
#   named: -DSPEED_NCCL_INCLUDE=dir -DSPEED_NCCL_LIB=file (an unpacked
#   nvidia-nccl wheel is enough to compile and link without a GPU). More than
#   one GPU process needs MPI too, for the rendezvous (ncclUniqueId broadcast).
# Without them one process works as always and asking for more says why not.
set(SPEED_MPI "AUTO" CACHE STRING "Build MPI data parallelism: AUTO, ON or OFF")
set_property(CACHE SPEED_MPI PROPERTY STRINGS AUTO ON OFF)
set(SPEED_PARALLEL_DIR ${CMAKE_CURRENT_LIST_DIR})
target_sources(speed_core PRIVATE ${SPEED_PARALLEL_DIR}/world.cpp)
set(SPEED_MPI_BUILT FALSE)

if(NOT SPEED_MPI STREQUAL "OFF")
  find_package(MPI QUIET COMPONENTS C)
  set(_speed_mpi_target "")
  set(_speed_mpi_lib "")
  if(MPI_C_FOUND)
    set(_speed_mpi_target MPI::MPI_C)
    list(GET MPI_C_LIBRARIES 0 _speed_mpi_lib)
  else()
    find_package(PkgConfig QUIET)
    if(PKG_CONFIG_FOUND)
      pkg_search_module(SPEED_PC_MPI QUIET IMPORTED_TARGET ompi-c mpich mpi)
      if(SPEED_PC_MPI_FOUND)
        set(_speed_mpi_target PkgConfig::SPEED_PC_MPI)
        find_library(_speed_mpi_lib NAMES mpi HINTS ${SPEED_PC_MPI_LIBRARY_DIRS})
      endif()
    endif()
  endif()
  if(_speed_mpi_target)
    # The library file the addon re-opens RTLD_GLOBAL before MPI_Init.
    get_filename_component(_speed_mpi_real "${_speed_mpi_lib}" REALPATH)
    message(STATUS "speed: MPI data parallelism ON (${_speed_mpi_real})")
    target_sources(speed_core PRIVATE ${SPEED_PARALLEL_DIR}/mpi.cpp)
    target_link_libraries(speed_core PUBLIC ${_speed_mpi_target} ${CMAKE_DL_LIBS})
    set_source_files_properties(${SPEED_PARALLEL_DIR}/mpi.cpp PROPERTIES
      COMPILE_DEFINITIONS "SPEED_MPI_LIBRARY=\"${_speed_mpi_real}\"")
    target_compile_definitions(speed_core PUBLIC SPEED_HAVE_MPI=1)
    set(SPEED_MPI_BUILT TRUE)
  elseif(SPEED_MPI STREQUAL "ON")
    message(FATAL_ERROR "SPEED_MPI=ON but no MPI was found (apt-get install libopenmpi-dev openmpi-bin)")
  else()
    message(STATUS "speed: no MPI found; one process only (apt-get install libopenmpi-dev for data parallelism)")
  endif()
endif()
if(NOT SPEED_MPI_BUILT)
  target_sources(speed_core PRIVATE ${SPEED_PARALLEL_DIR}/mpi_stub.cpp)
endif()

# ---- NCCL (GPU collectives) --------------------------------------------------
set(SPEED_NCCL_BUILT FALSE)
if(TARGET speed_cuda)
  set(_speed_nccl_hints_inc ${CUDAToolkit_INCLUDE_DIRS})
  set(_speed_nccl_hints_lib ${CUDAToolkit_LIBRARY_DIR})
  if(SPEED_PYTHON3)
    execute_process(
      COMMAND ${SPEED_PYTHON3} -c "import sys, site, os\nps = []\ntry:\n    ps += site.getsitepackages()\nexcept Exception:\n    pass\nps += [p for p in sys.path if p]\nprint(';'.join(os.path.join(p, 'nvidia', 'nccl') for p in ps if os.path.isdir(os.path.join(p, 'nvidia', 'nccl'))))"
      OUTPUT_VARIABLE _speed_nccl_pip OUTPUT_STRIP_TRAILING_WHITESPACE ERROR_QUIET TIMEOUT 20)
    foreach(d ${_speed_nccl_pip})
      list(APPEND _speed_nccl_hints_inc ${d}/include)
      list(APPEND _speed_nccl_hints_lib ${d}/lib)
    endforeach()
  endif()
  find_path(SPEED_NCCL_INCLUDE NAMES nccl.h HINTS ${_speed_nccl_hints_inc})
  find_library(SPEED_NCCL_LIB NAMES nccl libnccl.so.2 HINTS ${_speed_nccl_hints_lib})
  if(SPEED_NCCL_INCLUDE AND SPEED_NCCL_LIB)
    message(STATUS "speed: NCCL ON (${SPEED_NCCL_LIB})")
    add_library(speed_nccl STATIC ${SPEED_PARALLEL_DIR}/nccl.cu)
    set_target_properties(speed_nccl PROPERTIES
      CUDA_ARCHITECTURES "${SPEED_CUDA_ARCHITECTURES}" POSITION_INDEPENDENT_CODE ON
      CUDA_STANDARD 17 CUDA_STANDARD_REQUIRED ON)
    target_include_directories(speed_nccl PUBLIC ${CMAKE_CURRENT_SOURCE_DIR}/native/include)
    target_include_directories(speed_nccl PRIVATE ${SPEED_NCCL_INCLUDE})
    target_link_libraries(speed_nccl PUBLIC CUDA::cudart ${SPEED_NCCL_LIB})
    target_link_libraries(speed_core PUBLIC speed_nccl)
    target_compile_definitions(speed_core PUBLIC SPEED_HAVE_NCCL=1)
    set(SPEED_NCCL_BUILT TRUE)
  else()
    message(STATUS "speed: NCCL not found (nccl.h / libnccl in ${_speed_nccl_hints_inc} ${_speed_nccl_hints_lib}); GPU data parallelism stages gradients through MPI on the host")
  endif()
endif()
if(NOT SPEED_NCCL_BUILT)
  target_sources(speed_core PRIVATE ${SPEED_PARALLEL_DIR}/nccl_stub.cpp)
endif()

# test_cuda_nccl (native/tests/cuda): one GPU here; `mpirun -np W` for W GPUs
if(TARGET test_cuda_nccl)
  add_test(NAME cuda_nccl COMMAND test_cuda_nccl)
  set_tests_properties(cuda_nccl PROPERTIES SKIP_RETURN_CODE 77 TIMEOUT 120)
endif()
