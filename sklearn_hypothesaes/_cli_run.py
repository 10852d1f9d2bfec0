"""The work behind the ``hypothesaes`` sub-commands (see :mod:`._cli_commands`)."""

from __future__ import annotations

import json
import logging
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from sklearn_hypothesaes._cli_cost import estimate_run_cost, format_estimate
from sklearn_hypothesaes._cli_data import LoadedData, file_sha256, load_table, prepare_data
from sklearn_hypothesaes._cli_errors import CommandError, DataError

__all__ = [
    "build_generator",
    "demo_command",
    "estimate_cost_command",
    "run_command",
    "run_demo",
]

logger = logging.getLogger("sklearn_hypothesaes.cli")


def _prices(args) -> dict | None:
    if args.price_input is None and args.price_output is None:
        return None
    if args.price_input is None or args.price_output is None:
        raise DataError("Give both --price-input and --price-output, or neither.")
    return {"prompt": args.price_input, "completion": args.price_output}


def _resolve_mode(args) -> str:
    if args.mode != "auto":
        return args.mode
    from sklearn_hypothesaes.llm import llm_endpoint_configured

    return "llm" if (args.base_url or llm_endpoint_configured()) else "offline"


def _load(args) -> tuple[LoadedData, str]:
    df = load_table(args.data, fmt=args.format)
    data = prepare_data(
        df,
        text_col=args.text_col,
        target_col=args.target_col,
        text_b_col=args.text_b_col,
        task=args.task,
        max_rows=args.max_rows,
        seed=args.seed,
    )
    for note in data.notes:
        logger.info("%s", note)
    return data, file_sha256(args.data)


def _split(data: LoadedData, holdout: float, seed: int):
    from sklearn.model_selection import train_test_split

    idx = np.arange(data.n)
    stratify = data.y if data.task in ("binary", "multiclass") else None
    try:
        train, test = train_test_split(idx, test_size=holdout, random_state=seed, stratify=stratify)
    except ValueError as exc:
        raise DataError(
            f"Cannot hold out {holdout:.0%} of {data.n} rows with every class on both sides "
            f"({exc}). Use more data, fewer classes or another --holdout."
        ) from exc
    X = data.X
    return (
        [X[i] for i in train],
        data.y[train],
        [X[i] for i in test],
        data.y[test],
    )


def _individual_texts(X, pairwise: bool) -> list[str]:
    if not pairwise:
        return list(X)
    return list(dict.fromkeys([a for a, _ in X] + [b for _, b in X]))


def _estimate(args, data: LoadedData, X_fit, X_hold) -> dict:
    pairwise = data.pairs is not None
    return estimate_run_cost(
        _individual_texts(X_fit, pairwise),
        _individual_texts(X_hold, pairwise),
        n_hypotheses=args.n_hypotheses,
        n_candidates=args.n_candidates,
        model=args.llm_model,
        prices=_prices(args),
    )


def estimate_cost_command(args) -> int:
    """Run ``hypothesaes estimate-cost``."""
    data, _ = _load(args)
    X_fit, _, X_hold, _ = _split(data, args.holdout, args.seed)
    est = _estimate(args, data, X_fit, X_hold)
    est["mode"] = _resolve_mode(args)
    if args.json:
        sys.stdout.write(json.dumps(est, indent=2) + "\n")
    else:
        sys.stdout.write(format_estimate(est) + "\n")
        if est["mode"] == "offline":
            sys.stdout.write(
                "Mode is offline (no LLM endpoint configured): this run would send no "
                "request and cost nothing. The numbers above are for --mode llm.\n"
            )
    return 0


