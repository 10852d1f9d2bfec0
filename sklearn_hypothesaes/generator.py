"""HypothesisGenerator: texts and a target in, named and checkable hypotheses out.

:class:`HypothesisGenerator` runs steps 1-4 of the HypotheSAEs method as one
scikit-learn meta-estimator:

1. embed the texts (``embedder``; or take precomputed ``embeddings``),
2. train a Top-K sparse autoencoder on the embeddings (``sae``),
3. select the neurons that predict the target (``selector``),
4. name each selected neuron's concept, with fidelity scoring (``interpreter``).

Its ``transform`` annotates texts with the hypotheses (``annotator``), so
``Pipeline([("hyp", HypothesisGenerator()), ("clf", LogisticRegression())])`` is
a concept-bottleneck model, and :meth:`HypothesisGenerator.report` runs step 5
(statistics on held-out data) through :class:`~sklearn_hypothesaes.report.HypothesisReport`.

The components are imported lazily so that importing this module is cheap.
"""

from __future__ import annotations

import hashlib
import logging
import os
import warnings
from collections.abc import Sequence
from numbers import Integral
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
from sklearn.base import BaseEstimator, TransformerMixin, _fit_context, clone
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import HasMethods, Interval, StrOptions
from sklearn.utils.multiclass import type_of_target
from sklearn.utils.validation import check_is_fitted, column_or_1d

from sklearn_hypothesaes._targets import infer_task
from sklearn_hypothesaes.cache import SQLiteCache
from sklearn_hypothesaes.exceptions import DataLeakageWarning

__all__ = ["HypothesisGenerator", "auto_batch_size", "text_fingerprints"]

logger = logging.getLogger(__name__)

_MAX_SEED = np.iinfo(np.int32).max


def text_fingerprints(texts: Sequence[str]) -> np.ndarray:
    """64-bit BLAKE2b fingerprints of texts, sorted and unique.

    Used to recognise texts seen in ``fit`` without keeping the texts. Two
    different texts share a fingerprint with probability about ``2**-64``.

    Parameters
    ----------
    texts : sequence of str
        The texts.

    Returns
    -------
    fingerprints : ndarray of shape (n_unique,), dtype uint64
        Sorted fingerprints of the distinct texts.

    Examples
    --------
    >>> fp = text_fingerprints(["a", "b", "a"])
    >>> fp.shape, fp.dtype.name
    ((2,), 'uint64')
    """
    out = np.fromiter(
        (
            int.from_bytes(hashlib.blake2b(t.encode("utf-8"), digest_size=8).digest(), "little")
            for t in texts
        ),
        dtype=np.uint64,
        count=len(texts),
    )
    return np.unique(out)


def _check_texts(texts, name: str = "texts") -> list[str]:
    """Return texts as a list of str, or raise naming the offending rows."""
    if isinstance(texts, str):
        raise TypeError(
            f"{name} must be a sequence of strings (a list, numpy array or pandas Series), "
            "not a single string; wrap it in a list."
        )
    if isinstance(texts, pd.DataFrame):
        if texts.shape[1] != 1:
            raise TypeError(
                f"{name} is a DataFrame with {texts.shape[1]} columns; pass the text column "
                "(a Series), e.g. df['text']."
            )
        texts = texts.iloc[:, 0]
    if isinstance(texts, pd.Series):
        texts = texts.tolist()
    elif isinstance(texts, np.ndarray):
        if texts.ndim != 1:
            raise ValueError(f"{name} must be 1-dimensional, got an array of shape {texts.shape}.")
        texts = texts.tolist()
    else:
        try:
            texts = list(texts)
        except TypeError as exc:
            raise TypeError(
                f"{name} must be a sequence of strings, got {type(texts).__name__}."
            ) from exc
    bad = [i for i, t in enumerate(texts) if not isinstance(t, str)]
    if bad:
        raise TypeError(
            f"{name} must all be strings; row(s) {bad[:10]}{' ...' if len(bad) > 10 else ''} "
            f"are not (e.g. {type(texts[bad[0]]).__name__}: {texts[bad[0]]!r}). Drop or "
            "convert them first."
        )
    empty = [i for i, t in enumerate(texts) if not t.strip()]
    if empty:
        raise ValueError(
            f"{name} contains empty text(s) at row(s) {empty[:10]}"
            f"{' ...' if len(empty) > 10 else ''}; drop them first."
        )
    if not texts:
        raise ValueError(f"{name} is empty: at least one text is needed.")
    return texts


