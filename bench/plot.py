"""Draw the W1 sweep: server CPU µs per message and p99 round trip against the offered rate,
one line per target (median of the repetitions). Usage: plot.py SWEEP.jsonl OUT.png"""

import json
import statistics
import sys
from collections import defaultdict

try:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
except ImportError:
    sys.exit("plot.py needs matplotlib: python3 -m pip install matplotlib")


def main(src, out):
    runs = defaultdict(lambda: defaultdict(list))
    for line in open(src):
        d = json.loads(line)
        if d.get("delivered_ratio") != 1.0 or d.get("loader_saturated"):
            continue  # a run that lost messages or whose loader was saturated is not a point
        offered = round(d["params"]["conns"] * d["params"]["rate"])
        runs[d["label"]][offered].append((d["server_cpu_us_per_msg"], d["lat_us"]["p99"] / 1000.0))
    fig, (cpu, p99) = plt.subplots(1, 2, figsize=(11, 4.2))
    for label in sorted(runs):
        xs = sorted(runs[label])
        cpu.plot(xs, [statistics.median(c for c, _ in runs[label][x]) for x in xs], marker="o", label=label)
        p99.plot(xs, [statistics.median(p for _, p in runs[label][x]) for x in xs], marker="o", label=label)
    cpu.set(title="Server CPU per message", xlabel="offered rate (msg/s)", ylabel="µs / message")
    p99.set(title="Round trip p99", xlabel="offered rate (msg/s)", ylabel="ms", yscale="log")
    for ax in (cpu, p99):
        ax.grid(True, alpha=0.3)
        ax.legend()
    fig.suptitle("W1 echo, 500 connections, 32-byte messages, server pinned to one core")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    print(f"wrote {out}")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
