"""Tests of TopKSAETransformer: training math, quality, sklearn integration, I/O."""

from __future__ import annotations

import io
import pickle
import tracemalloc
import warnings

import joblib
import numpy as np
import pytest
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from sklearn.base import clone
from sklearn.exceptions import ConvergenceWarning, NotFittedError
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV, cross_val_score
from sklearn.pipeline import Pipeline
from skorch.callbacks import Callback

from sklearn_hypothesaes import _sae_module
from sklearn_hypothesaes._sae_module import TopKSAEModule, decode_flat, group_by_neuron
from sklearn_hypothesaes.datasets import make_planted_embeddings
from sklearn_hypothesaes.exceptions import DeviceWarning
from sklearn_hypothesaes.sae import TopKSAETransformer

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")

FAST = dict(batch_size=64, max_epochs=4, verbose=False, device="cpu", random_state=0)


@pytest.fixture(scope="module")
def planted():
    return make_planted_embeddings(1200, n_features=32, n_atoms=16, k=2, random_state=0)


@pytest.fixture(scope="module")
def fitted(planted):
    return TopKSAETransformer(M=32, K=3, **FAST).fit(planted.X)


# --------------------------------------------------------------------------
# The sparse training step against a dense computation of the same loss.
# --------------------------------------------------------------------------
def _nmse(pred, target):
    return F.mse_loss(pred, target) / F.mse_loss(
        target.mean(0, keepdim=True).expand_as(target), target
    )


def _dense_loss(p, x, module, dead):
    """The loss written densely over all M neurons (the reference's formulation)."""
    M, K = module.M, module.K
    pre = (x - p["b_pre"]) @ p["W_enc"].T + p["b_enc"]
    if module.batch_topk:
        flat = F.relu(pre).flatten()
        vals, idx = torch.topk(flat, K * x.shape[0])
        act = torch.zeros_like(flat).scatter(0, idx, vals).view_as(pre)
    else:
        vals, idx = torch.topk(pre, K, dim=1)
        act = torch.zeros_like(pre).scatter(1, idx, F.relu(vals))
    recon = act @ p["W_dec"] + p["b_pre"]
    if module.prefixes:
        terms = [_nmse(act[:, :end] @ p["W_dec"][:end] + p["b_pre"], x) for end in module.prefixes]
        loss = torch.stack(terms).mean()
    else:
        loss = _nmse(recon, x)
    if module.multi_k is not None and module.multi_coef:
        mv, mi = torch.topk(pre, module.multi_k, dim=1)
        mact = torch.zeros_like(pre).scatter(1, mi, F.relu(mv))
        loss = loss + module.multi_coef * _nmse(mact @ p["W_dec"] + p["b_pre"], x)
    if module.aux_k and dead.any():
        av, ai = torch.topk(pre * dead.float(), module.aux_k, dim=1)
        aact = torch.zeros_like(pre).scatter(1, ai, F.relu(av))
        loss = loss + module.aux_coef * _nmse(aact @ p["W_dec"], x - recon.detach())
    assert act.shape == (x.shape[0], M)
    return loss


