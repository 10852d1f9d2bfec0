"""Int8 forward pass of BERT sentence encoders on the CPU.

``TextEmbedder(precision="int8")`` runs the encoder's linear layers (fused
query/key/value, attention output, feed-forward in and out: nearly all of a
BERT encoder's arithmetic) as int8 x int8 -> int32 matrix products
(``torch._int_mm``), which CPUs with int8 dot-product instructions (AVX512-VNNI,
AVX-VNNI, AMX) run 3-6x faster than float32 ones.

* Weights are quantised once, symmetrically, per output channel (scale
  ``max|w| / 127``).
* Activations are quantised at run time, symmetrically, per token (scale
  ``max|x| / 127`` over the token's features). A token's quantisation never
  depends on the other texts in its batch, so an embedding does not depend on
  the batch it was computed in; per-token scales also keep the feed-forward
  output layer (whose GELU-fed input has a wide, token-dependent range)
  accurate, which one scale per batch does not (cosine 0.90 to float32 here).
* The token embeddings, attention (``scaled_dot_product_attention``), GELU,
  LayerNorm and mean pooling stay in float32.

Only standard sentence-transformers BERT models qualify (see
:func:`int8_ineligibility`): a ``Transformer`` module holding a post-LayerNorm
``BertModel`` with absolute positions and exact GELU, mean pooling, and an
optional ``Normalize``. all-MiniLM-L6-v2 (the default model) is one.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["Int8BertEncoder", "int8_ineligibility"]

_MODULE_TYPES = ("Transformer", "Pooling", "Normalize")
_OTHER_POOLING_MODES = (
    "pooling_mode_cls_token",
    "pooling_mode_max_tokens",
    "pooling_mode_mean_sqrt_len_tokens",
    "pooling_mode_weightedmean_tokens",
    "pooling_mode_lasttoken",
)


def _read_json(path: Path) -> Any:
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except (OSError, ValueError):
        return None


def int8_ineligibility(directory: str) -> str | None:
    """Why a local sentence-transformers model cannot run in int8, or ``None``.

    Parameters
    ----------
    directory : str
        A local sentence-transformers model directory.

    Returns
    -------
    reason : str or None
        ``None`` when the model is a plain BERT encoder with mean pooling (the
        int8 path reproduces it); otherwise a short reason.
    """
    root = Path(directory)
    modules = _read_json(root / "modules.json")
    if not isinstance(modules, list) or not modules:
        return "it has no readable modules.json"
    kinds = [str(m.get("type", "")).rsplit(".", 1)[-1] for m in modules if isinstance(m, dict)]
    if kinds not in (list(_MODULE_TYPES[:2]), list(_MODULE_TYPES)):
        return f"its modules are {kinds}, not Transformer, Pooling and an optional Normalize"
    if not isinstance(modules[0], dict) or modules[0].get("path", "") not in ("", "."):
        return "its Transformer module is not at the top of the directory"
    config = _read_json(root / "config.json")
    if not isinstance(config, dict) or config.get("model_type") != "bert":
        found = config.get("model_type") if isinstance(config, dict) else None
        return f"its transformer is {found!r}, not 'bert'"
    if config.get("hidden_act", "gelu") != "gelu":
        return f"its activation is {config.get('hidden_act')!r}, not 'gelu'"
    if config.get("position_embedding_type", "absolute") != "absolute":
        return "it does not use absolute position embeddings"
    if config.get("is_decoder") or config.get("add_cross_attention"):
        return "it is a decoder"
    st_config = _read_json(root / "sentence_bert_config.json") or {}
    if st_config.get("do_lower_case"):
        return "it lower-cases texts before its tokenizer"
    if st_config.get("config_args") or st_config.get("model_args"):
        return "its sentence_bert_config.json overrides the model's configuration"
    model_config = _read_json(root / "config_sentence_transformers.json") or {}
    if model_config.get("default_prompt_name"):
        return "it adds a default prompt to every text"
    pooling = _read_json(root / str(modules[1].get("path", "")) / "config.json")
    if not isinstance(pooling, dict):
        return "its pooling configuration cannot be read"
    if "pooling_mode" in pooling:  # the current key wins over the legacy flags
        mean = pooling["pooling_mode"] == "mean" or pooling["pooling_mode"] == ["mean"]
        others = False
    else:
        mean = bool(pooling.get("pooling_mode_mean_tokens"))
        others = any(pooling.get(k) for k in _OTHER_POOLING_MODES)
    if not mean or others:
        return "it does not pool by the plain mean of its tokens"
    return None


def _quantise_rows(x):
    """Symmetric int8 per row: ``x ~ q * scale[:, None]``."""
    import torch

    scale = torch.maximum(x.amax(1), x.amin(1).neg_()).clamp_(min=1e-12).div_(127.0)
    q = (x * scale.reciprocal()[:, None]).round_().to(torch.int8)
    return q, scale


class _Int8Linear:
    """``y = x @ W.T + b`` with int8 weights (per output channel) and activations (per row)."""

    def __init__(self, weight, bias) -> None:
        import torch

        w = weight.detach().to(torch.float32)
        self.scale = w.abs().amax(1).clamp(min=1e-12).div(127.0)
        q = (w / self.scale[:, None]).round().to(torch.int8)
        # (in, out) with standard strides: `.t().contiguous()` keeps the degenerate
        # strides of a one-column weight, which `_int_mm` misreads
        self.weight = torch.empty((q.shape[1], q.shape[0]), dtype=torch.int8).copy_(q.t())
        self.bias = bias.detach().to(torch.float32).clone()

    def __call__(self, x):
        import torch

        q, row_scale = _quantise_rows(x)
        out = torch._int_mm(q, self.weight).to(torch.float32)
        return out.mul_(self.scale).mul_(row_scale[:, None]).add_(self.bias)


class _FloatLinear:
    """``y = x @ W.T + b`` in float32 (the unquantised twin of :class:`_Int8Linear`)."""

    def __init__(self, weight, bias) -> None:
        import torch

        self.weight = weight.detach().to(torch.float32)
        self.bias = bias.detach().to(torch.float32)

    def __call__(self, x):
        import torch.nn.functional as F

        return F.linear(x, self.weight, self.bias)


class Int8BertEncoder:
    """Int8 encoder and mean pooling of a sentence-transformers BERT model.

    Parameters
    ----------
    model : sentence_transformers.SentenceTransformer
        A model for which :func:`int8_ineligibility` returned ``None``. Its
        weights are read once; the model itself is not changed.
    int8 : bool, default=True
        ``False`` runs the same forward pass with float32 linear layers, which
        reproduces the model's own float32 output (for checking).

    Notes
    -----
    Tokenising (:meth:`tokenize`, not thread-safe: call it from one thread) is
    separate from the forward pass (:meth:`forward`, thread-safe: it only reads
    the weights), so that several batches can run at once.
    """

    def __init__(self, model, *, int8: bool = True) -> None:
        import torch

        bert = model[0].auto_model
        config = bert.config
        if (
            type(bert).__name__ != "BertModel"
            or getattr(config, "hidden_act", None) != "gelu"
            or getattr(config, "position_embedding_type", "absolute") != "absolute"
            or getattr(config, "is_decoder", False)
        ):
            raise ValueError(
                f"The loaded model ({type(bert).__name__}, activation "
                f"{getattr(config, 'hidden_act', None)!r}) is not a plain BERT encoder with "
                "exact GELU and absolute positions; the int8 path cannot run it."
            )
        linear = _Int8Linear if int8 else _FloatLinear
        self.tokenizer = model.tokenizer
        self._tokenizer_lock = threading.Lock()
        self.max_length = min(
            int(getattr(model, "max_seq_length", None) or 512),
            int(config.max_position_embeddings),
        )
        self.pad_id = int(self.tokenizer.pad_token_id or 0)
        self.embeddings = _float32(bert.embeddings)
        self.heads = int(config.num_attention_heads)
        self.layers = []
        for layer in bert.encoder.layer:
            attn = layer.attention.self
            qkv_w = torch.cat([attn.query.weight, attn.key.weight, attn.value.weight])
            qkv_b = torch.cat([attn.query.bias, attn.key.bias, attn.value.bias])
            self.layers.append(
                (
                    linear(qkv_w, qkv_b),
                    linear(layer.attention.output.dense.weight, layer.attention.output.dense.bias),
                    _float32(layer.attention.output.LayerNorm),
                    linear(layer.intermediate.dense.weight, layer.intermediate.dense.bias),
                    linear(layer.output.dense.weight, layer.output.dense.bias),
                    _float32(layer.output.LayerNorm),
                )
            )

    def tokenize(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """Token ids of ``texts`` (truncated to the model's window, with special tokens).

        Returns
        -------
        ids : ndarray of int32
            All texts' ids, one after the other.
        offsets : ndarray of int64, shape (len(texts) + 1,)
            Text ``i`` has ``ids[offsets[i]:offsets[i + 1]]``.
        """
        with self._tokenizer_lock:  # a fast tokenizer cannot be used by two threads at once
            encoded = self.tokenizer(
                texts,
                truncation="longest_first",
                max_length=self.max_length,
                padding=False,
                return_token_type_ids=False,
                return_attention_mask=False,
            )["input_ids"]
        lengths = np.fromiter((len(row) for row in encoded), dtype=np.int64, count=len(encoded))
        offsets = np.zeros(len(encoded) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        ids = np.fromiter(
            (token for row in encoded for token in row), dtype=np.int32, count=int(offsets[-1])
        )
        return ids, offsets

    def pad(self, ids: np.ndarray, offsets: np.ndarray, rows: Sequence[int]) -> tuple:
        """``(input_ids, attention_mask, token_type_ids)`` of ``rows``, padded on the right.

        Every text is one segment, so its token types are all 0.
        """
        import torch

        rows = np.asarray(rows, dtype=np.int64)
        lengths = offsets[rows + 1] - offsets[rows]
        length = int(lengths.max())
        input_ids = np.full((len(rows), length), self.pad_id, dtype=np.int64)
        mask = np.zeros((len(rows), length), dtype=np.int64)
        for i, (row, size) in enumerate(zip(rows, lengths)):
            input_ids[i, :size] = ids[offsets[row] : offsets[row] + size]
            mask[i, :size] = 1
        token_types = np.zeros_like(input_ids)
        return torch.from_numpy(input_ids), torch.from_numpy(mask), torch.from_numpy(token_types)

    def forward(self, input_ids, attention_mask, token_type_ids):
        """Mean-pooled (not normalised) float32 embeddings, shape (n, d)."""
        import torch
        import torch.nn.functional as F

        with torch.inference_mode():
            x = self.embeddings(input_ids=input_ids, token_type_ids=token_type_ids)
            n, length, d = x.shape
            head_dim = d // self.heads
            mask = None if bool(attention_mask.all()) else attention_mask[:, None, None, :].bool()
            x = x.reshape(n * length, d)
            for qkv, out, norm1, ffn_in, ffn_out, norm2 in self.layers:
                q, k, v = qkv(x).view(n, length, 3, self.heads, head_dim).permute(2, 0, 3, 1, 4)
                context = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
                context = context.transpose(1, 2).reshape(n * length, d)
                x = norm1(out(context).add_(x))
                hidden = torch.ops.aten.gelu_(ffn_in(x))
                x = norm2(ffn_out(hidden).add_(x))
            weights = attention_mask.to(torch.float32).unsqueeze(-1)
            summed = (x.view(n, length, d) * weights).sum(1)
            return summed / weights.sum(1).clamp(min=1e-9)

    def __call__(self, texts: list[str]):
        """Mean-pooled (not normalised) float32 embeddings of ``texts``, shape (n, d)."""
        ids, offsets = self.tokenize(texts)
        return self.forward(*self.pad(ids, offsets, range(len(texts))))


def _float32(module):
    """``module`` itself when its parameters are float32, else a float32 copy."""
    import copy

    import torch

    if all(p.dtype == torch.float32 for p in module.parameters()):
        return module
    return copy.deepcopy(module).to(torch.float32)
