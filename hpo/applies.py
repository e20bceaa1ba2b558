"""Which optimizer and schedule keys mean something for which optimizer or schedule: one table
for the configs' checks (hpo.config), the search's implied `when` (hpo.space) and exports. No
torch here: `hpo export` and `hpo report` read studies without it."""

from __future__ import annotations

DEFAULT_OPTIMIZER = "sgd"
DEFAULT_SCHEDULE = "none"

# keys that mean something for only some optimizers; any other optimizer rejects them
OPTIMIZER_ONLY = {
    "momentum": ("sgd", "rmsprop"),
    "nesterov": ("sgd",),
    "beta1": ("adam", "adamw", "nadam", "adabelief"),
    "beta2": ("adam", "adamw", "nadam", "adabelief"),
}
# keys that mean something for one schedule only; a value other than the default is refused elsewhere
SCHEDULE_ONLY = {
    "step_size": ("step",),
    "gamma": ("step",),
    "pct_start": ("onecycle",),
    "warmup_epochs": ("cosine",),
}
ONLY = {"optimizer": (OPTIMIZER_ONLY, DEFAULT_OPTIMIZER), "schedule": (SCHEDULE_ONLY, DEFAULT_SCHEDULE)}


def drop_inapplicable(cfg: dict) -> dict:
    """`cfg` without optimizer and schedule keys that the chosen optimizer or schedule does not
    take (a search that switches from SGD to Adam leaves the base's momentum behind, one from a
    step schedule to cosine its step size)."""
    for section, (only, default) in ONLY.items():
        values = cfg.get(section)
        if isinstance(values, dict):
            name = values.get("name", default)
            cfg[section] = {k: v for k, v in values.items() if name in only.get(k, (name,))}
    return cfg


def implied_when(key: str) -> str:
    """The `when` a key carries by itself ('optimizer.name in sgd | rmsprop'), as `hpo check` shows it."""
    section, _, field = key.partition(".")
    names = ONLY.get(section, ({}, None))[0].get(field)
    if not names:
        return ""
    return f"{section}.name = {names[0]}" if len(names) == 1 else f"{section}.name in {' | '.join(names)}"


def inapplicable(key: str, cfg: dict) -> bool:
    """Whether `key` (optimizer.momentum, schedule.gamma) means nothing for the optimizer or
    schedule `cfg` has chosen: a searched one is then not drawn, as if it had that `when`."""
    section, _, field = key.partition(".")
    if section not in ONLY or "." in field:
        return False
    only, default = ONLY[section]
    chosen = cfg.get(section) if isinstance(cfg.get(section), dict) else {}
    return field in only and (chosen.get("name") or default) not in only[field]
