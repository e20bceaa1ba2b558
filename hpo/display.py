"""What a person sees on the terminal: tables and progress, built with rich."""

from __future__ import annotations

import shlex
import statistics
import sys

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from hpo import records
from hpo.schema import plain, plural

class _Console(Console):
    def on_broken_pipe(self) -> None:
        """rich's own exits 1 when the reader is gone (`hpo studies | head -1`); hpo's commands
        stop as Unix tools do, without a word, the shell's 141 (hpo.cli.run_command)."""
        raise BrokenPipeError(32, "Broken pipe")


# Piped output (logs, CI, notes) gets room for full checksums and layouts; a terminal keeps its width.
# Piped lines are never broken mid-line either (a log is grepped line by line); a terminal wraps them.
console = _Console(highlight=False, width=None if sys.stdout.isatty() else 120, soft_wrap=not sys.stdout.isatty())
err_console = _Console(stderr=True, highlight=False, width=None if sys.stderr.isatty() else 120,
                       soft_wrap=not sys.stderr.isatty())


def pct(fraction: float | None) -> str:
    return "-" if fraction is None else f"{100 * fraction:.2f}%"


def data_table(summary: dict) -> Table:
    dataset, splits = summary["dataset"], summary["splits"]
    title = f"{dataset.title} images per class"
    table = Table(title=title, title_justify="left", min_width=len(title))
    table.add_column("class")
    for split in splits:
        table.add_column(split, justify="right")
    for cls in range(dataset.classes):
        name = f"{cls} {dataset.class_names[cls]}" if dataset.class_names else str(cls)
        table.add_row(name, *[f"{info['per_class'][cls]:,}" for info in splits.values()])
    table.add_row("[bold]total[/]", *[f"[bold]{info['images']:,}[/]" for info in splits.values()])
    return table


def checksum_table(summary: dict) -> Table:
    table = Table(title="checksums, verified against the pinned digests", title_justify="left")
    for col in ("file", "algorithm", "digest", ""):  # on a narrow terminal the digest folds, never cut short
        table.add_column(col, overflow="fold", no_wrap=col in ("algorithm", ""))
    for name, (algorithm, digest) in summary["checksums"].items():
        table.add_row(name, algorithm, digest, "[green]ok[/]")
    return table


def models_table() -> Table:
    from hpo import models  # noqa: PLC0415 - torch: only `hpo models` needs it, not `hpo studies`

    table = Table(title="Model presets (use as  model: {preset: NAME}  in a config)", title_justify="left")
    for col, just in (("preset", "left"), ("layout", "left"), ("parameters", "right"), ("from", "left")):
        table.add_column(col, justify=just)
    for name, (source, expected, spec_dict) in models.PRESETS.items():
        spec = models.parse_model({"preset": name})
        count = models.spec_params(spec)
        mark = "" if count == expected else f" [red](seed: {expected:,})[/]"
        table.add_row(name, models.describe(spec), f"{count:,}{mark}", escape(source))
    return table


class TrainProgress:
    """What `hpo train` shows: a headline, a progress bar over each epoch's steps, a line per
    epoch and a summary. The CLI passes `on_step` and `on_epoch` to the trainer."""

    def __init__(self, headline: str, epochs: int):
        self.epochs = epochs
        console.print(headline)
        self.progress = Progress(TextColumn("epoch {task.fields[epoch]}/{task.fields[epochs]}"), BarColumn(),
                                 MofNCompleteColumn(), TimeElapsedColumn(), console=console, transient=True)
        self.task = self.progress.add_task("train", total=None, epoch=1, epochs=epochs)

    def __enter__(self):
        self.progress.__enter__()
        return self

    def __exit__(self, *exc):
        self.progress.__exit__(*exc)

    def on_step(self, step: int, steps: int) -> None:
        self.progress.update(self.task, completed=step, total=steps)

    def on_epoch(self, r) -> None:
        self.progress.console.print(f"epoch {r.epoch:>3}/{self.epochs}  loss {r.train_loss:.4f}  "
                                    f"test {pct(r.test_accuracy)}  lr {r.lr:.3g}  {r.seconds:.1f}s")
        self.progress.update(self.task, epoch=min(r.epoch + 1, self.epochs), completed=0)


