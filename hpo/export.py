"""`hpo export`: the best trials as YAML that `hpo train --config` re-trains as is."""

from __future__ import annotations

import datetime as dt

import optuna
import yaml

import hpo
from hpo import records
from hpo.errors import UserError


def study_trials(rdb: optuna.storages.BaseStorage, study_name: str) -> list[optuna.trial.FrozenTrial]:
    """Every trial of the study; an unknown name is one line listing the studies there are."""
    try:
        study_id = rdb.get_study_id_from_name(study_name)
    except KeyError:
        names = optuna.get_all_study_names(rdb)
        raise UserError(f"no study named {study_name!r} in this storage; studies here: "
                        f"{', '.join(names) or '(none)'}") from None
    return rdb.get_all_trials(study_id, deepcopy=False)


def export(rdb: optuna.storages.BaseStorage, study_name: str, *, top: int = 1) -> tuple[str, int]:
    """The YAML text of the `top` best trials, and how many it holds (fewer when fewer completed)."""
    best = [t for t in records.ranked(study_trials(rdb, study_name), top) if records.CONFIG in t.user_attrs]
    if not best:
        raise UserError(f"study {study_name!r} has no complete trial to export yet; run it first "
                        f"(hpo run --study {study_name} --trials N)")
    document = {
        "study": study_name,
        "exported": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "hpo_version": hpo.__version__,
        "trials": [
            {
                "trial": t.number,
                "value": t.value,
                "n_params": t.user_attrs.get(records.N_PARAMS),
                "test_accuracy_per_epoch": records.curve(t),
                "best_epoch": t.user_attrs.get(records.BEST_EPOCH),
                "seconds_per_epoch": t.user_attrs.get(records.EPOCH_SECONDS),
                "device": t.user_attrs.get(records.DEVICE),
                "versions": t.user_attrs.get(records.VERSIONS),
                "config": t.user_attrs[records.CONFIG],
            }
            for t in best
        ],
    }
    header = (f"# Top {len(best)} trial(s) of study {study_name!r}, best first.\n"
              f"# Re-train the first with: hpo train --config THIS_FILE\n")
    return header + yaml.safe_dump(document, sort_keys=False, default_flow_style=None, width=100), len(best)
