"""Built-in data with known ground truth.

:func:`make_planted_embeddings` draws embedding-like vectors from a known
dictionary of atoms, with a target driven by a few known "causal" atoms. It is
what tests and benchmarks use to measure quality (atom recovery, selection of
the causal neurons), not only speed.
"""

from __future__ import annotations

import os
import re
from numbers import Integral, Real

import numpy as np
import scipy.sparse as sp
from sklearn.utils import Bunch, check_random_state
from sklearn.utils._param_validation import Interval, validate_params

__all__ = ["load_demo", "make_planted_embeddings"]

_CHUNK_ROWS = 8192


@validate_params(
    {
        "n_samples": [Interval(Integral, 1, None, closed="left")],
        "n_features": [Interval(Integral, 2, None, closed="left")],
        "n_atoms": [Interval(Integral, 1, None, closed="left")],
        "k": [Interval(Integral, 1, None, closed="left")],
        "n_causal": [Interval(Integral, 0, None, closed="left")],
        "noise": [Interval(Real, 0, None, closed="left")],
        "target_noise": [Interval(Real, 0, None, closed="left")],
        "out": [str, os.PathLike, None],
        "random_state": ["random_state"],
    },
    prefer_skip_nested_validation=True,
)
def make_planted_embeddings(
    n_samples: int = 10_000,
    n_features: int = 1536,
    n_atoms: int = 512,
    k: int = 8,
    *,
    n_causal: int = 10,
    noise: float = 0.01,
    target_noise: float = 0.5,
    out: str | os.PathLike | None = None,
    random_state=None,
) -> Bunch:
    """Generate unit-norm embeddings from a known sparse dictionary.

    Each row is a positive combination of ``k`` distinct atoms drawn at random
    from a dictionary of ``n_atoms`` unit vectors in ``R^n_features``, plus
    Gaussian noise of relative size ``noise``; rows are L2-normalised. A
    regression target is a weighted sum of the coefficients of ``n_causal``
    atoms (half with positive, half with negative weights) plus noise; a binary
    target is drawn from a logistic model of the same signal.

    Parameters
    ----------
    n_samples : int, default=10_000
        Number of rows.
    n_features : int, default=1536
        Embedding dimension ``d``.
    n_atoms : int, default=512
        Size of the true dictionary.
    k : int, default=8
        Number of atoms active in each row. Must not exceed ``n_atoms``.
    n_causal : int, default=10
        Number of atoms that drive the target (``ceil(n_causal / 2)`` positive,
        the rest negative). Must not exceed ``n_atoms``.
    noise : float, default=0.01
        Norm of the additive noise relative to the (unit) signal norm.
    target_noise : float, default=0.5
        Standard deviation of the target noise relative to the standard
        deviation of the target signal.
    out : str or path-like, default=None
        If given, ``X`` is written to this ``.npy`` file chunk by chunk and
        returned as a read-only ``numpy.memmap``, so data larger than memory can
        be generated.
    random_state : int, RandomState instance or None, default=None
        Controls every random draw.

    Returns
    -------
    data : :class:`~sklearn.utils.Bunch`
        With fields

        - ``X`` : ndarray of shape (n_samples, n_features), float32, unit rows.
        - ``y`` : ndarray of shape (n_samples,), float64 regression target.
        - ``y_binary`` : ndarray of shape (n_samples,), int64 in {0, 1}.
        - ``atoms`` : ndarray of shape (n_atoms, n_features), float32, unit rows.
        - ``codes`` : csr_matrix of shape (n_samples, n_atoms), float32, the
          true non-negative coefficients (``k`` non-zeros a row).
        - ``causal_atoms`` : ndarray of shape (n_causal,), indices into ``atoms``.
        - ``causal_weights`` : ndarray of shape (n_causal,), their weights.

    Examples
    --------
    >>> from sklearn_hypothesaes.datasets import make_planted_embeddings
    >>> data = make_planted_embeddings(200, n_features=32, n_atoms=16, k=3, random_state=0)
    >>> data.X.shape, int(data.codes.getnnz(axis=1).max())
    ((200, 32), 3)
    """
    if k > n_atoms:
        raise ValueError(
            f"k={k} atoms per row cannot exceed n_atoms={n_atoms}; lower k or raise n_atoms."
        )
    if n_causal > n_atoms:
        raise ValueError(f"n_causal={n_causal} cannot exceed n_atoms={n_atoms}; lower n_causal.")
    rng = check_random_state(random_state)

    atoms = rng.standard_normal((n_atoms, n_features)).astype(np.float32)
    atoms /= np.linalg.norm(atoms, axis=1, keepdims=True)

    causal_atoms = rng.choice(n_atoms, size=n_causal, replace=False)
    n_pos = (n_causal + 1) // 2
    signs = np.r_[np.ones(n_pos), -np.ones(n_causal - n_pos)]
    causal_weights = signs * rng.uniform(1.0, 2.0, size=n_causal)

    if out is not None:
        X = np.lib.format.open_memmap(
            os.fspath(out), mode="w+", dtype=np.float32, shape=(n_samples, n_features)
        )
    else:
        X = np.empty((n_samples, n_features), dtype=np.float32)
    indices = np.empty((n_samples, k), dtype=np.int64)
    coefs = np.empty((n_samples, k), dtype=np.float32)

    noise_scale = np.float32(noise / np.sqrt(n_features))
    for start in range(0, n_samples, _CHUNK_ROWS):
        stop = min(start + _CHUNK_ROWS, n_samples)
        m = stop - start
        # k distinct atoms per row: the k smallest of uniform keys.
        keys = rng.random((m, n_atoms))
        idx = (
            np.argpartition(keys, k - 1, axis=1)[:, :k]
            if k < n_atoms
            else np.tile(np.arange(n_atoms), (m, 1))
        )
        c = rng.uniform(0.1, 1.0, size=(m, k)).astype(np.float32)
        signal = np.einsum("mk,mkd->md", c, atoms[idx], optimize=True)
        signal /= np.linalg.norm(signal, axis=1, keepdims=True)
        signal += noise_scale * rng.standard_normal(signal.shape).astype(np.float32)
        signal /= np.linalg.norm(signal, axis=1, keepdims=True)
        X[start:stop] = signal
        indices[start:stop] = idx
        coefs[start:stop] = c
    if out is not None:
        X.flush()
        del X
        X = np.load(os.fspath(out), mmap_mode="r")

    order = np.argsort(indices, axis=1)
    indices = np.take_along_axis(indices, order, axis=1)
    coefs = np.take_along_axis(coefs, order, axis=1)
    codes = sp.csr_matrix(
        (coefs.ravel(), indices.ravel(), np.arange(0, n_samples * k + 1, k)),
        shape=(n_samples, n_atoms),
    )

    weight_of_atom = np.zeros(n_atoms)
    weight_of_atom[causal_atoms] = causal_weights
    signal = np.asarray(codes @ weight_of_atom).ravel()
    sd = signal.std()
    scale = sd if sd > 0 else 1.0
    y = signal + target_noise * scale * rng.standard_normal(n_samples)
    z = (signal - signal.mean()) / scale
    y_binary = (rng.random(n_samples) < 1.0 / (1.0 + np.exp(-2.0 * z))).astype(np.int64)

    return Bunch(
        X=X,
        y=y,
        y_binary=y_binary,
        atoms=atoms,
        codes=codes,
        causal_atoms=causal_atoms,
        causal_weights=causal_weights,
    )


