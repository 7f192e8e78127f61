// The buffer pool of buffer_pool.h: buffers come back to the next operation instead of being allocated (and
// faulted in) again, up to the most ever in use at once, and a small request never pins a large buffer. The
// buffers are never touched, so the test commits no memory.
#include <vector>

#include "buffer_pool.h"
#include "check.h"

using namespace tccl;

namespace {

const size_t kBig = size_t(384) << 20;

void testKeepsUpToThePeakInUse() {
  // Three buffers of 384 MiB at once: 1.125 GiB, above the 1 GiB floor. All three are kept when given back (a
  // fixed limit of 1 GiB would free one, to be allocated and faulted in again by the next such operation).
  {
    std::vector<BufferPool::Buffer> held;
    for (int i = 0; i < 3; ++i) held.push_back(BufferPool::acquire(kBig));
  }
  CHECK_MSG(BufferPool::cachedBytes() == 3 * kBig, "kept %zu MiB of 1152", BufferPool::cachedBytes() >> 20);
  std::vector<BufferPool::Buffer> again;
  for (int i = 0; i < 3; ++i) again.push_back(BufferPool::acquire(kBig));
  CHECK_MSG(BufferPool::cachedBytes() == 0, "the same three buffers served the next three requests");
}

void testSmallRequestDoesNotTakeALargeBuffer() {
  auto small = BufferPool::acquire(4096);
  CHECK_MSG(BufferPool::cachedBytes() == 3 * kBig, "a 4 KiB request took a 384 MiB buffer (%zu MiB left)", BufferPool::cachedBytes() >> 20);
  auto half = BufferPool::acquire(kBig / 2);
  CHECK_MSG(BufferPool::cachedBytes() == 2 * kBig, "a request of half the size is served from the pool");
}

}  // namespace

int main() {
  testKeepsUpToThePeakInUse();
  testSmallRequestDoesNotTakeALargeBuffer();
  return TEST_MAIN_RESULT();
}
