"""The `hpo` command line: argument parsing and what a user sees. Work happens elsewhere."""

from __future__ import annotations

import argparse
import errno
import os
import re
import shlex
import signal
import sys
import threading
from contextlib import contextmanager, redirect_stdout
from pathlib import Path

from hpo import __version__
from hpo.errors import ConfigError, UserError
from hpo.limits import MAX_EPOCHS, MAX_PACK, MAX_SEED, MAX_WORKERS

EXIT_USAGE = 2


def number_type(kind: type, what: str, ok, bounds: str):
    """An argparse type: `kind` parsed from text, then checked by `ok`; errors say what fits."""

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if not ok(value):
            raise argparse.ArgumentTypeError(f"must be {bounds}, got {value}")
        return value

    return parse


positive_int = number_type(int, "a whole number", lambda v: v >= 1, "1 or more")
worker_count = number_type(int, "a whole number", lambda v: 1 <= v <= MAX_WORKERS, f"between 1 and {MAX_WORKERS}")


def workers_arg(text: str) -> int | str:
    """--workers: a count, or `auto` (one single-thread worker per CPU core, or 8 per GPU, 16 under CUDA MPS)."""
    if text.strip().lower() == "auto":
        return "auto"
    try:
        return worker_count(text)
    except argparse.ArgumentTypeError as error:
        raise argparse.ArgumentTypeError(f"{error} (or auto)") from None


epoch_count = number_type(int, "a whole number", lambda v: 1 <= v <= MAX_EPOCHS, f"between 1 and {MAX_EPOCHS}")
seed_number = number_type(int, "a whole number", lambda v: 0 <= v <= MAX_SEED, f"from 0 to {MAX_SEED:,}")
trial_number = number_type(int, "a whole number", lambda v: v >= 0, "0 or more")
pack_count = number_type(int, "a whole number", lambda v: 1 <= v <= MAX_PACK, f"between 1 and {MAX_PACK}")
positive_float = number_type(float, "a number", lambda v: v > 0, "greater than 0")
port_number = number_type(int, "a port number", lambda v: 0 <= v <= 65535, "between 0 and 65535")


def path_arg(text: str) -> Path:
    """A file or folder flag: a leading ~ is the home folder even where the shell left it (quoted,
    or after `=`: `--data-dir=~/data`). Empty (an unset variable) is refused: it would mean the
    working folder, where a run then strews its files."""
    if not text.strip():
        raise argparse.ArgumentTypeError("is empty; give a path, or leave the flag out for its default")
    return Path(text).expanduser()


def storage_url(text: str) -> str:
    """--storage: given empty (an unset variable in `--storage "$DB"`), it must not quietly mean
    the default database."""
    if not text.strip():
        raise argparse.ArgumentTypeError("is empty; give a database URL (sqlite:///hpo.db), or leave --storage out "
                                         "for $HPO_STORAGE or the default")
    return text


def output_arg(text: str) -> Path:
    """-o: a file's path, or - for standard output. Checked here for emptiness, which a Path cannot
    tell from `.` (a folder: check_output says so)."""
    if not text.strip():
        raise argparse.ArgumentTypeError("is empty; give a file name")
    return path_arg(text)


class Parser(argparse.ArgumentParser):
    """argparse that prints one line, pointing to --help, and exits 2 on a usage error. A
    command's parser (`hpo run`) says itself what it does not know, and points to its own --help:
    left to the top parser it said `hpo: error: unrecognized arguments`, and a misspelt flag that
    hid a required one was not named at all (`--trails 2`: "required: --trials")."""

    given: list[str] = []

    def parse_known_args(self, args=None, namespace=None):
        self.given = list(sys.argv[1:] if args is None else args)
        parsed, extras = super().parse_known_args(args, namespace)
        if extras and " " in self.prog:  # a command's parser
            self.error(f"unrecognized arguments: {' '.join(extras)}")
        return parsed, extras

    def error(self, message: str):
        import difflib  # noqa: PLC0415

        unknown = self.unknown_options()
        if message.startswith("unrecognized arguments"):
            message += did_you_mean(unknown)
        elif message.startswith("the following arguments are required") and unknown:
            message += f"; unknown: {', '.join(unknown)}{did_you_mean(unknown)}"
        choice = re.match(r"argument .*: invalid choice: '(.*)' \(choose from (.*)\)$", message)
        if choice and unknown and " " not in self.prog:  # `hpo --storage URL studies`: URL taken for the command
            first = next(iter(unknown))
            message = (f"{', '.join(unknown)} before the command: a command's options go after it "
                       f"(hpo COMMAND {first} ...)")
        elif choice:  # a misspelt command or choice
            close = difflib.get_close_matches(choice[1], re.findall(r"'([^']*)'", choice[2]), n=1, cutoff=0.75)
            message += f" (did you mean {close[0]}?)" if close else ""
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")

    def unknown_options(self) -> dict[str, str | None]:
        """The flags given that this parser neither takes nor abbreviates, each with the flag it
        takes that is closest to it (None where none is close)."""
        import difflib  # noqa: PLC0415

        known = [flag for flag in self._option_string_actions if flag.startswith("--")]
        found = {}
        for word in self.given:
            flag = word.split("=", 1)[0]
            if word == "--" or not flag.startswith("--") or any(k.startswith(flag) for k in known):
                continue  # a value, a known flag, or an abbreviation argparse takes
            # on the names alone: the shared '--' made --dry 'close' to --study, --out to --timeout
            close = difflib.get_close_matches(flag[2:], [k[2:] for k in known], n=1, cutoff=0.7)
            found[flag] = f"--{close[0]}" if close else None
        return found

    def _print_message(self, message: str, file=None) -> None:
        # argparse's own drops a failed write: `hpo --help > /dev/full` would exit 0, nothing written
        if message:
            (file or sys.stderr).write(message)


