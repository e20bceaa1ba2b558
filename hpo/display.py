"""What a person sees on the terminal: tables and progress, built with rich."""

from __future__ import annotations

import statistics
import sys

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from hpo import models

# Piped output (logs, CI, notes) gets room for full checksums and layouts; a terminal keeps its width.
console = Console(highlight=False, width=None if sys.stdout.isatty() else 120)
err_console = Console(stderr=True, highlight=False, width=None if sys.stderr.isatty() else 120)


def pct(fraction: float | None) -> str:
    return "-" if fraction is None else f"{100 * fraction:.2f}%"


def data_table(summary: dict) -> Table:
    splits = summary["splits"]
    table = Table(title="MNIST images per class", caption=f"in {summary['folder']}", title_justify="left",
                  caption_justify="left")
    table.add_column("class")
    for split in splits:
        table.add_column(split, justify="right")
    for cls in range(10):
        table.add_row(str(cls), *[f"{info['per_class'][cls]:,}" for info in splits.values()])
    table.add_row("[bold]total[/]", *[f"[bold]{info['images']:,}[/]" for info in splits.values()])
    return table


def checksum_table(summary: dict) -> Table:
    table = Table(title="sha256, verified against the pinned digests", title_justify="left")
    table.add_column("file")
    table.add_column("sha256", no_wrap=True)
    table.add_column("")
    for name, digest in summary["sha256"].items():
        table.add_row(name, digest, "[green]ok[/]")
    return table


def models_table() -> Table:
    table = Table(title="Model presets (use as  model: {preset: NAME}  in a config)", title_justify="left")
    for col, just in (("preset", "left"), ("layout", "left"), ("parameters", "right"), ("from", "left")):
        table.add_column(col, justify=just)
    for name, (source, expected, spec_dict) in models.PRESETS.items():
        spec = models.parse_model({"preset": name})
        count = models.spec_params(spec)
        mark = "" if count == expected else f" [red](seed: {expected:,})[/]"
        table.add_row(name, models.describe(spec), f"{count:,}{mark}", source)
    return table


def train_run(cfg, mnist, *, title: str) -> list:
    """Train `cfg` with a progress bar and a line per epoch; print a summary; return the history."""
    from hpo.train import bf16_autocast, train  # noqa: PLC0415 - torch-heavy

    spec = cfg.model
    n_params = models.spec_params(spec)
    n_train = cfg.data.train_subset or len(mnist.train_y)
    n_test = cfg.data.test_subset or len(mnist.test_y)
    console.print(f"[bold]{title}[/]: {models.describe(spec)}, {n_params:,} parameters, "
                  f"{cfg.optimizer.name} lr={cfg.optimizer.lr:g}, batch {cfg.batch_size}, {cfg.epochs} epochs, "
                  f"{n_train:,} train / {n_test:,} test images on {mnist.device}")
    progress = Progress(TextColumn("epoch {task.fields[epoch]}/{task.fields[epochs]}"), BarColumn(),
                        MofNCompleteColumn(), TimeElapsedColumn(), console=console, transient=True)
    task = progress.add_task("train", total=None, epoch=1, epochs=cfg.epochs)

    def on_step(step: int, steps: int):
        progress.update(task, completed=step, total=steps)

    def on_epoch(r):
        progress.console.print(f"epoch {r.epoch:>3}/{cfg.epochs}  loss {r.train_loss:.4f}  "
                               f"test {pct(r.test_accuracy)}  lr {r.lr:.3g}  {r.seconds:.1f}s")
        progress.update(task, epoch=min(r.epoch + 1, cfg.epochs), completed=0)

    with progress:
        history = train(cfg, mnist, on_step=on_step, on_epoch=on_epoch)
    seconds = [r.seconds for r in history]
    best_epoch = max(history, key=lambda r: r.test_accuracy)
    console.print(f"[bold]final test accuracy {pct(history[-1].test_accuracy)}[/], best {pct(best_epoch.test_accuracy)} "
                  f"(epoch {best_epoch.epoch}); {n_params:,} parameters; "
                  f"{statistics.mean(seconds):.2f} s/epoch on {mnist.device} "
                  f"({'bf16 autocast' if bf16_autocast(mnist.device.type) else 'fp32'})")
    return history


# ----------------------------------------------------------------- studies


def _fmt_params(n) -> str:
    return f"{n:,}" if isinstance(n, int) else "-"


def trial_line(t) -> str:
    """One line for a trial that just finished, as `hpo run` prints it off a terminal."""
    from optuna.trial import TrialState  # noqa: PLC0415

    n = t.user_attrs.get("n_params")
    if t.state == TrialState.COMPLETE:
        seconds = sum(t.user_attrs.get("epoch_seconds", []))
        return (f"trial {t.number:>4} complete  {pct(t.value)}  {_fmt_params(n)} params  "
                f"{len(t.intermediate_values)} epochs  {seconds:.1f}s")
    if t.state == TrialState.PRUNED and t.user_attrs.get("rejected"):
        return f"trial {t.number:>4} rejected  {_fmt_params(n)} params: over the parameter budget"
    if t.state == TrialState.PRUNED:
        last = max(t.intermediate_values) if t.intermediate_values else 0
        value = t.intermediate_values.get(last)
        return f"trial {t.number:>4} pruned    at epoch {last} ({pct(value)})  {_fmt_params(n)} params"
    return f"trial {t.number:>4} failed    {t.user_attrs.get('fail_reason', 'no reason recorded')}"