@pytest.mark.parametrize(
    "config",
    [
        dict(),
        dict(aux_k=6, dead_steps=1),
        dict(multi_k=8, multi_coef=0.5),
        dict(prefixes=(4, 12, 40)),
        dict(batch_topk=True),
        dict(aux_k=4, dead_steps=1, prefixes=(6, 40), multi_k=6, multi_coef=0.25),
    ],
    ids=["topk", "auxk", "multik", "matryoshka", "batchtopk", "all"],
)
def test_sparse_step_matches_dense_loss_and_gradients(config):
    torch.manual_seed(0)
    d, M, K, B = 20, 40, 3, 8
    module = TopKSAEModule(d, M, K, **config)
    gen = torch.Generator().manual_seed(1)
    module.initialize_(torch.randn(d, generator=gen) * 0.1, gen)
    with torch.no_grad():  # break the encoder = decoder symmetry and add biases
        module.W_enc.add_(0.3 * torch.randn(M, d, generator=gen))
        module.b_enc.copy_(0.1 * torch.randn(M, generator=gen))
        module.steps_since_active[: M // 2] = 5  # half the neurons start "dead"
    x = torch.randn(B, d, generator=gen)
    params = {k: v.detach().clone().requires_grad_() for k, v in module.named_parameters()}

    module.train()
    out = module(x)
    loss = module.loss(out, training=True)
    loss.backward()
    dead = module.steps_since_active > module.dead_steps  # the mask this step used

    dense = _dense_loss(params, x, module, dead)
    dense.backward()
    torch.testing.assert_close(loss, dense, rtol=1e-5, atol=1e-6)
    for name, p in module.named_parameters():
        torch.testing.assert_close(p.grad, params[name].grad, rtol=1e-4, atol=1e-6, msg=name)
    if config.get("aux_k"):
        assert dead.any()  # the AuxK branch really ran


@pytest.mark.parametrize("kernel", [True, False], ids=["kernel", "chunked"])
@pytest.mark.parametrize("shared_grouping", [True, False], ids=["shared", "own"])
def test_decoder_gradients_match_embedding_bag_autograd(monkeypatch, kernel, shared_grouping):
    # The decoder's own backward against PyTorch's autograd of the same
    # embedding_bag, with empty rows, repeated neurons and unused neurons.
    if not kernel:
        monkeypatch.setattr(_sae_module, "_PSW_BACKWARD", None)
    gen = torch.Generator().manual_seed(3)
    n_rows, M, d = 2100, 50, 7  # more selections than one 1,024 chunk
    rows = torch.sort(torch.randint(0, n_rows - 1, (3000,), generator=gen)).values
    cols = torch.randint(0, M - 5, (3000,), generator=gen)  # the last 5 never selected
    values = torch.rand(3000, generator=gen).requires_grad_()
    W = torch.randn(M, d, generator=gen).requires_grad_()
    grad_out = torch.randn(n_rows, d, generator=gen)
    grouping = group_by_neuron(cols, M) if shared_grouping else None
    decode_flat(rows, cols, values, W, n_rows, grouping=grouping).backward(grad_out)

    values_ref = values.detach().clone().requires_grad_()
    W_ref = W.detach().clone().requires_grad_()
    offsets = torch.searchsorted(rows, torch.arange(n_rows))
    F.embedding_bag(cols, W_ref, offsets, mode="sum", per_sample_weights=values_ref).backward(
        grad_out
    )
    torch.testing.assert_close(values.grad, values_ref.grad)
    torch.testing.assert_close(W.grad, W_ref.grad)
    assert torch.all(W.grad[M - 5 :] == 0)


def test_decoder_gradient_projection_and_renormalisation():
    module = TopKSAEModule(8, 10, 2)
    gen = torch.Generator().manual_seed(0)
    module.initialize_(torch.zeros(8), gen)
    for _ in range(2):  # the second call reuses the workspace of the first
        module.W_dec.grad = torch.randn(10, 8, generator=gen)
        expected = module.W_dec.grad - (module.W_dec.grad * module.W_dec).sum(1, keepdim=True) * (
            module.W_dec
        )
        module.project_decoder_grad_()
        torch.testing.assert_close(module.W_dec.grad, expected)
        assert torch.allclose((module.W_dec.grad * module.W_dec).sum(1), torch.zeros(10), atol=1e-6)
    assert "_workspace" not in module.state_dict()
    with torch.no_grad():
        module.W_dec.mul_(3.0)
    module.normalize_decoder_()
    assert torch.allclose(module.W_dec.norm(dim=1), torch.ones(10), atol=1e-6)


# --------------------------------------------------------------------------
# Fitted model: shapes, sparsity, quality.
# --------------------------------------------------------------------------
def test_fitted_attributes(fitted, planted):
    d, M = planted.X.shape[1], 32
    assert fitted.W_enc_.shape == (d, M) and fitted.W_dec_.shape == (M, d)
    assert fitted.b_enc_.shape == (M,) and fitted.b_pre_.shape == (d,)
    assert fitted.components_ is fitted.W_dec_
    np.testing.assert_allclose(np.linalg.norm(fitted.W_dec_, axis=1), 1.0, rtol=1e-5)
    assert fitted.threshold_ == 0.0
    assert 1 <= fitted.n_iter_ <= 4 and fitted.n_steps_ > 0
    assert set(fitted.history_) == {"epoch", "train_loss", "valid_loss", "dead_fraction", "dur"}
    assert len(fitted.history_["train_loss"]) == fitted.n_iter_
    assert np.all(np.isfinite(fitted.history_["valid_loss"]))
    assert fitted.steps_since_active_.shape == (M,)
    assert fitted.W_dec_.dtype == np.float32
    assert list(fitted.get_feature_names_out()) == [f"sae{i}" for i in range(M)]


def test_transform_is_sparse_top_k(fitted, planted):
    A = fitted.transform(planted.X)
    assert sp.issparse(A) and A.format == "csr" and A.dtype == np.float32
    assert A.shape == (planted.X.shape[0], 32)
    nnz = A.getnnz(axis=1)
    assert nnz.max() <= 3
    assert A.has_sorted_indices
    assert np.all(A.data > 0)
    # Exactly K non-zeros unless the K-th pre-activation is not positive.
    pre = (planted.X - fitted.b_pre_) @ fitted.W_enc_ + fitted.b_enc_
    kth = np.sort(pre, axis=1)[:, -3]
    np.testing.assert_array_equal(nnz == 3, kth > 0)
    dense = clone(fitted).set_params(sparse_output=False).fit(planted.X).transform(planted.X)
    np.testing.assert_array_equal(dense, A.toarray())


def test_score_is_one_minus_nmse(fitted, planted):
    X = planted.X
    recon = fitted.inverse_transform(fitted.transform(X))
    assert recon.shape == X.shape and recon.dtype == np.float32
    nmse = ((recon - X) ** 2).sum() / ((X - X.mean(0)) ** 2).sum()
    assert fitted.score(X) == pytest.approx(1 - nmse, rel=1e-4)
    np.testing.assert_allclose(
        fitted.inverse_transform(fitted.transform(X).toarray()), recon, rtol=1e-5, atol=1e-6
    )


def test_recovers_planted_atoms():
    data = make_planted_embeddings(2000, n_features=32, n_atoms=12, k=2, random_state=1)
    sae = TopKSAETransformer(
        M=24, K=2, batch_size=32, max_epochs=25, learning_rate=2e-3, verbose=False, random_state=0
    ).fit(data.X)
    cos = np.abs(data.atoms @ sae.W_dec_.T).max(axis=1)
    assert (cos > 0.9).mean() >= 0.75, cos
    assert sae.score(data.X) > 0.8
    assert sae.transform(data.X).getnnz(axis=1).max() <= 2


def test_batch_topk_learns_threshold(planted):
    sae = TopKSAETransformer(M=32, K=3, batch_topk=True, **FAST).fit(planted.X)
    assert sae.threshold_ > 0
    A = sae.transform(planted.X)
    assert np.all(A.data > sae.threshold_)
    assert 0.5 <= A.getnnz(axis=1).mean() <= 10  # about K on average, not per row


def test_matryoshka_and_multik_train(planted):
    sae = TopKSAETransformer(M=32, K=3, prefixes=[4, 16, 32], multi_k=8, multi_coef=0.1, **FAST)
    assert sae.fit(planted.X).score(planted.X) > 0.3


def test_lr_scaling_with_M(planted):
    seen = []

    class RecordLR(Callback):
        def on_train_begin(self, net, **kwargs):
            seen.append(net.optimizer_.param_groups[0]["lr"])

    TopKSAETransformer(
        M=64, K=3, learning_rate=1e-3, lr_reference_M=16, callbacks=[RecordLR()], **FAST
    ).fit(planted.X)
    assert seen == [pytest.approx(1e-3 * (16 / 64) ** 0.5)]


# --------------------------------------------------------------------------
# Early stopping restores the best weights; user callbacks run.
# --------------------------------------------------------------------------
class _ScrambleAfter(Callback):
    """Destroys the decoder after every training step of the epochs after ``epoch``."""

    def __init__(self, epoch):
        self.epoch = epoch

    def on_batch_end(self, net, batch=None, training=False, **kwargs):
        if training and len(net.history) > self.epoch:
            with torch.no_grad():
                net.module_.W_dec.fill_(1.0)


def _batched_nmse(sae, X, batch_size):
    """The validation loss as skorch records it: batch nMSE weighted by batch size."""
    losses, sizes = [], []
    for s in range(0, len(X), batch_size):
        xb = X[s : s + batch_size]
        rec = sae.inverse_transform(sae.transform(xb))
        losses.append(((rec - xb) ** 2).mean() / ((xb - xb.mean(0)) ** 2).mean())
        sizes.append(len(xb))
    return np.average(losses, weights=sizes)


def test_early_stopping_restores_best_weights(planted):
    X_val = make_planted_embeddings(300, n_features=32, n_atoms=16, k=2, random_state=5).X
    # At 5e-4 each of the first 3 epochs still improves by more than tol here,
    # so the best epoch is the last good one, not an early plateau.
    sae = TopKSAETransformer(
        M=32,
        K=3,
        patience=2,
        learning_rate=5e-4,
        callbacks=[_ScrambleAfter(3)],
        **{**FAST, "max_epochs": 20},
    )
    sae.fit(planted.X, eval_set=X_val)
    hist = sae.history_["valid_loss"]
    assert sae.n_iter_ == 5  # 3 good epochs, 2 scrambled ones, then patience ran out
    assert sae.best_epoch_ == 3 and np.argmin(hist) == 2
    assert hist[-1] > hist[2]
    assert _batched_nmse(sae, X_val, FAST["batch_size"]) == pytest.approx(hist[2], rel=1e-4)
    assert sae.callbacks[0].__dict__ == {"epoch": 3}  # the user's callback was copied


def test_convergence_warning_when_still_improving(planted):
    with pytest.warns(ConvergenceWarning, match="still improving"):
        TopKSAETransformer(M=32, K=3, **{**FAST, "max_epochs": 1}).fit(planted.X)


# --------------------------------------------------------------------------
# Reproducibility, persistence, devices.
# --------------------------------------------------------------------------
def test_same_seed_same_weights_different_seed_different(planted):
    a = TopKSAETransformer(M=16, K=2, **FAST).fit(planted.X)
    b = TopKSAETransformer(M=16, K=2, **FAST).fit(planted.X)
    c = TopKSAETransformer(M=16, K=2, **{**FAST, "random_state": 1}).fit(planted.X)
    for name in ("W_enc_", "W_dec_", "b_enc_", "b_pre_"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    assert not np.array_equal(a.W_dec_, c.W_dec_)


def test_joblib_round_trip_and_no_torch_state_in_pickle(fitted, planted, tmp_path):
    path = tmp_path / "sae.joblib"
    joblib.dump(fitted, path)
    loaded = joblib.load(path)
    assert (loaded.transform(planted.X) != fitted.transform(planted.X)).nnz == 0
    state = fitted.__getstate__()
    assert "_module" not in state
    assert not any(isinstance(v, torch.Tensor | torch.nn.Module) for v in state.values())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_fit_matches_cpu_and_unpickles_on_cpu(planted):
    """Same sparse training path on the GPU; the fitted state holds no CUDA tensors."""
    gpu = TopKSAETransformer(M=16, K=2, **{**FAST, "device": "cuda"}).fit(planted.X)
    cpu = TopKSAETransformer(M=16, K=2, **{**FAST, "device": "cpu"}).fit(planted.X)
    assert gpu.W_dec_.dtype == np.float32 and isinstance(gpu.W_dec_, np.ndarray)
    # Different kernels round differently; the fits must still agree closely.
    assert abs(gpu.score(planted.X) - cpu.score(planted.X)) < 0.05
    A = gpu.transform(planted.X)
    assert A.getnnz(axis=1).max() <= 2
    state = pickle.dumps(gpu)
    loaded = pickle.loads(state)
    loaded.set_params(device="cpu")
    np.testing.assert_allclose(
        loaded.transform(planted.X).toarray(), A.toarray(), rtol=1e-4, atol=1e-5
    )


def test_changing_device_after_fit_moves_inference(planted):
    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    sae = TopKSAETransformer(M=16, K=2, **{**FAST, "device": "cpu"}).fit(planted.X)
    expected = sae.transform(planted.X[:20]).toarray()
    sae.set_params(device="cuda")  # re-resolved on the next transform: falls back, warns
    with pytest.warns(DeviceWarning, match="CUDA is not available"):
        got = sae.transform(planted.X[:20]).toarray()
    np.testing.assert_array_equal(got, expected)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # resolved once, not on every call
        sae.transform(planted.X[:20])


def test_unavailable_device_falls_back_to_cpu(planted):
    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    sae = TopKSAETransformer(M=16, K=2, **{**FAST, "device": "cuda"})
    with pytest.warns(DeviceWarning, match="CUDA is not available"):
        sae.fit(planted.X)
    buf = io.BytesIO()
    pickle.dump(sae, buf)
    buf.seek(0)
    with pytest.warns(DeviceWarning):  # a "GPU" model unpickled on a CPU-only machine
        loaded = pickle.load(buf)
    assert loaded.transform(planted.X[:5]).shape == (5, 16)


def test_memmap_fit_reads_blocks_without_copying(tmp_path, monkeypatch):
    from sklearn_hypothesaes import sae as sae_module

    monkeypatch.setattr(sae_module, "_BLOCK_ROWS", 512)
    monkeypatch.setattr(sae_module, "_MEDIAN_ROWS", 1024)
    data = make_planted_embeddings(
        20000, n_features=32, n_atoms=16, k=2, out=tmp_path / "X.npy", random_state=0
    )
    X = data.X
    assert isinstance(X, np.memmap)
    params = dict(M=16, K=2, batch_size=256, max_epochs=2, verbose=False, random_state=0)
    tracemalloc.start()
    from_disk = TopKSAETransformer(**params).fit(X)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < X.nbytes / 3, (peak, X.nbytes)
    in_ram = TopKSAETransformer(**params).fit(np.array(X))
    np.testing.assert_array_equal(from_disk.W_dec_, in_ram.W_dec_)


@pytest.mark.parametrize("source", ["ndarray", "memmap"])
@pytest.mark.parametrize("shuffle", [True, False])
def test_row_blocks_yield_each_selected_row_once(tmp_path, source, shuffle):
    from sklearn_hypothesaes._sae_training import RowBlocks

    X = np.arange(103 * 3, dtype=np.float32).reshape(103, 3)
    if source == "memmap":
        np.save(tmp_path / "X.npy", X)
        X = np.load(tmp_path / "X.npy", mmap_mode="r")
    idx = np.random.default_rng(0).choice(103, size=90, replace=False)
    blocks = RowBlocks(
        X, idx, 8, shuffle=shuffle, rng=np.random.RandomState(0), device="cpu", block_rows=24
    )
    for _ in range(2):  # a second pass reuses the buffer and reshuffles
        seen = [batch.numpy().copy() for batch, _ in blocks]
        rows = np.concatenate(seen)[:, 0].astype(int) // 3
        assert sorted(rows) == sorted(idx)
        if not shuffle:
            np.testing.assert_array_equal(rows, idx)
        assert all(2 <= len(b) <= 8 for b in seen)
    if shuffle:
        assert not np.array_equal(rows, idx)


# --------------------------------------------------------------------------
# partial_fit and warm_start.
# --------------------------------------------------------------------------
def test_partial_fit_continues_training(planted):
    X = planted.X
    sae = TopKSAETransformer(M=32, K=3, batch_size=64, verbose=False, random_state=0)
    scores = []
    for _ in range(4):
        for chunk in np.array_split(X, 4):
            sae.partial_fit(chunk)
        scores.append(sae.score(X))
    assert sae.n_iter_ == 16 and len(sae.history_["train_loss"]) == 16
    assert scores[-1] > scores[0]
    assert sae._optimizer_state["state"]  # Adam moments kept between calls
    with pytest.raises(ValueError, match="X has 5 features"):
        sae.partial_fit(X[:, :5])
    sae.partial_fit(X[:10])  # smaller than a batch is allowed here
    with pytest.raises(ValueError, match="at least 2 rows"):
        sae.partial_fit(X[:1])


def test_warm_start_continues_from_current_weights(planted):
    sae = TopKSAETransformer(M=32, K=3, warm_start=True, **{**FAST, "max_epochs": 2})
    sae.fit(planted.X)
    first = sae.W_dec_.copy()
    before = sae.score(planted.X)
    sae.fit(planted.X)
    assert sae.n_iter_ == 4 and len(sae.history_["epoch"]) == 4
    assert not np.array_equal(first, sae.W_dec_)
    assert sae.score(planted.X) > before - 0.01
    cold = clone(sae).set_params(warm_start=False).fit(planted.X)
    assert cold.n_iter_ == 2
    with pytest.raises(ValueError, match="cannot continue training with M=16"):
        sae.set_params(M=16).fit(planted.X)
    with pytest.raises(ValueError, match="partial_fit cannot continue training with M=16"):
        sae.partial_fit(planted.X)


def test_single_row_final_batch_is_skipped(planted):
    # 129 rows with batch_size=64: the trailing 1-row batch has no nMSE.
    sae = TopKSAETransformer(M=16, K=2, validation_fraction=None, **FAST).fit(planted.X[:129])
    assert np.all(np.isfinite(sae.history_["train_loss"]))
    assert sae.n_steps_ == 2 * sae.n_iter_


# --------------------------------------------------------------------------
# scikit-learn integration.
# --------------------------------------------------------------------------
def test_grid_search_unsupervised(planted):
    grid = GridSearchCV(
        Pipeline([("sae", TopKSAETransformer(**FAST))]),
        {"sae__M": [8, 32], "sae__K": [1, 4]},
        cv=2,
    ).fit(planted.X[:600])
    assert grid.best_params_ == {"sae__M": 32, "sae__K": 4}  # less sparse reconstructs better
    assert np.isfinite(grid.cv_results_["mean_test_score"]).all()


def test_supervised_pipeline(planted):
    pipe = Pipeline([("sae", TopKSAETransformer(M=32, K=3, **FAST)), ("clf", LogisticRegression())])
    scores = cross_val_score(pipe, planted.X, planted.y_binary, cv=2, scoring="roc_auc")
    assert scores.mean() > 0.6


def test_set_output_pandas(planted):
    sae = TopKSAETransformer(M=16, K=2, sparse_output=False, **FAST).set_output(transform="pandas")
    frame = sae.fit(planted.X).transform(planted.X[:7])
    assert list(frame.columns) == [f"sae{i}" for i in range(16)]
    assert frame.shape == (7, 16) and (frame.to_numpy() > 0).sum(1).max() <= 2
    with pytest.raises(ValueError, match="sparse"):
        TopKSAETransformer(M=16, K=2, **FAST).set_output(transform="pandas").fit_transform(
            planted.X
        )


# --------------------------------------------------------------------------
# Bad input.
# --------------------------------------------------------------------------
@pytest.mark.parametrize(
    "params, X_fn, match",
    [
        ({}, lambda X: np.where(np.arange(X.size).reshape(X.shape) == 7, np.nan, X), "NaN"),
        ({}, lambda X: np.where(np.arange(X.size).reshape(X.shape) == 7, np.inf, X), "infinity"),
        ({}, lambda X: X[:, 0], "Expected 2D array"),
        ({}, lambda X: X[:0], "0 sample"),
        ({"K": 0}, lambda X: X, "'K' parameter"),
        ({"M": 0}, lambda X: X, "'M' parameter"),
        ({"M": 4, "K": 5}, lambda X: X, "K=5 active neurons cannot exceed M=4"),
        ({"M": 16, "prefixes": [4, 8]}, lambda X: X, "must end at M=16"),
        ({"M": 16, "prefixes": [8, 4, 16]}, lambda X: X, "strictly increasing"),
        ({"M": 16, "aux_k": 20}, lambda X: X, "aux_k=20 cannot exceed M=16"),
        ({"M": 16, "multi_k": 1, "K": 2}, lambda X: X, "multi_k=1 must lie between"),
        ({"batch_size": 2000}, lambda X: X, "fewer than one batch"),
    ],
)
def test_bad_input_fit(planted, params, X_fn, match):
    base = dict(M=16, K=2, **FAST)
    with pytest.raises(ValueError, match=match):
        TopKSAETransformer(**{**base, **params}).fit(X_fn(planted.X.astype(np.float64)))


def test_bad_input_after_fit(fitted, planted):
    with pytest.raises(ValueError, match="X has 5 features, but TopKSAETransformer is expecting"):
        fitted.transform(planted.X[:, :5])
    with pytest.raises(ValueError, match="M=32 neurons"):
        fitted.inverse_transform(np.ones((3, 7)))
    with pytest.raises(ValueError, match="eval_set has 5 features"):
        clone(fitted).fit(planted.X, eval_set=planted.X[:, :5])
    with pytest.raises(NotFittedError):
        TopKSAETransformer().transform(planted.X)
    with pytest.raises(TypeError, match="dense data is required"):
        fitted.transform(sp.csr_matrix(planted.X))


# --------------------------------------------------------------------------
# Properties of transform on arbitrary finite input.
# --------------------------------------------------------------------------
@given(
    arrays(
        np.float32,
        st.tuples(st.integers(1, 20), st.just(32)),
        elements=st.floats(-10, 10, width=32),
    )
)
def test_transform_properties(fitted, X):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        A = fitted.transform(X)
    assert A.shape == (X.shape[0], 32)
    assert A.getnnz(axis=1).max() <= 3
    assert np.all(A.data > 0) and np.all(np.isfinite(A.data))
    assert fitted.inverse_transform(A).shape == X.shape


def test_skorch_checkpoint_callback_writes_files(planted, tmp_path):
    from skorch.callbacks import Checkpoint

    TopKSAETransformer(M=16, K=2, callbacks=[Checkpoint(dirname=str(tmp_path))], **FAST).fit(
        planted.X
    )
    assert {"params.pt", "optimizer.pt", "history.json"} <= {p.name for p in tmp_path.iterdir()}