def did_you_mean(unknown: dict[str, str | None]) -> str:
    """' (did you mean --storage?)', or for several ' (did you mean --storage for --stroage, ...?)'."""
    close = {flag: near for flag, near in unknown.items() if near}
    if not close:
        return ""
    if len(close) == 1:
        return f" (did you mean {next(iter(close.values()))}?)"
    return f" (did you mean {', '.join(f'{near} for {flag}' for flag, near in close.items())}?)"


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="hpo", description="Hyperparameter search for small image classifiers.")
    parser.add_argument("--version", action="version", version=f"hpo {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)

    def data_dir(p):
        p.add_argument("--data-dir", type=path_arg, default=None, metavar="ROOT",
                       help="data root: dataset NAME is in ROOT/NAME (default: $HPO_DATA_DIR, else "
                            "$XDG_CACHE_HOME/hpo, else ~/.cache/hpo)")

    def device(p):
        p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"],
                       help="where to train: auto takes CUDA when there is one (default: auto)")

    def artifacts(p):
        p.add_argument("--artifacts", type=path_arg, default=None, metavar="DIR",
                       help="artifact store: each trial's config as a file the dashboard downloads (default: "
                            "$HPO_ARTIFACTS, else NAME-artifacts/ beside an SQLite file NAME.db, else ./hpo-artifacts)")

    def storage(p):
        p.add_argument("--storage", type=storage_url, default=None, metavar="URL",
                       help="SQLAlchemy URL of the study database (default: $HPO_STORAGE, "
                            "else sqlite:///hpo.db in the working directory)")

    p = sub.add_parser("data", help="fetch and verify a dataset, or check your own images; print counts per class")
    p.add_argument("source", nargs="?", default=None, metavar="NAME|PATH",
                   help="a registered dataset (mnist, fashion-mnist, kmnist, or another name registered in "
                        "hpo.datasets), or your own images: an .npz file or a folder of train/CLASS and test/CLASS "
                        "folders, read where it is (write ./NAME for a folder named like a dataset; default: mnist)")
    p.add_argument("--dataset", default=None, metavar="NAME", help="the same as NAME")
    data_dir(p)
    p.set_defaults(handler=cmd_data)

    p = sub.add_parser("models", help="list the model presets with their parameter counts")
    p.set_defaults(handler=cmd_models)

    p = sub.add_parser("train", help="train one config from a YAML file")
    p.add_argument("--config", required=True, type=path_arg, metavar="FILE.yaml",
                   help="a training config, or an export file (its first trial is trained, or --trial's)")
    p.add_argument("--trial", type=trial_number, metavar="N", help="of an export file, the trial numbered N")
    p.add_argument("--epochs", type=epoch_count, help="override the config's epochs")
    p.add_argument("--seed", type=seed_number, help="override the config's seed")
    device(p)
    data_dir(p)
    p.set_defaults(handler=cmd_train)

    p = sub.add_parser("verify", help="re-train one config with several seeds: final accuracy, mean ± std")
    p.add_argument("--config", required=True, type=path_arg, metavar="FILE.yaml",
                   help="a training config, or an export file (its first trial, or --trial's)")
    p.add_argument("--trial", type=trial_number, metavar="N", help="of an export file, the trial numbered N")
    p.add_argument("--seeds", type=positive_int, default=5, metavar="N",
                   help="how many seeds, from the config's seed on (default: 5)")
    p.add_argument("--epochs", type=epoch_count, help="override the config's epochs")
    p.add_argument("--workers", type=positive_int, default=1, metavar="K",
                   help="train K seeds at once, each in a process of its own (on the CPU they split the cores; "
                        "default: 1, one seed after another)")
    p.add_argument("--json", action="store_true", help="print the result as JSON on standard output, nothing else")
    p.add_argument("--against", type=path_arg, metavar="RESULT.json",
                   help="an earlier `hpo verify --json` result (another config, say the seed's recipe): print the "
                        "difference of the means with its 95%% interval (Welch's t) and whether it is beyond the "
                        "seeds' noise")
    device(p)
    data_dir(p)
    p.set_defaults(handler=cmd_verify)

    p = sub.add_parser("run", help="run (or continue) a study until it has N finished trials")
    p.add_argument("--study", required=True, metavar="NAME|PATH",
                   help="a study under studies/ by name (e.g. quickstart), or a path to a study YAML file")
    p.add_argument("--trials", required=True, type=positive_int, metavar="N",
                   help="finished trials (complete + pruned, over-budget rejections excluded) the study "
                        "should have in total, across every worker and machine")
    p.add_argument("--workers", type=workers_arg, default=1, metavar="K|auto",
                   help="worker processes on this machine; auto: one per CPU core, each with one torch thread "
                        "(as many as the free memory holds), or 8 per GPU, 16 where CUDA MPS runs (default: 1)")
    p.add_argument("--pack", type=pack_count, default=1, metavar="K",
                   help="each worker claims K trials at a time and trains those of one shape (layers, batch size, "
                        "epochs) as one stacked model, the rest one at a time (default: 1; for a GPU, where a small "
                        "net's step is launches, not arithmetic: BENCHMARKS.md)")
    p.add_argument("--timeout", type=positive_float, metavar="SECONDS", help="stop starting new trials after this long")
    storage(p)
    device(p)
    data_dir(p)
    p.add_argument("--quiet", action="store_true", help="no live display; a line per finished trial")
    p.add_argument("--heartbeat", type=positive_int, default=30, metavar="SECONDS",
                   help="how often a running trial signals it is alive (default: 30)")
    p.add_argument("--grace", type=positive_int, default=120, metavar="SECONDS",
                   help="a trial silent this long is failed and retried from its checkpoint (default: 120)")
    p.add_argument("--checkpoint-dir", type=path_arg, default=Path("checkpoints"), metavar="DIR",
                   help="per-epoch trial checkpoints, one folder per study (default: ./checkpoints)")
    p.add_argument("--db-patience", type=positive_float, default=60.0, metavar="SECONDS",
                   help="how long a worker waits out an unreachable database before it stops (default: 60)")
    artifacts(p)
    p.set_defaults(handler=cmd_run)

    p = sub.add_parser("check", help="read study files and say what each would run, or what is wrong in it "
                                     "(touches no database, fetches nothing)")
    p.add_argument("studies", nargs="+", metavar="STUDY",
                   help="a study under studies/ by name (e.g. quickstart), or a path to a study YAML file")
    data_dir(p)
    p.set_defaults(handler=cmd_check)

    p = sub.add_parser("studies", help="list the studies in a storage, or show one: its best trials, those "
                                       "running, its failures")
    p.add_argument("study", nargs="?", metavar="NAME", help="show this study: its best trials and how to export "
                   "them, its running trials (epoch, worker) and its latest failures with their reasons")
    p.add_argument("--top", type=positive_int, default=None, metavar="K",
                   help="with NAME: how many of the best trials to show (default: 10)")
    storage(p)
    p.set_defaults(handler=cmd_studies)

    p = sub.add_parser("delete", help="delete a study for good: its trials and the config files it stored")
    p.add_argument("--study", required=True, metavar="NAME", help="the study's name (hpo studies lists them)")
    p.add_argument("-y", "--yes", action="store_true",
                   help="delete without asking (needed where standard input is not a terminal)")
    p.add_argument("--force", action="store_true",
                   help="delete it even with trials marked running, when no run is training it any more "
                        "(a worker killed before it could end its trial)")
    p.add_argument("--grace", type=positive_int, default=120, metavar="SECONDS",
                   help="with --force: a running trial's worker silent this long is gone (default: 120, as hpo run's; "
                        "give the --grace your runs used)")
    p.add_argument("--checkpoint-dir", type=path_arg, default=Path("checkpoints"), metavar="DIR",
                   help="where its runs kept the checkpoints of trials they left unfinished, which go too "
                        "(default: ./checkpoints, as hpo run's)")
    storage(p)
    artifacts(p)
    p.set_defaults(handler=cmd_delete)

    p = sub.add_parser("export", help="write the best trials' configs as YAML that `hpo train` re-trains "
                                      "(a multi-objective study: its Pareto front)")
    p.add_argument("--study", required=True, metavar="NAME", help="the study's name (hpo studies lists them)")
    p.add_argument("--top", type=positive_int, default=None, metavar="K",
                   help="how many of the best trials (default: 1); of a multi-objective study's Pareto front, "
                        "the K most accurate (default: all of it)")
    p.add_argument("-o", "--output", type=output_arg, metavar="FILE",
                   help="write here instead of standard output (- is standard output)")
    storage(p)
    p.set_defaults(handler=cmd_export)

    p = sub.add_parser("dashboard", help="review studies in a browser: optuna-dashboard on the same storage")
    storage(p)
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default: 127.0.0.1, this machine only; 0.0.0.0 exposes it)")
    p.add_argument("--port", type=port_number, default=8080, help="port to listen on; 0 picks a free one (default: 8080)")
    artifacts(p)
    p.set_defaults(handler=cmd_dashboard)

    p = sub.add_parser("report", help="write one self-contained HTML report of a study (opens offline)")
    p.add_argument("--study", required=True, metavar="NAME", help="the study's name (hpo studies lists them)")
    p.add_argument("-o", "--output", type=output_arg, default=Path("report.html"), metavar="FILE",
                   help="where to write it; - is standard output (default: report.html)")
    storage(p)
    p.set_defaults(handler=cmd_report)
    return parser


