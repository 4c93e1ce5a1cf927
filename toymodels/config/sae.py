"""The config sections of the auditor (:mod:`toymodels.audit`): ``[sae]`` and ``[audit]``.

``[sae]`` trains sparse autoencoders on the *hidden activations* of every pretrained model of the run
(h = W x for x from the pretraining distribution, generated on the fly from the frozen model), one
compiled sweep per variant whose instances are (pretrained model × dictionary size × sparsity setting).
The variants and their losses are in :mod:`toymodels.audit.sae`.

``[audit]`` uses one of those dictionaries as an auditor would, without the true feature directions:
it finds the target's and the harmful features' latents from a small labelled sample, ranks every latent
by its predicted first-order spill-over, and (with ``[finetune]``) scores its predictions against what
the fine-tunes then did; it can also diff the models before and after fine-tuning with crosscoders
(``diff``) and run the geometric data filter with the recovered harmful directions (``filter_regimes``).

Cross-section checks (a target and a harmful feature, regimes that exist) are in
:class:`toymodels.config.run.Config`.
"""

from __future__ import annotations

from dataclasses import dataclass

from .checks import check, check_choice, check_float, check_int, check_name, freeze, is_number, listy

SAE_VARIANTS = ("relu_l1", "topk", "batch_topk", "jumprelu")   # the default set
SAE_CHOICES = SAE_VARIANTS + ("matryoshka",)                     # every variant (toymodels.audit.sae)


def _numbers(name: str, values, lo: float, hi: float, integer: bool = False, lo_open: bool = True) -> None:
    ok = isinstance(values, tuple) and len(values) >= 1 and all(
        is_number(v) and (isinstance(v, int) or not integer) and (v > lo if lo_open else v >= lo) and v <= hi
        for v in values)
    kind = "integers" if integer else "numbers"
    check(ok, name, listy(values), f"must be a non-empty list of {kind} in {'(' if lo_open else '['}{lo}, {hi}]")


def _names(name: str, values, choices: tuple[str, ...] | None = None, empty: bool = True) -> None:
    ok = isinstance(values, tuple) and (empty or len(values) > 0) and all(isinstance(v, str) for v in values)
    ok = ok and len(set(values)) == len(values)
    what = f"names from {', '.join(choices)}" if choices else "names"
    check(ok, name, listy(values), f"must be a list of distinct {what}")
    for v in values:
        if choices:
            check_choice(name, v, choices)
        else:
            check_name(name, v, forbidden="")


