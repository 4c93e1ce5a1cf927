"""A whole run's config: the sections together, the checks across them, and its (de)serialisation.

A config is the single source of truth for a run. It is written, fully resolved, to ``config.json``
in the run directory, and ``Config.from_dict(json.load(...))`` rebuilds it exactly.
"""

from __future__ import annotations

import dataclasses
import math
import os
import stat
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..directions import planted_directions
from ..errors import ConfigError
from .checks import array_spec, check, check_int, check_name, freeze, listy
from .attack import SET_DATASETS, TEACHER_DATASETS, AttackConfig
from .sae import AuditConfig, SAEConfig
from .model import ROTATION_INVARIANT_KINDS, UNIT_INIT_KINDS, ModelConfig
from .schema import MAX_BATCH, DataConfig, FeaturesConfig, FineTuneConfig, TrainConfig
from .serde import MAX_DEPTH, build, optional_section, set_dotted, to_jsonable, too_deep
from .unused import check_finetune, check_optimizer_fields

# core.pretrain.EVAL_CHUNK_ELEMENTS: numbers in one evaluation chunk over all instances (config imports no JAX)
EVAL_CHUNK_ELEMENTS = 1 << 24


def feature_names(features: FeaturesConfig | None, n_features: int) -> list[str]:
    """Names of all features: the named ones first, then ``f<i>`` for the rest."""
    named = list(features.names) if features is not None else []
    return named + [f"f{i}" for i in range(len(named), n_features)]


