"""Offline keyword concepts: their format, a strict parser, and a fast annotator.

An offline concept names the words that make a text match it, in a form that
reads like an LLM hypothesis and that :class:`KeywordAnnotator` can check
exactly::

    mentions "wait", "minutes" or "hour"

Matching is case-insensitive and works on word tokens (maximal runs of
``\\w`` characters, as Python's :mod:`re` defines them): a term matches a text
when the term's tokens occur in the text as consecutive tokens. So ``"wait"``
matches "Wait!" but not "waiter", and ``"long wait"`` matches "long wait",
"long-wait" and "long, wait" alike (punctuation and spaces between words are
ignored).

The annotator tokenises all-ASCII texts with vectorised numpy code on their
bytes (candidate tokens by length, first and last byte, then an exact byte
comparison with the concept words), so a million texts are annotated in
seconds. Texts whose only non-ASCII characters are punctuation (curly quotes,
dashes) are first reduced to ASCII by turning those characters into spaces,
which keeps their tokens; texts with non-ASCII word characters take an exact
per-text regular expression with the same semantics.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin, _fit_context
from sklearn.utils.validation import check_is_fitted

__all__ = [
    "KeywordAnnotator",
    "format_keyword_concept",
    "parse_concept_terms",
    "check_texts",
]

_QUOTED = re.compile(r'"([^"]*)"')
_WORD = re.compile(r"\w+")
_NEGATION = re.compile(r"\b(?:not|no|never|without|nor|none)\b|n't\b", re.IGNORECASE)
_NON_ASCII_NON_WORD = re.compile(r"[^\x00-\x7f\w]")
# A whole concept: an optional lead-in (e.g. "mentions"), then quoted terms
# separated by commas and/or "or"/"and".
_STRICT = re.compile(r'^\s*(?:[^"]*?)\s*"[^"]*"(?:\s*(?:,|\bor\b|\band\b|,\s*or\b)\s*"[^"]*")*\s*$')

_CHUNK_TEXTS = 8192
_MAX_WORD_CHARS = 200  # token keys hold lengths up to 255
_ASCII_WORD = "0123456789abcdefghijklmnopqrstuvwxyz_"

# Byte translation for ASCII text: \w bytes ([0-9A-Za-z_]) to lower case,
# every other byte to a space.
_LOWER_WORDS = bytes(
    c if chr(c) in _ASCII_WORD else (c + 32 if 65 <= c <= 90 else 32) for c in range(256)
)


def format_keyword_concept(terms: Sequence[str]) -> str:
    """Write key terms as an offline concept string.

    Parameters
    ----------
    terms : sequence of str
        One or more terms (a word or a short phrase each). Terms must not
        contain double quotes and must contain at least one word character.

    Returns
    -------
    concept : str
        ``mentions "a"`` for one term, ``mentions "a" or "b"`` for two,
        ``mentions "a", "b" or "c"`` for more.

    Examples
    --------
    >>> from sklearn_hypothesaes.keywords import format_keyword_concept
    >>> format_keyword_concept(["wait", "minutes", "hour"])
    'mentions "wait", "minutes" or "hour"'
    """
    if isinstance(terms, str):
        raise TypeError(
            "terms must be a list of strings, not a single string; "
            f"use format_keyword_concept([{terms!r}])."
        )
    terms = [str(t).strip() for t in terms]
    if not terms:
        raise ValueError("format_keyword_concept needs at least one term.")
    for term in terms:
        if '"' in term:
            raise ValueError(f"Term {term!r} contains a double quote, which cannot be quoted.")
        if not _WORD.search(term):
            raise ValueError(f"Term {term!r} contains no word characters to match.")
    quoted = [f'"{t}"' for t in terms]
    if len(quoted) == 1:
        return f"mentions {quoted[0]}"
    return "mentions " + ", ".join(quoted[:-1]) + " or " + quoted[-1]


def parse_concept_terms(concept: str) -> list[str]:
    """Extract the double-quoted terms of an offline concept.

    Parameters
    ----------
    concept : str
        A concept such as ``mentions "wait", "minutes" or "hour"``.

    Returns
    -------
    terms : list of str
        The quoted terms, stripped, in order, without duplicates.

    Raises
    ------
    ValueError
        If the concept has no quoted term, an unbalanced quote, an empty or
        word-less term, a negated lead-in (``does not mention "x"``), or text
        between the terms other than commas and
        "or"/"and" (such a concept is a free-text hypothesis, which only an LLM
        annotator can check).

    Examples
    --------
    >>> from sklearn_hypothesaes.keywords import parse_concept_terms
    >>> parse_concept_terms('mentions "long wait" or "minutes"')
    ['long wait', 'minutes']
    """
    if not isinstance(concept, str):
        raise TypeError(f"A concept must be a string, got {type(concept).__name__}: {concept!r}.")
    hint = (
        "The offline keyword annotator needs concepts whose terms are in double quotes, "
        'e.g. \'mentions "wait", "minutes" or "hour"\'; free-text hypotheses need an LLM '
        "annotator (LLMConceptAnnotator)."
    )
    if concept.count('"') == 0:
        raise ValueError(f"Concept {concept!r} has no quoted terms. {hint}")
    if concept.count('"') % 2:
        raise ValueError(f"Concept {concept!r} has an unbalanced double quote. {hint}")
    if not _STRICT.match(concept):
        raise ValueError(
            f"Concept {concept!r} has text between or after its quoted terms; only commas and "
            f"'or'/'and' may separate them. {hint}"
        )
    lead_in = concept[: concept.index('"')]
    if _NEGATION.search(lead_in):
        raise ValueError(
            f"Concept {concept!r} is negated ({lead_in.strip()!r}); the offline keyword "
            "annotator marks texts that contain the terms and cannot check their absence."
        )
    terms: list[str] = []
    for raw in _QUOTED.findall(concept):
        term = raw.strip()
        if not _WORD.search(term):
            raise ValueError(f"Concept {concept!r} has a quoted term {raw!r} with no words. {hint}")
        if max(len(w) for w in _WORD.findall(term)) > _MAX_WORD_CHARS:
            raise ValueError(
                f"Concept {concept!r} has a word longer than {_MAX_WORD_CHARS} characters."
            )
        if term not in terms:
            terms.append(term)
    return terms


def check_texts(texts, *, name: str = "texts") -> list[str]:
    """Validate a 1-d collection of strings and return it as a list.

    Accepts a list, tuple, 1-d numpy array or pandas Series (or a one-column
    DataFrame). Raises a ``TypeError`` naming the first offending rows when an
    element is not a string.
    """
    if isinstance(texts, str):
        raise TypeError(f"{name} must be a collection of strings, not a single string.")
    if isinstance(texts, pd.DataFrame):
        if texts.shape[1] != 1:
            raise ValueError(
                f"{name} is a DataFrame with {texts.shape[1]} columns; pass the one text column."
            )
        texts = texts.iloc[:, 0]
    if isinstance(texts, pd.Series):
        values = texts.tolist()
    elif isinstance(texts, np.ndarray):
        if texts.ndim == 2 and texts.shape[1] == 1:
            texts = texts[:, 0]
        if texts.ndim != 1:
            raise ValueError(f"{name} must be 1-dimensional, got an array of shape {texts.shape}.")
        values = texts.tolist()
    else:
        try:
            values = list(texts)
        except TypeError:
            raise TypeError(
                f"{name} must be a list, array or Series of strings, got {type(texts).__name__}."
            ) from None
    bad = [i for i, t in enumerate(values) if not isinstance(t, str)]
    if bad:
        show = ", ".join(f"{i} ({type(values[i]).__name__})" for i in bad[:5])
        more = f" and {len(bad) - 5} more" if len(bad) > 5 else ""
        raise TypeError(f"{name} must all be strings; rows {show}{more} are not.")
    return values


def _term_words(term: str) -> tuple[str, ...]:
    return tuple(_WORD.findall(term.lower()))


class _WordTable:
    """The distinct ASCII words of a set of concepts, for the vectorised matcher.

    A token is a candidate for a word when its (length, first byte, last
    byte) key matches; candidates are then compared byte by byte, so the
    match is exact.
    """

    def __init__(self, concept_words: list[list[tuple[str, ...]]]):
        words = sorted({w for terms in concept_words for term in terms for w in term})
        self.words = [w for w in words if w.isascii()]
        self.index = {w: i for i, w in enumerate(self.words)}
        self.bytes = [np.frombuffer(w.encode("ascii"), dtype=np.uint8) for w in self.words]
        self.keys = np.array([_token_key(len(b), b[0], b[-1]) for b in self.bytes], dtype=np.int32)
        self.lut = np.zeros(1 << 22, dtype=bool)
        self.lut[self.keys] = True


def _token_key(length, first, last):
    """22-bit key of a token: length (clipped to 255), first and last ASCII byte."""
    length = np.minimum(length, 255).astype(np.int32)
    return (length << 14) | (np.asarray(first, dtype=np.int32) << 7) | np.asarray(last, np.int32)


def _match_ascii(
    chunk: list[str], concept_words: list[list[tuple[str, ...]]], table: _WordTable
) -> np.ndarray:
    """(len(chunk), H) uint8 matches for ASCII texts (any case)."""
    out = np.zeros((len(chunk), len(concept_words)), dtype=np.uint8)
    if not table.words:
        return out
    # One C pass lower-cases and marks word bytes: word bytes become their
    # lower-case letter, every other byte becomes a space.
    # Spaces around the chunk make every token start and end inside it.
    big = (" " + "\n".join(chunk) + " ").encode("ascii").translate(_LOWER_WORDS)
    a = np.frombuffer(big, dtype=np.uint8)
    word = a != 32
    edges = np.flatnonzero(word[1:] != word[:-1]) + 1
    starts = edges[0::2]
    ends = edges[1::2]
    if starts.size == 0:
        return out
    key = _token_key(ends - starts, a[starts], a[ends - 1])
    cand = np.flatnonzero(table.lut[key])
    if cand.size == 0:
        return out
    word_id = np.full(starts.size + 1, -1, dtype=np.int32)  # +1: a sentinel after the last token
    # Group candidates by key once; each word then reads its own slice.
    cand_key = key[cand]
    order = np.argsort(cand_key, kind="stable")
    cand, cand_key = cand[order], cand_key[order]
    lo = np.searchsorted(cand_key, table.keys, side="left")
    hi = np.searchsorted(cand_key, table.keys, side="right")
    for i, wb in enumerate(table.bytes):
        c = cand[lo[i] : hi[i]]
        if c.size and wb.size > 2:
            inner = a[starts[c, None] + np.arange(1, wb.size - 1)]
            c = c[(inner == wb[1:-1]).all(axis=1)]
        word_id[c] = i
    lens = np.array(list(map(len, chunk)), dtype=np.int64)
    doc_starts = np.cumsum(lens + 1) - lens  # +1 for the leading space
    hit = cand[word_id[cand] >= 0]
    doc_of_hit = np.full(starts.size + 1, -1, dtype=np.int64)
    doc_of_hit[hit] = np.searchsorted(doc_starts, starts[hit], side="right") - 1
    for j, terms in enumerate(concept_words):
        for term in terms:
            if not all(w in table.index for w in term):
                continue  # a non-ASCII word cannot occur in an ASCII text
            ids = [table.index[w] for w in term]
            c = hit[word_id[hit] == ids[0]]
            for k, wid in enumerate(ids[1:], start=1):
                c = c[c + k < starts.size]
                c = c[(word_id[c + k] == wid) & (doc_of_hit[c + k] == doc_of_hit[c])]
            out[doc_of_hit[c], j] = 1
    return out


def _term_regex(term: tuple[str, ...]) -> str:
    return r"\b" + r"\W+".join(re.escape(w) for w in term) + r"\b"


def _reduce_non_word(texts: list[str]) -> list[str]:
    """Non-ASCII non-word characters replaced by spaces (one regex pass).

    Any non-word character separates tokens, so this keeps every text's
    token sequence.
    """
    joined = "\x00".join(texts)
    if joined.count("\x00") != len(texts) - 1:  # a text contains NUL itself
        return [_NON_ASCII_NON_WORD.sub(" ", t) for t in texts]
    return _NON_ASCII_NON_WORD.sub(" ", joined).split("\x00")


def match_concepts(texts: list[str], concept_terms: list[list[str]]) -> np.ndarray:
    """Annotate texts with keyword concepts given as lists of terms.

    Parameters
    ----------
    texts : list of str
        The texts.
    concept_terms : list of list of str
        The terms of each concept (as returned by :func:`parse_concept_terms`).

    Returns
    -------
    annotations : ndarray of shape (len(texts), len(concept_terms)), uint8
        1 where the text contains any term of the concept.
    """
    words = [[_term_words(t) for t in terms] for terms in concept_terms]
    words = [[w for w in terms if w] for terms in words]
    out = np.zeros((len(texts), len(words)), dtype=np.uint8)
    if not words or not texts:
        return out
    patterns = [
        re.compile("|".join(_term_regex(w) for w in terms)) if terms else None for terms in words
    ]
    table = _WordTable(words)
    for start in range(0, len(texts), _CHUNK_TEXTS):
        chunk = texts[start : start + _CHUNK_TEXTS]
        is_ascii = np.fromiter((t.isascii() for t in chunk), dtype=bool, count=len(chunk))
        if is_ascii.all():
            out[start : start + len(chunk)] = _match_ascii(chunk, words, table)
            continue
        # Replacing non-word characters by spaces keeps the token sequence, so
        # texts whose only non-ASCII characters are punctuation
        # (curly quotes, dashes, ellipses) can take the vectorised path too.
        chunk = list(chunk)
        others = np.flatnonzero(~is_ascii)
        for i, cleaned in zip(others, _reduce_non_word([chunk[i] for i in others])):
            if cleaned.isascii():
                chunk[i] = cleaned
                is_ascii[i] = True
        idx_ascii = np.flatnonzero(is_ascii)
        if idx_ascii.size:
            out[start + idx_ascii] = _match_ascii([chunk[i] for i in idx_ascii], words, table)
        for i in np.flatnonzero(~is_ascii):
            text = chunk[i].lower()
            for j, pattern in enumerate(patterns):
                if pattern is not None and pattern.search(text):
                    out[start + i, j] = 1
    return out


class KeywordAnnotator(TransformerMixin, BaseEstimator):
    """Annotate texts with offline keyword concepts (0/1 per text and concept).

    Each concept has the form ``mentions "wait", "minutes" or "hour"``; a
    text is annotated 1 for it when it contains any quoted term as whole words,
    ignoring case (see the module docstring for the exact rule). The result is
    deterministic and needs no model, so it is the annotator of the offline
    path and the fidelity check of :class:`~sklearn_hypothesaes.interpret.OfflineInterpreter`.

    Parameters
    ----------
    concepts : list of str, default=None
        The concepts, each with at least one double-quoted term. ``None``
        is accepted at construction but ``fit`` needs concepts.

    Attributes
    ----------
    concepts_ : list of str
        The concepts, in output column order.
    terms_ : list of list of str
        The parsed terms of each concept.
    n_features_in_ : int
        Always 1 (one column of texts).

    Examples
    --------
    >>> from sklearn_hypothesaes.keywords import KeywordAnnotator
    >>> ann = KeywordAnnotator(['mentions "wait" or "long line"', 'mentions "rude"'])
    >>> ann.fit_transform(["We had a LONG line.", "Rude waiter, long wait!", "Fine."])
    array([[1, 0],
           [1, 1],
           [0, 0]], dtype=uint8)
    """

    _parameter_constraints: dict = {"concepts": ["array-like", None]}

    def __init__(self, concepts=None):
        self.concepts = concepts

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X=None, y=None):
        """Parse and check the concepts.

        Parameters
        ----------
        X : list, ndarray or Series of str, default=None
            Ignored apart from validation; concepts do not depend on data.
        y : None
            Ignored.

        Returns
        -------
        self : KeywordAnnotator
            The fitted annotator.
        """
        if self.concepts is None:
            raise ValueError(
                "KeywordAnnotator needs concepts, e.g. "
                'KeywordAnnotator(concepts=[\'mentions "wait" or "minutes"\']).'
            )
        concepts = check_texts(self.concepts, name="concepts")
        if not concepts:
            raise ValueError("KeywordAnnotator needs at least one concept.")
        if X is not None:
            check_texts(X)
        self.terms_ = [parse_concept_terms(c) for c in concepts]
        self.concepts_ = list(concepts)
        self.n_features_in_ = 1
        return self

    def transform(self, X):
        """Annotate texts.

        Parameters
        ----------
        X : list, ndarray or Series of str of length n_samples
            The texts.

        Returns
        -------
        annotations : ndarray of shape (n_samples, n_concepts), uint8
            1 where a text contains any term of a concept.
        """
        check_is_fitted(self, "terms_")
        texts = check_texts(X)
        return match_concepts(texts, self.terms_)

    def get_feature_names_out(self, input_features=None):
        """The concepts, as output feature names.

        Parameters
        ----------
        input_features : None
            Ignored.

        Returns
        -------
        names : ndarray of str of shape (n_concepts,)
            The concepts.
        """
        check_is_fitted(self, "concepts_")
        return np.asarray(self.concepts_, dtype=object)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.two_d_array = False
        tags.input_tags.string = True
        tags.requires_fit = True
        return tags
