import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from sklearn_hypothesaes.datasets import make_planted_embeddings


def test_shapes_norms_and_codes():
    data = make_planted_embeddings(500, n_features=64, n_atoms=40, k=4, random_state=0)
    assert data.X.shape == (500, 64) and data.X.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(data.X, axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(data.atoms, axis=1), 1.0, rtol=1e-5)
    assert (data.codes.getnnz(axis=1) == 4).all()
    assert data.codes.data.min() > 0
    assert len(np.unique(data.causal_atoms)) == 10
    assert (data.causal_weights > 0).sum() == 5 and (data.causal_weights < 0).sum() == 5
    assert set(np.unique(data.y_binary)) == {0, 1}


def test_rows_are_the_planted_combination_plus_small_noise():
    data = make_planted_embeddings(300, n_features=128, n_atoms=30, k=3, random_state=1)
    clean = np.asarray(data.codes @ data.atoms)
    clean /= np.linalg.norm(clean, axis=1, keepdims=True)
    cos = (clean * data.X).sum(axis=1)
    assert cos.min() > 0.999  # 1% noise


def test_target_depends_on_causal_atoms_only():
    data = make_planted_embeddings(4000, n_features=32, n_atoms=50, k=5, random_state=2)
    codes = data.codes.toarray()
    corr = np.array([np.corrcoef(codes[:, j], data.y)[0, 1] for j in range(50)])
    causal = np.zeros(50, bool)
    causal[data.causal_atoms] = True
    assert np.abs(corr[causal]).min() > np.abs(corr[~causal]).max()
    signs = np.sign(corr[data.causal_atoms])
    np.testing.assert_array_equal(signs, np.sign(data.causal_weights))


def test_deterministic_and_seed_dependent():
    a = make_planted_embeddings(100, n_features=16, n_atoms=10, k=2, random_state=3)
    b = make_planted_embeddings(100, n_features=16, n_atoms=10, k=2, random_state=3)
    c = make_planted_embeddings(100, n_features=16, n_atoms=10, k=2, random_state=4)
    np.testing.assert_array_equal(a.X, b.X)
    np.testing.assert_array_equal(a.y, b.y)
    assert not np.array_equal(a.X, c.X)


def test_memmap_output_matches_in_memory(tmp_path):
    path = tmp_path / "X.npy"
    a = make_planted_embeddings(9000, n_features=8, n_atoms=12, k=2, random_state=5, out=path)
    b = make_planted_embeddings(9000, n_features=8, n_atoms=12, k=2, random_state=5)
    assert isinstance(a.X, np.memmap)
    np.testing.assert_array_equal(np.asarray(a.X), b.X)
    np.testing.assert_array_equal(np.load(path), b.X)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"k": 11, "n_atoms": 10}, "k=11"),
        ({"n_causal": 20, "n_atoms": 10}, "n_causal=20"),
        ({"n_samples": 0}, "n_samples"),
    ],
)
def test_bad_parameters(kwargs, match):
    with pytest.raises(ValueError, match=match):
        make_planted_embeddings(**{"n_features": 8, **kwargs})


@given(
    n=st.integers(1, 60),
    n_atoms=st.integers(1, 20),
    k=st.integers(1, 20),
    seed=st.integers(0, 10_000),
)
def test_every_row_has_exactly_k_atoms(n, n_atoms, k, seed):
    k = min(k, n_atoms)
    data = make_planted_embeddings(
        n, n_features=6, n_atoms=n_atoms, k=k, n_causal=min(2, n_atoms), random_state=seed
    )
    assert (data.codes.getnnz(axis=1) == k).all()
    assert np.isfinite(data.X).all() and np.isfinite(data.y).all()
