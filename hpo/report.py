"""`hpo report`: one self-contained HTML file that tells a colleague how a study went.

plotly.js is inlined once, so the file opens anywhere without a network. Figures are drawn
from the trials' stored attributes alone (what the objective records), so a report can be
made on any machine that reaches the database, long after the workers are gone.
"""

from __future__ import annotations

import copy
import datetime as dt
import html
import math
import statistics
import warnings

import optuna
import yaml
from optuna.trial import FrozenTrial, TrialState

import hpo
from hpo import records
from hpo.applies import drop_inapplicable
from hpo.display import pct
from hpo.errors import UserError, password_note
from hpo.export import study_file, study_trials
from hpo.records import kind
from hpo.schema import plural
from hpo.seeds import SEED_RESULTS

COLORS = {"complete": "#1f77b4", "pruned": "#d62728", "failed": "#7f7f7f", "base": "#ff7f0e", "seed": "#2ca02c",
          "rejected": "#9467bd"}
TEMPLATE = "plotly_white"
# where each seed's label sits beside its star, so the cluster of small convnets stays readable
LABEL_AT = {"mnistnet3": "bottom left", "mnistnet2": "top center", "mnistnet1": "bottom right", "netv3": "top right",
            "classic": "bottom center", "linear": "bottom center", "mlp": "bottom center", "cnn": "bottom left"}


def load_trials(rdb: optuna.storages.BaseStorage, study_name: str,
                storage_option: str = "") -> tuple[optuna.Study, list[FrozenTrial]]:
    trials = study_trials(rdb, study_name)
    if not any(t.state == TrialState.COMPLETE for t in trials):
        raise UserError(records.no_complete_trial(study_name, trials, "report", study_file(rdb, study_name),
                                                  storage_option, password_note(storage_option)))
    return optuna.load_study(study_name=study_name, storage=rdb), trials


# ----------------------------------------------------------------- trial facts


def curve(t: FrozenTrial) -> tuple[list[int], list[float]]:
    done = records.epochs(t)
    return list(done), [100 * acc for acc in done.values()]


def accuracy_pct(t: FrozenTrial) -> float:
    """A complete trial's final-epoch accuracy in percent (its value, or its first value)."""
    return 100 * records.accuracy(t)


def settings(t: FrozenTrial) -> str:
    return ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in t.params.items())


def hover(t: FrozenTrial) -> str:
    n = t.user_attrs.get(records.N_PARAMS)
    head = f"trial {t.number}{' (base recipe)' if t.user_attrs.get(records.BASE) else ''}: {kind(t)}"
    return "<br>".join([head, f"{n:,} parameters" if isinstance(n, int) else "", settings(t).replace(", ", "<br>")])


def seconds_per_epoch(t: FrozenTrial) -> float | None:
    seconds = records.epoch_seconds(t)
    return statistics.mean(seconds) if seconds else None


def duration(t: FrozenTrial) -> float | None:
    return t.duration.total_seconds() if t.duration else None


def budget_of(study: optuna.Study) -> int | None:
    return ((study.user_attrs.get(records.SPEC) or {}).get("budget") or {}).get("max_params")


# ----------------------------------------------------------------- figures


def _layout(fig, title: str, x: str, y: str, **extra):
    layout = dict(title=title, template=TEMPLATE, xaxis_title=x, yaxis_title=y, height=460,
                  margin=dict(t=70, l=70, r=30, b=60), legend=dict(orientation="h", y=-0.18))
    fig.update_layout(**{**layout, **extra})
    return fig


def history_figure(trials: list[FrozenTrial], metric: str = "test accuracy"):
    import plotly.graph_objects as go  # noqa: PLC0415

    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    pruned = [t for t in trials if kind(t) == "pruned" and records.epochs(t)]
    best, xs, ys = float("-inf"), [], []
    for t in sorted(complete, key=lambda t: t.number):
        best = max(best, accuracy_pct(t))
        xs.append(t.number)
        ys.append(best)
    fig = go.Figure()
    fig.add_scatter(x=[t.number for t in complete], y=[accuracy_pct(t) for t in complete], mode="markers",
                    name=f"complete trial: final-epoch {metric}", marker=dict(color=COLORS["complete"], size=8),
                    text=[hover(t) for t in complete], hoverinfo="text+y")
    fig.add_scatter(x=[t.number for t in pruned], y=[curve(t)[1][-1] for t in pruned], mode="markers",
                    name="pruned trial: accuracy when stopped", marker=dict(color=COLORS["pruned"], symbol="x", size=7),
                    opacity=0.6, text=[hover(t) for t in pruned], hoverinfo="text+y")
    fig.add_scatter(x=xs, y=ys, mode="lines", line=dict(shape="hv", color=COLORS["base"], width=2.5),
                    name="best so far")
    return _layout(fig, f"Optimization history: each trial's {metric} and the best so far",
                   "trial number (order started)", f"{metric} (%)")