# ---------------------------------------------------------------------------
# Demo data: synthetic restaurant reviews with planted aspects.
# ---------------------------------------------------------------------------

_SLOTS: dict[str, tuple[str, ...]] = {
    "n": ("twenty", "thirty", "forty", "forty-five", "fifty", "sixty", "ninety"),
    "staff": ("waiter", "waitress", "server", "host", "hostess", "bartender", "manager"),
    "dish": ("burger", "pasta", "steak", "soup", "pizza", "omelette", "salmon", "curry"),
    "side": ("fries", "rice", "salad", "bread", "vegetables", "mashed potatoes"),
    "who": ("my wife", "my husband", "a friend", "my parents", "two coworkers", "my sister"),
    "day": ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"),
    "meal": ("lunch", "dinner", "brunch", "an early dinner", "a late lunch"),
    "place": (
        "downtown",
        "near the station",
        "in a strip mall",
        "on the corner of Main Street",
        "next to the cinema",
        "across from the park",
    ),
    "music": ("jazz", "classic rock", "pop songs", "old soul records", "indie music"),
    "colour": ("blue", "green", "dark red", "white", "yellow"),
    "surface": ("tables", "menus", "booths", "chairs", "counters"),
    "room": ("restroom", "dining room", "bar area", "entrance", "patio"),
}

