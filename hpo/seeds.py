"""The seeds' hand-tuned results: the reference points a study's accuracy-vs-size view is read against.

Each accuracy is the seed's best epoch on the MNIST test set, picked after the fact (the seed
tuned by looking at that curve), so it is an optimistic mark; `hpo` reports a trial's final
epoch as its value. Parameter counts are the presets' in `hpo.models.PRESETS`.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SeedResult:
    preset: str       # the model preset in hpo.models.PRESETS
    label: str        # how a chart names it
    seed: str         # which seed recipe it comes from
    n_params: int
    accuracy: float   # best-epoch test accuracy, a fraction
    approximate: bool = False  # the seed gave the number only roughly


SEED_RESULTS: tuple[SeedResult, ...] = (
    SeedResult("linear", "linear 784-10", "000", 7_850, 0.9168),
    SeedResult("mlp", "MLP 784-128-10", "000", 101_770, 0.9401, approximate=True),
    SeedResult("cnn", "CNN conv 32/64, fc 1024", "000", 1_111_946, 0.9931),
    SeedResult("lenet5", "LeNet-5", "001", 44_426, 0.9913),
    SeedResult("mnistnet1", "MnistNet_1", "002", 8_620, 0.9837),
    SeedResult("mnistnet2", "MnistNet_2", "002", 7_416, 0.9947),
    SeedResult("mnistnet3", "MnistNet_3", "002", 6_544, 0.9945),
    SeedResult("classic", "PyTorch example", "003", 21_840, 0.9914),
    SeedResult("netv3", "NetV3", "004", 13_808, 0.9941),
)
