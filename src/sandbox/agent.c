/* Connections to capsule-guest through the VMM's hybrid vsock socket (agent_proto.h). Every
 * reply is the guest's: its texts are shortened and made printable before they reach a message. */
#include "sandbox/sandbox_internal.h"

#include <poll.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

#include "common/agent_proto.h"
#include "common/frame.h"
#include "common/util.h"

/* How long one request waits for its reply (all but "wait"): a guest that does not answer must
 * not hang the command. */
#define AGENT_REPLY_TIMEOUT_S 60
#define AGENT_RETRY_MS 50

static int set_timeout(int fd, int seconds)
{
        struct timeval tv = { .tv_sec = seconds };
        return setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
}

void agent_no_timeout(int fd)
{
        set_timeout(fd, 0);
}

/* One attempt. Returns the fd, -2 when refused (no VMM socket yet, or the guest does not
 * listen: the VMM closes the connection without an answer), -1 with err otherwise. */
static int connect_once(const char *path, cap_error_t *err)
{
        struct sockaddr_un addr = { .sun_family = AF_UNIX };
        if (strlen(path) >= sizeof(addr.sun_path))
                return cap_fail(err, 0, "agent socket `%s`: path too long", path);
        strcpy(addr.sun_path, path);
        cleanup_close int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0)
                return cap_fail(err, errno, "socket");
        if (connect(fd, (struct sockaddr *)&addr, sizeof(addr)) < 0) {
                if (errno == ENOENT || errno == ECONNREFUSED)
                        return -2;
                return cap_fail(err, errno, "connect to the VM's agent socket `%s`", path);
        }
        /* Until a request's reply has come (agent_no_timeout() lifts it). */
        set_timeout(fd, AGENT_REPLY_TIMEOUT_S);
        char line[32];
        int len = snprintf(line, sizeof(line), "CONNECT %u\n", AGENT_PORT);
        if (send_all(fd, line, (size_t)len) < 0)
                return -2;
        /* Byte by byte: what follows the line belongs to the guest's stream. */
        size_t n = 0;
        while (n < sizeof(line) - 1) {
                ssize_t r = read(fd, line + n, 1);
                if (r < 0 && errno == EINTR)
                        continue;
                if (r <= 0)
                        return n == 0 ? -2 : cap_fail(err, 0, "agent socket `%s`: connection ended in its answer", path);
                if (line[n++] == '\n')
                        break;
        }
        line[n] = '\0';
        if (strncmp(line, "OK ", 3) != 0 || line[n - 1] != '\n')
                return cap_fail(err, 0, "agent socket `%s`: unexpected answer to CONNECT", path);
        return steal_fd(&fd);
}

int agent_connect(const char *socket, long long deadline_ms, int stop_fd, cap_error_t *err)
{
        for (;;) {
                int fd = connect_once(socket, err);
                if (fd != -2)
                        return fd;
                if (now_ms() >= deadline_ms)
                        return cap_fail(err, 0, "the VM's agent did not answer within the boot timeout "
                                                "($CAPSULE_VM_BOOT_TIMEOUT seconds; the guest's console is in the state directory)");
                struct pollfd p = { .fd = stop_fd, .events = POLLIN };
                if (poll(&p, stop_fd >= 0 ? 1 : 0, AGENT_RETRY_MS) > 0)
                        return cap_fail(err, 0, "the VM stopped before its agent answered");
        }
}

/* The guest's text, at most 200 printable bytes. */
static char *guest_text(const char *s)
{
        char *out = xstrdup(s ? s : "(no message)");
        size_t n = strlen(out);
        if (n > 200)
                out[n = 200] = '\0';
        for (size_t i = 0; i < n; i++) {
                if ((unsigned char)out[i] < 0x20 || (unsigned char)out[i] >= 0x7f)
                        out[i] = '?';
        }
        return out;
}

int agent_request(int fd, json_t *req, json_t **reply, cap_error_t *err)
{
        const char *op = json_string_value(json_object_get(req, "op"));
        json_t *rep = NULL;
        if (reply)
                *reply = NULL;
        if (frame_send(fd, req, err) < 0) {
                /* The guest closed its end first (a VM powering off): as good as no reply. */
                if ((*err)->errnum != EPIPE && (*err)->errnum != ECONNRESET)
                        return cap_error_prefix(err, "agent %s", op);
                cap_error_free(err);
                cap_fail(err, 0, "agent %s: connection closed before the request", op);
                return -2;
        }
        int r = frame_recv(fd, &rep, err);
        if (r < 0)
                return cap_error_prefix(err, "agent %s", op);
        if (r == 0) {
                cap_fail(err, 0, "agent %s: connection closed without a reply", op);
                return -2;
        }
        if (!json_is_true(json_object_get(rep, "ok"))) {
                cleanup_free char *text = guest_text(json_string_value(json_object_get(rep, "error")));
                json_decref(rep);
                return cap_fail(err, 0, "in the VM: %s", text);
        }
        if (reply)
                *reply = rep;
        else
                json_decref(rep);
        return 0;
}

int agent_call(const char *socket, json_t *req, json_t **reply, cap_error_t *err)
{
        cleanup_close int fd = connect_once(socket, err);
        if (fd == -2) {
                cap_fail(err, 0, "the VM's agent does not answer");
                return -2;
        }
        if (fd < 0)
                return -1;
        return agent_request(fd, req, reply, err);
}

int agent_open_stdio(const char *socket, const char *exec, bool tty, int conns[3], long long deadline_ms, int stop_fd, cap_error_t *err)
{
        conns[0] = conns[1] = conns[2] = -1;
        for (int i = 0; i < (tty ? 1 : 3); i++) {
                json_t *req = json_pack("{s:s,s:s,s:i}", "op", "stdio", "exec", exec, "fd", i);
                if ((conns[i] = agent_connect(socket, deadline_ms, stop_fd, err)) < 0 || agent_request(conns[i], req, NULL, err) < 0) {
                        json_decref(req);
                        for (int j = 0; j <= i; j++)
                                cap_closep(&conns[j]);
                        return -1;
                }
                json_decref(req);
                agent_no_timeout(conns[i]);
        }
        if (tty)
                conns[1] = conns[0]; /* the terminal, both ways */
        return 0;
}

void agent_stdio_close(int (*conns)[3])
{
        if ((*conns)[1] == (*conns)[0])
                (*conns)[1] = -1;
        for (int i = 0; i < 3; i++)
                cap_closep(&(*conns)[i]);
}
