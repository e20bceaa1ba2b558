"""The seeds' networks as data: parameter counts, shapes, width edits and config errors."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from hpo import models
from hpo.errors import ConfigError

# Parameter counts of the seed networks, as the seeds themselves print them.
SEED_PARAMS = {
    "linear": 7_850,
    "mlp": 101_770,
    "cnn": 1_111_946,
    "lenet5": 44_426,
    "classic": 21_840,
    "classic003": 21_840,
    "mnistnet1": 8_620,
    "mnistnet2": 7_416,
    "mnistnet3": 6_544,
    "netv3": 13_808,
}


def test_every_preset_has_a_seed_count():
    assert set(models.PRESETS) == set(SEED_PARAMS)


@pytest.mark.parametrize(("preset", "expected"), sorted(SEED_PARAMS.items()))
def test_preset_parameter_count(preset, expected):
    spec = models.parse_model({"preset": preset})
    assert models.count_params(models.build(spec)) == expected
    assert models.spec_params(spec) == expected
    assert models.PRESETS[preset][1] == expected


@pytest.mark.parametrize("preset", sorted(SEED_PARAMS))
def test_forward_gives_ten_logits_per_image(preset):
    torch.manual_seed(0)
    model = models.build(models.parse_model({"preset": preset})).eval()
    with torch.no_grad():
        out = model(torch.randn(3, 1, 28, 28))
    assert out.shape == (3, 10)
    assert out.dtype == torch.float32
    assert torch.isfinite(out).all()


def layer_names(preset: str) -> list[str]:
    return [type(m).__name__ for m in models.build(models.parse_model({"preset": preset}))]


def test_classic_layer_order():
    # the PyTorch example: relu(max_pool(conv1)), relu(max_pool(conv2_drop(conv2))), relu(fc1), dropout, fc2
    assert layer_names("classic") == [
        "Conv2d", "MaxPool2d", "ReLU", "Conv2d", "Dropout2d", "MaxPool2d", "ReLU",
        "Flatten", "Linear", "ReLU", "Dropout", "Linear",
    ]


def test_classic003_is_seed_003s_own_net():
    # sladebot/MNIST model.py: relu(mp(conv1)), relu(mp(conv2)), view, dropout, fc1, fc2 (no ReLU, no Dropout2d)
    assert layer_names("classic003") == [
        "Conv2d", "MaxPool2d", "ReLU", "Conv2d", "MaxPool2d", "ReLU",
        "Flatten", "Dropout", "Linear", "Linear",
    ]


def test_cnn_has_no_conv_activation():
    assert layer_names("cnn") == [
        "Conv2d", "MaxPool2d", "Conv2d", "MaxPool2d", "Flatten", "Linear", "ReLU", "Dropout", "Linear",
    ]


@pytest.mark.parametrize(
    ("preset", "first_block"),
    [
        ("mnistnet1", ["Conv2d", "ReLU", "Conv2d"]),                # no batchnorm, no dropout
        ("mnistnet2", ["Conv2d", "ReLU", "BatchNorm2d", "Dropout"]),  # conv-ReLU-BN
        ("mnistnet3", ["Conv2d", "BatchNorm2d", "ReLU", "Dropout"]),  # bn_first: conv-BN-ReLU
    ],
)
def test_convnet_block_order(preset, first_block):
    names = layer_names(preset)
    assert names[: len(first_block)] == first_block
    assert names[-2:] == ["Conv2d", "Flatten"]  # the head
    if preset == "mnistnet1":
        assert "BatchNorm2d" not in names and "Dropout" not in names


def test_mnistnet3_mixes_block_orders_as_seed_002s_summary_shows():
    # seed 002's MnistNet_3 summary: conv-BN-ReLU-Dropout in the two blocks before the pool,
    # conv-ReLU-BN-Dropout in the three after it (12, 16, 16)
    names = layer_names("mnistnet3")
    blocks = [names[i + 1:i + 4] for i, name in enumerate(names) if name == "Conv2d" and names[i + 1] != "MaxPool2d"]
    assert blocks[:2] == [["BatchNorm2d", "ReLU", "Dropout"]] * 2
    assert blocks[2:5] == [["ReLU", "BatchNorm2d", "Dropout"]] * 3
    assert models.spec_params(models.parse_model({"preset": "mnistnet3"})) == 6_544


def test_bn_first_one_value_for_all_blocks_or_one_per_conv_block():
    every = models.parse_model({"preset": "mnistnet2", "bn_first": True})
    listed = models.parse_model({"preset": "mnistnet2", "bn_first": [True] * 5})
    assert [type(m) for m in models.build(every)] == [type(m) for m in models.build(listed)]
    with pytest.raises(ConfigError, match=r"'model\.bn_first': has 2 values but layers has 5 conv blocks"):
        models.parse_model({"preset": "mnistnet2", "bn_first": [True, False]})
    with pytest.raises(ConfigError, match=r"model\.bn_first"):
        models.parse_model({"preset": "mnistnet2", "bn_first": "yes"})


def test_overrides_change_the_count():
    # lenet5 with a 100-unit first hidden layer: 44,426 - (256*120+120 + 120*84) + (256*100+100 + 100*84)
    spec = models.parse_model({"preset": "lenet5", "fc": [100, 84]})
    assert models.spec_params(spec) == 44_426 - (256 * 120 + 120 + 120 * 84) + (256 * 100 + 100 + 100 * 84)


@pytest.mark.parametrize(
    ("token", "width", "expected"),
    [
        (16, 12, 12),
        ("16", 12, "12"),
        ("16k1", 12, "12k1"),
        ("16p1", 24, "24p1"),
        ("16k3p1", 8, "8k3p1"),
        ("t8", 12, "t12"),
        ("t10", 4, "t4"),
        ("s32", 40, "s40"),
        ("s32p1", 24, "s24p1"),
        ("s32k5p2", 8, "s8k5p2"),
    ],
)
def test_with_width(token, width, expected):
    assert models.with_width(token, width) == expected


@pytest.mark.parametrize("token", ["M", "GAP", "H"])
def test_with_width_refuses_tokens_without_a_width(token):
    with pytest.raises(ConfigError, match="no width"):
        models.with_width(token, 12)


def test_with_width_result_builds():
    spec = models.parse_model({"preset": "netv3"})
    layers = tuple(models.with_width(t, 20) if t == "16p1" else t for t in spec.layers)
    wider = dataclasses.replace(spec, layers=layers)
    # 16p1 -> 20p1: its conv grows from 16*16*9 to 16*20*9, its BN by 2*4, the head from 16*10 to 20*10
    assert models.spec_params(wider) == 13_808 + 16 * 4 * 9 + 2 * 4 + 4 * 10


def test_separable_block_is_a_depthwise_then_a_pointwise_conv():
    spec = models.parse_model({"family": "convnet", "layers": [8, "M", "s24", "s24p1", "GAP", "H"], "dropout": 0.1})
    assert models.parse_token("s24p1", 3, "k") == ("sep", 24, 3, 1)
    convs = [m for m in models.build(spec) if isinstance(m, torch.nn.Conv2d)]
    # 1->8 3x3 | 8 per-channel 3x3, 8->24 1x1 | 24 per-channel 3x3, 24->24 1x1 | head 24->10 over 1x1
    assert [(c.in_channels, c.out_channels, c.kernel_size, c.groups, c.padding) for c in convs] == [
        (1, 8, (3, 3), 1, (0, 0)),
        (8, 8, (3, 3), 8, (0, 0)), (8, 24, (1, 1), 1, (0, 0)),
        (24, 24, (3, 3), 24, (1, 1)), (24, 24, (1, 1), 1, (0, 0)),
        (24, 10, (1, 1), 1, (0, 0)),
    ]
    bn = 2 * (8 + 24 + 24)
    assert models.spec_params(spec) == 9 * 8 + (9 * 8 + 8 * 24) + (9 * 24 + 24 * 24) + 24 * 10 + bn
    # a conv block like any other: ReLU, BatchNorm and dropout after the pair; 13x13 -> 11x11 -> 11x11
    kinds = [type(m).__name__ for m in models.build(spec)]
    assert kinds[4:11] == ["MaxPool2d", "Conv2d", "Conv2d", "ReLU", "BatchNorm2d", "Dropout", "Conv2d"]
    assert models.build(spec)(torch.zeros(2, 1, 28, 28)).shape == (2, 10)


def test_mobilenet_separable_block_has_relu_and_batchnorm_after_the_depthwise_conv_too():
    spec = models.parse_model({"family": "convnet", "layers": [8, "M", "m24", "GAP", "H"], "dropout": 0.1})
    assert models.parse_token("m24p1", 3, "k") == ("msep", 24, 3, 1)
    kinds = [type(m).__name__ for m in models.build(spec)]
    # 8 per-channel 3x3, ReLU, BN(8), 8->24 1x1, ReLU, BN(24), dropout: both convs are followed
    assert kinds[4:12] == ["MaxPool2d", "Conv2d", "ReLU", "BatchNorm2d", "Conv2d", "ReLU", "BatchNorm2d", "Dropout"]
    xception = models.parse_model({"family": "convnet", "layers": [8, "M", "s24", "GAP", "H"], "dropout": 0.1})
    assert models.spec_params(spec) == models.spec_params(xception) + 2 * 8  # the depthwise conv's BatchNorm
    # the block's order holds inside it too: BN before ReLU where the block says so
    bn_first = models.parse_model({"family": "convnet", "layers": [8, "M", "m24", "GAP", "H"], "bn_first": True})
    assert [type(m).__name__ for m in models.build(bn_first)][3:9] == [  # no dropout here
        "MaxPool2d", "Conv2d", "BatchNorm2d", "ReLU", "Conv2d", "BatchNorm2d"]
    assert models.build(spec)(torch.zeros(2, 1, 28, 28)).shape == (2, 10)


def test_a_width_search_keeps_a_separable_block_separable():
    from hpo.dotted import base_value, set_path
    cfg = {"model": {"family": "convnet", "layers": [8, "M", "s24p1", "GAP", "H"]}}
    assert base_value(cfg, "model.layers.2") == 24
    set_path(cfg, "model.layers.2", 40)
    assert cfg["model"]["layers"][2] == "s40p1"
    cfg["model"]["layers"][2] = "m24p1"
    set_path(cfg, "model.layers.2", 33)
    assert cfg["model"]["layers"][2] == "m33p1"


# (model section, dotted key, a fragment of the reason)
BAD_MODELS = [
    ("lenet5", "model", "expected a mapping"),
    ({}, "model", "unknown model family"),
    ({"preset": "resnet"}, "model.preset", "unknown preset"),
    ({"preset": ["lenet5"]}, "model.preset", "unknown preset"),
    ({"family": "transformer"}, "model.family", "unknown model family"),
    ({"family": ["convnet"]}, "model.family", "unknown model family"),
    ({"preset": "lenet5", "family": "mlp"}, "model.family", "is a convpool"),
    ({"preset": "lenet5", "hidden": [10]}, "model.hidden", "unknown key"),
    ({"preset": "mlp", "hidden": "128"}, "model.hidden", "expected a list"),
    ({"preset": "mlp", "hidden": [0]}, "model.hidden", ">= 1"),
    ({"preset": "lenet5", "kernel": 5.0}, "model.kernel", "expected an integer"),
    ({"preset": "lenet5", "kernel": 0}, "model.kernel", ">= 1"),
    ({"preset": "lenet5", "convs": []}, "model.convs", "at least one"),
    ({"preset": "lenet5", "convs": [6, 16, 32]}, "model.convs", "shrink 28x28 to nothing"),
    ({"preset": "mlp", "dropout": 1.0}, "model.dropout", "[0, 1)"),
    ({"preset": "netv3", "dropout": -0.1}, "model.dropout", "[0, 1)"),
    ({"preset": "classic", "conv_dropout": 1.5}, "model.conv_dropout", "[0, 1)"),
    ({"preset": "mnistnet2", "batchnorm": "yes"}, "model.batchnorm", "true or false"),
    ({"family": "convnet", "layers": [8, "X", "H"]}, "model.layers.1", "unknown layer token"),
    ({"family": "convnet", "layers": [8, "16q3", "H"]}, "model.layers.1", "unknown layer token"),
    ({"family": "convnet", "layers": [8, 16]}, "model.layers", "must end with the head token H"),
    ({"family": "convnet", "layers": []}, "model.layers", "must end with the head token H"),
    ({"family": "convnet", "layers": [8, "H", 16, "H"]}, "model.layers.1", "must be the last token"),
    ({"family": "convnet", "layers": ["M", "M", "M", "M", "M", "H"]}, "model.layers.4", "shrinks to nothing"),
    ({"family": "convnet", "layers": [8, "8k30", "H"]}, "model.layers.1", "shrinks to nothing"),
    ({"family": "convnet", "layers": [0, "H"]}, "model.layers.0", ">= 1"),
    ({"family": "convnet", "layers": [8, "0k1", "H"]}, "model.layers.1", ">= 1"),
    ({"family": "convnet", "layers": [8, "t0", "H"]}, "model.layers.1", ">= 1"),
    ({"family": "convnet", "layers": [True, "H"]}, "model.layers.0", "expected an integer"),
    ({"family": "convnet", "layers": [8, "s0", "H"]}, "model.layers.1", ">= 1"),
    ({"family": "convnet", "layers": [8, "st8", "H"]}, "model.layers.1", "unknown layer token"),
    ({"family": "convnet", "layers": [8, "s8k30", "H"]}, "model.layers.1", "shrinks to nothing"),
    ({"family": "convnet", "layers": [8, "s8", "H"], "bn_first": [True]}, "model.bn_first", "2 conv blocks"),
]


@pytest.mark.parametrize(("section", "key", "reason"), BAD_MODELS, ids=[str(i) for i in range(len(BAD_MODELS))])
def test_bad_model_config(section, key, reason):
    with pytest.raises(ConfigError) as caught:
        models.check_shape(models.parse_model(section), (1, 28, 28))  # where parse_config checks the shape
    assert caught.value.key == key
    assert reason in caught.value.reason


# ----------------------------------------------------------------- other datasets' shapes and classes

SHAPES = [(1, 28, 28), (1, 20, 20), (3, 32, 32), (1, 20, 24)]  # MNIST, small, colour, not square


@pytest.mark.parametrize("shape", SHAPES, ids=["x".join(map(str, s)) for s in SHAPES])
@pytest.mark.parametrize("preset", sorted(SEED_PARAMS))
def test_every_preset_builds_for_other_shapes_and_classes(preset, shape):
    spec = models.parse_model({"preset": preset})
    model = models.build(spec, shape=shape, classes=4).eval()
    with torch.no_grad():
        out = model(torch.randn(2, *shape))
    assert out.shape == (2, 4)
    assert models.spec_params(spec, shape=shape, classes=4) == models.count_params(model)


def test_input_size_and_classes_change_the_dense_layers():
    linear = models.parse_model({"preset": "linear"})
    assert models.spec_params(linear, shape=(3, 32, 32), classes=4) == 3 * 32 * 32 * 4 + 4
    assert models.describe(linear, shape=(3, 32, 32), classes=4) == "linear 3072-4"
    assert models.describe(linear) == "linear 784-10"
    assert models.describe(models.parse_model({"preset": "mlp"}), shape=(1, 20, 20), classes=4) == "mlp 400-128-4"


# (preset, shape, dotted key, a fragment of the reason): fine on 28x28, too deep for a smaller image
TOO_DEEP = [
    ("mnistnet1", (1, 16, 16), "model.layers.7", "shrinks to nothing at 16 (input 16x16)"),
    ("netv3", (1, 12, 12), "model.layers.5", "shrinks to nothing at 16 (input 12x12)"),
    ("lenet5", (1, 12, 12), "model.convs", "2 conv+pool blocks of kernel 5 shrink 12x12 to nothing"),
    ("classic", (3, 28, 12), "model.convs", "shrink 28x12 to nothing"),
]


@pytest.mark.parametrize(("preset", "shape", "key", "reason"), TOO_DEEP, ids=[c[0] for c in TOO_DEEP])
def test_too_deep_for_the_image_is_a_config_error(preset, shape, key, reason):
    spec = models.parse_model({"preset": preset})
    models.check_shape(spec, (1, 28, 28))
    for check in (lambda: models.check_shape(spec, shape), lambda: models.build(spec, shape=shape)):
        with pytest.raises(ConfigError) as caught:
            check()
        assert caught.value.key == key
        assert reason in caught.value.reason


# ----------------------------------------------------------------- the CPU dropout (models.Dropout)


def test_cpu_dropout_drops_at_the_rate_in_256ths_and_keeps_the_expectation():
    torch.manual_seed(0)
    layer = models.Dropout(0.05).train()  # round(256 * 0.05) = 13: 13/256 = 5.08% dropped
    x = torch.ones(1000, 1000, requires_grad=True)
    y = layer(x)
    dropped = (y == 0).float().mean().item()
    assert dropped == pytest.approx(13 / 256, abs=0.002)
    assert y.mean().item() == pytest.approx(1.0, abs=0.005)  # kept values scaled by 256 / 243
    assert y.unique().tolist() == pytest.approx([0.0, 256 / 243])
    y.sum().backward()  # the gradient flows through the kept activations alone, scaled alike
    assert torch.equal(x.grad == 0, y == 0) and x.grad.max().item() == pytest.approx(256 / 243)


def test_cpu_dropout_is_seeded_eval_is_the_identity_and_tiny_rates_drop_nothing():
    layer = models.Dropout(0.3).train()
    x = torch.randn(8, 4, 5, 5)
    torch.manual_seed(1)
    first = layer(x)
    torch.manual_seed(1)
    assert torch.equal(layer(x), first)  # a trial's seed decides its masks, as with nn.Dropout
    assert torch.equal(layer.eval()(x), x)
    assert torch.equal(models.Dropout(0.001).train()(x), x)  # under 1/512: nothing to drop
    kept = models.Dropout(0.999).train()(torch.ones(100_000))  # round(255.7) = 256 would divide by zero
    assert kept.unique().tolist() == [0.0, 256.0] and (kept == 0).float().mean().item() == pytest.approx(255 / 256, abs=0.002)
    assert layer.train()(x.bfloat16()).dtype == torch.bfloat16  # under bf16 autocast


def test_built_nets_use_it_and_it_is_still_an_nn_dropout():
    net = models.build(models.parse_model({"preset": "mnistnet2"}))
    drops = [m for m in net.modules() if isinstance(m, torch.nn.Dropout)]
    assert drops and all(isinstance(m, models.Dropout) and m.p == 0.05 for m in drops)


def test_the_readmes_family_examples_parse_and_a_family_given_as_a_key_says_how():
    from pathlib import Path  # noqa: PLC0415

    import yaml  # noqa: PLC0415

    from hpo.config import parse_config  # noqa: PLC0415
    from hpo.errors import ConfigError  # noqa: PLC0415

    text = (Path(__file__).parents[1] / "README.md").read_text()
    block = text[text.index("Spelled out, each family"):]
    block = block[block.index("```yaml") + 7:block.index("```", block.index("```yaml") + 7)]
    families = [parse_config(yaml.safe_load(line)).model.family for line in block.strip().splitlines()]
    assert families == ["linear", "mlp", "convpool", "convnet"]
    with pytest.raises(ConfigError, match=r"unknown model family None; .* by its key, as in \{family: convnet, "):
        parse_config({"model": {"convnet": [8, "M", 16, "GAP", "H"]}})


def test_a_layer_choice_that_is_a_whole_token_is_that_layer():
    """`model.layers.2: {choices: [t4, t8, t12]}` on a t8 layer made 'tt4', an unknown token."""
    from hpo.models import with_width  # noqa: PLC0415

    assert [with_width("t8", w) for w in ("t4", 12)] == ["t4", "t12"]
    assert [with_width("16k1", w) for w in (12, "s24p1", "m24")] == ["12k1", "s24p1", "m24"]


@pytest.mark.parametrize(("layers", "index", "choices", "base"), [
    ([8, 16, "t8", "M", 12, 16, 16, "GAP", "H"], 2, ["t4", "t8"], "t8"),   # the README's own example, refused before
    ([8, "M", "s24p1", "GAP", "H"], 2, [16, "s24p1"], "s24p1"),
    ([8, 16, "t8", "M", 12, "GAP", "H"], 2, [8, "t4"], 8),                  # the base's width, as before
])
def test_a_base_layer_written_as_a_whole_token_is_a_choice_of_whole_tokens(layers, index, choices, base):
    """A base layer `t8` was read as its width 8 before it was looked for among [t4, t8]: the file
    was refused ("the base value 8 is not among the choices"), whatever the base said."""
    from hpo.study import parse_study  # noqa: PLC0415

    study = {"name": "tokens", "base": {"model": {"family": "convnet", "layers": layers},
                                        "optimizer": {"name": "sgd", "lr": 0.05}, "epochs": 1},
             "search": {f"model.layers.{index}": {"choices": choices}}}
    spec = parse_study(study, "tokens.yaml", "tokens")
    assert spec.space.base_params() == {f"model.layers.{index}": base}
    assert spec.space.apply({f"model.layers.{index}": base})["model"]["layers"] == layers  # trial 0 is the base