def train_summary(history: list, *, n_params: int, device, precision: str) -> str:
    seconds = [r.seconds for r in history]
    best = max(history, key=lambda r: r.test_accuracy)
    return (f"[bold]final test accuracy {pct(history[-1].test_accuracy)}[/], best {pct(best.test_accuracy)} "
            f"(epoch {best.epoch}); {n_params:,} parameters; "
            f"{statistics.mean(seconds):.2f} s/epoch on {device} ({precision})")


# ----------------------------------------------------------------- studies


def _fmt_params(n) -> str:
    return f"{n:,}" if isinstance(n, int) else "-"


def trial_line(t) -> str:
    """One line for a trial that just finished, as `hpo run` prints it off a terminal."""
    n = t.user_attrs.get(records.N_PARAMS)
    kind = records.kind(t)
    if kind == "complete":  # its wall time, as the report gives it: a packed trial's epochs record a share
        seconds = t.duration.total_seconds() if t.duration else sum(records.epoch_seconds(t))
        return (f"trial {t.number:>4} complete  {pct(records.accuracy(t))}  {_fmt_params(n)} params  "
                f"{plural(len(records.epochs(t)), 'epoch')}  {seconds:.1f}s")
    if kind == "rejected":
        return f"trial {t.number:>4} rejected  {_fmt_params(n)} params: over the parameter budget"
    if kind == "pruned":
        last, acc = records.last_epoch(t)
        return f"trial {t.number:>4} pruned    at epoch {last} ({pct(acc)})  {_fmt_params(n)} params"
    # hpo records a reason for every failure it sees; a trial without one was failed for its silence
    reason = t.user_attrs.get(records.FAIL_REASON, "worker lost: no heartbeat for --grace seconds (killed, or its "
                                                   "machine lost)")
    lines = str(reason).strip().splitlines() or [""]  # torch's errors run to many lines: a trial is one
    return f"trial {t.number:>4} failed    {lines[0]}" + (" [...]" if len(lines) > 1 else "")


class RunDisplay:
    """The live view of `hpo run`, drawn from the storage alone (so it sees every machine's workers)."""

    def __init__(self, spec, target: int, where: str, workers: int, *, live: bool, already=(), storage_option=""):
        """`storage_option`: what the hints printed at the end add so they open the same storage
        (` --storage URL` when the run was given one, the password masked)."""
        self.spec, self.target, self.where, self.workers = spec, target, where, workers
        self.storage_option = storage_option
        self.live = None
        # a continued study: its trials that had ended before this run are not printed again
        self.newly_ended = records.NewlyEnded(already)
        if live:
            from rich.live import Live  # noqa: PLC0415

            self.live = Live(console=console, refresh_per_second=4, transient=False)

    def __enter__(self):
        source, where = escape(str(self.spec.source)), escape(self.where)
        console.print(f"[bold]{escape(self.spec.name)}[/] from {source} in {where}: "
                      f"{plural(self.target, 'finished trial')}, {plural(self.workers, 'worker')}")
        if self.live:
            self.live.__enter__()
        return self

    def __exit__(self, *exc):
        if self.live:
            self.live.__exit__(*exc)

    def update(self, trials) -> None:
        if self.live:
            self.live.update(self.panel(trials))
            return
        for t in self.newly_ended(trials):
            console.print(Text(trial_line(t)))  # a failure's reason may hold [brackets]: not markup

    def panel(self, trials):
        from rich.console import Group  # noqa: PLC0415

        c = records.count(trials)
        best = records.best_trial(trials)
        head = (f"finished [bold]{c.finished}/{self.target}[/]  running {c.running}  pruned {c.pruned}  "
                f"rejected {c.rejected}  failed {c.failed}")
        lead = (f"Pareto front so far: {len(records.pareto_front(trials))} trials; most accurate: "
                if self.spec.multi_objective else "best so far: ")
        best_line = (f"{lead}[bold green]{pct(records.accuracy(best))}[/] (trial {best.number}, "
                     f"{_fmt_params(best.user_attrs.get(records.N_PARAMS))} params)" if best else "best so far: -")
        table = Table(box=None, show_header=True, header_style="dim")
        last_acc = "last val. acc." if self.spec.eval == "val" else "last test acc."  # eval: val scores held-out images
        for col in ("running trial", "epoch", last_acc, "params"):
            table.add_column(col)
        for t in trials:
            if records.kind(t) == "running":
                epochs = t.user_attrs.get(records.CONFIG, {}).get("epochs", "?")
                last, acc = records.last_epoch(t)
                table.add_row(str(t.number), f"{last}/{epochs}", pct(acc),
                              _fmt_params(t.user_attrs.get(records.N_PARAMS)))
        recent = [Text(trial_line(t)) for t in sorted(trials, key=lambda t: t.number)
                  if records.kind(t) not in ("running", "waiting")][-5:]
        return Group(head, best_line, table, *recent)

    def summary(self, trials, top: int = 5) -> None:
        print_best(self.spec.name, trials, top=top, held_out=self.spec.eval == "val",
                   multi=self.spec.multi_objective, storage_option=self.storage_option)


