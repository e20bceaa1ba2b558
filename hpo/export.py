"""`hpo export`: the best trials (a multi-objective study's Pareto front) as YAML that
`hpo train --config` re-trains as is."""

from __future__ import annotations

import copy
import datetime as dt
from dataclasses import dataclass
from typing import Optional

import optuna
import yaml

import hpo
from hpo import records
from hpo.applies import drop_inapplicable
from hpo.errors import UserError, password_note
from hpo.schema import did_you_mean, plural


def study_trials(rdb: optuna.storages.BaseStorage, study_name: str) -> list[optuna.trial.FrozenTrial]:
    """Every trial of the study; an unknown name is one line listing the studies there are."""
    try:
        study_id = rdb.get_study_id_from_name(study_name)
    except KeyError:
        raise UserError(no_study_named(study_name, optuna.get_all_study_names(rdb))) from None
    if not records.made_by_hpo(rdb.get_study_user_attrs(study_id)):
        # its values need not be accuracies, nor its direction up, and its trials carry no config
        raise UserError(f"study {study_name!r} was not made by hpo run (it records no study file): hpo reads and "
                        "deletes only its own studies; hpo dashboard shows any Optuna study, and Optuna's own command "
                        f"removes one: optuna delete-study --study-name {study_name} --storage URL")
    return rdb.get_all_trials(study_id, deepcopy=False)


def no_study_named(study_name: str, names: list[str], most: int = 8) -> str:
    """The line for a study name the storage lacks: the likeliest meant first, then what is there
    (the first `most`; `hpo studies` lists them all)."""
    close = did_you_mean(study_name, names)
    meant = f" (did you mean {close!r}?)" if close else ""
    listed = ", ".join(sorted(names)[:most]) + (f" and {len(names) - most} more (hpo studies lists them)"
                                                if len(names) > most else "")
    return f"no study named {study_name!r} in this storage{meant}; studies here: {listed or '(none)'}"


def study_file(rdb: optuna.storages.BaseStorage, study_name: str) -> Optional[str]:
    """The study file a study was made from, as `hpo run` recorded it (a path `--study` takes)."""
    source = rdb.get_study_user_attrs(rdb.get_study_id_from_name(study_name)).get(records.SOURCE)
    return source if isinstance(source, str) else None


@dataclass(frozen=True)
class Exported:
    text: str         # the YAML document, with its header
    trials: int       # how many trials it holds
    front: int = 0    # a multi-objective study: how many trials its Pareto front has

    def describe(self) -> str:
        """What it holds, in words: "the best trial's config", "the Pareto front's 4 configs"."""
        if self.front:
            whole = f"the Pareto front's {self.front} config{'s' if self.front > 1 else ''}"
            return whole if self.trials == self.front else f"the {self.trials} most accurate of {whole}"
        return "the best trial's config" if self.trials == 1 else f"the {self.trials} best trials' configs"


def factory_digest(code: dict, config: dict) -> Optional[str]:
    """The recorded digest of the code of the factory a trial's `config` built (a study's
    records.MODEL_CODE: {factory: {file, digest}}); None for hpo's own models."""
    model = config.get("model")
    target = model.get("module") if isinstance(model, dict) else None
    found = code.get(target) if isinstance(target, str) and isinstance(code, dict) else None
    digest = found.get("digest") if isinstance(found, dict) else None
    return digest if isinstance(digest, str) else None


def export(rdb: optuna.storages.BaseStorage, study_name: str, *, top: Optional[int] = None,
           storage_option: str = "") -> Exported:
    """The `top` (default 1) most accurate complete trials as YAML. For a multi-objective study,
    its Pareto front, most accurate first: every trial (or the `top` most accurate) that no other
    beats on both accuracy and size."""
    trials = study_trials(rdb, study_name)
    front = len(records.pareto_front(trials)) if records.multi_objective(trials) else 0
    # ranked among the trials that carry a config to export (a hand-made trial may not): one without
    # was skipped after ranking, and a best trial without one left "no complete trial to export"
    best = records.ranked([t for t in trials if isinstance(t.user_attrs.get(records.CONFIG), dict)],
                          top or front or 1)
    if not best:
        raise UserError(records.no_complete_trial(study_name, trials, "export", study_file(rdb, study_name),
                                                  storage_option, password_note(storage_option)))
    score = "accuracy" if front else "value"  # a multi-objective trial has two values
    # own data: what the trials trained on, for `hpo train` to say when the data it finds differs
    made_from = rdb.get_study_user_attrs(rdb.get_study_id_from_name(study_name))
    digest, code = made_from.get(records.DATA), made_from.get(records.MODEL_CODE) or {}
    held_out = records.held_out(made_from) or any(records.TEST_ACCURACY in t.user_attrs for t in best)
    document = {
        "study": study_name,
        "exported": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "hpo_version": hpo.__version__,
        **({"objectives": [records.ACCURACY, records.PARAMS]} if front else {}),
        "trials": [
            {
                "trial": t.number,
                score: records.accuracy(t),
                "n_params": t.user_attrs.get(records.N_PARAMS),
                # eval: val: the epochs were measured on held-out training images, the test set once
                # (by the study's file: a trial without its test accuracy is still scored on validation)
                **({"test_accuracy": t.user_attrs.get(records.TEST_ACCURACY),
                    "validation_accuracy_per_epoch": records.curve(t)} if held_out
                   else {"test_accuracy_per_epoch": records.curve(t)}),
                "best_epoch": t.user_attrs.get(records.BEST_EPOCH),
                "seconds_per_epoch": t.user_attrs.get(records.EPOCH_SECONDS),
                "device": t.user_attrs.get(records.DEVICE),
                # what a re-training needs to give the same digits: a CPU's thread count, and whether
                # it trained alone (`hpo train` prints a note where either differs)
                **({"torch_threads": t.user_attrs[records.THREADS]} if records.THREADS in t.user_attrs else {}),
                **({"packed": max(t.user_attrs[records.PACKED])} if t.user_attrs.get(records.PACKED) else {}),
                "versions": t.user_attrs.get(records.VERSIONS),
                **({"data_digest": digest} if digest else {}),
                # your own model: its factory's code as the study recorded it, for the same notes
                **({"model_digest": d} if (d := factory_digest(code, t.user_attrs[records.CONFIG])) else {}),
                # a trial recorded before such keys were dropped (a cosine trial's inherited gamma) as it trained
                "config": drop_inapplicable(copy.deepcopy(t.user_attrs[records.CONFIG])),
            }
            for t in best
        ],
    }
    if front:
        which = f"The {front}" if len(best) == front else f"{len(best)} of the {front}"
        header = (f"# {which} trial(s) on the Pareto front of study {study_name!r}: each is the most accurate model "
                  f"of its size or smaller.\n"
                  f"# Most accurate first; re-train the first with: hpo train --config THIS_FILE (another: --trial N)\n")
    else:
        header = (f"# The best trial of study {study_name!r}.\n# Re-train it with: hpo train --config THIS_FILE\n"
                  if len(best) == 1 else
                  f"# Top {plural(len(best), 'trial')} of study {study_name!r}, best first.\n"
                  f"# Re-train the first with: hpo train --config THIS_FILE (another: --trial N)\n")
    text = header + yaml.safe_dump(document, sort_keys=False, default_flow_style=None, width=100)
    return Exported(text, len(best), front)
