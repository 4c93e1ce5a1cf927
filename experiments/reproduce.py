"""Rerun committed results with the current code and compare them with the files in results/.

    python experiments/reproduce.py                       # every directory under results/ (slow: the presets' runtimes)
    python experiments/reproduce.py --cheap               # analogy-15deg and tms-intro (what CI checks, ~1 min)
    python experiments/reproduce.py tms-phase crowding --keep runs/reproduce   # keep the reruns
    python experiments/reproduce.py --cheap --json drift-report.json          # every number's drift, as JSON
    python experiments/reproduce.py --cheap --drift       # (re)measure results/<name>/drift.json: the envelope
    python experiments/reproduce.py --from runs/other --json drift.json   # compare existing reruns, no compute

Each result is rerun from its own committed config.json (suite.json for a suite) and compared file by
file (toymodels/compare.py: what is compared and to what tolerance); its config is also checked
against the current preset. On the machine class that made the committed files (env.json's "cpu")
the comparison is exact; elsewhere it uses the cross-machine tolerance, widened by the drift measured
across XLA CPU targets (drift.json; --drift measures it: one rerun per target). The report prints, per
file, how many numbers moved and the largest |Δ|, and says whether a failure is a stale result or a
drift beyond the cross-machine tolerance. Exit code 1 if any result failed, 2 for a bad argument.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from toymodels import reproduce

ROOT = Path(__file__).resolve().parent.parent


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("presets", nargs="*", metavar="PRESET", help="result directories under results/ (default: all)")
    ap.add_argument("--cheap", action="store_true", help=f"also (or only) {' and '.join(reproduce.CHEAP)}")
    ap.add_argument("--keep", metavar="DIR", help="write the reruns to DIR/<preset> (replacing an earlier rerun "
                                                  "there) instead of a temporary directory")
    ap.add_argument("--results", metavar="DIR", default=str(ROOT / "results"), help="where the committed results are")
    ap.add_argument("--json", metavar="FILE", help="write every compared number's drift (|Δ| per path) to FILE")
    ap.add_argument("--from", dest="from_dir", metavar="DIR",
                    help="compare the finished reruns DIR/<preset> (e.g. made on another machine) instead of rerunning")
    ap.add_argument("--drift", action="store_true",
                    help="measure results/<name>/drift.json (one rerun per XLA CPU target) before comparing")
    args = ap.parse_args(argv)
    results = Path(args.results)
    names = list(dict.fromkeys(args.presets + (list(reproduce.CHEAP) if args.cheap else [])))
    if not names:
        names = sorted(p.name for p in results.iterdir() if p.is_dir())
    missing = [n for n in names if not (results / n).is_dir()]
    if missing:
        print(f"reproduce: no committed result {', '.join(missing)} under {results}", file=sys.stderr)
        return 2
    if args.json and Path(args.json).exists():
        print(f"reproduce: --json {args.json} exists; name a new file", file=sys.stderr)
        return 2
    reports = []
    for name in names:
        if args.drift:
            from toymodels import drift

            print(f"measuring the drift envelope of {name} ...", flush=True)
            drift.measure(results / name)
        if args.from_dir:
            reports.append(reproduce.compare_existing(results / name, Path(args.from_dir) / name))
            continue
        print(f"rerunning {name} from {results / name} ...", flush=True)
        reports.append(reproduce.check(results / name, keep=args.keep))
    print(reproduce.format_report(reports))
    if args.json:
        Path(args.json).write_text(json.dumps(reproduce.drift_table(reports), indent=1))
    return 0 if all(r.ok for r in reports) else 1


if __name__ == "__main__":
    sys.exit(main())