def curves_figure(trials: list[FrozenTrial], metric: str = "test accuracy"):
    import plotly.graph_objects as go  # noqa: PLC0415

    fig = go.Figure()
    styles = {"complete": dict(color=COLORS["complete"], width=1.5),
              "pruned": dict(color=COLORS["pruned"], dash="dot", width=1.2),
              "failed": dict(color=COLORS["failed"], dash="dash", width=1),
              "running": dict(color="#bcbd22")}
    names = {"complete": "complete", "pruned": "pruned (stopped early by the pruner; x = last epoch)",
             "failed": "failed", "running": "still running"}
    shown = set()
    for t in sorted(trials, key=lambda t: (kind(t) == "complete", t.number)):
        k = kind(t)
        # a queued retry carries its interrupted attempt's epochs, drawn once already as that failed trial
        if k in ("rejected", "waiting") or not records.epochs(t):
            continue
        epochs, acc = curve(t)
        fig.add_scatter(x=epochs, y=acc, mode="lines+markers", line=styles[k], legendgroup=k, name=names[k],
                        showlegend=k not in shown, opacity=0.85 if k == "complete" else 0.7,
                        marker=dict(size=[4] * (len(acc) - 1) + [9 if k == "pruned" else 4],
                                    symbol=["circle"] * (len(acc) - 1) + ["x" if k == "pruned" else "circle"]),
                        text=hover(t), hoverinfo="text+x+y")
        shown.add(k)
    fig.update_xaxes(dtick=1 if max((len(records.epochs(t)) for t in trials), default=0) <= 20 else None)
    return _layout(fig, f"Learning curves: {metric} after every epoch, one line per trial", "epoch",
                   f"{metric} (%)")


def importance_figure(study: optuna.Study, trials: list[FrozenTrial], metric: str = "test accuracy"):
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    if len(complete) < 2 or not any(t.params for t in complete):
        return None, "Needs at least two complete trials with searched settings."
    # Optuna shares the importance out equally where there is nothing to explain: not a finding
    if len({accuracy_pct(t) for t in complete}) < 2:
        return None, f"Every complete trial scored the same final {metric}: there is no variation to explain."
    if all(len({repr(t.params.get(name)) for t in complete}) < 2 for name in {n for t in complete for n in t.params}):
        return None, "Every complete trial has the same searched settings: there is nothing to tell apart."
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fig = optuna.visualization.plot_param_importances(study, target=accuracy_pct,
                                                              target_name=f"final {metric}")
    except (ValueError, RuntimeError) as error:
        return None, f"Optuna could not compute importances: {error}"
    fig.update_layout(title=f"Which settings mattered: share of the variation in final {metric} "
                            "explained by each setting", template=TEMPLATE,
                      height=max(300, 120 + 40 * len(fig.data[0].y if fig.data else [])),
                      xaxis_title="importance (all settings sum to 1)", yaxis_title="searched setting",
                      showlegend=False)
    return fig, ""


def parallel_figure(study: optuna.Study, trials: list[FrozenTrial], metric: str = "test accuracy"):
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    shared = set.intersection(*(set(t.params) for t in complete)) if complete else set()
    if not shared:
        return None, "No setting was searched in every complete trial."
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fig = optuna.visualization.plot_parallel_coordinate(study, params=sorted(shared),
                                                            target=accuracy_pct,
                                                            target_name=f"{metric} (%)")
    fig.update_layout(title="Parallel coordinates: each complete trial is one line through its settings, "
                            f"colored by final {metric}", template=TEMPLATE, height=480,
                      margin=dict(t=110, l=80, r=60, b=40))
    dropped = sorted({p for t in complete for p in t.params} - shared)
    return fig, (f"Settings only some trials have (conditional ones) are left out: {', '.join(dropped)}."
                 if dropped else "")


