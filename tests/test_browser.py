"""What a person sees, checked in headless Chromium: the MLflow UI shows a tabtrack run's metrics
and plots, and report.html loads every image. Screenshots land in test-outputs/ for a human look."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest

import real_tables
import tabtrack
from conftest import TABTRACK, free_port, runs_of, wait_for_http

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
OUTPUTS = Path(__file__).resolve().parents[1] / "test-outputs"
# Without the networking flags Chromium keeps trying to reach Google's hosts on this closed network.
FLAGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync",
]  # fmt: skip

pytestmark = [pytest.mark.slow, pytest.mark.multiprocess]


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).exists():
        if os.environ.get("CI"):
            pytest.fail("chromium is missing; .ci/run installs Debian's chromium package")
        pytest.skip("chromium not installed (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    OUTPUTS.mkdir(exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
        yield browser
        browser.close()


@pytest.fixture
def ui_server(workdir):
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    proc = subprocess.Popen(
        [TABTRACK, "ui", "--port", str(port)],
        cwd=workdir, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    wait_for_http(f"{base}/health", proc, what="tabtrack ui")
    yield base
    proc.terminate()
    proc.wait(timeout=30)


def test_mlflow_ui_lists_metrics_and_plots(workdir, data_dir, store_uri, ui_server, browser):
    result = tabtrack.train(
        data_dir / "breast_cancer.csv", target="target", model="random_forest", tracking_uri=store_uri
    )
    from mlflow import MlflowClient

    experiment_id = MlflowClient(store_uri).get_run(result.run_id).info.experiment_id
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(f"{ui_server}/#/experiments/{experiment_id}/runs/{result.run_id}")
    page.wait_for_selector("text=test_roc_auc", timeout=60_000)
    body = page.inner_text("body")
    for metric in ("test_accuracy", "train_accuracy", "test_f1"):
        assert metric in body
    page.screenshot(path=str(OUTPUTS / "ui_run_overview.png"))

    page.goto(f"{ui_server}/#/experiments/{experiment_id}/runs/{result.run_id}/artifacts")
    page.get_by_text("plots", exact=True).first.click()
    page.wait_for_selector("text=roc_curve.png", timeout=30_000)
    listed = page.inner_text("body")
    for plot in (
        "confusion_matrix.png",
        "roc_curve.png",
        "pr_curve.png",
        "calibration_curve.png",
        "feature_importance.png",
    ):
        assert plot in listed
    page.get_by_text("roc_curve.png").first.click()
    # the preview pane shows the PNG itself (the UI fetches it as a blob, so match on size, not src)
    page.wait_for_function(
        "() => Array.from(document.images).some(i => i.complete && i.naturalWidth >= 500)", timeout=30_000
    )
    page.screenshot(path=str(OUTPUTS / "ui_run_artifacts.png"))
    page.close()


def test_report_html_loads_every_image(workdir, data_dir, store_uri, browser, cli):
    result = tabtrack.train(
        data_dir / "diabetes.csv", target="target", model="hist_gradient_boosting", cv=3, tracking_uri=store_uri
    )
    report = workdir / "report.html"
    code, _, err = cli("report", result.run_id, "-o", report, "--tracking-uri", store_uri)
    assert code == 0, err
    page = browser.new_page(viewport={"width": 1200, "height": 900})
    requests: list[str] = []
    page.on("request", lambda request: requests.append(request.url))
    page.goto(report.as_uri())
    sizes = page.eval_on_selector_all("img", "imgs => imgs.map(i => [i.complete, i.naturalWidth, i.naturalHeight])")
    assert len(sizes) == 4
    assert all(complete and width > 200 and height > 200 for complete, width, height in sizes), sizes
    assert "rmse" in page.inner_text("body")
    assert all(url.startswith(("file:", "data:")) for url in requests), requests  # nothing from the network
    page.screenshot(path=str(OUTPUTS / "report.png"), full_page=True)
    page.close()


def test_comparison_page_and_model_card_render(workdir, data_dir, store_uri, browser, cli):
    runs = [
        tabtrack.train(data_dir / "diabetes.csv", target="target", model=model, tracking_uri=store_uri).run_id
        for model in ("ridge", "hist_gradient_boosting")
    ]
    pages = {"compare": workdir / "compare.html", "card": workdir / "card.html"}
    code, _, err = cli("report", *runs, "-o", pages["compare"], "--tracking-uri", store_uri)
    assert code == 0, err
    code, _, err = cli("card", f"runs:/{runs[1]}/model", "-o", pages["card"], "--tracking-uri", store_uri)
    assert code == 0, err
    for name, path in pages.items():
        page = browser.new_page(viewport={"width": 1300, "height": 900})
        errors: list[str] = []
        page.on("console", lambda m, errors=errors: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda exc, errors=errors: errors.append(str(exc)))
        page.goto(path.as_uri())
        sizes = page.eval_on_selector_all("img", "imgs => imgs.map(i => [i.complete, i.naturalWidth])")
        assert all(complete and width > 200 for complete, width in sizes), sizes
        assert len(sizes) == (2 if name == "compare" else 0)  # predicted vs actual, residuals
        assert errors == []
        assert runs[1][:8] in page.inner_text("body")
        page.screenshot(path=str(OUTPUTS / f"{name}.png"), full_page=True)
        page.close()


def _bootstrap_by_hand(old: pd.DataFrame, new: pd.DataFrame, seed: int) -> tuple[float, float]:
    """The 95% interval of new's accuracy minus old's on the rows both hold, resampled row by row."""
    shared = old.merge(new, on="row", suffixes=("_old", "_new"))
    hit_old = (shared["y_pred_old"].astype(str) == shared["y_true_old"].astype(str)).to_numpy()
    hit_new = (shared["y_pred_new"].astype(str) == shared["y_true_new"].astype(str)).to_numpy()
    rng, differences = np.random.default_rng(seed), []
    for _ in range(10):  # ten blocks of 100 resamples, as drawn for the page
        for rows in rng.integers(0, len(shared), size=(100, len(shared))):
            differences.append(hit_new[rows].mean() - hit_old[rows].mean())
    return tuple(np.percentile(differences, [2.5, 97.5]))


def test_comparison_page_intervals_and_layout_with_2_6_and_12_runs(workdir, browser, cli, store_uri, client):
    """Six families on a real table twice (two seeds, so two test splits): the page gives each run's test
    difference from run #1 with a paired bootstrap interval on the rows they share, says why runs tested on other
    rows get none, and its metrics table fits a 1,300-pixel window with 2, 6 and 12 runs."""
    path = real_tables.write(real_tables.TABLES["titanicsurvival"], workdir)
    families = "logistic_regression,random_forest,hist_gradient_boosting,xgboost,lightgbm,mlp"
    for seed in ("42", "7"):
        code, _, err = cli("compare", path, "-t", "survived", "--cv", "2", "--seed", seed, "--models", families,
                           "--set", "drop_columns=[rownames]", "--tracking-uri", store_uri)  # fmt: skip
        assert code == 0, err
    runs = sorted(
        (r for r in runs_of(client, "titanicsurvival") if "test_accuracy" in r.data.metrics),
        key=lambda r: r.info.start_time,
    )
    ids = [r.info.run_id for r in runs]
    assert len(ids) == 12
    for count in (2, 6, 12):
        html_path = workdir / f"compare_{count}.html"
        code, _, err = cli("report", *ids[:count], "-o", html_path, "--tracking-uri", store_uri)
        assert code == 0, err
        page = browser.new_page(viewport={"width": 1300, "height": 900})
        page.goto(html_path.as_uri())
        metrics = page.locator("div.wide", has=page.locator("text=test accuracy"))
        width, room = metrics.evaluate("d => [d.scrollWidth, d.clientWidth]")
        assert width <= room, f"{count} runs: the metrics table is {width} px in {room} px"
        assert page.evaluate("document.documentElement.scrollWidth") <= 1300
        metrics.screenshot(path=str(OUTPUTS / f"compare_{count}_runs.png"))
        body = page.inner_text("body")
        intervals = page.locator("td span.ci").all_inner_texts()
        page.close()
        shared_runs = min(count, 6) - 1  # the first compare's runs share its test rows with run #1
        assert len(intervals) >= shared_runs * 5, intervals  # accuracy, precision, recall, f1, ROC AUC, log loss
        if count == 12:
            assert "#7, #8, #9, #10, #11, #12: tested on different data" in body
    # run #2's accuracy interval, recomputed by hand from both runs' test predictions
    tables = [
        pd.read_csv(io.StringIO(mlflow.artifacts.load_text(f"runs:/{run_id}/evaluation/test_predictions.csv")))
        for run_id in ids[:2]
    ]
    low, high = _bootstrap_by_hand(*tables, seed=42)
    page_html = (workdir / "compare_2.html").read_text()
    accuracy_row = page_html[page_html.index("<td>test accuracy</td>") :].split("</tr>")[0]
    assert f"{low:+.3f}…{high:+.3f}" in accuracy_row, (low, high, accuracy_row)
