/* The control channel of a running VM (`capsule vm run --api-socket PATH`): a Unix socket
 * served on the event loop, one JSON request per line and one JSON answer per line:
 *   {"command": "pause"}                  -> {"ok": true, "state": "paused"}
 *   {"command": "balloon", "size": 268435456}
 *   {"command": "stop", "timeout": 10}
 *   anything wrong                        -> {"ok": false, "error": "one line"}
 * Commands: pause, resume, info, balloon (size in bytes), balloon-stats, stop (the ACPI power
 * button; a hard stop when the guest has not powered off within timeout seconds). */
#ifndef CAPSULE_VMM_API_H
#define CAPSULE_VMM_API_H

#include <stdbool.h>
#include <stddef.h>

#include "common/error.h"
#include "vmm/evloop.h"

struct vm_config;
struct balloon;

#define API_LINE_MAX 65536      /* a request longer than this (without its newline) is refused */
#define API_MAX_CONNS 16        /* clients at once; more are told so and closed */
#define API_STOP_TIMEOUT_DEFAULT 10
#define API_STOP_TIMEOUT_MAX 3600

/* What the control channel may do to its VM (vm.c fills it in). Every call is made on the
 * event loop's thread and returns without waiting for the guest. */
struct api_vm {
        void *vm;
        const struct vm_config *config;
        struct balloon *balloon; /* NULL: the VM has none */
        int n_vcpus;
        /* Ask every vCPU to leave KVM_RUN and park; true when all are parked already.
         * Otherwise pause_fd (an eventfd) becomes readable once they are. */
        bool (*pause)(void *vm);
        bool (*paused)(void *vm); /* paused and every vCPU parked */
        void (*resume)(void *vm);
        int pause_fd;
        void (*power_button)(void *vm);
        /* The guest did not power off within timeout_s seconds of the power button. */
        void (*hard_stop)(void *vm, unsigned int timeout_s);
};

struct api;

/* Listen on path (created 0600; a stale socket nobody serves is replaced, any other file is
 * refused) and serve it on loop. Errors name the setting ("api-socket: ..."). */
int api_open(struct api **out, const char *path, struct evloop *loop, const struct api_vm *vm, cap_error_t *err);
/* Close every connection and remove the socket. Call after the event loop has stopped. */
void api_close(struct api *a);

/* ---- the framing (api.c) and the dispatcher (api_cmd.c), apart from the socket, for tests and
 * the fuzzer ---- */

/* A client's bytes, cut into lines. */
struct api_lines {
        size_t start, len; /* the unread bytes are buf[start, len) */
        char buf[API_LINE_MAX + 1];
};

/* Where the client's next bytes go and how many fit (*room 0: the pending line is overlong). */
char *api_lines_space(struct api_lines *l, size_t *room);
void api_lines_added(struct api_lines *l, size_t n);
/* The next complete line without its newline (valid until the next call), or false. */
bool api_lines_next(struct api_lines *l, const char **line, size_t *len);
/* API_LINE_MAX bytes and still no newline. */
bool api_lines_overlong(const struct api_lines *l);

struct api_reply {
        char *text;          /* the answer line without its newline (malloc'd), NULL when pending */
        bool pending;        /* pause: the answer comes when pause_fd says every vCPU parked */
        bool resumed;        /* resume: pauses still pending are answered with an error */
        int stop_timeout_s;  /* stop: arm the hard stop after this many seconds; -1: no stop */
};

/* Parse and run one request (line: len bytes, no newline; any bytes at all). */
void api_request(const struct api_vm *vm, const char *line, size_t len, struct api_reply *r);
/* {"ok": false, "error": msg} */
char *api_error_text(const char *msg);
/* The answer to a pause that was pending. */
char *api_paused_text(void);

#endif