# ----------------------------------------------------------------- handlers


def cmd_data(args) -> int:
    from hpo import data  # noqa: PLC0415 - keep `hpo --help` fast
    from hpo.display import checksum_table, console, data_table, escape  # noqa: PLC0415

    if args.source and args.dataset and args.source != args.dataset:
        raise UserError(f"hpo data {args.source} --dataset {args.dataset}: two datasets; give one")
    given = args.source or args.dataset or "mnist"
    dataset = data_source(given)
    if dataset.path is not None:  # your own images, read where they are: nothing to fetch or pin
        if args.data_dir is not None:
            raise UserError(f"--data-dir is where registered datasets live; {given} is read where it is: "
                            "drop --data-dir")
        summary = data.summary(dataset, Path(dataset.path))
        shape = "x".join(map(str, dataset.shape))
        console.print(f"{escape(dataset.path)}: {summary['splits']['train']['images']:,} training and "
                      f"{summary['splits']['test']['images']:,} test images of {shape} (channels x height x width), "
                      f"{dataset.classes} classes; pixel mean {fmt_channels(dataset.mean)}, "
                      f"std {fmt_std(dataset.std)}", soft_wrap=True)
        console.print(data_table(summary))
        console.print(f"use it in a study's base or a config: data: {{dataset: {dataset.source}, "
                      f"path: {escape(dataset.path)}}}", soft_wrap=True)
        return 0
    folder = data.ensure(dataset, args.data_dir, log=lambda line: console.print(line, style="dim"))
    summary = data.summary(dataset, folder)
    # a path copies whole, unwrapped
    console.print(f"{dataset.title} ({dataset.name}) in {escape(str(folder))}", soft_wrap=True)
    console.print(data_table(summary))
    console.print(checksum_table(summary))
    return 0


def data_source(given: str):
    """`hpo data`'s NAME|PATH as a `Dataset`: a registered name first, else an .npz file or a folder."""
    from hpo import datasets  # noqa: PLC0415
    from hpo.config import Data  # noqa: PLC0415

    if given in datasets.DATASETS:
        return datasets.get(given)
    path = Path(given).expanduser()
    if not path.exists():
        raise UserError(f"unknown dataset {given!r}; choose from {', '.join(datasets.DATASETS)}, or give the path of "
                        "your own images, an .npz file or a folder of class folders (none is at that path)")
    kind = "folder" if path.is_dir() else "npz"
    try:
        return datasets.describe(Data(dataset=kind, path=str(path)))
    except ConfigError as error:  # located by the config key data.path, which this command has not
        raise UserError(error.reason) from None


def fmt_channels(values) -> str:
    return ", ".join(f"{v:.4f}" for v in values)


def fmt_std(stds) -> str:
    """A dataset's std per channel as it is. A constant channel's is 0, and hpo divides it by 1
    (owndata.statistics): of [0, 1] pixels no other std reaches 1, so 1 marks it."""
    return ", ".join("0 (constant: divided by 1)" if v == 1.0 else f"{v:.4f}" for v in stds)


def cmd_models(args) -> int:
    from hpo.display import console, models_table  # noqa: PLC0415

    console.print(models_table())
    return 0


def cmd_train(args) -> int:
    import torch  # noqa: PLC0415

    from hpo import data, models  # noqa: PLC0415
    from hpo.config import load_export  # noqa: PLC0415
    from hpo.display import TrainProgress, console, escape, train_summary  # noqa: PLC0415
    from hpo.schema import plural  # noqa: PLC0415
    from hpo.space import model_size  # noqa: PLC0415
    from hpo.steps import static_reason  # noqa: PLC0415
    from hpo.trainer import Diverged, bf16_autocast, check_data, out_of_memory, pick_device, train  # noqa: PLC0415

    cfg, record = load_export(args.config, args.trial)
    cfg = with_flags(cfg, args.config, epochs=args.epochs, seed=args.seed)
    device = pick_device(args.device)
    splits = data.load(cfg.data, device, args.data_dir)
    try:
        check_data(cfg, splits)  # before the headline that counts its images
    except ConfigError as error:
        raise error.located(args.config) from None
    n_params = model_size(cfg)
    n_train = cfg.data.train_subset or len(splits.train_y)
    n_test = cfg.data.test_subset or len(splits.test_y)
    layout = models.describe(cfg.model, shape=splits.dataset.shape, classes=splits.dataset.classes)
    headline = (f"[bold]{escape(str(args.config))}[/]: {escape(layout)}, {n_params:,} parameters, {cfg.optimizer.name} "
                f"lr={cfg.optimizer.lr:g}, batch {cfg.batch_size}, {plural(cfg.epochs, 'epoch')}, {n_train:,} train / "
                f"{n_test:,} test images of {splits.dataset.title} on {device}"
                + (f"; scored: the weights' moving average (ema {cfg.ema:g})" if cfg.ema else ""))
    try:
        with TrainProgress(headline, cfg.epochs) as progress:
            history = train(cfg, splits, on_step=progress.on_step, on_epoch=progress.on_epoch)
    except Diverged as error:  # the config is valid; training it is what failed
        print(f"hpo train: diverged: {error}; try a lower optimizer.lr in {args.config}", file=sys.stderr)
        return 1
    except Exception as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        if out_of_memory(error):
            print(f"hpo train: out of memory on {device}: {first}; lower batch_size or the model's widths in "
                  f"{args.config}", file=sys.stderr)
            return 1
        if not isinstance(cfg.model, models.usermodel.ModuleModel) or os.environ.get("HPO_DEBUG"):
            raise  # hpo's own models failing is hpo's bug: its traceback
        # your model's code failing as it trains (BatchNorm1d at batch_size 1, say): its error, in a line
        print(f"hpo train: {cfg.model.target} failed as it trained: {type(error).__name__}: {first} "
              "(HPO_DEBUG=1 shows the traceback)", file=sys.stderr)
        return 1
    for note in rerun_notes(record, device, torch.get_num_threads(), n_params=n_params,
                            held_out=data.validation_size(len(splits.train_y)), test_images=(n_test, len(splits.test_y)),
                            data_digest=splits.dataset.digest, model_digest=model_digest(cfg)):
        print(f"hpo train: note: {note}", file=sys.stderr)
    precision = "bf16 autocast" if bf16_autocast(device.type) else "fp32"
    if device.type == "cuda":  # the graph is an epoch's 10x: say whether this config had it, and why not
        reason = static_reason(cfg, device)
        precision += ", the step one CUDA graph" if reason is None else f", eager step: {reason}"
    console.print(train_summary(history, n_params=n_params, device=device, precision=precision))
    return 0


