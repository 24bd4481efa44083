"""Alternating SCRUB: the "initial safeguard" of Siddiqui et al.'s two-phase tamper-resistant methods."""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from unlearn_audit.methods._adam_reach import AUTHORS_REACH, reach_scaled_lr
from unlearn_audit.methods._common import Spend
from unlearn_audit.protocol import UnlearningRequest


def _kl_elementwise(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
    """KL(teacher || student) at temperature 1, averaged over batch *and* classes (torch's
    `KLDivLoss()` default reduction "mean", which the authors' code uses; written as sum / numel because
    torch warns that "mean" will become "batchmean")."""
    pointwise = F.kl_div(F.log_softmax(student_logits, dim=1), F.softmax(teacher_logits, dim=1), reduction="sum")
    return pointwise / student_logits.numel()


@dataclass
class AlternatingSCRUB:
    """SCRUB as Siddiqui et al. 2025 run it ("alternating SCRUB"), the default first phase of their
    Weight Dist Reg and CBFT.

    Source: the authors' code (github.com/shoaibahmed/vision_relearning, `alt_scrub_lr_1e-05_a_1.0_g_1.0`,
    the default initial safeguard of their launcher), read for the facts; the code here is ours.
    The original model is a frozen teacher. Training alternates whole passes: one pass over the
    forget set whose steps *maximise* KL(teacher || student), then one pass over the retain set whose
    steps minimise `alpha * KL(teacher || student) + gamma * CE`, then the forget set again, and so on
    until the phase's steps are used -- unlike Kurmanji et al.'s SCRUB (`SCRUB` here), max-steps
    never stop. Settings as in the authors' scripts: `alpha` = `gamma` = 1, temperature 1, the KL
    averaged over batch and classes (torch's `KLDivLoss()` default), one batch size for both sets
    (the recipe's here), Adam without weight decay.

    Deviations: the authors run 100 epochs of the training loader at lr 1e-5; here the pass
    structure is the same but the run ends when `budget_use` of the budget is spent (the last batch
    cut short), and the Adam rate is `lr` if given, else `reach` -- by default the authors' lr x steps
    = 0.391 -- spread over the steps the budget pays for (`_adam_reach`; about 0.006 on `tiny` at a
    10% budget, 0.011 when it gets half of it as a safeguard). The teacher is a deep copy forwarded under
    `torch.no_grad()` (free); like the authors' it stays in train mode (batch-norm layers use batch
    statistics on both sides; its running statistics change on the copy only). The first max-step
    has a zero gradient (student = teacher), as in the original.
    """

    alpha: float = 1.0
    gamma: float = 1.0
    lr: float | None = None
    reach: float = AUTHORS_REACH
    batch_size: int | None = None
    budget_use: float = 1.0

    def unlearn(self, model: nn.Module, request: UnlearningRequest) -> nn.Module:
        model.to(request.device)
        spend = Spend(int(self.budget_use * request.budget.example_gradients))
        batch = self.batch_size or request.recipe.batch_size
        if spend.left <= 0 or (len(request.retain) == 0 and len(request.forget) == 0):
            return model.eval()
        teacher = copy.deepcopy(model).train()
        for p in teacher.parameters():
            p.requires_grad_(False)
        lr = self.lr if self.lr is not None else reach_scaled_lr(spend.left, batch, self.reach)
        optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=lr, weight_decay=0.0)
        model.train()
        while spend.left > 0:
            for data, maximise in ((request.forget, True), (request.retain, False)):
                for x, y in data.batches(batch, generator=request.generator, device=request.device):
                    if spend.left <= 0:
                        return model.eval()
                    if len(y) > spend.left:
                        x, y = x[: spend.left], y[: spend.left]
                    with torch.no_grad():
                        t_logits = teacher(x)
                    s_logits = model(x)
                    kl = _kl_elementwise(s_logits, t_logits)
                    loss = -kl if maximise else self.alpha * kl + self.gamma * F.cross_entropy(s_logits, y)
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    optimizer.step()
                    spend.add(len(y))
        return model.eval()


__all__ = ["AlternatingSCRUB"]
