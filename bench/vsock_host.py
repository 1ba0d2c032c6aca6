#!/usr/bin/env python3
"""Host side of bench/virtio_io.sh's vsock rows; the guest runs tests/guest/vsock_bench.

usage: vsock_host.py qemu CID HOSTPORT GUESTPORT MIB RUNS OUT
       vsock_host.py capsule SOCKET HOSTPORT GUESTPORT MIB RUNS OUT

qemu: the kernel's AF_VSOCK (vhost-vsock); capsule: its hybrid vsock, whose guest connections to
host port P arrive on the Unix socket SOCKET_P and whose host connections start with
"CONNECT <port>\\n" on SOCKET, answered "OK <hostport>\\n". RUNS times: accept the guest's
connection and time MIB MiB until the last byte is in (guest to host), acknowledge it with one
byte; then connect to the guest and time sending MIB MiB until the guest's one-byte
acknowledgement (host to guest). Writes one JSON object to OUT: the seconds of every run in each
direction. Listening starts before the VM does."""
import json
import os
import socket
import sys
import time

CHUNK = 256 * 1024
TIMEOUT = 900  # the VM's own limit in virtio_io.sh


def recv_exactly(sock, n):
    buf = bytearray(CHUNK)
    view = memoryview(buf)
    while n > 0:
        got = sock.recv_into(view[:min(n, CHUNK)])
        if got == 0:
            raise RuntimeError(f"connection closed with {n} bytes to go")
        n -= got


def recv_line(sock):
    line = b""
    while not line.endswith(b"\n"):
        c = sock.recv(1)
        if not c:
            raise RuntimeError(f"connection closed after {line!r}")
        line += c
    return line.decode().strip()


def main():
    mode, addr, host_port, guest_port, mib, runs, out = sys.argv[1:]
    host_port, guest_port, runs = int(host_port), int(guest_port), int(runs)
    nbytes = int(mib) << 20
    if mode == "qemu":
        listener = socket.socket(socket.AF_VSOCK, socket.SOCK_STREAM)
        listener.bind((socket.VMADDR_CID_ANY, host_port))
    else:
        path = f"{addr}_{host_port}"
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(path)
    listener.listen(1)
    listener.settimeout(TIMEOUT)

    def connect_guest():
        """A connection to the guest's listener, retried while the guest is not listening yet."""
        deadline = time.monotonic() + 60
        while True:
            try:
                if mode == "qemu":
                    s = socket.socket(socket.AF_VSOCK, socket.SOCK_STREAM)
                    s.settimeout(TIMEOUT)
                    s.connect((int(addr), guest_port))
                    return s
                s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                s.settimeout(TIMEOUT)
                s.connect(addr)
                s.sendall(f"CONNECT {guest_port}\n".encode())
                reply = recv_line(s)
                if not reply.startswith("OK "):
                    raise RuntimeError(f"CONNECT {guest_port} answered {reply!r}")
                return s
            except (ConnectionError, RuntimeError):
                s.close()
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    payload = b"\xa5" * CHUNK
    result = {"g2h": [], "h2g": []}
    for _ in range(runs):
        conn, _ = listener.accept()
        conn.settimeout(TIMEOUT)
        t = time.monotonic()
        recv_exactly(conn, nbytes)
        result["g2h"].append(time.monotonic() - t)
        conn.sendall(b"k")
        conn.close()

        t = time.monotonic()
        s = connect_guest()
        left = nbytes
        while left > 0:
            n = min(left, CHUNK)
            s.sendall(payload[:n])
            left -= n
        recv_exactly(s, 1)
        result["h2g"].append(time.monotonic() - t)
        s.close()
    listener.close()
    if mode != "qemu":
        os.unlink(f"{addr}_{host_port}")
    with open(out, "w") as f:
        json.dump(result, f)


if __name__ == "__main__":
    main()
