"""Your own model (hpo.usermodel): each mistake a factory or its module can make is one
ConfigError, what and where and how to fix it, when the config is checked: before any study or
trial, never a traceback, a failed trial or a silent exit. And a study's many checks and
parameter counts build each model once."""

from __future__ import annotations

import sys
import textwrap
import uuid
from pathlib import Path

import pytest
import torch
import yaml

from cli_helpers import hpo
from hpo import models, usermodel
from hpo.config import parse_config
from hpo.errors import ConfigError
from hpo.study import load_spec

SHAPE, CLASSES = (1, 8, 8), 3  # small images: a check runs a real forward where the meta device cannot

HEADER = """
import sys
import torch
from torch import nn
CALLS = []
"""

FACTORIES = {  # make(input_shape, num_classes) -> a model that is wrong in one way
    "lazy": "return nn.Sequential(nn.Flatten(), nn.LazyLinear(num_classes))",
    "no_parameters": """
        class Crop(nn.Module):
            def forward(self, x):
                return x.flatten(1)[:, :num_classes]
        return Crop()""",
    "frozen": """
        net = nn.Sequential(nn.Flatten(), nn.Linear(64, num_classes))
        net.requires_grad_(False)
        return net""",
    "int_logits": """
        class Vote(nn.Module):
            def __init__(self):
                super().__init__()
                self.fc = nn.Linear(64, num_classes)
            def forward(self, x):
                return self.fc(x.flatten(1)).argmax(1, keepdim=True).expand(-1, num_classes)
        return Vote()""",
    "detached": """
        class Stop(nn.Module):
            def __init__(self):
                super().__init__()
                self.fc = nn.Linear(64, num_classes)
            def forward(self, x):
                return self.fc(x.flatten(1)).detach()
        return Stop()""",
    "double": "return nn.Sequential(nn.Flatten(), nn.Linear(64, num_classes)).double()",
    "zero_width": "return nn.Sequential(nn.Flatten(), nn.Linear(64, 0), nn.Linear(0, num_classes))",
    "half": "return nn.Sequential(nn.Flatten(), nn.Linear(64, num_classes)).half()",
    "exits": "sys.exit(3)",
    "forward_exits": """
        class Quit(nn.Module):
            def __init__(self):
                super().__init__()
                self.fc = nn.Linear(64, num_classes)
            def forward(self, x):
                sys.exit(4)
        return Quit()""",
    "in_place": """
        class Half(nn.Module):
            def __init__(self):
                super().__init__()
                self.fc = nn.Linear(64, num_classes)
            def forward(self, x):
                x *= 0.5
                return self.fc(x.flatten(1))
        return Half()""",
    "grows": """
        class Grow(nn.Module):
            def __init__(self):
                super().__init__()
                self.conv = nn.Conv2d(1, 2, 3, padding=1)
                self.head = None
            def forward(self, x):
                f = self.conv(x).flatten(1)
                if self.head is None:
                    self.head = nn.Linear(f.shape[1], num_classes).to(f.device)
                return self.head(f)
        return Grow()""",
    "backward_fails": """
        class Bump(nn.Module):
            def __init__(self):
                super().__init__()
                self.conv = nn.Conv2d(1, 2, 3, padding=1)
                self.fc = nn.Linear(128, num_classes)
            def forward(self, x):
                y = self.conv(x)
                y.relu_()
                y = y.view(len(x), -1)
                y += 1
                return self.fc(y)
        return Bump()""",
    "eval_argmax": """
        class Vote(nn.Module):
            def __init__(self):
                super().__init__()
                self.fc = nn.Linear(64, num_classes)
            def forward(self, x):
                z = self.fc(x.flatten(1))
                return z if self.training else z.argmax(1)
        return Vote()""",
    "eval_fails": """
        class Train(nn.Module):
            def __init__(self):
                super().__init__()
                self.fc = nn.Linear(64, num_classes)
            def forward(self, x):
                if not self.training:
                    raise RuntimeError("only trains")
                return self.fc(x.flatten(1))
        return Train()""",
}

