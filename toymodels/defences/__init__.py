"""Defences against harmful amplification during fine-tuning, inside the lab's own fine-tuning path.

A defence is one of four things, and nothing else: a **loss term** added to the fine-tuning objective,
an **optimiser mask**, a **data transform** of the fine-tuning batch (replay, filtering), or an
**update transform** appended to the optax chain. Each is switched on per fine-tuning *regime*
(``RegimeConfig.defence`` and ``strength``), so a whole comparison — the undefended run and every
defence, from the same pretrained models on the same data stream — is one compiled sweep of
:func:`toymodels.core.engine.fit` (per-instance arrays in ``inst``; instances whose regime does not use a
mechanism get weight 0 / mask 1 / "off", which leaves them undefended: bit for bit when the mechanism
has strength 0 everywhere, since it is then not compiled in, and to float32 rounding inside a sweep
that compiles it for other instances).

Notation, for ONE instance: W (d_hidden, n) with columns W_i; Ŵ_i = W_i / (‖W_i‖² + ε²)^{1/2};
h = W x (batch, d_hidden); x' = f_θ(x) the model's output; t the target, H the harmful features.

==================== ======== ==========================================================================
defence              plugs in  what it does (strength s)
==================== ======== ==========================================================================
``gram_offdiag``     loss     s Σ_{i≠j} (Ŵ_iᵀŴ_j)²  = s ‖offdiag(ŴᵀŴ)‖_F²   (the seed's "Frobenius norm of
                              the feature covariance"), computed as the n×n Gram matrix: O(n² d)
``gram_offdiag_dual`` loss    the same value as ‖ŴŴᵀ‖_F² − Σ_i ‖Ŵ_i‖⁴ (a d×d matrix): O(n d²)
``soft_orthogonality`` loss   s ‖WᵀW − I‖_F²  (orthonormal columns; unreachable when n > d_hidden)
``decov``            loss     s ½(‖C‖_F² − ‖diag C‖²), C = cov_batch(h)  (Cogswell et al. 2016)
``targeted_cos``     loss     s Σ_{j∈H} cos(W_t, W_j)²   (only the target–harmful overlap)
``anchor``           loss     s mean_{b,i} I_i (f_θ(x̃)_i − f_θ0(x̃)_i)², x̃ ~ pretraining distribution
``replay``           data     a fraction s of every batch's rows is pretraining data with the
                              pretraining loss (importance on every output, target x)
``filter_geometric`` data     drop the fraction s of the batch's non-empty samples whose h0 = W0 x
                              is closest in cosine to a harmful direction W0_j (W0: pretrained)
``filter_random``    data     drop the same number of non-empty samples, chosen at random (control)
``freeze_harmful``   mask     W[:, H] and b_final[H] receive no update
``grad_projection``  transform remove from every column's update its component in span{W0_j : j∈H}
``lora``             trainable ``finetune.trainable = "lora"`` (toymodels.lab.trainable; a run setting)
==================== ======== ==========================================================================

The anchor penalty is this regression model's analogue of a KL penalty to the pretrained model:
reading x' as the mean of a Gaussian with fixed variance σ², KL(p_θ0(·|x̃) ‖ p_θ(·|x̃)) =
‖f_θ(x̃) − f_θ0(x̃)‖² / 2σ², an output MSE; it is taken on pretraining-distribution inputs because
that is where the capability to protect lives (fine-tuning inputs alone would not see the harmful
feature's outputs).

The regularisers live in :mod:`toymodels.core.penalties` (pure functions of one instance's W, h or
outputs); the same functions are the pretraining penalties of ``train.penalty``.

Measured for every regime (:func:`.evaluate.evaluate`, :func:`.summary.summarize`): the lab's harmful-amplification
numbers (toxic rate change in pp, pre-activation change), the target's gain, the capability numbers
of :func:`.evaluate.capability` before and after (pretraining loss split into benign and harmful features, the
harmful feature's loss when present, features represented, D*), each paired with the undefended
instance from the same pretrained model, and, with ``finetune.overhead_repeats`` > 0, the step-time
ratio against the undefended step (:func:`.evaluate.measure_overhead`).

The package: :mod:`.registry` (the defences and :func:`spec`), :mod:`.data` (loss terms, replay and the
filters as one objective), :mod:`.optim` (freeze mask, gradient projection), :mod:`.hooks` (all of them
as the lab's fine-tuning hooks), :mod:`.evaluate` (capability, overhead), :mod:`.summary` and
:mod:`.tables` (rows and the markdown table, from saved summaries).
"""

from .evaluate import capability, measure_overhead
from .hooks import DefenceHooks, hooks_for
from .registry import DEFENCES, LOSS_DEFENCES, Defence, Spec, enabled, spec
from .summary import pretraining_rows, same_pretraining, table_rows
from .tables import fmt_stat, markdown_table, strength_label

__all__ = ["DEFENCES", "LOSS_DEFENCES", "Defence", "DefenceHooks", "Spec", "capability", "enabled", "hooks_for",
           "fmt_stat", "markdown_table", "measure_overhead", "pretraining_rows", "same_pretraining", "spec", "strength_label",
           "table_rows"]
