#!/usr/bin/env python3
"""The table of bench/virtio_net.sh, from the logs its boots left.

usage: virtio_net_report.py LOGDIR RUNS "CONFIG..." "SKIPPED..."

Each boot left LOGDIR/CONFIG-RUN.{log,err,rc} (and .json for the memory boots, from
bench/vmm_rss.py). A cell is the median of the runs (min-max); a configuration that gave no
number in some run is "not available", with the reason, and makes this exit 1. SKIPPED
configurations (qemu-vhost without /dev/vhost-net) are reported as such and do not.
"""
import json
import re
import statistics
import sys

MIB = 1024

# (row, capsule's configuration, QEMU's, what, higher is better)
ROWS = [("tap guest->host (Mbit/s)", "capsule-tap", "qemu-tap", "g2h", True),
        ("tap host->guest (Mbit/s)", "capsule-tap", "qemu-tap", "h2g", True),
        ("passt guest->host (Mbit/s)", "capsule-passt", "qemu-passt", "g2h", True),
        ("passt host->guest (Mbit/s)", "capsule-passt", "qemu-passt", "h2g", True),
        ("slirp guest->host (Mbit/s)", "capsule-slirp", "qemu-slirp", "g2h", True),
        ("slirp host->guest (Mbit/s)", "capsule-slirp", "qemu-slirp", "h2g", True),
        ("reference: tap guest->host vs QEMU vhost-net (Mbit/s)", "capsule-tap", "qemu-vhost", "g2h", True),
        ("reference: tap host->guest vs QEMU vhost-net (Mbit/s)", "capsule-tap", "qemu-vhost", "h2g", True),
        ("RSS idle after boot (MiB)", "capsule-mem", "qemu-mem", "idle", False),
        ("RSS after the guest wrote the block (MiB)", "capsule-mem", "qemu-mem", "touched", False),
        ("RSS once it freed it and idled (MiB)", "capsule-mem", "qemu-mem", "after", False),
        ("time until 90% of that fall (s)", "capsule-mem", "qemu-mem", "release_s", False)]


def main():
    logs, runs = sys.argv[1], int(sys.argv[2])
    configs, skipped = sys.argv[3].split(), sys.argv[4].split()

    def read(name):
        try:
            with open(f"{logs}/{name}", errors="replace") as f:
                return f.read()
        except FileNotFoundError:
            return None

    def why_not(base):
        """Why a boot gave no number: the guest's error, else the last word of the VMM or of the
        RSS sampler, else the exit status."""
        log = read(f"{base}.log") or ""
        m = re.search(r"^bench: (?:net|mem) error: (.*)$", log, re.M)
        if m:
            return m.group(1).strip()
        rc = (read(f"{base}.rc") or "?").strip()
        lines = [l.strip() for name in (".err", ".rss.err", ".passt.log")
                 for l in (read(base + name) or "").splitlines() if l.strip()]
        if lines:
            return f"exit {rc}: {lines[-1]}"
        return f"exit {rc}, no result"

    def sample(config, what, run):
        """One run's value; None when it was not booted (an earlier run failed); a string
        saying why when it gave no number."""
        base = f"{config}-{run}"
        if read(f"{base}.rc") is None:
            return None
        if config.endswith("-mem"):
            try:
                v = json.loads(read(f"{base}.json") or "")[what]
            except (ValueError, KeyError):
                return f"run {run}: {why_not(base)}"
            if v is None:
                return f"run {run}: its RSS fell by less than a quarter of what the block added"
            return v / MIB if what != "release_s" else v
        m = re.search(rf"^bench: net {what} mbps=([0-9.]+)", read(f"{base}.log") or "", re.M)
        return float(m.group(1)) if m else f"run {run}: {why_not(base)}"

    def column(config, what):
        """(median, min, max, per-run values) or the reason there is none."""
        if config in skipped:
            return "skipped: no /dev/vhost-net"
        if config not in configs:
            return "not run (CONFIGS)"
        vals = [v for v in (sample(config, what, r) for r in range(1, runs + 1)) if v is not None]
        bad = [v for v in vals if isinstance(v, str)]
        if bad or not vals:
            return bad[0] if bad else "no run"
        return statistics.median(vals), min(vals), max(vals), vals

    print()
    print("| row | capsule | QEMU | capsule/QEMU | per run | runs |")
    print("|---|--:|--:|--:|--:|--:|")
    notes, failed = {}, False
    for name, cap, qemu, what, higher in ROWS:
        cols = [column(cap, what), column(qemu, what)]
        cells = []
        for (config, col) in zip((cap, qemu), cols):
            if isinstance(col, str):
                quiet = col.startswith("skipped") or col.startswith("not run")
                cells.append(col.split(":")[0] if quiet else "not available")
                if not quiet:
                    notes.setdefault(config, col)
                failed |= not quiet
            else:
                fmt = "{:.2f}" if what == "release_s" else "{:.0f}" if higher else "{:.1f}"
                cells.append(f"{fmt.format(col[0])} ({fmt.format(col[1])}-{fmt.format(col[2])})")
        ratio = paired = "-"
        if not any(isinstance(c, str) for c in cols) and cols[1][0] > 0:
            ratio = f"**{cols[0][0] / cols[1][0]:.2f}**"
            # The boots of a run ran close together, under about the same load.
            pairs = [c / q for c, q in zip(cols[0][3], cols[1][3]) if q > 0]
            if pairs:
                paired = f"{statistics.median(pairs):.2f}"
        print(f"| {name} | {cells[0]} | {cells[1]} | {ratio} | {paired} | {runs} |")
    print()
    print("medians (min-max) of the runs and their ratio; per run: the median of the runs' own ratios;")
    print("throughput: higher is better; RSS and time: lower is better; logs in build/bench-virtio-net/")
    for what in ("g2h", "h2g"):
        p, s = column("capsule-passt", what), column("capsule-slirp", what)
        if not isinstance(p, str) and not isinstance(s, str) and s[0] > 0:
            print(f"capsule's user-mode back-ends, {what}: passt/slirp {p[0] / s[0]:.2f}")
    for config, why in notes.items():
        print(f"not available: {config}: {why}")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