def rerun_notes(record: dict | None, device, threads: int | None, *, n_params: int | None = None,
                held_out: int | None = None, test_images: tuple[int, int] | None = None,
                data_digest: str | None = None, model_digest: str | None = None) -> list[str]:
    """Why `hpo train` (or `hpo verify`) of an exported trial may not give the trial's own number:
    each difference between how the trial trained and how this run does, as a line (nothing for a
    plain config). `threads`: this run's torch threads on a CPU (None: not one count, as verify's
    processes share the cores); `held_out`: the training images an `eval: val` study held out of
    it; `test_images`: the test images this run scores, and the whole test set's (a study's
    `test_accuracy` is scored on all of it); the rest as `other_net_notes` has them."""
    if not record:
        return []
    number = record.get("trial", "?")
    notes = other_net_notes(record, n_params=n_params, data_digest=data_digest, model_digest=model_digest)
    trained_on, here = record.get("device"), "cpu" if device.type == "cpu" else "a GPU"
    if isinstance(trained_on, str) and (trained_on == "cpu") != (device.type == "cpu"):
        notes.append(f"trial {number} trained on {trained_on}, this run on {here}: other kernels, another rounding; "
                     "expect its accuracy within the seeds' spread, not its digits")
    if isinstance(record.get("packed"), int) and record["packed"] > 1:
        notes.append(f"trial {number} trained packed with {record['packed'] - 1} other trial(s) (--pack): the same "
                     "recipe, not the same run (README, --pack); expect its accuracy within the seeds' spread")
    test_accuracy = record.get("test_accuracy")
    if isinstance(test_accuracy, (int, float)) or "validation_accuracy_per_epoch" in record:  # eval: val
        without = f"{held_out:,} held-out training images" if held_out else "the held-out training images"
        scored = (f"all {test_images[1]:,} test images" if test_images else "the whole test set")
        here = ("" if not test_images or test_images[0] == test_images[1] else
                f", where this run tests on {test_images[0]:,} of them (data.test_subset): expect a wider spread")
        compare = (f"compare with the trial's test_accuracy, {100 * test_accuracy:.2f}%, scored on {scored}{here}"
                   if isinstance(test_accuracy, (int, float)) else
                   "the trial recorded no test accuracy to compare with")
        notes.append(f"trial {number}'s value is its validation accuracy (eval: val: trained without {without}); "
                     f"this run trains on what the config says and scores the test set: {compare}")
    trained = record.get("torch_threads")
    if device.type == "cpu" and isinstance(trained, int) and threads is not None and trained != threads:
        notes.append(f"trial {number} trained with {trained} torch thread(s), this run with {threads}: a CPU's sums "
                     f"round by the thread count, and a short run turns that into points; OMP_NUM_THREADS={trained} "
                     "gives the trial's own digits on this machine")
    return notes


def other_net_notes(record: dict | None, *, n_params: int | None = None, data_digest: str | None = None,
                    model_digest: str | None = None) -> list[str]:
    """rerun_notes' first lines: where an exported trial's accuracy says nothing of this run, the own
    data at data.path, your factory's code, or the net's size differing from what it was searched
    with. `n_params`: this run's net; `data_digest`: of the own data it trains on; `model_digest`: of
    its factory's code (hpo.usermodel.code_digest)."""
    if not record:
        return []
    number, notes = record.get("trial", "?"), []
    searched_on = record.get("data_digest")
    if isinstance(searched_on, str) and data_digest and searched_on != data_digest:
        notes.append(f"trial {number} was searched on other data: the images, labels or classes this run found at "
                     "data.path differ (changed since, or another file of that name); its accuracy says nothing "
                     "of this run")
    model = (record.get("config") or {}).get("model")
    factory = model.get("module") if isinstance(model, dict) else None
    searched_with = record.get("model_digest")
    code_changed = isinstance(searched_with, str) and model_digest is not None and searched_with != model_digest
    if code_changed:
        notes.append(f"trial {number} was searched with other model code: the code of {factory} this run imported "
                     "differs (changed since, or another module of that name); its accuracy says nothing of this run")
    searched = record.get("n_params")
    if isinstance(searched, int) and n_params is not None and searched != n_params:
        if code_changed:
            why = "its factory's code has changed (above)"
        else:
            code = ", or its factory's code," if factory else ""
            why = f"the data's classes or image size{code} are not those it was searched on"
        notes.append(f"trial {number} had {searched:,} parameters, this net has {n_params:,}: {why}; its accuracy "
                     "says nothing of this run")
    return notes


def model_digest(cfg) -> str | None:
    """The digest of the code of your own model factory `cfg` builds (None for hpo's models, or
    a module without Python source); its module is imported by then (model_size built it)."""
    from hpo import usermodel  # noqa: PLC0415

    if not isinstance(cfg.model, usermodel.ModuleModel):
        return None
    found = usermodel.code_digest(cfg.model.target)
    return found["digest"] if found else None


def with_flags(cfg, source: Path, **flags):
    """`cfg` with the command line's --epochs / --seed; a value the config then refuses (a
    cosine warm-up as long as the new epochs) names the file and the flag."""
    try:
        return cfg.with_overrides(**flags)
    except ConfigError as error:
        given = " ".join(f"--{key} {value}" for key, value in flags.items() if value is not None)
        raise UserError(f"{source} with {given}: key '{error.key}': {error.reason}") from None


def cmd_verify(args) -> int:
    if not args.json:
        return verify_command(args, sys.stdout)
    with stdout_for_json_only() as out:
        return verify_command(args, out)


@contextmanager
def stdout_for_json_only():
    """--json: standard output carries the JSON and nothing else. Whatever else writes to it (a
    model factory's print, in this process or in a seed's) goes to standard error meanwhile; it
    broke the JSON that `hpo verify --against` then refused. Yields the stream for the JSON."""
    try:
        on_fd = sys.stdout.fileno() == 1
    except (AttributeError, OSError, ValueError):  # a stream of Python's own (a notebook, pytest's capsys)
        on_fd = False
    if not on_fd:  # written by this process alone
        out = sys.stdout
        with redirect_stdout(sys.stderr):
            yield out
        return
    sys.stdout.flush()
    out = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)  # file descriptor 1 itself, which the seeds' processes inherit
    try:
        yield out
    finally:
        sys.stdout.flush()
        try:
            out.flush()
        finally:
            os.dup2(out.fileno(), 1)
            out.close()


