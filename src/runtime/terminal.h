/* Container terminals: a pty created inside the container and its master
 * handed to the --console-socket with SCM_RIGHTS, as runc does. */
#ifndef CAPSULE_RUNTIME_TERMINAL_H
#define CAPSULE_RUNTIME_TERMINAL_H

#include <stdbool.h>

#include "common/error.h"
#include "runtime/spec.h"

/* In the container: open a pty from /dev/ptmx, apply consoleSize, send the master to console_fd,
 * make the slave the controlling terminal and stdio; with mount_console, bind it onto /dev/console. */
int terminal_setup(const struct spec_process *proc, int console_fd, bool mount_console, cap_error_t *err);
/* Receive the pty master sent to our end of a console socket and give it our stdin's window size. */
int terminal_receive(int sock, int *master, cap_error_t *err);
/* Copy the window size of one terminal to another (ignored if from is not a tty). */
void terminal_copy_size(int from, int to);

#endif
