"""Sub-commands of ``hypothesaes``: ``run``, ``estimate-cost`` and ``demo``.

Each ``register_*`` function adds its options to a sub-parser and returns the
function that runs it. The work itself lives in :mod:`sklearn_hypothesaes._cli_run`,
imported only when a command runs, so ``hypothesaes --help`` stays fast.
"""

from __future__ import annotations

import argparse

__all__ = ["register_demo", "register_estimate_cost", "register_run"]

SELECTION_METHODS = ("lasso", "correlation", "separation")
CORRECTIONS = ("bonferroni", "holm", "fdr_bh")


# -- shared options ------------------------------------------------------------------------
def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not 0.0 < value < 1.0:
        raise argparse.ArgumentTypeError(f"must be strictly between 0 and 1, got {value}")
    return value


def _price(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def _add_data_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "data", metavar="DATA", help="CSV, TSV, JSON lines (.jsonl), JSON or Parquet file"
    )
    p.add_argument("--text-col", required=True, help="column holding the texts")
    p.add_argument("--target-col", required=True, help="column holding the target")
    p.add_argument(
        "--text-b-col",
        default=None,
        help="pairwise task: column with the second text of each pair (target: does text A win)",
    )
    p.add_argument(
        "--format",
        choices=("csv", "tsv", "jsonl", "json", "parquet"),
        default=None,
        help="file format (default: from the file name)",
    )
    p.add_argument(
        "--task",
        choices=("auto", "regression", "binary", "multiclass"),
        default="auto",
        help="kind of target (default: two values binary, numbers regression, labels multiclass)",
    )
    p.add_argument(
        "--max-rows",
        type=_positive_int,
        default=None,
        help="use a random sample of at most this many rows",
    )
    p.add_argument(
        "--holdout",
        type=_fraction,
        default=0.3,
        help="fraction of rows held out for validation (default: 0.3)",
    )
    p.add_argument(
        "--n-hypotheses",
        type=_positive_int,
        default=20,
        help="number of neurons to select and interpret (default: 20)",
    )
    p.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")


def _add_llm_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("LLM (optional; the offline path needs none)")
    g.add_argument(
        "--mode",
        choices=("auto", "offline", "llm"),
        default="auto",
        help="offline: key-term hypotheses checked by keyword matching; llm: an "
        "OpenAI-compatible model names and annotates; auto: llm when OPENAI_API_KEY, "
        "OPENAI_BASE_URL or OPENAI_KEY_SAE is set or --base-url is given (default)",
    )
    g.add_argument("--llm-model", default="gpt-4o-mini", help="model name (default: gpt-4o-mini)")
    g.add_argument(
        "--base-url", default=None, help="OpenAI-compatible endpoint, e.g. http://localhost:8000/v1"
    )
    g.add_argument(
        "--api-key-env", default=None, help="variable holding the API key (default: OPENAI_API_KEY)"
    )
    g.add_argument(
        "--n-candidates",
        type=_positive_int,
        default=1,
        help="candidate interpretations per neuron, best kept by fidelity",
    )
    g.add_argument(
        "--price-input",
        type=_price,
        default=None,
        help="USD per million prompt tokens (default: built-in table)",
    )
    g.add_argument(
        "--price-output",
        type=_price,
        default=None,
        help="USD per million output tokens (default: built-in table)",
    )


# -- estimate-cost -------------------------------------------------------------------------
def register_estimate_cost(p: argparse.ArgumentParser):
    """Options of ``hypothesaes estimate-cost``."""
    _add_data_options(p)
    _add_llm_options(p)
    p.add_argument("--json", action="store_true", help="print the estimate as JSON")

    def run(args) -> int:
        from sklearn_hypothesaes._cli_run import estimate_cost_command

        return estimate_cost_command(args)

    return run


# -- run -----------------------------------------------------------------------------------
def register_run(p: argparse.ArgumentParser):
    """Options of ``hypothesaes run``."""
    _add_data_options(p)
    g = p.add_argument_group("method")
    g.add_argument(
        "--M", dest="M", type=_positive_int, default=256, help="SAE neurons (default: 256)"
    )
    g.add_argument(
        "--K", dest="K", type=_positive_int, default=8, help="active neurons per text (default: 8)"
    )
    g.add_argument(
        "--batch-size",
        type=_positive_int,
        default=None,
        help="SAE training batch size (default: fitting texts / 25, between 16 and 512)",
    )
    g.add_argument(
        "--max-epochs",
        type=_positive_int,
        default=None,
        help="most SAE training epochs (default: the SAE's, with early stopping)",
    )
    g.add_argument(
        "--selection",
        choices=SELECTION_METHODS,
        default="lasso",
        help="neuron selection method (default: lasso)",
    )
    g.add_argument(
        "--embedding-model",
        default="all-MiniLM-L6-v2",
        help="sentence-transformers model or path (default: all-MiniLM-L6-v2)",
    )
    g.add_argument(
        "--alpha", type=_fraction, default=0.1, help="family-wise significance level (default: 0.1)"
    )
    g.add_argument(
        "--correction",
        choices=CORRECTIONS,
        default="bonferroni",
        help="multiple-testing correction (default: bonferroni)",
    )
    _add_llm_options(p)
    o = p.add_argument_group("output")
    o.add_argument(
        "--output-dir",
        "-o",
        default="hypothesaes_output",
        help="directory for the results (default: ./hypothesaes_output)",
    )
    o.add_argument(
        "--cache-dir",
        default=None,
        help="cache directory (default: $HYPOTHESAES_CACHE_DIR or user cache)",
    )
    o.add_argument("--no-cache", action="store_true", help="do not read or write the cache")
    o.add_argument(
        "--dry-run",
        action="store_true",
        help="print the LLM usage estimate and exit without running",
    )

    def run(args) -> int:
        from sklearn_hypothesaes._cli_run import run_command

        return run_command(args)

    return run


# -- demo ----------------------------------------------------------------------------------
def register_demo(p: argparse.ArgumentParser):
    """Options of ``hypothesaes demo``."""
    p.add_argument(
        "--n-samples",
        type=_positive_int,
        default=10_000,
        help="number of demo reviews (default: 10,000)",
    )
    p.add_argument(
        "--output-dir",
        "-o",
        default="hypothesaes_demo",
        help="directory for the results (default: ./hypothesaes_demo)",
    )
    p.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    p.add_argument("--cache-dir", default=None, help="cache directory for embeddings")
    p.add_argument("--no-cache", action="store_true", help="do not read or write the cache")

    def run(args) -> int:
        from sklearn_hypothesaes._cli_run import demo_command

        return demo_command(args)

    return run
