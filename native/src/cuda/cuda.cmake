# CUDA backend build logic (included from the top CMakeLists.txt, after speed_core
# is defined and before the addon, tests and bench).
#
#   SPEED_CUDA=OFF   never build it: speed_core gets cuda_stub.cpp.
#   SPEED_CUDA=AUTO  build it when nvcc and cuBLASLt are found, else fall back
#                    silently to the stub.
#   SPEED_CUDA=ON    build it, or stop with a message saying what is missing.
#
# cuBLASLt is looked for in the CUDA toolkit and in the Python `nvidia-*` pip
# packages (site-packages/nvidia/cublas/{include,lib} up to CUDA 12, nvidia/cu13/
# from CUDA 13 on), or named directly: -DSPEED_CUBLASLT_INCLUDE=dir
# -DSPEED_CUBLASLT_LIB=file (e.g. from an unpacked nvidia-cublas wheel, which is
# enough to compile and link everything on a machine without a GPU). When nvcc exists but
# cuBLASLt does not (CUDA runtime only), the runtime-only kernel files are still
# compiled, into an object library that nothing links (speed_cuda_compile_check),
# so that they cannot rot unseen. Without nvcc this file does nothing more.
set(SPEED_CUDA_DIR ${CMAKE_CURRENT_LIST_DIR})
# One kernel file per op family, as the sections of native/include/speed/backend.h.
set(SPEED_CUDA_RUNTIME_SOURCES
  ${SPEED_CUDA_DIR}/backend.cu
  ${SPEED_CUDA_DIR}/elementwise.cu
  ${SPEED_CUDA_DIR}/linear_epilogue.cu
  ${SPEED_CUDA_DIR}/patchify.cu
  ${SPEED_CUDA_DIR}/layernorm.cu
  ${SPEED_CUDA_DIR}/gated_residual.cu
  ${SPEED_CUDA_DIR}/attention.cu
  ${SPEED_CUDA_DIR}/attention_tc.cu
  ${SPEED_CUDA_DIR}/embedding.cu
  ${SPEED_CUDA_DIR}/noise.cu
  ${SPEED_CUDA_DIR}/diffusion.cu
  ${SPEED_CUDA_DIR}/optimizer.cu
  ${SPEED_CUDA_DIR}/sampling.cu
  ${SPEED_CUDA_DIR}/conv.cu
  ${SPEED_CUDA_DIR}/pool.cu)
set(SPEED_CUDA_BUILT FALSE)
set(SPEED_CUDA_WHY "")

function(speed_cuda_fail msg)
  if(SPEED_CUDA STREQUAL "ON")
    message(FATAL_ERROR "SPEED_CUDA=ON: ${msg}")
  else()
    message(STATUS "speed: CUDA backend not built: ${msg}")
  endif()
endfunction()