@dataclass(frozen=True)
class Config:
    """A whole run. ``n_inst`` is the number of *settings*; each trains ``train.restarts`` times
    and the lowest-loss restart is kept."""

    name: str = "custom"
    seed: int = 0
    n_inst: int = 10
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    # Optional sections of the fine-tuning lab: named features / planted geometry, and fine-tuning.
    features: FeaturesConfig | None = None
    finetune: FineTuneConfig | None = None
    # Optional sections of the auditor (toymodels.audit): SAEs on the hidden activations, and their use.
    sae: SAEConfig | None = None
    audit: AuditConfig | None = None
    # Optional section of the attack (toymodels.attack): benign-looking fine-tuning sets.
    attack: AttackConfig | None = None
    plots: tuple[str, ...] = ()
    notes: str = ""
    # Free-form, JSON-able metadata for plots (axis values of a grid, labels...). Not used by training.
    meta: Any = None

    def __post_init__(self):
        object.__setattr__(self, "plots", freeze(self.plots))
        check_name("name", self.name)
        ok = isinstance(self.plots, tuple) and all(isinstance(x, str) for x in self.plots)
        check(ok, "plots", listy(self.plots), 'must be a list of figure names, e.g. ["loss"]')
        for x in self.plots:
            check_name("plots", x)
        check_int("seed", self.seed, 0, 2**31 - 1)
        check_int("n_inst", self.n_inst, 1, 1_000_000)
        check_optimizer_fields(self.train, "train")
        if self.finetune is not None:
            check_finetune(self.finetune)
        self._check_eval_chunk()
        p = array_spec("data.feature_probability", self.data.feature_probability, 0.0, 1.0, True)
        imp = array_spec("data.importance", self.data.importance, 0.0, 1e6, False)
        n, k = self.data.n_features, self.n_inst
        check(p.ndim != 1 or p.shape[0] == k, "data.feature_probability", self.data.feature_probability,
               f"a 1-D list gives one probability per instance, so needs n_inst={k} entries")
        check(imp.ndim != 1 or imp.shape[0] == n, "data.importance", self.data.importance,
               f"a 1-D list gives one importance per feature, so needs n_features={n} entries")
        for nm, a, v in (("data.feature_probability", p, self.data.feature_probability),
                         ("data.importance", imp, self.data.importance)):
            check(a.ndim != 2 or a.shape == (k, n), nm, v, f"a 2-D list must have shape (n_inst, n_features)=({k}, {n})")
        pp = self.feature_probability()
        start = 0  # a set shares one activity draw at its first feature, so its members need one p
        for kind in ("correlated", "anticorrelated"):
            for s in getattr(self.data, kind):
                block = pp[:, start:start + s]
                check(bool(np.all(block == block[:, :1])), "data.feature_probability", self.data.feature_probability,
                       f"features {start}..{start + s - 1} form a {kind} set, so they need equal probabilities")
                start += s
        start = sum(self.data.correlated)  # anticorrelated sets follow the correlated ones
        for s in self.data.anticorrelated:
            worst = float(pp[:, start].max()) * s
            check(worst <= 1.0 + 1e-9, "data.anticorrelated", list(self.data.anticorrelated),
                   f"a set of size {s} needs size*feature_probability <= 1, got {worst:.3g}")
            start += s
        lam = np.asarray(self.train.penalty_strength, np.float64)
        check(lam.ndim == 0 or lam.shape[0] == k, "train.penalty_strength", self.train.penalty_strength,
               f"a 1-D list gives one λ per instance, so needs n_inst={k} entries")
        if self.train.penalty == "targeted_cos":
            f = self.features
            check(f is not None and len(f.harmful) > 0 and self.penalty_target() is not None, "train.penalty",
                   self.train.penalty, "targeted_cos needs a [features] section with a harmful feature and a "
                                       "target (finetune.target, or a named feature not tagged harmful)")
        if self.model.kind == "abs_computation":
            check(self.data.task == "abs", "data.task", self.data.task,
                   "model.kind='abs_computation' computes |x|, so data.task must be 'abs'")
        if self.model.route_pair != "learned":  # moe: the route of features 0 and 1 is pinned
            check(self.data.n_features >= 2, "model.route_pair", self.model.route_pair,
                  f"pins the routes of features 0 and 1, so needs data.n_features >= 2 (got {self.data.n_features})")
        if self.model.kind == "residual_mlp":
            check(self.data.task == "resid_relu", "data.task", self.data.task,
                   "model.kind='residual_mlp' is trained on y = x + ReLU(x), so data.task must be 'resid_relu'")
        if self.features is not None:
            self._check_features()
        if self.finetune is not None:
            self._check_finetune()
        if self.sae is not None or self.audit is not None:
            self._check_audit()
        self._check_attack()

    def _check_attack(self) -> None:
        """[attack] goes with regimes that use its sets, and those need it, task data, and one kind of
        objective per run (a teacher's labels or the lab's objective, not both)."""
        regs = self.finetune.regimes if self.finetune is not None else ()
        used = [r for r in regs if r.dataset != "stream"]
        if self.attack is not None:
            check(bool(used), "attack", "[attack]", "is used by finetune.regimes with dataset = random, selected, "
                  "optimised, teacher_same or teacher_other; no regime names one")
        for r in used:
            check(self.attack is not None, "finetune.regimes.dataset", r.dataset,
                  f"regime {r.name!r} needs an [attack] section (toymodels.attack builds its sets)")
            check(r.data == "task", "finetune.regimes.data", r.data,
                  f"regime {r.name!r} has dataset={r.dataset!r}, whose samples are benign task data, so data must be 'task'")
        kinds = {"stream" if r.dataset == "stream" else "teacher" if r.dataset in TEACHER_DATASETS else "set"
                 for r in regs}
        check(len(kinds) <= 1, "finetune.regimes.dataset", [r.dataset for r in regs],
              f"one run uses one kind of data: the stream, fixed sets ({', '.join(SET_DATASETS)}) or a teacher's "
              f"labels ({', '.join(TEACHER_DATASETS)}); put the others in another run (a suite member)")
        if "teacher" in kinds:
            check(all(r.defence == "none" for r in regs), "finetune.regimes.defence", [r.defence for r in regs],
                  "the subliminal control (teacher_same/teacher_other) runs undefended")
        if any(r.dataset in TEACHER_DATASETS for r in regs):
            check(self.n_inst >= 2, "n_inst", self.n_inst, "teacher_other takes its teacher from another pretrained model, so needs n_inst >= 2")
            check(self.finetune.trainable != "lora", "finetune.trainable", self.finetune.trainable,
                  "the subliminal control fine-tunes the student's own weights; use 'all' or 'W'")

    def _check_eval_chunk(self) -> None:
        """``train.eval_batch_size`` is drawn in chunks of at most 2^24 numbers over all instances
        (``core.pretrain._eval_chunks``, mirrored here without JAX); a chunk is one data batch, so it must
        also obey data.batch_size's limit (a larger one used to fail after training)."""
        B, n = self.train.eval_batch_size, self.data.n_features
        per = max(1, EVAL_CHUNK_ELEMENTS // (self.n_inst * n))  # the kept instances: the widest chunks
        c = B if B <= per else math.ceil(B / math.ceil(B / per))
        check(c <= MAX_BATCH, "train.eval_batch_size", B,
              f"must be at most {MAX_BATCH} here: with n_inst={self.n_inst} and data.n_features={n} it is drawn as "
              f"batches of {c} samples, more than a data batch may hold ({MAX_BATCH})")

    def _check_features(self) -> None:
        f, n, k, m = self.features, self.data.n_features, self.n_inst, self.model.d_hidden
        check(len(f.names) <= n, "features.names", list(f.names),
               f"names {len(f.names)} features but data.n_features={n}")
        clash = set(f.names) & set(feature_names(None, n)[len(f.names):])
        check(not clash, "features.names", list(f.names), f"{min(clash or {'?'})!r} is the automatic "
                                                           f"name of another feature")
        if f.geometry == "free":
            return
        # raises ConfigError if the spec cannot be realised; one spec shared by every instance is checked
        # once (building it for each of a million instances took half a minute)
        spec = f.angles if f.angles is not None else f.cosines
        single = np.ndim(spec) == (1 if f.angles is not None else 2)
        planted_directions(f, m, 1 if single else k)
        norms = np.asarray(f.norms, np.float64)
        ok = norms.ndim == 0 or norms.shape in ((len(f.names),), (k, len(f.names)))
        check(ok, "features.norms", listy(f.norms),
               f"must be a scalar, one norm per named feature ({len(f.names)}), or shape (n_inst, {len(f.names)})")

    def _check_finetune(self) -> None:
        ft = self.finetune
        if ft.from_run and self.features is None:
            return  # checked again once merged with the source run's config (experiment.resolve_from_run)
        check(self.features is not None and len(self.features.harmful) > 0, "finetune", "[finetune]",
               "needs a [features] section that names the target and tags at least one feature as harmful")
        names = feature_names(self.features, self.data.n_features)
        for where, t in [("finetune.target", ft.target)] + [("finetune.regimes.target", r.target)
                                                               for r in ft.regimes if r.target]:
            shown = ", ".join(names[:8]) + (", ..." if len(names) > 8 else "")
            check(t in names, where, t, f"must be a feature name ({shown})")
            check(t not in self.features.harmful, where, t, "the fine-tuning target must not be tagged harmful")
        if ft.trainable == "lora":
            check(self.model.kind in ("relu_output", "linear", "relu_hidden"), "finetune.trainable", ft.trainable,
                   "lora adapts the tied W of relu_output, linear and relu_hidden models")
            top = min(self.model.d_hidden, self.data.n_features)
            check(ft.lora_rank <= top, "finetune.lora_rank", ft.lora_rank,
                   f"must be <= min(d_hidden, n_features) = {top}")
        if ft.orientations > 1:
            check(self.model.kind in ROTATION_INVARIANT_KINDS, "finetune.orientations", ft.orientations,
                   f"rotating the hidden space leaves only {', '.join(ROTATION_INVARIANT_KINDS)} models unchanged; "
                   f"model.kind={self.model.kind!r} has a privileged hidden basis")
        # the lab thresholds the output's pre-activation; a mixture's output is Σ_e w_e ReLU(p_e), which is
        # ReLU(Σ_e w_e p_e) only when one expert is active
        check(not (self.model.kind == "moe" and self.model.k_active > 1), "model.k_active", self.model.k_active,
              "fine-tuning a mixture of experts needs model.k_active = 1 (the lab's rates read one pre-activation)")
        if ft.layer:
            L = self.model.n_layers if self.model.kind == "deep" else 1
            check(self.model.kind == "deep" and ft.layer <= L, "finetune.layer", ft.layer,
                  f"0 (the output) or a layer 1..model.n_layers={L} of a deep model (model.kind={self.model.kind!r})")
        for r in ft.regimes:  # these act on the full W and b_final, which LoRA freezes
            check(not (ft.trainable == "lora" and r.defence in ("freeze_harmful", "grad_projection")),
                   "finetune.regimes.defence", r.defence, "acts on W itself; not available with trainable='lora'")

    def _check_audit(self) -> None:
        """[sae] dictionaries fit the model; [audit] needs [sae] with its variant, a target and a harmful
        feature, and names only regimes that exist (toymodels.audit)."""
        n = self.data.n_features
        if self.sae is not None:
            sizes = self.sae.sizes(n)
            check(all(k <= min(sizes) for k in self.sae.k) or "topk" not in self.sae.variants, "sae.k",
                  list(self.sae.k), f"must be at most the smallest dictionary size ({min(sizes)})")
            # the protocol scores against W's columns with non-negative features (detection: x_j > 0)
            check(not self.sae.synthbench or (self.model.kind in UNIT_INIT_KINDS and self.data.task == "reconstruct"),
                  "sae.synthbench", self.sae.synthbench, f"needs model.kind in ({', '.join(UNIT_INIT_KINDS)}) and "
                  f"data.task = reconstruct; got {self.model.kind} / {self.data.task}")
        a = self.audit
        if a is None:
            return
        check(self.sae is not None and a.variant in self.sae.variants, "audit.variant", a.variant,
              "must be one of the [sae] section's variants (the auditor uses a dictionary the run trains)")
        check(self.features is not None and len(self.features.harmful) > 0 and self.penalty_target() is not None,
              "audit", "[audit]", "needs a [features] section with a harmful feature and a target (finetune.target, "
                                  "or a named feature not tagged harmful)")
        for v in a.diff:
            check(v in self.sae.variants, "audit.diff", list(a.diff), "crosscoder variants must be [sae] variants "
                                                                     "(they take its sparsity settings)")
        check(not a.diff or self.finetune is not None, "audit.diff", list(a.diff),
              "diffs the models before and after fine-tuning, so it needs a [finetune] section")
        regimes = {r.name: r for r in self.finetune.regimes} if self.finetune is not None else {}
        for name in a.filter_regimes:
            check(name in regimes and regimes[name].defence == "filter_geometric", "audit.filter_regimes", name,
                  "must name a finetune regime whose defence is 'filter_geometric'")

    def feature_names(self) -> list[str]:
        """All feature names: ``features.names`` first, then ``f<i>``."""
        return feature_names(self.features, self.data.n_features)

    def penalty_target(self) -> int | None:
        """Index of the target of the ``targeted_cos`` pretraining penalty: ``finetune.target``, else the
        first named feature not tagged harmful; None when there is none."""
        if self.features is None:
            return None
        if self.finetune is not None and self.finetune.target in self.feature_names():
            return self.feature_names().index(self.finetune.target)
        return next((i for i, nm in enumerate(self.features.names) if nm not in self.features.harmful), None)

    # --- resolved per-instance arrays ---------------------------------------------------------
    def feature_probability(self) -> np.ndarray:
        """(n_inst, n_features) float32 array of P(feature active)."""
        a = np.asarray(self.data.feature_probability, np.float64)
        if a.ndim == 1:
            a = a[:, None]
        if self.data.power_law > 0:  # p_i = p (i+1)^(−α) (toymodels.core.scale_data)
            a = a * np.arange(1, self.data.n_features + 1, dtype=np.float64) ** -float(self.data.power_law)
        return np.broadcast_to(a, (self.n_inst, self.data.n_features)).astype(np.float32)

    def importance(self) -> np.ndarray:
        """(n_inst, n_features) float32 array of per-feature loss weights."""
        a = np.asarray(self.data.importance, np.float64)
        return np.broadcast_to(a, (self.n_inst, self.data.n_features)).astype(np.float32)

    # --- (de)serialisation ----------------------------------------------------------------------
    def to_dict(self) -> dict:
        return to_jsonable(dataclasses.asdict(self))

    @classmethod
    def from_dict(cls, d: dict) -> Config:
        return build(cls, d, prefix="")

    def replace(self, **overrides: Any) -> Config:
        """Return a copy with dotted-key overrides applied, e.g. ``replace(**{"train.steps": 100})``."""
        d = self.to_dict()
        for key, value in overrides.items():
            head, section = key.split(".")[0], optional_section(Config, key.split(".")[0])
            if "." in key and section is not None and d.get(head) is None:
                d[head] = to_jsonable(dataclasses.asdict(section()))  # absent optional section: its defaults
            set_dotted(d, key, value)
        return Config.from_dict(d)


def load_toml(path: str | Path) -> Config:
    """Load a config from a TOML file. Missing fields take their defaults."""
    return Config.from_dict(read_toml(path))


def read_toml(path: str | Path) -> dict:
    """The table of a TOML file; unreadable, not UTF-8 or not TOML: a one-line ConfigError naming it."""
    path = Path(path)
    try:
        table = tomllib.loads(_read_config_file(path).decode("utf-8"))
    except RecursionError:
        raise ConfigError(str(path), "<file>", "nests arrays or tables too deep; a toymodels config nests a few "
                                               "levels") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(str(path), "<file>", f"is not valid TOML: {str(e).splitlines()[0]}") from None
    except UnicodeDecodeError as e:
        raise ConfigError(str(path), "<file>", f"is not UTF-8 text (byte {e.start}); TOML files are UTF-8") from None
    except OSError as e:
        raise ConfigError(str(path), "<file>", f"cannot be read ({e.strerror or type(e).__name__})") from None
    if too_deep(table):
        raise ConfigError(str(path), "<file>", f"nests deeper than {MAX_DEPTH} levels; a toymodels config nests a few")
    return table


MAX_TOML_BYTES = 16 * 2**20   # a config is a few KB


def _read_config_file(path: Path) -> bytes:
    """A config file's bytes: a regular file only (a FIFO would block the read forever), at most
    MAX_TOML_BYTES."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ConfigError(str(path), "<file>", "is not a regular file (a FIFO, device or directory)")
        if st.st_size > MAX_TOML_BYTES:
            raise ConfigError(str(path), "<file>", f"is {st.st_size} bytes; a config file is at most {MAX_TOML_BYTES}")
        return os.read(fd, MAX_TOML_BYTES + 1)
    finally:
        os.close(fd)