# Each aspect: effect on the latent rating, prevalence, phrasings (templates
# over _SLOTS), and the key words its phrasings use.
_ASPECTS: list[dict] = [
    {
        "name": "long_wait",
        "description": "complains about a long wait",
        "effect": -1.1,
        "prevalence": 0.14,
        "keywords": ["wait", "waited", "minutes", "hour"],
        "phrasings": (
            "We waited {n} minutes before anyone even took our order.",
            "The wait for a table was well over an hour.",
            "Our food took {n} minutes to come out of the kitchen.",
            "We had to wait almost an hour for {meal} to arrive.",
            "After {n} minutes of waiting we finally got our drinks.",
            "The wait was ridiculous, {n} minutes for a simple {dish}.",
            "Be ready to wait, we sat there for an hour with nothing.",
            "It was {n} minutes before our {staff} came back to the table.",
        ),
    },
    {
        "name": "rude_staff",
        "description": "says the staff were rude",
        "effect": -1.2,
        "prevalence": 0.12,
        "keywords": ["rude", "rudely", "rudest"],
        "phrasings": (
            "The {staff} was rude to us from the moment we walked in.",
            "Our {staff} was incredibly rude and acted like we were a bother.",
            "The {staff} rudely told us to hurry up and order.",
            "I have never met a {staff} as rude as the one we had.",
            "When I asked about the {dish}, the {staff} answered rudely.",
            "Honestly the rudest {staff} I have dealt with in years.",
            "The {staff} was rude when {who} asked for a different table.",
        ),
    },
    {
        "name": "great_value",
        "description": "praises good value for the price",
        "effect": 0.9,
        "prevalence": 0.14,
        "keywords": ["value", "price", "prices", "portions", "affordable"],
        "phrasings": (
            "Great value for the price, the {dish} could feed two people.",
            "The prices are very fair for portions this size.",
            "Really affordable, {meal} for two came to less than forty dollars.",
            "You get excellent value here, especially the {dish} with {side}.",
            "For the price you cannot beat it.",
            "Prices are low and the portions are generous.",
            "Such good value that we ordered extra {side} to take home.",
        ),
    },
    {
        "name": "cold_food",
        "description": "complains that the food was cold",
        "effect": -0.9,
        "prevalence": 0.12,
        "keywords": ["cold", "lukewarm"],
        "phrasings": (
            "My {dish} arrived cold, like it had been sitting out for a while.",
            "The {side} were cold and the {dish} was barely lukewarm.",
            "Everything on the plate was lukewarm at best.",
            "The {dish} was cold in the middle, so I sent it back.",
            "Our {side} came out cold and soggy.",
            "By the time it reached the table the {dish} was stone cold.",
        ),
    },
    {
        "name": "brisket",
        "description": "mentions the brisket",
        "effect": 1.0,
        "prevalence": 0.10,
        "keywords": ["brisket"],
        "phrasings": (
            "The brisket is the star here, smoky and tender.",
            "Get the brisket, it melts in your mouth.",
            "The brisket sandwich with {side} was the best thing we ate.",
            "{who} could not stop talking about the brisket.",
            "Their smoked brisket alone is worth the trip.",
            "We split the brisket platter and it was perfect.",
        ),
    },
    {
        "name": "friendly_service",
        "description": "praises friendly, attentive service",
        "effect": 0.8,
        "prevalence": 0.14,
        "keywords": ["friendly", "attentive"],
        "phrasings": (
            "Our {staff} was super friendly and checked on us often.",
            "The staff were friendly and attentive without hovering.",
            "Such a friendly {staff}, she remembered us from last time.",
            "Service was attentive and the {staff} had great suggestions.",
            "Everyone from the {staff} to the cook was friendly.",
            "The {staff} was attentive and refilled our water right away.",
        ),
    },
    {
        "name": "dirty",
        "description": "says the place was dirty",
        "effect": -0.8,
        "prevalence": 0.08,
        "keywords": ["dirty", "sticky", "filthy"],
        "phrasings": (
            "The {surface} were sticky and the floor was dirty.",
            "The {room} was filthy and nobody seemed to care.",
            "Our silverware was dirty, so we had to ask for new forks.",
            "The {room} felt dirty, with crumbs all over the {surface}.",
            "The {surface} were sticky and the {room} looked filthy.",
            "Honestly the {room} was too dirty to enjoy {meal}.",
        ),
    },
    # Distractors: common, varied, and without any effect on the rating.
    {
        "name": "parking",
        "description": "talks about parking",
        "effect": 0.0,
        "prevalence": 0.12,
        "keywords": ["parking", "parked"],
        "phrasings": (
            "Parking is in a small lot behind the building, {place}.",
            "We parked on the street {place}.",
            "There is a parking garage two blocks away.",
            "Finding parking on a {day} night took a few laps.",
            "Street parking is metered until six.",
        ),
    },
    {
        "name": "music",
        "description": "describes the music",
        "effect": 0.0,
        "prevalence": 0.12,
        "keywords": ["music", "playing", "playlist"],
        "phrasings": (
            "They were playing {music} the whole evening.",
            "The music was {music} at a normal volume.",
            "Someone was playing {music} on a piano near the bar.",
            "The playlist was mostly {music}.",
        ),
    },
    {
        "name": "decor",
        "description": "describes the decor",
        "effect": 0.0,
        "prevalence": 0.12,
        "keywords": ["walls", "decor", "painted"],
        "phrasings": (
            "The walls are painted {colour} with old photos everywhere.",
            "The decor is simple, {colour} chairs and wooden tables.",
            "They recently painted the dining room {colour}.",
            "The decor has not changed since the place opened.",
        ),
    },
]

