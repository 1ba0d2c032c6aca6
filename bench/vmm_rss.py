#!/usr/bin/env python3
"""Host side of bench/virtio_net.sh's memory rows: samples a VMM's RSS while its guest runs
bench/guest/bench_mem.sh.

usage: vmm_rss.py PID CONSOLE_LOG OUT_JSON

PID is the VMM process. The guest's console lines say where it is: "bench: mem idle" (booted,
nothing allocated), "touched" (MIB MiB written), "freeing" (about to remove them), "done" (WAIT
seconds after the removal). The RSS (VmRSS of /proc/PID/status, KiB) is sampled when "idle" and
"touched" show up, and every 0.2 s from "freeing" to "done". OUT_JSON gets {"idle", "touched",
"after"} in KiB (after: the last sample before "done"), "release_s" (seconds from "freeing" until
the RSS had fallen by 90% of its fall from "touched" to "after", null when that fall is less than
a quarter of what "touched" added) and the timeline from "freeing".
Exits 1, writing nothing, when the VMM or its guest stops before "done".
"""
import json
import sys
import time

PERIOD = 0.2


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise ProcessLookupError(pid)


def seen(log, step):
    try:
        with open(log, errors="replace") as f:
            return any(line.startswith(f"bench: mem {step}") for line in f)
    except FileNotFoundError:
        return False


def main():
    pid, log, out = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    res, timeline, t0 = {}, [], None
    try:
        for step in ("idle", "touched", "freeing", "done"):
            while not seen(log, step):
                if t0 is not None:
                    timeline.append((round(time.monotonic() - t0, 2), rss_kib(pid)))
                else:
                    rss_kib(pid)  # still there?
                if seen(log, "error"):
                    sys.exit(f"vmm_rss: the guest failed (see {log})")
                time.sleep(PERIOD)
            if step == "freeing":
                t0 = time.monotonic()
            elif step != "done":
                res[step] = rss_kib(pid)
    except (ProcessLookupError, FileNotFoundError):
        sys.exit(f"vmm_rss: the VMM (pid {pid}) exited before the guest was done")
    if not timeline:
        sys.exit("vmm_rss: no sample between freeing and done")
    res["after"] = timeline[-1][1]
    fall = res["touched"] - res["after"]
    res["release_s"] = None
    if fall > (res["touched"] - res["idle"]) / 4:
        res["release_s"] = next(t for t, v in timeline if res["touched"] - v >= 0.9 * fall)
    res["timeline"] = timeline
    with open(out, "w") as f:
        json.dump(res, f)


if __name__ == "__main__":
    main()
