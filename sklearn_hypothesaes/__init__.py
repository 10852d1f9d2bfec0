"""sklearn_hypothesaes: interpretable hypotheses from text with sparse autoencoders.

A scikit-learn compatible implementation of the HypotheSAEs method: embed
texts, train a Top-K sparse autoencoder, select the neurons that predict a
target, name each neuron's concept, and validate the concepts on held-out data.
"""

from sklearn_hypothesaes._llm_batch import BatchPendingError
from sklearn_hypothesaes._version import __version__
from sklearn_hypothesaes.annotate import AnnotationError, LLMConceptAnnotator
from sklearn_hypothesaes.cache import SQLiteCache
from sklearn_hypothesaes.datasets import load_demo, make_planted_embeddings
from sklearn_hypothesaes.distributed import TorchThreadsPlugin, cap_torch_threads
from sklearn_hypothesaes.embedding import TextEmbedder
from sklearn_hypothesaes.evaluation import annotation_similarity, match_hypotheses
from sklearn_hypothesaes.generator import HypothesisGenerator
from sklearn_hypothesaes.interpret import (
    NeuronInterpreter,
    OfflineInterpreter,
    explore_neurons,
    fidelity_metrics,
    pair_texts_to_individual,
    parse_interpretation,
)
from sklearn_hypothesaes.keywords import (
    KeywordAnnotator,
    format_keyword_concept,
    parse_concept_terms,
)
from sklearn_hypothesaes.llm import (
    BudgetExceededError,
    LLMError,
    OpenAIClient,
    llm_endpoint_configured,
)
from sklearn_hypothesaes.out_of_core import (
    ShardedRows,
    embed_to_shards,
    load_sparse_shards,
    transform_to_shards,
)
from sklearn_hypothesaes.report import HypothesisReport, ModelFitError
from sklearn_hypothesaes.sae import TopKSAETransformer
from sklearn_hypothesaes.selection import NeuronSelector

__all__ = [
    "ShardedRows",
    "TorchThreadsPlugin",
    "cap_torch_threads",
    "embed_to_shards",
    "load_sparse_shards",
    "transform_to_shards",
    "HypothesisGenerator",
    "annotation_similarity",
    "match_hypotheses",
    "NeuronInterpreter",
    "parse_interpretation",
    "TextEmbedder",
    "HypothesisReport",
    "ModelFitError",
    "AnnotationError",
    "BatchPendingError",
    "BudgetExceededError",
    "LLMConceptAnnotator",
    "LLMError",
    "OpenAIClient",
    "llm_endpoint_configured",
    "KeywordAnnotator",
    "NeuronSelector",
    "OfflineInterpreter",
    "SQLiteCache",
    "TopKSAETransformer",
    "__version__",
    "explore_neurons",
    "fidelity_metrics",
    "format_keyword_concept",
    "load_demo",
    "make_planted_embeddings",
    "pair_texts_to_individual",
    "parse_concept_terms",
]