_OPENINGS: tuple[str, ...] = (
    "Came here for {meal} with {who} on a {day}.",
    "Stopped by for {meal} on {day}.",
    "We tried this place {place} for {meal}.",
    "I came in with {who} for {meal}.",
    "This spot is {place} and we went on a {day}.",
    "First visit, {meal} with {who}.",
)

_FILLERS: tuple[str, ...] = (
    "I ordered the {dish} and {who} had the {dish}.",
    "The menu has the usual options plus a few specials.",
    "We sat near the window.",
    "They take reservations for larger groups.",
    "I had the {dish} with a side of {side}.",
    "The restaurant is {place}.",
    "It was fairly busy for a {day}.",
    "We shared the {side} as a starter.",
    "They also do takeout and delivery.",
    "The {dish} came with {side}.",
    "There is outdoor seating when the weather is nice.",
    "We might come back to try the {dish}.",
    # Filler that shares words with planted aspects, as real reviews do.
    "The place is a few minutes from our hotel.",
    "It was cold outside, so we were glad to get a table.",
    "The {dish} had a nice price tag on the specials board.",
)
# Filler that shares words with planted aspects is drawn less often.
_FILLER_WEIGHTS = np.array([1.0] * (len(_FILLERS) - 3) + [0.2] * 3)
_FILLER_WEIGHTS /= _FILLER_WEIGHTS.sum()

_SLOT = re.compile(r"\{(\w+)\}")


def _fill(template: str, rng: np.random.RandomState) -> str:
    def pick(match: re.Match) -> str:
        options = _SLOTS[match.group(1)]
        return options[rng.randint(len(options))]

    text = _SLOT.sub(pick, template)
    return text[0].upper() + text[1:]


