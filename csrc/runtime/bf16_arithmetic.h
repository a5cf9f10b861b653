#pragma once

namespace pyairir {

// Whether this CPU multiplies bf16 values in hardware: AVX512-BF16 or AMX-BF16 on x86 (as cpuinfo,
// through ATen, reports them). Elsewhere (ARM, ...) true: no CPU there is known to pyairir to lack
// what its bf16 kernels need, so their behaviour is left as it was.
bool bf16_arithmetic();

}  // namespace pyairir
