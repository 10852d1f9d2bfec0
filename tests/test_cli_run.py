"""The ``hypothesaes run``, ``estimate-cost`` and ``demo`` commands."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from sklearn_hypothesaes._cli_cost import estimate_run_cost, price_for_model
from sklearn_hypothesaes._cli_data import infer_task, load_table, prepare_data
from sklearn_hypothesaes._cli_errors import DataError
from sklearn_hypothesaes.cli import main
from sklearn_hypothesaes.exceptions import DataLeakageWarning

# SAE training is capped at a few epochs to keep the tests fast
pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")

WORDS = ["soup", "waiter", "table", "price", "music", "bread", "chair", "window"]


def _frame(n=60, seed=0):
    rng = np.random.default_rng(seed)
    texts = [
        f"Review {i}: the {rng.choice(WORDS)} and the {rng.choice(WORDS)} were fine."
        for i in range(n)
    ]
    return pd.DataFrame(
        {
            "review": texts,
            "stars": rng.integers(1, 6, size=n).astype(float),
            "liked": rng.choice(["yes", "no"], size=n),
            "city": rng.choice(["Paris", "Rome", "Oslo"], size=n),
            "id": [f"user-{i}" for i in range(n)],
        }
    )


@pytest.fixture()
def csv_path(tmp_path):
    path = tmp_path / "reviews.csv"
    _frame().to_csv(path, index=False)
    return path


def _run_cli(argv, capsys):
    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


# -- loading ---------------------------------------------------------------------------------
@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".jsonl", ".json", ".parquet"])
def test_load_table_formats_round_trip(tmp_path, suffix):
    df = _frame(25)
    path = tmp_path / f"data{suffix}"
    if suffix == ".csv":
        df.to_csv(path, index=False)
    elif suffix == ".tsv":
        df.to_csv(path, sep="\t", index=False)
    elif suffix == ".jsonl":
        df.to_json(path, orient="records", lines=True)
    elif suffix == ".json":
        df.to_json(path, orient="records")
    else:
        df.to_parquet(path)
    loaded = load_table(path)
    assert loaded["review"].tolist() == df["review"].tolist()
    np.testing.assert_allclose(loaded["stars"].to_numpy(float), df["stars"].to_numpy())


def test_prepare_data_infers_tasks():
    df = _frame(60)
    assert prepare_data(df, text_col="review", target_col="stars").task == "regression"
    binary = prepare_data(df, text_col="review", target_col="liked")
    assert binary.task == "binary" and set(binary.y) <= {0, 1}
    assert binary.classes == ["no", "yes"]
    np.testing.assert_array_equal(binary.y, (df["liked"] == "yes").to_numpy().astype(int))
    multi = prepare_data(df, text_col="review", target_col="city")
    assert multi.task == "multiclass" and multi.classes == ["Oslo", "Paris", "Rome"]
    forced = prepare_data(df, text_col="review", target_col="stars", task="multiclass")
    assert forced.task == "multiclass"


def test_prepare_data_drops_missing_rows_and_says_so():
    df = _frame(40)
    df.loc[[3, 7], "stars"] = np.nan
    df.loc[5, "review"] = "   "
    data = prepare_data(df, text_col="review", target_col="stars")
    assert data.n == 37 and data.n_dropped == 3
    assert any("dropped 3" in note for note in data.notes)


def test_pairwise_data_is_pairs():
    df = _frame(40)
    df["other"] = df["review"].iloc[::-1].to_numpy()
    data = prepare_data(df, text_col="review", text_b_col="other", target_col="liked")
    assert data.texts is None and len(data.pairs) == 40
    assert data.pairs[0] == (df["review"][0], df["other"][0])
    with pytest.raises(DataError, match="Pairwise"):
        prepare_data(df, text_col="review", text_b_col="other", target_col="city")


def test_infer_task_rejects_unusable_targets():
    with pytest.raises(DataError, match="neither binary, multiclass nor numeric"):
        infer_task(pd.Series([f"label {i}" for i in range(100)]), "auto")
    with pytest.raises(DataError, match="single value"):
        infer_task(pd.Series([3.0] * 10), "auto")
    with pytest.raises(DataError, match="numeric"):
        infer_task(pd.Series(["a", "b", "c"] * 5), "regression")
    with pytest.raises(DataError, match="exactly 2"):
        infer_task(pd.Series([1, 2, 3] * 5), "binary")


# -- error messages of the command -----------------------------------------------------------
def test_missing_column_message(csv_path, capsys):
    code, _, err = _run_cli(
        ["run", str(csv_path), "--text-col", "text", "--target-col", "stars"], capsys
    )
    assert code == 2
    assert "Column 'text' (--text-col) is not in the data" in err
    assert "'review'" in err  # the available columns are listed
    assert "Traceback" not in err


def test_missing_target_column_message(csv_path, capsys):
    code, _, err = _run_cli(
        ["run", str(csv_path), "--text-col", "review", "--target-col", "rating"], capsys
    )
    assert code == 2 and "Column 'rating' (--target-col)" in err


def test_bad_file_messages(tmp_path, capsys):
    missing = tmp_path / "nope.csv"
    code, _, err = _run_cli(["run", str(missing), "--text-col", "a", "--target-col", "b"], capsys)
    assert code == 2 and "No such file" in err

    broken = tmp_path / "broken.parquet"
    broken.write_bytes(b"this is not parquet")
    code, _, err = _run_cli(["run", str(broken), "--text-col", "a", "--target-col", "b"], capsys)
    assert code == 2 and "Could not read" in err and "PARQUET" in err

    bad_jsonl = tmp_path / "bad.jsonl"
    bad_jsonl.write_text('{"a": "x", "b": 1}\n{"a": "y", "b": \n')
    code, _, err = _run_cli(["run", str(bad_jsonl), "--text-col", "a", "--target-col", "b"], capsys)
    assert code == 2 and "Could not read" in err and "JSONL" in err

    unknown = tmp_path / "data.xlsx"
    unknown.write_bytes(b"PK")
    code, _, err = _run_cli(["run", str(unknown), "--text-col", "a", "--target-col", "b"], capsys)
    assert code == 2 and "--format" in err


def test_empty_dataset_messages(tmp_path, capsys):
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    code, _, err = _run_cli(["run", str(empty), "--text-col", "a", "--target-col", "b"], capsys)
    assert code == 2 and "empty" in err

    header_only = tmp_path / "header.csv"
    header_only.write_text("review,stars\n")
    code, _, err = _run_cli(
        ["run", str(header_only), "--text-col", "review", "--target-col", "stars"], capsys
    )
    assert code == 2 and "no rows" in err

    all_missing = tmp_path / "missing.jsonl"
    pd.DataFrame({"review": ["a", "b", None], "stars": [None, None, 2.0]}).to_json(
        all_missing, orient="records", lines=True
    )
    code, _, err = _run_cli(
        ["run", str(all_missing), "--text-col", "review", "--target-col", "stars"], capsys
    )
    assert code == 2 and "No usable rows" in err


def test_unsupported_target_message(tmp_path, capsys):
    df = _frame(80)
    path = tmp_path / "ids.csv"
    df.to_csv(path, index=False)
    code, _, err = _run_cli(
        ["run", str(path), "--text-col", "review", "--target-col", "id"], capsys
    )
    assert code == 2 and "neither binary, multiclass nor numeric" in err


def test_non_text_column_message(tmp_path, capsys):
    df = _frame(30)
    path = tmp_path / "d.jsonl"
    df.to_json(path, orient="records", lines=True)
    code, _, err = _run_cli(
        ["run", str(path), "--text-col", "stars", "--target-col", "liked"], capsys
    )
    assert code == 2 and "must hold text" in err


def test_option_validation_by_argparse(csv_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(
            [
                "run",
                str(csv_path),
                "--text-col",
                "review",
                "--target-col",
                "stars",
                "--holdout",
                "1.5",
            ]
        )
    assert exc.value.code == 2
    assert "between 0 and 1" in capsys.readouterr().err


# -- cost estimate ---------------------------------------------------------------------------
def test_estimate_scales_with_data_and_hypotheses():
    fit = ["word " * 50] * 400
    hold = ["word " * 50] * 100
    small = estimate_run_cost(fit, hold, n_hypotheses=10)
    big = estimate_run_cost(fit, hold + hold, n_hypotheses=10)
    more = estimate_run_cost(fit, hold, n_hypotheses=20, n_candidates=3)
    assert small["requests"]["annotate_holdout"] == 100 * 10
    assert big["requests"]["annotate_holdout"] == 200 * 10
    assert more["requests"]["interpret"] == 60
    assert more["requests"]["fidelity"] == 60 * 100
    # 250-character texts are about 63 tokens each
    per_text = small["prompt_tokens"]["annotate_holdout"] / 1000
    assert 63 < per_text < 63 + 200
    assert small["cost_usd"] == pytest.approx(
        (small["prompt_tokens"]["total"] * 0.15 + small["completion_tokens"]["total"] * 0.60) / 1e6
    )
    custom = estimate_run_cost(fit, hold, n_hypotheses=10, model="my-local-model")
    assert custom["cost_usd"] is None
    priced = estimate_run_cost(
        fit, hold, n_hypotheses=10, model="x", prices={"prompt": 1.0, "completion": 2.0}
    )
    assert priced["cost_usd"] == pytest.approx(
        (priced["prompt_tokens"]["total"] + 2 * priced["completion_tokens"]["total"]) / 1e6
    )


def test_price_table_knows_dated_snapshots():
    assert price_for_model("gpt-4o-mini-2024-07-18") == price_for_model("gpt-4o-mini")
    assert price_for_model("llama3") is None


def test_estimate_cost_command_sends_nothing(csv_path, capsys):
    code, out, _ = _run_cli(
        [
            "estimate-cost",
            str(csv_path),
            "--text-col",
            "review",
            "--target-col",
            "stars",
            "--n-hypotheses",
            "5",
            "--json",
        ],
        capsys,
    )
    assert code == 0
    est = json.loads(out)
    assert est["requests"]["annotate_holdout"] == 18 * 5  # 30% of 60 rows held out
    assert est["mode"] == "offline"
    assert est["cost_usd"] > 0


def test_dry_run_prints_estimate_and_writes_nothing(csv_path, tmp_path, capsys):
    out_dir = tmp_path / "out"
    code, out, _ = _run_cli(
        [
            "run",
            str(csv_path),
            "--text-col",
            "review",
            "--target-col",
            "liked",
            "--dry-run",
            "--llm-model",
            "gpt-4o",
            "-o",
            str(out_dir),
        ],
        capsys,
    )
    assert code == 0
    assert "LLM usage estimate for model 'gpt-4o'" in out and "cost: about $" in out
    assert not out_dir.exists()


def test_half_a_price_is_an_error(csv_path, capsys):
    code, _, err = _run_cli(
        [
            "estimate-cost",
            str(csv_path),
            "--text-col",
            "review",
            "--target-col",
            "stars",
            "--price-input",
            "1",
        ],
        capsys,
    )
    assert code == 2 and "--price-output" in err


# -- real runs (embedding model, SAE, selection, interpretation, report) ---------------------
@pytest.fixture(scope="module")
def demo_frame():
    from sklearn_hypothesaes.datasets import load_demo

    demo = load_demo(400, random_state=0)
    return pd.DataFrame(
        {
            "review": demo.texts,
            "stars": demo.y,
            "liked": np.where(demo.y_binary == 1, "yes", "no"),
        }
    )


def _common_opts(tmp_path, out):
    return [
        "--M",
        "16",
        "--K",
        "2",
        "--n-hypotheses",
        "4",
        "--cache-dir",
        str(tmp_path.parent / "shared-cache"),
        "-o",
        str(out),
    ]


def test_run_on_csv_writes_every_output(demo_frame, tmp_path, capsys):
    import joblib

    from sklearn_hypothesaes._cli_data import file_sha256

    data = tmp_path / "reviews.csv"
    demo_frame.to_csv(data, index=False)
    out = tmp_path / "out"
    argv = ["-q", "run", str(data), "--text-col", "review", "--target-col", "stars"]
    code, stdout, _ = _run_cli(
        argv + ["--task", "regression", *_common_opts(tmp_path, out)], capsys
    )
    assert code == 0
    assert {p.name for p in out.iterdir()} >= {
        "hypotheses.csv",
        "report.html",
        "model.joblib",
        "run.json",
    }
    table = pd.read_csv(out / "hypotheses.csv")
    gen = joblib.load(out / "model.joblib")
    assert table["hypothesis"].tolist() == gen.hypotheses_list_
    assert {"regression_coef", "pval_corrected", "significant", "neuron", "f1"} <= set(table)
    html = (out / "report.html").read_text()
    assert "<table" in html and "data:image/png;base64" in html
    run = json.loads((out / "run.json").read_text())
    assert run["data"]["sha256"] == file_sha256(data)
    assert run["data"]["n_rows_used"] == 400 and run["data"]["n_holdout"] == 120
    assert run["seed"] == 0 and run["parameters"]["M"] == 16 and run["mode"] == "offline"
    assert run["task"] == "regression"
    assert run["versions"]["scikit-learn"] and run["versions"]["numpy"]
    assert run["llm_usage"]["total_tokens"] == 0 and run["llm_usage"]["cost_usd"] is None
    assert run["generator"]["sae_params"]["M"] == 16
    assert "hypotheses significant" in stdout
    assert gen.transform(demo_frame["review"][:3].tolist()).shape == (3, len(table))


def test_run_on_jsonl_with_a_text_label_target(demo_frame, tmp_path, capsys):
    data = tmp_path / "reviews.jsonl"
    demo_frame.to_json(data, orient="records", lines=True)
    out = tmp_path / "out"
    argv = ["-q", "run", str(data), "--text-col", "review", "--target-col", "liked"]
    code, stdout, _ = _run_cli(argv + _common_opts(tmp_path, out), capsys)
    assert code == 0
    run = json.loads((out / "run.json").read_text())
    assert run["task"] == "binary" and run["classes"] == ["no", "yes"]
    assert "auc" in run["metrics"]
    assert "binary target: 'yes' is the positive class" in " ".join(run["data"]["notes"])


def test_demo_command_small(tmp_path, capsys):
    out = tmp_path / "demo"
    code, stdout, _ = _run_cli(
        ["-q", "demo", "--n-samples", "800", "-o", str(out), "--cache-dir", str(tmp_path / "c")],
        capsys,
    )
    assert code == 0
    assert "Recovered" in stdout and "of 7 planted concepts" in stdout
    assert (out / "report.html").exists() and (out / "recovery.csv").exists()
    recovery = pd.read_csv(out / "recovery.csv")
    assert len(recovery) == 7 and recovery["recovered"].dtype == bool


def test_run_pairwise(demo_frame, tmp_path, capsys):
    rng = np.random.default_rng(0)
    other = rng.permutation(len(demo_frame))
    pairs = pd.DataFrame(
        {
            "a": demo_frame["review"],
            "b": demo_frame["review"].to_numpy()[other],
            "a_wins": (demo_frame["stars"].to_numpy() > demo_frame["stars"].to_numpy()[other]),
        }
    )
    data = tmp_path / "pairs.parquet"
    pairs.to_parquet(data)
    out = tmp_path / "out"
    argv = ["-q", "run", str(data), "--text-col", "a", "--text-b-col", "b"]
    # every text occurs in two pairs, so a random split of pairs shares texts: warned
    with pytest.warns(DataLeakageWarning, match="used in fit"):
        code, _, _ = _run_cli(
            argv + ["--target-col", "a_wins", *_common_opts(tmp_path, out)], capsys
        )
    assert code == 0
    run = json.loads((out / "run.json").read_text())
    assert run["task"] == "binary" and run["metrics"]["pairwise"] is True
    import joblib

    gen = joblib.load(out / "model.joblib")
    assert gen.pairwise
    D = gen.transform(list(zip(pairs["a"][:5], pairs["b"][:5])))
    assert set(np.unique(D)) <= {-1, 0, 1}


def test_run_llm_mode_records_token_usage_and_cost(demo_frame, tmp_path, capsys, monkeypatch):
    from openai_server import FakeOpenAIServer

    data = tmp_path / "reviews.csv"
    demo_frame.iloc[:200].to_csv(data, index=False)
    out = tmp_path / "out"
    secret = "sk-cli-secret-0123456789"
    monkeypatch.setenv("OPENAI_API_KEY", secret)
    with FakeOpenAIServer() as server:
        argv = ["-q", "run", str(data), "--text-col", "review", "--target-col", "stars"]
        argv += ["--task", "regression", "--mode", "llm", "--base-url", server.url]
        argv += ["--llm-model", "test-model", "--price-input", "1", "--price-output", "2"]
        code, _, err = _run_cli(argv + _common_opts(tmp_path, out), capsys)
        n_answered = len(server.completed())
    assert code == 0, err
    run = json.loads((out / "run.json").read_text())
    assert run["mode"] == "llm"
    usage = run["llm_usage"]
    assert usage["n_requests"] >= n_answered > 0
    assert usage["prompt_tokens"] > 0 and usage["completion_tokens"] > 0
    expected = (usage["prompt_tokens"] * 1 + usage["completion_tokens"] * 2) / 1e6
    assert usage["cost_usd"] == pytest.approx(expected)
    assert "OPENAI_API_KEY" in run["environment_set"]
    # the dry-run estimate per annotation request is close to what was spent
    est_argv = ["estimate-cost", str(data), "--text-col", "review", "--target-col", "stars"]
    code, est_out, _ = _run_cli(est_argv + ["--n-hypotheses", "4", "--json"], capsys)
    est = json.loads(est_out)
    per_request_est = est["prompt_tokens"]["annotate_holdout"] / est["requests"]["annotate_holdout"]
    per_request_spent = usage["prompt_tokens"] / usage["n_requests"]
    assert per_request_est == pytest.approx(per_request_spent, rel=0.25)
    for name in ("run.json", "model.joblib", "hypotheses.csv", "report.html"):
        assert secret.encode() not in (out / name).read_bytes()


def test_inconsistent_method_options_message(csv_path, capsys):
    argv = ["run", str(csv_path), "--text-col", "review", "--target-col", "stars"]
    code, _, err = _run_cli(argv + ["--M", "8", "--K", "16"], capsys)
    assert code == 2 and "--K (16) cannot exceed --M (8)" in err
    code, _, err = _run_cli(argv + ["--M", "8", "--n-hypotheses", "9"], capsys)
    assert code == 2 and "--n-hypotheses (9) cannot exceed --M (8)" in err
