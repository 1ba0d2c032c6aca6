/* The guest console's host side, shared by the device that owns it (the 8250, or
 * virtio-console's hvc0 with console_hvc): exactly one of them takes stdio.
 *
 * Output never blocks the guest: vCPUs append to a bounded ring, and the event
 * loop writes it out without blocking, when the output can take it. A reader that
 * stalls (a pipe nobody reads, a suspended terminal) costs the guest its output,
 * which is dropped and counted once the ring is full, never a vCPU or the loop. A
 * regular file is written at once.
 *
 * Input is stdin, polled on the event loop, a terminal in raw mode. */
#ifndef CAPSULE_VMM_CONSOLE_H
#define CAPSULE_VMM_CONSOLE_H

#include <pthread.h>
#include <stdbool.h>
#include <termios.h>
#include <stddef.h>
#include <stdint.h>

#include "common/error.h"
#include "vmm/evloop.h"

struct vm_config;

#define CONSOLE_RING_SIZE (64 * 1024)

struct console_out {
        pthread_mutex_t lock; /* vCPUs append, the event loop drains */
        struct evloop *loop;
        int fd;           /* what is written to; -1: closed */
        bool close_fd;    /* fd is ours (a file we opened, or a non-blocking reopening of stdout) */
        int restore_fl;   /* >= 0: fd's file status flags to put back (O_NONBLOCK was set on a shared fd) */
        bool direct;      /* a regular file: written at once, it cannot stall indefinitely */
        bool broken;      /* a write failed (EPIPE, EIO...): everything else is dropped */
        bool armed;       /* waiting for EPOLLOUT on fd */
        int kick_fd;      /* eventfd: the ring is no longer empty */
        uint8_t *ring;
        size_t head, count;
        uint64_t dropped; /* bytes of guest output lost */
};

/* Takes fd (closing it at the end when close_fd). loop must outlive the console. */
int console_out_open(struct console_out *c, int fd, bool close_fd, struct evloop *loop, cap_error_t *err);
/* From any thread: never blocks on the output. */
void console_out_put(struct console_out *c, const uint8_t *data, size_t len);
/* After the loop has stopped: one last non-blocking write, then the drop count on stderr. */
void console_out_close(struct console_out *c);
/* Open the output the VM's settings name (cfg->console: stdout, a file or none). */
int console_out_open_config(struct console_out *c, const struct vm_config *cfg, struct evloop *loop, cap_error_t *err);

struct console_in {
        struct evloop *loop;
        evloop_fn fn;
        void *opaque;
        bool usable;  /* stdin can be polled: a readable pipe, socket or terminal we own */
        bool polled;
        bool tty_raw;
        struct termios saved_tio;
};

/* Take stdin as the guest's input when it can be (else the guest gets none): fn runs on
 * the loop when it is readable, until console_in_poll(false). The caller serialises
 * console_in_poll() and console_in_close() with fn. */
int console_in_open(struct console_in *in, struct evloop *loop, evloop_fn fn, void *opaque, cap_error_t *err);
/* Start or stop polling (back-pressure, or EOF for good with usable cleared first). */
void console_in_poll(struct console_in *in, bool on);
/* Stop polling and give the terminal back its settings. */
void console_in_close(struct console_in *in);

#endif
