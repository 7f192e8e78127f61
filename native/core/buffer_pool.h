// Large scratch buffers reused across operations: a fresh 256 MiB allocation costs tens of thousands of page
// faults (and the kernel zeroing every page) on first touch, which is as slow as the network on loopback.
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <vector>

namespace tccl {

class BufferPool {
 public:
  using Buffer = std::shared_ptr<uint8_t[]>;
  // A buffer of at least `bytes` bytes (contents undefined); it returns to the pool when the last reference goes.
  static Buffer acquire(size_t bytes) {
    BufferPool& pool = instance();
    {
      std::lock_guard<std::mutex> lock(pool.mu_);
      // Best fit among cached buffers.
      size_t best = pool.free_.size();
      for (size_t i = 0; i < pool.free_.size(); ++i) {
        if (pool.free_[i].size >= bytes && (best == pool.free_.size() || pool.free_[i].size < pool.free_[best].size)) best = i;
      }
      if (best != pool.free_.size()) {
        Entry e = std::move(pool.free_[best]);
        pool.free_.erase(pool.free_.begin() + static_cast<std::ptrdiff_t>(best));
        pool.cachedBytes_ -= e.size;
        return wrap(std::move(e));
      }
    }
    Entry e{std::unique_ptr<uint8_t[]>(new uint8_t[bytes ? bytes : 1]), bytes ? bytes : 1};
    return wrap(std::move(e));
  }

 private:
  struct Entry {
    std::unique_ptr<uint8_t[]> data;
    size_t size;
  };
  static constexpr size_t kMaxCachedBytes = size_t(1) << 30;
  static constexpr size_t kMaxCachedBuffers = 8;

  static BufferPool& instance() {
    static BufferPool* pool = new BufferPool();  // never destroyed: buffers may return during process exit
    return *pool;
  }
  static Buffer wrap(Entry e) {
    uint8_t* raw = e.data.release();
    size_t size = e.size;
    return Buffer(raw, [size](uint8_t* p) {
      BufferPool& pool = instance();
      std::lock_guard<std::mutex> lock(pool.mu_);
      if (pool.cachedBytes_ + size <= kMaxCachedBytes && pool.free_.size() < kMaxCachedBuffers) {
        pool.free_.push_back(Entry{std::unique_ptr<uint8_t[]>(p), size});
        pool.cachedBytes_ += size;
      } else {
        delete[] p;
      }
    });
  }

  std::mutex mu_;
  std::vector<Entry> free_;
  size_t cachedBytes_ = 0;
};

}  // namespace tccl
