#!/usr/bin/env python3
"""Time commands in alternating rounds: each round runs every command once, in an order rotated by
one from the round before, so a drift of the machine (another job, the page cache, the cgroups'
RCU state) falls on every command alike. hyperfine runs each command's whole batch in turn instead,
and on a 2-CPU machine the batches' order alone moved a median by up to 4 ms.

    bench/alternate.py RUNS WARMUP PAUSE OUT.json NAME=COMMAND...

Each command is split on spaces and run without a shell, its output discarded; PAUSE seconds of
idle come before each run, untimed. A run that fails ends the benchmark with status 1 and its
stderr. OUT.json gets {"results": [{"command": NAME, "times": [...], "user": [...], "system": [...]},
...]}: each run's wall, user CPU and system CPU seconds (its children's included), the warm-up
rounds left out."""
import json
import resource
import subprocess
import sys
import time


def main():
    runs, warmup, pause, out = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
    commands = [arg.split("=", 1) for arg in sys.argv[5:]]
    results = {name: {"command": name, "times": [], "user": [], "system": []} for name, _ in commands}
    for round_ in range(warmup + runs):
        k = round_ % len(commands)
        for name, command in commands[k:] + commands[:k]:
            time.sleep(pause)
            # The reaped children's CPU times accumulate: the difference is this run's.
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            start = time.perf_counter()
            p = subprocess.run(command.split(), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True)
            took = time.perf_counter() - start
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            if p.returncode != 0:
                sys.exit(f"alternate: {name} failed (exit {p.returncode}): {p.stderr.strip()}")
            if round_ >= warmup:
                r = results[name]
                r["times"].append(took)
                r["user"].append(after.ru_utime - before.ru_utime)
                r["system"].append(after.ru_stime - before.ru_stime)
    with open(out, "w") as f:
        json.dump({"results": [results[name] for name, _ in commands]}, f)


if __name__ == "__main__":
    main()