@dataclass(frozen=True)
class SAEConfig:
    """Sparse autoencoders on the pretrained models' hidden activations (:mod:`toymodels.audit.sae`).

    * ``variants``: ``relu_l1``, ``topk``, ``batch_topk``, ``jumprelu`` (the default), and ``matryoshka``
      (BatchTopK codes with nested-prefix losses; its sparsity is ``batch_k``); each a compiled sweep.
    * ``dict_sizes``: latents per dictionary; every size is trained for every model (empty: 2 ×
      data.n_features). Sizes share one compiled program: smaller dictionaries mask their extra latents.
    * sparsity, one list per variant, every value trained: ``l1`` (λ of relu_l1), ``l0`` (λ of jumprelu),
      ``k`` (latents per sample of topk), ``batch_k`` (mean latents per sample of batch_topk).
    * ``steps``, ``batch_size``, ``lr`` (Adam), ``chunk_size``, ``log_every``, ``eval_batch_size``: the
      engine's training, as in ``[train]``.
    * dead latents: a latent that has not fired for ``revive_after`` steps is re-initialised (resampled) to
      a random direction, during the first ``revive_until`` fraction of training (``revive_after = 0``:
      never). Latents that never fire on the evaluation batch are reported as dead.
    * ``seeds``: SAEs per (model, size, sparsity), differing in their init only (same activations): the
      grid is model × size × sparsity × seed, one compiled sweep per variant.
    * ``synthbench``: score every SAE by the SynthSAEBench protocol (:mod:`toymodels.audit.synthbench`: MCC over
      the matched pairs, detection precision / recall / F1, uniqueness, beside a random dictionary's) instead
      of the default recovery rows; ``chance_draws`` random dictionaries per (model, width) give its chance
      levels (each costs one Hungarian matching per convention: ~1–5 s at 4096 × 16,384).
    * ``bandwidth`` (ε) and ``threshold_init`` (θ₀) of JumpReLU's straight-through estimator, in units of
      the normalised activations (E‖h‖² = d_hidden).
    """

    variants: tuple[str, ...] = SAE_VARIANTS
    dict_sizes: tuple[int, ...] = ()
    l1: tuple[float, ...] = (0.03,)
    l0: tuple[float, ...] = (0.03,)
    k: tuple[int, ...] = (1,)
    batch_k: tuple[float, ...] = (0.5,)
    steps: int = 5000
    batch_size: int = 1024
    lr: float = 1e-3
    chunk_size: int = 500
    log_every: int = 500
    eval_batch_size: int = 8192
    revive_after: int = 250
    revive_until: float = 0.5
    bandwidth: float = 0.05
    threshold_init: float = 0.1
    seeds: int = 1
    synthbench: bool = False
    chance_draws: int = 200

    def __post_init__(self):
        for f in ("variants", "dict_sizes", "l1", "l0", "k", "batch_k"):
            object.__setattr__(self, f, freeze(getattr(self, f)))
        _names("sae.variants", self.variants, SAE_CHOICES, empty=False)
        if self.dict_sizes != ():
            _numbers("sae.dict_sizes", self.dict_sizes, 0, 100_000, integer=True)
            check(len(set(self.dict_sizes)) == len(self.dict_sizes), "sae.dict_sizes", listy(self.dict_sizes),
                  "must not repeat a size")
        _numbers("sae.l1", self.l1, 0.0, 1e3, lo_open=False)
        _numbers("sae.l0", self.l0, 0.0, 1e3, lo_open=False)
        _numbers("sae.k", self.k, 0, 10_000, integer=True)
        _numbers("sae.batch_k", self.batch_k, 0.0, 10_000.0)
        check_int("sae.steps", self.steps, 0, 10_000_000)
        check_int("sae.batch_size", self.batch_size, 1, 1_000_000)
        check_float("sae.lr", self.lr, 0.0, 10.0, lo_open=True)
        check_int("sae.chunk_size", self.chunk_size, 1, 1_000_000)
        check_int("sae.log_every", self.log_every, 1, 1_000_000)
        check_int("sae.eval_batch_size", self.eval_batch_size, 1, 1_000_000)
        check_int("sae.revive_after", self.revive_after, 0, 10_000_000)
        check_float("sae.revive_until", self.revive_until, 0.0, 1.0)
        check_float("sae.bandwidth", self.bandwidth, 0.0, 100.0, lo_open=True)
        check_float("sae.threshold_init", self.threshold_init, 0.0, 100.0, lo_open=True)
        check_int("sae.seeds", self.seeds, 1, 10_000)
        check(isinstance(self.synthbench, bool), "sae.synthbench", self.synthbench, "must be true or false")
        check_int("sae.chance_draws", self.chance_draws, 1, 100_000)

    def sizes(self, n_features: int) -> tuple[int, ...]:
        """The dictionary sizes: ``dict_sizes``, or (2 n_features,) when it is empty."""
        return self.dict_sizes or (2 * n_features,)

    def sparsities(self, variant: str) -> tuple[float, ...]:
        """The sparsity settings of ``variant``: its λ list, k list or batch_k list."""
        return {"relu_l1": self.l1, "jumprelu": self.l0, "topk": self.k, "batch_topk": self.batch_k,
                "matryoshka": self.batch_k}[variant]


@dataclass(frozen=True)
class AuditConfig:
    """The auditor (:mod:`toymodels.audit`): an SAE of ``[sae]`` used without the true directions.

    * ``variant``: the ``[sae]`` variant the auditor uses. Among its dictionaries of each model the
      auditor keeps, without ground truth, the sparsest (lowest L0) whose explained variance is at least
      ``min_explained_variance`` (the best-reconstructing one when none is).
    * ``labelled``: labelled inputs per class (the target active; each harmful feature active), drawn from
      the pretraining distribution: what a real auditor would have.
    * ``threshold_pp``: with ``[finetune]``, a fine-tune *raises harmful output* when the harmful feature's
      output rate P(x'_j > τ | x_j = 0) rose by more than this many percentage points.
    * ``diff``: crosscoder variants (``relu_l1``, ``batch_topk``, ...) trained on each fine-tune's
      (pretrained, fine-tuned) activation pairs, for model diffing (their sparsity: the first value of the
      variant's ``[sae]`` list; dictionary size: the first of ``sae.dict_sizes``; ``sae.steps`` steps).
      ``amplified``: a feature is *truly amplified* when its column norm ‖W_j‖ grew by more than this fraction.
    * ``filter_regimes``: fine-tuning regimes (with ``defence = "filter_geometric"``) whose filter uses the
      auditor's recovered harmful directions instead of the true ones.
    """

    variant: str = "batch_topk"
    min_explained_variance: float = 0.9
    labelled: int = 64
    threshold_pp: float = 0.25
    diff: tuple[str, ...] = ()
    amplified: float = 0.1
    filter_regimes: tuple[str, ...] = ()

    def __post_init__(self):
        for f in ("diff", "filter_regimes"):
            object.__setattr__(self, f, freeze(getattr(self, f)))
        check_choice("audit.variant", self.variant, SAE_CHOICES)
        check_float("audit.min_explained_variance", self.min_explained_variance, -1e6, 1.0)
        check_int("audit.labelled", self.labelled, 1, 1_000_000)
        check_float("audit.threshold_pp", self.threshold_pp, -100.0, 100.0)
        _names("audit.diff", self.diff, SAE_VARIANTS)
        check_float("audit.amplified", self.amplified, 0.0, 1e3)
        _names("audit.filter_regimes", self.filter_regimes)
