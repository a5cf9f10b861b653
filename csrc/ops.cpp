// Every pyairir op schema, in one place. Kernels register implementations in
// csrc/cpu/<op>.cpp (CPU) and csrc/cuda/<op>.cpp (CUDA); fake kernels and
// autograd formulas are registered from Python in pyairir/ops/<op>.py.
#include <Python.h>
#include <torch/library.h>

#include "runtime/bf16_arithmetic.h"
#include "runtime/memory_cache.h"

// Importing pyairir._C loads this shared library, which runs the
// registrations below. The module's functions are the memory cache's controls
// (csrc/runtime/memory_cache.cpp) and what the CPU can do (csrc/runtime/bf16_arithmetic.cpp),
// called by pyairir/runtime.py only.
namespace {

PyObject* size_result(size_t bytes) { return PyLong_FromSize_t(bytes); }

PyObject* memory_cache_open(PyObject*, PyObject*) {
  pyairir::memory_cache_open();
  Py_RETURN_NONE;
}
PyObject* memory_cache_close(PyObject*, PyObject*) {
  pyairir::memory_cache_close();
  Py_RETURN_NONE;
}
PyObject* memory_cache_set_limit(PyObject*, PyObject* bytes) {
  const size_t limit = PyLong_AsSize_t(bytes);
  if (limit == static_cast<size_t>(-1) && PyErr_Occurred()) return nullptr;
  pyairir::memory_cache_set_limit(limit);
  Py_RETURN_NONE;
}
PyObject* memory_cache_release(PyObject*, PyObject*) { return size_result(pyairir::memory_cache_release()); }
PyObject* memory_cache_bytes(PyObject*, PyObject*) { return size_result(pyairir::memory_cache_bytes()); }
PyObject* memory_cache_poison(PyObject*, PyObject* on) {
  const int flag = PyObject_IsTrue(on);
  if (flag < 0) return nullptr;
  pyairir::memory_cache_poison(flag != 0);
  Py_RETURN_NONE;
}

PyObject* bf16_arithmetic(PyObject*, PyObject*) { return PyBool_FromLong(pyairir::bf16_arithmetic()); }

PyMethodDef methods[] = {
    {"memory_cache_open", memory_cache_open, METH_NOARGS, "a memory cache scope begins"},
    {"memory_cache_close", memory_cache_close, METH_NOARGS, "a memory cache scope ends"},
    {"memory_cache_set_limit", memory_cache_set_limit, METH_O, "bytes the cache may hold"},
    {"memory_cache_release", memory_cache_release, METH_NOARGS, "frees the cached blocks; returns their bytes"},
    {"memory_cache_bytes", memory_cache_bytes, METH_NOARGS, "bytes the cache holds"},
    {"memory_cache_poison", memory_cache_poison, METH_O, "fill the blocks served with NaN bytes"},
    {"bf16_arithmetic", bf16_arithmetic, METH_NOARGS, "whether this CPU multiplies bf16 in hardware"},
    {nullptr, nullptr, 0, nullptr}};

}  // namespace

extern "C" PyObject* PyInit__C(void) {
  static struct PyModuleDef module_def = {
      PyModuleDef_HEAD_INIT, "_C", "pyairir kernels (registered under torch.ops.pyairir)", -1, methods};
  return PyModule_Create(&module_def);
}

