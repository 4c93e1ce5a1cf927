"""A run directory as tidy pandas tables: long format, named columns, no positional lists.

    import toymodels as tm
    r = tm.load_run("results/analogy-15deg")
    r.metrics      # one row per (logged step, engine instance[, harmful feature], metric)
    r.settings     # one row per pretraining setting (the kept restart): its summary numbers
    r.finetunes    # one row per (fine-tune, harmful feature): before/after numbers, flattened
    r.config, r.summary, r.path

    s = tm.load_run("results/robustness")    # a suite: the same tables, each with a "member" column
    s.members["robustness-weak"].finetunes   # one member's tables

``metrics.jsonl`` stores per-instance lists; here each value gets its own row with the columns that say
what the instance is: ``phase`` (pretrain/finetune), ``kind`` (loss/probe), ``step``, ``instance`` (the
engine's flat index), and for pretraining ``setting`` and ``restart`` (instance = setting · restarts +
restart), for fine-tuning ``pretrained`` (the pretrained model), ``regime``, ``optimizer``,
``orientation``; probe metrics about harmful features carry ``feature``. pandas is an optional
dependency, in the ``notebook`` extra (``pip install -e ".[notebook]"`` from a clone); the rest of toymodels
does not need it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import runs


def _pandas():
    try:
        import pandas
    except ImportError:
        raise ImportError("toymodels.load_run needs pandas, which is in the 'notebook' extra: "
                          "pip install -e \".[notebook]\" (from a clone of toymodels) or pip install pandas") from None
    return pandas


@dataclass
class RunTables:
    """A loaded run: tidy DataFrames plus the config and raw summary."""

    path: Path
    config: Any
    summary: dict
    metrics: Any
    settings: Any
    finetunes: Any


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, key + "_"))
        elif not isinstance(v, list):
            out[key] = v
    return out


def metrics_rows(run: runs.Run) -> list[dict]:
    """metrics.jsonl exploded into long rows (see the module docstring)."""
    cfg, ft = run.config, run.summary.get("finetune")
    r = cfg.train.restarts
    harmful = ft["harmful"] if ft else []
    who = {}
    if ft:
        for e in ft["instances"]:
            who[e["index"]] = {"pretrained": e["pretrain_instance"], "regime": e["regime"],
                               "optimizer": e.get("optimizer"), "orientation": e.get("orientation", 0)}
    out = []
    for row in run.metrics:
        phase, kind = row.get("phase", "pretrain"), row.get("kind", "loss")
        base = {"phase": phase, "kind": kind, "step": row["step"]}
        for metric, values in row.items():
            if not isinstance(values, list):
                continue
            for k, v in enumerate(values):
                ident = ({"instance": k, "setting": k // r, "restart": k % r} if phase == "pretrain"
                         else {"instance": k, **who.get(k, {})})
                if isinstance(v, list):  # a probe metric per harmful feature
                    out += [{**base, **ident, "feature": harmful[h], "metric": metric, "value": x}
                            for h, x in enumerate(v)]
                else:
                    out.append({**base, **ident, "metric": metric, "value": v})
    return out


@dataclass
class SuiteTables:
    """A loaded suite: each member's :class:`RunTables`, and their tables stacked with a ``member``
    column first; ``summary`` is the suite's own summary.json (None if it writes none)."""

    path: Path
    suite: dict
    summary: dict | None
    members: dict[str, RunTables]
    metrics: Any
    settings: Any
    finetunes: Any


def load_run(path: str | Path) -> RunTables | SuiteTables:
    """Load a finished run directory as tidy tables (:class:`RunTables`); a suite directory (one with
    ``suite.json``) as :class:`SuiteTables`, every member loaded."""
    pd = _pandas()
    path = Path(path)
    if (path / "suite.json").is_file() and not (path / "config.json").exists():
        return _load_suite(pd, path)
    return _load_one(pd, path)


def _load_suite(pd, path: Path) -> SuiteTables:
    suite = runs.read_json(path / "suite.json", path)
    names = suite.get("members") if isinstance(suite, dict) else None
    # member names come from an untrusted file: plain directory names inside the suite, nothing else, and
    # never a link out of it
    if not isinstance(names, list) or not all(isinstance(n, str) and n not in ("", ".", "..") and "/" not in n
                                              and "\\" not in n and "\x00" not in n for n in names):
        raise runs.RunFileError(path / "suite.json", "'members' must list the suite's member directory names")
    for n in names:
        if (path / n).is_symlink():
            raise runs.RunFileError(path / n, "is a symbolic link; toymodels does not follow links in a run directory")
    members = {n: _load_one(pd, path / n) for n in names}

    def stack(attr):
        frames = [getattr(t, attr).assign(member=n) for n, t in members.items() if len(getattr(t, attr))]
        if not frames:
            return pd.DataFrame()
        df = pd.concat(frames, ignore_index=True)
        return df[["member"] + [c for c in df.columns if c != "member"]]

    summary = runs.read_json(path / "summary.json", path) if os.path.lexists(path / "summary.json") else None
    return SuiteTables(path=path, suite=suite, summary=summary, members=members, metrics=stack("metrics"),
                       settings=stack("settings"), finetunes=stack("finetunes"))


def _load_one(pd, path: Path) -> RunTables:
    run = runs.load(path)
    settings = pd.DataFrame([{"setting": s["index"], **{k: v for k, v in s.items() if k != "index"
                                                        and not isinstance(v, list)}}
                             for s in run.summary.get("instances", [])])
    ft_rows = []
    ft = run.summary.get("finetune")
    for e in (ft or {}).get("instances", []):
        head = {"finetune": e["index"], "pretrained": e["pretrain_instance"], "regime": e["regime"],
                "optimizer": e.get("optimizer"), "orientation": e.get("orientation", 0), "target": e["target"],
                "target_gain": e["target_gain"]}
        for name, h in e["harmful"].items():
            ft_rows.append({**head, "feature": name, **_flatten({k: v for k, v in h.items() if k != "at_gain"})})
    return RunTables(path=run.path, config=run.config, summary=run.summary,
                     metrics=pd.DataFrame(metrics_rows(run)), settings=settings, finetunes=pd.DataFrame(ft_rows))