def seeded(spec) -> tuple[bool, bool]:
    """Whether the study is on MNIST, where the seeds' hand-tuned results are the numbers to beat,
    and whether its base (trial 0) is one of the seeds' recipes (a seed's preset, unchanged); a study on your
    own data is compared with its own base alone."""
    base = spec.get("base") if isinstance(spec, dict) else None
    base = base if isinstance(base, dict) else {}
    data, model = base.get("data") or {}, base.get("model") or {}
    on_mnist = (data.get("dataset", "mnist") if isinstance(data, dict) else "mnist") == "mnist"
    # a seed's preset as it is: `{preset: mlp, hidden: [16]}` is a net of the study's own
    preset = model.get("preset") if isinstance(model, dict) and set(model) == {"preset"} else None
    return on_mnist, on_mnist and any(s.preset == preset for s in SEED_RESULTS)


def pareto_figure(study: optuna.Study, trials: list[FrozenTrial], metric: str = "test accuracy"):
    import plotly.graph_objects as go  # noqa: PLC0415

    on_mnist, from_a_seed = seeded(study.user_attrs.get(records.SPEC))
    complete = [t for t in trials if t.state == TrialState.COMPLETE and isinstance(t.user_attrs.get(records.N_PARAMS), int)]
    fig = go.Figure()
    # the Pareto front: what a multi-objective study optimizes, and what any study found along the way
    front = sorted(records.pareto_front(complete), key=lambda t: t.user_attrs[records.N_PARAMS])
    searched = "the study's Pareto front (its objective)" if records.multi_objective(trials) else "this study's front"
    fig.add_scatter(x=[t.user_attrs[records.N_PARAMS] for t in front], y=[accuracy_pct(t) for t in front],
                    mode="lines", line=dict(shape="hv", color=COLORS["complete"], width=1, dash="dot"),
                    name=f"{searched}: best accuracy at that size or smaller", hoverinfo="skip")
    others = [t for t in complete if not t.user_attrs.get(records.BASE)]
    fig.add_scatter(x=[t.user_attrs[records.N_PARAMS] for t in others], y=[accuracy_pct(t) for t in others],
                    mode="markers", name="complete trial (final epoch)",
                    marker=dict(color=COLORS["complete"], size=8, opacity=0.75), text=[hover(t) for t in others],
                    hoverinfo="text+y")
    base = [t for t in complete if t.user_attrs.get(records.BASE)]
    fig.add_scatter(x=[t.user_attrs[records.N_PARAMS] for t in base], y=[accuracy_pct(t) for t in base], mode="markers",
                    name="trial 0: the seed's recipe as this study trains it" if from_a_seed
                    else "trial 0: the study's base recipe",
                    marker=dict(color=COLORS["base"], size=12, symbol="diamond"), text=[hover(t) for t in base],
                    hoverinfo="text+y")
    seeds = SEED_RESULTS if on_mnist else ()  # MNIST's numbers mean nothing beside another dataset's
    if seeds:
        fig.add_scatter(x=[s.n_params for s in seeds], y=[100 * s.accuracy for s in seeds],
                        mode="markers+text", text=[f"{s.label} ({s.seed})" for s in seeds],
                        textposition=[LABEL_AT.get(s.preset, "top center") for s in seeds],
                        textfont=dict(size=10, color=COLORS["seed"]),
                        name="seeds' hand-tuned results (best epoch, full data)",
                        marker=dict(color=COLORS["seed"], size=12, symbol="star"),
                        hovertext=[f"seed {s.seed}: {s.label}<br>{s.n_params:,} parameters<br>"
                                   f"{'~' if s.approximate else ''}{100 * s.accuracy:.2f}% (best epoch)"
                                   for s in seeds], hoverinfo="text")
    budget = budget_of(study)
    if budget:
        fig.add_vline(x=budget, line=dict(color=COLORS["rejected"], dash="dash"))
        # an annotation on a log axis is placed by log10 of the value (a shape is not)
        fig.add_annotation(x=math.log10(budget), y=0.02, yref="paper", xanchor="left", showarrow=False,
                           text=f" budget: {budget:,} parameters", font=dict(color=COLORS["rejected"], size=11))
    fig.update_xaxes(type="log")
    return _layout(fig, "Accuracy against size: smaller and higher is better (up and to the left)",
                   "parameters (log scale)", f"{metric} (%)", height=520)


