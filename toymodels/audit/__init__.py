"""Auditing without ground truth: SAEs on the toy's activations, the audit, model diffing, risk prediction.

A real auditor never sees the true feature directions. It sees activations, trains a sparse autoencoder
(SAE) on them, guesses which latents are the fine-tuning target and the harmful features from a small
labelled sample, and has to say before fine-tuning whether the harmful output will rise. The toy knows
the truth, so every step can be scored.

* :mod:`.layers`: the layer an audit reads (``toymodels audit --layer l``): its activations h_l and true
  directions (the columns of W_l), for any model;
* :mod:`.sae`: the four SAE variants (ReLU + L1, TopK, BatchTopK, JumpReLU with a straight-through
  estimator) for one instance, and dead-latent revival (an optax wrapper);
* :mod:`.train`: SAEs trained in the engine (vmapped over (model, dictionary size, sparsity), chunked
  ``lax.scan``) on activations generated on the fly from the frozen pretrained models; their evaluation
  and recovery of the true features;
* :mod:`.metrics`: MCC (Hungarian), mean max cosine, their chance levels (random dictionaries), AUROC (Mann–Whitney) with bootstrap intervals,
  precision/recall at k, best-threshold accuracy, calibration;
* :mod:`.dictionary`: a trained dictionary as the auditor holds it; ``weights_sae.npz``;
* :mod:`.auditor`: the audit of one model (target and harmful latents, overlap, predicted spill-over,
  the ranked table; the labelled directions, median contrasts, that separate co-firing neighbours a
  dictionary merges) and its scoring against ground truth;
* :mod:`.crosscoder`: model diffing before/after fine-tuning, scored against the truly amplified features;
* :mod:`.actdiff`: activation diffing: units ranked by the change of their pre-activation on the
  fine-tuning data (sees a feature whose weights did not move), beside the oracle weight diff;
* :mod:`.risk`: candidate risk scores against fine-tuning outcomes; the AUROC table;
* :mod:`.hooks`: the geometric data filter with recovered directions (a plug-in of the lab);
* :mod:`.stage`: all of it as a stage of a run (``[sae]``, ``[audit]``); the ``toymodels audit`` command is
  :mod:`toymodels.audit_command`, above the run I/O.

The package sits beside :mod:`toymodels.defences`: it imports the core and the lab, never the other way.
"""

from .metrics import auroc, auroc_ci, chance_recovery, mcc, mean_max_cosine, precision_recall_at_k
from .stage import Stage

__all__ = ["Stage", "auroc", "auroc_ci", "chance_recovery", "mcc", "mean_max_cosine", "precision_recall_at_k"]
