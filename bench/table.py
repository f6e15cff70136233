#!/usr/bin/env python3
"""The ratio table of one run of the benchmarks, as Markdown.

Usage: python3 bench/table.py STAMP [OUT_DIR]

Reads every `<workload>-STAMP.jsonl` that the workload scripts wrote to OUT_DIR (default
bench/out) and prints one row per figure: the median per target, and for ours the median of
the per-repetition ratios ours / peer (W8: wss / plain of the same target). Standard library
only, so it runs wherever the benchmarks run.
"""

import glob
import json
import os
import statistics
import sys

# Workloads: (file prefix, title, [(figure, JSON key or function of the line)]).


def p(k):
    return lambda d: (d.get("lat_us") or {}).get(k)


def hs(k):
    return lambda d: (d.get("handshake_us") or {}).get(k)


ECHO = [
    ("server CPU µs/msg", "server_cpu_us_per_msg"),
    ("p50 µs", p("p50")),
    ("p99 µs", p("p99")),
    ("msgs/s", "msgs_per_s"),
    ("delivered ratio", "delivered_ratio"),
    ("errors", "errors"),
    ("loader CPU %", "loader_cpu_pct"),
]
BROADCAST = [
    ("server CPU µs/delivery", "server_cpu_us_per_delivery"),
    ("deliveries/s", "deliveries_per_s"),
    ("delivered ratio", "delivered_ratio"),
    ("p99 µs", p("p99")),
]
WORKLOADS = [
    ("w1-echo-100x100", "W1 echo 10k msg/s (100 x 100)", ECHO),
    ("w1-echo-500x100", "W1 echo 50k msg/s (500 x 100)", ECHO),
    ("w2-closed", "W2 closed loop, 50 conns", [
        ("msgs/s", "msgs_per_s"),
        ("server CPU %", "server_cpu_pct"),
        ("server CPU µs/msg", "server_cpu_us_per_msg"),
        ("loader CPU %", "loader_cpu_pct"),
        ("p99 µs", p("p99")),
    ]),
    ("w3-broadcast-1000r-10hz", "W3 1000 receivers x 10 msg/s", BROADCAST),
    ("w3-broadcast-2000r-10hz", "W3 2000 receivers x 10 msg/s", BROADCAST),
    ("w3-broadcast-1000r-100hz", "W3 1000 receivers x 100 msg/s", BROADCAST),
    ("w3-broadcast-2000r-100hz", "W3 2000 receivers x 100 msg/s", BROADCAST),
    ("w4-storm", "W4 storm, 10,000 connects, 256 in flight", [
        ("accepts/s", "accepts_per_s"),
        ("handshake p99 µs", hs("p99")),
        ("failures", "failures"),
        ("server CPU µs/accept", "server_cpu_us_per_accept"),
    ]),
    ("w5-idle", "W5 idle connections", [
        ("server bytes/conn (user space)", "server_bytes_per_conn"),
        ("kernel slab bytes/conn (both ends)", "kernel_slab_bytes_per_conn_both_ends"),
        ("connections opened", "opened"),
        ("failures", "failures"),
    ]),
    ("w5-idle-100k", "W5 100k idle connections (ours, several gateways)", [
        ("connections opened", "opened"),
        ("failures", "failures"),
        ("server bytes/conn (user space)", "server_bytes_per_conn"),
        ("gateway + other processes", "server_procs"),
    ]),
    ("w6-reload", "W6 reload under load (ours; label = business workers)", [
        ("lost messages", "lost"),
        ("closed connections", "closed_connections"),
        ("max RTT µs", "rtt_max_us"),
        ("workers replaced", lambda d: 1 if d.get("workers_replaced") else 0),
    ]),
    ("w7-syscalls", "W7 syscalls per echoed message (label-conns x 100 msg/s)", [
        ("syscalls/msg", "syscalls_per_msg"),
        ("epoll_ctl/msg", "epoll_ctl_per_msg"),
    ]),
]


def load(path):
    rows = []
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line:
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError:
                    pass
    return rows


def value(d, key):
    v = key(d) if callable(key) else d.get(key)
    return v if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def fmt(v):
    if v is None:
        return "-"
    if abs(v) >= 1000:
        return f"{v:,.0f}"
    if abs(v) >= 100:
        return f"{v:.0f}"
    return f"{v:.3g}"


def label_of(prefix, d):
    if prefix == "w7-syscalls":
        return f"{d.get('label')}-{d.get('conns')}"
    return str(d.get("label"))


def table(prefix, title, figures, rows, ratio_to):
    """ratio_to: list of (numerator label, denominator label)."""
    labels = list(dict.fromkeys(label_of(prefix, d) for d in rows))
    head = ["figure"] + labels + [f"{a} / {b}" for a, b in ratio_to]
    out = [f"**{title}**", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, key in figures:
        cells = [name]
        for lab in labels:
            vals = [v for d in rows if label_of(prefix, d) == lab and (v := value(d, key)) is not None]
            cells.append(fmt(statistics.median(vals)) if vals else "-")
        for a, b in ratio_to:
            by_rep = {}
            for d in rows:
                v = value(d, key)
                if v is not None:
                    by_rep.setdefault(d.get("rep", 1), {})[label_of(prefix, d)] = v
            ratios = [r[a] / r[b] for r in by_rep.values() if a in r and b in r and r[b]]
            cells.append(f"{statistics.median(ratios):.2f}x" if ratios else "-")
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out)


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    stamp = sys.argv[1]
    out_dir = sys.argv[2] if len(sys.argv) > 2 else os.path.join(os.path.dirname(__file__), "out")
    printed = 0
    for prefix, title, figures in WORKLOADS:
        path = os.path.join(out_dir, f"{prefix}-{stamp}.jsonl")
        if not os.path.exists(path):
            continue
        rows = load(path)
        labels = list(dict.fromkeys(label_of(prefix, d) for d in rows))
        ratio_to = [("ours", peer) for peer in labels if "ours" in labels and peer not in ("ours",)]
        if prefix.startswith("w7") or prefix.startswith("w5-idle-100k") or prefix.startswith("w6"):
            ratio_to = []
        print(table(prefix, title, figures, rows, ratio_to) + "\n")
        printed += 1
    for kind, title, figures in [
        ("echo", "W8 wss vs ws, echo 100 x 100 msg/s", ECHO[:3]),
        ("storm", "W8 wss vs ws, storm of 2,000 connects", next(f for w, _, f in WORKLOADS if w == "w4-storm")),
    ]:
        for path in sorted(glob.glob(os.path.join(out_dir, f"w8-tls-{kind}-*-{stamp}.jsonl"))):
            target = os.path.basename(path)[len(f"w8-tls-{kind}-"):-len(f"-{stamp}.jsonl")]
            rows = load(path)
            print(table("w8", f"{title} ({target})", figures, rows, [("tls", "plain")]) + "\n")
            printed += 1
    if not printed:
        sys.exit(f"no results for stamp {stamp} in {out_dir}")


if __name__ == "__main__":
    main()