def run_command(args) -> int:
    """Run ``hypothesaes run``."""
    data, data_hash = _load(args)
    X_fit, y_fit, X_hold, y_hold = _split(data, args.holdout, args.seed)
    mode = _resolve_mode(args)
    if args.dry_run:
        est = _estimate(args, data, X_fit, X_hold)
        sys.stdout.write(format_estimate(est) + "\n")
        if mode == "offline":
            sys.stdout.write("Mode is offline: this run would send no LLM request.\n")
        return 0
    cache: Any = False if args.no_cache else (args.cache_dir or None)
    n_individual = len(_individual_texts(X_fit, data.pairs is not None))
    gen = build_generator(
        mode=mode,
        sae_params=_sae_params(args, n_individual),
        M=args.M,
        K=args.K,
        n_hypotheses=args.n_hypotheses,
        selection=args.selection,
        task=data.task,
        pairwise=data.pairs is not None,
        embedding_model=args.embedding_model,
        llm_model=args.llm_model,
        base_url=args.base_url,
        api_key_env=args.api_key_env,
        n_candidates=args.n_candidates,
        prices=_prices(args),
        cache=cache,
        seed=args.seed,
        verbose=not args.quiet,
    )
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    try:
        gen.fit(X_fit, y_fit)
        fit_seconds = time.perf_counter() - t0
        report = gen.report(X_hold, y_hold, alpha=args.alpha, correction=args.correction)
    except (ValueError, TypeError) as exc:
        # the library's input errors say what to change; show them without a traceback
        logger.debug("run failed", exc_info=True)
        raise CommandError(str(exc)) from exc
    total_seconds = time.perf_counter() - t0
    table = write_results(gen, report, out, X_hold)
    params = {k: v for k, v in vars(args).items() if not k.startswith("_")}
    record = {
        "command": "run",
        "parameters": params,
        "seed": args.seed,
        "mode": gen.mode_,
        "task": data.task,
        "classes": data.classes,
        "data": {
            "path": str(Path(args.data).resolve()),
            "sha256": data_hash,
            "n_rows_file": data.n_rows_file,
            "n_rows_used": data.n,
            "n_dropped": data.n_dropped,
            "n_fit": len(X_fit),
            "n_holdout": len(X_hold),
            "notes": data.notes,
        },
        "generator": _generator_record(gen),
        "metrics": report.metrics_,
        "n_significant": int(np.asarray(report.table_["significant"]).sum()),
        "seconds": {"fit": round(fit_seconds, 2), "total": round(total_seconds, 2)},
        "llm_usage": _usage(gen),
        "outputs": sorted(p.name for p in out.iterdir()) + ["run.json"],
    }
    from sklearn_hypothesaes._cli_provenance import write_run_json

    write_run_json(out / "run.json", record)
    sys.stdout.write(format_table(table) + "\n")
    sys.stdout.write(
        f"\n{record['n_significant']} of {len(table)} hypotheses significant "
        f"({args.correction}, alpha={args.alpha}) on {len(X_hold)} held-out rows.\n"
        f"Results written to {out}/: hypotheses.csv, report.html, model.joblib, run.json\n"
    )
    return 0


def _sae_params(args, n_texts: int) -> dict:
    from sklearn_hypothesaes.generator import auto_batch_size

    params = {"batch_size": args.batch_size or auto_batch_size(n_texts)}
    if args.max_epochs is not None:
        params["max_epochs"] = args.max_epochs
    return params


def build_generator(
    *,
    mode: str,
    M: int,
    K: int,
    n_hypotheses: int,
    selection: str,
    task: str,
    pairwise: bool,
    embedding_model: str,
    llm_model: str = "gpt-4o-mini",
    base_url: str | None = None,
    api_key_env: str | None = None,
    n_candidates: int = 1,
    prices: dict | None = None,
    cache: Any = None,
    seed: int = 0,
    verbose: bool = True,
    sae_params: dict | None = None,
):
    """The HypothesisGenerator a command-line run uses."""
    from sklearn_hypothesaes.embedding import TextEmbedder
    from sklearn_hypothesaes.generator import HypothesisGenerator
    from sklearn_hypothesaes.sae import TopKSAETransformer
    from sklearn_hypothesaes.selection import NeuronSelector

    if K > M:
        raise DataError(f"--K ({K}) cannot exceed --M ({M}).")
    if n_hypotheses > M:
        raise DataError(f"--n-hypotheses ({n_hypotheses}) cannot exceed --M ({M}).")
    client = None
    interpreter: Any = "offline"
    annotator: Any = "offline"
    if mode == "llm":
        from sklearn_hypothesaes.llm import OpenAIClient

        client = OpenAIClient(
            llm_model, base_url=base_url, api_key_env=api_key_env, prices=prices, verbose=verbose
        )
        interpreter, annotator = "llm", "llm"
        try:
            from sklearn_hypothesaes.interpret import NeuronInterpreter
        except ImportError:
            interpreter = "offline"
        else:
            interpreter = NeuronInterpreter(client=client, n_candidates=n_candidates)
    return HypothesisGenerator(
        embedder=TextEmbedder(embedding_model, cache=cache, verbose=verbose),
        sae=TopKSAETransformer(M=M, K=K, random_state=seed, verbose=verbose, **(sae_params or {})),
        selector=NeuronSelector(n_select=n_hypotheses, method=selection),
        interpreter=interpreter,
        annotator=annotator,
        task=task,
        pairwise=pairwise,
        client=client,
        cache=cache,
        random_state=seed,
        verbose=verbose,
    )