def verify_command(args, out) -> int:
    import json  # noqa: PLC0415
    import statistics  # noqa: PLC0415
    import time  # noqa: PLC0415

    from hpo.config import load_export  # noqa: PLC0415
    from hpo.display import console, escape, pct  # noqa: PLC0415
    from hpo.schema import plural  # noqa: PLC0415
    from hpo.space import model_size  # noqa: PLC0415
    from hpo.trainer import cpu_share, pick_device  # noqa: PLC0415
    from hpo import data  # noqa: PLC0415
    from hpo.verification import DivergedSeed, SeedRun, Verification, check_seeds, compare, verify  # noqa: PLC0415

    cfg, record = load_export(args.config, args.trial)
    cfg = with_flags(cfg, args.config, epochs=args.epochs)
    trial = record.get("trial") if record else None  # which of an export's trials: the JSON and the lines say
    source = {"config": str(args.config), **({"trial": trial} if trial is not None else {})}
    named = f"{args.config} (trial {trial})" if trial is not None else str(args.config)
    check_seeds(cfg, args.seeds)
    earlier = load_verification(args.against) if args.against else None  # before any training
    if earlier and args.seeds < 2:
        raise UserError(f"--against compares spreads: give --seeds 2 or more (got {args.seeds})")
    device = pick_device(args.device)
    n_params = model_size(cfg)
    try:  # the data is there and the config's subsets fit it, before any process starts
        folder = data.ensure(cfg.data, args.data_dir)
        data.check_subsets_on_disk(cfg.data, folder)
        dataset, sizes = data.resolve(cfg.data), data.split_sizes(cfg.data, folder)
    except ConfigError as error:
        raise error.located(args.config) from None
    n_test = cfg.data.test_subset or sizes["test"]
    for note in rerun_notes(record, device, None, n_params=n_params, held_out=data.validation_size(sizes["train"]),
                            test_images=(n_test, sizes["test"]), data_digest=dataset.digest,
                            model_digest=model_digest(cfg)):
        print(f"hpo verify: note: {note}", file=sys.stderr)  # before the seeds train: Ctrl-C now costs nothing
    # on a CPU a seed's digits depend on its torch threads, which --workers splits the cores into
    threads = cpu_share(min(args.workers, args.seeds)) if device.type == "cpu" else None
    source = {**source, **({"torch_threads": threads} if threads else {})}
    before = earlier.get("torch_threads") if earlier else None
    if isinstance(before, int) and threads and before != threads:
        print(f"hpo verify: note: {args.against}'s seeds trained with {before} torch thread(s) each, these with "
              f"{threads}: a CPU's sums round by the thread count, so the difference carries that too; run both with "
              "the same --workers (and OMP_NUM_THREADS) to compare the configs alone", file=sys.stderr)

    def line(r) -> None:
        if args.json:
            return
        if isinstance(r, DivergedSeed):
            console.print(f"seed {r.seed:>3}  diverged: {escape(r.reason)}")
        else:
            console.print(f"seed {r.seed:>3}  final {pct(r.final)}  best {pct(r.best)} (epoch {r.best_epoch})  "
                          f"{n_params:,} params  {r.seconds:.1f} s")

    if not args.json:
        at_once = f", {min(args.workers, args.seeds)} at a time" if args.workers > 1 else ""
        seeds = f"seed {cfg.seed}" if args.seeds == 1 else f"seeds {cfg.seed}..{cfg.seed + args.seeds - 1}"
        console.print(f"{escape(named)}: {plural(cfg.epochs, 'epoch')}, {seeds} "
                      f"on {device}{at_once}")
    started = time.monotonic()
    ended = []

    def seed_ended(r) -> None:
        ended.append(r)
        line(r)

    try:
        result = verify(cfg, seeds=args.seeds, n_params=n_params, device=args.device, data_dir=args.data_dir,
                        workers=args.workers, on_seed=seed_ended)
    except KeyboardInterrupt:  # the seeds that ended are not thrown away: what they say, and that it is partial
        finals = [r.final for r in ended if not isinstance(r, DivergedSeed)]
        spread = f" ± {pct(statistics.stdev(finals))}" if len(finals) > 1 else ""
        so_far = f"; the {len(finals)} that trained: {pct(statistics.fmean(finals))}{spread}" if finals else ""
        after = f" after {len(ended)} of {args.seeds} seeds{so_far}" if ended else ""  # as every command says it
        print(f"hpo verify: interrupted{after}", file=sys.stderr)
        if args.json and ended:  # a script gets what the seeds that ended say, marked as partial
            partial = Verification(n_params, cfg.epochs, tuple(sorted((r for r in ended if isinstance(r, SeedRun)),
                                                                      key=lambda r: r.seed)),
                                   tuple(r for r in ended if isinstance(r, DivergedSeed)))
            print(json.dumps({**source, "partial": True, "seeds_asked": args.seeds, **partial.as_dict()}, indent=2),
                  file=out)
        return 130
    status = 0
    if result.diverged:  # the mean is over the seeds that trained; the exit status says not all did
        status = 1
        lost = ", ".join(str(d.seed) for d in result.diverged)
        print(f"hpo verify: {len(result.diverged)} of {args.seeds} seeds diverged ({lost}): the config is unstable "
              "under some seeds; " + ("the result is over the others" if result.runs else "no seed trained "
                                      "to the end") + " (try a lower optimizer.lr)", file=sys.stderr)
    if not result.runs:
        if args.json:
            print(json.dumps({**source, **result.as_dict()}, indent=2), file=out)
        return status
    against = None
    if earlier and len(result.runs) < 2:
        print("hpo verify: --against needs two seeds or more that trained to the end; no comparison",
              file=sys.stderr)
        earlier = None
    if earlier:
        finals = [r["final"] for r in earlier["runs"]]
        against = {"config": earlier.get("config"), **({"trial": earlier["trial"]} if "trial" in earlier else {}),
                   "epochs": earlier.get("epochs"), "n_params": earlier.get("n_params"),
                   "mean": statistics.fmean(finals), "std": statistics.stdev(finals), "seeds": len(finals),
                   **compare([r.final for r in result.runs], finals).as_dict()}
    if args.json:
        print(json.dumps({**source, **result.as_dict(), **({"against": against} if against else {})}, indent=2),
              file=out)
        return status
    if len(result.runs) == 1:  # one number has no spread: say so rather than print ± 0.00%
        console.print(f"[bold]final test accuracy with seed {result.runs[0].seed}: {pct(result.mean)}[/] (one seed, "
                      f"no spread: --seeds 2 or more gives mean ± std; {time.monotonic() - started:.0f} s wall)")
        return status
    over = f"{args.seeds} seeds" if not result.diverged else f"the {len(result.runs)} of {args.seeds} seeds that trained"
    console.print(f"[bold]final test accuracy over {over}: {pct(result.mean)} ± {pct(result.std)}[/] "
                  f"(min {pct(min(r.final for r in result.runs))}, max {pct(max(r.final for r in result.runs))}; "
                  f"{time.monotonic() - started:.0f} s wall)")
    if against:
        size = f"{against['n_params']:,} params, " if isinstance(against["n_params"], int) else ""
        epochs = f"{plural(against['epochs'], 'epoch')}, " if isinstance(against["epochs"], int) else ""
        name = escape(str(against["config"] or args.against)
                      + (f" (trial {against['trial']})" if isinstance(against.get("trial"), int) else ""))
        console.print(f"against {name} ({size}{epochs}{against['seeds']} seeds): "
                      f"{pct(against['mean'])} ± {pct(against['std'])}")
        interval = against["interval95"]
        welch = (f", 95% interval {100 * interval[0]:+.2f} to {100 * interval[1]:+.2f} (Welch)" if interval
                 else "")
        console.print(f"difference {100 * against['difference']:+.2f} points{welch}: [bold]{against['verdict']}[/]")
    return status


def load_verification(path: Path) -> dict:
    """An earlier `hpo verify --json` result, checked enough to compare against: one clear line if
    it is not one."""
    import json  # noqa: PLC0415

    from hpo.schema import NotRegular, TooLarge, read_small  # noqa: PLC0415

    # into the file given only where there is none: an existing file (an export given by mistake) is
    # the user's, and a pasted `> FILE` would replace it
    how = (f"write one with: hpo verify --config FILE --seeds 5 --json > "
           f"{shlex.quote(str(path)) if not os.path.lexists(path) else 'RESULT.json'}")
    try:
        data = json.loads(read_small(path, 1 << 20))  # a result is kilobytes
    except (NotRegular, IsADirectoryError):
        raise UserError(f"--against {path}: not a regular file; give the file that `hpo verify --seeds 5 --json > "
                        "FILE` wrote") from None
    except TooLarge:
        raise UserError(f"--against {path}: not a JSON file (over 1 MB); {how}") from None
    except FileNotFoundError:
        raise UserError(f"--against {path}: no such file; {how}") from None
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise UserError(f"--against {path}: not a JSON file ({error}); {how}") from None
    runs = data.get("runs") if isinstance(data, dict) else None
    if not isinstance(runs, list) or not all(isinstance(r, dict) and isinstance(r.get("final"), (int, float))
                                             and not isinstance(r.get("final"), bool) for r in runs):
        raise UserError(f"--against {path}: not an `hpo verify --json` result (no runs with a final accuracy); {how}")
    if not all(0 <= r["final"] <= 1 for r in runs):
        raise UserError(f"--against {path}: a final accuracy outside 0..1; --json writes fractions (0.9942, not "
                        f"99.42); {how}")
    if data.get("partial"):
        raise UserError(f"--against {path}: an interrupted verification ({len(runs)} of "
                        f"{data.get('seeds_asked', '?')} seeds); run it to the end, then compare against it")
    if len(runs) < 2:
        raise UserError(f"--against {path}: {len(runs)} seed(s); a comparison needs the spread of 2 or more "
                        f"(re-run it with --seeds 5)")
    return data


