"""hpo: hyperparameter search for small MNIST classifiers."""

__version__ = "0.1.0"
