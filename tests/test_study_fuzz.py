"""Study files that cannot hurt: whatever a file holds, reading it ends in a study or in one
ConfigError naming the file; never another exception, never a hang."""

from __future__ import annotations

import copy
import os
from pathlib import Path

import optuna
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hpo import schema
from hpo.errors import ConfigError
from hpo.study import STUDIES_DIR, parse_study
from test_study import GOOD

# a few seconds by default; HPO_FUZZ_EXAMPLES=5000 for a longer hunt
FUZZ = settings(max_examples=int(os.environ.get("HPO_FUZZ_EXAMPLES", "120")), deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])

# what YAML reads a scalar as, edge cases included: huge integers, infinities, NaN, dates
SCALARS = (st.none() | st.booleans() | st.integers() | st.integers(min_value=10**300, max_value=10**400)
           | st.floats() | st.text(max_size=8) | st.dates()
           | st.sampled_from(["sgd", "adam", "rmsprop", "M", "t8", "16k1", "mnist", "", "."]))
VALUES = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=3)
                      | st.dictionaries(st.text(max_size=6) | st.integers(), inner, max_size=3), max_leaves=8)
CONFIG_KEYS = [
    "optimizer.lr", "optimizer.name", "optimizer.momentum", "optimizer.nesterov", "optimizer.beta1",
    "optimizer.weight_decay", "optimizer", "model", "model.family", "model.layers", "model.layers.0",
    "model.layers.2", "model.layers.3", "model.layers.4", "model.layers.8", "model.layers.99", "model.dropout",
    "model.kernel", "model.batchnorm", "batch_size", "epochs", "seed", "label_smoothing", "schedule.name",
    "schedule.step_size", "schedule.gamma", "augment.rotate", "augment.translate", "data.dataset",
    "data.train_subset", "optimizer.", ".", "", "model..layers", "colour", None, 0, True,
]
KEYS = st.one_of(*[st.sampled_from(CONFIG_KEYS)] * 3, st.text(max_size=12))  # mostly keys that get somewhere
NUMBERS = st.one_of(st.integers(-5, 600), st.floats(-1, 2), st.floats(0, 1), st.floats(), SCALARS)
WHEN_VALUES = st.sampled_from(["sgd", "adam", "rmsprop", 0.9, 16, 17, 3, 0.0, True, None]) | SCALARS
WHENS = st.one_of(*[st.dictionaries(KEYS, WHEN_VALUES | st.lists(WHEN_VALUES, max_size=3), min_size=1, max_size=2)] * 3,
                  VALUES)
# every search entry the shipped studies and GOOD use: real distributions, to be broken a little
ENTRIES = sorted(((k, v) for path in STUDIES_DIR.glob("*.yaml")
                  for k, v in yaml.safe_load(path.read_text())["search"].items()), key=repr)
ENTRIES += list(GOOD["search"].items())


@st.composite
def entries(draw) -> tuple:
    """(key, distribution): a real search entry with up to three of its parts replaced by
    anything; now and then an entry that is anything at all."""
    key, entry = copy.deepcopy(draw(st.sampled_from(ENTRIES)))
    if draw(st.integers(0, 3)) == 0:
        key = draw(KEYS)
    kind = next(k for k in ("float", "int", "choices") if k in entry)
    for _ in range(draw(st.integers(0, 3))):
        part = draw(st.sampled_from(["end", "end", "kind", "when", "when", "log", "step", "choices", "anything"]))
        if part == "end" and isinstance(entry[kind], list) and entry[kind]:
            at = draw(st.integers(0, len(entry[kind]) - 1))
            entry[kind][at] = draw(NUMBERS if kind != "choices" else WHEN_VALUES)
        elif part == "kind":  # the same values under another kind, or a second kind beside the first
            other = draw(st.sampled_from(["float", "int", "choices"]))
            entry[other] = entry.pop(kind) if draw(st.booleans()) else entry[kind]
            kind = other
        elif part == "when":
            entry["when"] = draw(WHENS)
        elif part == "log":
            entry["log"] = draw(st.booleans() | SCALARS)
        elif part == "step":
            entry["step"] = draw(NUMBERS)
        elif part == "choices":
            entry[kind] = draw(st.lists(WHEN_VALUES, max_size=4) | VALUES)
        else:
            return key, draw(VALUES)
    return key, entry


def parses_or_says_why(raw) -> None:
    """The property: a StudySpec whose trials can be sampled, or a ConfigError located at the file."""
    try:
        spec = parse_study(raw, "studies/fuzz.yaml", "fuzz")
    except ConfigError as error:
        assert error.source == "studies/fuzz.yaml"
        assert str(error).startswith("studies/fuzz.yaml: ")
        return
    assert spec.fingerprint and spec.space.base_params() is not None
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    spec.space.sample(study.ask())


@FUZZ
@given(search=st.lists(entries(), max_size=5))
def test_any_search_section_parses_or_is_one_config_error(search):
    parses_or_says_why({**copy.deepcopy(GOOD), "search": dict(search)})


@FUZZ
@given(key_entry=entries())
def test_any_entry_added_to_a_good_search_parses_or_is_one_config_error(key_entry):
    raw = copy.deepcopy(GOOD)
    key, entry = key_entry
    raw["search"][key] = entry  # after optimizer.name and the rest, so its `when` may name them
    parses_or_says_why(raw)


@FUZZ
@given(key=st.sampled_from([k for k in CONFIG_KEYS if isinstance(k, str)] + ["model.preset", "data"]),
       value=VALUES | NUMBERS)
def test_any_value_anywhere_in_the_base_parses_or_is_one_config_error(key, value):
    raw = copy.deepcopy(GOOD)
    *parents, last = key.split(".")
    node = raw["base"]
    for part in parents:
        node = node.setdefault(part, {}) if isinstance(node.get(part, {}), dict) else {}
    node[last] = value
    parses_or_says_why(raw)


@FUZZ
@given(section=st.sampled_from(["name", "budget", "pruner", "sampler", "search", "base"]), value=VALUES)
def test_any_value_for_a_top_level_key_parses_or_is_one_config_error(section, value):
    parses_or_says_why({**copy.deepcopy(GOOD), section: value})


YAMLISH = st.text(alphabet="ab01:-[]{},&*!<>?|'\"#\n .", max_size=60)


@pytest.fixture(scope="module")
def scratch(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


@FUZZ
@given(text=YAMLISH)
def test_any_text_loads_or_is_one_config_error(scratch: Path, text: str):
    path = scratch / "any.yaml"
    path.write_text(text)
    try:
        schema.load_yaml(path)
    except ConfigError as error:
        assert error.source == str(path)


PLAIN = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8)
                     | st.dates(), lambda inner: st.lists(inner, max_size=3)
                     | st.dictionaries(st.text(max_size=6), inner, max_size=3), max_leaves=12)


@FUZZ
@given(data=PLAIN, flow=st.booleans())
def test_files_without_duplicates_or_bombs_load_as_safe_load_reads_them(scratch: Path, data, flow: bool):
    path = scratch / "plain.yaml"
    path.write_text(yaml.safe_dump(data, default_flow_style=flow))
    assert schema.load_yaml(path) == yaml.safe_load(path.read_text())