REFUSED = [  # factory, the words of its one line
    ("lazy", ["make has uninitialized (lazy) parameters, such as 1.weight of a LazyLinear",
              "give their sizes (nn.Linear(in, out)) so hpo can count them against the budget"]),
    ("no_parameters", ["make has no trainable parameters (it has none at all)", "nn.Linear"]),
    ("frozen", ["make has no trainable parameters (all 2 of its parameter tensors have requires_grad=False)",
                "leave requires_grad on"]),
    ("int_logits", ["make returns int64 logits; return floating-point logits"]),
    ("detached", ["make's logits carry no gradient back to its parameters", ".detach()"]),
    ("double", ["make's parameters are float64; hpo trains float32", "remove .double()"]),
    ("zero_width", ["make has a layer with no weights (1.weight is [0, 64])", "a width or size of 0"]),
    ("half", ["make's parameters are float16", "remove .half()"]),
    ("exits", ["make(input_shape=(1, 8, 8), num_classes=3) called sys.exit(3)", "a factory returns a model"]),
    ("in_place", ["make's forward changes its input in place", "write x = x * ... instead"]),
    ("grows", ["make makes parameters in its forward (20 before its first batch, 407 after)",
               "make every layer in the factory"]),
    ("backward_fails", ["make's backward pass fails on a batch of 2 1x8x8 images: RuntimeError: one of the "
                        "variables needed for gradient computation has been modified by an inplace operation",
                        "write y = y + 1"]),
    ("eval_argmax", ["make maps a batch of 2 1x8x8 images to (2,) in eval mode (hpo scores the test set in it); "
                     "expected (2, 3) logits"]),
    ("eval_fails", ["make's forward fails in eval mode (hpo scores the test set in it) on a batch of 2 1x8x8 images",
                    "only trains"]),
    ("forward_exits", ["make's forward fails on a batch of 2 1x8x8 images", "called sys.exit(4)"]),
]


@pytest.fixture
def write_module(tmp_path, monkeypatch):
    """write_module(source) -> the name of a new module of that source, importable (a new name
    each time: sys.modules never hands back another test's module)."""
    monkeypatch.syspath_prepend(str(tmp_path))
    written = []

    def write(source: str, *, name: str | None = None) -> str:
        name = name or f"usermodel_{uuid.uuid4().hex[:12]}"
        (tmp_path / f"{name}.py").write_text(textwrap.dedent(source))
        written.append(name)
        return name

    yield write
    for name in written:
        sys.modules.pop(name, None)


def factory_module(write_module, body: str) -> str:
    """A module whose `make(input_shape, num_classes)` runs `body` (a factory's statements)."""
    body = textwrap.indent(textwrap.dedent(body).strip(), "    ")
    return write_module(HEADER + f"def make(input_shape, num_classes):\n{body}\n")


def refusal(target: str, **kwargs) -> ConfigError:
    with pytest.raises(ConfigError) as caught:  # importing the module (parse) or the model (check)
        usermodel.check(usermodel.parse({"module": target, **kwargs}), SHAPE, CLASSES)
    return caught.value


@pytest.mark.parametrize("factory, words", REFUSED, ids=[f for f, _ in REFUSED])
def test_a_model_hpo_cannot_train_is_one_line_at_check_time(factory, words, write_module, recwarn):
    error = refusal(factory_module(write_module, FACTORIES[factory]) + ":make")
    assert not [str(w.message) for w in recwarn if "zero-element" in str(w.message)]  # torch's 2 lines, said once
    assert error.key == "model"
    assert "\n" not in error.reason
    for word in words:
        assert word in error.reason


@pytest.mark.parametrize("factory", ["lazy", "no_parameters", "frozen", "double"])
def test_a_build_for_training_refuses_the_same_models(factory, write_module):
    """The checks on parameters are in `build` itself: a trial (a CPU build) never meets them
    as an optimizer's or a matmul's traceback either."""
    spec = usermodel.parse({"module": factory_module(write_module, FACTORIES[factory]) + ":make"})
    with pytest.raises(ConfigError):
        usermodel.build(spec, SHAPE, CLASSES)


def test_a_model_built_in_float32_from_lazy_layers_run_once_passes(write_module):
    """A factory may still use lazy layers, as long as it gives them their sizes (one forward)."""
    target = factory_module(write_module, """
        net = nn.Sequential(nn.Flatten(), nn.LazyLinear(num_classes))
        net(torch.zeros(1, *input_shape))
        return net""") + ":make"
    usermodel.check(usermodel.parse({"module": target}), SHAPE, CLASSES)