@validate_params(
    {
        "n_samples": [Interval(Integral, 1, None, closed="left")],
        "random_state": ["random_state"],
    },
    prefer_skip_nested_validation=True,
)
def load_demo(n_samples: int = 10_000, *, random_state=0) -> Bunch:
    """Synthetic restaurant reviews with planted aspects that drive the rating.

    Each review has 2-6 sentences (about 20-80 words): an opening, the
    sentences of the aspects it contains, and neutral filler, in shuffled
    order. Seven planted aspects (long waits, rude staff, good value, cold
    food, the brisket, friendly service, a dirty room) each appear in many
    phrasings (templates times slot words) and shift a latent rating; three
    distractor aspects (parking, music, decor) appear just as often with no
    effect. The star rating is the latent rating plus Gaussian noise, rounded
    and clipped to 1-5. Aspects occur independently, so the truth is known
    exactly for every text.

    Parameters
    ----------
    n_samples : int, default=10_000
        Number of reviews.
    random_state : int, RandomState instance or None, default=0
        Controls every random draw; the same value gives the same data.

    Returns
    -------
    data : :class:`~sklearn.utils.Bunch`
        With fields

        - ``texts`` : list of str of length n_samples, the reviews.
        - ``y`` : ndarray of shape (n_samples,), float64 star rating in 1-5.
        - ``y_binary`` : ndarray of shape (n_samples,), int64, 1 when the
          rating is 4 or 5.
        - ``truth`` : DataFrame of shape (n_samples, n_aspects), uint8, 1 where
          a review contains an aspect (columns are the aspect names).
        - ``concepts`` : DataFrame with one row per aspect and columns
          ``name``, ``description``, ``planted`` (bool), ``effect`` (shift of
          the latent rating in stars), ``prevalence`` (fraction of reviews
          containing it), ``keywords`` (list of str, the words its phrasings
          use), ``concept`` (the keywords as an offline concept string),
          ``phrasings`` (list of str, the templates) and ``examples`` (list of
          str, three filled-in phrasings).
        - ``DESCR`` : str, this description.

    Examples
    --------
    >>> from sklearn_hypothesaes.datasets import load_demo
    >>> demo = load_demo(500, random_state=0)
    >>> len(demo.texts), demo.truth.shape, sorted(set(demo.y.tolist()))
    (500, (500, 10), [1.0, 2.0, 3.0, 4.0, 5.0])
    """
    import pandas as pd

    from sklearn_hypothesaes.keywords import format_keyword_concept

    rng = check_random_state(random_state)
    n_aspects = len(_ASPECTS)
    prevalence = np.array([a["prevalence"] for a in _ASPECTS])
    effects = np.array([a["effect"] for a in _ASPECTS])
    truth = (rng.random_sample((n_samples, n_aspects)) < prevalence).astype(np.uint8)
    n_sentences = rng.choice(np.arange(2, 7), size=n_samples, p=[0.1, 0.15, 0.25, 0.25, 0.25])

    texts: list[str] = []
    for i in range(n_samples):
        present = np.flatnonzero(truth[i])
        if present.size > 5:  # keep room for the opening sentence
            drop = rng.choice(present, size=present.size - 5, replace=False)
            truth[i, drop] = 0
            present = np.flatnonzero(truth[i])
        sentences = [
            _fill(_ASPECTS[j]["phrasings"][rng.randint(len(_ASPECTS[j]["phrasings"]))], rng)
            for j in present
        ]
        n_fill = max(0, n_sentences[i] - 1 - len(sentences))
        picks = rng.choice(len(_FILLERS), n_fill, replace=False, p=_FILLER_WEIGHTS)
        sentences += [_fill(_FILLERS[k], rng) for k in picks]
        rng.shuffle(sentences)
        opening = _fill(_OPENINGS[rng.randint(len(_OPENINGS))], rng)
        texts.append(" ".join([opening, *sentences]))

    latent = 3.5 + truth @ effects + rng.normal(0.0, 0.7, size=n_samples)
    y = np.clip(np.rint(latent), 1, 5).astype(np.float64)
    y_binary = (y >= 4).astype(np.int64)

    names = [a["name"] for a in _ASPECTS]
    example_rng = np.random.RandomState(0)  # examples do not depend on random_state
    concepts = pd.DataFrame(
        {
            "name": names,
            "description": [a["description"] for a in _ASPECTS],
            "planted": [a["effect"] != 0 for a in _ASPECTS],
            "effect": effects,
            "prevalence": truth.mean(axis=0),
            "keywords": [list(a["keywords"]) for a in _ASPECTS],
            "concept": [format_keyword_concept(a["keywords"]) for a in _ASPECTS],
            "phrasings": [list(a["phrasings"]) for a in _ASPECTS],
            "examples": [[_fill(t, example_rng) for t in a["phrasings"][:3]] for a in _ASPECTS],
        }
    )
    return Bunch(
        texts=texts,
        y=y,
        y_binary=y_binary,
        truth=pd.DataFrame(truth, columns=names),
        concepts=concepts,
        DESCR=load_demo.__doc__,
    )