def _generator_record(gen) -> dict:
    def params(est):
        try:
            return {k: v for k, v in est.get_params(deep=False).items() if _plain(v)}
        except AttributeError:
            return None

    return {
        "embedder": type(gen.embedder_).__name__ if gen.embedder_ is not None else None,
        "embedder_params": params(gen.embedder_) if gen.embedder_ is not None else None,
        "sae": type(gen.sae_).__name__,
        "sae_params": params(gen.sae_),
        "selector": type(gen.selector_).__name__,
        "selector_params": params(gen.selector_),
        "interpreter": type(gen.interpreter_).__name__,
        "annotator": type(gen.annotator_).__name__,
        "n_hypotheses": len(gen.hypotheses_list_),
    }


def _plain(v) -> bool:
    return v is None or isinstance(v, (str, int, float, bool, list, tuple, dict))


def _usage(gen) -> dict:
    from sklearn_hypothesaes._cli_provenance import collect_usage

    return collect_usage(gen.embedder_, gen.interpreter_, gen.annotator_)


def _jsonish(v):
    if isinstance(v, (list, tuple, dict)):
        return json.dumps(v, ensure_ascii=False, default=str)
    return v


def write_results(
    gen, report, out: Path, X_hold, *, title: str = "Hypothesis report"
) -> pd.DataFrame:
    """Write hypotheses.csv, report.html and model.joblib; return the merged table."""
    import joblib

    table = merged_table(gen, report)
    csv = table.copy()
    for col in ("positive_examples", "negative_examples"):
        if col in csv.columns:  # a few examples keep the file readable
            csv[col] = csv[col].map(lambda v: list(v)[:5] if isinstance(v, (list, tuple)) else v)
    for col in csv.columns:
        if csv[col].dtype == object:
            csv[col] = csv[col].map(_jsonish)
    csv.to_csv(out / "hypotheses.csv", index=False)
    if gen.pairwise:
        # a pair has no single text to show: show texts that fired each neuron in fit
        examples = {
            row.hypothesis: list(row.positive_examples)[:3]
            for row in gen.hypotheses_.itertuples()
            if row.used and isinstance(getattr(row, "positive_examples", None), (list, tuple))
        }
    else:
        examples = list(X_hold)  # held-out texts that have each concept
    report.to_html(out / "report.html", examples=examples, title=title)
    joblib.dump(gen, out / "model.joblib")
    return table


def merged_table(gen, report) -> pd.DataFrame:
    """Held-out statistics joined with what the generator knows about each hypothesis."""
    stats = report.to_frame() if hasattr(report, "to_frame") else report.table_
    stats = stats.reset_index(drop=False) if "hypothesis" not in stats.columns else stats
    hyp = gen.hypotheses_[gen.hypotheses_["used"]].drop(columns=["used"])
    keep = [c for c in hyp.columns if c not in stats.columns or c == "hypothesis"]
    return stats.merge(hyp[keep], on="hypothesis", how="left", suffixes=("", "_fit"))


def format_table(table: pd.DataFrame, max_width: int = 60) -> str:
    """A compact text rendering of the main columns for the terminal."""
    preferred = [
        "hypothesis",
        "separation_score",
        "regression_coef",
        "regression_pval",
        "pval_corrected",
        "significant",
        "feature_prevalence",
        "f1",
    ]
    cols = [c for c in preferred if c in table.columns]
    if "class" in table.columns:
        cols.insert(0, "class")
    view = table[cols].copy()
    short = view["hypothesis"].map(
        lambda h: h if len(h) <= max_width else h[: max_width - 3] + "..."
    )
    width = int(short.map(len).max()) if len(short) else 0
    view["hypothesis"] = short.map(lambda h: h.ljust(width))
    with pd.option_context("display.width", 200, "display.max_rows", 500):
        return view.to_string(index=False, float_format=lambda v: f"{v:.3g}")


def demo_command(args) -> int:
    """Run ``hypothesaes demo``."""
    result = run_demo(
        n_samples=args.n_samples,
        output_dir=Path(args.output_dir),
        seed=args.seed,
        cache=False if args.no_cache else (args.cache_dir or None),
        verbose=not args.quiet,
    )
    sys.stdout.write(result["text"] + "\n")
    return 0


# Measured on the demo data: with 7,000 fitting reviews, M=128, K=8, 256-row batches and
# 12 epochs recover the planted aspects (see docs/cli.md); larger batches or fewer steps
# leave the SAE under-trained and its neurons mix several aspects.
DEMO_SETTINGS = {
    "M": 128,
    "K": 8,
    "n_hypotheses": 12,
    "holdout": 0.3,
    "sae_params": {"batch_size": 256, "max_epochs": 12},
}


