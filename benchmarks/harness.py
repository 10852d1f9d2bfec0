"""Side-by-side benchmark runner.

A benchmark is a module (``benchmarks/bench_<name>.py`` or any importable
module or ``.py`` file) that defines:

``CONFIGS``
    ``{config_name: fn}``; ``fn(case, data)`` runs one trial and returns a dict
    of extra metrics (floats), e.g. seconds per epoch or a quality score.
``setup(case)`` (optional)
    Builds the inputs of a case deterministically; its result is passed as
    ``data``. Not timed.
``CASES`` (optional, default ``[{}]``) and ``QUICK_CASES`` (optional)
    Parameter dicts; ``--quick`` uses ``QUICK_CASES``.
``BASELINE`` (optional, default: the first config)
    The config every ratio is taken against.
``RATIO_METRICS`` (optional)
    Lower-is-better metrics reported as ``baseline / config`` ratios
    (default: ``seconds`` and ``peak_rss_mb``).

Each trial runs in a fresh subprocess (so peak RSS belongs to that trial) with
``OMP_WAIT_POLICY=PASSIVE`` (``--omp-wait-policy default`` leaves it unset)
and an explicit torch thread count. Configurations
alternate (A B A B ...) for ``--repeats`` rounds, since a shared machine drifts.
The result is a JSON file and a markdown table of medians and ratios.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import importlib
import importlib.util
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import Any

RESULT_PREFIX = "BENCH_RESULT "
DEFAULT_RATIO_METRICS = ("seconds", "peak_rss_mb")
REPO_ROOT = Path(__file__).resolve().parent.parent


def benchmark_env(threads: int, omp_wait_policy: str | None = "PASSIVE") -> dict[str, str]:
    """Environment for a trial: OpenMP wait policy and fixed thread counts.

    ``omp_wait_policy=None`` leaves the runtime's default (spin, then sleep):
    what a user who sets nothing gets.
    """
    env = dict(os.environ)
    if omp_wait_policy is None:
        env.pop("OMP_WAIT_POLICY", None)
    else:
        env["OMP_WAIT_POLICY"] = omp_wait_policy
    env["OMP_NUM_THREADS"] = str(threads)
    env["MKL_NUM_THREADS"] = str(threads)
    env["BENCH_THREADS"] = str(threads)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), *filter(None, [env.get("PYTHONPATH")])])
    return env


def load_module(name: str) -> ModuleType:
    """Import a benchmark by short name (``sae``), module name, or file path."""
    if name.endswith(".py") or os.sep in name:
        path = Path(name).resolve()
        spec = importlib.util.spec_from_file_location(path.stem, path)
        if spec is None or spec.loader is None:
            raise SystemExit(f"Cannot import benchmark file {path}.")
        module = importlib.util.module_from_spec(spec)
        sys.modules[path.stem] = module
        spec.loader.exec_module(module)
        return module
    candidates = [name] if "." in name else [f"benchmarks.bench_{name}", name]
    for candidate in candidates:
        try:
            return importlib.import_module(candidate)
        except ModuleNotFoundError as exc:
            if exc.name not in (candidate, candidate.rsplit(".", 1)[0]):
                raise
    raise SystemExit(
        f"No benchmark named {name!r}: expected benchmarks/bench_{name}.py, a module "
        "name or a .py path. Available: " + ", ".join(available_benchmarks())
    )


def available_benchmarks() -> list[str]:
    here = Path(__file__).resolve().parent
    return sorted(p.stem.removeprefix("bench_") for p in here.glob("bench_*.py"))


def _peak_rss_mb() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # ru_maxrss is in kilobytes on Linux and bytes on macOS.
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def run_trial_in_process(module_name: str, config: str, case: dict) -> dict[str, Any]:
    """Run one trial in this process (used by the worker subprocess)."""
    threads = int(os.environ.get("BENCH_THREADS", "0") or 0)
    if threads:
        try:
            import torch

            torch.set_num_threads(threads)
        except ImportError:
            pass
    module = load_module(module_name)
    setup = getattr(module, "setup", None)
    data = setup(case) if setup is not None else None
    setup_rss = _peak_rss_mb()
    fn = module.CONFIGS[config]
    start = time.perf_counter()
    metrics = fn(case, data) or {}
    seconds = time.perf_counter() - start
    result = {"seconds": seconds, "peak_rss_mb": _peak_rss_mb(), "setup_rss_mb": setup_rss}
    result.update({k: _to_number(v) for k, v in metrics.items()})
    return result


def _to_number(value: Any) -> Any:
    try:
        return float(value)
    except (TypeError, ValueError):
        return value


def run_trial(
    module_name: str,
    config: str,
    case: dict,
    threads: int,
    timeout: float,
    omp_wait_policy: str | None = "PASSIVE",
):
    """Run one trial in a fresh subprocess and return its metrics."""
    cmd = [
        sys.executable,
        "-m",
        "benchmarks.harness",
        "--worker",
        module_name,
        config,
        json.dumps(case),
    ]
    proc = subprocess.run(
        cmd,
        env=benchmark_env(threads, omp_wait_policy),
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if proc.returncode != 0:
        raise RuntimeError(
            f"Trial {config} {case} failed with exit code {proc.returncode}:\n{proc.stderr[-4000:]}"
        )
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith(RESULT_PREFIX):
            return json.loads(line[len(RESULT_PREFIX) :])
    raise RuntimeError(f"Trial {config} {case} printed no result:\n{proc.stdout[-2000:]}")


def summarise(trials: list[dict], configs: list[str], baseline: str, ratio_metrics):
    """Medians per config and lower-is-better ratios against the baseline."""
    medians: dict[str, dict[str, float]] = {}
    for config in configs:
        rows = [t["metrics"] for t in trials if t["config"] == config]
        keys = sorted({k for r in rows for k, v in r.items() if isinstance(v, float)})
        medians[config] = {
            k: statistics.median(r[k] for r in rows if isinstance(r.get(k), float)) for k in keys
        }
    ratios: dict[str, dict[str, float]] = {}
    for config in configs:
        ratios[config] = {}
        for metric in ratio_metrics:
            base = medians.get(baseline, {}).get(metric)
            value = medians[config].get(metric)
            if base is not None and value:
                ratios[config][metric] = base / value
    return medians, ratios


def markdown_table(case: dict, medians, ratios, baseline: str) -> str:
    metrics = sorted({m for v in medians.values() for m in v})
    ratio_cols = sorted({m for v in ratios.values() for m in v})
    title = ", ".join(f"{k}={v}" for k, v in case.items()) or "default case"
    header = ["config", *metrics, *(f"{m} ratio (vs {baseline})" for m in ratio_cols)]
    lines = [f"**{title}**", "", "| " + " | ".join(header) + " |"]
    lines.append("|" + "---|" * len(header))
    for config, values in medians.items():
        cells = [config]
        cells += [_fmt(values.get(m)) for m in metrics]
        cells += [(f"{ratios[config][m]:.2f}x" if m in ratios[config] else "") for m in ratio_cols]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _fmt(value) -> str:
    if value is None:
        return ""
    if abs(value) >= 100:
        return f"{value:.0f}"
    if abs(value) >= 1:
        return f"{value:.3g}"
    return f"{value:.3g}"


def machine_info(threads: int, omp_wait_policy: str | None = "PASSIVE") -> dict[str, Any]:
    info: dict[str, Any] = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "threads": threads,
        "OMP_WAIT_POLICY": omp_wait_policy or "(unset: runtime default)",
    }
    for pkg in ("numpy", "scipy", "scikit-learn", "torch", "sklearn-hypothesaes", "hypothesaes"):
        try:
            from importlib.metadata import version

            info[pkg] = version(pkg)
        except Exception:  # absent packages are simply not listed
            pass
    return info


def run_benchmark(
    name: str,
    *,
    repeats: int = 3,
    threads: int = 2,
    quick: bool = False,
    configs: list[str] | None = None,
    case_indices: list[int] | None = None,
    out_dir: Path | None = None,
    timeout: float = 3600.0,
    log=None,
    omp_wait_policy: str | None = "PASSIVE",
) -> dict[str, Any]:
    """Run a benchmark with alternated configurations; write JSON and markdown."""
    module = load_module(name)
    is_path = name.endswith(".py") or os.sep in name
    module_name = str(Path(name).resolve()) if is_path else module.__name__
    all_configs = list(module.CONFIGS)
    chosen = configs or all_configs
    unknown = [c for c in chosen if c not in module.CONFIGS]
    if unknown:
        raise SystemExit(f"Unknown config(s) {unknown}; available: {all_configs}")
    cases = list(getattr(module, "QUICK_CASES", None) if quick else [])
    if not cases:
        cases = list(getattr(module, "CASES", [{}]))
    if case_indices:
        cases = [cases[i] for i in case_indices]
    baseline = getattr(module, "BASELINE", chosen[0])
    if baseline not in chosen:
        baseline = chosen[0]
    ratio_metrics = tuple(getattr(module, "RATIO_METRICS", DEFAULT_RATIO_METRICS))

    result: dict[str, Any] = {
        "benchmark": Path(name).stem.removeprefix("bench_"),
        "started": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join([Path(sys.executable).name, "-m", "benchmarks", *sys.argv[1:]]),
        "machine": machine_info(threads, omp_wait_policy),
        "repeats": repeats,
        "baseline": baseline,
        "cases": [],
    }
    tables = []
    for case in cases:
        trials = []
        for repeat in range(repeats):
            for config in chosen:  # alternate A B A B ...
                metrics = run_trial(module_name, config, case, threads, timeout, omp_wait_policy)
                trials.append({"config": config, "repeat": repeat, "metrics": metrics})
                if log is not None:
                    log(f"{case} {config} #{repeat}: " + json.dumps(metrics))
        medians, ratios = summarise(trials, chosen, baseline, ratio_metrics)
        result["cases"].append(
            {"case": case, "trials": trials, "medians": medians, "ratios": ratios}
        )
        tables.append(markdown_table(case, medians, ratios, baseline))
    result["markdown"] = "\n\n".join(tables)

    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        base = out_dir / f"{result['benchmark']}-{stamp}"
        base.with_suffix(".json").write_text(json.dumps(result, indent=2))
        base.with_suffix(".md").write_text(
            f"# Benchmark `{result['benchmark']}`\n\n"
            f"Command: `{result['command']}`  \n"
            f"Machine: {json.dumps(result['machine'])}  \n"
            f"Medians of {repeats} alternated repeats; ratios are baseline / config "
            "(higher is better for the config).\n\n" + result["markdown"] + "\n"
        )
        result["written"] = [str(base.with_suffix(".json")), str(base.with_suffix(".md"))]
    return result


def _worker_main(argv: list[str]) -> int:
    module_name, config, case_json = argv
    metrics = run_trial_in_process(module_name, config, json.loads(case_json))
    sys.stdout.write(RESULT_PREFIX + json.dumps(metrics) + "\n")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "--worker":
        return _worker_main(argv[1:])
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="Run a benchmark side by side (alternated configs, medians, ratios).",
    )
    parser.add_argument("name", nargs="?", help="benchmark name, module or .py path")
    parser.add_argument("--list", action="store_true", help="list benchmarks and exit")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2, help="torch/OpenMP threads")
    parser.add_argument("--quick", action="store_true", help="use QUICK_CASES")
    parser.add_argument("--configs", help="comma-separated subset of configs")
    parser.add_argument("--cases", help="comma-separated case indices")
    parser.add_argument("--timeout", type=float, default=3600.0, help="seconds per trial")
    parser.add_argument(
        "--omp-wait-policy",
        choices=["PASSIVE", "ACTIVE", "default"],
        default="PASSIVE",
        help="OMP_WAIT_POLICY of the trials; 'default' leaves it unset (the runtime's "
        "spin-then-sleep, what users get). PASSIVE is steadier on a shared host.",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=REPO_ROOT / "benchmarks" / "results",
        help="directory for the JSON and markdown results",
    )
    args = parser.parse_args(argv)
    if args.list or not args.name:
        sys.stdout.write("\n".join(available_benchmarks()) + "\n")
        return 0
    result = run_benchmark(
        args.name,
        repeats=args.repeats,
        threads=args.threads,
        quick=args.quick,
        configs=args.configs.split(",") if args.configs else None,
        case_indices=[int(i) for i in args.cases.split(",")] if args.cases else None,
        out_dir=args.out,
        timeout=args.timeout,
        log=lambda msg: sys.stderr.write(msg + "\n"),
        omp_wait_policy=None if args.omp_wait_policy == "default" else args.omp_wait_policy,
    )
    sys.stdout.write(result["markdown"] + "\n")
    for path in result.get("written", []):
        sys.stdout.write(f"wrote {path}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