def print_best(name: str, trials, *, top: int, held_out: bool, multi: bool, storage_option: str = "") -> None:
    """The best trials' table (a multi-objective study: its Pareto front's), then the export
    command that writes the configs it shows: what `hpo run` ends with and `hpo studies NAME`
    shows."""
    from hpo.errors import password_note  # noqa: PLC0415

    if multi:
        front = len(records.pareto_front(trials))
        title = (f"Pareto front of {name}: {plural(front, 'trial')}, none beaten on both accuracy and size"
                 + (f"; the {top} most accurate" if front > top else ""))
        console.print(top_table(trials, top, title=title, held_out=held_out))
        if front:
            console.print(Text(f"export the front's configs with: hpo export --study {shlex.quote(name)} "
                               f"-o {shlex.quote(name + '-front.yaml')}{storage_option}{password_note(storage_option)}"),
                          soft_wrap=True)
        return
    complete = records.count(trials).complete  # what hpo export writes: complete trials only
    if not complete:
        console.print(Text(f"no trial of {name} completed: {trials_line(trials)}"), soft_wrap=True)
        return
    console.print(top_table(trials, top, title=f"top {min(top, complete)} of {name}", held_out=held_out))
    if complete:
        flag = f" --top {min(top, complete)}" if min(top, complete) > 1 else ""
        what = "configs" if flag else "config"
        console.print(Text(f"export the best {what} with: hpo export --study {shlex.quote(name)}{flag} -o best.yaml"
                           f"{storage_option}{password_note(storage_option)}"), soft_wrap=True)  # never wrapped: to paste


def trials_line(trials, held_out: bool = False) -> str:
    """'6 trials (4 complete, 2 pruned), best 69.33% (trial 4)': a study in one line; `held_out`
    (eval: val): its best is a validation accuracy, 'best 69.33% val'."""
    states = records.count(trials).in_words()
    best = records.best_trial(trials)
    val = " val" if held_out else ""
    return (plural(len(trials), "trial") + (f" ({states})" if states else "")
            + (f", best {pct(records.accuracy(best))}{val} (trial {best.number})" if best else ""))


def print_study_trials(name: str, trials, *, source: str | None, where: str, top: int, held_out: bool,
                       multi: bool, storage_option: str = "", silent: dict | None = None) -> None:
    """`hpo studies NAME`: the study in a line, its best trials and how to export them, then the
    trials a user looks into: those running now (their epoch and worker), and the latest failures
    with their reasons."""
    origin = f" from {source}" if source else ""
    console.print(Text("study ", style="bold") + Text(f"{name}{origin} in {where}: {trials_line(trials, held_out)}"),
                  soft_wrap=True)
    if records.count(trials).complete:
        print_best(name, trials, top=top, held_out=held_out, multi=multi, storage_option=storage_option)
    running = [t for t in trials if records.kind(t) == "running"]
    for t in running:
        epochs = t.user_attrs.get(records.CONFIG, {}).get("epochs", "?")
        last, acc = records.last_epoch(t)
        at = f"after epoch {last}/{epochs} ({pct(acc)})" if last else f"in epoch 1/{epochs}"
        worker = t.user_attrs.get(records.WORKER)
        quiet = (silent or {}).get(t.number)
        # a worker beats every HEARTBEAT_SECONDS (30 s by default): twice that without one, it may be gone
        gone = (f"; no heartbeat for {quiet:.0f} s: its worker may be gone (its trial is failed and re-run once "
                "its heartbeat is --grace old)" if quiet is not None and quiet > 60 else "")
        console.print(Text(f"trial {t.number:>4} running   {at}" + (f", worker {worker}" if worker else "") + gone))
    failed = [t for t in trials if records.kind(t) == "failed"]
    shown = failed[-5:]
    if len(failed) > len(shown):
        console.print(Text(f"the last {len(shown)} of {len(failed)} failed trials:"))
    for t in shown:
        console.print(Text(trial_line(t)), soft_wrap=True)


