#include "cli/create_flags.h"

#include <getopt.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "common/util.h"

int console_socket_connect(const char *path, cap_error_t *err)
{
        struct sockaddr_un addr = { .sun_family = AF_UNIX };
        if (strlen(path) >= sizeof(addr.sun_path))
                return cap_fail(err, 0, "--console-socket: path `%s` is too long", path);
        strcpy(addr.sun_path, path);
        int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0)
                return cap_fail(err, errno, "--console-socket: socket");
        if (connect(fd, (struct sockaddr *)&addr, sizeof(addr)) < 0) {
                int e = errno;
                close(fd);
                return cap_fail(err, e, "--console-socket: connect `%s`", path);
        }
        return fd;
}

int create_flags_parse(struct cli_global *g, int argc, char **argv, bool is_run, struct create_flags *f, cap_error_t *err)
{
        enum { OPT_CONSOLE = 256, OPT_PIDFILE, OPT_NOPIVOT, OPT_NOKEYRING, OPT_PRESERVE, OPT_KEEP, OPT_PIDFD };
        static const struct option opts[] = {
                { "bundle", required_argument, NULL, 'b' },
                { "console-socket", required_argument, NULL, OPT_CONSOLE },
                { "pid-file", required_argument, NULL, OPT_PIDFILE },
                { "no-pivot", no_argument, NULL, OPT_NOPIVOT },
                { "no-new-keyring", no_argument, NULL, OPT_NOKEYRING },
                { "preserve-fds", required_argument, NULL, OPT_PRESERVE },
                { "pidfd-socket", required_argument, NULL, OPT_PIDFD },
                { "detach", no_argument, NULL, 'd' },
                { "keep", no_argument, NULL, OPT_KEEP },
                { 0 },
        };
        int c;
        memset(f, 0, sizeof(*f));
        f->opts.root = g->root;
        f->opts.bundle = ".";
        f->opts.console_socket_fd = -1;
        f->opts.systemd_cgroup = g->systemd_cgroup;
        while ((c = getopt_long_only(argc, argv, "+b:d", opts, NULL)) != -1) {
                unsigned long long n;
                switch (c) {
                case 'b':
                        f->opts.bundle = optarg;
                        break;
                case OPT_CONSOLE:
                        f->console_socket = optarg;
                        break;
                case OPT_PIDFILE:
                        f->opts.pid_file = optarg;
                        break;
                case OPT_NOPIVOT:
                        f->opts.no_pivot = true;
                        break;
                case OPT_NOKEYRING:
                        f->opts.no_new_keyring = true;
                        break;
                case OPT_PRESERVE:
                        if (parse_u64(optarg, &n) < 0 || n > 65536)
                                return cli_usage(err, argv[0], "--preserve-fds: `%s` is not a number of fds", optarg);
                        f->opts.preserve_fds = (int)n;
                        break;
                case OPT_PIDFD:
                        return cli_usage(err, argv[0], "--pidfd-socket is not supported");
                case 'd':
                        if (!is_run)
                                return cli_usage(err, argv[0], "unknown option `%s`", argv[optind - 1]);
                        f->detach = true;
                        break;
                case OPT_KEEP:
                        if (!is_run)
                                return cli_usage(err, argv[0], "unknown option `%s`", argv[optind - 1]);
                        f->keep = true;
                        break;
                default:
                        return cli_usage(err, argv[0], "unknown option `%s`", argv[optind - 1]);
                }
        }
        if (cli_want_args(argc, argv, optind, 1, is_run ? "run [options] ID" : "create [options] ID", err) < 0)
                return -1;
        f->opts.id = argv[optind];
        if (f->console_socket && (f->opts.console_socket_fd = console_socket_connect(f->console_socket, err)) < 0)
                return -1;
        return 0;
}
