"""Out-of-core SAE training (numpy.memmap read block by block) against in-RAM training.

Run from the repository root::

    python -m benchmarks out_of_core --repeats 1

Case 0: 2,000,000 x 384 float32 planted embeddings (about 2.9 GiB on disk,
generated once under ``/tmp/bench_ooc_data`` with
``make_planted_embeddings(out=...)``), ``TopKSAETransformer(M=1024, K=16)``,
one epoch, no validation split. ``memmap`` fits on ``np.load(mmap_mode="r")``;
``in_ram`` loads the whole array first (the load is inside the trial, so its
peak RSS includes the data). Both use the same seed and the same row order.
Case 1 is the same at 500,000 rows (about 730 MiB), for a shorter run.
Reported: seconds per epoch (``history_["dur"]``) and the trial's peak RSS.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

CACHE = Path(os.environ.get("BENCH_OOC_CACHE", "/tmp/bench_ooc_data"))

CASES = [
    {"n": 2_000_000, "d": 384, "M": 1024, "K": 16, "epochs": 1},
    {"n": 500_000, "d": 384, "M": 1024, "K": 16, "epochs": 1},
]
QUICK_CASES = [{"n": 50_000, "d": 64, "M": 128, "K": 8, "epochs": 1}]
BASELINE = "in_ram"
RATIO_METRICS = ("seconds", "peak_rss_mb", "sec_per_epoch")


def setup(case: dict) -> str:
    """Generate the planted embeddings once; return the .npy path."""
    from sklearn_hypothesaes.datasets import make_planted_embeddings

    CACHE.mkdir(parents=True, exist_ok=True)
    path = CACHE / f"planted_n{case['n']}_d{case['d']}.npy"
    if not path.exists():
        tmp = path.with_suffix(".tmp.npy")
        make_planted_embeddings(
            case["n"], n_features=case["d"], n_atoms=2048, k=16, out=tmp, random_state=0
        )
        os.replace(tmp, path)
    return str(path)


def _fit(case: dict, X) -> dict:
    from sklearn_hypothesaes.sae import TopKSAETransformer

    sae = TopKSAETransformer(
        M=case["M"],
        K=case["K"],
        max_epochs=case["epochs"],
        validation_fraction=None,
        device="cpu",
        random_state=0,
        verbose=0,
    ).fit(X)
    return {
        "sec_per_epoch": float(np.median(sae.history_["dur"])),
        "train_loss": float(sae.history_["train_loss"][-1]),
    }


def _memmap(case: dict, path: str) -> dict:
    return _fit(case, np.load(path, mmap_mode="r"))


def _in_ram(case: dict, path: str) -> dict:
    return _fit(case, np.load(path))


CONFIGS = {"in_ram": _in_ram, "memmap": _memmap}