def timing_figure(trials: list[FrozenTrial]):
    from plotly.subplots import make_subplots  # noqa: PLC0415

    fig = make_subplots(rows=1, cols=2, horizontal_spacing=0.1,
                        subplot_titles=("Seconds per epoch against model size", "How long each trial took"))
    timed = [t for t in trials if seconds_per_epoch(t) is not None and isinstance(t.user_attrs.get(records.N_PARAMS), int)]
    for k in ("complete", "pruned", "failed"):
        group = [t for t in timed if kind(t) == k]
        if group:
            fig.add_scatter(x=[t.user_attrs[records.N_PARAMS] for t in group], y=[seconds_per_epoch(t) for t in group],
                            mode="markers", name=k, legendgroup=k, marker=dict(color=COLORS[k], size=8),
                            text=[f"{hover(t)}<br>batch {t.user_attrs.get(records.CONFIG, {}).get('batch_size', '?')}, "
                                  f"on {t.user_attrs.get(records.DEVICE, '?')}" for t in group], hoverinfo="text+y",
                            row=1, col=1)
        spans = [duration(t) for t in trials if kind(t) == k and duration(t) is not None]
        if spans:
            fig.add_histogram(x=spans, name=k, legendgroup=k, showlegend=not group, marker_color=COLORS[k],
                              opacity=0.8, row=1, col=2)
    fig.update_layout(barmode="stack", template=TEMPLATE, height=440, legend=dict(orientation="h", y=-0.2),
                      title="Time: seconds per training epoch, and the distribution of whole-trial wall time",
                      margin=dict(t=90, l=70, r=30, b=60))
    fig.update_xaxes(title_text="parameters", row=1, col=1)
    fig.update_yaxes(title_text="seconds per epoch (mean over the trial)", row=1, col=1)
    fig.update_xaxes(title_text="trial wall time (seconds, start to finish)", row=1, col=2)
    fig.update_yaxes(title_text="number of trials", row=1, col=2)
    return fig


# ----------------------------------------------------------------- the page


def top_table(trials: list[FrozenTrial], top: int, held_out: bool = False) -> str:
    """The best trials as an HTML table; with `held_out` (eval: val) their value is the validation
    accuracy, and the test accuracy, measured once at the end, stands beside it."""
    complete = records.ranked(trials, top)
    rows = []
    for rank, t in enumerate(complete, 1):
        n = t.user_attrs.get(records.N_PARAMS)
        best_epoch, best_acc = t.user_attrs.get(records.BEST_EPOCH), t.user_attrs.get(records.BEST_ACCURACY)
        spe, span = seconds_per_epoch(t), duration(t)
        # as the export writes it: keys the trial's choices ignore (a none schedule's gamma) left out
        config = yaml.safe_dump(drop_inapplicable(copy.deepcopy(t.user_attrs.get(records.CONFIG, {}))), sort_keys=False,
                                default_flow_style=None, width=90, allow_unicode=True)
        cells = [str(rank), f"{t.number}{' (base)' if t.user_attrs.get(records.BASE) else ''}",
                 f"{accuracy_pct(t):.2f}%", *([pct(t.user_attrs.get(records.TEST_ACCURACY))] if held_out else []),
                 f"{100 * best_acc:.2f}% (epoch {best_epoch})" if best_acc is not None else "-",
                 f"{n:,}" if isinstance(n, int) else "-", f"{spe:.2f}" if spe else "-",
                 f"{span:.0f}" if span else "-", html.escape(settings(t)) or "-"]
        rows.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells)
                    + f"<td><details><summary>config</summary><pre>{html.escape(config)}</pre></details></td></tr>")
    value = ("final val. acc.", "test acc. (once, at the end)") if held_out else ("final test acc.",)
    head = "".join(f"<th>{h}</th>" for h in ("rank", "trial", *value, "best epoch", "parameters",
                                             "s / epoch", "trial s", "searched settings", "full config"))
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


CSS = """
body { font-family: system-ui, -apple-system, 'Segoe UI', sans-serif; margin: 2em auto; max-width: 1200px;
       padding: 0 1em; color: #222; }
h1 { margin-bottom: 0.2em; } h2 { margin-top: 2em; border-bottom: 1px solid #ddd; }
.facts { color: #555; } .note { color: #555; font-size: 0.92em; max-width: 60em; }
table { border-collapse: collapse; font-size: 0.9em; } td, th { border: 1px solid #ddd; padding: 4px 8px;
  vertical-align: top; text-align: left; } th { background: #f4f4f4; } pre { margin: 0.3em 0; font-size: 0.9em; }
"""