def top_table(trials, top: int, *, title: str, held_out: bool = False) -> "TopTable":
    """The best trials (in a multi-objective study, the Pareto front's, most accurate first);
    with `held_out` (eval: val) the value is the validation accuracy, and the test accuracy,
    measured once at the end, stands beside it."""
    rows = []
    for t in records.ranked(trials, top):
        seconds = records.epoch_seconds(t)
        changed = ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in t.params.items())
        base = " (base)" if t.user_attrs.get(records.BASE) else ""
        value = pct(records.accuracy(t))
        values = (value, pct(t.user_attrs.get(records.TEST_ACCURACY))) if held_out else (value,)
        best_epoch = t.user_attrs.get(records.BEST_EPOCH)
        rows.append((f"{t.number}{base}", *values, "-" if best_epoch is None else str(best_epoch),
                     _fmt_params(t.user_attrs.get(records.N_PARAMS)),
                     f"{sum(seconds) / len(seconds):.2f}" if seconds else "-", changed))
    value = ("val. acc.", "test acc.") if held_out else ("test acc.",)
    return TopTable(title, ("trial", *value, "best epoch", "params", "s/epoch"), rows)


class TopTable:
    """The best trials' table, laid out for the width it is drawn at: the numbers are never cut
    ("91.6…") nor split (a header wraps at its spaces instead), and the config, last, folds onto
    as many lines as it needs. Where the numbers leave it too little room (a terminal under about
    65 columns) each trial's config is a line under the table instead of a cropped column."""

    CONFIG_WIDTH = 20  # the least the config column is given before it moves under the table

    def __init__(self, title: str, columns: tuple[str, ...], rows: list[tuple[str, ...]]):
        self.title, self.columns, self.rows = title, columns, rows

    @property
    def widths(self) -> list[int]:
        return [max([*(len(word) for word in col.split()), *(len(r[i]) for r in self.rows)])
                for i, col in enumerate(self.columns)]

    def __rich_console__(self, console, options):
        natural = [max([len(col), *(len(r[i]) for r in self.rows)]) for i, col in enumerate(self.columns)]
        config = options.max_width - sum(natural) - 3 * (len(natural) + 1) - 1  # what the numbers leave it
        inside = config >= self.CONFIG_WIDTH
        widths = natural if inside else self.widths  # headers on one line, or wrapped at their spaces
        if not inside and options.max_width < sum(widths) + 3 * len(widths) + 1:  # no room: a line a trial
            yield Text(self.title, style="italic")
            for row in self.rows:
                facts = ", ".join(f"{value} {col}" if col != "best epoch" else f"best epoch {value}"
                                  for col, value in zip(self.columns[1:], row[1:-1]))
                yield Text(f"trial {row[0]}: {facts}; {row[-1]}")
            return
        table = Table(title=Text(self.title, style="table.title"), title_justify="left")  # a name is no markup
        for col, width in zip(self.columns, widths):  # each exactly as wide as it was measured
            table.add_column(col, justify="right", overflow="fold", width=width)
        if inside:
            table.add_column("config", justify="left", overflow="fold", width=config)
        for row in self.rows:
            table.add_row(*row[:-1], *((escape(row[-1]),) if inside else ()))
        yield table
        if not inside:
            for row in self.rows:
                yield Text(f"trial {row[0]}: {row[-1]}")


