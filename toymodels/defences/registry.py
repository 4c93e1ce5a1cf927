"""The registered defences, and which mechanisms a config's regimes compile in (:class:`Spec`)."""

from __future__ import annotations

from dataclasses import dataclass

from ..config import Config


# --- the registry ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Defence:
    """A registered defence: ``plugs`` says where it enters the fine-tuning path (``loss``, ``data``,
    ``mask``, ``transform``, ``trainable``, or ``none`` for the baseline); ``strength`` what the
    regime's strength means."""

    name: str
    plugs: str
    strength: str
    summary: str


DEFENCES: dict[str, Defence] = {d.name: d for d in (
    Defence("none", "none", "-", "undefended"),
    Defence("gram_offdiag", "loss", "λ", "off-diagonal Gram penalty Σ_{i≠j}(Ŵ_i·Ŵ_j)², n×n form"),
    Defence("gram_offdiag_dual", "loss", "λ", "the same penalty through the d×d matrix ŴŴᵀ"),
    Defence("soft_orthogonality", "loss", "λ", "soft orthogonality ‖WᵀW − I‖²"),
    Defence("decov", "loss", "λ", "DeCov: off-diagonal covariance of hidden activations"),
    Defence("targeted_cos", "loss", "λ", "cos(target, harmful)² only"),
    Defence("anchor", "loss", "λ", "output anchor to the pretrained model on pretraining inputs (KL analogue)"),
    Defence("replay", "data", "fraction of rows", "replay pretraining data in a fraction of every batch"),
    Defence("filter_geometric", "data", "fraction dropped", "drop the samples whose W0x is closest to harmful"),
    Defence("filter_random", "data", "fraction dropped", "drop as many random samples (control)"),
    Defence("freeze_harmful", "mask", "-", "freeze W[:, harmful] and b_final[harmful]"),
    Defence("grad_projection", "transform", "-", "project W updates off span of the harmful directions"),
    Defence("lora", "trainable", "rank (finetune.lora_rank)", "low-rank adapter on a frozen W (trainable=lora)"),
)}


LOSS_DEFENCES = tuple(n for n, d in DEFENCES.items() if d.plugs == "loss")


# config.FT_DEFENCES lists every registered name but "lora" (a run setting, not a regime's defence) and
# config.FT_FRACTION_DEFENCES the data defences; tests/test_defences.py checks that they agree.


@dataclass(frozen=True)
class Spec:
    """Which mechanisms a config's regimes use (static: decides what the compiled program contains)."""

    losses: tuple[str, ...]
    replay: bool
    filter: bool
    freeze: bool
    projection: bool

    @property
    def pre_batch(self) -> bool:
        return self.replay or "anchor" in self.losses


def spec(cfg: Config) -> Spec | None:
    """The :class:`Spec` of ``cfg``'s regimes, or None when no regime has a defence (the undefended
    fine-tuning path then runs exactly as without this module). Loss terms and data transforms with
    strength 0 in every regime are left out, so a defence at λ = 0 reproduces the undefended run bit
    for bit. (Instances at strength 0 *inside* a sweep that compiles the mechanism for others agree
    with the undefended run to float32 rounding, not bitwise.)"""
    used = {r.defence for r in cfg.finetune.regimes} - {"none"}
    if not used:
        return None
    # A loss term or data transform whose strength is 0 in every regime is not compiled in: adding
    # 0·∇P (or keeping every row) is exact, but a different graph may fuse (and contract into FMAs)
    # differently and move results by an ulp.
    weighted = {r.defence for r in cfg.finetune.regimes if r.strength > 0}
    return Spec(losses=tuple(k for k in LOSS_DEFENCES if k in weighted), replay="replay" in weighted,
                filter=bool(weighted & {"filter_geometric", "filter_random"}), freeze="freeze_harmful" in used,
                projection="grad_projection" in used)


def enabled(cfg: Config) -> bool:
    """Whether the run gets the defence metrics (capability, overhead): a regime has a defence, or
    ``finetune.overhead_repeats`` > 0 (e.g. a LoRA run compared with the undefended one)."""
    return spec(cfg) is not None or cfg.finetune.overhead_repeats > 0


def _regime_of(plan) -> list:
    return [plan.regimes[int(r)] for r in plan.regime_index]
