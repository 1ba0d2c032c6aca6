"""A capsule boot in the testbed that overran its time: record what it was doing, then kill it
with a bounded wait, so that a hang fails its test with evidence instead of hanging the run.

The report opens with the verdict (did SIGKILL end it; CPU time each thread spent over a few
seconds: one whose time grows is spinning, in KVM_RUN or elsewhere, one whose time does not is
blocked), then gdb's backtrace of every thread (gdb bounded: its attach waits for every thread to
stop, which one stuck in the kernel never does), then for capsule and its descendants (passt,
virtiofsd...) every thread's state, system call, signals, wchan and kernel stack, twice, the
console's tail, and /proc again for whatever SIGKILL left. The testbed's kernel has neither
CONFIG_STACKTRACE nor KALLSYMS: there the system call line (ioctl 0xae80 is KVM_RUN) and the
CPU time are what tell where a thread is.

From Python: `wait(popen, limit, report, console)` or `end(...)`; from a shell, for a process
that is not this one's child: `python3 stuck.py PID LIMIT REPORT CONSOLE`, exit status 0 when
PID ended by itself, 1 when it overran and SIGKILL ended it, 2 when it survived SIGKILL."""
import bisect
import os
import pathlib
import re
import signal
import subprocess
import sys
import time

# guest_init's last line before it powers the guest off.
POWEROFF_LINE = re.compile(rb"guest: script \S+ exit \d+")
# From that line to the VMM's exit: a loaded testbed needs seconds, never minutes.
POWEROFF_GRACE = 90
KILL_WAIT = 30
GDB_LIMIT = 120
GDB_TIMED_OUT = f"<gdb did not finish within {GDB_LIMIT} s>"
SAMPLE_GAP = 5
CONSOLE_LINES = 60
RIP_SAMPLES = 5
KVM_GET_REGS = 0x8090AE81  # _IOR(KVMIO, 0x81, struct kvm_regs)
REPORT_CHARS = 40000  # of a report in a failing test's message


def _read(path):
    try:
        return pathlib.Path(path).read_text(errors="replace").strip()
    except OSError as e:
        return f"<{e.strerror}>"


def _stat(pid):
    """(state, parent, CPU ticks, of which in a guest) from /proc/PID/stat, or None once it is gone."""
    try:
        s = pathlib.Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    f = s[s.rindex(")") + 2:].split()
    return f[0], int(f[1]), int(f[11]) + int(f[12]), int(f[40])


def descendants(pid):
    """pid's children, their children..., by walking every process's parent."""
    parents = {}
    for d in pathlib.Path("/proc").iterdir():
        if d.name.isdigit():
            st = _stat(d.name)
            if st:
                parents[int(d.name)] = st[1]
    found, todo = [], [pid]
    while todo:
        p = todo.pop()
        kids = [c for c, pp in parents.items() if pp == p]
        found += kids
        todo += kids
    return found


def tasks(pid):
    """Every thread of pid as the kernel sees it, one block per thread."""
    head = _read(f"/proc/{pid}/cmdline").replace("\0", " ")
    out = [f"== pid {pid}: {head}"]
    try:
        tids = sorted(os.listdir(f"/proc/{pid}/task"), key=int)
    except OSError as e:
        return f"== pid {pid}: gone ({e.strerror})"
    for tid in tids:
        t = f"/proc/{pid}/task/{tid}"
        st = _stat(f"{pid}/task/{tid}")
        status = _read(f"{t}/status")
        sig = " ".join(line for line in status.splitlines() if line.startswith(("SigPnd", "ShdPnd", "SigBlk")))
        out.append(f"-- tid {tid} ({_read(f'{t}/comm')}) state {st[0] if st else '?'} cpu_ticks "
                   f"{st[2] if st else '?'} wchan {_read(f'{t}/wchan')} syscall {_read(f'{t}/syscall')}\n"
                   f"   {sig}\n   stack: " + _read(f"{t}/stack").replace("\n", "\n          "))
    return "\n".join(out)


def snapshot(pids):
    return "\n".join(tasks(p) for p in pids)