TORCH_LIBRARY(pyairir, m) {
  // Restormer's channel LayerNorm over dim 1 of x (B, C, H, W).
  // subtract_mean=true: WithBias ((x - mean) / sqrt(var + eps) * weight + bias);
  // subtract_mean=false: BiasFree (x / sqrt(var + eps) * weight; var is still
  // taken about the mean). bias may be None.
  m.def("layer_norm_channels(Tensor x, Tensor weight, Tensor? bias, float eps, bool subtract_mean) -> Tensor");
  // Gradients of layer_norm_channels w.r.t. (x, weight, bias); the statistics
  // are recomputed from x, so the forward saves nothing but its inputs.
  m.def(
      "layer_norm_channels_backward(Tensor grad_out, Tensor x, Tensor weight, float eps, bool subtract_mean)"
      " -> (Tensor, Tensor, Tensor)");

  // GDFN's gate gelu(z1) * z2 (gelu=true, exact erf GELU) or NAFNet's SimpleGate
  // z1 * z2 (gelu=false) of the channel halves z1, z2 of z, where z is x (B, 2h, H, W)
  // or, fused, the 3x3 depthwise convolution of x (padding 1) with dw_weight
  // (2h, 1, 3, 3) and dw_bias (2h,). Returns (B, h, H, W).
  m.def("gated_gelu(Tensor x, Tensor? dw_weight, Tensor? dw_bias, bool gelu) -> Tensor");
  // Gradients w.r.t. (x, dw_weight, dw_bias); the last two are empty without dw_weight.
  m.def(
      "gated_gelu_backward(Tensor grad_out, Tensor x, Tensor? dw_weight, Tensor? dw_bias, bool gelu)"
      " -> (Tensor, Tensor, Tensor)");

  // Restormer's MDTA core (transposed attention), per image and head over the
  // d = C / heads channels and N = H * W pixels of q, k, v (B, C, H, W):
  //   out = softmax((q k^T) / (|q| |k|^T) * temperature[h]) v
  // with |.| the L2 norm over the pixels (clamped to 1e-12, as F.normalize).
  // q, k, v: NCHW or channels_last, or channel slices of such a tensor;
  // temperature: heads values. With dw_weight (3C, 1, 3, 3) and dw_bias (3C,), q, k
  // and v are first each convolved with their third of that 3x3 depthwise filter
  // (padding 1), as MDTA's qkv_dwconv; that convolution is then part of the op
  // (the CPU kernel computes it chunk by chunk, never writing it whole), and the
  // cosine and norms below are those of the convolved q and k. With
  // project_weight (C, C, 1, 1) and project_bias (C,) (MDTA's project_out), out is
  // that 1x1 convolution of the attention's output, folded into the op: one C x C
  // product per pixel, P blockdiag(A_h) v + bias. Returns (out
  // (B, C, H, W) in q's layout, and for the backward: the cosine matrix
  // (B, heads, d, d) and the norms of q and k (B, C), in float32, float64 for
  // float64 inputs).
  m.def(
      "mdta(Tensor q, Tensor k, Tensor v, Tensor temperature, int heads, Tensor? dw_weight=None,"
      " Tensor? dw_bias=None, Tensor? project_weight=None, Tensor? project_bias=None)"
      " -> (Tensor out, Tensor cosine, Tensor q_norm, Tensor k_norm)");
  // Gradients w.r.t. (q, k, v, temperature), from the extra outputs of mdta; q, k, v
  // are the convolved ones when mdta had a depthwise filter (its autograd formula
  // convolves them again and carries the gradients back through the filter).
  m.def(
      "mdta_backward(Tensor grad_out, Tensor q, Tensor k, Tensor v, Tensor temperature, Tensor cosine,"
      " Tensor q_norm, Tensor k_norm, int heads) -> (Tensor, Tensor, Tensor, Tensor)");

  // LUPI's FiLM modulation and activation, GELU(gamma * x + beta) (exact erf GELU), with
  // gamma, beta (B, C) per sample and channel, for x (B, C, H, W) NCHW or channels_last.
  m.def("film_gelu(Tensor x, Tensor gamma, Tensor beta) -> Tensor");
  // Gradients w.r.t. (x, gamma, beta).
  m.def("film_gelu_backward(Tensor grad_out, Tensor x, Tensor gamma, Tensor beta) -> (Tensor, Tensor, Tensor)");

  // Prompt routing (PromptIR's prompt block, CPL's Sparse Prompt Module) without the final conv:
  // from gate logits (B, n) over n prompt components prompts (n, C, s, s), the top-k softmax
  // weights (renormalised to sum to one if asked), the weighted sum of only the k selected
  // components, bilinearly resized (align_corners=False) to (height, width). Returns
  // (out (B, C, height, width), weights (B, k), selection (B, k) int64); k = n is the dense case.
  m.def(
      "topk_prompt(Tensor logits, Tensor prompts, int height, int width, int k, bool renormalize)"
      " -> (Tensor out, Tensor weights, Tensor selection)");
  // Gradients of out w.r.t. (logits, prompts), the gate recomputed from the logits; only the
  // selected components' gradients are non-zero.
  m.def(
      "topk_prompt_backward(Tensor grad_out, Tensor logits, Tensor prompts, int k, bool renormalize)"
      " -> (Tensor, Tensor)");

  // SIPL's Proxy Fusion attention: per head (d = C / heads channels), the query tokens of
  // q (B, C, Hq, Wq) attend to the key tokens of k, v (B, C, Hk, Wk) with cosine scores,
  // softmax((q_hat k_hat^T) * temperature[h]) v, flash-style (never forming the HqWq x HkWk matrix).
  // Returns (out (B, C, Hq, Wq), logsumexp (B, heads, HqWq) of the scaled scores, and the
  // clamped L2 norms q_norm (B, heads, HqWq), k_norm (B, heads, HkWk)).
  m.def(
      "proxy_attention(Tensor q, Tensor k, Tensor v, Tensor temperature, int heads)"
      " -> (Tensor out, Tensor logsumexp, Tensor q_norm, Tensor k_norm)");
  // Gradients w.r.t. (q, k, v, temperature), the attention recomputed from the saved statistics.
  m.def(
      "proxy_attention_backward(Tensor grad_out, Tensor q, Tensor k, Tensor v, Tensor temperature, Tensor out,"
      " Tensor logsumexp, Tensor q_norm, Tensor k_norm, int heads) -> (Tensor, Tensor, Tensor, Tensor)");
}
