// gated_gelu on CPU: GDFN's gate gelu(z1) * z2 (or NAFNet's SimpleGate z1 * z2)
// of the channel halves of z, where z is x or, fused, the 3x3 depthwise
// convolution (padding 1) of x. Neither z nor its gradient is written to memory.
//
// The backward's work is cut into tasks of kRows image rows of one image, a cut
// that depends only on the shape, so the filter/bias gradient partials (one row
// per task, summed in task order) are reproducible whatever the thread count
// (the forward sums nothing across pixels; it is cut into tiles). The
// backward keeps the gate's gradient dz for the task's rows and one halo row
// on each side in a line buffer (halo rows are recomputed by both neighbours),
// from which it forms the input gradient and the filter gradient.
// channels_last is vectorised over channels (the backward in blocks of
// kChannelBlock per half, so the rows a task touches stay in L2), NCHW over
// the pixels of a row.
#include "vec.h"  // first: selects at::vec's instruction set

#include <ATen/Parallel.h>
#include <torch/library.h>

#include <cmath>
#include <vector>

#include "../checks.h"
#include "depthwise3x3.h"
#include "gelu.h"
#include "vec_loops.h"

namespace pyairir {
namespace {

constexpr int64_t kRows = 8;           // image rows per task
constexpr int64_t kChannelBlock = 128;  // channels_last: channels of each half per pass

struct Geometry {
  int64_t B, C2, H, W;  // C2 = 2h input channels
  bool channels_last, conv, gelu;
  int64_t half() const { return C2 / 2; }
  int64_t tasks_per_image() const { return (H + kRows - 1) / kRows; }
  int64_t tasks() const { return B * tasks_per_image(); }
  int64_t image(int64_t task) const { return task / tasks_per_image(); }
  int64_t first_row(int64_t task) const { return (task % tasks_per_image()) * kRows; }
  int64_t end_row(int64_t task) const { return std::min(first_row(task) + kRows, H); }
};

// The filter: taps, flipped and bias with C2 channels (depthwise3x3.h).
template <typename A>
using Filter = DepthwiseFilter<A>;

template <typename scalar_t, typename A = acc_type<scalar_t>>
Filter<A> filter_of(const Geometry& g, const c10::optional<at::Tensor>& weight, const c10::optional<at::Tensor>& b) {
  return Filter<A>(g.conv ? weight->const_data_ptr<scalar_t>() : nullptr,
                   b.has_value() ? b->const_data_ptr<scalar_t>() : nullptr, g.C2);
}

// GELU(a) = a Φ(a) and its derivative Φ(a) + a φ(a), exact (erf) form; identity for SimpleGate.
template <typename A>
struct Activation {
  bool gelu;
  Vec<A> value(Vec<A> a) const { return gelu ? pyairir::gelu(a) : a; }
  Vec<A> derivative(Vec<A> a) const { return gelu ? gelu_derivative(a) : Vec<A>(A(1)); }
};

// ================================================================ channels_last
// z at pixel p (neighbours nb), channel c .. c + count, as a vector.
template <typename scalar_t, typename A>
inline Vec<A> cl_preactivation(const scalar_t* x, const Geometry& g, const Filter<A>& f, const Neighbours& nb,
                               int64_t p, int64_t c, int64_t count) {
  if (!g.conv) return load_acc(x + p * g.C2 + c, count);
  return depthwise_at(x + c, g.C2, f, c, nb, count);
}

// The forward cuts the image into tiles of kForwardRows rows by `tile` columns and
// walks each tile's rows with a ring of three input rows. A ring row holds the
// tile's pixels plus one on each side (zero outside the image), every channel
// block, in the accumulation type: [block][tile + 2 pixels][2 halves][V lanes].
// It is filled pixel by pixel, each pixel's 2h channels read contiguously (a
// sweep of one channel block over a row would stride C2 values per pixel, and
// at 510 channels that stride, not the arithmetic, set the speed). The tile is
// as wide as lets the three ring rows stay in L2; the 18 filter vectors of a
// block stay in registers while its part of the row is swept. Rows are spread
// evenly over as few bands as kForwardRows allows, and so are the columns of
// rows cut in two tiles: a 66-row band of a large image as 32 + 32 + 2 rows, or
// 16 columns as 14 + 2, left one thread with most of the work. Rows of more
// tiles keep the widest (narrower tiles ran ~5 % slower at 254 x 128 x 256).
constexpr int64_t kForwardRows = 32;            // image rows per forward task, at most
constexpr int64_t kRingBytes = 192 * 1024;      // three ring rows of a tile, at most (and at least 8 pixels)

template <typename A>
struct Ring {
  // width = tile + 2 pixels; a block's part of a ring row is block_stride values, a ring row row_size.
  int64_t blocks, tile, band_rows, width, block_stride, row_size;
  Ring(const Geometry& g) {
    constexpr int64_t V = Vec<A>::size();
    blocks = (g.half() + V - 1) / V;
    const int64_t pixel = blocks * 2 * V * static_cast<int64_t>(sizeof(A));
    const int64_t widest = std::min(g.W, std::max<int64_t>(8, kRingBytes / (3 * pixel) - 2));
    tile = (g.W + widest - 1) / widest <= 2 ? even_split(g.W, widest) : widest;
    band_rows = even_split(g.H, kForwardRows);
    width = tile + 2;
    // Strides one cache line past the natural ones: at power-of-two strides (as at 254 or 510
    // channels) every block of a pixel falls in the same L1 set and the ring thrashes the cache.
    const int64_t line = 64 / static_cast<int64_t>(sizeof(A));
    block_stride = width * 2 * V + line;
    row_size = blocks * block_stride + line;
  }
  int64_t tiles(const Geometry& g) const { return (g.W + tile - 1) / tile; }
  int64_t bands(const Geometry& g) const { return (g.H + band_rows - 1) / band_rows; }
  // The size of each of the fewest equal parts of n that are at most `most` long.
  static int64_t even_split(int64_t n, int64_t most) {
    const int64_t parts = std::max<int64_t>(1, (n + most - 1) / most);
    return std::max<int64_t>(1, (n + parts - 1) / parts);
  }
};

// Ring row of input row y for the tile of columns [x0, x0 + n): pixel x0 - 1 + i at index i.
template <typename scalar_t, typename A>
void fill_ring_row(const scalar_t* x, const Geometry& g, const Ring<A>& r, int64_t b, int64_t y, int64_t x0,
                   int64_t n, A* row) {
  constexpr int64_t V = Vec<A>::size();
  const int64_t h = g.half();
  for (int64_t i = 0; i < n + 2; ++i) {
    const int64_t xx = x0 - 1 + i;
    A* dst = row + i * 2 * V;
    if (y < 0 || y >= g.H || xx < 0 || xx >= g.W) {
      for (int64_t j = 0; j < r.blocks; ++j) std::fill(dst + j * r.block_stride, dst + j * r.block_stride + 2 * V, A(0));
      continue;
    }
    const scalar_t* src = x + ((b * g.H + y) * g.W + xx) * g.C2;
    for (int64_t j = 0; j < r.blocks; ++j) {
      const int64_t c0 = j * V, count = std::min(V, h - c0);
      load_acc(src + c0, count).store(dst + j * r.block_stride);
      load_acc(src + h + c0, count).store(dst + j * r.block_stride + V);
    }
  }
}

template <typename scalar_t, typename A = acc_type<scalar_t>>
void forward_channels_last(const scalar_t* x, const Geometry& g, const Filter<A>& f, scalar_t* out) {
  const Activation<A> act{g.gelu};
  const int64_t h = g.half();
  constexpr int64_t V = Vec<A>::size();
  if (!g.conv) {  // z = x: each pixel's channels in turn
    at::parallel_for(0, g.B * g.H * g.W, 1024, [&](int64_t begin, int64_t end) {
      for (int64_t p = begin; p < end; ++p)
        vec_for<A>(h, [&](int64_t c, int64_t k) {
          store_acc(act.value(load_acc(x + p * g.C2 + c, k)) * load_acc(x + p * g.C2 + h + c, k), out + p * h + c, k);
        });
    });
    return;
  }
  const Ring<A> r(g);
  const int64_t tiles = r.tiles(g), bands = r.bands(g);
  at::parallel_for(0, g.B * bands * tiles, 1, [&](int64_t begin, int64_t end) {
    std::vector<A> ring(3 * r.row_size);
    auto ring_row = [&](int64_t y) { return ring.data() + ((y + 3) % 3) * r.row_size; };
    for (int64_t t = begin; t < end; ++t) {
      const int64_t b = t / (bands * tiles), y0 = (t / tiles) % bands * r.band_rows, x0 = t % tiles * r.tile;
      const int64_t y1 = std::min(y0 + r.band_rows, g.H), n = std::min(r.tile, g.W - x0);
      fill_ring_row(x, g, r, b, y0 - 1, x0, n, ring_row(y0 - 1));
      fill_ring_row(x, g, r, b, y0, x0, n, ring_row(y0));
      for (int64_t y = y0; y < y1; ++y) {
        fill_ring_row(x, g, r, b, y + 1, x0, n, ring_row(y + 1));
        // The tile's part of input row y + 2 is prefetched into L2 while row y is computed, a
        // share per channel block, so that the next fill does not wait on memory.
        const int64_t ahead = std::min(y + 2, g.H - 1), lo = std::max<int64_t>(x0 - 1, 0);
        const char* next = reinterpret_cast<const char*>(x + ((b * g.H + ahead) * g.W + lo) * g.C2);
        const int64_t next_bytes = (std::min(x0 + n + 1, g.W) - lo) * g.C2 * static_cast<int64_t>(sizeof(scalar_t));
        const int64_t share = (next_bytes + r.blocks - 1) / r.blocks;
        for (int64_t j = 0; j < r.blocks; ++j) {
          const int64_t c0 = j * V, count = std::min(V, h - c0);
          for (int64_t o = j * share; o < std::min(next_bytes, (j + 1) * share); o += 64)
            __builtin_prefetch(next + o, /*write=*/0, /*locality: L2=*/1);
          Vec<A> w1[kTaps], w2[kTaps];
          for (int tp = 0; tp < kTaps; ++tp) {
            w1[tp] = load(f.taps.data() + tp * g.C2 + c0, count);
            w2[tp] = load(f.taps.data() + tp * g.C2 + h + c0, count);
          }
          const Vec<A> bias1 = load(f.bias.data() + c0, count), bias2 = load(f.bias.data() + h + c0, count);
          const int64_t block = j * r.block_stride;
          const A* rows[3] = {ring_row(y - 1) + block, ring_row(y) + block, ring_row(y + 1) + block};
          scalar_t* dst = out + ((b * g.H + y) * g.W + x0) * h + c0;
          for (int64_t i = 0; i < n; ++i) {
            Vec<A> z1 = bias1, z2 = bias2;
            for (int tp = 0; tp < kTaps; ++tp) {
              const A* src = rows[tp / 3] + (i + tp % 3) * 2 * V;
              z1 = at::vec::fmadd(Vec<A>::loadu(src), w1[tp], z1);
              z2 = at::vec::fmadd(Vec<A>::loadu(src + V), w2[tp], z2);
            }
            store_acc(act.value(z1) * z2, dst + i * h, count);
          }
        }
      }
    }
  });
}

// dz = [dy z2 act'(z1), dy act(z1)] for channels c0 .. c0 + cn of each half, at the rows
// [r0, r1) of image b, into lines (row r at (r - r0) * W * 2 * kChannelBlock; half 1 at +kChannelBlock).
template <typename scalar_t, typename A>
void cl_gate_gradient(const scalar_t* grad_out, const scalar_t* x, const Geometry& g, const Filter<A>& f, int64_t b,
                      int64_t r0, int64_t r1, int64_t c0, int64_t cn, A* lines) {
  const Activation<A> act{g.gelu};
  const int64_t h = g.half();
  for (int64_t y = r0; y < r1; ++y)
    for (int64_t xx = 0; xx < g.W; ++xx) {
      const int64_t p = (b * g.H + y) * g.W + xx;
      const Neighbours nb(g.H, g.W, b, y, xx);
      A* d = lines + ((y - r0) * g.W + xx) * 2 * kChannelBlock;
      vec_for<A>(cn, [&](int64_t i, int64_t k) {
        const Vec<A> z1 = cl_preactivation(x, g, f, nb, p, c0 + i, k);
        const Vec<A> z2 = cl_preactivation(x, g, f, nb, p, h + c0 + i, k);
        const Vec<A> dy = load_acc(grad_out + p * h + c0 + i, k);
        (dy * z2 * act.derivative(z1)).store(d + i, k);
        (dy * act.value(z1)).store(d + kChannelBlock + i, k);
      });
    }
}

// One task of the channels_last backward; partial = [9 filter rows, 1 bias row] x C2.
template <typename scalar_t, typename A = acc_type<scalar_t>>
void backward_channels_last_task(const scalar_t* grad_out, const scalar_t* x, const Geometry& g,
                                 const Filter<A>& f, int64_t t, scalar_t* grad_x, A* partial, std::vector<A>& lines) {
  const int64_t h = g.half(), b = g.image(t), y0 = g.first_row(t), y1 = g.end_row(t);
  const int64_t r0 = g.conv ? std::max<int64_t>(0, y0 - 1) : y0, r1 = g.conv ? std::min(g.H, y1 + 1) : y1;
  A* dbias = partial + kTaps * g.C2;
  for (int64_t c0 = 0; c0 < h; c0 += kChannelBlock) {
    const int64_t cn = std::min(kChannelBlock, h - c0);
    cl_gate_gradient(grad_out, x, g, f, b, r0, r1, c0, cn, lines.data());
    for (int64_t y = y0; y < y1; ++y)
      for (int64_t xx = 0; xx < g.W; ++xx) {
        const int64_t p = (b * g.H + y) * g.W + xx;
        const A* d = lines.data() + ((y - r0) * g.W + xx) * 2 * kChannelBlock;
        if (!g.conv) {  // grad_x is dz itself
          vec_for<A>(cn, [&](int64_t i, int64_t k) {
            store_acc(load(d + i, k), grad_x + p * g.C2 + c0 + i, k);
            store_acc(load(d + kChannelBlock + i, k), grad_x + p * g.C2 + h + c0 + i, k);
          });
          continue;
        }
        const Neighbours nb(g.H, g.W, b, y, xx);
        const A* neighbour_lines[kTaps];  // each neighbour's dz in the line buffer
        for (int j = 0; j < nb.n; ++j) {
          const int64_t row = nb.pixel[j] / g.W - b * g.H, column = nb.pixel[j] % g.W;
          neighbour_lines[j] = lines.data() + ((row - r0) * g.W + column) * 2 * kChannelBlock;
        }
        for (int half = 0; half < 2; ++half) {
          const int64_t c = half * h + c0, line = half * kChannelBlock;
          vec_for<A>(cn, [&](int64_t i, int64_t k) {
            const Vec<A> dz = load(d + line + i, k);
            (load(dbias + c + i, k) + dz).store(dbias + c + i, k);
            Vec<A> gx(A(0));
            for (int j = 0; j < nb.n; ++j) {
              // the neighbour's dz, through the flipped tap, reaches p; x(neighbour) dz(p) is tap's gradient
              const A* dn = neighbour_lines[j] + line;
              gx = at::vec::fmadd(load(dn + i, k), load(f.flipped.data() + nb.tap[j] * g.C2 + c + i, k), gx);
              A* dw = partial + nb.tap[j] * g.C2 + c + i;
              at::vec::fmadd(load_acc(x + nb.pixel[j] * g.C2 + c + i, k), dz, load(dw, k)).store(dw, k);
            }
            store_acc(gx, grad_x + p * g.C2 + c + i, k);
          });
        }
      }
  }
}

// ================================================================ NCHW
// Rows [r0, r1) of one channel plane, zero-padded by one column on each side and
// by zero rows outside the image, into rows (row r at (r - r0) * (W + 2)).
template <typename scalar_t, typename A>
void padded_rows(const scalar_t* plane, const Geometry& g, int64_t r0, int64_t r1, A* rows) {
  const int64_t stride = g.W + 2;
  for (int64_t r = r0; r < r1; ++r) {
    A* row = rows + (r - r0) * stride;
    row[0] = row[g.W + 1] = A(0);
    if (r < 0 || r >= g.H) {
      std::fill(row + 1, row + g.W + 1, A(0));
    } else {
      vec_for<A>(g.W, [&](int64_t i, int64_t k) { load_acc(plane + r * g.W + i, k).store(row + 1 + i, k); });
    }
  }
}

// z of channel c at row y (input rows padded from row y - 1 on, at `rows`), vector at column i.
template <typename A>
inline Vec<A> nchw_preactivation(const Geometry& g, const Filter<A>& f, int64_t c, const A* rows, int64_t i,
                                 int64_t k) {
  const int64_t stride = g.W + 2;
  if (!g.conv) return load(rows + stride + 1 + i, k);
  Vec<A> z(f.bias[c]);
  for (int t = 0; t < kTaps; ++t)
    z = at::vec::fmadd(load(rows + (t / 3) * stride + t % 3 + i, k), Vec<A>(f.taps[t * g.C2 + c]), z);
  return z;
}

struct NchwScratch {
  template <typename A>
  static std::vector<A> rows(const Geometry& g) { return std::vector<A>((kRows + 4) * (g.W + 2)); }
};

template <typename scalar_t, typename A = acc_type<scalar_t>>
void forward_nchw(const scalar_t* x, const Geometry& g, const Filter<A>& f, scalar_t* out) {
  const Activation<A> act{g.gelu};
  const int64_t h = g.half(), plane = g.H * g.W, stride = g.W + 2;
  at::parallel_for(0, g.tasks(), 1, [&](int64_t begin, int64_t end) {
    std::vector<A> rows1 = NchwScratch::rows<A>(g), rows2 = NchwScratch::rows<A>(g);
    for (int64_t t = begin; t < end; ++t) {
      const int64_t b = g.image(t), y0 = g.first_row(t), y1 = g.end_row(t);
      for (int64_t c = 0; c < h; ++c) {
        padded_rows(x + (b * g.C2 + c) * plane, g, y0 - 1, y1 + 1, rows1.data());
        padded_rows(x + (b * g.C2 + h + c) * plane, g, y0 - 1, y1 + 1, rows2.data());
        for (int64_t y = y0; y < y1; ++y) {
          const int64_t r = (y - y0) * stride;
          vec_for<A>(g.W, [&](int64_t i, int64_t k) {
            const Vec<A> z1 = nchw_preactivation(g, f, c, rows1.data() + r, i, k);
            const Vec<A> z2 = nchw_preactivation(g, f, h + c, rows2.data() + r, i, k);
            store_acc(act.value(z1) * z2, out + ((b * h + c) * g.H + y) * g.W + i, k);
          });
        }
      }
    }
  });
}

// One task of the NCHW backward; partial = [9 filter rows, 1 bias row] x C2.
template <typename scalar_t, typename A = acc_type<scalar_t>>
void backward_nchw_task(const scalar_t* grad_out, const scalar_t* x, const Geometry& g, const Filter<A>& f,
                        int64_t t, scalar_t* grad_x, A* partial, std::vector<A> (&scratch)[4]) {
  const Activation<A> act{g.gelu};
  const int64_t h = g.half(), plane = g.H * g.W, stride = g.W + 2;
  const int64_t b = g.image(t), y0 = g.first_row(t), y1 = g.end_row(t);
  // dz rows y0 - 1 .. y1 (zero outside the image), from input rows y0 - 2 .. y1 + 1.
  auto& [rows1, rows2, dz1, dz2] = scratch;
  for (int64_t c = 0; c < h; ++c) {
    padded_rows(x + (b * g.C2 + c) * plane, g, y0 - 2, y1 + 2, rows1.data());
    padded_rows(x + (b * g.C2 + h + c) * plane, g, y0 - 2, y1 + 2, rows2.data());
    for (int64_t y = y0 - 1; y <= y1; ++y) {
      A* d1 = dz1.data() + (y - y0 + 1) * stride;
      A* d2 = dz2.data() + (y - y0 + 1) * stride;
      d1[0] = d1[g.W + 1] = d2[0] = d2[g.W + 1] = A(0);
      if (y < 0 || y >= g.H || (!g.conv && (y < y0 || y >= y1))) {
        std::fill(d1 + 1, d1 + g.W + 1, A(0));
        std::fill(d2 + 1, d2 + g.W + 1, A(0));
        continue;
      }
      const int64_t r = (y - y0 + 1) * stride;
      vec_for<A>(g.W, [&](int64_t i, int64_t k) {
        const Vec<A> z1 = nchw_preactivation(g, f, c, rows1.data() + r, i, k);
        const Vec<A> z2 = nchw_preactivation(g, f, h + c, rows2.data() + r, i, k);
        const Vec<A> dy = load_acc(grad_out + ((b * h + c) * g.H + y) * g.W + i, k);
        (dy * z2 * act.derivative(z1)).store(d1 + 1 + i, k);
        (dy * act.value(z1)).store(d2 + 1 + i, k);
      });
    }
    for (int half = 0; half < 2; ++half) {
      const int64_t ch = half * h + c;
      const A* rows = (half ? rows2 : rows1).data();  // input rows from y0 - 2
      const A* dz = (half ? dz2 : dz1).data();         // dz rows from y0 - 1
      for (int64_t y = y0; y < y1; ++y) {
        const A* d = dz + (y - y0 + 1) * stride + 1;
        scalar_t* gx_row = grad_x + ((b * g.C2 + ch) * g.H + y) * g.W;
        if (!g.conv) {
          vec_for<A>(g.W, [&](int64_t i, int64_t k) { store_acc(load(d + i, k), gx_row + i, k); });
          continue;
        }
        partial[kTaps * g.C2 + ch] +=
            vec_sum<A>(g.W, [&](int64_t i) { return Vec<A>::loadu(d + i); }, [&](int64_t i) { return d[i]; });
        for (int tp = 0; tp < kTaps; ++tp) {
          const A* in = rows + (y - y0 + 1 + tp / 3) * stride + tp % 3;  // x at (y + dy, i + dx), padded
          partial[tp * g.C2 + ch] += vec_sum<A>(
              g.W, [&](int64_t i) { return Vec<A>::loadu(in + i) * Vec<A>::loadu(d + i); },
              [&](int64_t i) { return in[i] * d[i]; });
        }
        vec_for<A>(g.W, [&](int64_t i, int64_t k) {
          Vec<A> gx(A(0));
          for (int tp = 0; tp < kTaps; ++tp) {
            const A* dn = dz + (y - y0 + tp / 3) * stride + tp % 3;  // dz at (y + dy - 1, i + dx - 1), padded
            gx = at::vec::fmadd(load(dn + i, k), Vec<A>(f.flipped[tp * g.C2 + ch]), gx);
          }
          store_acc(gx, gx_row + i, k);
        });
      }
    }
  }
}

// ================================================================ entry points
Geometry check_arguments(const at::Tensor& x, const c10::optional<at::Tensor>& dw_weight,
                         const c10::optional<at::Tensor>& dw_bias, bool gelu, const char* op) {
  const bool channels_last = check_gated_gelu(x, dw_weight, dw_bias, op);
  return {x.size(0), x.size(1), x.size(2), x.size(3), channels_last, dw_weight.has_value(), gelu};
}

at::MemoryFormat format_of(const Geometry& g) {
  return g.channels_last ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous;
}

at::Tensor gated_gelu(const at::Tensor& x, const c10::optional<at::Tensor>& dw_weight,
                      const c10::optional<at::Tensor>& dw_bias, bool gelu) {
  const Geometry g = check_arguments(x, dw_weight, dw_bias, gelu, "pyairir::gated_gelu");
  at::Tensor out = at::empty({g.B, g.half(), g.H, g.W}, x.options().memory_format(format_of(g)));
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, x.scalar_type(), "gated_gelu", [&] {
    const scalar_t* xp = x.const_data_ptr<scalar_t>();
    const Filter<acc_type<scalar_t>> f = filter_of<scalar_t>(g, dw_weight, dw_bias);
    if (g.channels_last) {
      forward_channels_last(xp, g, f, out.mutable_data_ptr<scalar_t>());
    } else {
      forward_nchw(xp, g, f, out.mutable_data_ptr<scalar_t>());
    }
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> gated_gelu_backward(const at::Tensor& grad_out, const at::Tensor& x,
                                                                   const c10::optional<at::Tensor>& dw_weight,
                                                                   const c10::optional<at::Tensor>& dw_bias,
                                                                   bool gelu) {
  constexpr const char* op = "pyairir::gated_gelu_backward";
  const Geometry g = check_arguments(x, dw_weight, dw_bias, gelu, op);
  check_gated_gelu_grad(grad_out, x, g.channels_last, op);
  at::Tensor grad_x = at::empty_like(x);
  at::Tensor grad_weight = g.conv ? at::empty_like(*dw_weight) : at::empty({0}, x.options());
  at::Tensor grad_bias = g.conv ? at::empty({g.C2}, x.options()) : at::empty({0}, x.options());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, x.scalar_type(), "gated_gelu_backward", [&] {
    using A = acc_type<scalar_t>;
    const scalar_t* xp = x.const_data_ptr<scalar_t>();
    const scalar_t* gp = grad_out.const_data_ptr<scalar_t>();
    scalar_t* gxp = grad_x.mutable_data_ptr<scalar_t>();
    const Filter<A> f = filter_of<scalar_t>(g, dw_weight, dw_bias);
    const int64_t row_len = (kTaps + 1) * g.C2;
    std::vector<A> partial(g.conv ? g.tasks() * row_len : 0, A(0));
    at::parallel_for(0, g.tasks(), 1, [&](int64_t begin, int64_t end) {
      if (g.channels_last) {
        std::vector<A> lines((kRows + 2) * g.W * 2 * kChannelBlock);
        for (int64_t t = begin; t < end; ++t)
          backward_channels_last_task(gp, xp, g, f, t, gxp, partial.data() + t * row_len * g.conv, lines);
      } else {
        std::vector<A> scratch[4] = {NchwScratch::rows<A>(g), NchwScratch::rows<A>(g), NchwScratch::rows<A>(g),
                                     NchwScratch::rows<A>(g)};
        for (int64_t t = begin; t < end; ++t)
          backward_nchw_task(gp, xp, g, f, t, gxp, partial.data() + t * row_len * g.conv, scratch);
      }
    });
    if (!g.conv) return;
    scalar_t* dw = grad_weight.mutable_data_ptr<scalar_t>();
    scalar_t* db = grad_bias.mutable_data_ptr<scalar_t>();
    at::parallel_for(0, g.C2, 1, [&](int64_t begin, int64_t end) {
      for (int64_t c = begin; c < end; ++c) {
        A sums[kTaps + 1] = {};
        for (int64_t t = 0; t < g.tasks(); ++t)
          for (int j = 0; j <= kTaps; ++j) sums[j] += partial[t * row_len + j * g.C2 + c];
        for (int j = 0; j < kTaps; ++j) dw[c * kTaps + j] = scalar_t(sums[j]);
        db[c] = scalar_t(sums[kTaps]);
      }
    });
  });
  return {grad_x, grad_weight, grad_bias};
}

}  // namespace

TORCH_LIBRARY_IMPL(pyairir, CPU, m) {
  m.impl("gated_gelu", &gated_gelu);
  m.impl("gated_gelu_backward", &gated_gelu_backward);
}

}  // namespace pyairir
