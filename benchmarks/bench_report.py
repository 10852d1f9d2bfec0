"""HypothesisReport.fit against the reference ``hypothesaes.evaluation.score_hypotheses``.

Both get the same 0/1 annotations (n texts x H hypotheses, prevalences 2-30%,
8 planted effects) and target: continuous for OLS, binary for logit. The timed
call is the whole evaluation: the reference's ``score_hypotheses`` (Student
t-tests, statsmodels OLS/Logit, Bonferroni count, AUC/R²) and our ``fit``
(vectorised Welch t-tests, constant/collinear/separation checks, statsmodels
OLS/Logit with standard errors and confidence intervals, corrected p-values,
the table and metrics). Imports happen in ``setup`` (not timed) for both.

``n_significant`` (Bonferroni, alpha 0.1) is reported for both. The
``agreement`` config is not a timing: it runs both on the same data and reports
the largest coefficient and separation-score differences.

Run: ``python -m benchmarks report --configs reference,ours --repeats 5`` and
``python -m benchmarks report --configs agreement --repeats 1``.
"""

from __future__ import annotations

import numpy as np

CASES = [
    {"n": 100_000, "H": 50, "task": "ols"},
    {"n": 100_000, "H": 50, "task": "logit"},
]
QUICK_CASES = [
    {"n": 5_000, "H": 20, "task": "ols"},
    {"n": 5_000, "H": 20, "task": "logit"},
]
BASELINE = "reference"


def setup(case: dict) -> dict:
    import statsmodels.api  # noqa: F401  (import cost is not what we time)
    from statsmodels.discrete.discrete_model import Logit  # noqa: F401
    from statsmodels.regression.linear_model import OLS  # noqa: F401

    import sklearn_hypothesaes.report  # noqa: F401

    if __import__("importlib").util.find_spec("hypothesaes") is not None:
        import hypothesaes.evaluation  # noqa: F401  (pulls in openai, transformers...)

    rng = np.random.default_rng(0)
    n, H = case["n"], case["H"]
    prevalence = rng.uniform(0.02, 0.3, H)
    A = (rng.random((n, H)) < prevalence).astype(np.int64)
    beta = np.zeros(H)
    beta[:8] = rng.choice([-1, 1], 8) * rng.uniform(0.05, 0.3, 8)
    eta = A @ beta
    if case["task"] == "ols":
        y = eta + rng.normal(size=n)
    else:
        y = (rng.random(n) < 1 / (1 + np.exp(-(eta - 0.3)))).astype(np.int64)
    names = [f"hypothesis {j}" for j in range(H)]
    return {"A": A, "y": y, "names": names, "classification": case["task"] == "logit"}


def _reference_outputs(data: dict):
    from hypothesaes.evaluation import score_hypotheses

    annotations = {name: data["A"][:, j] for j, name in enumerate(data["names"])}
    return score_hypotheses(annotations, data["y"], classification=data["classification"])


def run_reference(case: dict, data: dict) -> dict:
    metrics, _table = _reference_outputs(data)
    return {"n_significant": metrics["Significant"][0]}


def run_ours(case: dict, data: dict) -> dict:
    from sklearn_hypothesaes.report import HypothesisReport

    report = HypothesisReport().fit(data["A"], data["y"], hypotheses=data["names"])
    return {"n_significant": report.metrics_["n_significant"]}


def run_agreement(case: dict, data: dict) -> dict:
    """Both methods on the same data (not a timing): do the coefficients agree?"""
    from sklearn_hypothesaes.report import HypothesisReport

    report = HypothesisReport().fit(data["A"], data["y"], hypotheses=data["names"])
    metrics, ref_table = _reference_outputs(data)
    ref = ref_table.set_index("hypothesis")
    ours = report.table_.set_index("hypothesis")
    return {
        "max_coef_diff": float((ours["regression_coef"] - ref["regression_coef"]).abs().max()),
        "max_separation_diff": float(
            (ours["separation_score"] - ref["separation_score"]).abs().max()
        ),
        "n_significant_ours": report.metrics_["n_significant"],
        "n_significant_reference": metrics["Significant"][0],
    }


CONFIGS = {"reference": run_reference, "ours": run_ours, "agreement": run_agreement}
