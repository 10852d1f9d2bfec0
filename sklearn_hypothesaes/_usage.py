"""Token usage, cost accounting and the offline token estimate.

No tokenizer is needed: :func:`estimate_tokens` uses the common rule of thumb
of about four characters of English per token (``ceil(len(text) / 4)``), which
is within ~10-20% of OpenAI's tokenizers on English prose. It is only used for
dry runs and budgets before a request is sent; spent tokens come from the
``usage`` field the endpoint returns.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field

__all__ = ["Usage", "estimate_cost", "estimate_message_tokens", "estimate_tokens"]

CHARS_PER_TOKEN = 4.0
MESSAGE_OVERHEAD_TOKENS = 4  # role and delimiters per chat message


def estimate_tokens(text: str) -> int:
    """Estimate the number of tokens of ``text`` as ``ceil(len(text) / 4)``.

    Examples
    --------
    >>> estimate_tokens("Check whether the text mentions food.")
    10
    """
    return int(math.ceil(len(text) / CHARS_PER_TOKEN))


def estimate_message_tokens(messages: Iterable[Mapping[str, str]]) -> int:
    """Estimate the prompt tokens of a list of chat messages."""
    return sum(estimate_tokens(m.get("content") or "") + MESSAGE_OVERHEAD_TOKENS for m in messages)


def estimate_cost(
    prices: Mapping[str, float] | None, prompt_tokens: float, completion_tokens: float
) -> float | None:
    """Cost of a number of tokens under a price table (per million tokens).

    ``prices`` maps ``"prompt"`` (alias ``"input"``) and ``"completion"`` (alias
    ``"output"``) to a price per million tokens, in any currency. Returns None
    when no price table is given.

    Examples
    --------
    >>> estimate_cost({"prompt": 0.15, "completion": 0.60}, 1_000_000, 500_000)
    0.45
    """
    if prices is None:
        return None
    p_in = float(prices.get("prompt", prices.get("input", 0.0)))
    p_out = float(prices.get("completion", prices.get("output", 0.0)))
    return (prompt_tokens * p_in + completion_tokens * p_out) / 1e6


def validate_prices(prices) -> None:
    """Raise a clear error for a malformed price table."""
    if prices is None:
        return
    if not isinstance(prices, Mapping):
        raise TypeError(
            "prices must be a dict such as {'prompt': 0.15, 'completion': 0.60} "
            f"(price per million tokens); got {type(prices).__name__}."
        )
    allowed = {"prompt", "input", "completion", "output"}
    unknown = set(prices) - allowed
    if unknown:
        raise ValueError(f"Unknown price keys {sorted(unknown)}; use 'prompt' and 'completion'.")
    for key, value in prices.items():
        if not isinstance(value, (int, float)) or value < 0 or not math.isfinite(value):
            raise ValueError(f"Price {key!r} must be a finite number >= 0, got {value!r}.")


@dataclass
class Usage:
    """Requests and tokens of one run (or a sum of runs).

    Attributes
    ----------
    n_requests : int
        HTTP requests sent, retries included.
    n_succeeded : int
        Items that got a usable answer.
    n_failed : int
        Items without a usable answer after all retries.
    n_retries : int
        Requests that were retries of an earlier attempt.
    n_rate_limited : int
        Responses with status 429.
    prompt_tokens, completion_tokens : int
        Tokens reported by the endpoint (estimated with :func:`estimate_tokens`
        when the endpoint reports none).
    cost : float or None
        Cost under the client's price table, None without one.
    """

    n_requests: int = 0
    n_succeeded: int = 0
    n_failed: int = 0
    n_retries: int = 0
    n_rate_limited: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost: float | None = None
    errors: dict[str, int] = field(default_factory=dict)

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def add_error(self, kind: str) -> None:
        self.errors[kind] = self.errors.get(kind, 0) + 1

    def __add__(self, other: Usage) -> Usage:
        cost = None
        if self.cost is not None or other.cost is not None:
            cost = (self.cost or 0.0) + (other.cost or 0.0)
        errors = dict(self.errors)
        for k, v in other.errors.items():
            errors[k] = errors.get(k, 0) + v
        return Usage(
            self.n_requests + other.n_requests,
            self.n_succeeded + other.n_succeeded,
            self.n_failed + other.n_failed,
            self.n_retries + other.n_retries,
            self.n_rate_limited + other.n_rate_limited,
            self.prompt_tokens + other.prompt_tokens,
            self.completion_tokens + other.completion_tokens,
            cost,
            errors,
        )

    def as_dict(self) -> dict:
        """Plain dict (with ``total_tokens``), e.g. for logging or a DataFrame row."""
        out = asdict(self)
        out["total_tokens"] = self.total_tokens
        return out
