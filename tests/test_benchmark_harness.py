import json
import textwrap

from benchmarks.harness import markdown_table, run_benchmark, summarise


def test_summarise_medians_and_ratios():
    trials = [
        {"config": "ref", "metrics": {"seconds": 4.0, "peak_rss_mb": 100.0}},
        {"config": "ours", "metrics": {"seconds": 1.0, "peak_rss_mb": 50.0}},
        {"config": "ref", "metrics": {"seconds": 6.0, "peak_rss_mb": 100.0}},
        {"config": "ours", "metrics": {"seconds": 3.0, "peak_rss_mb": 50.0}},
        {"config": "ref", "metrics": {"seconds": 5.0, "peak_rss_mb": 120.0}},
        {"config": "ours", "metrics": {"seconds": 2.5, "peak_rss_mb": 60.0}},
    ]
    medians, ratios = summarise(trials, ["ref", "ours"], "ref", ("seconds", "peak_rss_mb"))
    assert medians["ref"]["seconds"] == 5.0 and medians["ours"]["seconds"] == 2.5
    assert ratios["ours"]["seconds"] == 2.0 and ratios["ref"]["seconds"] == 1.0
    assert ratios["ours"]["peak_rss_mb"] == 2.0
    table = markdown_table({"n": 10}, medians, ratios, "ref")
    assert "| ours |" in table and "2.00x" in table and "n=10" in table


def test_run_alternates_configs_in_subprocesses(tmp_path):
    bench = tmp_path / "bench_toy.py"
    bench.write_text(
        textwrap.dedent(
            """
            import os
            CASES = [{"n": 1000}]
            BASELINE = "slow"

            def setup(case):
                return list(range(case["n"]))

            def slow(case, data):
                return {"total": float(sum(x * x for x in data * 20)),
                        "omp": float(os.environ["OMP_WAIT_POLICY"] == "PASSIVE")}

            def fast(case, data):
                return {"total": float(sum(x * x for x in data) * 20),
                        "omp": float(os.environ["OMP_WAIT_POLICY"] == "PASSIVE")}

            CONFIGS = {"slow": slow, "fast": fast}
            """
        )
    )
    out = tmp_path / "results"
    result = run_benchmark(str(bench), repeats=2, threads=1, out_dir=out)
    trials = result["cases"][0]["trials"]
    assert [t["config"] for t in trials] == ["slow", "fast", "slow", "fast"]
    assert all(t["metrics"]["omp"] == 1.0 for t in trials)
    assert all(t["metrics"]["peak_rss_mb"] > 1 for t in trials)
    medians = result["cases"][0]["medians"]
    assert medians["slow"]["total"] == medians["fast"]["total"]
    written = sorted(out.iterdir())
    assert [p.suffix for p in written] == [".json", ".md"]
    saved = json.loads(written[0].read_text())
    assert saved["baseline"] == "slow" and saved["machine"]["threads"] == 1
    assert "fast" in written[1].read_text()


def test_omp_wait_policy_default_leaves_the_variable_unset(tmp_path, monkeypatch):
    monkeypatch.setenv("OMP_WAIT_POLICY", "PASSIVE")  # as the test suite's conftest sets it
    bench = tmp_path / "bench_env.py"
    bench.write_text(
        textwrap.dedent(
            """
            import os
            CASES = [{}]

            def setup(case):
                return None

            def probe(case, data):
                return {"unset": float("OMP_WAIT_POLICY" not in os.environ)}

            CONFIGS = {"probe": probe}
            """
        )
    )
    result = run_benchmark(str(bench), repeats=1, threads=1, omp_wait_policy=None)
    assert result["cases"][0]["trials"][0]["metrics"]["unset"] == 1.0
    assert result["machine"]["OMP_WAIT_POLICY"].startswith("(unset")
    result = run_benchmark(str(bench), repeats=1, threads=1)
    assert result["cases"][0]["trials"][0]["metrics"]["unset"] == 0.0
