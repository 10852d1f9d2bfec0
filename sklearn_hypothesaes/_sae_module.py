"""Torch module and loss of the Top-K sparse autoencoder.

The forward pass never forms the dense ``(batch, M)`` activation matrix nor
its gradient. Only the encoder's pre-activations are computed densely, once and
outside autograd; the selected activations are then carried as flat
``(rows, cols, values)`` triplets:

- the encoder gradient is a sparse ``(M x B) @ (B x d)`` product, computed as
  an ``embedding_bag`` over the batch rows grouped by neuron
  (:class:`_GatherPreActivations`),
- the decoder is an ``embedding_bag`` over the selected decoder rows with the
  activations as per-sample weights (:class:`_DecodeFlat`); its ``W_dec``
  gradient is the same grouped ``embedding_bag`` as the encoder's, over the
  rows of the output gradient, and shares the encoder's grouping of the
  selections by neuron when the step selects nothing else.

Parameters are stored row-wise: ``W_enc`` is ``(M, d)`` (the estimator exposes
its transpose), ``W_dec`` is ``(M, d)`` with unit-norm rows.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "SAEOutput",
    "TopKSAEModule",
    "decode_flat",
    "group_by_neuron",
    "mean_baseline",
    "normalized_mse",
]


def group_by_neuron(cols: torch.Tensor, n_neurons: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Order that sorts ``cols`` and the start of each neuron's run in that order.

    ``embedding_bag(rows[order], X, offsets, per_sample_weights=w[order])``
    then sums ``w_j * X[rows_j]`` per neuron: the shape of both weight gradients.
    """
    order = torch.sort(cols).indices
    counts = torch.bincount(cols, minlength=n_neurons)
    offsets = torch.cumsum(counts, 0) - counts
    return order, offsets


def _grouped_sum(rows, weights, X, grouping):
    """Row ``j``: sum over the selections ``i`` of neuron ``j`` of ``weights_i * X[rows_i]``."""
    order, offsets = grouping
    return F.embedding_bag(rows[order], X, offsets, mode="sum", per_sample_weights=weights[order])


class _GatherPreActivations(torch.autograd.Function):
    """Selected entries of ``(x - b_pre) @ W_enc.T + b_enc``, as a function of the weights.

    ``selected`` holds those entries, computed without autograd (from the dense
    pre-activations, which are never part of the graph). The backward pass
    builds the gradients of ``W_enc``, ``b_enc`` and ``b_pre`` from the
    selected entries only: the ``W_enc`` gradient is a sparse
    ``(M x B) @ (B x d)`` product (an ``embedding_bag``) and the ``b_pre``
    gradient, summed over the batch, is ``-(grad b_enc) @ W_enc`` (an
    ``M``-vector times an ``(M, d)`` matrix) instead of a ``(B, d)`` matrix.
    """

    @staticmethod
    def forward(ctx, selected, x_centred, rows, cols, W_enc, b_enc, b_pre, grouping=None):
        ctx.save_for_backward(x_centred, rows, cols, W_enc)
        ctx.grouping = grouping
        return selected.clone()

    @staticmethod
    def backward(ctx, grad_vals):
        x_centred, rows, cols, W_enc = ctx.saved_tensors
        n_neurons = W_enc.shape[0]
        grad_b_enc = torch.zeros(n_neurons, dtype=grad_vals.dtype, device=grad_vals.device)
        grad_b_enc.index_add_(0, cols, grad_vals)
        grad_W_enc = grad_b_pre = None
        if ctx.needs_input_grad[4]:
            # Row j of the gradient is sum over the selections of neuron j of
            # grad * x_centred[row]: an embedding_bag over the batch rows with
            # the selections grouped by neuron (2x faster than a COO sparse.mm).
            grouping = ctx.grouping or group_by_neuron(cols, n_neurons)
            grad_W_enc = _grouped_sum(rows, grad_vals, x_centred, grouping)
        if ctx.needs_input_grad[6]:
            grad_b_pre = -(grad_b_enc @ W_enc)
        return None, None, None, None, grad_W_enc, grad_b_enc, grad_b_pre, None


