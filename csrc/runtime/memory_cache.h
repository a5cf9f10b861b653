// The cache of large CPU blocks (memory_cache.cpp), as pyairir._C exposes it.
#pragma once

#include <cstddef>

namespace pyairir {

void memory_cache_open();               // a scope begins: large allocations come from the cache
void memory_cache_close();              // a scope ends
void memory_cache_set_limit(size_t bytes);  // at most this many bytes cached (over it now: all idle freed)
size_t memory_cache_release();          // frees every cached block; returns the bytes freed
size_t memory_cache_bytes();            // bytes held by the cache (not in use)
void memory_cache_poison(bool on);      // fill each block served with 0xFF bytes (NaN), to find reads of unwritten memory

}  // namespace pyairir
