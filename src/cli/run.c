/* capsule run: create and start a container; without --detach, wait for it,
 * relay its terminal, and delete it afterwards (unless --keep). */
#include <sys/prctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include "cli/create_flags.h"
#include "common/util.h"
#include "runtime/terminal.h"
#include "sandbox/sandbox.h"

/* In a VM the sandbox process, our child, relays the container's stdio and exits with its status. */
static int run_vm(struct cli_global *g, struct create_flags *f, bool terminal, cap_error_t *err)
{
        cleanup_close int console_peer = -1;
        cleanup_close int master = -1;
        pid_t pid;
        int status = 0;
        if (terminal && f->detach && f->opts.console_socket_fd < 0)
                return cli_usage(err, "run", "process.terminal is true: --detach needs --console-socket");
        if (terminal && f->opts.console_socket_fd < 0) {
                /* As without a VM: capsule is the console, it receives the master and relays. */
                int sp[2];
                if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sp) < 0)
                        return cap_fail(err, errno, "socketpair");
                f->opts.console_socket_fd = sp[0];
                console_peer = sp[1];
        }
        int r = sandbox_create(&f->opts, &pid, err);
        if (console_peer >= 0)
                cap_closep(&f->opts.console_socket_fd);
        if (r < 0)
                return -1;
        if ((console_peer >= 0 && terminal_receive(console_peer, &master, err) < 0) || sandbox_start(g->root, f->opts.id, err) < 0 ||
            (!f->detach && master >= 0 && container_wait(pid, master, &status, err) < 0) ||
            (!f->detach && master < 0 && sandbox_wait(g->root, f->opts.id, pid, &status, err) < 0)) {
                if (!f->keep) {
                        cleanup_error cap_error_t ignored = NULL;
                        sandbox_delete(g->root, f->opts.id, true, &ignored);
                }
                return -1;
        }
        if (f->detach)
                return 0;
        if (!f->keep && sandbox_delete(g->root, f->opts.id, true, err) < 0)
                return -1;
        return status;
}

static int cmd_run(struct cli_global *g, int argc, char **argv, cap_error_t *err)
{
        struct create_flags f;
        cleanup_spec struct spec *spec = NULL;
        cleanup_close int console_peer = -1;
        cleanup_close int master = -1;
        pid_t pid;
        int status = 0;

        if (create_flags_parse(g, argc, argv, true, &f, err) < 0)
                return -1;
        cleanup_close int console_fd = f.opts.console_socket_fd;
        bool vm = sandbox_wanted(g->vm, f.opts.bundle);
        if (spec_load(f.opts.bundle, &spec, err) < 0)
                return -1;
        bool terminal = spec->process && spec->process->terminal;
        if (vm)
                return run_vm(g, &f, terminal, err);
        if (terminal && f.detach && console_fd < 0)
                return cli_usage(err, "run", "process.terminal is true: --detach needs --console-socket");
        if (terminal && console_fd < 0) {
                /* capsule itself is the console: it receives the master and relays. */
                int sp[2];
                if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sp) < 0)
                        return cap_fail(err, errno, "socketpair");
                console_fd = f.opts.console_socket_fd = sp[0];
                console_peer = sp[1];
        }
        /* The container's init is reparented to us, so that we can wait for it. */
        if (!f.detach && prctl(PR_SET_CHILD_SUBREAPER, 1) < 0)
                return cap_fail(err, errno, "become a child subreaper");
        if (container_create(&f.opts, &pid, err) < 0)
                return -1;
        if (console_peer >= 0 && terminal_receive(console_peer, &master, err) < 0)
                goto fail;
        if (container_start(g->root, f.opts.id, err) < 0)
                goto fail;
        if (f.detach)
                return 0;
        if (container_wait(pid, master, &status, err) < 0)
                goto fail;
        if (!f.keep && container_delete(g->root, f.opts.id, true, err) < 0)
                return -1;
        return status;
fail:
        if (!f.keep) {
                cleanup_error cap_error_t ignored = NULL;
                container_delete(g->root, f.opts.id, true, &ignored);
        }
        return -1;
}

CLI_COMMAND(run, "run", "create and start a container (and wait for it unless --detach)", cmd_run)