def _check_pairs(pairs) -> tuple[list[str], list[str]]:
    """Split pairwise input into the A texts and the B texts."""
    if isinstance(pairs, pd.DataFrame):
        if pairs.shape[1] != 2:
            raise ValueError(
                "For pairwise=True, a DataFrame must have exactly 2 columns (text A, text B); "
                f"got {pairs.shape[1]}."
            )
        a, b = pairs.iloc[:, 0], pairs.iloc[:, 1]
    else:
        if isinstance(pairs, str):
            raise TypeError("For pairwise=True, pass a sequence of (text_a, text_b) pairs.")
        arr = np.empty(len(pairs), dtype=object)
        arr[:] = list(pairs) if not isinstance(pairs, np.ndarray) else list(map(tuple, pairs))
        if not all(isinstance(p, (tuple, list, np.ndarray)) and len(p) == 2 for p in arr):
            raise ValueError(
                "For pairwise=True, X must be a sequence of (text_a, text_b) pairs, an "
                "n x 2 array, or a DataFrame with two text columns."
            )
        a = [p[0] for p in arr]
        b = [p[1] for p in arr]
    return _check_texts(a, "texts A"), _check_texts(b, "texts B")


def _check_embeddings(E, n: int, name: str = "embeddings") -> np.ndarray:
    if sp.issparse(E):
        E = E.toarray()
    try:
        E = np.asarray(E, dtype=np.float32)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{name} must be a numeric n x d matrix: {exc}") from exc
    if E.ndim != 2:
        raise ValueError(f"{name} must be 2-dimensional (n texts x d), got shape {E.shape}.")
    if E.shape[0] != n:
        raise ValueError(
            f"{name} has {E.shape[0]} rows but there are {n} texts; give one embedding per "
            "text, in the same order."
        )
    if not np.isfinite(E).all():
        rows = np.unique(np.nonzero(~np.isfinite(E))[0])
        raise ValueError(
            f"{name} contain NaN or infinite values in row(s) {rows[:10].tolist()}; "
            "re-embed those texts or drop them."
        )
    return E


