"""``toymodels audit RUN_DIR``: audit a finished run's pretrained models from its saved files.

It sits above :mod:`toymodels.io` (beside :mod:`toymodels.experiment`), so it reads runs with the checked
readers there and writes ``audit.md`` with the run's atomic, manifest-registering writer; the audit itself
(:mod:`toymodels.audit`) never touches files.

:func:`run_audit` does the work and :func:`main_audit` is the command (argparse-free: it takes the parsed
arguments). The dictionary comes from, in order: ``--sae-run DIR`` (a run with ``[sae]`` whose pretrained
weights are the same), the run itself when it has ``weights_sae.npz``, or a fresh one trained on the run's
models (``DEFAULT_SAE``, in the engine, seeded by the run's seed, so the audit is reproducible). The
target and the harmful features are the run's ``[features]`` (``--target`` / ``--harmful`` override, by
feature name, e.g. ``f3``). The ranked tables are printed and written to ``RUN_DIR/audit.md`` (or
``--out DIR``); nothing else in the run directory changes.

``--layer l`` audits layer l of a multi-layer model (the deep TMS: h_l = W_l x_{l−1}, scored against the
columns of W_l; :mod:`toymodels.audit.layers`). The default is ``W``'s layer (the planted one; layer 1 of a
single-layer model), written to ``audit.md`` as before; another layer's audit goes to ``audit-layer{l}.md``
(:func:`file_name`), so audits of several layers sit side by side. A dictionary of the run (``[sae]``,
``--sae-run``) read ``W``'s layer, so another layer's audit trains its own.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import jax
import numpy as np
from flax import nnx

from .audit import actdiff, auditor, dictionary, layers
from .audit import stage as st
from .audit import train as T
from .config import ConfigError
from .config.checks import check_choice
from .config.sae import SAE_VARIANTS, AuditConfig, SAEConfig
from .core.models import build, init_instances, init_std
from .core.planting import harmful_indices, names
from .errors import RunFileError
from .io import runs

# The dictionary trained when the run has none: BatchTopK, 2 latents per feature, three sparsities (the
# auditor keeps the sparsest one that explains >= 90% of the variance, :func:`.stage.select`).
DEFAULT_SAE = SAEConfig(variants=("batch_topk",), batch_k=(0.25, 0.5, 1.0), steps=4000)


def load(path: str | Path) -> runs.Run:
    """A finished run (:func:`toymodels.io.runs.load`: every file checked, one-line errors); a suite is not a
    run: name a member."""
    path = Path(path)
    if path.is_dir() and (path / "suite.json").exists() and not (path / "config.json").exists():
        suite = runs.read_json(path / "suite.json", path)
        members = suite.get("members", []) if isinstance(suite, dict) else []
        members = members if isinstance(members, list) else []
        raise RunFileError(path, f"is a suite; audit one of its members ({', '.join(map(str, members))})")
    return runs.load(path)


def check_layer(cfg, layer: int | None) -> tuple[int, int, bool]:
    """(layer, n_layers, is W's layer) of ``--layer`` for the run config ``cfg`` (None: W's layer), checked
    on one model built from the config (:func:`.audit.layers.check_layer`: one-line ConfigError)."""
    std = init_std(cfg.model.init, cfg.data.n_features, cfg.model.d_hidden, cfg.n_inst)
    model = build(cfg.model, cfg.data.n_features, std=std, rngs=nnx.Rngs(params=0))
    checked = layers.check_layer(model, layer)
    return checked, layers.n_layers(model), checked == layers.default_layer(model)


def file_name(cfg, layer: int | None) -> str:
    """The audit's file: ``audit.md`` at W's layer (what every audit wrote before ``--layer``), else
    ``audit-layer{l}.md``. Checks ``layer`` first."""
    checked, _, default = check_layer(cfg, layer)
    return "audit.md" if default else f"audit-layer{checked}.md"


def output_name(run_dir: str | Path, layer: int | None) -> str:
    """:func:`file_name` of the run in ``run_dir`` (the CLI's check of ``--layer`` and ``--out`` before
    anything trains or is written)."""
    return file_name(load(run_dir).config, layer)


def load_models(run: runs.Run):
    """(graphdef, params) of a loaded run's pretrained models (``weights.npz``)."""
    cfg = run.config
    graphdef, params = init_instances(cfg.model, cfg.data.n_features, cfg.n_inst, jax.random.key(0))
    nnx.replace_by_pure_dict(params, {k: jax.numpy.asarray(v) for k, v in run.weights.items()})
    return graphdef, params


