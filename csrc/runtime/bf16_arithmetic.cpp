#include "bf16_arithmetic.h"

#include <ATen/cpu/Utils.h>

#include <string>

namespace pyairir {

bool bf16_arithmetic() {
  static const bool answer = [] {
    const auto capabilities = at::cpu::get_cpu_capabilities();
    auto flag = [&](const std::string& name) {
      const auto it = capabilities.find(name);
      return it != capabilities.end() && it->second.isBool() && it->second.toBool();
    };
    const auto architecture = capabilities.find("architecture");
    const bool x86 = architecture != capabilities.end() && architecture->second.isString() &&
                     architecture->second.toStringRef().rfind("x86", 0) == 0;
    return !x86 || flag("avx512_bf16") || flag("amx_bf16");
  }();
  return answer;
}

}  // namespace pyairir
