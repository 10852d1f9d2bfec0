"""Dry-run estimate of the LLM tokens and dollars a run would spend.

Tokens are estimated as ``ceil(characters / 4)`` (the rule of thumb the LLM layer
uses for its own dry runs; within ~10-20% of OpenAI's tokenizers on English).
A run with the LLM path makes three kinds of requests:

1. interpretation: one prompt per selected neuron and candidate, showing
   ``n_examples`` texts that fire the neuron and ``n_examples`` that do not;
2. fidelity scoring: one yes/no annotation per neuron, candidate and scoring text
   (``n_scoring_examples`` texts per neuron);
3. held-out annotation: one yes/no annotation per held-out text and hypothesis.

Embeddings with a local model cost nothing. Cached answers are not sent again,
so a repeated run costs less than estimated here.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

__all__ = ["PRICES_PER_MILLION", "estimate_run_cost", "price_for_model"]

CHARS_PER_TOKEN = 4.0
# Approximate list prices in US dollars per million tokens (prompt, completion).
# Prices change: pass --price-input / --price-output to use your own.
PRICES_PER_MILLION: dict[str, tuple[float, float]] = {
    "gpt-4o-mini": (0.15, 0.60),
    "gpt-4o": (2.50, 10.00),
    "gpt-4.1": (2.00, 8.00),
    "gpt-4.1-mini": (0.40, 1.60),
    "gpt-4.1-nano": (0.10, 0.40),
    "o4-mini": (1.10, 4.40),
    "gpt-5": (1.25, 10.00),
    "gpt-5-mini": (0.25, 2.00),
    "gpt-5-nano": (0.05, 0.40),
}
INTERPRET_TEMPLATE_TOKENS = 250
INTERPRET_OUTPUT_TOKENS = 60
ANNOTATE_TEMPLATE_TOKENS = 100
ANNOTATE_OUTPUT_TOKENS = 2


def _tokens(n_chars: float) -> float:
    return math.ceil(n_chars / CHARS_PER_TOKEN)


def price_for_model(model: str) -> tuple[float, float] | None:
    """(prompt, completion) price per million tokens for a known model name, else None."""
    if model in PRICES_PER_MILLION:
        return PRICES_PER_MILLION[model]
    # dated snapshots such as "gpt-4o-mini-2024-07-18"
    for name in sorted(PRICES_PER_MILLION, key=len, reverse=True):
        if model.startswith(name + "-20"):
            return PRICES_PER_MILLION[name]
    return None


def estimate_run_cost(
    fit_texts: Sequence[str],
    holdout_texts: Sequence[str],
    *,
    n_hypotheses: int,
    n_candidates: int = 1,
    n_examples: int = 20,
    n_scoring_examples: int = 100,
    max_words_per_example: int = 256,
    model: str = "gpt-4o-mini",
    prices: Mapping[str, float] | None = None,
) -> dict:
    """Estimate the requests, tokens and cost of the LLM path of one run.

    Parameters
    ----------
    fit_texts, holdout_texts : sequence of str
        Texts used for fitting (interpretation examples are drawn from them) and
        for held-out validation.
    n_hypotheses : int
        Number of selected neurons.
    n_candidates, n_examples, n_scoring_examples, max_words_per_example : int
        Interpretation settings (see ``NeuronInterpreter``).
    model : str
        Model name, for the built-in price table.
    prices : dict, default=None
        ``{"prompt": ..., "completion": ...}`` per million tokens; overrides the
        built-in table.

    Returns
    -------
    estimate : dict
        ``requests``, ``prompt_tokens``, ``completion_tokens`` (each a dict per stage
        and ``total``), ``cost_usd`` (None when no price is known) and ``prices``.
    """
    fit_len = np.array([len(t) for t in fit_texts], dtype=np.float64)
    hold_len = np.array([len(t) for t in holdout_texts], dtype=np.float64)
    # interpretation examples are truncated to max_words_per_example words (~6 chars each)
    cap = max_words_per_example * 6.0
    mean_example = float(np.minimum(fit_len, cap).mean()) if fit_len.size else 0.0
    mean_fit = float(fit_len.mean()) if fit_len.size else 0.0
    n_interp = n_hypotheses * n_candidates
    interp_prompt = n_interp * (
        INTERPRET_TEMPLATE_TOKENS + 2 * n_examples * (_tokens(mean_example) + 2)
    )
    n_score = n_interp * n_scoring_examples
    score_prompt = n_score * (ANNOTATE_TEMPLATE_TOKENS + _tokens(mean_fit) + 15)
    n_hold = len(holdout_texts) * n_hypotheses
    hold_prompt = n_hypotheses * (
        len(holdout_texts) * (ANNOTATE_TEMPLATE_TOKENS + 15) + _tokens(hold_len.sum())
    )
    requests = {"interpret": n_interp, "fidelity": n_score, "annotate_holdout": n_hold}
    prompt = {"interpret": interp_prompt, "fidelity": score_prompt, "annotate_holdout": hold_prompt}
    completion = {
        "interpret": n_interp * INTERPRET_OUTPUT_TOKENS,
        "fidelity": n_score * ANNOTATE_OUTPUT_TOKENS,
        "annotate_holdout": n_hold * ANNOTATE_OUTPUT_TOKENS,
    }
    for d in (requests, prompt, completion):
        d["total"] = int(sum(d.values()))
        for k in d:
            d[k] = int(d[k])
    if prices is not None:
        p_in = float(prices.get("prompt", prices.get("input", 0.0)))
        p_out = float(prices.get("completion", prices.get("output", 0.0)))
    else:
        known = price_for_model(model)
        p_in, p_out = known if known is not None else (None, None)
    cost = None
    if p_in is not None:
        cost = (prompt["total"] * p_in + completion["total"] * p_out) / 1e6
    return {
        "model": model,
        "requests": requests,
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "cost_usd": cost,
        "prices_per_million": None if p_in is None else {"prompt": p_in, "completion": p_out},
        "method": "tokens estimated as ceil(characters / 4); cached answers are not re-sent",
    }


def format_estimate(est: dict) -> str:
    """A short human-readable table of an estimate."""
    lines = [f"LLM usage estimate for model {est['model']!r} (nothing was sent):"]
    lines.append(f"  {'stage':<18}{'requests':>12}{'prompt tok':>14}{'output tok':>12}")
    for stage in ("interpret", "fidelity", "annotate_holdout", "total"):
        lines.append(
            f"  {stage:<18}{est['requests'][stage]:>12,}{est['prompt_tokens'][stage]:>14,}"
            f"{est['completion_tokens'][stage]:>12,}"
        )
    if est["cost_usd"] is None:
        lines.append(
            "  cost: unknown price for this model; pass --price-input and --price-output "
            "(USD per million tokens)"
        )
    else:
        p = est["prices_per_million"]
        lines.append(
            f"  cost: about ${est['cost_usd']:.2f} at ${p['prompt']}/M prompt and "
            f"${p['completion']}/M output tokens"
        )
    lines.append("  (" + est["method"] + ")")
    return "\n".join(lines)
