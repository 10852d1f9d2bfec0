"""Training engine of the Top-K SAE: a skorch ``NeuralNet`` fed by tensor slicing.

skorch runs the epochs, the callbacks (early stopping with best-weight
restoring, user callbacks) and the history. Data never goes through skorch's
per-sample ``Dataset``/collate: :class:`RowBlocks` reads the rows of a numpy
array or memmap in shuffled blocks (one block in memory at a time) and slices
them into batch tensors.
"""

from __future__ import annotations

import logging
import time

import numpy as np
import torch
from skorch import NeuralNet
from skorch.callbacks import Callback, EpochTimer, PassthroughScoring

from sklearn_hypothesaes._sae_module import TopKSAEModule
from sklearn_hypothesaes.out_of_core import gather_rows, release_pages

__all__ = ["ProgressCallback", "RowBlocks", "SAENet"]

logger = logging.getLogger("sklearn_hypothesaes.sae")


class RowBlocks:
    """Iterable of ``(batch, None)`` tensors over selected rows of an array.

    Parameters
    ----------
    X : ndarray or memmap of shape (n_samples, d)
        Never copied as a whole: rows are read ``block_rows`` at a time.
    indices : ndarray of int
        The rows to iterate over (e.g. the training part of a split).
    batch_size : int
    shuffle : bool
        Draw a fresh permutation of ``indices`` on every pass.
    rng : numpy.random.RandomState
    device : torch.device
    block_rows : int
        Rows gathered into memory at once (rounded up to whole batches).
    drop_last : bool
        Skip a final batch smaller than ``batch_size``. A final batch of a
        single row is always skipped: its nMSE divides by a zero variance.

    Notes
    -----
    Each block is copied once, in the (shuffled) order of its rows. For an
    in-memory ndarray the copy goes into one buffer reused by every block, so
    the yielded batches are views that the next block overwrites: a callback
    that keeps a batch past its step must copy it. A fresh 200 MB block per 64
    steps (and a second copy to shuffle it) page-faulted about 1,500 times per
    step.
    """

    def __init__(
        self, X, indices, batch_size, *, shuffle, rng, device, block_rows=32768, drop_last=False
    ):
        self.X = X
        self.indices = np.asarray(indices, dtype=np.int64)
        self.batch_size = int(batch_size)
        self.shuffle = shuffle
        self.rng = rng
        self.device = device
        n_batches = max(1, int(block_rows) // self.batch_size)
        self.block_rows = n_batches * self.batch_size
        self.drop_last = drop_last
        self._buffer: np.ndarray | None = None
        self._contiguous = bool(
            self.indices.size
            and self.indices[-1] - self.indices[0] == self.indices.size - 1
            and np.all(np.diff(self.indices) == 1)
        )

    def __len__(self) -> int:
        n = self.indices.size
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def _read(self, rows: np.ndarray) -> torch.Tensor:
        """The rows ``X[rows]``, in the order given, as a float32 tensor."""
        X = self.X
        if (
            type(X) is np.ndarray
            and X.dtype == np.float32
            and X.flags.c_contiguous
            and not (self._contiguous and not self.shuffle)
        ):
            buf = self._buffer
            if buf is None or buf.shape[0] < rows.size:
                buf = self._buffer = np.empty(
                    (min(self.block_rows, self.indices.size), X.shape[1]), X.dtype
                )
            out = buf[: rows.size]
            # mode='raise' would buffer ``out`` (a second block-sized copy); the
            # rows are valid indices of X by construction
            np.take(X, rows, axis=0, out=out, mode="clip")
            return torch.from_numpy(out)
        if self._contiguous and not self.shuffle:
            block = X[rows[0] : rows[-1] + 1]
        else:  # gather_rows reads a memmap in file order, returns the order given
            block = gather_rows(X, rows)
        block = np.ascontiguousarray(block, dtype=np.float32)
        release_pages(X)  # keep a memmap's pages out of the resident set
        return torch.from_numpy(block)

    def __iter__(self):
        order = self.rng.permutation(self.indices) if self.shuffle else self.indices
        n = order.size
        stop = n - n % self.batch_size if self.drop_last else n
        for start in range(0, stop, self.block_rows):
            rows = order[start : min(start + self.block_rows, stop)]
            block = self._read(rows).to(self.device)
            for b in range(0, len(rows), self.batch_size):
                batch = block[b : b + self.batch_size]
                if len(batch) >= 2:  # the nMSE of a single row is undefined
                    yield batch, None


class ProgressCallback(Callback):
    """Progress bar (tqdm) over epochs plus a log line per epoch."""

    def __init__(self, total: int, verbose: bool) -> None:
        self.total = total
        self.verbose = verbose

    def on_train_begin(self, net, **kwargs):
        self.bar_ = None
        if self.verbose:
            from tqdm.auto import tqdm

            self.bar_ = tqdm(total=self.total, desc="TopKSAE", unit="epoch", leave=False)

    def on_epoch_end(self, net, **kwargs):
        row = net.history[-1]
        info = {k: row[k] for k in ("train_loss", "valid_loss", "dead_fraction") if k in row}
        logger.debug("epoch %d %s", row["epoch"], info)
        if self.bar_ is not None:
            self.bar_.update(1)
            self.bar_.set_postfix({k: f"{v:.4f}" for k, v in info.items()})

    def on_train_end(self, net, **kwargs):
        if self.bar_ is not None:
            self.bar_.close()
            self.bar_ = None


class SAENet(NeuralNet):
    """skorch net for :class:`TopKSAEModule`.

    Data arrive as ready-made :class:`RowBlocks` iterables (``X`` of ``fit``
    is a ``(train, valid)`` pair); the loss is the module's own; each step
    removes the decoder-parallel gradient, clips the gradient norm and
    renormalises the decoder rows after the optimiser step.
    """

    def __init__(self, module, *, clip_grad=1.0, **kwargs):
        super().__init__(module, criterion=torch.nn.MSELoss, **kwargs)
        self.clip_grad = clip_grad

    @property
    def _default_callbacks(self):
        return [
            ("epoch_timer", EpochTimer()),
            ("train_loss", PassthroughScoring(name="train_loss", on_train=True)),
            ("valid_loss", PassthroughScoring(name="valid_loss")),
        ]

    def get_split_datasets(self, X, y=None, **fit_params):
        train, valid = X
        return train, valid

    def get_iterator(self, dataset, training=False):
        return dataset

    def get_loss(self, y_pred, y_true, X=None, training=False):
        return self.module_.loss(y_pred, training=training)

    def train_step_single(self, batch, **fit_params):
        self._set_training(True)
        Xi, _ = batch
        out = self.module_(Xi)
        loss = self.get_loss(out, None, X=Xi, training=True)
        loss.backward()
        module: TopKSAEModule = self.module_
        module.project_decoder_grad_()
        if self.clip_grad is not None:
            module.clip_grad_norm_(self.clip_grad)
        return {"loss": loss.detach(), "y_pred": out}

    def train_step(self, batch, **fit_params):
        self._zero_grad_optimizer(set_to_none=True)
        step = self.train_step_single(batch, **fit_params)
        self.notify(
            "on_grad_computed",
            named_parameters=list(self.get_all_learnable_params()),
            batch=batch,
            training=True,
        )
        self._step_optimizer(None)
        self.module_.normalize_decoder_()
        return step

    def validation_step(self, batch, **fit_params):
        self._set_training(False)
        Xi, _ = batch
        with torch.no_grad():
            out = self.module_(Xi)
            loss = self.get_loss(out, None, X=Xi, training=False)
        return {"loss": loss, "y_pred": out}

    def on_epoch_begin(self, net, dataset_train=None, dataset_valid=None, **kwargs):
        super().on_epoch_begin(net, dataset_train, dataset_valid, **kwargs)
        self._epoch_start = time.perf_counter()

    def on_epoch_end(self, net, dataset_train=None, dataset_valid=None, **kwargs):
        self.history.record("dead_fraction", self.module_.dead_fraction())
        super().on_epoch_end(net, dataset_train, dataset_valid, **kwargs)