def _sae_source(run: runs.Run, sae_run: str | Path | None, variant: str):
    """(arrays, rows, where) of an existing dictionary, or None when the run has none."""
    src = None
    if sae_run is not None:
        src = load(sae_run)
        if src.config.sae is None or not (src.path / "weights_sae.npz").exists():
            raise RunFileError(src.path, "has no SAEs (no [sae] section / weights_sae.npz): pass a run made with [sae]")
        if set(src.weights) != set(run.weights) or not all(np.array_equal(src.weights[k], run.weights[k])
                                                           for k in run.weights):
            raise ConfigError("--sae-run", str(sae_run), "its SAEs were trained on other models: its weights.npz differs "
                                                     "from the audited run's")
    elif run.config.sae is not None and (run.path / "weights_sae.npz").exists():
        src = run
    if src is None:
        return None
    arrays = runs.read_npz(src.path / "weights_sae.npz", src.path)
    try:
        variants = dictionary.variants_in(arrays)
    except (KeyError, ValueError, TypeError, IndexError):
        raise RunFileError(src.path / "weights_sae.npz", "does not hold the SAE arrays toymodels writes") from None
    if variant not in variants:
        raise ConfigError("--variant", variant, f"{src.path} has SAEs of {', '.join(variants)}")
    sae = src.summary.get("sae")
    rows = sae.get("instances") if isinstance(sae, dict) else None
    if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
        raise RunFileError(src.path / "summary.json", "has no 'sae' section with an 'instances' list of objects: not "
                                                      "the summary.json of a toymodels run with [sae]")
    return arrays, rows, str(src.path)


def run_audit(run_dir: str | Path, sae_run: str | Path | None = None, *, variant: str | None = None,
              target: str | None = None, harmful: list[str] | None = None, out_dir: str | Path | None = None,
              progress: bool = True, layer: int | None = None) -> tuple[str, list[Path]]:
    """Audit every pretrained model of the run in ``run_dir`` (see the module docstring) at ``layer`` (None:
    W's layer). Returns the printed text and the files written ([audit.md] or [audit-layer{l}.md])."""
    run = load(run_dir)
    cfg = run.config
    layer, n_layers, at_w = check_layer(cfg, layer)
    if not at_w and sae_run is not None:
        raise ConfigError("--sae-run", str(sae_run), f"its SAEs read the activations of W's layer, not layer {layer}; "
                                                     f"drop --sae-run (--layer {layer} trains its own SAEs)")
    a_cfg = cfg.audit or AuditConfig()
    if variant is not None:
        check_choice("--variant", variant, SAE_VARIANTS)
    elif cfg.audit is None and cfg.sae is not None and sae_run is None:
        variant = cfg.sae.variants[0]  # the run's own first dictionary
    variant = variant or a_cfg.variant
    all_names = names(cfg)
    target = target or (all_names[cfg.penalty_target()] if cfg.penalty_target() is not None else None)
    harmful = list(harmful or ([all_names[j] for j in harmful_indices(cfg)] if cfg.features else []))
    if target is None or not harmful:
        raise RunFileError(run.path / "config.json", "names no fine-tuning target and harmful feature (a [features] "
                                                     "section with harmful = [...] and a target): the audit needs both "
                                                     "for its labelled sample")
    for flag, v in [("--target", target)] + [("--harmful", h) for h in harmful]:
        if v is None or v not in all_names:
            raise ConfigError(flag, v, f"must be a feature name of the run ({', '.join(all_names[:8])}"
                                       f"{', ...' if len(all_names) > 8 else ''}); the run has no [features] to say")
    if not harmful:
        raise ConfigError("--harmful", None, "name at least one harmful feature (the run's [features] tags none)")
    if target in harmful:
        raise ConfigError("--target", target, "must not be one of the harmful features")
    graphdef, params = load_models(run)
    found = _sae_source(run, sae_run, variant) if at_w else None
    at = None if at_w else layer   # W's layer reads hidden(x) exactly as before --layer existed
    if found is None:
        sae_cfg = dataclasses.replace(DEFAULT_SAE, variants=(variant,))
        cfg = dataclasses.replace(cfg, sae=sae_cfg, audit=None, finetune=None)
        scale = T.activation_scale(cfg, graphdef, params, at)
        tr = T.train_variant(cfg, graphdef, params, variant, scale, progress=progress, layer=at)
        ev = T.evaluate(cfg, graphdef, tr)
        arrays = dictionary.to_arrays({variant: tr}, {variant: ev}, scale, T.kmax(cfg), cfg.sae.bandwidth)
        rows = st.sae_rows(cfg, layers.true_directions_all(graphdef, params, at), {variant: tr}, {variant: ev})
        where = f"trained here ({variant}, {len(rows)} dictionaries, {cfg.sae.steps} steps)"
    else:
        arrays, rows, where = found
    audits = st.audit_models(cfg, graphdef, params, arrays, rows, variant=variant, target=target, harmful=harmful,
                             min_ev=a_cfg.min_explained_variance, labelled=a_cfg.labelled, layer=at)
    head = (f"audit of {run.path}: target '{target}', harmful {', '.join(repr(h) for h in harmful)}; SAEs {where}. "
            f"{st.AUDIT_NOTE}")
    if n_layers > 1:
        head = f"{head}\n\nLayer audited: {layers.describe(layer, n_layers)}."
    text = "\n\n".join([head] + [auditor.format_audit(a, st.model_title(cfg, a)) for a in audits])
    score = st.scoring_summary(audits)
    if score.get("n"):
        text += "\n\n" + score_text(score)
    diff = _activation_diff(run, cfg, audits, arrays, variant, harmful, all_names, graphdef, params, at)
    if diff is not None:
        text += "\n\n" + diff
    at_layer = f" (layer {layer} of {n_layers})" if n_layers > 1 else ""
    title = f"# audit: {cfg.name}{at_layer}"
    md = "\n\n".join([title, head] + [auditor.markdown_audit(a, st.model_title(cfg, a)) for a in audits]
                     + [f"## over the models\n\n```\n{score_text(score)}\n```"] * bool(score.get("n"))
                     + [f"## activation diffing{at_layer}\n\n```\n{diff}\n```"] * (diff is not None))
    out = Path(out_dir) if out_dir is not None else run.path
    out.mkdir(parents=True, exist_ok=True)
    name = "audit.md" if at_w else f"audit-layer{layer}.md"   # (file_name): another layer's beside audit.md
    path = runs.write_text(out / name, md + "\n")  # atomic; in the run's manifest when written there
    return text, [path]


