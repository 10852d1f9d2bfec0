"""Exact-N L1 selection: the penalty at which exactly ``n_select`` neurons are active.

Both losses solve the problem the reference selection solves on
``StandardScaler``-standardised activations, without ever standardising (which
would densify sparse activations):

- squared loss, ``min_b 1/(2n) ||y - ybar - Xs b||^2 + alpha ||b||_1`` (sklearn
  ``Lasso(alpha)`` on standardised ``Xs`` with an intercept). LARS with the
  Lasso modification follows the exact breakpoints of the solution path, so the
  segment with exactly N active neurons is read off the path, not searched
  for. It needs only the Gram columns of neurons that enter the path,
  ``Xs'Xs[:, j] = (X'X[:, j] - n mu mu_j) / (s s_j)``, computed from the sparse
  ``X`` one column at a time.
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
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from scipy.special import expit

from sklearn_hypothesaes._activations import ActivationMatrix, columns_matvec

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
# Squared loss: LARS-Lasso on the standardised Gram matrix, one column at a time
# -----------------------------------------------------------------------------
class StandardisedGram:
    """Columns of the Gram matrix of the standardised activations, on demand.

    ``Xs' Xs[:, j] = (X' X[:, j] - n mu mu_j) / (s s_j)``. LARS only ever needs
    the columns of neurons that enter the path, so the full (n_neurons x
    n_neurons) Gram matrix is never formed; columns are cached across targets.
    """

    def __init__(self, design: ActivationMatrix, mean: np.ndarray, std: np.ndarray) -> None:
        self.design = design
        self.mean = mean
        self.std = std
        self._cache: dict[int, np.ndarray] = {}

    def column(self, j: int) -> np.ndarray:
        col = self._cache.get(j)
        if col is None:
            raw = self.design.gram_columns(np.array([j]))[:, 0]
            n = self.design.n_samples
            with np.errstate(divide="ignore", invalid="ignore"):
                col = (raw - n * self.mean * self.mean[j]) / (self.std * self.std[j])
            col[self.std == 0] = 0.0
            self._cache[j] = col
        return col


def lasso_exact_n_squared(
    gram: StandardisedGram,
    xty: np.ndarray,
    n_samples: int,
    n_select: int,
    eligible: np.ndarray,
) -> PathResult:
    """Exact-N Lasso by LARS with the Lasso modification (Efron et al., 2004).

    ``xty = Xs' (y - ybar)`` for every neuron (zero where not ``eligible``).
    Follows the piecewise-linear solution path from ``alpha_max`` down, one
    breakpoint at a time, and stops on the first segment with exactly
    ``n_select`` non-zero coefficients. Returns the standardised coefficients
    and ``alpha`` (sklearn ``Lasso`` scale, ``max |corr| / n``) at the middle of
    that segment, where the path is linear so the coefficients are exact.
    """
    m = xty.size
    c = np.where(eligible, xty, 0.0).astype(np.float64)
    beta = np.zeros(m)
    excluded = ~eligible
    abs_c = np.abs(c)
    C = float(abs_c.max()) if m else 0.0
    if C <= 0.0:
        return PathResult(0.0, beta, 0, False, 0)
    active: list[int] = [int(np.argmax(abs_c))]
    signs: list[float] = [float(np.sign(c[active[0]]))]
    in_active = np.zeros(m, dtype=bool)
    in_active[active[0]] = True
    eps = 1e-12 * C
    n_iter = 0
    max_steps = 8 * n_select + 50
    while n_iter < max_steps:
        n_iter += 1
        A = np.asarray(active)
        cols = np.column_stack([gram.column(j) for j in active])  # (m, k)
        G_AA = cols[A]
        s_A = np.asarray(signs)
        try:
            d = _solve_spd(G_AA, s_A)
        except np.linalg.LinAlgError:
            # The last neuron to enter is (numerically) a combination of the
            # others: it can never be active on its own; leave it out.
            j = active.pop()
            signs.pop()
            in_active[j] = False
            excluded[j] = True
            continue
        a = cols @ d  # rate at which each correlation falls per unit step
        # Step to the next breakpoint: a neuron's |corr| reaches the active
        # level, or (Lasso) an active coefficient reaches zero.
        candidates = ~in_active & ~excluded
        gamma_in, enter = np.inf, np.empty(0, dtype=np.intp)
        if candidates.any():
            idx = np.flatnonzero(candidates)
            with np.errstate(divide="ignore", invalid="ignore"):
                g1 = (C - c[idx]) / (1.0 - a[idx])
                g2 = (C + c[idx]) / (1.0 + a[idx])
            g1[~(g1 > eps)] = np.inf
            g2[~(g2 > eps)] = np.inf
            g = np.minimum(g1, g2)
            gamma_in = float(g.min()) if g.size else np.inf
            if np.isfinite(gamma_in):
                enter = idx[g <= gamma_in * (1.0 + 1e-9)]
        with np.errstate(divide="ignore", invalid="ignore"):
            to_zero = -beta[A] / d
        to_zero[~(to_zero > eps)] = np.inf
        gamma_out = float(to_zero.min())
        gamma = min(gamma_in, gamma_out, C)

        if len(active) >= n_select:
            # This segment runs from alpha = C / n down to (C - gamma) / n.
            half = 0.5 * gamma
            coef = beta.copy()
            coef[A] += half * d
            alpha = (C - half) / n_samples
            return PathResult(float(alpha), coef, n_iter, len(active) == n_select, len(active))

        beta[A] += gamma * d
        c -= gamma * a
        C -= gamma
        if C <= eps:
            break
        if gamma_out <= gamma_in and gamma_out < np.inf:
            k = int(np.argmin(to_zero))
            j = active.pop(k)
            signs.pop(k)
            in_active[j] = False
            beta[j] = 0.0
        elif enter.size:
            for j in enter.tolist():
                active.append(j)
                signs.append(float(np.sign(c[j])) or 1.0)
                in_active[j] = True
        else:
            break  # nothing can enter: the path ends with fewer than n_select
    return PathResult(float(max(C, 0.0) / n_samples), beta, n_iter, False, len(active))


def _solve_spd(G: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Solve ``G x = b`` for a positive definite ``G``; LinAlgError if (near) singular."""
    L = np.linalg.cholesky(G)
    if np.min(np.diag(L)) ** 2 < 1e-10 * np.max(np.diag(G)):
        raise np.linalg.LinAlgError("singular")
    z = np.linalg.solve(L, b)
    return np.linalg.solve(L.T, z)