if(NOT SPEED_CUDA STREQUAL "OFF")
  include(CheckLanguage)
  if(NOT DEFINED CMAKE_CUDA_ARCHITECTURES)
    set(CMAKE_CUDA_ARCHITECTURES ${SPEED_CUDA_ARCHITECTURES})
  endif()
  check_language(CUDA)
  if(NOT CMAKE_CUDA_COMPILER)
    speed_cuda_fail("no working CUDA compiler (nvcc) was found; set CMAKE_CUDA_COMPILER or put nvcc on PATH")
  else()
    enable_language(CUDA)
    find_package(CUDAToolkit QUIET)
    if(NOT CUDAToolkit_FOUND)
      speed_cuda_fail("nvcc was found but the CUDA toolkit (CUDAToolkit) was not")
    else()
      # cuBLASLt: the toolkit first, then the Python nvidia-* packages.
      set(_speed_pip_hints "")
      find_program(SPEED_PYTHON3 NAMES python3 python)
      if(SPEED_PYTHON3)
        execute_process(
          COMMAND ${SPEED_PYTHON3} -c "import sys, site, os\nps = []\ntry:\n    ps += site.getsitepackages()\nexcept Exception:\n    pass\ntry:\n    ps.append(site.getusersitepackages())\nexcept Exception:\n    pass\nps += [p for p in sys.path if p]\nprint(';'.join(os.path.join(p, 'nvidia', d) for p in ps for d in ('cublas', 'cu13') if os.path.isdir(os.path.join(p, 'nvidia', d))))"
          OUTPUT_VARIABLE _speed_pip_hints OUTPUT_STRIP_TRAILING_WHITESPACE ERROR_QUIET TIMEOUT 20)
      endif()
      set(_speed_inc_hints ${CUDAToolkit_INCLUDE_DIRS})
      set(_speed_lib_hints ${CUDAToolkit_LIBRARY_DIR})
      foreach(d ${_speed_pip_hints})
        list(APPEND _speed_inc_hints ${d}/include)
        list(APPEND _speed_lib_hints ${d}/lib)
      endforeach()
      find_path(SPEED_CUBLASLT_INCLUDE NAMES cublasLt.h HINTS ${_speed_inc_hints})
      find_library(SPEED_CUBLASLT_LIB NAMES cublasLt libcublasLt.so.13 libcublasLt.so.12 libcublasLt.so.11
        HINTS ${_speed_lib_hints})
      if(SPEED_CUBLASLT_INCLUDE AND SPEED_CUBLASLT_LIB)
        message(STATUS "speed: CUDA backend ON (nvcc ${CMAKE_CUDA_COMPILER_VERSION}, cuBLASLt ${SPEED_CUBLASLT_LIB}, architectures ${SPEED_CUDA_ARCHITECTURES})")
        add_library(speed_cuda STATIC ${SPEED_CUDA_RUNTIME_SOURCES} ${SPEED_CUDA_DIR}/gemm_cublaslt.cu)
        set_target_properties(speed_cuda PROPERTIES
          CUDA_ARCHITECTURES "${SPEED_CUDA_ARCHITECTURES}"
          POSITION_INDEPENDENT_CODE ON
          CUDA_STANDARD 17 CUDA_STANDARD_REQUIRED ON)
        target_include_directories(speed_cuda PUBLIC ${CMAKE_CURRENT_SOURCE_DIR}/native/include)
        target_include_directories(speed_cuda PRIVATE ${SPEED_CUBLASLT_INCLUDE})
        target_compile_options(speed_cuda PRIVATE $<$<COMPILE_LANGUAGE:CUDA>:--use_fast_math -lineinfo>)
        target_link_libraries(speed_cuda PUBLIC CUDA::cudart ${SPEED_CUBLASLT_LIB})
        target_compile_definitions(speed_cuda PUBLIC SPEED_HAVE_CUDA=1)
        # speed_core (DiT core, bench) calls make_cuda_backend: link through it,
        # so that everything that links speed_core gets the CUDA backend too.
        target_link_libraries(speed_core PUBLIC speed_cuda)
        set(SPEED_CUDA_BUILT TRUE)
      else()
        speed_cuda_fail("nvcc ${CMAKE_CUDA_COMPILER_VERSION} was found but cuBLASLt was not (looked for cublasLt.h and libcublasLt in ${_speed_inc_hints} ${_speed_lib_hints}); install the CUDA toolkit's cuBLAS (libcublas-dev-*) or pip install nvidia-cublas (CUDA 13) / nvidia-cublas-cu12, or name -DSPEED_CUBLASLT_INCLUDE and -DSPEED_CUBLASLT_LIB")
        # Compile (never link) the runtime-only kernels so that they cannot rot.
        add_library(speed_cuda_compile_check OBJECT ${SPEED_CUDA_RUNTIME_SOURCES})
        list(GET SPEED_CUDA_ARCHITECTURES -1 _speed_check_arch)
        set_target_properties(speed_cuda_compile_check PROPERTIES
          CUDA_ARCHITECTURES "${_speed_check_arch}" CUDA_STANDARD 17 CUDA_STANDARD_REQUIRED ON)
        target_include_directories(speed_cuda_compile_check PRIVATE ${CMAKE_CURRENT_SOURCE_DIR}/native/include)
      endif()
    endif()
  endif()
endif()

if(NOT SPEED_CUDA_BUILT)
  target_sources(speed_core PRIVATE ${SPEED_CUDA_DIR}/cuda_stub.cpp)
endif()

