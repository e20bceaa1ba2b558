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
    from hpo.train import train  # noqa: PLC0415 - torch-heavy

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
                  f"{statistics.mean(seconds):.2f} s/epoch on {mnist.device}")
    return history
