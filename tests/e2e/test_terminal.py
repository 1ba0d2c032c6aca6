"""process.terminal: the pty handed to --console-socket, consoleSize, /dev/console, and capsule relaying a tty."""
import array
import fcntl
import os
import pty
import select
import socket
import struct
import subprocess
import termios
import time

import pytest


def read_until(fd, needle, timeout=10):
    """Read a pty master until needle appears (or EOF); return everything read."""
    buf = b""
    deadline = time.time() + timeout
    while needle.encode() not in buf:
        left = deadline - time.time()
        assert left > 0, f"timed out waiting for {needle!r}, got {buf!r}"
        r, _, _ = select.select([fd], [], [], left)
        if not r:
            continue
        try:
            chunk = os.read(fd, 4096)
        except OSError:  # EIO: the slave side is closed
            break
        if not chunk:
            break
        buf += chunk
    return buf.decode(errors="replace")


class ConsoleSocket:
    def __init__(self, path):
        self.path = str(path)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(self.path)
        self.sock.listen(1)
        self.sock.settimeout(10)

    def receive_master(self):
        """Accept the runtime's connection and take the pty master out of SCM_RIGHTS."""
        conn, _ = self.sock.accept()
        with conn:
            fds = array.array("i")
            msg, anc, _, _ = conn.recvmsg(1024, socket.CMSG_SPACE(fds.itemsize))
            for level, kind, data in anc:
                if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                    fds.frombytes(data[:len(data) - len(data) % fds.itemsize])
        assert len(fds) == 1, "no fd received"
        return fds[0], msg

    def close(self):
        self.sock.close()
        os.unlink(self.path)


@pytest.fixture
def console(tmp_path):
    c = ConsoleSocket(tmp_path / "console.sock")
    yield c
    c.close()


def terminal_bundle(bundle, *args, size=None):
    bundle.config["process"]["terminal"] = True
    if size:
        bundle.config["process"]["consoleSize"] = {"height": size[0], "width": size[1]}
    return bundle.set_args(*args)


def create_with_console(capsule, bundle, console):
    capsule.run("create", "--console-socket", console.path, "-b", bundle.path, bundle.id, check=True)
    master, _ = console.receive_master()
    return master


def start_and_read(capsule, bundle, console, needle):
    """create with the console socket, start, and return what the pty shows up to needle."""
    master = create_with_console(capsule, bundle, console)
    try:
        capsule.run("start", bundle.id, check=True)
        return read_until(master, needle)
    finally:
        os.close(master)


def test_console_socket_receives_a_working_pty(capsule, bundle, console):
    terminal_bundle(bundle, "sh", "-c", "tty; test -t 0 && test -t 1 && test -t 2 && echo all-ttys; "
                                        "read line; echo got:$line; exit 4")
    master = create_with_console(capsule, bundle, console)
    try:
        assert os.isatty(master)
        capsule.run("start", bundle.id, check=True)
        out = read_until(master, "all-ttys")
        assert "/dev/pts/0" in out or "/dev/console" in out, out
        os.write(master, b"typed-in\n")
        out = read_until(master, "got:typed-in")
        assert "got:typed-in\r\n" in out
    finally:
        os.close(master)
    deadline = time.time() + 10
    while capsule.status(bundle.id) != "stopped":
        assert time.time() < deadline
        time.sleep(0.05)


def test_the_pty_is_the_controlling_terminal(capsule, bundle, console):
    # ^C typed on the terminal reaches the foreground process as SIGINT
    terminal_bundle(bundle, "sh", "-c", "trap 'echo got-int; exit 0' INT; echo ready; while :; do sleep 0.1; done")
    master = create_with_console(capsule, bundle, console)
    try:
        capsule.run("start", bundle.id, check=True)
        read_until(master, "ready")
        os.write(master, b"\x03")
        assert "got-int" in read_until(master, "got-int")
    finally:
        os.close(master)


def test_console_size(capsule, bundle, console):
    terminal_bundle(bundle, "sh", "-c", "stty size; echo done", size=(33, 111))
    out = start_and_read(capsule, bundle, console, "done")
    assert "33 111\r\n" in out


def test_dev_console_is_the_pty(capsule, bundle, console):
    terminal_bundle(bundle, "sh", "-c", "stat -c '%t %F' /dev/console; echo done")
    out = start_and_read(capsule, bundle, console, "done")
    # pty slaves have major 136 (0x88)
    assert "88 character special file" in out


