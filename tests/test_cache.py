import os
import pickle
import stat
import subprocess
import sys
import textwrap

import pytest

from sklearn_hypothesaes.cache import SQLiteCache, default_cache_dir, make_key, open_cache
from sklearn_hypothesaes.exceptions import CacheError


def test_round_trip_and_namespaces(tmp_path):
    cache = SQLiteCache(tmp_path)
    assert cache.put_many("a", {"k1": b"\x00\x01", "k2": "text", "k3": 3, "k4": 1.5}) == 4
    cache.put("b", "k1", "other")
    got = cache.get_many("a", ["k1", "k2", "k3", "k4", "missing"])
    assert got == {"k1": b"\x00\x01", "k2": "text", "k3": 3, "k4": 1.5}
    assert cache.get("b", "k1") == "other"
    assert cache.get("b", "nope", default="d") == "d"
    assert cache.count("a") == 4 and len(cache) == 5
    assert cache.delete_namespace("a") == 4 and cache.count("a") == 0


def test_many_keys_cross_the_parameter_limit(tmp_path):
    cache = SQLiteCache(tmp_path / "c.sqlite3")
    items = {make_key(i=i): i for i in range(5000)}
    cache.put_many("n", items)
    assert cache.get_many("n", list(items)) == items


def test_file_is_private_and_in_the_configured_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("HYPOTHESAES_CACHE_DIR", str(tmp_path / "here"))
    assert default_cache_dir() == tmp_path / "here"
    cache = open_cache(None)
    cache.put("n", "k", 1)
    assert cache.path == tmp_path / "here" / "cache.sqlite3"
    assert stat.S_IMODE(os.stat(cache.path).st_mode) == 0o600


def test_default_dir_is_per_user_not_in_the_package(monkeypatch):
    monkeypatch.delenv("HYPOTHESAES_CACHE_DIR")
    import sklearn_hypothesaes

    package_dir = os.path.dirname(sklearn_hypothesaes.__file__)
    assert not str(default_cache_dir()).startswith(package_dir)


def test_keys_cover_every_field_and_the_full_text():
    head, tail = "x" * 100, "y" * 100
    a = make_key(model="m", prompt_version=1, concept="c", text=head + "A" + tail)
    b = make_key(model="m", prompt_version=1, concept="c", text=head + "B" + tail)
    assert a != b
    assert a != make_key(model="m2", prompt_version=1, concept="c", text=head + "A" + tail)
    assert a != make_key(model="m", prompt_version=2, concept="c", text=head + "A" + tail)


def test_unreadable_database_is_refused_and_never_deleted(tmp_path):
    path = tmp_path / "cache.sqlite3"
    garbage = b"this is not a database" * 100
    path.write_bytes(garbage)
    with pytest.raises(CacheError, match="cannot be read"):
        SQLiteCache(tmp_path).get("n", "k")
    assert path.read_bytes() == garbage


def test_unreadable_database_can_be_moved_aside(tmp_path, caplog):
    path = tmp_path / "cache.sqlite3"
    path.write_bytes(b"garbage" * 1000)
    cache = SQLiteCache(tmp_path, on_corrupt="move")
    cache.put("n", "k", 1)
    aside = [p for p in tmp_path.iterdir() if ".corrupt-" in p.name]
    assert len(aside) == 1 and aside[0].read_bytes() == b"garbage" * 1000
    assert cache.get("n", "k") == 1
    assert "moved it to" in caplog.text


def test_pickles_without_connection(tmp_path):
    cache = SQLiteCache(tmp_path)
    cache.put("n", "k", "v")
    clone = pickle.loads(pickle.dumps(cache))
    assert clone.get("n", "k") == "v"


def test_open_cache_rejects_bad_types():
    with pytest.raises(TypeError, match="cache must be"):
        open_cache(3)
    assert open_cache(False) is None


def test_killed_writer_keeps_committed_batches(tmp_path):
    """SIGKILL between batches: every committed batch survives, the file stays valid."""
    script = textwrap.dedent(
        f"""
        import os, signal
        from sklearn_hypothesaes.cache import SQLiteCache
        c = SQLiteCache({str(tmp_path)!r})
        for batch in range(10):
            c.put_many("n", {{f"{{batch}}-{{i}}": i for i in range(100)}})
            if batch == 6:
                os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], env=dict(os.environ))
    assert proc.returncode == -9
    cache = SQLiteCache(tmp_path)
    assert cache.count("n") == 700
    assert cache.get("n", "6-99") == 99


def test_prefix_scan_and_count(tmp_path):
    cache = SQLiteCache(tmp_path)
    cache.put_many("n", {"ab01": 1, "ab02": 2, "ac01": 3, "b": 4})
    cache.put("other", "ab03", 5)
    assert cache.count_prefix("n", "ab") == 2
    assert cache.scan_prefix("n", "ab") == {"ab01": 1, "ab02": 2}
    assert cache.scan_prefix("n", "zz") == {}