def _values_grad(grad_out, W_dec, rows, cols, row_offsets):
    """``grad_out[rows_j] . W_dec[cols_j]`` for every selection ``j``.

    Uses the kernel behind ``embedding_bag``'s per-sample-weight gradient,
    which never materialises the gathered rows; builds without it take the
    gather in chunks of 1,024 selections.
    """
    if _PSW_BACKWARD is not None:
        return _PSW_BACKWARD(grad_out, W_dec, cols, row_offsets, rows, 0)  # 0: mode "sum"
    out = torch.empty(rows.shape[0], dtype=grad_out.dtype, device=grad_out.device)
    for s in range(0, rows.shape[0], 1024):
        r, c = rows[s : s + 1024], cols[s : s + 1024]
        out[s : s + 1024] = torch.linalg.vecdot(grad_out[r], W_dec[c])
    return out


_PSW_BACKWARD = getattr(torch.ops.aten, "_embedding_bag_per_sample_weights_backward", None)


class _DecodeFlat(torch.autograd.Function):
    """``out[r] = sum_j values_j * W_dec[cols_j]`` over the selections of row ``r``.

    PyTorch's own ``embedding_bag`` backward builds the ``W_dec`` gradient with
    a sort and index additions of its own (measured 8.2 ms per step against
    5.3 ms here, d=1536, M=1024, 8,192 selections); here it is the grouped
    ``embedding_bag`` of the encoder gradient, reusing its grouping when given.
    """

    @staticmethod
    def forward(ctx, values, W_dec, rows, cols, row_offsets, grouping=None):
        ctx.save_for_backward(values, W_dec, rows, cols, row_offsets)
        ctx.grouping = grouping
        return F.embedding_bag(cols, W_dec, row_offsets, mode="sum", per_sample_weights=values)

    @staticmethod
    def backward(ctx, grad_out):
        values, W_dec, rows, cols, row_offsets = ctx.saved_tensors
        grad_out = grad_out.contiguous()
        grad_values = grad_W_dec = None
        if ctx.needs_input_grad[0]:
            grad_values = _values_grad(grad_out, W_dec, rows, cols, row_offsets)
        if ctx.needs_input_grad[1]:
            grouping = ctx.grouping or group_by_neuron(cols, W_dec.shape[0])
            grad_W_dec = _grouped_sum(rows, values, grad_out, grouping)
        return grad_values, grad_W_dec, None, None, None, None


class SAEOutput(NamedTuple):
    """What one forward pass produces (flat activations, reconstructions)."""

    rows: torch.Tensor  # (nnz,) row of each selected activation, sorted
    cols: torch.Tensor  # (nnz,) neuron of each selected activation
    values: torch.Tensor  # (nnz,) activation values (ReLU applied)
    recon: torch.Tensor  # (B, d) reconstruction
    prefix_recons: list  # reconstructions of the Matryoshka prefixes (may be empty)
    multik_recon: torch.Tensor | None  # (B, d) or None
    aux_recon: torch.Tensor | None  # (B, d) AuxK reconstruction of the residual, or None
    x: torch.Tensor  # (B, d) the input batch


def normalized_mse(
    pred: torch.Tensor, target: torch.Tensor, baseline: torch.Tensor | None = None
) -> torch.Tensor:
    """MSE divided by the MSE of predicting the batch mean of ``target``.

    ``baseline`` (that divisor) may be passed when several terms share a target.
    """
    mse = F.mse_loss(pred, target)
    if baseline is None:
        baseline = mean_baseline(target)
    return mse / baseline


def mean_baseline(target: torch.Tensor) -> torch.Tensor:
    """MSE of predicting the column means of ``target`` (floored to stay positive)."""
    with torch.no_grad():  # the reference's formula; a strided var(dim=0) is ~4x slower
        base = F.mse_loss(target.mean(dim=0, keepdim=True).expand_as(target), target)
    return base.clamp_min(torch.finfo(target.dtype).tiny)


