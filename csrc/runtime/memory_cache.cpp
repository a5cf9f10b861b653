// A cache of large CPU memory blocks, for pyairir's fast inference
// (pyairir/runtime.py: cached_memory, release_cached_memory, cached_memory_bytes,
// set_cached_memory_limit, poison_cached_memory).
//
// glibc serves every allocation above 32 MB with a fresh mmap and unmaps it on
// free, so each large activation of a forward pass is faulted in and zeroed by
// the kernel again, on every block of every pass (on a virtual machine the
// host may have to back the pages again too). ONNX Runtime and OpenVINO keep
// such memory in an arena; this is pyairir's equivalent, scoped to the code
// that asks for it. While at least one scope is open, the CPU allocator serves
// blocks of at least kMinBytes (rounded up to a multiple of kGranule) from the
// cache when it holds a freed block of that size; every block it served goes
// back to the cache when freed (in a scope or not), up to `limit` cached bytes
// (beyond, it is freed). The idle blocks are bounded by the peak: the blocks
// it has served and holds (in use plus idle) stay within the most that were in
// use at once plus the larger of that peak and half the limit — a request it
// cannot serve that would cross that bound first frees the oldest idle blocks.
// Idle blocks are thus kept while the pass works elsewhere, e.g. a U-Net's
// full-resolution blocks while it works on the coarser levels, for its decoder
// and for the next pass. Measured (README, "Memory reuse"): keeping every idle
// block took SIPL-PromptIR's guided pass at 512x512 from 1.6 to 3.7 GB;
// freeing them all on every miss made the decoders fault in their activations
// again; room for once the peak still left fast PromptIR ~17000 page faults a
// pass, twice ~3000-5000; with at least half the limit (512 MB) ~500, at the
// same peak memory of the 512x512 guided pass.
// Outside scopes, allocations go to PyTorch's own CPU allocator untouched. The
// cached blocks come from that allocator, so they keep its alignment and
// transparent huge pages. With poison on, every block served is first filled
// with 0xFF bytes (NaN in every float type), so that a kernel reading memory it
// did not write shows (tests/test_runtime.py).
#include "memory_cache.h"

#include <c10/core/CPUAllocator.h>
#include <pthread.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstring>
#include <memory>
#include <mutex>
#include <unordered_map>
#include <vector>

namespace pyairir {
namespace {

constexpr size_t kMinBytes = size_t(1) << 20;  // smaller blocks come from glibc's heap without faults
constexpr size_t kGranule = size_t(2) << 20;   // a transparent huge page

// A block from the base allocator, with the deleter that frees it; `freed_at`
// orders idle blocks, oldest first.
struct Block {
  c10::DataPtr memory;
  size_t size;
  uint64_t freed_at = 0;
};

class MemoryCache final : public c10::Allocator {
 public:
  explicit MemoryCache(c10::Allocator* base) : base_(base), base_raw_deleter_(base->raw_deleter()) {}

  // Served blocks are plain pointers (context = data, freed by raw_delete), as
  // oneDNN's use of the allocator through raw_allocate / raw_deallocate needs.
  c10::DataPtr allocate(size_t n) override {
    if (scopes_.load(std::memory_order_relaxed) == 0 || n < kMinBytes) return base_->allocate(n);
    const size_t size = (n + kGranule - 1) / kGranule * kGranule;
    std::unique_ptr<Block> block = take_or_make_room(size);
    if (!block) block.reset(new Block{base_->allocate(size), size});
    void* data = block->memory.get();
    if (poison_.load(std::memory_order_relaxed)) std::memset(data, 0xFF, size);  // NaN in every float type
    {
      std::lock_guard<std::mutex> lock(mutex_);
      served_.emplace(data, std::move(block));
      in_use_ += size;
      peak_in_use_ = std::max(peak_in_use_, in_use_);
    }
    return {data, data, &MemoryCache::raw_delete, c10::Device(c10::DeviceType::CPU)};
  }

  c10::DeleterFnPtr raw_deleter() const override { return &MemoryCache::raw_delete; }

  void copy_data(void* dest, const void* src, std::size_t count) const override {
    default_copy_data(dest, src, count);
  }

  void set_poison(bool on) { poison_.store(on); }
  void lock() { mutex_.lock(); }
  void unlock() { mutex_.unlock(); }
  void open() { scopes_.fetch_add(1); }
  void close() { scopes_.fetch_sub(1); }
  void set_limit(size_t limit) {
    std::vector<std::unique_ptr<Block>> freed;  // destroyed after the lock is released
    std::lock_guard<std::mutex> lock(mutex_);
    limit_ = limit;
    if (cached_ > limit_) release_locked(freed);
  }
  size_t release() {
    std::vector<std::unique_ptr<Block>> freed;
    std::lock_guard<std::mutex> lock(mutex_);
    const size_t bytes = cached_;
    release_locked(freed);
    peak_in_use_ = in_use_;  // a fresh start: the next passes set their own peak
    return bytes;
  }
  size_t cached() {
    std::lock_guard<std::mutex> lock(mutex_);
    return cached_;
  }
  void give_back(void* data);

