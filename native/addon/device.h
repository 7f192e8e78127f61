// GPU surface of the addon (native/addon/device.cpp): DeviceMemory, pinned host memory, cudaInfo, GPU codecs and
// hash, NCCL bootstrap. Present in every build; CUDA is loaded at run time.
#pragma once
#include <napi.h>

namespace tccl_addon {
void registerDevice(Napi::Env env, Napi::Object exports);
}