def best_trial(trials):
    from optuna.trial import TrialState  # noqa: PLC0415

    complete = [t for t in trials if t.state == TrialState.COMPLETE and t.value is not None]
    return max(complete, key=lambda t: t.value) if complete else None


class RunDisplay:
    """The live view of `hpo run`, drawn from the storage alone (so it sees every machine's workers)."""

    def __init__(self, spec, target: int, where: str, workers: int, *, live: bool):
        self.spec, self.target, self.where, self.workers = spec, target, where, workers
        self.live = None
        self.seen: set[int] = set()
        if live:
            from rich.live import Live  # noqa: PLC0415

            self.live = Live(console=console, refresh_per_second=4, transient=False)

    def __enter__(self):
        console.print(f"[bold]{self.spec.name}[/] from {self.spec.source} in {self.where}: "
                      f"{self.target} finished trials, {self.workers} worker(s)")
        if self.live:
            self.live.__enter__()
        return self

    def __exit__(self, *exc):
        if self.live:
            self.live.__exit__(*exc)

    def update(self, trials) -> None:
        from optuna.trial import TrialState  # noqa: PLC0415

        if self.live:
            self.live.update(self.panel(trials))
            return
        for t in trials:
            if t.number not in self.seen and t.state not in (TrialState.RUNNING, TrialState.WAITING):
                self.seen.add(t.number)
                console.print(trial_line(t))

    def panel(self, trials):
        from rich.console import Group  # noqa: PLC0415
        from optuna.trial import TrialState  # noqa: PLC0415

        from hpo.runner import count  # noqa: PLC0415

        c = count(trials)
        best = best_trial(trials)
        head = (f"finished [bold]{c.finished}/{self.target}[/]  running {c.running}  pruned {c.pruned}  "
                f"rejected {c.rejected}  failed {c.failed}")
        best_line = (f"best so far: [bold green]{pct(best.value)}[/] (trial {best.number}, "
                     f"{_fmt_params(best.user_attrs.get('n_params'))} params)" if best else "best so far: -")
        table = Table(box=None, show_header=True, header_style="dim")
        for col in ("running trial", "epoch", "last test acc.", "params"):
            table.add_column(col)
        for t in trials:
            if t.state == TrialState.RUNNING:
                epochs = t.user_attrs.get("config", {}).get("epochs", "?")
                last = max(t.intermediate_values) if t.intermediate_values else 0
                table.add_row(str(t.number), f"{last}/{epochs}", pct(t.intermediate_values.get(last)),
                              _fmt_params(t.user_attrs.get("n_params")))
        recent = [trial_line(t) for t in sorted(trials, key=lambda t: t.number)
                  if t.state not in (TrialState.RUNNING, TrialState.WAITING)][-5:]
        return Group(head, best_line, table, *recent)

    def summary(self, trials, top: int = 5) -> None:
        console.print(top_table(trials, top, title=f"top {top} of {self.spec.name}"))
        best = best_trial(trials)
        if best:
            console.print(f"export the best configs with: hpo export --study {self.spec.name} --top 3 -o best.yaml")


def top_table(trials, top: int, *, title: str) -> Table:
    from optuna.trial import TrialState  # noqa: PLC0415

    complete = sorted((t for t in trials if t.state == TrialState.COMPLETE), key=lambda t: -t.value)[:top]
    table = Table(title=title, title_justify="left")
    for col, just in (("trial", "right"), ("test acc.", "right"), ("best epoch", "right"), ("params", "right"),
                      ("s/epoch", "right"), ("config", "left")):
        table.add_column(col, justify=just)
    for t in complete:
        seconds = t.user_attrs.get("epoch_seconds") or [0]
        changed = ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in t.params.items())
        base = " (base)" if t.user_attrs.get("base") else ""
        table.add_row(f"{t.number}{base}", pct(t.value), str(t.user_attrs.get("best_epoch", "-")),
                      _fmt_params(t.user_attrs.get("n_params")), f"{sum(seconds) / len(seconds):.2f}", changed)
    return table


def studies_table(storage) -> Table:
    import optuna  # noqa: PLC0415

    from hpo.runner import count  # noqa: PLC0415

    table = Table(title="studies", title_justify="left")
    for col, just in (("study", "left"), ("finished", "right"), ("complete", "right"), ("pruned", "right"),
                      ("rejected", "right"), ("failed", "right"), ("running", "right"), ("best", "right"),
                      ("best params", "right"), ("best trial", "right")):
        table.add_column(col, justify=just)
    for summary in optuna.get_all_study_summaries(storage, include_best_trial=False):
        study_id = storage.get_study_id_from_name(summary.study_name)
        trials = storage.get_all_trials(study_id, deepcopy=False)
        c = count(trials)
        best = best_trial(trials)
        table.add_row(summary.study_name, str(c.finished), str(c.complete), str(c.pruned), str(c.rejected),
                      str(c.failed), str(c.running), pct(best.value) if best else "-",
                      _fmt_params(best.user_attrs.get("n_params")) if best else "-",
                      str(best.number) if best else "-")
    return table