def auto_batch_size(n_texts: int) -> int:
    """SAE batch size for ``n_texts`` training texts: ``clip(n_texts // 25, 16, 512)``.

    A Top-K SAE needs optimiser steps more than it needs large batches: on the demo
    data, 2,000 texts in batches of 512 (4 steps an epoch) left the neurons mixing
    several aspects, while batches of about n / 25 recovered them.

    Examples
    --------
    >>> auto_batch_size(300), auto_batch_size(7000), auto_batch_size(100_000)
    (16, 280, 512)
    """
    return int(np.clip(n_texts // 25, 16, 512))


def _set_if_param(est, **values) -> None:
    """Set the given parameters that ``est`` has (and leaves at their default None)."""
    params = est.get_params(deep=False)
    for key, value in values.items():
        if key in params and params[key] is None:
            est.set_params(**{key: value})


def _llm_available() -> bool:
    try:
        from sklearn_hypothesaes.llm import llm_endpoint_configured
    except ImportError:  # pragma: no cover - the LLM layer is part of the package
        return False
    return bool(llm_endpoint_configured())


class HypothesisGenerator(TransformerMixin, BaseEstimator):
    """Generate natural-language hypotheses about what in texts predicts a target.

    ``fit(texts, y)`` embeds the texts, trains a sparse autoencoder on the
    embeddings, selects the neurons that predict ``y`` and names each selected
    neuron's concept (with fidelity scores). ``transform(texts)`` annotates
    texts with those concepts (0/1 per text and hypothesis), and
    :meth:`report` validates them on held-out texts.

    Parameters
    ----------
    embedder : "auto", estimator or None, default="auto"
        Turns texts into an n x d matrix (``transform``). ``"auto"`` is a
        :class:`~sklearn_hypothesaes.embedding.TextEmbedder` with its default model
        and this estimator's ``cache``. ``None`` means embeddings are always
        passed to :meth:`fit` as ``embeddings=``.
    sae : estimator, default=None
        The sparse autoencoder step, e.g.
        :class:`~sklearn_hypothesaes.sae.TopKSAETransformer` or a
        :class:`~sklearn.pipeline.FeatureUnion` of several (neuron names then say
        which SAE a neuron comes from). None uses ``TopKSAETransformer(M=256, K=8)``
        with a batch size suited to the number of texts (:func:`auto_batch_size`).
        Pass one explicitly to grid-search ``sae__M`` and ``sae__K``.
    selector : estimator, default=None
        Neuron selection, e.g.
        :class:`~sklearn_hypothesaes.selection.NeuronSelector`. None uses
        ``NeuronSelector(n_select=n_hypotheses, method="lasso")``.
    interpreter : {"auto", "offline", "llm"} or object, default="auto"
        Names the selected neurons (an object with
        ``interpret(texts, activations, neurons)``). ``"offline"``:
        :class:`~sklearn_hypothesaes.interpret.OfflineInterpreter` (contrastive key
        terms, no LLM). ``"llm"``: the LLM interpreter with ``client``. ``"auto"``:
        ``"llm"`` when an endpoint is configured (``OPENAI_API_KEY``,
        ``OPENAI_BASE_URL`` or ``OPENAI_KEY_SAE`` set, or ``client`` given), else
        ``"offline"``.
    annotator : {"auto", "offline", "llm"} or estimator, default="auto"
        Annotates texts with the hypotheses in :meth:`transform`; a transformer
        with a ``concepts`` parameter (set to the hypotheses at fit time).
        ``"offline"``: :class:`~sklearn_hypothesaes.keywords.KeywordAnnotator`
        (needs quoted terms in the hypotheses, as the offline interpreter writes
        them). ``"llm"``: :class:`~sklearn_hypothesaes.annotate.LLMConceptAnnotator`
        with ``client``. ``"auto"``: ``"llm"`` when an endpoint is configured, else
        ``"offline"``.
    n_hypotheses : int, default=20
        Number of neurons to select when ``selector`` is None.
    task : {"auto", "regression", "binary", "multiclass"}, default="auto"
        Kind of target. ``"auto"``: from the target's values (floats with
        non-integer values: regression; two values: binary; a few integer or
        string labels: multiclass). Pass ``"regression"`` for ratings such as
        1-5 stars that should be treated as numbers.
    pairwise : bool, default=False
        Pairwise task: ``X`` holds pairs ``(text_a, text_b)`` and ``y`` says which
        wins (binary) or by how much (numeric). The SAE is trained on the
        individual texts, selection runs on activation differences ``Z_A - Z_B``,
        interpretation on the individual texts, and :meth:`transform` returns
        ``H_A - H_B`` in {-1, 0, 1}.
    client : OpenAIClient, default=None
        LLM endpoint configuration for the LLM interpreter and annotator. None uses
        ``OpenAIClient()`` (``gpt-4o-mini``; ``OPENAI_BASE_URL`` respected).
    cache : None, bool, str or path-like, default=None
        Cache for embeddings, annotations and interpretations, passed to the
        components built here: None the default directory, False none, a path
        that directory.
    random_state : int, RandomState instance or None, default=None
        Seeds the components built here (and those given with
        ``random_state=None``).
    verbose : bool, default=True
        Progress bars and log messages.

    Attributes
    ----------
    hypotheses_ : pandas.DataFrame
        One row per selected neuron, in order of selection importance: ``neuron``
        (column index into the SAE output), ``neuron_name``, ``hypothesis``,
        ``selector_score``, ``activation_prevalence`` (fraction of training texts
        on which the neuron fires), the interpreter's fidelity metrics
        (``precision``, ``recall``, ``f1``, ``correlation``), ``candidates``,
        ``positive_examples``, ``negative_examples``, ``status`` and ``used``
        (whether the hypothesis is one of the output features; False for failed
        interpretations and duplicates).
    hypotheses_list_ : list of str
        The hypotheses used as output features, in order.
    embedder_ : estimator or None
        The fitted embedder (None when embeddings were given).
    sae_ : estimator
        The fitted sparse autoencoder.
    selector_ : estimator
        The fitted neuron selector.
    interpreter_ : object
        The interpreter used.
    annotator_ : estimator
        The fitted annotator whose ``concepts`` are ``hypotheses_list_``.
    mode_ : {"offline", "llm"}
        Whether the annotator calls an LLM.
    task_ : str
        The resolved task.
    classes_ : ndarray or None
        The class labels for binary and multiclass targets.
    n_texts_ : int
        Number of training rows (pairs for pairwise tasks).
    fit_fingerprints_ : ndarray of shape (n_unique_texts,), dtype uint64
        Fingerprints of the training texts (see :func:`text_fingerprints`), used to
        warn when :meth:`report` is given training texts.

    See Also
    --------
    sklearn_hypothesaes.report.HypothesisReport : Statistics on held-out annotations.
    sklearn_hypothesaes.evaluation.match_hypotheses : Compare with known concepts.

    Examples
    --------
    Precomputed embeddings skip step 1; here the demo data's aspect indicators plus
    noise stand in for sentence embeddings, to keep the example fast.

    >>> import numpy as np
    >>> from sklearn_hypothesaes.datasets import load_demo
    >>> from sklearn_hypothesaes.generator import HypothesisGenerator
    >>> from sklearn_hypothesaes.sae import TopKSAETransformer
    >>> from sklearn_hypothesaes.selection import NeuronSelector
    >>> demo = load_demo(1000, random_state=0)
    >>> noise = np.random.default_rng(0).normal(0, 0.05, demo.truth.shape)
    >>> E = demo.truth.to_numpy() + noise
    >>> gen = HypothesisGenerator(
    ...     embedder=None,
    ...     sae=TopKSAETransformer(M=10, K=3, verbose=False),
    ...     selector=NeuronSelector(n_select=3),
    ...     task="regression",
    ...     random_state=0,
    ...     verbose=False,
    ... )
    >>> gen = gen.fit(demo.texts, demo.y, embeddings=E)
    >>> H = gen.transform(demo.texts[:4])
    >>> H.shape == (4, len(gen.hypotheses_list_)), set(H.ravel()) <= {0, 1}
    (True, True)
    >>> gen.hypotheses_list_[0].startswith("mentions")
    True
    """

    _parameter_constraints: dict = {
        "embedder": [StrOptions({"auto"}), HasMethods(["transform"]), None],
        "sae": [HasMethods(["fit", "transform"]), None],
        "selector": [HasMethods(["fit"]), None],
        "interpreter": [StrOptions({"auto", "offline", "llm"}), HasMethods(["interpret"])],
        "annotator": [StrOptions({"auto", "offline", "llm"}), HasMethods(["transform"])],
        "n_hypotheses": [Interval(Integral, 1, None, closed="left")],
        "task": [StrOptions({"auto", "regression", "binary", "multiclass"})],
        "pairwise": ["boolean"],
        "client": [HasMethods(["get_params"]), None],
        "cache": [None, "boolean", str, os.PathLike, SQLiteCache],
        "random_state": ["random_state"],
        "verbose": ["verbose"],
    }

    def __init__(
        self,
        embedder: Any = "auto",
        sae: Any = None,
        selector: Any = None,
        interpreter: Any = "auto",
        annotator: Any = "auto",
        *,
        n_hypotheses: int = 20,
        task: str = "auto",
        pairwise: bool = False,
        client: Any = None,
        cache: Any = None,
        random_state: Any = None,
        verbose: bool = True,
    ) -> None:
        self.embedder = embedder
        self.sae = sae
        self.selector = selector
        self.interpreter = interpreter
        self.annotator = annotator
        self.n_hypotheses = n_hypotheses
        self.task = task
        self.pairwise = pairwise
        self.client = client
        self.cache = cache
        self.random_state = random_state
        self.verbose = verbose

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.string = True
        tags.input_tags.two_d_array = False
        tags.target_tags.required = True
        return tags

    # -- component construction -----------------------------------------------------
    def _client(self):
        if self.client is not None:
            return clone(self.client)
        from sklearn_hypothesaes.llm import OpenAIClient

        return OpenAIClient(verbose=self.verbose)

    def _seed(self, rng) -> int:
        return int(rng.randint(_MAX_SEED))

    def _make_embedder(self):
        if self.embedder is None:
            return None
        if isinstance(self.embedder, str):
            from sklearn_hypothesaes.embedding import TextEmbedder

            return TextEmbedder(cache=self.cache, verbose=self.verbose)
        return clone(self.embedder)

    def _make_sae(self, rng, n_texts: int):
        if self.sae is None:
            from sklearn_hypothesaes.sae import TopKSAETransformer

            sae = TopKSAETransformer(M=256, K=8, batch_size=auto_batch_size(n_texts))
            _set_if_param(sae, verbose=self.verbose)
        else:
            sae = clone(self.sae)
        _seed_nested(sae, rng)
        return sae

    def _make_selector(self, rng):
        if self.selector is None:
            from sklearn_hypothesaes.selection import NeuronSelector

            selector = NeuronSelector(n_select=self.n_hypotheses, method="lasso")
        else:
            selector = clone(self.selector)
        params = selector.get_params(deep=False)
        if params.get("task") == "auto":
            selector.set_params(task=self.task_)
        _set_if_param(selector, random_state=self._seed(rng))
        return selector

    def _resolve_mode(self, value: str, kind: str) -> str:
        if value == "offline":
            return "offline"
        if value == "llm":
            return "llm"
        return "llm" if (self.client is not None or _llm_available()) else "offline"

    def _make_interpreter(self, rng):
        if not isinstance(self.interpreter, str):
            interp = clone(self.interpreter)
            _set_if_param(interp, random_state=self._seed(rng))
            return interp
        mode = self._resolve_mode(self.interpreter, "interpreter")
        if mode == "llm":
            from sklearn_hypothesaes.interpret import NeuronInterpreter

            interp = NeuronInterpreter(client=self._client(), verbose=self.verbose)
            _set_if_param(interp, cache=self.cache, random_state=self._seed(rng))
            return interp
        from sklearn_hypothesaes.interpret import OfflineInterpreter

        interp = OfflineInterpreter(verbose=self.verbose)
        _set_if_param(interp, random_state=self._seed(rng))
        return interp

    def _make_annotator(self, concepts: list[str]):
        if not isinstance(self.annotator, str):
            return clone(self.annotator).set_params(concepts=list(concepts)), _annotator_mode(
                self.annotator
            )
        mode = self._resolve_mode(self.annotator, "annotator")
        if mode == "llm":
            from sklearn_hypothesaes.annotate import LLMConceptAnnotator

            ann = LLMConceptAnnotator(concepts=list(concepts), client=self._client())
            _set_if_param(ann, cache=self.cache)
            params = ann.get_params(deep=False)
            if "verbose" in params:
                ann.set_params(verbose=self.verbose)
            return ann, "llm"
        from sklearn_hypothesaes.keywords import KeywordAnnotator

        return KeywordAnnotator(concepts=list(concepts)), "offline"

    # -- fitting --------------------------------------------------------------------
    def _resolve_task(self, y) -> tuple[np.ndarray, str, np.ndarray | None]:
        y = column_or_1d(y, warn=True)
        if len(y) == 0:
            raise ValueError("y is empty.")
        if y.dtype.kind in "fc" and not np.isfinite(y).all():
            rows = np.nonzero(~np.isfinite(y))[0]
            raise ValueError(
                f"y contains NaN or infinite values at row(s) {rows[:10].tolist()}; drop "
                "those rows first."
            )
        if y.dtype.kind == "O" and pd.isna(y).any():
            rows = np.nonzero(pd.isna(y))[0]
            raise ValueError(f"y contains missing values at row(s) {rows[:10].tolist()}.")
        kind = type_of_target(y)
        if kind not in ("continuous", "binary", "multiclass"):
            raise ValueError(
                f"Cannot use a target of type {kind!r}: y must be numeric (regression), "
                "binary or multiclass (one label per text)."
            )
        task, _ = infer_task(
            y, self.task, single_value_hint="hypotheses need a target that varies."
        )
        n_unique = len(np.unique(y))
        if task == "regression":
            if y.dtype.kind not in "biuf":
                raise ValueError(
                    f"task='regression' needs a numeric target, got values like {y[0]!r}."
                )
            return y.astype(np.float64), task, None
        classes = np.unique(y)
        if task == "binary":
            if n_unique != 2:
                raise ValueError(
                    f"task='binary' needs exactly 2 distinct target values, got {n_unique}; "
                    "use task='multiclass' or 'regression'."
                )
            return (y == classes[1]).astype(np.int64), task, classes
        if kind == "continuous":
            raise ValueError(
                "task='multiclass' needs class labels, but y holds non-integer numbers; "
                "use task='regression'."
            )
        return y, task, classes

    @_fit_context(prefer_skip_nested_validation=False)
    def fit(self, X, y, embeddings=None) -> HypothesisGenerator:
        """Embed, train the SAE, select neurons and interpret them.

        Parameters
        ----------
        X : sequence of str of length n_samples, or sequence of (str, str) pairs
            The texts (pairs of texts when ``pairwise=True``).
        y : array-like of shape (n_samples,)
            The target.
        embeddings : array-like of shape (n_samples, d), default=None
            Precomputed embeddings of ``X`` (for ``pairwise=True``: a tuple
            ``(embeddings_A, embeddings_B)``). When given, the embedder is not used.

        Returns
        -------
        self : HypothesisGenerator
            The fitted estimator.
        """
        rng = check_random_state(self.random_state)
        if self.pairwise:
            texts_a, texts_b = _check_pairs(X)
            if len(texts_a) != len(texts_b):  # pragma: no cover - guarded by _check_pairs
                raise ValueError("Every pair needs two texts.")
            n = len(texts_a)
        else:
            texts = _check_texts(X, "X")
            n = len(texts)
        y = np.asarray(y)
        if y.ndim != 1 and not (y.ndim == 2 and y.shape[1] == 1):
            raise ValueError(f"y must be 1-dimensional, got shape {y.shape}.")
        if len(y) != n:
            raise ValueError(f"X has {n} rows but y has {len(y)}; they must match.")
        y_enc, self.task_, self.classes_ = self._resolve_task(y)
        if self.pairwise and self.task_ == "multiclass":
            raise ValueError(
                "Pairwise tasks need a binary target (which text wins) or a numeric one "
                "(by how much); got a multiclass target."
            )

        # 1. embeddings of the individual texts
        if self.pairwise:
            unique = list(dict.fromkeys(texts_a + texts_b))
            pos = {t: i for i, t in enumerate(unique)}
            idx_a = np.fromiter((pos[t] for t in texts_a), dtype=np.int64, count=n)
            idx_b = np.fromiter((pos[t] for t in texts_b), dtype=np.int64, count=n)
            if embeddings is not None:
                if not (isinstance(embeddings, (tuple, list)) and len(embeddings) == 2):
                    raise ValueError(
                        "For pairwise=True, pass embeddings=(embeddings_A, embeddings_B)."
                    )
                E_a = _check_embeddings(embeddings[0], n, "embeddings_A")
                E_b = _check_embeddings(embeddings[1], n, "embeddings_B")
                if E_a.shape[1] != E_b.shape[1]:
                    raise ValueError("embeddings_A and embeddings_B differ in dimension.")
                E = np.empty((len(unique), E_a.shape[1]), dtype=np.float32)
                E[idx_a] = E_a
                E[idx_b] = E_b
            individual = unique
        else:
            individual = texts
            if embeddings is not None:
                E = _check_embeddings(embeddings, n)
        self.embedder_ = None
        if embeddings is None:
            embedder = self._make_embedder()
            if embedder is None:
                raise ValueError(
                    "embedder=None needs precomputed embeddings: call fit(X, y, embeddings=E)."
                )
            embedder.fit(individual)
            E = _check_embeddings(embedder.transform(individual), len(individual))
            self.embedder_ = embedder

        # 2. sparse autoencoder on the individual embeddings
        self.sae_ = self._make_sae(rng, E.shape[0]).fit(E)
        Z = self.sae_.transform(E)
        Z = sp.csr_matrix(Z) if not sp.issparse(Z) else Z.tocsr()
        n_neurons = Z.shape[1]
        try:
            neuron_names = [str(s) for s in self.sae_.get_feature_names_out()]
        except (AttributeError, ValueError, TypeError):
            neuron_names = [f"sae{j}" for j in range(n_neurons)]

        # 3. selection (on differences for pairwise tasks)
        A = (Z[idx_a] - Z[idx_b]).tocsr() if self.pairwise else Z
        self.selector_ = self._make_selector(rng).fit(A, y_enc)
        selected = _selected_neurons(self.selector_)
        scores = _neuron_scores(self.selector_, n_neurons)

        # 4. interpretation on the individual texts
        self.interpreter_ = self._make_interpreter(rng)
        interp = self.interpreter_.interpret(individual, Z, neurons=list(selected))
        self.hypotheses_ = self._hypotheses_frame(interp, selected, scores, neuron_names, Z)
        self.hypotheses_list_ = self.hypotheses_.loc[
            self.hypotheses_["used"], "hypothesis"
        ].tolist()
        if not self.hypotheses_list_:
            raise ValueError(
                "No selected neuron could be interpreted (statuses: "
                f"{self.hypotheses_['status'].tolist()}); try more data, another M/K or "
                "another selection method."
            )
        self.annotator_, self.mode_ = self._make_annotator(self.hypotheses_list_)
        self.annotator_.fit(individual[: min(len(individual), 100)])
        self.n_texts_ = n
        self.fit_fingerprints_ = text_fingerprints(individual)
        return self

    def _hypotheses_frame(self, interp, selected, scores, neuron_names, Z) -> pd.DataFrame:
        if not isinstance(interp, pd.DataFrame) or "neuron" not in interp:
            raise TypeError(
                "The interpreter must return a DataFrame with a 'neuron' column; got "
                f"{type(interp).__name__}."
            )
        interp = interp.copy()
        interp["neuron"] = interp["neuron"].astype(np.int64)
        order = {int(j): r for r, j in enumerate(selected)}
        interp["selection_rank"] = interp["neuron"].map(order)
        interp = interp.sort_values("selection_rank", kind="stable").reset_index(drop=True)
        nn = interp["neuron"].to_numpy()
        interp.insert(1, "neuron_name", [neuron_names[j] for j in nn])
        interp["selector_score"] = scores[nn] if scores is not None else np.nan
        fires = np.asarray((Z[:, nn] > 0).mean(axis=0)).ravel() if len(nn) else np.zeros(0)
        # the interpreter's own "prevalence" (if any) is the same fraction, on its input
        interp = interp.drop(columns=["prevalence"], errors="ignore")
        interp["activation_prevalence"] = fires
        if "status" not in interp:
            interp["status"] = "ok"
        hyp = interp["hypothesis"].astype(object)
        ok = (interp["status"] == "ok") & hyp.map(lambda h: isinstance(h, str) and bool(h.strip()))
        seen: dict[str, int] = {}
        used = []
        status = interp["status"].astype(object).tolist()
        for i, (h, good) in enumerate(zip(hyp, ok)):
            if not good:
                used.append(False)
                continue
            if h in seen:
                status[i] = f"duplicate of neuron {seen[h]}"
                used.append(False)
                continue
            seen[h] = int(nn[i])
            used.append(True)
        interp["status"] = status
        interp["used"] = used
        front = ["neuron", "neuron_name", "hypothesis", "selection_rank", "selector_score"]
        rest = [c for c in interp.columns if c not in front]
        return interp[front + rest]

    # -- transforming ---------------------------------------------------------------
    def transform(self, X) -> np.ndarray:
        """Annotate texts with the hypotheses.

        Parameters
        ----------
        X : sequence of str, or sequence of (str, str) pairs when ``pairwise=True``
            Texts to annotate.

        Returns
        -------
        annotations : ndarray of shape (n_samples, n_hypotheses)
            uint8 0/1 (int8 ``H_A - H_B`` in {-1, 0, 1} for pairwise tasks), columns in
            the order of ``hypotheses_list_``.
        """
        check_is_fitted(self, "annotator_")
        if self.pairwise:
            texts_a, texts_b = _check_pairs(X)
            unique = list(dict.fromkeys(texts_a + texts_b))
            pos = {t: i for i, t in enumerate(unique)}
            H = np.asarray(self.annotator_.transform(unique)).astype(np.int8)
            ia = [pos[t] for t in texts_a]
            ib = [pos[t] for t in texts_b]
            return H[ia] - H[ib]
        texts = _check_texts(X, "X")
        return np.asarray(self.annotator_.transform(texts)).astype(np.uint8)

    def get_feature_names_out(self, input_features=None) -> np.ndarray:
        """The hypotheses, one per output column.

        Parameters
        ----------
        input_features : None
            Ignored (the input is text).

        Returns
        -------
        feature_names_out : ndarray of str objects
        """
        check_is_fitted(self, "hypotheses_list_")
        return np.asarray(self.hypotheses_list_, dtype=object)

    # -- validation -----------------------------------------------------------------
    def overlap_with_fit(self, X) -> int:
        """Number of rows of ``X`` with a text that was used in :meth:`fit`.

        Parameters
        ----------
        X : sequence of str, or of (str, str) pairs when ``pairwise=True``
            Texts to check.

        Returns
        -------
        n_overlap : int
            Rows (pairs count once) sharing a text with the training data.
        """
        check_is_fitted(self, "fit_fingerprints_")
        if self.pairwise:
            a, b = _check_pairs(X)
            fa = _row_fingerprints(a)
            fb = _row_fingerprints(b)
            hit = np.isin(fa, self.fit_fingerprints_) | np.isin(fb, self.fit_fingerprints_)
        else:
            hit = np.isin(_row_fingerprints(_check_texts(X, "X")), self.fit_fingerprints_)
        return int(hit.sum())

    def report(self, X, y, **report_params):
        """Validate the hypotheses on held-out texts.

        Annotates ``X`` with the hypotheses and fits a
        :class:`~sklearn_hypothesaes.report.HypothesisReport` on the annotations and
        ``y``. Warns with :class:`~sklearn_hypothesaes.exceptions.DataLeakageWarning`
        when ``X`` contains texts used in :meth:`fit`: the neurons were chosen on
        those texts, so their p-values would be too optimistic.

        Parameters
        ----------
        X : sequence of str, or of (str, str) pairs when ``pairwise=True``
            Held-out texts.
        y : array-like of shape (n_samples,)
            Their target.
        **report_params
            Passed to ``HypothesisReport`` (e.g. ``alpha=0.05``,
            ``correction="holm"``); ``task`` defaults to ``task_``.

        Returns
        -------
        report : HypothesisReport
            Fitted; see its ``table_``, ``metrics_``, ``to_html``.
        """
        from sklearn_hypothesaes.report import HypothesisReport

        check_is_fitted(self, "annotator_")
        n_overlap = self.overlap_with_fit(X)
        if n_overlap:
            warnings.warn(
                f"{n_overlap} of the {len(X)} rows given to report() contain texts used in "
                "fit(). The hypotheses were selected on those texts, so their statistics "
                "there are biased (p-values too small); report on held-out texts only.",
                DataLeakageWarning,
                stacklevel=2,
            )
        y = np.asarray(y)
        if len(y) != len(X):
            raise ValueError(f"X has {len(X)} rows but y has {len(y)}; they must match.")
        if self.task_ == "binary":
            unknown = ~np.isin(y, self.classes_)
            if unknown.any():
                raise ValueError(
                    f"y has label(s) {np.unique(y[unknown])[:5].tolist()} not seen in fit "
                    f"(classes {self.classes_.tolist()})."
                )
            y = (y == self.classes_[1]).astype(np.int64)
        annotations = self.transform(X)
        report_params.setdefault("task", self.task_)
        report = HypothesisReport(**report_params)
        return report.fit(annotations, y, hypotheses=list(self.hypotheses_list_))


def _row_fingerprints(texts: list[str]) -> np.ndarray:
    return np.fromiter(
        (
            int.from_bytes(hashlib.blake2b(t.encode("utf-8"), digest_size=8).digest(), "little")
            for t in texts
        ),
        dtype=np.uint64,
        count=len(texts),
    )


def _seed_nested(est, rng) -> None:
    """Give every ``random_state=None`` parameter of ``est`` (nested too) a seed."""
    params = est.get_params(deep=True)
    updates = {
        k: int(rng.randint(_MAX_SEED))
        for k, v in sorted(params.items())
        if (k == "random_state" or k.endswith("__random_state")) and v is None
    }
    if updates:
        est.set_params(**updates)


def _annotator_mode(annotator) -> str:
    name = type(annotator).__name__.lower()
    return "llm" if ("llm" in name or "client" in annotator.get_params(deep=False)) else "offline"


def _selected_neurons(selector) -> np.ndarray:
    selected = getattr(selector, "selected_", None)
    if selected is None:
        selected = np.flatnonzero(selector.get_support())
    selected = np.asarray(selected, dtype=np.int64).ravel()
    if selected.size == 0:
        raise ValueError("The selector selected no neuron; nothing to interpret.")
    return selected


def _neuron_scores(selector, n_neurons: int) -> np.ndarray | None:
    scores = getattr(selector, "scores_", None)
    if scores is None:
        return None
    scores = np.asarray(scores, dtype=np.float64)
    if scores.ndim == 1 and scores.shape[0] == n_neurons:
        return scores
    if scores.ndim == 2:
        # one row (or column) per class: keep the largest absolute score, signed
        if scores.shape[1] == n_neurons:
            rows = np.abs(scores).argmax(axis=0)
            return scores[rows, np.arange(n_neurons)]
        if scores.shape[0] == n_neurons:
            cols = np.abs(scores).argmax(axis=1)
            return scores[np.arange(n_neurons), cols]
    return None
