#!/usr/bin/env python3
"""Plots bench/stress.sh's results.csv: peak RSS and aggregate throughput
against concurrency, one line per tool, and the RSS target (budget + 32 MiB)
when given. Usage: plot.py RESULTS.csv OUT.png [TARGET_MIB]"""
import csv
import subprocess
import sys

try:
    import matplotlib
except ImportError:  # installed on first use, from PyPI
    subprocess.check_call([sys.executable, "-m", "pip", "install", "-q", "matplotlib"])
    import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

LABELS = {"ferry": "ferry serve (1 process)", "rclone": "rclone copyurl (N processes)",
          "awscli": "curl | aws s3 cp - (N processes)"}


def main(results, out, target=None):
    rows = list(csv.DictReader(open(results)))
    tools = sorted({r["tool"] for r in rows}, key=list(LABELS).index)
    fig, (rss_ax, mbs_ax) = plt.subplots(1, 2, figsize=(11, 4.2))
    for tool in tools:
        mine = sorted((r for r in rows if r["tool"] == tool), key=lambda r: int(r["concurrency"]))
        n = [int(r["concurrency"]) for r in mine]
        rss_ax.plot(n, [float(r["peak_rss_mib"]) for r in mine], marker="o", label=LABELS.get(tool, tool))
        mbs_ax.plot(n, [float(r["mb_per_s"]) for r in mine], marker="o", label=LABELS.get(tool, tool))
    if target:
        rss_ax.axhline(target, color="grey", linestyle="--", label=f"target: budget + 32 MiB ({target:g} MiB)")
    rss_ax.set_yscale("log")
    rss_ax.set_title("Peak RSS (MiB, log scale)")
    mbs_ax.set_title("Aggregate throughput (MB/s)")
    mbs_ax.set_ylim(bottom=0)
    for ax in (rss_ax, mbs_ax):
        ax.set_xlabel("concurrent 1 GiB URL -> S3 transfers")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=110)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], float(sys.argv[3]) if len(sys.argv) > 3 else None)