def test_terminal_without_console_socket_is_refused(capsule, bundle):
    terminal_bundle(bundle, "true")
    p = capsule.run("create", "-b", bundle.path, bundle.id)
    assert p.returncode != 0 and "console-socket" in p.stderr
    assert not os.path.exists(os.path.join(capsule.root, bundle.id))
    d = capsule.run("run", "-d", "-b", bundle.path, bundle.id)
    assert d.returncode != 0 and "console-socket" in d.stderr


def spawn_under_pty(cmd, rows=None, cols=None):
    """Start cmd with a new pty as its stdio and controlling terminal; return (Popen, master)."""
    master, slave = pty.openpty()
    if rows:
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
    p = subprocess.Popen(cmd, stdin=slave, stdout=slave, stderr=slave, start_new_session=True,
                         preexec_fn=lambda: fcntl.ioctl(0, termios.TIOCSCTTY, 0))
    os.close(slave)
    return p, master


def test_run_foreground_relays_the_terminal(capsule, bundle):
    terminal_bundle(bundle, "sh", "-c", "tty; stty size; echo ready; read line; echo got:$line; exit 7")
    p, master = spawn_under_pty(capsule.cmd("run", "-b", bundle.path, bundle.id), rows=25, cols=90)
    try:
        out = read_until(master, "ready")
        assert "/dev/pts/0" in out or "/dev/console" in out, out
        # capsule copies its own terminal's size to the container's
        assert "25 90" in out
        os.write(master, b"hello\n")
        assert "got:hello" in read_until(master, "got:hello")
        assert p.wait(timeout=10) == 7
    finally:
        os.close(master)
        if p.poll() is None:
            p.kill()
            p.wait()
    # run without --keep deleted the container
    assert capsule.run("state", bundle.id).returncode != 0


def test_exec_tty_with_console_socket(capsule, bundle, console):
    bundle.set_args("sleep", "100")
    capsule.run("run", "-d", "-b", bundle.path, bundle.id, check=True)
    p = subprocess.Popen(capsule.cmd("exec", "-t", "-d", "--console-socket", console.path, bundle.id,
                                     "sh", "-c", "tty; read x; echo exec-got:$x"),
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    master, _ = console.receive_master()
    try:
        _, err = p.communicate(timeout=10)
        assert p.returncode == 0, err
        out = read_until(master, "/dev/pts/")
        assert "/dev/pts/" in out
        os.write(master, b"abc\n")
        assert "exec-got:abc" in read_until(master, "exec-got:abc")
    finally:
        os.close(master)


def test_exec_tty_foreground_relays(capsule, bundle):
    bundle.set_args("sleep", "100")
    capsule.run("run", "-d", "-b", bundle.path, bundle.id, check=True)
    p, master = spawn_under_pty(capsule.cmd("exec", "-t", bundle.id, "sh", "-c", "test -t 0 && echo is-tty; exit 3"))
    try:
        assert "is-tty" in read_until(master, "is-tty")
        assert p.wait(timeout=10) == 3
    finally:
        os.close(master)
        if p.poll() is None:
            p.kill()
            p.wait()


def test_exec_tty_has_the_window_size_from_the_start(capsule, bundle):
    """capsule sizes the pty before the exec'd process runs: a process that asks at once sees it, every time."""
    bundle.set_args("sleep", "100")
    capsule.run("run", "-d", "-b", bundle.path, bundle.id, check=True)
    for attempt in range(20):
        p, master = spawn_under_pty(capsule.cmd("exec", "-t", bundle.id, "stty", "size"), rows=37, cols=123)
        try:
            out = read_until(master, "\n")
            assert p.wait(timeout=10) == 0
        finally:
            os.close(master)
            if p.poll() is None:
                p.kill()
                p.wait()
        assert out.strip() == "37 123", f"attempt {attempt}: {out!r}"


def test_no_terminal_means_no_tty(capsule, bundle):
    bundle.set_args("sh", "-c", "tty; test -e /dev/console && echo has-console; true")
    p = capsule.run("run", "-b", bundle.path, bundle.id)
    assert p.returncode == 0
    assert p.stdout.startswith("not a tty")
    assert "has-console" not in p.stdout