IMPORT_FAILS = [  # module source, the words of its one line ({path}: the module's file)
    ("import sys\nsys.exit(3)\n",
     ["importing '{name}' called sys.exit(3) as it loaded", "if __name__ == \"__main__\":", "found at {path}"]),
    ("def make(:\n", ["importing '{name}' failed: SyntaxError:", "fix the module (it was found at {path})"]),
    ("raise RuntimeError('no GPU here')\n",
     ["importing '{name}' failed: RuntimeError: no GPU here; fix the module (it was found at {path})"]),
    ("import no_such_package_for_hpo_tests\n",
     ["importing '{name}' failed: ModuleNotFoundError: No module named 'no_such_package_for_hpo_tests'",
      "install what it imports", "found at {path}"]),
]


@pytest.mark.parametrize("source, words", IMPORT_FAILS, ids=["exits", "syntax", "raises", "missing-import"])
def test_a_module_that_is_found_but_fails_as_it_loads_says_fix_it_there(source, words, write_module, tmp_path):
    name = write_module(source)
    error = refusal(f"{name}:make")
    assert error.key == "model.module"
    assert "\n" not in error.reason
    assert "PYTHONPATH" not in error.reason  # it was found: where it is, is not the problem
    for word in words:
        assert word.format(name=name, path=tmp_path / f"{name}.py") in error.reason


@pytest.mark.parametrize("target", ["no_such_module_for_hpo_tests:make", "{package}.no_such_module:make"])
def test_a_module_that_is_not_there_says_where_to_put_it(target, write_module, tmp_path):
    package = f"usermodel_pkg_{uuid.uuid4().hex[:12]}"
    (tmp_path / package).mkdir()
    (tmp_path / package / "__init__.py").write_text("")
    write_module("", name="unused")  # the folder on the path
    try:
        error = refusal(target.format(package=package))
    finally:
        sys.modules.pop(package, None)
    assert "cannot import" in error.reason
    assert "install its package, put its folder on PYTHONPATH, or run hpo from its folder" in error.reason


@pytest.mark.parametrize("where", ["module", "factory"])
def test_ctrl_c_while_a_model_loads_still_stops_hpo(where, write_module):
    if where == "module":
        target = write_module("raise KeyboardInterrupt\n") + ":make"
        with pytest.raises(KeyboardInterrupt):
            usermodel.parse({"module": target})
    else:
        target = factory_module(write_module, "raise KeyboardInterrupt") + ":make"
        with pytest.raises(KeyboardInterrupt):
            usermodel.check(usermodel.parse({"module": target}), SHAPE, CLASSES)


COUNTED = HEADER + """
def make(input_shape, num_classes, width=4):
    CALLS.append(str(torch.get_default_device()))
    size = input_shape[0] * input_shape[1] * input_shape[2]
    return nn.Sequential(nn.Flatten(), nn.Linear(size, width), nn.ReLU(), nn.Linear(width, num_classes))
"""


def test_a_study_check_builds_each_model_once(write_module, tmp_path):
    """Loading a study checks its base and each end of a searched model key, and counts the
    parameters there for the budget, over and over: each model is built once (on the meta device)."""
    name = write_module(COUNTED)
    study = tmp_path / "width.yaml"
    study.write_text(yaml.safe_dump({
        "name": "width", "budget": {"max_params": 100_000},
        "base": {"model": {"module": f"{name}:make"}, "optimizer": {"name": "adamw", "lr": 0.01}, "epochs": 1},
        "search": {"model.width": {"int": [2, 4]}, "optimizer.lr": {"float": [0.001, 0.1], "log": True}}}))
    spec = load_spec(study)
    assert (spec.space.smallest_model(), spec.space.largest_model()) == (784 * 2 + 2 + 2 * 10 + 10,
                                                                         784 * 4 + 4 + 4 * 10 + 10)
    assert sys.modules[name].CALLS == ["meta", "meta"]  # width 4 (the base) and width 2


def test_only_meta_builds_are_memoized_and_each_is_a_copy(write_module):
    name = write_module(COUNTED)
    spec = usermodel.parse({"module": f"{name}:make"})
    with torch.device("meta"):
        first, second = (usermodel.build(spec, SHAPE, CLASSES) for _ in range(2))
    trained = [usermodel.build(spec, SHAPE, CLASSES) for _ in range(2)]
    assert first is not second and first[1].weight is not second[1].weight
    assert trained[0] is not trained[1]
    assert sys.modules[name].CALLS == ["meta", "cpu", "cpu"]  # a model to train is the factory's own


