"""`hpo export`: the best trials as YAML that `hpo train --config` re-trains as is."""

from __future__ import annotations

import datetime as dt

import optuna
import yaml
from optuna.trial import TrialState

import hpo
from hpo.errors import UserError


def export(storage: optuna.storages.BaseStorage, study_name: str, *, top: int = 1) -> str:
    try:
        study_id = storage.get_study_id_from_name(study_name)
    except KeyError:
        names = [s.study_name for s in optuna.get_all_study_summaries(storage, include_best_trial=False)]
        raise UserError(f"no study named {study_name!r} in this storage; studies here: "
                        f"{', '.join(names) or '(none)'}") from None
    complete = [t for t in storage.get_all_trials(study_id, deepcopy=False, states=(TrialState.COMPLETE,))
                if "config" in t.user_attrs]
    if not complete:
        raise UserError(f"study {study_name!r} has no complete trial to export yet; run it first "
                        f"(hpo run --study {study_name} --trials N)")
    best = sorted(complete, key=lambda t: (-t.value, t.number))[:top]
    document = {
        "study": study_name,
        "exported": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "hpo_version": hpo.__version__,
        "trials": [
            {
                "trial": t.number,
                "value": t.value,
                "n_params": t.user_attrs.get("n_params"),
                "test_accuracy_per_epoch": [t.intermediate_values[k] for k in sorted(t.intermediate_values)],
                "best_epoch": t.user_attrs.get("best_epoch"),
                "seconds_per_epoch": t.user_attrs.get("epoch_seconds"),
                "device": t.user_attrs.get("device"),
                "versions": t.user_attrs.get("versions"),
                "config": t.user_attrs["config"],
            }
            for t in best
        ],
    }
    header = (f"# Top {len(best)} trial(s) of study {study_name!r}, best first.\n"
              f"# Re-train the first with: hpo train --config THIS_FILE\n")
    return header + yaml.safe_dump(document, sort_keys=False, default_flow_style=None, width=100)
