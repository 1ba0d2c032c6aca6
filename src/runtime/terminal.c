#include "runtime/terminal.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <unistd.h>

#include "common/log.h"
#include "common/util.h"

int terminal_setup(const struct spec_process *proc, int console_fd, bool mount_console, cap_error_t *err)
{
        cleanup_close int master = open("/dev/ptmx", O_RDWR | O_NOCTTY | O_CLOEXEC);
        if (master < 0)
                return cap_fail(err, errno, "process.terminal: open /dev/ptmx");
        int unlock = 0;
        if (ioctl(master, TIOCSPTLCK, &unlock) < 0)
                return cap_fail(err, errno, "process.terminal: unlock pty");
        /* TIOCGPTPEER opens the slave through the master, without a path lookup in the container. */
        cleanup_close int slave = ioctl(master, TIOCGPTPEER, O_RDWR | O_NOCTTY | O_CLOEXEC);
        if (slave < 0)
                return cap_fail(err, errno, "process.terminal: open pty slave");
        if (proc->console_height.set || proc->console_width.set) {
                struct winsize ws = { .ws_row = (unsigned short)proc->console_height.v, .ws_col = (unsigned short)proc->console_width.v };
                if (ioctl(master, TIOCSWINSZ, &ws) < 0)
                        return cap_fail(err, errno, "process.consoleSize");
        }
        char name[64] = "";
        if (ptsname_r(master, name, sizeof(name)) != 0)
                name[0] = '\0';
        if (send_fd(console_fd, master, name, strlen(name) + 1) < 0)
                return cap_fail(err, errno, "--console-socket: send the pty master");
        if (mount_console && name[0]) {
                /* /dev/console must exist as a file to be a bind target; failures only lose /dev/console. */
                int fd = open("/dev/console", O_CREAT | O_WRONLY | O_NOCTTY | O_CLOEXEC, 0600);
                if (fd >= 0)
                        close(fd);
                if (mount(name, "/dev/console", NULL, MS_BIND, NULL) < 0)
                        log_debug("bind %s on /dev/console: %s", name, strerror(errno));
        }
        for (int i = 0; i < 3; i++)
                if (dup2(slave, i) < 0)
                        return cap_fail(err, errno, "process.terminal: dup2");
        if (ioctl(STDIN_FILENO, TIOCSCTTY, 0) < 0)
                return cap_fail(err, errno, "process.terminal: set the controlling terminal");
        return 0;
}

int terminal_receive(int sock, int *master, cap_error_t *err)
{
        char name[256];
        if (recv_fd(sock, master, name, sizeof(name)) < 0 || *master < 0)
                return cap_fail(err, errno, "receive the container's pty master");
        /* Now, not once relaying starts: the process may ask for its size as soon as it runs. */
        terminal_copy_size(STDIN_FILENO, *master);
        return 0;
}

void terminal_copy_size(int from, int to)
{
        struct winsize ws;
        if (ioctl(from, TIOCGWINSZ, &ws) == 0)
                ioctl(to, TIOCSWINSZ, &ws);
}
