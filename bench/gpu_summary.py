#!/usr/bin/env python
"""The GPU check's summary table, from what bench/gpu-check.sh left in its folder.

    python bench/gpu_summary.py FOLDER STUDY DB
"""

from __future__ import annotations

import datetime as dt
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(out: Path, study_name: str, db: Path) -> int:
    rows = []
    steps = [line.split("\t") for line in (out / "steps.tsv").read_text().splitlines() if line.strip()]
    device = (out / "nvidia-smi.txt").read_text().strip().splitlines()
    speed_path = out / "train_speed.json"
    if speed_path.exists():
        speed = json.loads(speed_path.read_text())
        hpo, seed = speed["results"]["hpo"], speed["results"]["seed"]
        rows += [("P1 s/epoch, budget-8k base net, hpo trainer", f"{hpo['mean']:.3f} ± {hpo['std']:.3f}",
                  f"{speed['device']}, batch {speed['batch_size']}, {speed['train_images']:,} train images"),
                 ("P2 seeds' loop / hpo trainer, s/epoch", f"{speed['ratio']:.1f}x",
                  f"seed loop {seed['mean']:.2f} s/epoch; fastest repeats {speed['best_ratio']:.1f}x")]
        eager = speed["results"].get("hpo_eager")
        if eager:
            rows.append(("P1 s/epoch, the same with the eager step", f"{eager['mean']:.3f} ± {eager['std']:.3f}",
                         f"the CUDA graph {eager['mean'] / hpo['mean']:.1f}x faster"))
        variants = {name[4:]: r for name, r in speed["results"].items() if name.startswith("hpo_") and name != "hpo_eager"}
        if variants:
            fastest = min(variants, key=lambda name: variants[name]["mean"])
            rows.append(("P1 s/epoch, the graphed step's variants", f"{variants[fastest]['mean']:.3f}",
                         f"fastest: {fastest} ({hpo['mean'] / variants[fastest]['mean']:.2f}x hpo's default); "
                         + ", ".join(f"{name} {r['mean']:.3f}" for name, r in variants.items())))
    if db.exists():
        import optuna  # noqa: PLC0415

        from hpo import records  # noqa: PLC0415

        optuna.logging.set_verbosity(optuna.logging.ERROR)
        try:
            trials = optuna.load_study(study_name=study_name, storage=f"sqlite:///{db}").get_trials(deepcopy=False)
        except KeyError:  # the study step failed before creating it: its log says why
            trials = []
        c = records.count(trials)
        starts = [t.datetime_start for t in trials if t.datetime_start]
        ends = [t.datetime_complete for t in trials if t.datetime_complete]
        span = (max(ends) - min(starts)).total_seconds() if starts and ends else 0.0
        best = records.best_trial(trials)
        way = (out / "choice.txt").read_text().strip() if (out / "choice.txt").exists() else ""
        rows += [(f"P3 {study_name}: finished trials (all checks so far)", f"{c.finished}",
                  f"{c.complete} complete, {c.pruned} pruned, {c.rejected} rejected, {c.failed} failed; "
                  f"first start to last end {span:.0f} s" + (f"; this check ran {way}" if way else "")),
                 (f"{study_name}: best trial", f"{100 * best.value:.2f}%" if best else "-",
                  f"trial {best.number}, {best.user_attrs.get(records.N_PARAMS, 0):,} params" if best else "")]
    verified = verify_result(out / "verify.log")
    if verified:
        diverged = len(verified.get("diverged") or [])  # seeds whose loss blew up: not in the mean
        lost = f", {diverged} diverged" if diverged else ""
        epochs = f"{verified['epochs']} epoch{'s' if verified['epochs'] != 1 else ''}"
        if verified.get("mean") is None:
            rows.append((f"{study_name}: best re-trained", "-", f"every seed diverged{lost}; {epochs}"))
        else:
            rows.append((f"{study_name}: best re-trained, {len(verified['runs'])} seeds{lost}",
                         f"{100 * verified['mean']:.2f}%",
                         (f"± {100 * verified['std']:.2f}% " if verified.get("std") is not None else "one seed, ")
                         + f"final-epoch test accuracy, {verified['n_params']:,} params, {epochs}"))
    packing_path = out / "packing.json"
    if packing_path.exists():
        packing = json.loads(packing_path.read_text())
        plain, packed = packing["rows"][0], packing["rows"][1:]
        failed = packing.get("failed", [])
        if packed:
            best = max(packed, key=lambda r: r["trials_per_hour"])
            rows.append(("P4 trials/hour, best packing / one at a time", f"{packing['best_ratio']:.1f}x",
                         f"{best['way']} {best['trials_per_hour']:.0f}/h against {plain['trials_per_hour']:.0f}/h "
                         f"({packing['epochs']}-epoch trials, {packing['device']})"))
        if failed:
            rows.append(("P4 packed groups that failed", f"{len(failed)} of {len(failed) + len(packed)}",
                         "; ".join(f"{f['way']}: {f['error'][:100]}" for f in failed)))
    else:
        ran = {name: rc for name, rc, _ in steps}
        why = f"its step exited {ran['packing']} (packing.log)" if "packing" in ran else "not among the steps run"
        rows.append(("P4 packed trials per GPU", "not measured", why))
    workers_path = out / "workers.json"
    if workers_path.exists():
        workers = json.loads(workers_path.read_text())
        best = max(workers["rows"], key=lambda r: r["epochs_per_min"])
        each = ", ".join(f"{r['processes']}: {r['epochs_per_min']:.0f}" for r in workers["rows"])
        rows.append(("P4 epochs/min, best K processes / one", f"{workers['best_ratio']:.1f}x",
                     f"{best['processes']} process{'es' if best['processes'] != 1 else ''} at once on {workers['device']}, "
                     f"{'with' if workers.get('mps') else 'no'} MPS (processes: epochs/min {each})"))
    print(f"\nGPU check, {dt.date.today().isoformat()}, {device[0] if device else '?'}")
    print(f"{'step':<14} {'exit':>4} {'seconds':>8}")
    for name, rc, seconds in steps:
        print(f"{name:<14} {rc:>4} {float(seconds):>8.1f}")
    width = max(len(r[0]) for r in rows)
    print()
    for label, value, detail in rows:
        print(f"{label:<{width}}  {value:>14}  {detail}")
    return 0 if all(rc == "0" for _, rc, _ in steps) else 1


def verify_result(log: Path) -> dict | None:
    """`hpo verify --json`'s object from the step's log (which also holds its standard error)."""
    if not log.exists():
        return None
    text = log.read_text()
    start, end = text.find("\n{") + 1 if not text.startswith("{") else 0, text.rfind("}")
    try:
        return json.loads(text[start : end + 1])
    except ValueError:
        return None


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3])))
