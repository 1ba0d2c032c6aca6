"""The agent side of SCMP_ACT_NOTIFY (linux.seccomp.listenerPath), shared by the tests that play it."""
import array
import fcntl
import socket
import struct

SECCOMP_IOCTL_NOTIF_RECV = 0xC0502100  # _IOWR('!', 0, struct seccomp_notif)
SECCOMP_IOCTL_NOTIF_SEND = 0xC0182101  # _IOWR('!', 1, struct seccomp_notif_resp)
SECCOMP_USER_NOTIF_FLAG_CONTINUE = 1


def recv_listener_message(conn):
    """What the runtime sends the agent: the state JSON, and the seccomp fd(s) as SCM_RIGHTS."""
    fds = array.array("i")
    msg, anc, _, _ = conn.recvmsg(65536, socket.CMSG_SPACE(fds.itemsize))
    for level, typ, data in anc:
        if level == socket.SOL_SOCKET and typ == socket.SCM_RIGHTS:
            fds.frombytes(data[:len(data) - (len(data) % fds.itemsize)])
    return msg, list(fds)


def serve_notifications(fd, answer):
    """Answer every notification on the seccomp fd until its last user is gone. answer(notif_id,
    pid, nr) returns (val, error, flags) for struct seccomp_notif_resp."""
    while True:
        buf = bytearray(80)
        try:
            fcntl.ioctl(fd, SECCOMP_IOCTL_NOTIF_RECV, buf)
        except OSError:
            return  # the filter's last user is gone
        notif_id, pid, _flags, nr = struct.unpack_from("QIIi", buf)
        val, error, flags = answer(notif_id, pid, nr)
        try:
            fcntl.ioctl(fd, SECCOMP_IOCTL_NOTIF_SEND, bytearray(struct.pack("QqiI", notif_id, val, error, flags)))
        except OSError:
            pass