# -----------------------------------------------------------------------------
# Logistic loss: warm-started proximal Newton path
# -----------------------------------------------------------------------------
def _soft(u: float, t: float) -> float:
    if u > t:
        return u - t
    if u < -t:
        return u + t
    return 0.0


def _loss_and_prob(eta: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray]:
    """``sum(log(1 + exp(eta)) - y eta)`` and ``sigmoid(eta)``, sharing one exp."""
    e = np.exp(-np.abs(eta))
    loss = float(np.sum(np.maximum(eta, 0.0)) + np.sum(np.log1p(e)) - y @ eta)
    inv = 1.0 / (1.0 + e)
    p = np.where(eta >= 0, inv, e * inv)
    return loss, p


class _WorkingColumns:
    """The working-set columns with the layouts the Newton steps need."""

    def __init__(self, cols) -> None:
        self.sparse = sp.issparse(cols)
        if self.sparse:
            self.csr = sp.csr_matrix(cols)
            self.touched = np.flatnonzero(np.diff(self.csr.indptr))
        else:
            self.dense = cols
            self.touched = np.flatnonzero(np.any(cols != 0, axis=1))

    def restrict_rows(self) -> None:
        """Keep only the touched rows (in their order)."""
        if self.sparse:
            self.csr = self.csr[self.touched]
            self.t_csr = sp.csr_matrix(self.csr.T)
            self._rows = np.repeat(np.arange(self.csr.shape[0]), np.diff(self.csr.indptr))
        else:
            self.dense = self.dense[self.touched]

    def weighted_gram(self, h: np.ndarray) -> np.ndarray:
        """``cols' diag(h) cols``."""
        if self.sparse:
            scaled = sp.csr_matrix(
                (self.csr.data * h[self._rows], self.csr.indices, self.csr.indptr),
                shape=self.csr.shape,
            )
            return (self.t_csr @ scaled).toarray()
        return self.dense.T @ (self.dense * h[:, None])

    def rmatvec(self, v: np.ndarray) -> np.ndarray:
        if self.sparse:
            return self.t_csr @ v
        return self.dense.T @ v

    def matvec(self, w: np.ndarray) -> np.ndarray:
        if self.sparse:
            return self.csr @ w
        return self.dense @ w


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
        # Working set: the current support plus the neurons the sequential
        # strong rule keeps (|grad_j| / s_j >= 2 lam - lam0), at most as many
        # as the support (and 10) so that a long step cannot admit every neuron;
        # the KKT check below adds whatever this misses.
        active = np.flatnonzero(w)
        W = active
        if grad0 is not None:
            ratio = np.zeros_like(w)
            ratio[usable] = np.abs(grad0[usable]) / s[usable]
            ratio[active] = 0.0
            cand = np.flatnonzero(ratio >= max(2.0 * lam - lam0, 0.0) + 0.0)
            cand = cand[ratio[cand] > 0]
            cap = max(10, active.size)
            if cand.size > cap:
                cand = cand[np.argsort(-ratio[cand], kind="stable")[:cap]]
            W = np.union1d(active, cand)
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
        """Proximal Newton on the working set ``W``; updates ``w`` in place.

        Only rows where some working-set neuron is non-zero ("touched" rows)
        are handled row by row: on every other row the linear predictor is the
        intercept, so those rows enter the loss, gradient and Hessian of the
        intercept through three scalars.
        """
        k = W.size
        if k:
            cols = _WorkingColumns(self.design.columns(W))
            rows = cols.touched
            cols.restrict_rows()
        else:
            cols = None
            rows = np.zeros(0, dtype=np.intp)
        y_t = self.y[rows]
        eta_t = eta[rows]
        n_rest = self.design.n_samples - rows.size
        y_rest = float(self.y.sum() - y_t.sum())
        pen = lam * self.std[W]
        scale = self.std[W]
        v = np.r_[w[W], c]

        def objective(eta_rows, c_val, coef):
            rest = n_rest * float(np.logaddexp(0.0, c_val)) - c_val * y_rest
            loss, prob = _loss_and_prob(eta_rows, y_t)
            return loss + rest + float(np.sum(pen * np.abs(coef))), prob

        f0, p = objective(eta_t, v[k], v[:k])
        for _ in range(self.max_iter):
            self.n_newton += 1
            r = p - y_t
            h = p * (1.0 - p)
            p_rest = float(expit(v[k]))
            h_cc = h.sum() + n_rest * p_rest * (1.0 - p_rest)
            g_c = r.sum() + n_rest * p_rest - y_rest
            d = np.zeros(k + 1)
            g = np.r_[np.zeros(k), g_c]
            if k:
                # Minimise the quadratic model over the (free) intercept step in
                # closed form: what remains for the neurons is the Schur
                # complement, i.e. the model with h-weighted centred columns.
                # CD on it is well conditioned even when activations have a
                # large mean, and the intercept never enters the CD loop.
                hx = cols.rmatvec(h)
                g[:k] = cols.rmatvec(r)
                mu = hx / h_cc
                H_s = cols.weighted_gram(h) - np.outer(hx, mu)
                g_s = g[:k] - mu * g_c
                d[:k] = _cd_quadratic(H_s, g_s, v[:k], pen, scale, 0.01 * self.tol)
                d[k] = -g_c / h_cc - float(mu @ d[:k])
            else:
                d[k] = -g_c / h_cc
            if not np.any(d):
                break
            dk = d[:k]
            delta_eta = d[k] + (cols.matvec(dk) if k else 0.0)
            # Step size in standardised units: neuron steps times their scale, and
            # the step of the intercept at the (h-weighted) mean activation.
            step = max(float(np.max(np.abs(dk) * scale, initial=0.0)), abs(g_c) / h_cc)
            if step <= self.tol:
                # Converged: take the last tiny step; a line search on it would
                # only compare rounding errors.
                v = v + d
                eta_t = eta_t + delta_eta
                break
            descent = float(g @ d) + float(np.sum(pen * (np.abs(v[:k] + dk) - np.abs(v[:k]))))
            slack = 1e-12 * abs(f0)
            t = 1.0
            while True:
                eta_new = eta_t + t * delta_eta
                vt = v + t * d
                f1, p_new = objective(eta_new, vt[k], vt[:k])
                if f1 <= f0 + 0.25 * t * descent + slack or t < 1e-10:
                    break
                t *= 0.5
            v = vt
            f0, p = f1, p_new
            eta_t = eta_new
            if t * step <= self.tol:
                break
        w[W] = v[:k]
        c = float(v[k])
        eta = np.full(self.design.n_samples, c)
        eta[rows] = eta_t
        return eta, c

    # Exact N -----------------------------------------------------------------
    def exact_n(self, n_select: int, *, refine_steps: int = 2) -> PathResult:
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
        [0.25, 0.95] of the current penalty.
        """
        inactive = self.usable & (w == 0)
        ratios = np.abs(grad[inactive]) / self.std[inactive]
        if ratios.size == 0:
            return lam * 0.5
        kth = min(missing, ratios.size) - 1
        target = float(-np.partition(-ratios, kth)[kth])
        return float(min(0.95 * lam, max(0.25 * lam, target)))

    def _inexact(self, state, count, n_select) -> PathResult:
        """No penalty gives exactly n_select: the first denser solution, else the densest."""
        lams = sorted(state, reverse=True)
        denser = [mu for mu in lams if count[mu] > n_select]
        lam = denser[0] if denser else min(lams, key=lambda mu: (-count[mu], mu))
        w = state[lam][0]
        return PathResult(float(lam), w * self.std, self.n_solves, False, count[lam])


def _cd_quadratic(H, g, v, pen, scale, tol, max_sweeps: int = 200) -> np.ndarray:
    """Coordinate descent on ``g'd + d'Hd/2 + sum pen_j |v_j + d_j|``; returns ``d``.

    Stops when a sweep changes no coordinate by more than ``tol`` (in units of
    ``scale``) or by more than 1e-3 of the largest step so far: the Newton
    iterations around it only need an inexact step.
    """
    n = g.size
    Hd = np.zeros(n)
    diag = np.diag(H).tolist()
    gl = g.tolist()
    vl = v.tolist()
    penl = pen.tolist()
    scalel = scale.tolist()
    dl = [0.0] * n
    largest = 0.0
    for _ in range(max_sweeps):
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
                step = abs(dl[j]) * scalel[j]
                if step > largest:
                    largest = step
        if max_change <= max(tol, 1e-3 * largest):
            break
    return np.asarray(dl)
