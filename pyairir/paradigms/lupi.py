"""LUPI: Learning Using Privileged Information for degradation priors ("Learning Privileged
Degradation Priors for All-in-One Image Restoration").

A privileged estimator D_T sees the degraded and the clean image and produces a prior d_T that
modulates the restorer R through Degradation-aware Blocks on the decoder stages; a student
predictor D_S learns to produce the same prior from the degraded image alone:

    Stage 1:  L = || R(I_d, D_T(I_d, I_c)) - I_c ||_1                          (Eq. 3)
    Stage 2:  D_T frozen;  L = || R(I_d, D_S(I_d)) - I_c ||_1 + lambda KL(d_S, d_T)   (Eq. 4)
    Inference: R(I_d, D_S(I_d)); the teacher is not needed.

The paper's network is Restormer's U-Net ([4, 6, 6, 8] encoder, [6, 6, 8] decoder counting the
refinement stage with decoder level 1) with a 512-dimensional prior: LUPI(create_model("restormer")).
The KL term compares the priors as distributions over their 512 entries (softmax of each),
KL(softmax(d_T) || softmax(d_S)) — the paper says "KL divergence" without more detail.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from pyairir.nn import DegradationAwareBlock, DegradationPredictor, PrivilegedEstimator, set_fast
from pyairir.nn.fast import is_pyairir
from pyairir.paradigms.base import Paradigm, l1


class LUPI(Paradigm):
    """stages: decoder stages that get a Degradation-aware Block (default: the three deepest,
    "the deeper stages of the U-Net decoder"). Starts in stage 1; call `begin_stage2()`."""

    def __init__(self, backbone: nn.Module, prior_dim: int = 512, estimator_width: int = 64,
                 stages: tuple[str, ...] | None = None, align_weight: float = 1.0) -> None:
        super().__init__(backbone)
        self.stages = tuple(stages or self.deepest_stages(3))
        channels = backbone.stage_channels()
        unknown = [s for s in self.stages if s not in channels]
        if unknown:
            raise ValueError(f"LUPI: {unknown} are not decoder stages of {type(backbone).__name__} ({list(channels)})")
        self.prior_dim = prior_dim
        self.teacher = PrivilegedEstimator(prior_dim, estimator_width)
        self.student = DegradationPredictor(prior_dim, estimator_width)
        self.degradation_blocks = nn.ModuleDict({s: DegradationAwareBlock(channels[s], prior_dim)
                                                 for s in self.stages})
        self.align_weight = align_weight
        self.register_buffer("training_stage", torch.tensor(1))  # saved with the model, for resuming

    @property
    def stage(self) -> int:
        return int(self.training_stage)

    def restore_with_prior(self, degraded: torch.Tensor, prior: torch.Tensor) -> torch.Tensor:
        """R(I_d, d): the backbone modulated by the prior d (B, prior_dim) at every DB stage."""

        def inject(stage: str, x: torch.Tensor) -> torch.Tensor:
            return self.degradation_blocks[stage](x, prior) if stage in self.degradation_blocks else x

        return self.backbone.decode(self.backbone.encode(degraded), inject)

    def forward(self, degraded: torch.Tensor) -> torch.Tensor:
        """Inference: R(I_d, D_S(I_d)); no clean image needed."""
        return self.restore_with_prior(degraded, self.student(degraded))

    def begin_stage2(self, restorer: nn.Module | None = None) -> None:
        """Freezes the teacher (no gradient, eval mode, never updated again) and switches the
        training loss to the student's. The student restorer R_S continues from R_T's weights, or,
        given `restorer` (a freshly built backbone with R_T's decoder stages, e.g.
        create_model("restormer")), starts from it, with new Degradation-aware Blocks: the paper's
        "new student restorer". An optimizer built before must then be built again."""
        self.teacher.requires_grad_(False)
        if restorer is not None:
            self._start_new_restorer(restorer)
        self.training_stage.fill_(2)
        self.train(self.training)  # the teacher in eval mode from now on, new modules in the model's mode

    def _start_new_restorer(self, restorer: nn.Module) -> None:
        restorer = self.adopt(restorer)
        if restorer.stage_channels() != self.backbone.stage_channels():
            raise ValueError(f"LUPI.begin_stage2: restorer has decoder stages {restorer.stage_channels()}, "
                             f"R_T has {self.backbone.stage_channels()}")
        old = next(self.backbone.parameters())
        fast = any(getattr(m, "fast", False) is True for m in self.backbone.modules() if is_pyairir(m))
        blocks = nn.ModuleDict({s: DegradationAwareBlock(restorer.stage_channels()[s], self.prior_dim)
                                for s in self.stages})
        self.backbone = set_fast(restorer.to(old.device, old.dtype), fast)
        self.degradation_blocks = set_fast(blocks.to(old.device, old.dtype), fast)

    def train(self, mode: bool = True) -> "LUPI":
        super().train(mode)
        if self.stage == 2:
            self.teacher.eval()
        return self

    def alignment(self, student_prior: torch.Tensor, teacher_prior: torch.Tensor) -> torch.Tensor:
        """KL(softmax(d_T) || softmax(d_S)), averaged over the batch."""
        return F.kl_div(F.log_softmax(student_prior, dim=1), F.log_softmax(teacher_prior, dim=1), log_target=True,
                        reduction="batchmean")

    def training_loss(self, degraded: torch.Tensor, clean: torch.Tensor) -> dict[str, torch.Tensor]:
        if self.stage == 1:
            loss = l1(self.restore_with_prior(degraded, self.teacher(degraded, clean)), clean)
            return {"loss": loss, "l1": loss.detach()}
        with torch.no_grad():
            teacher_prior = self.teacher(degraded, clean)
        student_prior = self.student(degraded)
        reconstruction = l1(self.restore_with_prior(degraded, student_prior), clean)
        alignment = self.alignment(student_prior, teacher_prior)
        loss = reconstruction + self.align_weight * alignment
        return {"loss": loss, "l1": reconstruction.detach(), "kl": alignment.detach()}
