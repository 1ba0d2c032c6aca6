/* The control channel's framing and requests (src/vmm/api*.c) against a fake VM: the input is
 * what a client writes to the socket, handed over in reads whose sizes come from the input
 * (first byte of each piece: its length). Every complete line is a request. Besides not
 * crashing, each answer must be one line of JSON with a boolean "ok"; a refused request carries a
 * one-line "error" and asks for nothing (no pending pause, no resume, no stop). */
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_input.h"
#include "vmm/api.h"
#include "vmm/vm.h"

static bool paused;

static bool fake_pause(void *vm)
{
        (void)vm;
        return paused;
}

static bool fake_paused(void *vm)
{
        (void)vm;
        return paused;
}

static void fake_resume(void *vm)
{
        (void)vm;
        paused = false;
}

static void fake_button(void *vm)
{
        (void)vm;
}

static void fake_hard_stop(void *vm, unsigned int timeout_s)
{
        (void)vm;
        (void)timeout_s;
}

static struct vm_config cfg = { .cpus = 1, .memory = 64 << 20, .kernel = "vmlinux", .cmdline = "console=ttyS0" };

static void check_answer(const struct api_reply *r)
{
        if (r->pending) {
                if (r->text)
                        abort();
                return;
        }
        if (!r->text || strchr(r->text, '\n'))
                abort();
        json_t *j = json_loads(r->text, 0, NULL);
        json_t *ok = json_object_get(j, "ok");
        if (!json_is_boolean(ok))
                abort();
        if (json_is_false(ok) && (!json_is_string(json_object_get(j, "error")) || r->resumed || r->stop_timeout_s != -1))
                abort();
        json_decref(j);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        struct input in = { data, size };
        struct api_vm vm = { .config = &cfg, .n_vcpus = 1, .pause = fake_pause, .paused = fake_paused,
                             .resume = fake_resume, .pause_fd = -1, .power_button = fake_button,
                             .hard_stop = fake_hard_stop };
        struct api_lines *l = calloc(1, sizeof(*l));
        if (!l)
                abort();
        uint8_t piece;
        while (take(&in, &piece, 1)) {
                paused = piece & 1;
                size_t want = piece < in.left ? piece : in.left;
                /* The last byte of a piece past 200 stands for a long run, to reach the limit. */
                size_t room;
                char *space = api_lines_space(l, &room);
                if (room == 0)
                        break;
                size_t n = want < room ? want : room;
                if (!take(&in, space, n))
                        break;
                if (piece > 200 && n > 0) {
                        size_t run = ((size_t)piece - 200) * 4096;
                        size_t extra = run < room - n ? run : room - n;
                        memset(space + n, space[n - 1], extra);
                        n += extra;
                }
                api_lines_added(l, n);
                const char *line;
                size_t len;
                while (api_lines_next(l, &line, &len)) {
                        struct api_reply r;
                        api_request(&vm, line, len, &r);
                        check_answer(&r);
                        free(r.text);
                }
                if (api_lines_overlong(l))
                        break;
        }
        free(l);
        return 0;
}
