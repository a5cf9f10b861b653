"""Triton kernels, installed as pyairir.triton_kernels (the top-level name
`triton_kernels` is taken on the package index). Imported only when an op runs
on a CUDA tensor, or by the tests (on CPU tensors under TRITON_INTERPRET=1)."""