def studies_table(studies: dict, held_out: frozenset = frozenset()):
    """`studies`: each study's name, its finished trials (what --trials counts), its best trial, and
    its trials by state, the nonzero ones only (so the table fits an 80-column terminal). A
    multi-objective study's best is its Pareto front's most accurate trial; a line under the table
    gives the front's size. `queued`: trials waiting for a worker (enqueued, or re-queued after a
    crash or Ctrl-C); the next `hpo run` on the study trains them first. `held_out`: the studies
    with eval: val, whose best is a validation accuracy, marked so."""
    fronts = [f"{name}: accuracy against size, a Pareto front of {plural(len(records.pareto_front(trials)), 'trial')}; "
              "best is its most accurate" for name, trials in studies.items() if records.multi_objective(trials)]
    rows = []
    for name, trials in studies.items():
        c = records.count(trials)
        best = records.best_trial(trials)
        states = c.in_words()
        value = pct(records.accuracy(best)) + (" val" if name in held_out else "") if best else "-"
        rows.append((escape(name), f"{c.finished:,}", value,
                     _fmt_params(best.user_attrs.get(records.N_PARAMS)) if best else "-",
                     str(best.number) if best else "-", states or "none yet"))
    if any(name in held_out and records.best_trial(trials) for name, trials in studies.items()):
        fronts.append("val: validation accuracy, on training images held out (eval: val); "
                      "hpo studies NAME gives the test set's")
    return StudiesTable(rows, [Text(line) for line in fronts])  # fronts under the table, not wrapped to its width


class StudiesTable:
    """`hpo studies`' table, laid out for the width it is drawn at."""

    COLUMNS = ("study", "finished", "best", "params", "trial", "trials by state")

    def __init__(self, rows: list[tuple[str, ...]], below: list):
        self.rows, self.below = rows, below

    @property
    def widths(self) -> list[int]:
        """Each column's width on one line: its header's, or its widest cell's."""
        return [max([len(col), *(len(row[i]) for row in self.rows)]) for i, col in enumerate(self.COLUMNS)]

    def piped_width(self, width: int) -> int:
        """The width to draw at off a terminal (a pipe, a log, a file): `width`, or as wide as every
        name and state on one line needs. Folded at 120 columns, a long name no longer matched a grep."""
        return max(width, sum(self.widths) + 3 * len(self.COLUMNS) + 1)

    def __rich_console__(self, console, options):
        table = Table(title="studies", title_justify="left")
        widths = self.widths
        # a study's name is what a user types next, and a number cut short says nothing: neither is
        # ever shortened for a narrow terminal. The states wrap; a name wider than the room the numbers
        # leave (at least NAME_WIDTH) folds onto more lines: kept on one, it pushed them off the table.
        # Where even that leaves the states too little room (under about 65 columns), they are a line
        # under the table per study, instead of a column cut off at the terminal's edge
        numbers = sum(widths[1:5])
        if options.max_width < min(widths[0], NAME_WIDTH) + numbers + STATES_WIDTH + 3 * len(self.COLUMNS) + 1:
            yield from self._without_states(widths, options.max_width)
            return
        room = options.max_width - numbers - min(widths[5], STATES_WIDTH) - 3 * len(self.COLUMNS) - 1
        for i, col in enumerate(self.COLUMNS):
            if i == 0:
                fits = widths[0] <= room  # else folded at a fixed width, the states taking what is left
                table.add_column(col, overflow="fold", min_width=widths[0] if fits else None,
                                 width=None if fits else max(room, NAME_WIDTH))
            else:
                table.add_column(col, justify="left" if i == 5 else "right", no_wrap=i < 5,
                                 min_width=None if i == 5 else widths[i], overflow="fold")  # never "compl…"
        for row in self.rows:
            table.add_row(*row)
        yield table
        yield from self.below

    def _without_states(self, widths: list[int], width: int):
        numbers = sum(widths[1:5])
        name = min(widths[0], width - numbers - 14)  # 5 columns without the outer edge: 10 of padding, 4 borders
        if name < NAME_WIDTH:  # not even the numbers fit beside a name: a line a study
            for row in self.rows:
                yield Text.from_markup(f"{row[0]}: {row[1]} finished, best {row[2]} (trial {row[4]}, {row[3]} "
                                       f"params); {escape(row[5])}")  # the name is escaped markup already
            yield from self.below
            return
        table = Table(title="studies", title_justify="left", show_edge=False)  # two columns more for the numbers
        table.add_column(self.COLUMNS[0], overflow="fold", width=name)
        for i, col in enumerate(self.COLUMNS[1:5], start=1):
            table.add_column(col, justify="right", no_wrap=True, width=widths[i])
        for row in self.rows:
            table.add_row(*row[:5])
        yield table
        for row in self.rows:
            yield Text.from_markup(f"{row[0]}: {escape(row[5])}")  # the name is escaped markup already
        yield from self.below


