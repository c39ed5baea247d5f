"""The CI workflows `tabtrack init --ci github|gitlab` writes: each change gated by one command, `tabtrack ci`, the
same command the test suite runs (tests/test_ci.py reads these files and runs their steps)."""

from __future__ import annotations

from tabtrack import __version__

HEADER = """\
# Written by `tabtrack init --ci {kind}`. On every {request}: `dvc repro`, then this commit's run is registered
# and gated against the registered champion on the same test split, without promoting; the comparison (each metric
# with its paired 95% interval, and a page with the overlaid curves) is {where}. On every push to main: the
# same, and the candidate becomes champion when it wins beyond noise. `tabtrack ci` exits 0 when the candidate
# wins or ties within noise, 1 when it loses (the job fails), 2 when something is broken.
# Set MLFLOW_TRACKING_URI (your team's `mlflow server`), MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD
# where it has logins, and what your DVC remote needs for `dvc pull`, as {secrets}.
"""

GITHUB = HEADER.format(kind="github", request="pull request", where="the job's summary and its artifact",
                       secrets="repository secrets") + f"""\
name: tabtrack
on:
  pull_request:
  push:
    branches: [main]
jobs:
  gate:
    runs-on: ubuntu-latest
    env:
      MLFLOW_TRACKING_URI: ${{{{ secrets.MLFLOW_TRACKING_URI }}}}
      MLFLOW_TRACKING_USERNAME: ${{{{ secrets.MLFLOW_TRACKING_USERNAME }}}}
      MLFLOW_TRACKING_PASSWORD: ${{{{ secrets.MLFLOW_TRACKING_PASSWORD }}}}
    steps:
      - uses: actions/checkout@v4
      - uses: actions/setup-python@v5
        with:
          python-version: "3.11"
      - name: install
        run: pip install "tabtrack[all]=={__version__}" dvc
      - name: data
        run: dvc pull
      - name: gate
        if: github.event_name == 'pull_request'
        run: tabtrack ci
      - name: promote
        if: github.event_name == 'push'
        run: tabtrack ci --promote
      - name: comparison
        if: always()
        uses: actions/upload-artifact@v4
        with:
          name: tabtrack-ci
          path: ci-report/
"""  # fmt: skip

GITLAB = HEADER.format(kind="gitlab", request="merge request", where="the job's artifact",
                       secrets="CI/CD variables") + f"""\
.tabtrack:
  image: python:3.11
  before_script:
    - pip install "tabtrack[all]=={__version__}" dvc
    - dvc pull
  artifacts:
    when: always
    paths: [ci-report/]

gate:
  extends: .tabtrack
  rules:
    - if: $CI_PIPELINE_SOURCE == "merge_request_event"
  script:
    - tabtrack ci

promote:
  extends: .tabtrack
  rules:
    - if: $CI_COMMIT_BRANCH == $CI_DEFAULT_BRANCH
  script:
    - tabtrack ci --promote
"""  # fmt: skip

WORKFLOWS = {"github": (".github/workflows/tabtrack.yml", GITHUB), "gitlab": (".gitlab-ci.yml", GITLAB)}
