"""What a person sees, checked in headless Chromium: the MLflow UI shows a tabtrack run's metrics
and plots, and report.html loads every image. Screenshots land in test-outputs/ for a human look."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

import tabtrack
from conftest import TABTRACK, free_port, wait_for_http

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