NAME_WIDTH = 10    # `hpo studies`: the least a study's name is given before it folds,
STATES_WIDTH = 10  # and what it leaves its trials by state, which wrap ("3 complete,")


def print_study(facts: dict) -> None:
    """`hpo check` of one study file: what it will run (facts: as overview.study_facts gives them), a
    line each, never wrapped mid-value (a path or a range copies whole)."""
    console.print(Text("study ", style="bold") + Text(f"{facts['name']} from {facts['file']}"), soft_wrap=True)
    for key in ("base", "models", "epochs", "data", "eval", "objectives", "pruner", "sampler"):
        console.print(Text(f"  {key:<12}", style="bold") + Text(facts[key]), soft_wrap=True)


def search_table(params) -> Table:
    """The searched keys in the order they are sampled (a `when` sees the values drawn before it)."""
    from hpo.applies import implied_when  # noqa: PLC0415

    table = Table(title=f"searched: {len(params)} parameter(s), sampled in this order", title_justify="left")
    for col in ("parameter", "draws", "when"):  # a key cut to "model.layers…" names no key: folded instead
        table.add_column(col, overflow="fold")
    for p in params:
        name = p.name if p.name == p.key else f"{p.name} (sets {p.key})"
        when = ", ".join(f"{key} = {plain(allowed[0])}" if len(allowed) == 1 else
                         f"{key} in {' | '.join(map(plain, allowed))}" for key, allowed in p.when)
        implied = implied_when(p.key)  # drawn only where it means something, `when` or not
        if implied and implied.split()[0] not in when:
            when = ", ".join(filter(None, [when, f"{implied} (implied)"]))
        table.add_row(escape(name), escape(p.describe()), escape(when))
    return table


def studies_check_table(rows: list[dict]) -> "CheckTable":
    """`hpo check` of several study files: a row each."""
    return CheckTable([(r["name"], str(r["searched"]), f"{r['base_params']:,}",
                        f"{r['budget']:,}" if r["budget"] else "-", str(r["max_epochs"]), r["eval_on"],
                        r["pruner_name"], r["sampler_name"]) for r in rows])


class CheckTable:
    """`hpo check`'s table of several study files, laid out for its width: a long name folds, and
    no number or word is cut ("search…", "6,5…"); where the columns do not fit beside a name of
    NAME_WIDTH, each file is a line of its own."""

    COLUMNS = (("study", "left"), ("searched", "right"), ("base params", "right"), ("budget", "right"),
               ("epochs", "right"), ("eval", "left"), ("pruner", "left"), ("sampler", "left"))

    def __init__(self, rows: list[tuple[str, ...]]):
        self.rows = rows

    def __rich_console__(self, console, options):
        for header in (lambda col: [col], str.split):  # headers on one line, else wrapped at their spaces
            widths = [max([*map(len, header(col)), *(len(r[i]) for r in self.rows)])
                      for i, (col, _) in enumerate(self.COLUMNS)]
            room = options.max_width - sum(widths[1:]) - 3 * len(widths) - 1  # what the others leave the name
            if room >= min(widths[0], NAME_WIDTH):
                break
        else:
            yield Text("study files that parse, with everything they need", style="italic")
            for row in self.rows:
                yield Text(f"{row[0]}: " + ", ".join(f"{col} {value}" for (col, _), value
                                                     in zip(self.COLUMNS[1:], row[1:])))
            return
        table = Table(title="study files that parse, with everything they need", title_justify="left")
        for i, (col, just) in enumerate(self.COLUMNS):
            table.add_column(col, justify=just, overflow="fold", width=min(widths[0], room) if i == 0 else widths[i])
        for row in self.rows:
            table.add_row(*map(escape, row))
        yield table
