"""Crash-safe on-disk cache: one SQLite database (WAL mode) per cache directory.

Embeddings, LLM annotations and interpretations are stored here so that a
second run, a grid search or a run resumed after a crash redoes no finished
work. Writes are committed in small batches by the caller as results arrive;
a killed process loses only what was in flight. A database that cannot be read
is never deleted: opening it raises :class:`~sklearn_hypothesaes.exceptions.CacheError`
(or, with ``on_corrupt="move"``, moves it aside and says so).

Keys are built with :func:`make_key` from every field that changes an answer
(model, endpoint, prompt template and version, request parameters, the full
text, ...), hashed with SHA-256. Values are SQLite scalars (``bytes``, ``str``,
``int``, ``float``); callers encode richer values themselves.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sqlite3
import sys
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from sklearn_hypothesaes.exceptions import CacheError

__all__ = ["SQLiteCache", "default_cache_dir", "make_key", "open_cache"]

logger = logging.getLogger(__name__)

DB_NAME = "cache.sqlite3"
SCHEMA_VERSION = 1
_IN_CHUNK = 900  # stays under SQLite's default limit of bound parameters

Value = bytes | str | int | float | None


def default_cache_dir() -> Path:
    """Return the cache directory: ``$HYPOTHESAES_CACHE_DIR`` or a per-user cache dir.

    The per-user directory is ``$XDG_CACHE_HOME/sklearn_hypothesaes`` (default
    ``~/.cache/sklearn_hypothesaes``) on Linux, ``~/Library/Caches/sklearn_hypothesaes``
    on macOS and ``%LOCALAPPDATA%\\sklearn_hypothesaes`` on Windows; never a
    directory inside the installed package.
    """
    env = os.environ.get("HYPOTHESAES_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    if sys.platform == "win32":
        base = Path(os.environ.get("LOCALAPPDATA", Path.home() / "AppData" / "Local"))
    elif sys.platform == "darwin":
        base = Path.home() / "Library" / "Caches"
    else:
        base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return base / "sklearn_hypothesaes"


def make_key(**fields: Any) -> str:
    """Hash the fields that determine an answer into a cache key.

    Parameters
    ----------
    **fields
        JSON-serialisable values (strings, numbers, lists, dicts). Order of the
        keyword arguments does not matter; every value, including the full
        text, enters the hash.

    Returns
    -------
    key : str
        A 64-character hexadecimal SHA-256 digest.

    Examples
    --------
    >>> make_key(model="m", text="a") == make_key(text="a", model="m")
    True
    >>> make_key(model="m", text="a") == make_key(model="m2", text="a")
    False
    """
    payload = json.dumps(fields, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


class SQLiteCache:
    """A namespaced key-value store in one SQLite database.

    Parameters
    ----------
    path : str or path-like, default=None
        A directory (the database is ``cache.sqlite3`` inside it) or a file path
        ending in ``.sqlite3``/``.sqlite``/``.db``. ``None`` uses
        :func:`default_cache_dir`.
    on_corrupt : {"raise", "move"}, default="raise"
        What to do with an existing file that is not a readable database:
        raise :class:`~sklearn_hypothesaes.exceptions.CacheError`, or rename it
        to ``<name>.corrupt-<timestamp>`` (logged as a warning) and start afresh.
        The file is never deleted.

    Notes
    -----
    The object is safe to share between threads (one connection guarded by a
    lock) and pickles without its connection, reopening lazily. Several
    processes may use the same database; SQLite serialises their writes. Use a
    local disk: SQLite locking is unreliable on network file systems.
    """

    def __init__(
        self,
        path: str | os.PathLike | None = None,
        *,
        on_corrupt: Literal["raise", "move"] = "raise",
    ) -> None:
        if on_corrupt not in ("raise", "move"):
            raise ValueError(f"on_corrupt must be 'raise' or 'move', got {on_corrupt!r}.")
        target = Path(path).expanduser() if path is not None else default_cache_dir()
        if target.suffix in (".sqlite3", ".sqlite", ".db"):
            self.path = target
        else:
            self.path = target / DB_NAME
        self.on_corrupt = on_corrupt
        self._lock = threading.RLock()
        self._conn: sqlite3.Connection | None = None

    # -- connection -----------------------------------------------------------------
    def _connect(self) -> sqlite3.Connection:
        if self._conn is not None:
            return self._conn
        with self._lock:
            if self._conn is not None:
                return self._conn
            self.path.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.chmod(self.path.parent, 0o700)
            except OSError:  # a shared directory the user does not own
                pass
            existed = self.path.exists()
            if not existed:
                # Create the file with owner-only permissions before SQLite opens it.
                fd = os.open(self.path, os.O_CREAT | os.O_RDWR, 0o600)
                os.close(fd)
            try:
                conn = self._open(self.path)
            except sqlite3.DatabaseError as exc:
                if self.on_corrupt == "raise":
                    raise CacheError(
                        f"The cache database {self.path} cannot be read ({exc}). It was "
                        "left untouched. Move or delete it yourself, point "
                        "HYPOTHESAES_CACHE_DIR (or cache_dir) elsewhere, or open the "
                        "cache with on_corrupt='move' to have it renamed aside."
                    ) from exc
                aside = self.path.with_name(f"{self.path.name}.corrupt-{int(time.time())}")
                self.path.rename(aside)
                for suffix in ("-wal", "-shm"):
                    side = self.path.with_name(self.path.name + suffix)
                    if side.exists():
                        side.rename(aside.with_name(aside.name + suffix))
                logger.warning(
                    "Cache database %s could not be read (%s); moved it to %s and "
                    "started a new one.",
                    self.path,
                    exc,
                    aside,
                )
                fd = os.open(self.path, os.O_CREAT | os.O_RDWR, 0o600)
                os.close(fd)
                conn = self._open(self.path)
            for suffix in ("-wal", "-shm"):
                side = self.path.with_name(self.path.name + suffix)
                if side.exists():
                    try:
                        os.chmod(side, 0o600)
                    except OSError:
                        pass
            self._conn = conn
            return conn

    @staticmethod
    def _open(path: Path) -> sqlite3.Connection:
        conn = sqlite3.connect(path, timeout=60.0, isolation_level=None, check_same_thread=False)
        try:
            conn.execute("PRAGMA busy_timeout=60000")
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT)")
            conn.execute(
                "CREATE TABLE IF NOT EXISTS entries ("
                " namespace TEXT NOT NULL, key TEXT NOT NULL, value BLOB,"
                " created REAL NOT NULL, PRIMARY KEY (namespace, key)) WITHOUT ROWID"
            )
            row = conn.execute("SELECT value FROM meta WHERE name='schema_version'").fetchone()
            if row is None:
                conn.execute(
                    "INSERT OR IGNORE INTO meta VALUES ('schema_version', ?)",
                    (str(SCHEMA_VERSION),),
                )
            elif int(row[0]) > SCHEMA_VERSION:
                conn.close()
                raise CacheError(
                    f"The cache database {path} was written by a newer version of "
                    f"sklearn_hypothesaes (schema {row[0]} > {SCHEMA_VERSION}). Upgrade "
                    "the package or use another cache directory."
                )
        except sqlite3.DatabaseError:
            conn.close()
            raise
        return conn

    def close(self) -> None:
        """Close the connection (it reopens on next use)."""
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def __enter__(self) -> SQLiteCache:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def __getstate__(self) -> dict:
        return {"path": self.path, "on_corrupt": self.on_corrupt}

    def __setstate__(self, state: dict) -> None:
        self.path = state["path"]
        self.on_corrupt = state["on_corrupt"]
        self._lock = threading.RLock()
        self._conn = None

    def __repr__(self) -> str:
        return f"SQLiteCache({str(self.path)!r})"

    # -- reads ------------------------------------------------------------------------
    def get_many(self, namespace: str, keys: Sequence[str]) -> dict[str, Value]:
        """Return ``{key: value}`` for the keys present in ``namespace``."""
        conn = self._connect()
        found: dict[str, Value] = {}
        unique = list(dict.fromkeys(keys))
        with self._lock:
            for start in range(0, len(unique), _IN_CHUNK):
                chunk = unique[start : start + _IN_CHUNK]
                marks = ",".join("?" * len(chunk))
                rows = conn.execute(
                    f"SELECT key, value FROM entries WHERE namespace=? AND key IN ({marks})",
                    (namespace, *chunk),
                ).fetchall()
                found.update(rows)
        return found

    def get(self, namespace: str, key: str, default: Value = None) -> Value:
        """Return one value, or ``default`` when the key is absent."""
        return self.get_many(namespace, [key]).get(key, default)

    def count_prefix(self, namespace: str, prefix: str) -> int:
        """Number of keys in ``namespace`` that start with ``prefix`` (a hex string)."""
        conn = self._connect()
        with self._lock:
            return conn.execute(
                "SELECT COUNT(*) FROM entries WHERE namespace=? AND key>=? AND key<?",
                (namespace, prefix, prefix + "\U0010ffff"),
            ).fetchone()[0]

    def scan_prefix(self, namespace: str, prefix: str) -> dict[str, Value]:
        """Return ``{key: value}`` for every key in ``namespace`` starting with ``prefix``.

        Keys built as ``tag + digest`` sort together, so one range read replaces
        many point lookups when most of a tag's keys are wanted.
        """
        conn = self._connect()
        with self._lock:
            rows = conn.execute(
                "SELECT key, value FROM entries WHERE namespace=? AND key>=? AND key<?",
                (namespace, prefix, prefix + "\U0010ffff"),
            ).fetchall()
        return dict(rows)

    def __len__(self) -> int:
        conn = self._connect()
        with self._lock:
            return conn.execute("SELECT COUNT(*) FROM entries").fetchone()[0]

    def count(self, namespace: str) -> int:
        """Number of entries in ``namespace``."""
        conn = self._connect()
        with self._lock:
            return conn.execute(
                "SELECT COUNT(*) FROM entries WHERE namespace=?", (namespace,)
            ).fetchone()[0]

    # -- writes -----------------------------------------------------------------------
    def put_many(
        self, namespace: str, items: Mapping[str, Value] | Iterable[tuple[str, Value]]
    ) -> int:
        """Store items in one transaction and return how many were written.

        Call it as results arrive, in small batches: each call is committed (and
        survives a crash of the process) before it returns.
        """
        pairs = list(items.items() if isinstance(items, Mapping) else items)
        if not pairs:
            return 0
        now = time.time()
        conn = self._connect()
        with self._lock:
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.executemany(
                    "INSERT OR REPLACE INTO entries VALUES (?, ?, ?, ?)",
                    [(namespace, k, v, now) for k, v in pairs],
                )
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
        return len(pairs)

    def put(self, namespace: str, key: str, value: Value) -> None:
        """Store one item (committed before returning)."""
        self.put_many(namespace, [(key, value)])

    def delete_namespace(self, namespace: str) -> int:
        """Remove every entry of ``namespace``; return how many were removed."""
        conn = self._connect()
        with self._lock:
            cur = conn.execute("DELETE FROM entries WHERE namespace=?", (namespace,))
            return cur.rowcount


def open_cache(cache: SQLiteCache | str | os.PathLike | bool | None) -> SQLiteCache | None:
    """Turn an estimator's ``cache`` parameter into a cache object.

    ``None`` or ``True`` mean the default directory, ``False`` no cache, a path
    that directory (or file), and a :class:`SQLiteCache` is used as given.
    """
    if cache is False:
        return None
    if cache is None or cache is True:
        return SQLiteCache()
    if isinstance(cache, SQLiteCache):
        return cache
    if isinstance(cache, (str, os.PathLike)):
        return SQLiteCache(cache)
    raise TypeError(
        "cache must be None, True, False, a directory path or a SQLiteCache; "
        f"got {type(cache).__name__}."
    )