def test_a_training_config_of_such_a_model_is_refused_where_it_is_parsed(write_module):
    target = factory_module(write_module, FACTORIES["lazy"]) + ":make"
    with pytest.raises(ConfigError, match="uninitialized"):
        parse_config({"model": {"module": target}, "optimizer": {"name": "sgd", "lr": 0.1}})


def test_hpo_check_refuses_a_study_whose_model_has_nothing_to_train(tmp_path: Path):
    """Before, `hpo check` passed it and `hpo run` failed every trial."""
    (tmp_path / "frozen_net.py").write_text(HEADER + "def make(input_shape, num_classes):\n    "
                                            + textwrap.indent(textwrap.dedent(FACTORIES["frozen"]).strip(),
                                                              "    ").lstrip().replace("64", "784") + "\n")
    base = {"model": {"module": "frozen_net:make"}, "optimizer": {"name": "sgd", "lr": 0.05}, "epochs": 1}
    (tmp_path / "frozen.yaml").write_text(yaml.safe_dump({"name": "frozen", "base": base,
                                                          "search": {"optimizer.lr": {"float": [0.01, 0.1]}}}))
    done = hpo("check", "frozen.yaml", cwd=tmp_path)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert ("hpo check: error: frozen.yaml: key 'base.model': frozen_net:make has no trainable parameters "
            "(all 2 of its parameter tensors have requires_grad=False)") in lines[0]
    assert "Traceback" not in done.stderr


def test_a_misspelt_factory_name_says_what_the_module_defines(write_module):
    name = factory_module(write_module, "return nn.Sequential(nn.Flatten(), nn.Linear(64, num_classes))")
    with pytest.raises(ConfigError, match=rf"module '{name}' has no 'mkae'; did you mean 'make'; it defines make$"):
        usermodel.parse({"module": f"{name}:mkae"})


def test_a_model_file_that_python_hides_says_so(tmp_path, monkeypatch):
    """A model in ./code.py (or ./test.py): the `hpo` command puts the working folder last on the
    import path, so Python's own `code` module was imported, and the line said only that it had no
    'make'."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "code.py").write_text("def make(input_shape, num_classes):\n    pass\n")
    with pytest.raises(ConfigError, match=r"module 'code' has no 'make'; the 'code' imported is /.*/code.py, "
                                          r"which hides your code.py: give yours another name$"):
        usermodel.parse({"module": "code:make"})


def test_a_model_package_that_python_hides_says_so(tmp_path, monkeypatch):
    """A model in ./email/nets.py: Python's own `email` package wins, and the line said to install
    'email.nets' or put its folder on PYTHONPATH, which it was."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "email").mkdir()
    (tmp_path / "email" / "nets.py").write_text("def make(input_shape, num_classes):\n    pass\n")
    with pytest.raises(ConfigError, match=r"cannot import 'email.nets': the 'email' imported is /.*/email/__init__.py, "
                                          r"which hides your folder email: give yours another name$"):
        usermodel.parse({"module": "email.nets:make"})


def test_searching_into_a_tuple_default_says_to_set_it_in_the_base(write_module, tmp_path):
    """`hidden=(32, 16)` is no plain value, so it fills no key: the line said 'no such key (after
    expanding the base's model preset)', of a model that has no preset."""
    from hpo.study import parse_study  # noqa: PLC0415

    name = write_module(HEADER + "def make(hidden=(32, 16), input_shape=(1, 28, 28), num_classes=10):\n"
                                 "    return nn.Sequential(nn.Flatten(), nn.Linear(784, num_classes))\n")
    raw = {"base": {"model": {"module": f"{name}:make"}}, "search": {"model.hidden.0": {"int": [8, 64]}}}
    with pytest.raises(ConfigError, match=rf"model.hidden is not in the base: {name}:make's default for it, "
                                          r"\(32, 16\), is no plain value, so it fills no key; set model.hidden in base"):
        parse_study(raw, "um.yaml", "um")


@pytest.mark.parametrize("argument", ["num_classes", "input_shape"])
def test_searching_what_hpo_passes_from_the_data_says_it_cannot_be_searched(write_module, argument):
    """The line said num_classes' default, 3, 'is no plain value' and to set it in the base,
    where it was then refused as passed from the dataset."""
    from hpo.study import parse_study  # noqa: PLC0415

    name = write_module(HEADER + "def make(width=4, input_shape=(1, 28, 28), num_classes=3):\n"
                                 "    return nn.Sequential(nn.Flatten(), nn.Linear(784, num_classes))\n")
    raw = {"base": {"model": {"module": f"{name}:make"}}, "search": {f"model.{argument}": {"int": [2, 16]}}}
    with pytest.raises(ConfigError, match=rf"search.model.{argument}'?: {name}:make is given {argument} by hpo, from "
                                          r"the dataset: it cannot be searched$"):
        parse_study(raw, "um.yaml", "um")


