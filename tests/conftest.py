import os

# Triton reads TRITON_INTERPRET when @triton.jit runs, so it must be set before
# anything imports the kernels: Triton kernels then run on CPU tensors.
os.environ.setdefault("TRITON_INTERPRET", "1")