 private:
  static void raw_delete(void* data);

  // An idle block of `size` (the most recently freed one), or nullptr after
  // freeing the oldest idle blocks as far as needed for a new block of `size`
  // to keep in use + idle within the peak in use plus max(peak, limit / 2).
  std::unique_ptr<Block> take_or_make_room(size_t size) {
    std::vector<std::unique_ptr<Block>> freed;  // destroyed after the lock is released
    std::lock_guard<std::mutex> lock(mutex_);
    auto it = free_.find(size);
    if (it != free_.end() && !it->second.empty()) {
      std::unique_ptr<Block> block = std::move(it->second.back());
      it->second.pop_back();
      cached_ -= size;
      return block;
    }
    const size_t bound = std::max(peak_in_use_ + std::max(peak_in_use_, limit_ / 2), in_use_ + size);
    while (cached_ > 0 && in_use_ + size + cached_ > bound) {
      auto oldest = free_.end();
      for (auto f = free_.begin(); f != free_.end(); ++f) {  // a few dozen sizes at most
        if (f->second.empty()) continue;
        if (oldest == free_.end() || f->second.front()->freed_at < oldest->second.front()->freed_at) oldest = f;
      }
      std::vector<std::unique_ptr<Block>>& blocks = oldest->second;
      cached_ -= blocks.front()->size;
      freed.push_back(std::move(blocks.front()));
      blocks.erase(blocks.begin());
    }
    return nullptr;
  }

  void release_locked(std::vector<std::unique_ptr<Block>>& freed) {
    for (auto& [size, blocks] : free_)
      for (auto& block : blocks) freed.push_back(std::move(block));
    free_.clear();
    cached_ = 0;
  }

  c10::Allocator* base_;
  c10::DeleterFnPtr base_raw_deleter_;
  std::atomic<int> scopes_{0};
  std::atomic<bool> poison_{false};
  std::mutex mutex_;
  std::unordered_map<void*, std::unique_ptr<Block>> served_;                  // in use
  std::unordered_map<size_t, std::vector<std::unique_ptr<Block>>> free_;     // cached, by size
  size_t cached_ = 0;       // idle bytes
  size_t in_use_ = 0;       // bytes of served blocks not yet freed
  size_t peak_in_use_ = 0;  // the most in use at once since the last release()
  uint64_t clock_ = 0;      // stamps freed blocks
  size_t limit_ = size_t(1) << 30;  // pyairir.runtime.DEFAULT_CACHE_LIMIT
};

// Installed on first use, over the CPU allocator in place then; never uninstalled
// (blocks it served may outlive any scope), and a pass-through outside scopes.
// A fork (DataLoader workers) while another thread holds the cache's lock would
// leave the child's copy locked forever: the lock is taken around fork.
MemoryCache& cache() {
  static MemoryCache* instance = [] {
    auto* c = new MemoryCache(c10::GetCPUAllocator());
    c10::SetCPUAllocator(c, /*priority=*/100);
    pthread_atfork([] { cache().lock(); }, [] { cache().unlock(); }, [] { cache().unlock(); });
    return c;
  }();
  return *instance;
}

// A pointer freed through this allocator: a served block goes back to the cache
// (or, over the limit, to the base allocator); any other was the base's own.
void MemoryCache::give_back(void* data) {
  std::unique_ptr<Block> block;  // a block not kept is freed after the lock is released
  {
    std::lock_guard<std::mutex> lock(mutex_);
    auto it = served_.find(data);
    if (it != served_.end()) {
      block = std::move(it->second);
      served_.erase(it);
      in_use_ -= block->size;
      if (cached_ + block->size <= limit_) {
        cached_ += block->size;
        block->freed_at = ++clock_;
        free_[block->size].push_back(std::move(block));
      }
      return;
    }
  }
  base_raw_deleter_(data);
}

void MemoryCache::raw_delete(void* data) { cache().give_back(data); }

}  // namespace

void memory_cache_open() { cache().open(); }
void memory_cache_close() { cache().close(); }
void memory_cache_set_limit(size_t bytes) { cache().set_limit(bytes); }
size_t memory_cache_release() { return cache().release(); }
size_t memory_cache_bytes() { return cache().cached(); }
void memory_cache_poison(bool on) { cache().set_poison(on); }

}  // namespace pyairir