def test_a_frozen_layer_counts_against_the_budget(write_module):
    """The budget caps the net's size: a layer frozen by its factory is still in the net. Before,
    only trainable parameters counted, and a net of 3.2 million weights passed a 40,000 budget."""
    target = factory_module(write_module, """
        net = nn.Sequential(nn.Flatten(), nn.Linear(64, 512), nn.ReLU(), nn.Linear(512, num_classes))
        net[1].requires_grad_(False)
        return net""") + ":make"
    spec = usermodel.parse({"module": target})
    frozen, trained = 64 * 512 + 512, 512 * CLASSES + CLASSES
    assert models.spec_params(spec, shape=SHAPE, classes=CLASSES) == frozen + trained
    net = usermodel.build(spec, SHAPE, CLASSES)
    assert models.count_params(net) == sum(p.numel() for p in net.parameters()) == frozen + trained


NET = '''
"""A net of my own."""
from torch import nn


def make(input_shape, num_classes, width: int = 8):
    return nn.Sequential(nn.Flatten(), nn.Linear(input_shape[1] * input_shape[2], width), nn.ReLU(),
                         nn.Linear(width, num_classes))
'''


def test_a_study_refuses_your_model_code_changed_since_its_trials_trained(tmp_path):
    """Another layer, or another machine's copy of the module with a new default: the study's new
    trials trained another model and were ranked beside the old ones with no word (a study kept its
    data's digest, not its model's). Comments, docstrings and layout are not the model."""
    import optuna  # noqa: PLC0415
    from test_own_data import study_on_own_data  # noqa: PLC0415

    (tmp_path / "my_net.py").write_text(NET)
    url, run = study_on_own_data(tmp_path, "mine", {"module": "my_net:make"})
    assert run(1).returncode == 0
    # reworded, commented and re-wrapped: the same code
    (tmp_path / "my_net.py").write_text(NET.replace('"""A net of my own."""', '"""My net, reworded."""')
                                        .replace("    return", "    # two layers\n    return"))
    done = run(2)
    assert done.returncode == 0, done.stderr
    (tmp_path / "my_net.py").write_text(NET.replace("nn.ReLU()", "nn.Tanh()"))  # no new parameter: the same count
    refused = run(3)
    assert refused.returncode == 2 and refused.stderr.strip() == (
        f"hpo run: error: study 'mine' in {url} was searched with another model: the code of my_net:make "
        f"({tmp_path / 'my_net.py'}) has changed since its trials trained, and trials of another model do not "
        f"compare; restore it, give this study file another name: key, or delete the old study first "
        f"(hpo delete --study mine --storage {url})")
    study_attrs = optuna.load_study(study_name="mine", storage=url)
    assert len(study_attrs.trials) == 2  # nothing ran
    assert list(study_attrs.user_attrs["hpo_model_code"]) == ["my_net:make"]


def test_train_and_verify_of_an_export_say_when_your_model_code_changed_since(tmp_path):
    """An export re-trained after its factory's code changed (here another activation, the same
    parameter count) printed the trial's accuracy beside a run of another model with no word: the
    study refuses such a run, the export did not know the code it was searched with."""
    import yaml  # noqa: PLC0415
    from test_own_data import study_on_own_data  # noqa: PLC0415
    from test_service import hpo  # noqa: PLC0415

    (tmp_path / "my_net.py").write_text(NET)
    url, run = study_on_own_data(tmp_path, "mine", {"module": "my_net:make"})
    assert run(1).returncode == 0
    hpo("export", "--study", "mine", "--storage", url, "-o", "best.yaml", cwd=tmp_path)
    recorded = yaml.safe_load((tmp_path / "best.yaml").read_text())["trials"][0]["model_digest"]
    import optuna  # noqa: PLC0415
    kept = optuna.load_study(study_name="mine", storage=url).user_attrs["hpo_model_code"]
    assert recorded == kept["my_net:make"]["digest"]
    note = "note: trial 0 was searched with other model code: the code of my_net:make this run imported differs"
    for command in (["train"], ["verify", "--seeds", "1"]):
        same = hpo(*command, "--config", "best.yaml", "--epochs", "1", "--device", "cpu", cwd=tmp_path)
        assert "other model code" not in same.stderr
    (tmp_path / "my_net.py").write_text(NET.replace("nn.ReLU()", "nn.Tanh()"))
    for command in (["train"], ["verify", "--seeds", "1"]):
        changed = hpo(*command, "--config", "best.yaml", "--epochs", "1", "--device", "cpu", cwd=tmp_path)
        assert f"hpo {command[0]}: {note}" in changed.stderr, changed.stderr
        assert "parameters, this net has" not in changed.stderr  # the same count: no size note


