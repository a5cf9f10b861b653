"""Which prompts a model selects for which task (CPL Fig. 4): per task, the mean selection
probability of every prompt, the histogram of the prompts actually used, and the entropy (bits)
of the mean probabilities — PromptIR spreads its weight (2.08-2.24 bits of a possible log2 5),
CPL concentrates it."""

from __future__ import annotations

import math
from collections import defaultdict

import torch
from torch import nn

from pyairir.nn import SparsePromptModule


class PromptSelectionStatistics:
    """Call `record(model, tasks)` after each forward of a model with Sparse Prompt Modules;
    tasks: one label per sample of the batch. Statistics are kept per prompt module (index i in
    module order) and task."""

    def __init__(self) -> None:
        self.probability_sums: dict[tuple[int, str], torch.Tensor] = {}
        self.counts: dict[tuple[int, str], torch.Tensor] = {}
        self.samples: dict[tuple[int, str], int] = defaultdict(int)

    def record(self, model: nn.Module, tasks: list[str]) -> None:
        modules = [m for m in model.modules() if isinstance(m, SparsePromptModule)]
        if not modules:
            raise ValueError("PromptSelectionStatistics.record: the model has no SparsePromptModule (wrap it in CPL)")
        for i, module in enumerate(modules):
            if module.last_probabilities is None:
                raise ValueError("PromptSelectionStatistics.record: run the model forward first")
            probabilities, selection = module.last_probabilities.float().cpu(), module.last_selection.cpu()
            if len(tasks) != probabilities.shape[0]:
                raise ValueError(f"PromptSelectionStatistics.record: {len(tasks)} task labels for a batch of "
                                 f"{probabilities.shape[0]}")
            n = probabilities.shape[1]
            for b, task in enumerate(tasks):
                key = (i, task)
                self.probability_sums[key] = self.probability_sums.get(key, torch.zeros(n)) + probabilities[b]
                self.counts[key] = self.counts.get(key, torch.zeros(n, dtype=torch.long)) + torch.bincount(
                    selection[b], minlength=n)
                self.samples[key] += 1

    def tasks(self) -> list[str]:
        return sorted({task for _, task in self.samples})

    def mean_probabilities(self, task: str, module: int = 0) -> torch.Tensor:
        """(n,) mean softmax selection probability of each prompt for `task`."""
        return self.probability_sums[(module, task)] / self.samples[(module, task)]

    def histogram(self, task: str, module: int = 0) -> torch.Tensor:
        """(n,) how many times each prompt was among the selected ones for `task`."""
        return self.counts[(module, task)].clone()

    def entropy(self, task: str, module: int = 0) -> float:
        """Entropy in bits of the mean selection probabilities for `task`."""
        p = self.mean_probabilities(task, module)
        return float(-sum(x * math.log2(x) for x in p.tolist() if x > 0))
