"""Nobody in where they don't belong: `tabtrack serve` beyond loopback needs a bearer token (or `--insecure`, said
in one line), every request without it gets 401 (health excepted), and the token is in nothing written."""

from __future__ import annotations

import json
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

import pandas as pd
import pytest

from conftest import TABTRACK, free_port, run_tabtrack, wait_for_http

pytestmark = pytest.mark.multiprocess
TOKEN = "s3cr3t-t0ken-4-tests"


def _call(port: int, path: str, *, token: str | None = None, body: dict | None = None) -> int:
    headers = {"content-type": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    data = json.dumps(body).encode() if body is not None else None
    try:
        with urllib.request.urlopen(urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=data,
                                                           headers=headers), timeout=30) as response:  # fmt: skip
            return response.status
    except urllib.error.HTTPError as exc:
        assert exc.code != 401 or exc.headers["WWW-Authenticate"] == "Bearer"
        return exc.code


def test_a_token_is_required_beyond_loopback_and_checked_on_every_request(workdir, data_dir):
    done = run_tabtrack("train", data_dir / "breast_cancer.csv", "-t", "target", "--model", "logistic_regression",
                        "--register", "cancer", cwd=workdir)  # fmt: skip
    assert done.returncode == 0, done.stderr
    refused = run_tabtrack("serve", "models:/cancer/1", "--host", "0.0.0.0", "--port", str(free_port()), cwd=workdir)
    assert refused.returncode == 2 and len(refused.stderr.strip().splitlines()) == 1, refused.stderr
    assert "TABTRACK_SERVE_TOKEN or --token-file FILE" in refused.stderr and "--insecure" in refused.stderr

    (workdir / "token").write_text(TOKEN + "\n")
    port = free_port()
    server = subprocess.Popen(
        [TABTRACK, "serve", "models:/cancer/1", "--host", "0.0.0.0", "--port", str(port), "--token-file", "token",
         "--log-predictions", "log"],
        cwd=workdir, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    record = pd.read_csv(data_dir / "breast_cancer.csv").drop(columns="target").head(1).to_dict(orient="records")
    try:
        wait_for_http(f"http://127.0.0.1:{port}/health", server, what="tabtrack serve")  # health needs no token
        assert _call(port, "/predict", body={"records": record}) == 401
        assert _call(port, "/predict", token="wrong", body={"records": record}) == 401
        assert _call(port, "/predict", token=TOKEN[:-1], body={"records": record}) == 401
        assert _call(port, "/metadata") == 401 and _call(port, "/docs") == 401
        assert _call(port, "/predict", token=TOKEN, body={"records": record}) == 200
        assert _call(port, "/metadata", token=TOKEN) == 200
    finally:
        server.terminate()
        out, err = server.communicate(timeout=60)
    written = b"".join(
        path.read_bytes() for path in Path(workdir).rglob("*") if path.is_file() and path.name != "token"
    )
    assert TOKEN not in out + err and TOKEN.encode() not in written  # logs, the prediction log, the store

    port = free_port()
    server = subprocess.Popen(
        [TABTRACK, "serve", "models:/cancer/1", "--host", "0.0.0.0", "--port", str(port), "--insecure",
         "--log-predictions", "off"],
        cwd=workdir, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        wait_for_http(f"http://127.0.0.1:{port}/health", server, what="tabtrack serve")
        assert _call(port, "/predict", body={"records": record}) == 200
    finally:
        server.terminate()
        out, _ = server.communicate(timeout=60)
    assert "warning: --insecure: no token; anyone who reaches 0.0.0.0" in out
