"""A client of capsule-guest's protocol (src/common/agent_proto.h) over a VM's hybrid vsock
socket (`capsule vm run --vsock CID,socket=PATH`): each request is a new connection that
writes "CONNECT 1024\\n", reads "OK <port>\\n", then exchanges length-prefixed JSON frames.
The testbed tests use it to drive the agent the way the host side of the sandbox does."""
import json
import socket
import struct
import time

AGENT_PORT = 1024


class AgentError(Exception):
    """The agent answered {"ok": false, "error": ...}, or the connection failed."""


def _read_exact(s, n):
    buf = b""
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            raise AgentError(f"connection ended after {len(buf)} of {n} bytes")
        buf += chunk
    return buf


def _read_line(s):
    line = b""
    while not line.endswith(b"\n"):
        c = s.recv(1)
        if not c:
            raise AgentError(f"connection ended in the vsock handshake after {line!r}")
        line += c
    return line.decode(errors="replace")


def send_frame(s, msg):
    body = json.dumps(msg).encode()
    s.sendall(struct.pack("<I", len(body)) + body)


def recv_frame(s):
    (n,) = struct.unpack("<I", _read_exact(s, 4))
    return json.loads(_read_exact(s, n))


class Agent:
    def __init__(self, sock_path, timeout=120):
        self.path = sock_path
        self.timeout = timeout

    def connect(self):
        """A connection to the agent's port, past the hybrid vsock handshake."""
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(self.timeout)
        try:
            s.connect(self.path)
            s.sendall(f"CONNECT {AGENT_PORT}\n".encode())
            line = _read_line(s)
        except (OSError, AgentError):
            s.close()
            raise
        if not line.startswith("OK "):
            s.close()
            raise AgentError(f"vsock handshake: {line!r}")
        return s

    def request(self, msg, keep=False):
        """Send one request on a new connection: its reply (and with keep, the open socket)."""
        s = self.connect()
        try:
            send_frame(s, msg)
            reply = recv_frame(s)
        except BaseException:
            s.close()
            raise
        if keep:
            return reply, s
        s.close()
        return reply

    def call(self, op, **fields):
        """A request whose reply must be ok: the reply."""
        reply = self.request({"op": op, **fields})
        if not reply.get("ok"):
            raise AgentError(f"{op}: {reply.get('error')}")
        return reply

    def wait_ready(self, deadline_s=300, alive=lambda: True):
        """Until the agent answers (a state request, refused before create): seconds waited."""
        t0 = time.monotonic()
        while True:
            try:
                self.request({"op": "state"})
                return time.monotonic() - t0
            except (OSError, AgentError, ValueError):
                if time.monotonic() - t0 > deadline_s or not alive():
                    raise
                time.sleep(0.2)

    def stdio(self, exec_id, fd):
        """A stream connection for fd 0, 1 or 2 of exec_id ("init" or an exec id)."""
        reply, s = self.request({"op": "stdio", "exec": exec_id, "fd": fd}, keep=True)
        if not reply.get("ok"):
            s.close()
            raise AgentError(f"stdio {exec_id} {fd}: {reply.get('error')}")
        return s

    def wait(self, exec_id):
        """Open a wait for exec_id: the socket its reply comes on (see wait_reply)."""
        s = self.connect()
        send_frame(s, {"op": "wait", "exec": exec_id})
        return s

    @staticmethod
    def wait_reply(s):
        reply = recv_frame(s)
        s.close()
        if not reply.get("ok"):
            raise AgentError(f"wait: {reply.get('error')}")
        return reply["status"]


def read_all(s):
    """Everything a stream connection carries until its end of file, then close it."""
    out = b""
    while True:
        chunk = s.recv(65536)
        if not chunk:
            break
        out += chunk
    s.close()
    return out