def build_report(*, storage: optuna.storages.BaseStorage, study_name: str, where: str = "", top: int = 10,
                 storage_option: str = "") -> str:
    """The whole report as one HTML document. `storage_option`: what a hint adds to open the same storage."""
    study, trials = load_trials(storage, study_name, storage_option)
    c = records.count(trials)
    best = records.best_trial(trials)
    front = len(records.pareto_front(trials)) if records.multi_objective(trials) else None
    first = [True]

    def figure(fig, note: str = "") -> str:
        if fig is None:
            return f'<p class="note">{html.escape(note)}</p>'
        # plotly.js goes inline once, in the first figure; the rest reuse it
        div = fig.to_html(full_html=False, include_plotlyjs=first[0], config={"displaylogo": False})
        first[0] = False
        return div + (f'<p class="note">{html.escape(note)}</p>' if note else "")

    n_best = best.user_attrs.get(records.N_PARAMS)
    source = study.user_attrs.get(records.SOURCE, "")
    held_out = records.held_out(study.user_attrs)
    on_mnist = seeded(study.user_attrs.get(records.SPEC))[0]  # the seeds' stars are drawn beside MNIST studies
    # eval: val: the search sees accuracy on held-out training images; the test set once, at the end
    metric = "validation accuracy" if held_out else "test accuracy"
    sections = [
        ("Optimization history", figure(history_figure(trials, metric)),
         f"Each dot is a finished trial's {metric} after its last epoch (the value the search maximizes"
         f"{'; it weighs it against the parameter count, below' if front else ''}); the line is the best so far. "
         "Pruned trials are drawn where the pruner stopped them."),
        ("Learning curves", figure(curves_figure(trials, metric)),
         f"{metric.capitalize()} after every epoch as the trials reported it. Dotted red lines ended early: the pruner "
         "judged them unlikely to beat the others at that epoch. Over-budget trials never trained and are not drawn."),
        ("Accuracy against size", figure(pareto_figure(study, trials, metric)),
         ("The seeds' stars are their best epoch on the full MNIST test set, picked after the fact; trials show "
          f"their final epoch's {metric}, on the data and epochs this study trains with, so a study on a subset or "
          "fewer epochs sits lower than the seeds by design."
          + (" Validation images are held-out training images, not the test set the stars are measured on; the "
             "table below gives each top trial's test accuracy, measured once." if held_out else ""))
         if on_mnist else f"Each trial's final epoch's {metric} against its size; the diamond is the study's "
                          "base recipe (trial 0)."),
        ("Parameter importances", figure(*importance_figure(study, trials, metric)),
         "Computed by Optuna (PED-ANOVA) from the complete trials; with few trials it is a rough guide."),
        ("Parallel coordinates", figure(*parallel_figure(study, trials, metric)), ""),
        ("Time", figure(timing_figure(trials)),
         "Seconds per epoch as the trainer measured it; trial wall time includes evaluation and the storage's "
         "writes. Over-budget trials take no time and are left out."),
        (f"Pareto front: {plural(front, 'trial')}, most accurate first" + (f" (the first {top})" if front > top else "")
         if front else f"Top {plural(min(top, c.complete), 'trial')}", top_table(trials, top, held_out),
         ("Each is the most accurate model of its size or smaller. " if front else "")
         + "Each config re-trains as is: hpo export writes them as YAML for hpo train --config."),
    ]
    body = "".join(f"<h2>{title}</h2>{content}" + (f'<p class="note">{html.escape(note)}</p>' if note else "")
                   for title, content, note in sections)
    size = f" with {n_best:,} parameters" if isinstance(n_best, int) else ""
    lead = f"Pareto front: {plural(front, 'trial')}; most accurate" if front else "Best"
    facts = (f"{plural(c.finished, 'finished trial')}: {c.complete} complete, {c.pruned} pruned; "
             f"{c.rejected} rejected over the parameter budget, {c.failed} failed, {c.running} running, "
             f"{c.waiting} queued (for the next run). {lead}: trial {best.number}, "
             f"{accuracy_pct(best):.2f}% {metric}{size}"
             + (f", {pct(best.user_attrs.get(records.TEST_ACCURACY))} test accuracy (measured once, at the end)"
                if held_out else "") + ".")
    made = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return (f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>hpo report: {html.escape(study_name)}"
            f"</title><style>{CSS}</style></head><body><h1>Study <code>{html.escape(study_name)}</code></h1>"
            f"<p class='facts'>{html.escape(facts)}</p><p class='facts'>Study file {html.escape(source or '-')}; "
            f"storage {html.escape(where)}; made {made} by hpo {hpo.__version__} with Optuna {optuna.__version__}."
            f"</p>{body}</body></html>")
