"""Data loading and checking for the ``hypothesaes`` command.

Everything here raises :class:`DataError` with a message meant for a person at a
terminal (what is wrong and what to do); the command prints it without a
traceback and exits with status 2.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from sklearn_hypothesaes._cli_errors import DataError

__all__ = ["DataError", "LoadedData", "load_table", "prepare_data", "file_sha256"]

FORMATS = ("csv", "tsv", "jsonl", "json", "parquet")
_SUFFIX_FORMAT = {
    ".csv": "csv",
    ".tsv": "tsv",
    ".tab": "tsv",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "json",
    ".parquet": "parquet",
    ".pq": "parquet",
}
MAX_CLASSES = 50


def file_sha256(path: str | Path) -> str:
    """SHA-256 of a file's bytes (hex), read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _detect_format(path: Path, fmt: str | None) -> str:
    if fmt is not None:
        return fmt
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] in (".gz", ".bz2", ".xz", ".zst", ".zip"):
        suffixes = suffixes[:-1]
    if suffixes and suffixes[-1] in _SUFFIX_FORMAT:
        return _SUFFIX_FORMAT[suffixes[-1]]
    raise DataError(
        f"Cannot tell the format of {path.name!r} from its name; use a .csv, .tsv, .jsonl, "
        ".json or .parquet file, or pass --format."
    )