def cmd_run(args) -> int:
    from hpo import processes  # noqa: PLC0415 - imports no torch

    if args.grace <= args.heartbeat:
        raise UserError(f"--grace {args.grace} must be longer than --heartbeat {args.heartbeat}")
    processes.worker_context()  # the workers' fork server imports torch & co. while this process does the same
    stdout, sys.stdout = sys.stdout, GoesOnWithoutReader(sys.stdout, "hpo run")
    try:
        return run_study(args)
    finally:  # a mistake in the study file ends the command before any worker: the server goes too
        sys.stdout = stdout
        processes.stop_fork_server()


class GoesOnWithoutReader:
    """Standard output for `hpo run`: once its reader is gone (`| head`, a pager that quit), one
    line on stderr says so and the study goes on, printing nowhere. Left to itself, the broken pipe
    stopped the run as a Ctrl-C does, each trial's failure recorded as `interrupted`, exit 1 and
    not a word. Ctrl-C still stops it."""

    def __init__(self, stream, who: str):
        self._stream, self._who, self._gone = stream, who, False

    def write(self, text: str) -> int:
        if not self._gone:
            try:
                return self._stream.write(text)
            except BrokenPipeError:
                self._reader_gone()
        return len(text)

    def flush(self) -> None:
        if not self._gone:
            try:
                self._stream.flush()
            except BrokenPipeError:
                self._reader_gone()

    def _reader_gone(self) -> None:
        self._gone = True
        silence_stdout()
        try:
            print(f"{self._who}: standard output was closed (| head, or a pager that quit); the run goes on without "
                  "printing (Ctrl-C stops it; hpo studies shows it)", file=sys.stderr, flush=True)
        except OSError:  # standard error went with it (2>&1 | head): the run goes on all the same, in silence
            silence(sys.stderr)

    def __getattr__(self, name: str):  # isatty, fileno, encoding: the stream's own
        return getattr(self._stream, name)


def run_study(args) -> int:
    from hpo import artifacts  # noqa: PLC0415
    from hpo.display import RunDisplay, console  # noqa: PLC0415
    from hpo.runner import run  # noqa: PLC0415
    from hpo.storage import Storage  # noqa: PLC0415
    from hpo.study import load_spec  # noqa: PLC0415

    # every check a user can fail comes before the study is created
    spec = load_spec(args.study, given_as="--study ")
    storage = Storage.resolve(args.storage)
    storage.check_folder()
    store = artifacts.folder_for(storage, args.artifacts)

    def display(workers: int, before: list) -> RunDisplay:
        return RunDisplay(spec, args.trials, storage.masked, workers, live=not args.quiet and console.is_terminal,
                          already=before,
                          storage_option=hint_option(args, storage))

    return run(spec=spec, storage=storage, trials=args.trials, workers=args.workers, timeout=args.timeout,
               device=args.device, data_dir=args.data_dir, heartbeat=args.heartbeat, grace=args.grace,
               checkpoint_dir=args.checkpoint_dir, patience=args.db_patience, artifacts=store, display=display,
               info=console.print, warn=lambda line: print(line, file=sys.stderr, flush=True), pack=args.pack)


def cmd_check(args) -> int:
    """Each study file parsed and checked as `hpo run` would before it creates anything, its data
    looked for (not fetched), and what it would run printed: a study per row, or one in full."""
    import functools  # noqa: PLC0415

    from hpo import data  # noqa: PLC0415
    from hpo.display import console, escape, print_study, search_table, studies_check_table  # noqa: PLC0415
    from hpo.overview import study_facts  # noqa: PLC0415
    from hpo.study import load_spec  # noqa: PLC0415

    checked, failed = [], 0
    local = functools.lru_cache(data.local)  # the dataset's files read and checksummed once, not per study
    for name in args.studies:
        try:
            spec = load_spec(name, given_as="")
            checked.append((spec, study_facts(spec, args.data_dir, local=local)))
        except UserError as error:
            # an error about the study's data (its own .npz, say) names the data, not the study
            where = "" if name in str(error) else f"{name}: "
            print(f"hpo check: error: {where}{error}", file=sys.stderr)
            failed += 1
    if len(args.studies) == 1 and checked:
        spec, facts = checked[0]
        print_study(facts)
        console.print(search_table(spec.space.params))
    elif checked:
        console.print(studies_check_table([facts for _, facts in checked]))
    for spec, _ in checked:
        for note in spec.notes():
            console.print(f"note: {escape(spec.source)}: {escape(note)}", soft_wrap=True)
    if failed:
        print(f"hpo check: {failed} of {len(args.studies)} study file(s) cannot run as written", file=sys.stderr)
        return EXIT_USAGE
    return 0


def cmd_studies(args) -> int:
    import optuna  # noqa: PLC0415

    from hpo import records  # noqa: PLC0415
    from hpo.display import console, print_study_trials, studies_table  # noqa: PLC0415
    from hpo.export import study_trials  # noqa: PLC0415
    from hpo.errors import password_note  # noqa: PLC0415
    from hpo.storage import Storage  # noqa: PLC0415

    if args.study is None and args.top is not None:
        raise UserError(f"--top {args.top} shows the best trials of one study: give its name, "
                        f"hpo studies NAME --top {args.top}")
    storage = Storage.resolve(args.storage)
    rdb = storage.open_existing()
    if args.study is not None:
        trials = study_trials(rdb, args.study)
        study_id = rdb.get_study_id_from_name(args.study)
        attrs = rdb.get_study_user_attrs(study_id)
        running = [t for t in trials if t.state == optuna.trial.TrialState.RUNNING]
        if running:  # how long each running trial's worker has been silent: a killed one's trial still shows
            from hpo import delete  # noqa: PLC0415

            silent = delete.beating(storage, args.study, float("inf"))
        else:
            silent = {}
        print_study_trials(args.study, trials, source=attrs.get(records.SOURCE), where=storage.masked, top=args.top or 10,
                           silent=silent,
                           held_out=records.held_out(attrs),
                           multi=len(rdb.get_study_directions(study_id)) > 1,
                           storage_option=hint_option(args, storage))
        return 0
    summaries = optuna.get_all_study_summaries(rdb, include_best_trial=False)
    studies = {s.study_name: rdb.get_all_trials(rdb.get_study_id_from_name(s.study_name), deepcopy=False)
               for s in summaries if records.made_by_hpo(s.user_attrs)}
    others = [s.study_name for s in summaries if s.study_name not in studies]
    if not studies:
        option = hint_option(args, storage)
        print(f"no studies of hpo's in {storage.masked}" + (f" (only Optuna's own: {', '.join(others)})" if others
                                                           else "")
              + f"; run one: hpo run --study NAME --trials N{option}{password_note(option)}")
        return 0
    held_out = frozenset(s.study_name for s in summaries if records.held_out(s.user_attrs))
    table = studies_table(studies, held_out)
    width = console.width
    if not console.is_terminal:  # a pipe or a file: wider than its 120 columns where a name needs it
        console.width = table.piped_width(width)
    try:
        console.print(table)
    finally:
        console.width = width
    if others:
        from rich.text import Text  # noqa: PLC0415

        console.print(Text(f"also here, not made by hpo run (hpo dashboard shows them): {', '.join(others)}"),
                      soft_wrap=True)
    return 0


