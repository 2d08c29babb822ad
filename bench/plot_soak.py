"""Plots a soak's samples (bench/soak.sh's soak.csv): RSS and open file
descriptors of `ferry serve` over time. Usage: plot_soak.py CSV PNG"""
import csv
import subprocess
import sys

try:
    import matplotlib
except ImportError:
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "matplotlib"], check=True)
    import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt

rows = [r for r in csv.DictReader(open(sys.argv[1])) if r["rss_mib"]]
t = [float(r["t_s"]) / 60 for r in rows]
fig, ax = plt.subplots(figsize=(8, 4))
ax.plot(t, [float(r["rss_mib"]) for r in rows], label="RSS (MiB)")
ax.plot(t, [float(r["fds"]) for r in rows], label="open file descriptors")
ax.set_xlabel("minutes")
ax.set_ylim(bottom=0)
ax.set_title(f"ferry serve soak: {rows[-1]['rounds']} rounds of jobs, 32 MiB budget")
ax.legend()
fig.tight_layout()
fig.savefig(sys.argv[2], dpi=100)
