"""The geometric data filter with recovered directions: a plug-in of the lab (:class:`~toymodels.lab.hooks.WrappedHooks`).

The defences' ``filter_geometric`` (:func:`toymodels.defences.data.filter_keep`) drops the fine-tuning
samples whose pretrained activation h0 = W0 x is closest in cosine to a harmful direction, read from the
true pretrained W. An auditor does not have that direction; it has its SAE's harmful latent. These hooks
are the defences' hooks with one change: for the regimes named in ``audit.filter_regimes`` the filter's
directions (``inst["filter_dirs"]``) are the auditor's recovered ones, rotated with the model when the
fine-tune runs in a rotated orientation. Everything else (the random control at the same budget, the
pairing, the evaluation) is the defences' own, so the comparison differs only in the directions.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from ..config import Config
from ..lab.hooks import FineTuneHooks, WrappedHooks
from ..lab.plan import orientation_matrices


class SAEFilterHooks(WrappedHooks):
    """``inner`` (the defences' hooks) with recovered filter directions; ``dirs``: (n_inst, d, H) unit
    directions per pretrained model, in the model's own (unrotated) hidden space."""

    def __init__(self, cfg: Config, inner: FineTuneHooks, dirs: np.ndarray):
        super().__init__(inner)
        self.cfg, self.dirs = cfg, np.asarray(dirs, np.float32)

    def instance_arrays(self, plan, base) -> dict:
        out = self.inner.instance_arrays(plan, base)
        if "filter_dirs" not in out:
            return out
        names = [plan.regime_name(k) for k in range(plan.n_ft)]
        use = np.array([n in self.cfg.audit.filter_regimes for n in names])
        rec = self.dirs[plan.pretrain_index]                                           # (n_ft, d, H)
        if plan.n_orientations > 1:
            O = orientation_matrices(self.cfg)[plan.orientation_index].astype(np.float32)
            rec = np.einsum("kab,kbh->kah", O, rec)
        current = np.asarray(out["filter_dirs"])
        out["filter_dirs"] = jnp.asarray(np.where(use[:, None, None], rec[:, :, : current.shape[2]], current))
        return out
