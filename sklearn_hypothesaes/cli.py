"""The ``hypothesaes`` command.

Sub-commands are registered in :data:`COMMANDS`: each entry maps a name to a
function that adds its arguments to a sub-parser and returns the function that
runs it (``run(args) -> int`` exit status).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence

from sklearn_hypothesaes._cli_commands import register_demo, register_estimate_cost, register_run
from sklearn_hypothesaes._cli_errors import CommandError, DataError
from sklearn_hypothesaes._version import __version__

__all__ = ["main", "build_parser", "COMMANDS"]

logger = logging.getLogger("sklearn_hypothesaes.cli")

Runner = Callable[[argparse.Namespace], int]
COMMANDS: dict[str, tuple[str, Callable[[argparse.ArgumentParser], Runner]]] = {
    "run": (
        "find and validate hypotheses on a CSV, JSON lines or Parquet file",
        register_run,
    ),
    "demo": (
        "run the whole method offline on built-in synthetic reviews with planted concepts",
        register_demo,
    ),
    "estimate-cost": (
        "estimate the LLM tokens and dollars a run would spend, without sending anything",
        register_estimate_cost,
    ),
}


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser of the ``hypothesaes`` command."""
    parser = argparse.ArgumentParser(
        prog="hypothesaes",
        description=(
            "Turn a text dataset and a target into natural-language hypotheses that "
            "explain the target, each with an effect size and a corrected p-value "
            "(the HypotheSAEs method: embeddings, a Top-K sparse autoencoder, neuron "
            "selection, interpretation and held-out validation)."
        ),
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("-q", "--quiet", action="store_true", help="only print warnings and errors")
    if COMMANDS:
        sub = parser.add_subparsers(dest="command", metavar="COMMAND")
        for name, (help_text, register) in COMMANDS.items():
            sub_parser = sub.add_parser(name, help=help_text, description=help_text)
            sub_parser.set_defaults(_run=register(sub_parser))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``hypothesaes`` command and return its exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING if args.quiet else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )
    run = getattr(args, "_run", None)
    if run is None:
        parser.print_help(sys.stdout)
        return 0
    try:
        return int(run(args))
    except (DataError, CommandError) as exc:
        sys.stderr.write(f"hypothesaes {args.command}: error: {exc}\n")
        return 2 if isinstance(exc, DataError) else 1
    except KeyboardInterrupt:
        sys.stderr.write("hypothesaes: interrupted; finished cached work is kept.\n")
        return 130


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