def cmd_delete(args) -> int:
    from hpo import artifacts, delete  # noqa: PLC0415
    from hpo.checkpoints import remove_checkpoints  # noqa: PLC0415
    from hpo.display import trials_line  # noqa: PLC0415
    from hpo.schema import plural  # noqa: PLC0415
    from hpo.storage import GRACE_SECONDS, Storage  # noqa: PLC0415

    storage = Storage.resolve(args.storage)
    rdb = storage.open_existing()
    found = delete.find(rdb, args.study)
    if found.running and not args.force:
        raise UserError(f"study {args.study!r} has {plural(found.running, 'trial')} running: a run may still be "
                        "training it; stop that run first (Ctrl-C), or add --force if none is (its worker was "
                        "killed before it could end the trial)")
    alive = delete.beating(storage, args.study, args.grace) if found.running else {}
    if alive:  # --force is for trials whose worker is gone, never for a run that is training
        number, age = min(alive.items(), key=lambda item: item[1])
        raise UserError(f"study {args.study!r} is being trained: trial {number}'s worker sent a heartbeat {age:.0f} s "
                        f"ago; stop that run first (Ctrl-C). --force deletes only when every running trial's "
                        f"worker has been silent for {args.grace} s (--grace"
                        + ("'s default, as hpo run's)" if args.grace == GRACE_SECONDS else ")"))
    store = artifacts.folder_for(storage, args.artifacts)
    here = sum((store / artifact_id).is_file() for artifact_id in found.artifacts)
    files = f", and its {plural(here, 'config file')} in {store}" if here else ""
    if here < len(found.artifacts):  # stored with --artifacts elsewhere, or removed by hand
        print(f"hpo delete: note: the study recorded {plural(len(found.artifacts), 'config file')}, "
              f"{len(found.artifacts) - here} of them not in {store}; were they stored elsewhere? give that folder: "
              "--artifacts DIR", file=sys.stderr)
    what = f"study {args.study!r} in {storage.masked}: {trials_line(found.trials)}{files}"
    if not args.yes:
        if not sys.stdin.isatty():
            raise UserError(f"this deletes {what}, for good; add --yes to confirm (there is no terminal to ask on)")
        try:
            answer = input(f"delete {what}? [y/N] ")
        except EOFError:
            answer = ""
        if answer.strip().lower() not in ("y", "yes"):
            print("nothing deleted", file=sys.stderr)
            return 1
    study_id = rdb.get_study_id_from_name(args.study)
    key = storage.study_checkpoint_key(rdb, study_id)
    removed = delete.remove(rdb, found, store)
    gone = f", and {plural(removed, 'config file')} from {store}" if removed else ""
    left = remove_checkpoints(args.checkpoint_dir, args.study, key)  # what no retry will resume now
    gone += f", and {plural(left, 'checkpoint')} from {args.checkpoint_dir}" if left else ""
    print(f"deleted study {args.study!r} from {storage.masked}: {trials_line(found.trials)}{gone}")
    return 0


def cmd_export(args) -> int:
    from hpo.export import export  # noqa: PLC0415
    from hpo.storage import Storage  # noqa: PLC0415

    output = args.output or Path("-")  # -o -: standard output, as without -o
    storage = Storage.resolve(args.storage)
    check_output(output, "best.yaml", storage)
    rdb = storage.open_existing()
    exported = export(rdb, args.study, top=args.top, storage_option=hint_option(args, storage))
    check_not_the_studys_own(output, rdb, args.study, "best.yaml")
    write_output(output, exported.text)
    if str(output) != "-":
        print(f"wrote {exported.describe()} of {args.study!r} to {output}", file=sys.stderr)
    return 0


SQLITE_MAGIC = b"SQLite format 3\x00"
SQLITE_COMPANIONS = ("", "-wal", "-shm", "-journal", ".lock")  # the database, SQLite's files beside it, hpo's lock


def check_not_the_studys_own(path: Path, rdb, study: str, example: str) -> None:
    """-o must not be the study file the study was made from, nor its own data file (as its run
    recorded them; a relative data path is taken from here): writing there destroyed either."""
    from hpo import records  # noqa: PLC0415

    if str(path) == "-" or not path.exists():
        return
    attrs = rdb.get_study_user_attrs(rdb.get_study_id_from_name(study))
    spec = attrs.get(records.SPEC)
    base = spec.get("base") if isinstance(spec, dict) else None
    data = base.get("data") if isinstance(base, dict) else None
    data = data if isinstance(data, dict) else {}
    for what, file in (("the study file", attrs.get(records.SOURCE)), ("the data file", data.get("path"))):
        if isinstance(file, str) and Path(file).expanduser().resolve() == path.resolve():
            raise UserError(f"-o {path} is {what} study {study!r} was made from; writing there would destroy it: "
                            f"give another file, e.g. -o {example}")
    # the same files by other paths (another machine's copy of the study file, the data seen from
    # another folder) are not known here: any existing file is replaced only if this command wrote it
    if path.is_file() and path.stat().st_size and not written_by_us(path, example):
        raise UserError(f"-o {path} exists and is not a file hpo {'report' if example.endswith('.html') else 'export'} "
                        f"wrote (a study file, data, a config?); writing there would destroy it: give another file, "
                        f"e.g. -o {example}, or remove it first")


