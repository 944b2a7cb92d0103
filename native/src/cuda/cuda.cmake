# CUDA backend build logic (included from the top CMakeLists.txt).
# Placeholder until the CUDA backend lands: always builds the no-CUDA stub.
target_sources(speed_core PRIVATE ${CMAKE_CURRENT_SOURCE_DIR}/native/src/cuda/cuda_stub.cpp)
