"""Issue 2 benchmark: the cost of the standard over bare training, and CLI start-up.

    python -m benchmarks.core [--repeats 5]

Each ratio is measured side by side in this one run, as fresh processes (what a user pays).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from benchmarks.common import generated_classification, median, print_table, tabtrack_cmd, time_command


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        data = generated_classification(work / "rf20k.csv", rows=20_000, features=8)
        train = ["train", str(data), "--target", "y", "--model", "random_forest"]
        # One warm-up of each so the SQLite schema creation is not charged to the first timed run.
        time_command(tabtrack_cmd(*train), cwd=work, repeats=1)
        untracked, tracked = [], []
        for _ in range(args.repeats):  # interleaved, so drift in machine load hits both alike
            untracked += time_command(tabtrack_cmd(*train, "--no-track"), cwd=work, repeats=1)
            tracked += time_command(tabtrack_cmd(*train), cwd=work, repeats=1)
        help_times = time_command(tabtrack_cmd("--help"), cwd=work, repeats=args.repeats)
        version_times = time_command(tabtrack_cmd("--version"), cwd=work, repeats=args.repeats)

    ratio = median(tracked) / median(untracked)
    print(
        f"RF 20,000 x 8, median of {args.repeats}: tracked {median(tracked):.2f} s, untracked {median(untracked):.2f} s"
    )
    print_table(
        [
            ("tracked / untracked train (RF 20k x 8)", f"{ratio:.2f}x", "<= 1.15x", "yes" if ratio <= 1.15 else "NO"),
            (
                "tabtrack --help",
                f"{median(help_times):.3f} s",
                "<= 0.3 s",
                "yes" if median(help_times) <= 0.3 else "NO",
            ),
            (
                "tabtrack --version",
                f"{median(version_times):.3f} s",
                "<= 0.3 s",
                "yes" if median(version_times) <= 0.3 else "NO",
            ),
        ]
    )


if __name__ == "__main__":
    main()
