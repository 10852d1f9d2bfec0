"""scikit-learn's estimator checks on TopKSAETransformer.

No check is expected to fail: the dense, sparse (CSR) and BatchTopK +
Matryoshka variants all pass every applicable check.
"""

from __future__ import annotations

import pytest
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils.estimator_checks import parametrize_with_checks

from sklearn_hypothesaes.sae import TopKSAETransformer

# Small and fast: sklearn's checks fit on 10-150 rows with 1-10 features.
_FAST = dict(M=6, K=2, batch_size=4, max_epochs=3, verbose=False, device="cpu")


@pytest.mark.filterwarnings("ignore", category=ConvergenceWarning)
@parametrize_with_checks(
    [
        TopKSAETransformer(**_FAST, sparse_output=False),
        TopKSAETransformer(**_FAST, sparse_output=True, validation_fraction=None),
        TopKSAETransformer(**_FAST, sparse_output=False, batch_topk=True, prefixes=[2, 6]),
    ]
)
def test_sklearn_compatible(estimator, check):
    check(estimator)