def written_by_us(path: Path, example: str) -> bool:
    """Whether the existing file `path` is what `hpo export` (YAML: `example` best.yaml) or `hpo
    report` (HTML) writes: only such a file is replaced by -o."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(4096)
    except OSError:
        return False
    if example.endswith(".html"):
        return head.lstrip().startswith(b"<!DOCTYPE html>") and b"<title>hpo report" in head
    return head.startswith(b"# ") and b"hpo train --config THIS_FILE" in head  # export's header, either kind


def check_output(path: Path, example: str, storage=None) -> None:
    """Before any work: `-o` must name a file, not a folder, and no file may stand where one of
    its folders would be made; nor may it be the study's database (or a file of it) or any
    other SQLite database, which writing there would destroy."""
    if str(path) == "-":
        return
    database = storage.file if storage is not None else None
    if database is not None and database.exists() and path.resolve() in {
            Path(f"{database}{end}").resolve() for end in SQLITE_COMPANIONS}:
        what = "is" if path.resolve() == database.resolve() else "belongs to"
        raise UserError(f"-o {path} {what} the study's database (--storage {storage.masked}); writing there would "
                        f"destroy it: give another file, e.g. -o {example}")
    if path.is_file():
        try:
            with path.open("rb") as handle:
                database_file = handle.read(len(SQLITE_MAGIC)) == SQLITE_MAGIC
        except OSError:
            database_file = False  # unreadable: the write says why
        if database_file:
            raise UserError(f"-o {path} is an SQLite database; writing there would destroy it: give another file, "
                            f"e.g. -o {example}")
    if path.is_dir():
        raise UserError(f"-o {path} is a folder; give a file name, e.g. -o {path / example}")
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise UserError(f"-o {path}: {parent} is a file, not a folder; give -o a path in a folder")
            break


def write_all(stream, text: str) -> None:
    """All of `text`, or an error: a reader that went away mid-way (`| head -c 1000000`) made one
    large write return short, without an error, and a 5 MB report was cut off with exit 0."""
    out = getattr(stream, "buffer", None)
    if out is None:  # a stream of Python's own (a test's capture): it takes it whole
        stream.write(text)
        return
    stream.flush()
    data = memoryview(text.encode(stream.encoding or "utf-8"))
    while data:
        written = out.write(data[: 1 << 16])
        out.flush()
        data = data[written or 0 :]


def write_output(path: Path, text: str) -> None:
    """Write `-o`'s file, making its folders as needed (as `hpo report` and `hpo export` both do);
    `-` is standard output."""
    if str(path) == "-":
        write_all(sys.stdout, text)
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    except OSError as error:
        raise UserError(f"cannot write {path}: {error.strerror}; give -o a path in a folder you can write") from None


def cmd_dashboard(args) -> int:
    from hpo import artifacts  # noqa: PLC0415
    from hpo.dashboard import serve  # noqa: PLC0415
    from hpo.storage import Storage  # noqa: PLC0415

    storage = Storage.resolve(args.storage)
    if args.artifacts is not None and not args.artifacts.is_dir():  # a typo would look like a study without files
        what = "is a file, not an artifact store" if args.artifacts.exists() else "is no artifact store"
        print(f"hpo dashboard: note: {args.artifacts} (--artifacts) {what}: the trials' config files will not be "
              "offered; give the folder hpo run stored them in", file=sys.stderr)
    return serve(storage=storage, host=args.host, port=args.port, artifacts=artifacts.folder_for(storage, args.artifacts))


def cmd_report(args) -> int:
    from hpo.report import build_report  # noqa: PLC0415
    from hpo.storage import Storage  # noqa: PLC0415

    storage = Storage.resolve(args.storage)
    check_output(args.output, "report.html", storage)
    rdb = storage.open_existing()
    text = build_report(storage=rdb, study_name=args.study, where=storage.masked,
                        storage_option=hint_option(args, storage))
    check_not_the_studys_own(args.output, rdb, args.study, "report.html")
    write_output(args.output, text)
    if str(args.output) != "-":
        print(f"wrote the report of {args.study!r} to {args.output} ({len(text.encode()) / 1e6:.1f} MB, opens offline)",
              file=sys.stderr)
    return 0


def damaged_database(error: BaseException) -> str | None:
    """SQLite's own words when `error` is a damaged database file met mid-command, else None."""
    import sqlite3  # noqa: PLC0415

    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, sqlite3.DatabaseError) and not isinstance(error, sqlite3.OperationalError):
            return str(error)
        error = getattr(error, "orig", None) or error.__cause__ or error.__context__
    return None


def stop_as_on_ctrl_c(signum, frame) -> None:
    """SIGTERM (`kill`, `docker stop`, a job scheduler's time limit) stops a command as Ctrl-C
    does: `hpo verify` terminates its processes on the way out instead of leaving them training."""
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    standard_streams_open()
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as done:  # --help, --version or a usage error: argparse has written its lines
        code = done.code if isinstance(done.code, int) else EXIT_USAGE
        return flush_failure("hpo") or code
    except BrokenPipeError:  # --help | head -1
        silence_stdout()
        return 141
    except OSError as error:  # --help or --version to a full disk
        if error.errno not in FULL:
            raise
        return output_lost("hpo", error)
    if not getattr(args, "handler", None):
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    code = run_command(args)
    if argv is None and threading.current_thread() is threading.main_thread():
        # the command has ended and said how; a Ctrl-C now (a second one after an interrupt, a
        # terminal's and `timeout`'s own, or one just after a run's summary) must not break into
        # torch's exit handlers with a traceback, nor turn a finished command's exit status into 130
        # (SIGTERM likewise: sent to the group twice, the second killed a run that had said it was stopping)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    return flush_failure(f"hpo {args.command}") or code


def run_command(args) -> int:
    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, stop_as_on_ctrl_c) if main_thread else None
    try:
        return args.handler(args)
    except UserError as error:
        print(f"hpo {args.command}: error: {error}", file=sys.stderr)
        return getattr(error, "exit_code", EXIT_USAGE)
    except BrokenPipeError:  # its reader is gone (| head): a command that prints stops, as Unix tools do
        silence_stdout()
        return 141  # 128 + SIGPIPE, what the shell reports for such a tool
    except Exception as error:  # after BrokenPipeError, an OSError too: here it was re-raised as a traceback
        if isinstance(error, OSError) and error.errno in FULL:
            silence_stdout()  # what could not be written is lost; the exit must not try it again
            print(f"hpo {args.command}: error: cannot write: {error.strerror}; free some space, or write elsewhere",
                  file=sys.stderr)
            return 1
        damage = damaged_database(error)
        if damage is None:
            raise
        print(f"hpo {args.command}: error: the database{storage_named(args)} is damaged ({damage}); restore it from "
              "a backup, or point --storage at another one", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"hpo {args.command}: interrupted", file=sys.stderr)
        return 130
    finally:
        if main_thread:
            signal.signal(signal.SIGTERM, previous)


def hint_option(args, storage) -> str:
    """' --storage URL' for the commands a hint prints, where this command was given --storage
    (else they open the same default or $HPO_STORAGE as it did): see Storage.hint_option."""
    return storage.hint_option() if getattr(args, "storage", None) else ""


def storage_named(args) -> str:
    """' sqlite:///x.db': the storage the command was given (password masked), for an error's line."""
    from hpo.storage import Storage  # noqa: PLC0415

    try:
        return f" {Storage.resolve(getattr(args, 'storage', None)).masked}"
    except Exception:
        return ""


def flush_failure(who: str) -> int:
    """Write out what standard output still holds: 0, or the exit status for what was lost. A full
    disk (> /dev/full) is said once and is a failed command (1); a reader that is gone (| head) is
    the shell's 141 for a tool stopped by SIGPIPE, without a word."""
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        silence_stdout()
        return 141
    except OSError as error:
        if error.errno not in FULL:
            raise
        return output_lost(who, error)
    except ValueError:  # standard output closed by the command's caller
        pass
    return 0


def output_lost(who: str, error: OSError) -> int:
    """Say once that standard output could not be written; the exit status for it."""
    silence_stdout()
    print(f"{who}: error: cannot write the output: {error.strerror}", file=sys.stderr)
    return 1


FULL = (errno.ENOSPC, errno.EDQUOT)  # a disk or a quota that is full: one line, not a traceback


def silence_stdout() -> None:
    """Point standard output at /dev/null, so that Python's own flush at exit does not fail again."""
    silence(sys.stdout)


def silence(stream) -> None:
    """Point `stream`'s file descriptor at /dev/null: what is written to it from now on, and what it
    still buffers, goes nowhere instead of failing again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, stream.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):
        pass


def standard_streams_open() -> None:
    """A standard stream that was closed when hpo started (`hpo studies >&-`, as some cron jobs and
    supervisors run commands) is /dev/null: Python had set it to None (a traceback on the first
    print), and the next file opened would have taken its number, so that a worker's line could
    land in a database or a checkpoint."""
    for fd, name, mode in ((0, "stdin", "r"), (1, "stdout", "w"), (2, "stderr", "w")):
        try:
            os.fstat(fd)
        except OSError:
            opened = os.open(os.devnull, os.O_RDWR)  # the lowest free number: this one
            if opened != fd:
                os.dup2(opened, fd)
                os.close(opened)
            os.set_inheritable(fd, True)  # os.open's are not: the workers would start with it closed again
            setattr(sys, name, open(fd, mode, closefd=False))


if __name__ == "__main__":  # pragma: no cover
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
