"""Grid search over a dask LocalCluster on 127.0.0.1 matches the single-process search."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from joblib import parallel_config
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV, StratifiedKFold
from sklearn.pipeline import Pipeline

from sklearn_hypothesaes.datasets import make_planted_embeddings
from sklearn_hypothesaes.distributed import (
    TorchThreadsPlugin,
    cap_torch_threads,
    set_torch_threads,
)
from sklearn_hypothesaes.sae import TopKSAETransformer
from sklearn_hypothesaes.selection import NeuronSelector

distributed = pytest.importorskip("distributed")


def _search() -> GridSearchCV:
    pipe = Pipeline(
        [
            (
                "sae",
                TopKSAETransformer(
                    M=16,
                    K=2,
                    max_epochs=3,
                    batch_size=64,
                    validation_fraction=None,
                    device="cpu",
                    random_state=0,
                    verbose=0,
                ),
            ),
            ("select", NeuronSelector(n_select=4, method="correlation")),
            ("clf", LogisticRegression()),
        ]
    )
    return GridSearchCV(
        pipe,
        {"sae__M": [16, 24], "sae__K": [2, 4]},
        cv=StratifiedKFold(2, shuffle=True, random_state=0),
        scoring="roc_auc",
    )


@pytest.fixture(scope="module")
def data():
    d = make_planted_embeddings(400, n_features=24, n_atoms=32, k=3, random_state=1)
    return d.X, d.y_binary


@pytest.fixture
def one_torch_thread():
    before = torch.get_num_threads()
    set_torch_threads(1)
    yield
    torch.set_num_threads(before)


def test_grid_search_on_dask_cluster_matches_single_process(data, one_torch_thread):
    X, y = data
    local = _search().fit(X, y)  # n_jobs=None: sequential, this process

    with (
        distributed.LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address=None,
            worker_dashboard_address=None,
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        threads = cap_torch_threads(client, 1)
        assert len(threads) == 2 and set(threads.values()) == {1}
        with parallel_config(backend="dask"):
            remote = _search().set_params(n_jobs=-1).fit(X, y)
        # the fits really ran on the workers: each logged task transitions
        logged = client.run(lambda dask_worker: len(dask_worker.state.log))
        assert len(logged) == 2 and all(n > 0 for n in logged.values())

    assert remote.best_params_ == local.best_params_
    for key in ("mean_test_score", "split0_test_score", "split1_test_score"):
        np.testing.assert_allclose(remote.cv_results_[key], local.cv_results_[key], rtol=1e-6)
    assert remote.cv_results_["params"] == local.cv_results_["params"]
    np.testing.assert_allclose(
        remote.best_estimator_.named_steps["sae"].W_dec_,
        local.best_estimator_.named_steps["sae"].W_dec_,
        rtol=1e-5,
        atol=1e-6,
    )


def test_thread_cap_validation_and_plugin(one_torch_thread):
    with pytest.raises(ValueError, match="positive integer"):
        set_torch_threads(0)
    with pytest.raises(ValueError, match="positive integer"):
        TorchThreadsPlugin(1.5)
    plugin = TorchThreadsPlugin(2)
    plugin.setup()
    assert torch.get_num_threads() == 2
