"""hpo: hyperparameter search for small image classifiers.

From Python: `hpo.load_spec`, `hpo.run`, `hpo.train`, `hpo.verify` (hpo.api). They are imported on first use,
so `import hpo` (and `hpo --help`) stays quick.
"""

__version__ = "0.1.0"
__all__ = ["load_spec", "run", "train", "verify", "__version__"]


def __getattr__(name: str):
    if name in ("load_spec", "run", "train", "verify"):
        from hpo import api  # noqa: PLC0415

        return getattr(api, name)
    raise AttributeError(f"module 'hpo' has no attribute {name!r}")