# ---- CUDA tests (only when the backend is built) ----------------------------------
if(SPEED_CUDA_BUILT AND SPEED_BUILD_TESTS)
  enable_testing()
  file(GLOB SPEED_CUDA_TESTS CONFIGURE_DEPENDS ${CMAKE_CURRENT_SOURCE_DIR}/native/tests/cuda/test_cuda_*.cpp)
  foreach(src ${SPEED_CUDA_TESTS})
    get_filename_component(name ${src} NAME_WE)
    add_executable(${name} ${src})
    target_compile_options(${name} PRIVATE ${SPEED_CXX_FLAGS} -O2)
    target_link_libraries(${name} PRIVATE speed_core speed_cuda)
  endforeach()
  # Each test program takes its math mode (and an optional op filter) on the
  # command line; it exits 77 (skipped) when no GPU is usable.
  if(TARGET test_cuda_ops)
    add_test(NAME cuda_ops_fp32 COMMAND test_cuda_ops fp32)
    add_test(NAME cuda_ops_tf32 COMMAND test_cuda_ops tf32)
    add_test(NAME cuda_ops_bf16 COMMAND test_cuda_ops bf16)
    set_tests_properties(cuda_ops_fp32 cuda_ops_tf32 cuda_ops_bf16 PROPERTIES SKIP_RETURN_CODE 77 TIMEOUT 120)
  endif()
  if(TARGET test_cuda_train)
    add_test(NAME cuda_train_fp32 COMMAND test_cuda_train fp32)
    add_test(NAME cuda_train_bf16 COMMAND test_cuda_train bf16)
    set_tests_properties(cuda_train_fp32 cuda_train_bf16 PROPERTIES SKIP_RETURN_CODE 77 TIMEOUT 180)
  endif()
  if(TARGET test_cuda_vae)
    add_test(NAME cuda_vae_fp32 COMMAND test_cuda_vae fp32)
    add_test(NAME cuda_vae_bf16 COMMAND test_cuda_vae bf16)
    set_tests_properties(cuda_vae_fp32 cuda_vae_bf16 PROPERTIES SKIP_RETURN_CODE 77 TIMEOUT 180)
  endif()
  if(TARGET test_cuda_cnn)
    add_test(NAME cuda_cnn_fp32 COMMAND test_cuda_cnn fp32)
    add_test(NAME cuda_cnn_bf16 COMMAND test_cuda_cnn bf16)
    set_tests_properties(cuda_cnn_fp32 cuda_cnn_bf16 PROPERTIES SKIP_RETURN_CODE 77 TIMEOUT 120)
  endif()
  # Inception-v3 (the FID network): its ops and the whole network against the CPU backend;
  # evaluation uses fp32 operands by default, tf32 is the faster option
  if(TARGET test_cuda_inception)
    add_test(NAME cuda_inception_fp32 COMMAND test_cuda_inception fp32)
    add_test(NAME cuda_inception_tf32 COMMAND test_cuda_inception tf32)
    set_tests_properties(cuda_inception_fp32 cuda_inception_tf32 PROPERTIES SKIP_RETURN_CODE 77 TIMEOUT 180)
  endif()
  # 200 DiT-S/2 steps (batch 4) on the GPU (FP32) against the CPU backend's loss
  # curve; the CPU side takes most of the time, so the program judges what it
  # managed within --budget-s on a slower machine.
  if(TARGET test_cuda_curve)
    add_test(NAME cuda_curve_fp32 COMMAND test_cuda_curve --steps 200 --batch 4 --budget-s 270)
    set_tests_properties(cuda_curve_fp32 PROPERTIES SKIP_RETURN_CODE 77 TIMEOUT 300)
  endif()
endif()

# ---- kernel development (native/dev/cuda): one program per op, its kernel versions checked
# against the CPU backend and timed (gpu-check.sh runs them). Not ctest tests: each needs a GPU
# and decides nothing about the product; CI compiles and links them.
if(SPEED_CUDA_BUILT AND SPEED_BUILD_BENCH)
  foreach(op attention norm)
    add_executable(dev_cuda_${op} ${CMAKE_CURRENT_SOURCE_DIR}/native/dev/cuda/${op}.cu)
    set_target_properties(dev_cuda_${op} PROPERTIES
      CUDA_ARCHITECTURES "${SPEED_CUDA_ARCHITECTURES}" CUDA_STANDARD 17 CUDA_STANDARD_REQUIRED ON)
    target_include_directories(dev_cuda_${op} PRIVATE ${SPEED_CUDA_DIR} ${CMAKE_CURRENT_SOURCE_DIR}/native/tests/cuda)
    target_compile_options(dev_cuda_${op} PRIVATE $<$<COMPILE_LANGUAGE:CUDA>:--use_fast_math -lineinfo>)
    target_link_libraries(dev_cuda_${op} PRIVATE speed_core speed_cuda)
  endforeach()
endif()
