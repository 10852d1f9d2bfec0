"""Exact-N L1 selection: the penalty at which exactly ``n_select`` neurons are active.

Both losses solve the problem the reference selection solves on
``StandardScaler``-standardised activations, without ever standardising (which
would densify sparse activations):

- squared loss, ``min_b 1/(2n) ||y - ybar - Xs b||^2 + alpha ||b||_1`` (sklearn
  ``Lasso(alpha)`` on standardised ``Xs`` with an intercept). The Gram matrix of
  ``Xs`` is ``D^-1 (X'X - n mu mu') D^-1``, computed from the sparse ``X'X``; the
  LARS-Lasso path on it gives the exact breakpoints of the solution path, so the
  segment with exactly N active neurons is read off the path, not searched for.
- logistic loss, ``min_{b,c} sum_i logloss(y_i, c + Xs_i b) + alpha ||b||_1``
  (sklearn ``LogisticRegression(C=1/alpha, l1_ratio=1)`` on ``Xs``, unpenalised
  intercept). With ``w = b / s`` and the intercept absorbing the centring this is
  a weighted L1 problem on the raw activations: ``sum logloss(c + X w) + alpha
  sum_j s_j |w_j|``. It is solved along a warm-started path of penalties by
  proximal Newton on a small working set of neurons (screened with the strong
  rule), with a KKT check of every other neuron after each solve; the penalty is
  then bracketed and bisected until exactly N neurons are active.
"""

from __future__ import annotations

import logging
import math
import warnings
from dataclasses import dataclass

import numpy as np
from scipy.special import expit
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import lars_path_gram

from sklearn_hypothesaes._activations import ActivationMatrix, columns_matvec, columns_product

logger = logging.getLogger("sklearn_hypothesaes.selection")


@dataclass
class PathResult:
    """Outcome of one exact-N search.

    ``coef`` holds standardised coefficients for every neuron (zeros where
    inactive); ``exact`` is False when no penalty gives exactly N active
    neurons (then ``coef`` is the closest solution with more, or fewer).
    """

    alpha: float
    coef: np.ndarray
    n_iter: int
    exact: bool
    n_active: int


# -----------------------------------------------------------------------------
# Squared loss: LARS-Lasso on the standardised Gram matrix
# -----------------------------------------------------------------------------
def standardised_gram(design: ActivationMatrix, mean, std, usable) -> np.ndarray:
    """Gram matrix of the centred, scaled usable columns, from ``X'X``."""
    G = design.gram()[np.ix_(usable, usable)]
    m, s = mean[usable], std[usable]
    G -= design.n_samples * np.outer(m, m)
    G /= np.outer(s, s)
    return G


def lasso_exact_n_squared(
    gram: np.ndarray,
    xty: np.ndarray,
    n_samples: int,
    n_select: int,
) -> PathResult:
    """Exact-N Lasso from the LARS path on a standardised Gram matrix.

    ``xty`` is ``Xs' (y - ybar)`` over the usable columns. Returns coefficients
    over those columns and ``alpha`` (sklearn ``Lasso`` scale) at the middle of
    the path segment on which exactly ``n_select`` coefficients are non-zero.
    """
    n_usable = gram.shape[0]
    max_iter = min(n_select + 10, 8 * n_usable + 8)
    while True:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            alphas, _, coefs, n_iter = lars_path_gram(
                xty,
                gram,
                n_samples=n_samples,
                max_iter=max_iter,
                method="lasso",
                copy_Gram=True,
                return_n_iter=True,
            )
        found = _exact_segment(alphas, coefs, n_select)
        finished = n_iter < max_iter or alphas[-1] <= 0.0
        if found is not None or finished or max_iter >= 8 * n_usable + 8:
            break
        max_iter = min(2 * max_iter, 8 * n_usable + 8)

    if found is not None:
        k = found
        alpha = 0.5 * (alphas[k] + alphas[k + 1])
        coef = 0.5 * (coefs[:, k] + coefs[:, k + 1])  # the path is linear on a segment
        return PathResult(float(alpha), coef, int(n_iter), True, n_select)

    # No segment with exactly n_select: take the first one with more (ties
    # entering together), else the end of the path (fewer can ever be active).
    counts = [_segment_count(coefs, k) for k in range(len(alphas) - 1)]
    over = [k for k, c in enumerate(counts) if c > n_select]
    if over:
        k = over[0]
        alpha = 0.5 * (alphas[k] + alphas[k + 1])
        coef = 0.5 * (coefs[:, k] + coefs[:, k + 1])
    else:
        alpha, coef = float(alphas[-1]), coefs[:, -1]
    return PathResult(float(alpha), coef, int(n_iter), False, int(np.count_nonzero(coef)))


