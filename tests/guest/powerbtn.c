/* Guest tool for tests/testbed/test_vm_control.py: waits for KEY_POWER on any
 * /dev/input/event* (the ACPI power button that `capsule vm ctl SOCKET stop` presses) and
 * powers the guest off, as acpid or logind would. Prints "powerbtn: ready" once it listens. */
#include <dirent.h>
#include <fcntl.h>
#include <linux/input.h>
#include <linux/reboot.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/reboot.h>
#include <unistd.h>

#define MAX_DEVICES 32

int main(void)
{
        struct pollfd fds[MAX_DEVICES];
        int n = 0;
        DIR *d = opendir("/dev/input");
        for (struct dirent *e; d && n < MAX_DEVICES && (e = readdir(d));) {
                char path[300];
                if (strncmp(e->d_name, "event", 5) != 0)
                        continue;
                snprintf(path, sizeof(path), "/dev/input/%s", e->d_name);
                int fd = open(path, O_RDONLY | O_CLOEXEC);
                if (fd >= 0)
                        fds[n++] = (struct pollfd){ .fd = fd, .events = POLLIN };
        }
        if (d)
                closedir(d);
        if (n == 0) {
                printf("powerbtn: no /dev/input/event* device\n");
                return 1;
        }
        printf("powerbtn: ready (%d input devices)\n", n);
        fflush(stdout);
        for (;;) {
                if (poll(fds, (nfds_t)n, -1) < 0)
                        return 1;
                for (int i = 0; i < n; i++) {
                        struct input_event ev;
                        if (!(fds[i].revents & POLLIN) || read(fds[i].fd, &ev, sizeof(ev)) != sizeof(ev))
                                continue;
                        if (ev.type == EV_KEY && ev.code == KEY_POWER && ev.value == 1) {
                                printf("powerbtn: KEY_POWER, powering off\n");
                                fflush(stdout);
                                sync();
                                reboot(LINUX_REBOOT_CMD_POWER_OFF);
                                return 1;
                        }
                }
        }
}
