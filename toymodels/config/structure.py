"""Validation of ``[data]``'s SynthSAEBench-style structure fields (the generator is
:mod:`toymodels.core.scale_data`):

* ``power_law`` α >= 0: feature i fires with probability p·(i+1)^(−α);
* ``correlation`` ρ in [0, 1] with ``correlation_groups`` G >= 1: feature i (group i mod G) uses its
  group's shared activity draw with probability ρ;
* ``parents`` P and ``children`` C: features 0 … P−1 are parents of C children each (features
  P + a·C + j), which fire only with their parent.

They do not combine with the ``correlated`` / ``anticorrelated`` feature sets.
"""

from __future__ import annotations

from .checks import check, check_float, check_int


def check_structure(self) -> None:
    """One-line ConfigError naming the first bad field of a DataConfig's structure options (and of the
    feature sets' total size)."""
    used = sum(self.correlated) + sum(self.anticorrelated)
    check(used <= self.n_features, "data.correlated", list(self.correlated),
          f"correlated + anticorrelated set sizes sum to {used}, more than n_features={self.n_features}")
    check_float("data.power_law", self.power_law, 0.0, 10.0)
    check_float("data.correlation", self.correlation, 0.0, 1.0)
    check_int("data.correlation_groups", self.correlation_groups, 0, self.n_features)
    check(self.correlation == 0 or self.correlation_groups >= 1, "data.correlation", self.correlation,
          "needs data.correlation_groups >= 1 (the groups that share activity)")
    check_int("data.parents", self.parents, 0, self.n_features)
    check_int("data.children", self.children, 0, self.n_features)
    check(self.parents * (1 + self.children) <= self.n_features, "data.children", self.children,
          f"parents x (1 + children) = {self.parents * (1 + self.children)} must be <= n_features={self.n_features}")
    rich = self.power_law > 0 or self.correlation > 0 or self.parents > 0
    check(not (rich and (self.correlated or self.anticorrelated)), "data.correlated",
          list(self.correlated or self.anticorrelated),
          "feature sets cannot be combined with power_law, correlation or parents; use one or the other")
