"""sklearn_hypothesaes: interpretable hypotheses from text with sparse autoencoders.

A scikit-learn compatible implementation of the HypotheSAEs method: embed
texts, train a Top-K sparse autoencoder, select the neurons that predict a
target, name each neuron's concept, and validate the concepts on held-out data.
"""

from sklearn_hypothesaes._version import __version__
from sklearn_hypothesaes.datasets import make_planted_embeddings

__all__ = [
    "__version__",
    "make_planted_embeddings",
]