def load_table(path: str | Path, *, fmt: str | None = None) -> pd.DataFrame:
    """Read a CSV/TSV, JSON lines, JSON or Parquet file into a DataFrame.

    Raises
    ------
    DataError
        The file is missing, unreadable, of an unknown format, or has no rows.
    """
    path = Path(path)
    if not path.exists():
        raise DataError(f"No such file: {path}.")
    if path.is_dir():
        raise DataError(f"{path} is a directory; pass a data file.")
    fmt = _detect_format(path, fmt)
    try:
        if fmt == "csv":
            df = pd.read_csv(path)
        elif fmt == "tsv":
            df = pd.read_csv(path, sep="\t")
        elif fmt == "jsonl":
            df = pd.read_json(path, lines=True)
        elif fmt == "json":
            df = pd.read_json(path)
        else:
            df = pd.read_parquet(path)
    except pd.errors.EmptyDataError as exc:
        raise DataError(f"{path} is empty: it has no header and no rows.") from exc
    except ImportError as exc:
        raise DataError(f"Reading {fmt} files needs an extra package: {exc}") from exc
    except (ValueError, OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DataError(
            f"Could not read {path} as {fmt.upper()}: {first}. Check the file and its "
            "format (--format)."
        ) from exc
    except Exception as exc:  # pyarrow and parsers raise their own types
        raise DataError(f"Could not read {path} as {fmt.upper()}: {exc}") from exc
    if not isinstance(df, pd.DataFrame):  # pragma: no cover - read_json of a scalar
        raise DataError(f"{path} does not hold a table of records.")
    if len(df) == 0:
        raise DataError(f"{path} has no rows.")
    return df


@dataclass
class LoadedData:
    """Texts (or pairs) and target ready for the generator, with what was done to them."""

    texts: list[str] | None
    pairs: list[tuple[str, str]] | None
    y: np.ndarray
    task: str
    classes: list | None
    n_rows_file: int
    n_dropped: int
    notes: list[str] = field(default_factory=list)

    @property
    def X(self):
        return self.pairs if self.pairs is not None else self.texts

    @property
    def n(self) -> int:
        return len(self.y)


def _column(df: pd.DataFrame, name: str, role: str) -> pd.Series:
    if name not in df.columns:
        cols = ", ".join(map(repr, list(df.columns)[:20]))
        raise DataError(
            f"Column {name!r} ({role}) is not in the data. Available columns: {cols}"
            f"{' ...' if df.shape[1] > 20 else ''}."
        )
    return df[name]


def infer_task(y: pd.Series, task: str) -> tuple[np.ndarray, str, list | None, list[str]]:
    """Decide regression / binary / multiclass and convert the target.

    Numbers with more than two distinct values are a regression target unless
    ``task="multiclass"``; two distinct values are binary; strings (or other
    labels) with 3 to ``MAX_CLASSES`` distinct values are multiclass.
    """
    notes: list[str] = []
    values = y.to_numpy()
    numeric = pd.api.types.is_numeric_dtype(y) and not pd.api.types.is_bool_dtype(y)
    uniq = pd.unique(y)
    n_unique = len(uniq)
    if n_unique < 2:
        raise DataError(
            f"The target has a single value ({uniq[0]!r}) in every row; hypotheses need a "
            "target that varies."
        )
    if task == "auto":
        if n_unique == 2:
            task = "binary"
        elif numeric:
            task = "regression"
        elif n_unique <= MAX_CLASSES:
            task = "multiclass"
        else:
            raise DataError(
                f"The target is neither binary, multiclass nor numeric: it holds {n_unique} "
                f"distinct non-numeric values (e.g. {list(uniq[:3])!r}). Use a numeric column, "
                f"a label column with at most {MAX_CLASSES} classes, or convert it first."
            )
    if task == "regression":
        if not numeric:
            raise DataError(
                "--task regression needs a numeric target; the target column holds values "
                f"like {uniq[0]!r}."
            )
        return values.astype(np.float64), task, None, notes
    classes = sorted(uniq.tolist(), key=lambda v: (str(type(v)), v))
    if task == "binary":
        if n_unique != 2:
            raise DataError(
                f"--task binary needs exactly 2 distinct target values, found {n_unique}."
            )
        notes.append(f"binary target: {classes[1]!r} is the positive class (1), {classes[0]!r} 0")
        return (values == classes[1]).astype(np.int64), task, classes, notes
    if n_unique > MAX_CLASSES:
        raise DataError(
            f"--task multiclass with {n_unique} distinct values: at most {MAX_CLASSES} classes "
            "are supported; use --task regression for a numeric target."
        )
    if numeric and not np.all(np.equal(np.mod(values.astype(np.float64), 1), 0)):
        raise DataError("--task multiclass needs class labels, not fractional numbers.")
    return values, task, classes, notes


def prepare_data(
    df: pd.DataFrame,
    *,
    text_col: str,
    target_col: str,
    text_b_col: str | None = None,
    task: str = "auto",
    max_rows: int | None = None,
    seed: int = 0,
) -> LoadedData:
    """Pick and check the text and target columns; drop rows with missing values."""
    n_file = len(df)
    text = _column(df, text_col, "--text-col")
    text_b = _column(df, text_b_col, "--text-b-col") if text_b_col else None
    target = _column(df, target_col, "--target-col")
    if target_col in (text_col, text_b_col):
        raise DataError("--target-col must differ from the text column(s).")
    frame = pd.DataFrame({"a": text, "y": target})
    if text_b is not None:
        frame["b"] = text_b
    notes: list[str] = []
    text_cols = ["a", "b"] if text_b is not None else ["a"]
    for c in text_cols:
        col = frame[c]
        non_str = col.notna() & ~col.map(lambda v: isinstance(v, str))
        if non_str.any():
            rows = np.flatnonzero(non_str.to_numpy())[:10].tolist()
            name = text_col if c == "a" else text_b_col
            raise DataError(
                f"Column {name!r} must hold text, but row(s) {rows} hold "
                f"{type(col[non_str].iloc[0]).__name__} values (e.g. {col[non_str].iloc[0]!r})."
            )
    missing = frame["y"].isna()
    for c in text_cols:
        missing |= frame[c].isna() | frame[c].map(lambda v: isinstance(v, str) and not v.strip())
    n_dropped = int(missing.sum())
    if n_dropped:
        notes.append(f"dropped {n_dropped} row(s) with a missing or empty text or target")
        frame = frame[~missing]
    if len(frame) == 0:
        raise DataError(
            f"No usable rows: all {n_file} row(s) have a missing or empty text or target."
        )
    if max_rows is not None and len(frame) > max_rows:
        frame = frame.sample(n=max_rows, random_state=seed).sort_index()
        notes.append(f"used a random sample of {max_rows} rows (--max-rows)")
    if len(frame) < 20:
        raise DataError(
            f"Only {len(frame)} usable row(s); at least 20 are needed to train and validate "
            "(a few thousand are better)."
        )
    y, task, classes, task_notes = infer_task(frame["y"], task)
    notes.extend(task_notes)
    texts = frame["a"].tolist()
    pairs = None
    if text_b is not None:
        pairs = list(zip(texts, frame["b"].tolist()))
        if task == "multiclass":
            raise DataError(
                "Pairwise data (--text-b-col) needs a binary target (which text wins) or a "
                "numeric one."
            )
        texts = None
    return LoadedData(
        texts=texts,
        pairs=pairs,
        y=y,
        task=task,
        classes=classes,
        n_rows_file=n_file,
        n_dropped=n_dropped,
        notes=notes,
    )