def decode_flat(rows, cols, values, W_dec, n_rows, bias=None, grouping=None):
    """``sum_j values_j * W_dec[cols_j]`` per row (rows sorted), plus ``bias``.

    ``grouping`` (from :func:`group_by_neuron`) may carry the sort of ``cols``
    when the caller has it already.
    """
    offsets = torch.searchsorted(rows, torch.arange(n_rows, device=rows.device))
    if torch.is_grad_enabled() and (values.requires_grad or W_dec.requires_grad):
        out = _DecodeFlat.apply(values, W_dec, rows, cols, offsets, grouping)
    else:
        out = F.embedding_bag(cols, W_dec, offsets, mode="sum", per_sample_weights=values)
    return out if bias is None else out + bias


class TopKSAEModule(nn.Module):
    """Top-K (or BatchTopK) sparse autoencoder with AuxK, multi-K and Matryoshka terms.

    Parameters
    ----------
    n_features : int
        Input dimension ``d``.
    M : int
        Number of neurons.
    K : int
        Active neurons per row (TopK) or on average per row (BatchTopK).
    aux_k : int
        Dead neurons used by the AuxK term (0 disables it).
    multi_k : int or None
        Neurons of the multi-K reconstruction, or None.
    dead_steps : int
        Training steps without firing after which a neuron counts as dead.
    prefixes : tuple of int or None
        Matryoshka prefix lengths (strictly increasing, last equal to ``M``).
    batch_topk : bool
        Select the ``K * B`` largest activations of the batch instead of ``K``
        per row during training; at inference, keep activations above the
        learned ``threshold`` buffer.
    aux_coef, multi_coef : float
        Weights of the AuxK and multi-K terms.
    threshold_lr : float
        EMA rate of the BatchTopK threshold update.
    """

    def __init__(
        self,
        n_features: int,
        M: int,
        K: int,
        *,
        aux_k: int = 0,
        multi_k: int | None = None,
        dead_steps: int = 256,
        prefixes: tuple[int, ...] | None = None,
        batch_topk: bool = False,
        aux_coef: float = 1 / 32,
        multi_coef: float = 0.0,
        threshold_lr: float = 1e-2,
    ) -> None:
        super().__init__()
        self.n_features = n_features
        self.M = M
        self.K = K
        self.aux_k = aux_k
        self.multi_k = multi_k
        self.dead_steps = dead_steps
        self.prefixes = tuple(prefixes) if prefixes else None
        self.batch_topk = batch_topk
        self.aux_coef = aux_coef
        self.multi_coef = multi_coef
        self.threshold_lr = threshold_lr
        self.W_enc = nn.Parameter(torch.zeros(M, n_features))
        self.b_enc = nn.Parameter(torch.zeros(M))
        self.W_dec = nn.Parameter(torch.zeros(M, n_features))
        self.b_pre = nn.Parameter(torch.zeros(n_features))
        self.register_buffer("threshold", torch.zeros(()))
        self.register_buffer("steps_since_active", torch.zeros(M, dtype=torch.long))
        self._workspace: torch.Tensor | None = None  # scratch for project_decoder_grad_
        self._scratch: dict[str, torch.Tensor] = {}  # per-step buffers of the training forward

    # ------------------------------------------------------------------ init
    @torch.no_grad()
    def initialize_(self, median: torch.Tensor, generator: torch.Generator) -> None:
        """Pre-bias at ``median``, random unit decoder rows, encoder = decoder."""
        self.b_pre.copy_(median)
        w = torch.randn(self.M, self.n_features, generator=generator)
        w /= w.norm(dim=1, keepdim=True).clamp_min(1e-12)
        self.W_dec.copy_(w)
        self.W_enc.copy_(w)
        self.b_enc.zero_()
        self.threshold.zero_()
        self.steps_since_active.zero_()

    @torch.no_grad()
    def normalize_decoder_(self) -> None:
        """Rescale every decoder row to unit norm."""
        self.W_dec.div_(self.W_dec.norm(dim=1, keepdim=True).clamp_min(1e-12))

    @torch.no_grad()
    def project_decoder_grad_(self) -> None:
        """Remove the gradient component parallel to each (unit) decoder row.

        The ``(M, d)`` product is written into a workspace kept between steps: a
        fresh allocation of that size every step was measured to cost about
        5 ms per step on CPU (the allocator returns it to the system, so every
        step page-faults it back in).
        """
        g = self.W_dec.grad
        if g is None:
            return
        work = self._workspace
        if work is None or (work.shape, work.dtype, work.device) != (g.shape, g.dtype, g.device):
            work = self._workspace = torch.empty_like(g)
        torch.mul(g, self.W_dec, out=work)
        dots = work.sum(dim=1, keepdim=True)
        g.addcmul_(self.W_dec, dots, value=-1.0)

    @torch.no_grad()
    def clip_grad_norm_(self, max_norm: float) -> float:
        """Scale all gradients so their global norm is at most ``max_norm``.

        Same result as ``torch.nn.utils.clip_grad_norm_`` but the gradients are
        only touched when they actually exceed the bound.
        """
        grads = [p.grad for p in self.parameters() if p.grad is not None]
        if not grads:
            return 0.0
        total = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))
        coef = max_norm / (float(total) + 1e-6)
        if coef < 1.0:
            torch._foreach_mul_(grads, coef)
        return float(total)

    # -------------------------------------------------------------- selection
    def _select(self, pre: torch.Tensor):
        """Flat (rows, cols, pre-activations) of the active neurons; rows sorted.

        The values come from ``topk`` itself rather than a second gather from
        ``pre`` (two ``(B, M)`` advanced-indexing passes a step).
        """
        n_rows = pre.shape[0]
        if self.batch_topk and self.training:
            k_total = min(self.K * n_rows, pre.numel())
            vals, flat = torch.topk(pre.reshape(-1), k_total, sorted=False)
            flat, perm = torch.sort(flat)
            return flat // self.M, flat % self.M, vals[perm]
        if self.batch_topk:
            rows, cols = torch.nonzero(pre > self.threshold.clamp_min(0.0), as_tuple=True)
            return rows, cols, pre[rows, cols]
        vals, idx = torch.topk(pre, self.K, dim=1, sorted=False)
        if not self.training:  # sorted columns give canonical CSR rows
            idx, perm = torch.sort(idx, dim=1)
            vals = torch.gather(vals, 1, perm)
        rows = torch.arange(n_rows, device=pre.device).repeat_interleave(self.K)
        return rows, idx.reshape(-1), vals.reshape(-1)

    def encode_sparse(self, x: torch.Tensor):
        """Inference: flat (rows, cols, values) with values > 0 only."""
        with torch.no_grad():
            pre = torch.addmm(self.b_enc, x - self.b_pre, self.W_enc.t())
            rows, cols, values = self._select(pre)
            keep = values > 0
            return rows[keep], cols[keep], values[keep]

    def _buffer(self, name: str, shape: tuple[int, ...], like: torch.Tensor) -> torch.Tensor:
        """A tensor kept between training steps (reallocated when its shape changes).

        The training forward writes its two largest no-grad intermediates into
        these: a fresh allocation of that size every step is returned to the
        system and page-faulted back in (measured as a 1.7x slower encoder
        matmul inside ``fit`` than in a loop that reused its memory).
        """
        buf = self._scratch.get(name)
        if (
            buf is None
            or buf.shape != shape
            or buf.dtype != like.dtype
            or buf.device != like.device
        ):
            buf = self._scratch[name] = torch.empty(shape, dtype=like.dtype, device=like.device)
        return buf

    # --------------------------------------------------------------- forward
    def forward(self, x: torch.Tensor) -> SAEOutput:
        n_rows = x.shape[0]
        with torch.no_grad():
            if self.training:
                x_centred = torch.sub(x, self.b_pre, out=self._buffer("x", tuple(x.shape), x))
                pre = torch.addmm(
                    self.b_enc,
                    x_centred,
                    self.W_enc.t(),
                    out=self._buffer("pre", (n_rows, self.M), x),
                )
            else:
                x_centred = x - self.b_pre
                pre = torch.addmm(self.b_enc, x_centred, self.W_enc.t())
            rows, cols, selected = self._select(pre)
            if self.training:
                self._track_firing_(selected, cols)
        # One autograd node carries the main, multi-K and AuxK selections so the
        # encoder's sparse backward runs once.
        parts = [(rows, cols, selected)]
        multik_idx = aux_idx = None
        if self.training and self.multi_k is not None and self.multi_coef != 0:
            with torch.no_grad():
                mk_vals, mk = torch.topk(pre, self.multi_k, dim=1, sorted=False)
                multik_idx = (
                    torch.arange(n_rows, device=x.device).repeat_interleave(self.multi_k),
                    mk.reshape(-1),
                    mk_vals.reshape(-1),
                )
            parts.append(multik_idx)
        if self.training and self.aux_k > 0:
            with torch.no_grad():
                dead = self.steps_since_active > self.dead_steps
            if bool(dead.any()):
                with torch.no_grad():
                    n_aux = min(self.aux_k, self.M)
                    masked = pre.masked_fill(~dead, -math.inf)
                    a_vals, a_idx = torch.topk(masked, n_aux, dim=1, sorted=False)
                    valid = torch.isfinite(a_vals).reshape(-1)
                    a_rows = torch.arange(n_rows, device=x.device).repeat_interleave(n_aux)
                    aux_idx = (a_rows[valid], a_idx.reshape(-1)[valid], a_vals.reshape(-1)[valid])
                parts.append(aux_idx)
        all_rows, all_cols, all_pre = (
            (torch.cat(t) for t in zip(*parts)) if len(parts) > 1 else parts[0]
        )
        # Both weight gradients group the main selections by neuron: sort once.
        grouping = None
        if self.training and torch.is_grad_enabled():
            with torch.no_grad():
                grouping = group_by_neuron(cols, self.M)
        gathered = _GatherPreActivations.apply(
            all_pre,
            x_centred,
            all_rows,
            all_cols,
            self.W_enc,
            self.b_enc,
            self.b_pre,
            grouping if len(parts) == 1 else None,
        )
        sizes = [p[0].numel() for p in parts]
        chunks = list(torch.split(F.relu(gathered), sizes))
        values = chunks.pop(0)
        recon = decode_flat(rows, cols, values, self.W_dec, n_rows, self.b_pre, grouping)

        prefix_recons = []
        if self.prefixes is not None and len(self.prefixes) > 1:
            for end in self.prefixes[:-1]:
                mask = (cols < end).to(values.dtype)
                prefix_recons.append(
                    decode_flat(rows, cols, values * mask, self.W_dec, n_rows, self.b_pre, grouping)
                )
        multik_recon = aux_recon = None
        if multik_idx is not None:
            mk_values = chunks.pop(0)
            multik_recon = decode_flat(*multik_idx[:2], mk_values, self.W_dec, n_rows, self.b_pre)
        if aux_idx is not None:
            aux_values = chunks.pop(0)
            aux_recon = decode_flat(*aux_idx[:2], aux_values, self.W_dec, n_rows)

        return SAEOutput(rows, cols, values, recon, prefix_recons, multik_recon, aux_recon, x)

    @torch.no_grad()
    def _track_firing_(self, selected: torch.Tensor, cols: torch.Tensor) -> None:
        """Update the steps-since-firing counters and the BatchTopK threshold."""
        positive = selected > 0
        self.steps_since_active += 1
        self.steps_since_active[cols[positive]] = 0
        if self.batch_topk and bool(positive.any()):
            smallest = selected[positive].min()
            self.threshold.mul_(1 - self.threshold_lr).add_(self.threshold_lr * smallest)

    def loss(self, out: SAEOutput, *, training: bool = True) -> torch.Tensor:
        """Training loss, or the reconstruction-only nMSE when ``training=False``."""
        base = mean_baseline(out.x)
        main = normalized_mse(out.recon, out.x, base)
        if not training:
            return main
        if out.prefix_recons:
            terms = [normalized_mse(r, out.x, base) for r in out.prefix_recons] + [main]
            main = torch.stack(terms).mean()
        if out.multik_recon is not None:
            main = main + self.multi_coef * normalized_mse(out.multik_recon, out.x, base)
        if out.aux_recon is not None:
            residual = out.x - out.recon.detach()
            main = main + self.aux_coef * normalized_mse(out.aux_recon, residual)
        return main

    def dead_fraction(self) -> float:
        """Fraction of neurons that have not fired for more than ``dead_steps`` steps."""
        return float((self.steps_since_active > self.dead_steps).float().mean())