def test_a_factory_that_sizes_a_layer_with_real_numbers_is_counted_and_checked(write_module):
    """`.item()` at build time cannot run on the meta device, where hpo builds a model to count
    and check it: the factory, which builds on a CPU, was refused with "Tensor.item() cannot be
    called on meta tensors". It is built on the CPU for that now."""
    name = write_module(HEADER + """
def make(input_shape, num_classes, width: int = 4):
    features = nn.Sequential(nn.Conv2d(input_shape[0], width, 3), nn.ReLU(), nn.MaxPool2d(2))
    with torch.no_grad():
        n = torch.tensor(features(torch.zeros(1, *input_shape)).shape[1:]).prod().item()
    CALLS.append(torch.get_default_device().type)
    return nn.Sequential(features, nn.Flatten(), nn.Linear(n, num_classes))
""")
    spec = usermodel.parse({"module": f"{name}:make"})
    usermodel.check(spec, SHAPE, CLASSES)
    conv, head = 4 * 9 + 4, 4 * 3 * 3 * CLASSES + CLASSES  # 8x8 -> 6x6 -> pooled 3x3, 4 channels
    assert models.spec_params(spec, shape=SHAPE, classes=CLASSES) == conv + head
    assert sys.modules[name].CALLS == ["cpu"]  # once, then kept (on the meta device) for every count
    with pytest.raises(ConfigError, match=r"make\(width=-1, input_shape=\(1, 8, 8\), num_classes=3\) raised "
                                          r"RuntimeError: Trying to create tensor with negative dimension"):
        with torch.device("meta"):  # fails there, and on the CPU: the CPU's reason
            usermodel.build(usermodel.parse({"module": f"{name}:make", "width": -1}), SHAPE, CLASSES)


def test_the_model_code_digest_reads_no_field_that_python_versions_disagree_on():
    """ast.dump's text differs between Pythons for the same code (3.12 adds `type_params=[]` to every
    function, 3.13 leaves empty fields out): two machines' copies of one module read as changed code.
    The digest's text holds each node's fields that hold something, and nothing else."""
    import ast  # noqa: PLC0415

    text = usermodel._canonical(ast.parse("def make(width=4):\n    return width\n"))
    assert text == ("Module(body=[FunctionDef(name='make',args=arguments(args=[arg(arg='width')],"
                    "defaults=[Constant(value=4)]),body=[Return(value=Name(id='width',ctx=Load()))])])")


def test_your_model_failing_as_it_trains_is_one_line_from_hpo_train(tmp_path):
    """BatchNorm1d at batch_size 1 passes the check (a batch of 2) and fails the first step: hpo
    train printed the traceback of a user's model's error."""
    from test_own_data import write_npz  # noqa: PLC0415

    write_npz(tmp_path / "d.npz")
    (tmp_path / "bn_net.py").write_text("from torch import nn\n\n\ndef make(input_shape, num_classes):\n"
                                        "    return nn.Sequential(nn.Flatten(), nn.Linear(256, 8), nn.BatchNorm1d(8), "
                                        "nn.Linear(8, num_classes))\n")
    (tmp_path / "c.yaml").write_text(yaml.safe_dump({
        "model": {"module": "bn_net:make"}, "batch_size": 1, "epochs": 1,
        "data": {"dataset": "npz", "path": "d.npz", "train_subset": 12}}))
    done = hpo("train", "--config", "c.yaml", "--device", "cpu", cwd=tmp_path)
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    assert done.stderr.strip().splitlines()[-1] == (
        "hpo train: bn_net:make failed as it trained: ValueError: Expected more than 1 value per channel when "
        "training, got input size torch.Size([1, 8]) (HPO_DEBUG=1 shows the traceback)")
