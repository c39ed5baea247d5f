"""What `tabtrack ci` writes for people: a markdown summary (each metric of both models on the same test rows, the
candidate's improvement and its paired 95% interval) and the comparison page with the overlaid curves."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

REPORT_DIR = "ci-report"


def write_summary(
    root: Path, *, decision, verdict: str, name: str, version: str, commit: str, candidate: Any, X_test, y_test,
    task: str, classes, client, seed: int, promoted: bool, summary_file: str | None,
) -> tuple[Path, Path | None]:  # fmt: skip
    """`ci-report/summary.md` (appended to `summary_file` too: GitHub's $GITHUB_STEP_SUMMARY) and, where there is a
    champion, `ci-report/compare.html`. Returns both paths."""
    from tabtrack.models.loading import load_logged_model

    folder = root / REPORT_DIR
    folder.mkdir(exist_ok=True)
    champion = decision.champion_version
    lines = [f"## tabtrack ci: {name} v{version} {verdict}", "",
             f"Commit `{commit[:12]}`, gated on {len(y_test)} test rows by `{decision.metric}`: {decision.reason}."]  # fmt: skip
    if promoted and decision.alias == "champion":
        lines.append(f"Promoted: v{version} is the champion now.")
    page = None
    if champion is not None:
        old = load_logged_model(f"models:/{name}/{champion}")
        lines += ["", *_metric_table(task, classes, y_test, old, candidate, X_test, champion, version, seed)]
        champion_run = client.get_model_version(name, str(champion)).run_id
        candidate_run = client.get_model_version(name, version).run_id
        page = _comparison_page(folder, [champion_run, candidate_run])
        lines += ["", f"The overlaid curves of both runs: `{page.relative_to(root)}` (this job's artifact)."]
    text = "\n".join(lines) + "\n"
    summary = folder / "summary.md"
    summary.write_text(text, encoding="utf-8")
    if summary_file:
        with open(summary_file, "a", encoding="utf-8") as handle:
            handle.write(text)
    return summary, page


def _metric_table(task, classes, y_test, old, new, X_test, champion, version, seed) -> list[str]:
    from tabtrack.evaluate.paired import Scored, fast_metrics, paired_differences

    def scored(model) -> Scored:
        proba = model.predict_proba(X_test) if task == "classification" else None
        return Scored(np.asarray(model.predict(X_test)), proba)

    metrics = fast_metrics(task, len(classes) if classes else 0)
    differences = paired_differences(task, y_test, [scored(old), scored(new)], metrics, classes=classes, seed=seed)[1]
    rows = [f"| metric | champion v{champion} | candidate v{version} | improvement | 95% interval | |",
            "|---|---:|---:|---:|---|---|"]  # fmt: skip
    for metric, d in differences.items():
        mark = "better" if d.low > 0 else "worse" if d.high < 0 else "within noise"
        rows.append(f"| {metric} | {d.old:.4f} | {d.new:.4f} | {d.improvement:+.4f} | {d.low:+.4f} to {d.high:+.4f} "
                    f"| {mark} |")  # fmt: skip
    return rows


def _comparison_page(folder: Path, run_ids: list[str]) -> Path:
    from tabtrack.commands.report import comparison_report

    path = folder / "compare.html"
    path.write_text(comparison_report(run_ids), encoding="utf-8")
    return path
