"""The bounds a value may take wherever it is given: a study file, a config, the command line or
`hpo.run`/`hpo.train`/`hpo.verify`. One place, so that each says the same thing everywhere.
Imports nothing: `hpo --help` stays quick."""

MAX_EPOCHS = 1000  # a config's epochs, a study's budget.epochs, --epochs
MAX_WORKERS = 256  # worker processes on one machine; each holds the data and a few database connections
MAX_PACK = 64  # trials in one stacked model
MAX_SEED = 2**32 - 1  # a config's seed, --seed, a sampler's seed: what NumPy's generators (Optuna's samplers) take