def _segment_count(coefs: np.ndarray, k: int) -> int:
    # Inside segment k the active set is the union of both ends' supports.
    return int(np.count_nonzero((coefs[:, k] != 0) | (coefs[:, k + 1] != 0)))


def _exact_segment(alphas: np.ndarray, coefs: np.ndarray, n_select: int) -> int | None:
    for k in range(len(alphas) - 1):
        if alphas[k] > alphas[k + 1] and _segment_count(coefs, k) == n_select:
            return k
    return None


# -----------------------------------------------------------------------------
# Logistic loss: warm-started proximal Newton path
# -----------------------------------------------------------------------------
def _soft(u: float, t: float) -> float:
    if u > t:
        return u - t
    if u < -t:
        return u + t
    return 0.0


def _logloss(eta: np.ndarray, y: np.ndarray) -> float:
    return float(np.sum(np.logaddexp(0.0, eta) - y * eta))


class LogisticL1Path:
    """Weighted-L1 logistic regression on raw activations, for many penalties.

    Solves ``min_{w,c} sum_i logloss(y_i, c + X_i w) + lam * sum_j s_j |w_j|``;
    ``b = w * s`` are the coefficients of the standardised problem.
    """

    def __init__(
        self,
        design: ActivationMatrix,
        y: np.ndarray,
        std: np.ndarray,
        usable: np.ndarray,
        *,
        tol: float,
        max_iter: int,
    ) -> None:
        self.design = design
        self.y = np.asarray(y, dtype=np.float64)
        self.std = std
        self.usable = usable  # boolean mask over all neurons
        self.tol = tol
        self.max_iter = max_iter
        self.n_newton = 0
        self.n_solves = 0
        ybar = self.y.mean()
        self.c0 = math.log(ybar / (1.0 - ybar))
        g0 = design.rmatvec(expit(np.full(design.n_samples, self.c0)) - self.y)
        self.lam_max = float(np.max(np.abs(g0[usable]) / std[usable])) if usable.any() else 0.0
        self.converged = True

    # One penalty -------------------------------------------------------------
    def solve(self, lam: float, w0: np.ndarray, c0: float, grad0: np.ndarray | None, lam0: float):
        """Solve at ``lam`` warm-started from the solution at ``lam0``.

        Returns ``(w, c, grad)`` where ``grad = X' (p - y)`` at the solution.
        """
        self.n_solves += 1
        w = w0.copy()
        c = c0
        s = self.std
        usable = self.usable
        # Sequential strong rule: keep neurons likely to be active at lam.
        if grad0 is not None:
            strong = usable & (np.abs(grad0) >= (2.0 * lam - lam0) * s)
        else:
            strong = np.zeros_like(usable)
        W = np.flatnonzero(strong | (w != 0))
        eta = c + (columns_matvec(self.design.columns(W), w[W]) if W.size else 0.0)
        eta = np.broadcast_to(eta, (self.design.n_samples,)).astype(np.float64)
        for _ in range(100):  # KKT rounds
            eta, c = self._newton(lam, W, w, c, eta)
            grad = self.design.rmatvec(expit(eta) - self.y)
            viol = np.abs(grad) - lam * s * (1.0 + self.tol)
            viol[~usable] = -np.inf
            viol[W] = -np.inf
            bad = np.flatnonzero(viol > 0)
            if bad.size == 0:
                return w, c, grad
            # Add the worst violators (bounded, so the working set stays small).
            add = bad[np.argsort(-viol[bad], kind="stable")[: max(10, W.size)]]
            W = np.union1d(W, add)
        self.converged = False
        return w, c, grad

    def _newton(self, lam, W, w, c, eta):
        """Proximal Newton on the working set ``W``; updates ``w`` in place."""
        y = self.y
        if W.size:
            XW = self.design.columns(W)
            pen = lam * self.std[W]
            scale = np.r_[self.std[W], 1.0]
        else:
            XW = None
            pen = np.zeros(0)
            scale = np.ones(1)
        for _ in range(self.max_iter):
            self.n_newton += 1
            p = expit(eta)
            r = p - y
            h = p * (1.0 - p)
            k = W.size
            H = np.empty((k + 1, k + 1))
            g = np.empty(k + 1)
            if k:
                H[:k, :k] = columns_product(XW, h)
                hx = np.asarray(XW.T @ h).ravel()
                H[:k, k] = hx
                H[k, :k] = hx
                g[:k] = np.asarray(XW.T @ r).ravel()
            H[k, k] = h.sum()
            g[k] = r.sum()
            v = np.r_[w[W], c]
            pen_full = np.r_[pen, 0.0]
            d = _cd_quadratic(H, g, v, pen_full, scale, 0.01 * self.tol)
            if not np.any(d):
                break
            dk = d[:k]
            delta_eta = d[k] + (columns_matvec(XW, dk) if k else 0.0)
            f0 = _logloss(eta, y) + float(np.sum(pen * np.abs(v[:k])))
            descent = float(g @ d) + float(np.sum(pen * (np.abs(v[:k] + dk) - np.abs(v[:k]))))
            t = 1.0
            while True:
                eta_new = eta + t * delta_eta
                vt = v + t * d
                f1 = _logloss(eta_new, y) + float(np.sum(pen * np.abs(vt[:k])))
                if f1 <= f0 + 0.25 * t * descent or t < 1e-12:
                    break
                t *= 0.5
            w[W] = vt[:k]
            c = float(vt[k])
            eta = eta_new
            if np.max(np.abs(t * d) * scale) <= self.tol:
                break
        return eta, c

    # Exact N -----------------------------------------------------------------
    def exact_n(self, n_select: int, *, refine_steps: int = 5) -> PathResult:
        """Find a penalty with exactly ``n_select`` active neurons, centred in its interval."""
        m = self.design.n_features
        w = np.zeros(m)
        state = {self.lam_max: (w, self.c0, None)}
        count = {self.lam_max: 0}

        def run(lam: float) -> int:
            # Warm start from the solved penalty nearest above (a sparser model).
            above = [mu for mu in state if mu >= lam]
            lam0 = min(above) if above else max(state)
            w0, c0, g0 = state[lam0]
            if g0 is None:
                g0 = self._grad(w0, c0)
            w_new, c_new, g_new = self.solve(lam, w0, c0, g0, lam0)
            state[lam] = (w_new, c_new, g_new)
            count[lam] = int(np.count_nonzero(w_new))
            logger.debug("logistic path: alpha=%.6g active=%d", lam, count[lam])
            return count[lam]

        lam_floor = self.lam_max * 1e-6
        hi, lo = self.lam_max, None  # count(hi) < n_select < count(lo)
        lam = self.lam_max
        exact = None
        # 1. Walk down the path until the count reaches n_select.
        while lam > lam_floor:
            w_hi, _, g_hi = state[hi]
            if g_hi is None:
                g_hi = self._grad(w_hi, state[hi][1])
            lam = self._next_penalty(hi, w_hi, g_hi, n_select - count[hi])
            cnt = run(lam)
            if cnt == n_select:
                exact = lam
                break
            if cnt < n_select:
                hi = lam
            else:
                lo = lam
                break
        # 2. Bisect (in log scale) between a sparser and a denser solution.
        if exact is None and lo is not None:
            for _ in range(60):
                if hi / lo < 1.0 + 1e-10:
                    break
                mid = math.sqrt(hi * lo)
                cnt = run(mid)
                if cnt == n_select:
                    exact = mid
                    break
                if cnt < n_select:
                    hi = mid
                else:
                    lo = mid
        if exact is None:
            return self._inexact(state, count, n_select)

        # 3. Centre the penalty in the interval where exactly n_select are active,
        #    so that the set does not hinge on the last digits of the solver.
        upper, lower = exact, exact
        for _ in range(refine_steps):
            mid = math.sqrt(hi * upper)
            if run(mid) == n_select:
                upper = mid
            elif count[mid] < n_select:
                hi = mid
            else:
                break
        if lo is None:
            probe = exact * 0.7
            while probe > lam_floor and run(probe) <= n_select:
                if count[probe] == n_select:
                    lower = probe
                probe *= 0.7
            lo = probe if probe > lam_floor and count.get(probe, 0) > n_select else None
        if lo is not None:
            for _ in range(refine_steps):
                mid = math.sqrt(lower * lo)
                if run(mid) == n_select:
                    lower = mid
                elif count[mid] > n_select:
                    lo = mid
                else:
                    break
        alpha = math.sqrt(upper * lower)
        if run(alpha) != n_select:
            alpha = exact
        w_final, _, _ = state[alpha]
        return PathResult(alpha, w_final * self.std, self.n_solves, True, n_select)

    def _grad(self, w: np.ndarray, c: float) -> np.ndarray:
        nz = np.flatnonzero(w)
        eta = c + (columns_matvec(self.design.columns(nz), w[nz]) if nz.size else 0.0)
        eta = np.broadcast_to(eta, (self.design.n_samples,))
        return self.design.rmatvec(expit(eta) - self.y)

    def _next_penalty(self, lam: float, w: np.ndarray, grad: np.ndarray, missing: int) -> float:
        """Next penalty down the path, aimed at where ``missing`` more neurons enter.

        At the current fit, neuron j would violate the KKT conditions below
        ``|grad_j| / s_j``; the ``missing``-th largest of these among inactive
        neurons estimates where the count reaches the target (an over-estimate,
        since gradients shrink as the fit improves). Steps are kept within
        [0.5, 0.95] of the current penalty.
        """
        inactive = self.usable & (w == 0)
        ratios = np.abs(grad[inactive]) / self.std[inactive]
        if ratios.size == 0:
            return lam * 0.5
        kth = min(missing, ratios.size) - 1
        target = float(-np.partition(-ratios, kth)[kth])
        return float(min(0.95 * lam, max(0.5 * lam, target)))

    def _inexact(self, state, count, n_select) -> PathResult:
        """No penalty gives exactly n_select: the first denser solution, else the densest."""
        lams = sorted(state, reverse=True)
        denser = [mu for mu in lams if count[mu] > n_select]
        lam = denser[0] if denser else min(lams, key=lambda mu: (-count[mu], mu))
        w = state[lam][0]
        return PathResult(float(lam), w * self.std, self.n_solves, False, count[lam])


def _cd_quadratic(H, g, v, pen, scale, tol) -> np.ndarray:
    """Coordinate descent on ``g'd + d'Hd/2 + sum pen_j |v_j + d_j|``; returns ``d``."""
    n = g.size
    d = np.zeros(n)
    Hd = np.zeros(n)
    diag = np.diag(H).tolist()
    gl = g.tolist()
    vl = v.tolist()
    penl = pen.tolist()
    scalel = scale.tolist()
    dl = [0.0] * n
    for _ in range(1000):
        max_change = 0.0
        Hdl = Hd.tolist()
        for j in range(n):
            a = diag[j]
            if a <= 0.0:
                continue
            cur = vl[j] + dl[j]
            u = cur - (gl[j] + Hdl[j]) / a
            new = _soft(u, penl[j] / a)
            delta = new - cur
            if delta != 0.0:
                dl[j] += delta
                Hd += delta * H[:, j]
                Hdl = Hd.tolist()
                change = abs(delta) * scalel[j]
                if change > max_change:
                    max_change = change
        if max_change <= tol:
            break
    d[:] = dl
    return d