def cpu_ticks(pids):
    """{tid: (CPU ticks so far, of which in a guest)} for every thread of pids."""
    ticks = {}
    for pid in pids:
        try:
            tids = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue
        for tid in tids:
            st = _stat(f"{pid}/task/{tid}")
            if st:
                ticks[int(tid)] = st[2:4]
    return ticks


def gdb(pid, *commands):
    args = ["gdb", "-p", str(pid), "-batch"]
    for c in commands:
        args += ["-ex", c]
    try:
        r = subprocess.run(args, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=GDB_LIMIT)
        return r.stdout + r.stderr
    except FileNotFoundError:
        return "<no gdb>"
    except subprocess.TimeoutExpired as e:
        # Killing gdb detaches it; what it printed before it stuck still helps.
        return f"{e.stdout or ''}{e.stderr or ''}\n{GDB_TIMED_OUT}"


def vcpu_fds(pid):
    """{vCPU index: fd} from the process's open files."""
    fds = {}
    try:
        names = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return fds
    for fd in names:
        try:
            m = re.fullmatch(r"anon_inode:kvm-vcpu:(\d+)", os.readlink(f"/proc/{pid}/fd/{fd}"))
        except OSError:
            continue
        if m:
            fds[int(m.group(1))] = int(fd)
    return fds


def kernel_symbols():
    """The guest kernel's text symbols, sorted (it is not relocated: no KASLR)."""
    try:
        out = subprocess.run(["nm", "-n", os.environ["CAPSULE_KERNEL"]], capture_output=True, text=True,
                             timeout=60).stdout
    except (KeyError, OSError, subprocess.TimeoutExpired):
        return []
    syms = []
    for line in out.splitlines():
        f = line.split()
        if len(f) == 3 and f[1] in "tTwW":
            syms.append((int(f[0], 16), f[2]))
    return syms


def symbol(syms, addr):
    i = bisect.bisect_right(syms, (addr, "\uffff")) - 1
    return f"{syms[i][1]}+{addr - syms[i][0]:#x}" if i >= 0 else "?"


def guest_places(pid):
    """Where each vCPU's guest is, RIP_SAMPLES times: gdb stops the VMM (a stop takes its vCPUs
    out of KVM_RUN) and has it ask KVM for their registers itself, since KVM answers no other
    process. The guest's RIP is named from the guest kernel's symbols."""
    fds = vcpu_fds(pid)
    if not fds:
        return "<no vCPU>"
    # Only the calling thread may run during the calls: a vCPU thread let go would enter
    # KVM_RUN again, and KVM_GET_REGS waits for KVM_RUN to return.
    cmds = ["set scheduler-locking on", "set $r = ((void *(*)(unsigned long)) malloc)(256)"]
    for i, fd in sorted(fds.items()):
        cmds += [f"set $ok = ((int (*)(int, unsigned long, void *)) ioctl)({fd}, {KVM_GET_REGS:#x}, $r)",
                 f'printf "vcpu{i} rip %#lx rsp %#lx rflags %#lx (KVM_GET_REGS %d)\\n", '
                 f"((unsigned long *) $r)[16], ((unsigned long *) $r)[6], ((unsigned long *) $r)[17], $ok"]
    syms = kernel_symbols()
    lines = []
    for _ in range(RIP_SAMPLES):
        out = gdb(pid, *cmds)
        found = re.findall(r"^(vcpu\d+) rip (0x[0-9a-f]+|0)(.*)$", out, re.M)
        lines += [f"{v} rip {rip} {symbol(syms, int(rip, 16))}{rest}" for v, rip, rest in found]
        if not found:
            lines.append(out[-2000:])
        if out.endswith(GDB_TIMED_OUT):
            break
        time.sleep(0.5)
    return "\n".join(lines)


def console_tail(console):
    try:
        text = pathlib.Path(console).read_text(errors="replace").replace("\r", "")
    except (OSError, TypeError):
        return "<no console>"
    return "\n".join(text.splitlines()[-CONSOLE_LINES:])


