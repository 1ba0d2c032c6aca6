/* capsule vm ctl: one request to a running VM's control socket, its answer printed. */
#include "cli/vm_ctl.h"

#include <jansson.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "cli/cli.h"
#include "common/util.h"

#define VM_CTL_USAGE "usage: capsule vm ctl SOCKET pause|resume|info|balloon SIZE|balloon-stats|stop [SECONDS]"
#define VM_CTL_ANSWER_MAX (1 << 20)
#define VM_CTL_TIMEOUT_MS 60000 /* a pause waits for every vCPU to leave the guest */

/* The request line for the command, or -1 with a usage error. */
static int vm_ctl_request(int argc, char **argv, char **out, cap_error_t *err)
{
        const char *cmd = argv[2];
        const char *arg = argc > 3 ? argv[3] : NULL;
        json_t *req = json_pack("{s:s}", "command", cmd);
        if (strcmp(cmd, "balloon") == 0) {
                uint64_t size;
                if (!arg || vm_parse_size(arg, &size) < 0 || size > INT64_MAX) {
                        json_decref(req);
                        return cli_usage(err, "vm ctl", "balloon needs a SIZE: bytes, or a number with K, M or G");
                }
                json_object_set_new(req, "size", json_integer((json_int_t)size));
        } else if (strcmp(cmd, "stop") == 0 && arg) {
                long long s;
                if (parse_i64(arg, &s) < 0 || s < 0) {
                        json_decref(req);
                        return cli_usage(err, "vm ctl", "stop: `%s` is not a number of seconds", arg);
                }
                json_object_set_new(req, "timeout", json_integer(s));
        } else if (arg) {
                json_decref(req);
                return cli_usage(err, "vm ctl", "%s takes no argument; " VM_CTL_USAGE, cmd);
        }
        char *text = json_dumps(req, JSON_COMPACT);
        json_decref(req);
        *out = xasprintf("%s\n", text);
        free(text);
        return 0;
}

static int vm_ctl_connect(const char *path, cap_error_t *err)
{
        struct sockaddr_un addr = { .sun_family = AF_UNIX };
        if (strlen(path) >= sizeof(addr.sun_path))
                return cap_fail(err, 0, "%s: socket path too long", path);
        memcpy(addr.sun_path, path, strlen(path));
        int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0)
                return cap_fail(err, errno, "socket");
        if (connect(fd, (struct sockaddr *)&addr, sizeof(addr)) < 0) {
                int e = errno;
                close(fd);
                if (e == ENOENT)
                        return cap_fail(err, 0, "%s: no such socket (is the VM running with --api-socket?)", path);
                if (e == ECONNREFUSED)
                        return cap_fail(err, 0, "%s: connection refused (no VM serves it any more)", path);
                return cap_fail(err, e, "%s: cannot connect", path);
        }
        return fd;
}

/* One line of answer (without its newline). */
static int vm_ctl_read(int fd, const char *path, char **out, cap_error_t *err)
{
        size_t len = 0, cap = 4096;
        char *buf = xmalloc0(cap);
        for (;;) {
                struct pollfd p = { .fd = fd, .events = POLLIN };
                int r = poll(&p, 1, VM_CTL_TIMEOUT_MS);
                if (r < 0 && errno == EINTR)
                        continue;
                if (r <= 0) {
                        free(buf);
                        return cap_fail(err, r < 0 ? errno : 0, "%s: no answer within %d s", path, VM_CTL_TIMEOUT_MS / 1000);
                }
                if (len + 1 >= cap)
                        buf = xrealloc(buf, cap *= 2);
                ssize_t n = read(fd, buf + len, cap - len - 1);
                if (n < 0 && errno == EINTR)
                        continue;
                if (n <= 0) {
                        free(buf);
                        return cap_fail(err, n < 0 ? errno : 0, "%s: the VM closed the connection without an answer", path);
                }
                len += (size_t)n;
                char *nl = memchr(buf, '\n', len);
                if (nl) {
                        *nl = '\0';
                        *out = buf;
                        return 0;
                }
                if (len > VM_CTL_ANSWER_MAX) {
                        free(buf);
                        return cap_fail(err, 0, "%s: answer longer than %d bytes", path, VM_CTL_ANSWER_MAX);
                }
        }
}

int vm_ctl_main(int argc, char **argv, cap_error_t *err)
{
        if (argc >= 2 && (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0)) {
                puts(VM_CTL_USAGE);
                return 0;
        }
        if (argc < 3 || argc > 4)
                return cli_usage(err, "vm ctl", VM_CTL_USAGE);
        cleanup_free char *request = NULL;
        if (vm_ctl_request(argc, argv, &request, err) < 0)
                return -1;
        cleanup_close int fd = vm_ctl_connect(argv[1], err);
        if (fd < 0)
                return -1;
        if (send_all(fd, request, strlen(request)) < 0)
                return cap_fail(err, errno, "%s: cannot send the request", argv[1]);
        cleanup_free char *answer = NULL;
        if (vm_ctl_read(fd, argv[1], &answer, err) < 0)
                return -1;
        json_error_t jerr;
        json_t *j = json_loads(answer, 0, &jerr);
        if (!json_is_object(j)) {
                json_decref(j);
                return cap_fail(err, 0, "%s: the answer is not a JSON object: %.200s", argv[1], answer);
        }
        if (!json_is_true(json_object_get(j, "ok"))) {
                const char *msg = json_string_value(json_object_get(j, "error"));
                int r = cap_fail(err, 0, "%s: %s", argv[2], msg ? msg : "failed");
                json_decref(j);
                return r;
        }
        char *pretty = json_dumps(j, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
        json_decref(j);
        puts(pretty ? pretty : answer);
        free(pretty);
        return 0;
}
