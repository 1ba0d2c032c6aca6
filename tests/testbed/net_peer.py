"""The host's end of tests/testbed/test_virtio_net.py's transfers, run inside the testbed
(its busybox-free root has no nc):
  net_peer.py sink PORT OUT       accept one connection, read until the guest closes, then
                                  close; write "BYTES MD5" to OUT
  net_peer.py source PORT FILE    accept one connection, send FILE, close
  net_peer.py poke ADDR PORT      connect (retrying for a minute), then close
Listens on every address of the namespace it runs in."""
import hashlib
import socket
import sys
import time


def accept_one(port):
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("0.0.0.0", port))
    srv.listen(1)
    conn, _ = srv.accept()
    srv.close()
    return conn


def sink(port, out):
    conn = accept_one(port)
    md5, total = hashlib.md5(), 0
    while chunk := conn.recv(1 << 16):
        md5.update(chunk)
        total += len(chunk)
    conn.close()
    with open(out, "w") as f:
        f.write(f"{total} {md5.hexdigest()}\n")


def source(port, path):
    conn = accept_one(port)
    with open(path, "rb") as f:
        conn.sendfile(f)
    conn.close()


def poke(addr, port):
    deadline = time.monotonic() + 60
    while True:
        try:
            socket.create_connection((addr, port), timeout=5).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(1)


if __name__ == "__main__":
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "sink":
        sink(int(args[0]), args[1])
    elif cmd == "source":
        source(int(args[0]), args[1])
    elif cmd == "poke":
        poke(args[0], int(args[1]))
    else:
        sys.exit(f"net_peer.py: unknown command {cmd}")