def gone(pid):
    """pid has exited: no /proc entry, or a zombie with no thread left (a zombie leader whose
    other threads are still in the kernel has not exited)."""
    st = _stat(pid)
    if st is None:
        return True
    try:
        return st[0] == "Z" and os.listdir(f"/proc/{pid}/task") == [str(pid)]
    except OSError:
        return True


def stop(pid, report, console, why, reap=None):
    """Write the report on pid, SIGKILL it and wait up to KILL_WAIT s. reap(timeout) waits
    for our own child. True when it is gone."""
    family = [pid] + descendants(pid)
    stacks = gdb(pid, "thread apply all bt")
    # A gdb that could not stop every thread would not do better five more times.
    places = "<skipped: gdb did not finish>" if stacks.endswith(GDB_TIMED_OUT) else guest_places(pid)
    first = snapshot(family)
    before = cpu_ticks(family)
    time.sleep(SAMPLE_GAP)
    after = cpu_ticks(family)
    spent = {tid: tuple(a - b for a, b in zip(after[tid], before.get(tid, (0, 0)))) for tid in after}
    second = snapshot(family)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    t = time.monotonic()
    if reap:
        try:
            reap(KILL_WAIT)
        except subprocess.TimeoutExpired:
            pass
    while not gone(pid) and time.monotonic() - t < KILL_WAIT:
        time.sleep(0.2)
    dead = gone(pid)
    killed = f"SIGKILL: {'gone' if dead else 'STILL THERE'} after {time.monotonic() - t:.1f} s"
    # Its helpers die with it (PR_SET_PDEATHSIG): give them a moment.
    while any(not gone(p) for p in family) and time.monotonic() - t < KILL_WAIT + 5:
        time.sleep(0.2)
    left = [p for p in family if not gone(p)]
    parts = [f"capsule (pid {pid}) {why}; its family: {family}; {killed}",
             f"CPU ticks ({os.sysconf('SC_CLK_TCK')}/s) per thread in {SAMPLE_GAP} s (all, in the guest): {spent}",
             f"---- the guest's vCPUs, {RIP_SAMPLES} looks", places,
             "---- gdb: thread apply all bt", stacks,
             "---- /proc, first look", first,
             f"---- /proc, {SAMPLE_GAP} s later", second,
             f"---- console (last {CONSOLE_LINES} lines)", console_tail(console)]
    if left:
        parts += [f"---- /proc after SIGKILL: {left} left", snapshot(left)]
    pathlib.Path(report).write_text("\n".join(parts) + "\n")
    return dead


def overran(pid, limit, console, done):
    """Wait until done() or an overrun: limit s in all, or POWEROFF_GRACE s after the guest
    said it powers off. The overrun's description, or None."""
    t0 = time.monotonic()
    off = None
    while not done():
        now = time.monotonic()
        if off is None:
            try:
                if POWEROFF_LINE.search(pathlib.Path(console).read_bytes()):
                    off = now
            except OSError:
                pass
        if off is not None and now - off > POWEROFF_GRACE:
            return f"had not exited {POWEROFF_GRACE} s after the guest's last line before its power-off"
        if now - t0 > limit:
            return f"was still running after {limit} s"
        time.sleep(0.5)
    return None


def end(p, report, console, why):
    """stop() our child p (a Popen): "timeout" once it is gone, "unkillable" when it survived SIGKILL."""
    return "timeout" if stop(p.pid, report, console, why, p.wait) else "unkillable"


def wait(p, limit, report, console):
    """Wait for our child p; after an overrun, end() it. Its exit status, or end()'s word."""
    why = overran(p.pid, limit, console, lambda: p.poll() is not None)
    return p.returncode if why is None else end(p, report, console, why)


def report_tail(report):
    """The report's end for a failing test's message; "" when the boot did not overrun."""
    p = pathlib.Path(report)
    return f"\n--- capsule overran ({p.parent.name}/{p.name})\n{p.read_text(errors='replace')[:REPORT_CHARS]}" \
        if p.exists() else ""


def main(pid, limit, report, console):
    pid = int(pid)
    why = overran(pid, int(limit), console, lambda: gone(pid))
    if why is None:
        return 0
    return 1 if stop(pid, report, console, why) else 2


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