def _activation_diff(run: runs.Run, cfg, audits, arrays, variant, harmful, all_names, graphdef, params,
                     layer: int | None) -> str | None:
    """The activation-diffing table (:mod:`toymodels.audit.actdiff`) of a run with fine-tunes (its
    weights_pretrained.npz and weights_finetuned.npz), else None. The tied single-layer models by their
    formulas (as before); the families (deep, ...) through the model itself at ``layer`` (None: W's)."""
    pre_f, post_f = run.path / "weights_pretrained.npz", run.path / "weights_finetuned.npz"
    tied = cfg.model.kind in ("relu_output", "linear")
    if run.config.finetune is None or not (pre_f.exists() and post_f.exists()) or \
            not (tied or cfg.model.kind not in T.SINGLE_LAYER_KINDS):
        return None
    units = []
    for a in audits:
        dic = dictionary.dictionary(arrays, variant, a["sae"]["position"])
        units.append(actdiff.audit_units(a, np.asarray(dic.params["W_enc"])[:, : dic.size])[0])
    ft_cfg = dataclasses.replace(cfg, finetune=run.config.finetune)
    pre, post = runs.read_npz(pre_f, run.path), runs.read_npz(post_f, run.path)
    n_ft = next(iter(pre.values())).shape[0] if pre else 0
    for f, w in ((pre_f, pre), (post_f, post)):  # every leaf, with the fine-tunes' leading axis
        runs.check_weights(f, w, cfg, n_inst=n_ft)
    model = {} if tied else {"graphdef": graphdef, "template": jax.tree.map(lambda a: a[0], params), "layer": layer}
    if not tied and not (set(pre) == set(post) == set(run.weights)):
        raise RunFileError(post_f, f"holds the leaves {sorted(post)}, weights_pretrained.npz {sorted(pre)}, weights.npz "
                                   f"{sorted(run.weights)}: not the fine-tuned models of this run")
    res = actdiff.activation_diff(ft_cfg, units, pre, post, (cfg.audit or AuditConfig()).amplified,
                                  [all_names.index(h) for h in harmful], **model)
    return actdiff.format_table(res, all_names)


def score_text(score: dict) -> str:
    """The closing lines of an audit: the labelled directions (headline), then the dictionary, over the models."""
    out = []
    if "probe_target_found" in score:
        out.append(f"over {score['n']} models, labelled directions: target found {score['probe_target_found']:.0%}, "
                   f"harmful found {score['probe_harmful_found']:.0%} (within {score['found_deg']:g}° and nearest; "
                   f"chance {score['found_chance']:.1%} each; largest angle {score['probe_max_angle']:.1f}°); verdict "
                   f"'raise' in {score['probe_raise']:.0%}")
    out.append(f"over {score['n']} models, dictionary: target found {score['target_found']:.0%}, harmful found "
               f"{score['harmful_found']:.0%}, harmful ranked first {score['harmful_ranked_first']:.0%} (truly "
               f"first: {score['harmful_truly_first']:.0%}), mean |cos error| {score['mean_abs_cos_error']:.3f}")
    return "\n".join(out)


def main_audit(args) -> int:
    """The ``audit`` command: ``args`` has ``run_dir``, ``sae_run`` (or None) and ``variant`` (or None);
    optionally ``out``, ``target``, ``harmful`` (a list), ``layer`` (an int) and ``quiet``. Prints the tables and the written
    files; bad input raises a one-line :class:`~toymodels.errors.ConfigError` / ``RunFileError``."""
    sae_run = getattr(args, "sae_run", None) or getattr(args, "sae", None)
    text, paths = run_audit(args.run_dir, sae_run, variant=getattr(args, "variant", None),
                            target=getattr(args, "target", None), harmful=getattr(args, "harmful", None),
                            out_dir=getattr(args, "out", None), progress=not getattr(args, "quiet", False),
                            layer=getattr(args, "layer", None))
    print(text)
    for p in paths:
        print(f"  written: {p}")
    return 0


__all__ = ["DEFAULT_SAE", "file_name", "main_audit", "output_name", "run_audit"]

