"""CPL's Sparse Prompt Module (Wu et al., "Beyond Degradation Redundancy: Contrastive Prompt
Learning for All-in-One Image Restoration", Sec. III-B):

    g(x) = top-k(softmax(W_g x̄ + b_g), k)         (Eq. 3; x̄ = global average of x)
    p    = Σ_{i selected} g_i(x) E_i                 (Eq. 2)
    prompt = Conv3x3(Resize(p))                      (as PromptIR's prompt block)

Only the k selected prompt components are gathered and summed, so the cost does not grow with
the number of prompts n (the official code multiplies all n by a mostly-zero weight). The paper's
text renormalises the k kept weights to sum to one (renormalize=True); at its default k = 1 that
weight is p / p = 1, so the gate (W_g, b_g) gets no gradient and the routing stays as initialised
(benchmarks/learning.py measured it). The released CPLIR code keeps the raw softmax values, through
which the gate learns: renormalize=False, the default, as CPLIR's checkpoints need.
Keys (same as PromptIR's PromptGenBlock): prompt_param (1, n, C, s, s), linear_layer (n, lin_dim),
conv3x3 (C, C, 3, 3).
fast: gate, gather, sum and resize in one kernel (pyairir.ops.topk_prompt); a forced selection
(`forced`, for the contrastive negatives) runs the eager path.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from pyairir import ops
from pyairir.nn.fast import compute_dtype, conv, like


class SparsePromptModule(nn.Module):
    def __init__(self, prompt_dim: int = 128, prompt_len: int = 5, prompt_size: int = 96, lin_dim: int = 192,
                 top_k: int = 1, renormalize: bool = False, fast: bool = False) -> None:
        super().__init__()
        if not 1 <= top_k <= prompt_len:
            raise ValueError(f"SparsePromptModule: top_k must be in [1, prompt_len = {prompt_len}], got {top_k}")
        self.prompt_param = nn.Parameter(torch.rand(1, prompt_len, prompt_dim, prompt_size, prompt_size))
        self.linear_layer = nn.Linear(lin_dim, prompt_len)
        self.conv3x3 = nn.Conv2d(prompt_dim, prompt_dim, kernel_size=3, padding=1, bias=False)
        self.top_k, self.renormalize = top_k, renormalize
        self.forced: torch.Tensor | None = None  # (B, k) prompt indices to use instead of the gate's choice
        self.last_probabilities: torch.Tensor | None = None  # (B, n) softmax of the last forward, detached
        self.last_selection: torch.Tensor | None = None  # (B, k) indices the last forward used
        self.fast = fast

    @property
    def prompt_len(self) -> int:
        return self.prompt_param.shape[1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, lin_dim, H, W) -> prompt (B, prompt_dim, H, W). fast: a bf16 x computes in float32 where
        the CPU has no bf16 arithmetic (pyairir.nn.fast.compute_dtype); the prompt is in x's dtype."""
        features = x.to(compute_dtype(self.fast, x))
        linear = self.linear_layer
        logits = F.linear(features.mean(dim=(-2, -1)), like(linear.weight, features), like(linear.bias, features))
        return conv(self.conv3x3, self.route(logits, x.shape[-2:]).to(features.dtype)).to(x.dtype)  # logits (B, n)

    def route(self, logits: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """Gate logits (B, n) -> the prompt of the selected components resized to size, (B, C, *size);
        records last_probabilities and last_selection."""
        probabilities = F.softmax(logits, dim=1)
        if self.fast and self.forced is None:
            prompt, selection = ops.topk_prompt(logits, like(self.prompt_param[0], logits), *size, self.top_k,
                                                self.renormalize)
            self.last_probabilities, self.last_selection = probabilities.detach(), selection
            return prompt
        if self.forced is not None:
            selection = self.forced.to(logits.device)
            weights = torch.full(selection.shape, 1.0 / selection.shape[1], dtype=logits.dtype, device=logits.device)
        else:
            weights, selection = probabilities.topk(self.top_k, dim=1)
            if self.renormalize:
                weights = weights / weights.sum(dim=1, keepdim=True)
        self.last_probabilities, self.last_selection = probabilities.detach(), selection.detach()
        selected = self.prompt_param[0][selection]  # (B, k, C, s, s): only the chosen components
        prompt = (weights[:, :, None, None, None] * selected).sum(dim=1)
        return F.interpolate(prompt, size=tuple(size), mode="bilinear", align_corners=False)
