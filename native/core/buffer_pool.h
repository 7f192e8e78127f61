// Large scratch buffers reused across operations: a fresh 256 MiB allocation costs tens of thousands of page
// faults (and the kernel zeroing every page) on first touch, which is as slow as the network on loopback.
// The pool keeps what it is given back up to the most this process ever had in use at once (at least 1 GiB):
// training repeats the same operations, so that peak comes back every step, and keeping it raises no peak. A
// buffer more than twice the size asked for is not handed out (a small request would pin a large buffer).
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
        size_t have = pool.free_[i].size;
        if (have >= bytes && have / 2 <= bytes && (best == pool.free_.size() || have < pool.free_[best].size)) best = i;
      }
      if (best != pool.free_.size()) {
        Entry e = std::move(pool.free_[best]);
        pool.free_.erase(pool.free_.begin() + static_cast<std::ptrdiff_t>(best));
        pool.cachedBytes_ -= e.size;
        pool.noteInUse(e.size);
        return wrap(std::move(e));
      }
      pool.noteInUse(bytes ? bytes : 1);
    }
    Entry e{std::unique_ptr<uint8_t[]>(new uint8_t[bytes ? bytes : 1]), bytes ? bytes : 1};
    return wrap(std::move(e));
  }

  // Bytes held for reuse right now (diagnostics and tests).
  static size_t cachedBytes() {
    BufferPool& pool = instance();
    std::lock_guard<std::mutex> lock(pool.mu_);
    return pool.cachedBytes_;
  }

 private:
  struct Entry {
    std::unique_ptr<uint8_t[]> data;
    size_t size;
  };
  static constexpr size_t kMinCacheBytes = size_t(1) << 30;
  static constexpr size_t kMaxCachedBuffers = 64;

  // Caller holds mu_.
  void noteInUse(size_t bytes) {
    inUse_ += bytes;
    if (inUse_ > peakInUse_) peakInUse_ = inUse_;
  }

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
      pool.inUse_ -= size;
      size_t limit = pool.peakInUse_ > kMinCacheBytes ? pool.peakInUse_ : kMinCacheBytes;
      if (pool.cachedBytes_ + size <= limit && pool.free_.size() < kMaxCachedBuffers) {
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
  size_t inUse_ = 0;
  size_t peakInUse_ = 0;
};

}  // namespace tccl
