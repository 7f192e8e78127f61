# Optional CUDA backend: the .cu kernels (GPU codecs, GPU content hash) in a static library linked into the addon,
# which then gets TCCL_WITH_CUDA=1 (CMakeLists.txt). Enabled by -DTCCL_CUDA=ON (`npm run build:cuda`).
# The CUDA runtime used by the kernels is linked statically (cudart_static), so the addon still loads on a host
# without a GPU or a CUDA installation; the runtime calls for device buffers and NCCL go through dlopen
# (native/cuda/runtime.h) in every build.
#
# Options: TCCL_CUDA_ARCHITECTURES (default "75-virtual;80-real;90-real": real code for A100 and H100/H200, PTX
# that the driver compiles on first use for every other GPU from Turing on).
if(NOT CMAKE_CUDA_COMPILER)
  find_program(TCCL_NVCC nvcc HINTS $ENV{CUDA_HOME}/bin $ENV{CUDA_PATH}/bin /usr/local/cuda/bin)
  if(TCCL_NVCC)
    set(CMAKE_CUDA_COMPILER ${TCCL_NVCC})
  else()
    message(FATAL_ERROR "TCCL_CUDA=ON needs nvcc: install the CUDA toolkit (12 or 13) or set CMAKE_CUDA_COMPILER / CUDA_HOME")
  endif()
endif()
set(TCCL_CUDA_ARCHITECTURES "75-virtual;80-real;90-real" CACHE STRING "CUDA architectures of the TCCL kernels")
enable_language(CUDA)
find_package(CUDAToolkit REQUIRED)

add_library(tccl_cuda STATIC
  ${CMAKE_CURRENT_SOURCE_DIR}/native/cuda/codec.cu
  ${CMAKE_CURRENT_SOURCE_DIR}/native/cuda/hash.cu)
set_target_properties(tccl_cuda PROPERTIES
  CUDA_STANDARD 17
  CUDA_STANDARD_REQUIRED ON
  CUDA_ARCHITECTURES "${TCCL_CUDA_ARCHITECTURES}"
  CUDA_RUNTIME_LIBRARY Static
  POSITION_INDEPENDENT_CODE ON)
target_include_directories(tccl_cuda PUBLIC ${CMAKE_CURRENT_SOURCE_DIR}/native/cuda)
# Bit-exact with the CPU codecs: never contract a*b+c into an FMA, keep denormals, IEEE division and sqrt.
target_compile_options(tccl_cuda PRIVATE --fmad=false -ftz=false -prec-div=true -prec-sqrt=true -O3)
target_link_libraries(tccl_cuda PUBLIC CUDA::cudart_static)