def run_demo(
    *,
    n_samples: int = 10_000,
    output_dir: Path | None = None,
    seed: int = 0,
    cache: Any = None,
    verbose: bool = True,
    embeddings: np.ndarray | None = None,
) -> dict:
    """The offline demo: planted concepts in synthetic reviews, found and validated.

    Returns a dict with the report, the recovery result and the printed text.
    """
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.model_selection import train_test_split

    from sklearn_hypothesaes.datasets import load_demo
    from sklearn_hypothesaes.evaluation import match_hypotheses

    t0 = time.perf_counter()
    demo = load_demo(n_samples, random_state=seed)
    texts = list(demo.texts)
    y = np.asarray(demo.y, dtype=np.float64)
    idx_fit, idx_hold = train_test_split(
        np.arange(len(texts)), test_size=DEMO_SETTINGS["holdout"], random_state=seed
    )
    gen = build_generator(
        mode="offline",
        M=DEMO_SETTINGS["M"],
        K=DEMO_SETTINGS["K"],
        n_hypotheses=DEMO_SETTINGS["n_hypotheses"],
        sae_params=DEMO_SETTINGS["sae_params"],
        selection="lasso",
        task="regression",
        pairwise=False,
        embedding_model="all-MiniLM-L6-v2",
        cache=cache,
        seed=seed,
        verbose=verbose,
    )
    fit_texts = [texts[i] for i in idx_fit]
    hold_texts = [texts[i] for i in idx_hold]
    with warnings.catch_warnings():
        # the demo caps training at a fixed number of epochs on purpose (time budget)
        warnings.simplefilter("ignore", ConvergenceWarning)
        gen.fit(
            fit_texts, y[idx_fit], embeddings=None if embeddings is None else embeddings[idx_fit]
        )
    report = gen.report(hold_texts, y[idx_hold])
    table = merged_table(gen, report)

    truth, names = demo_truth(demo)
    planted = demo_planted(demo, names)
    generated = gen.transform(hold_texts)
    sig = np.asarray(report.table_["significant"], dtype=bool)
    recovery = match_hypotheses(
        generated,
        truth[idx_hold][:, planted],
        generated_names=gen.hypotheses_list_,
        reference_names=[names[i] for i in planted],
        significant=sig if sig.shape == (generated.shape[1],) else None,
        threshold=0.5,
    )
    seconds = time.perf_counter() - t0
    lines = [
        f"Demo: {len(texts):,} synthetic restaurant reviews, star rating as target; "
        f"{len(fit_texts):,} to fit, {len(hold_texts):,} held out.",
        f"Offline mode (no LLM): SAE M={DEMO_SETTINGS['M']}, K={DEMO_SETTINGS['K']}, "
        f"{DEMO_SETTINGS['n_hypotheses']} neurons selected by Lasso.",
        "",
        "Hypotheses validated on the held-out reviews:",
        format_table(table),
        "",
        "Planted concepts (with an effect on the rating) and the best-matching hypothesis:",
        recovery.table.to_string(index=False, float_format=lambda v: f"{v:.2f}"),
        "",
        f"Recovered {recovery.n_recovered} of {recovery.n_reference} planted concepts as "
        "significant hypotheses (annotation correlation >= 0.5 with the planted truth, "
        "Bonferroni-significant on held-out data).",
        f"Finished in {seconds:.0f} s.",
    ]
    if output_dir is not None:
        output_dir.mkdir(parents=True, exist_ok=True)
        write_results(
            gen, report, output_dir, hold_texts, title="hypothesaes demo: planted concepts"
        )
        recovery.table.to_csv(output_dir / "recovery.csv", index=False)
        lines.append(f"Wrote {output_dir}/report.html, hypotheses.csv and recovery.csv.")
    return {
        "generator": gen,
        "report": report,
        "recovery": recovery,
        "table": table,
        "seconds": seconds,
        "text": "\n".join(lines),
    }


def demo_truth(demo) -> tuple[np.ndarray, list[str]]:
    """The per-text matrix of planted aspects, and the aspect names."""
    for key in ("truth", "aspects", "labels", "concept_matrix"):
        value = demo.get(key) if hasattr(demo, "get") else None
        if value is None:
            continue
        if isinstance(value, pd.DataFrame):
            return value.to_numpy(dtype=np.float64), [str(c) for c in value.columns]
        arr = np.asarray(value.toarray() if hasattr(value, "toarray") else value, dtype=np.float64)
        names = [str(n) for n in demo.concepts["name"]]
        return arr, names
    raise CommandError("The demo data carries no per-text truth matrix to evaluate against.")


def demo_planted(demo, names: list[str]) -> list[int]:
    """Indices of the aspects that drive the target (distractors excluded)."""
    concepts = demo.concepts
    if "planted" in concepts.columns:
        flags = dict(zip(concepts["name"].astype(str), concepts["planted"].astype(bool)))
    elif "effect" in concepts.columns:
        flags = dict(zip(concepts["name"].astype(str), concepts["effect"].astype(float) != 0))
    else:
        flags = dict.fromkeys(names, True)
    return [i for i, n in enumerate(names) if flags.get(n, False)]
