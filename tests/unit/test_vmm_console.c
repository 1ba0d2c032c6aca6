/* The console's output ring: it never blocks its caller, keeps order, and counts what it drops. */
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "common/util.h"
#include "vmm/console.h"
#include "vmm/evloop.h"

/* Everything readable from a non-blocking pipe within about 200 ms of quiet. */
static size_t drain_pipe(int fd, char *buf, size_t size)
{
        size_t got = 0;
        for (int quiet = 0; quiet < 20;) {
                ssize_t n = read(fd, buf + got, size - got);
                if (n > 0) {
                        got += (size_t)n;
                        quiet = 0;
                } else {
                        usleep(10000);
                        quiet++;
                }
        }
        return got;
}

TEST(console_pipe_output_in_order)
{
        struct evloop loop;
        struct console_out c;
        cleanup_error cap_error_t err = NULL;
        int p[2];
        char buf[64] = { 0 };
        CHECK(pipe2(p, O_NONBLOCK | O_CLOEXEC) == 0);
        CHECK(evloop_init(&loop, &err) == 0 && evloop_start(&loop, &err) == 0);
        bool opened = console_out_open(&c, p[1], true, &loop, &err) == 0;
        if (opened) {
                console_out_put(&c, (const uint8_t *)"hello ", 6);
                console_out_put(&c, (const uint8_t *)"world", 5);
        }
        size_t n = drain_pipe(p[0], buf, sizeof(buf) - 1);
        evloop_stop(&loop);
        uint64_t dropped = c.dropped;
        console_out_close(&c);
        evloop_destroy(&loop);
        close(p[0]);
        CHECK(opened);
        CHECK(n == 11 && strcmp(buf, "hello world") == 0);
        CHECK(dropped == 0);
}

TEST(console_stalled_reader_never_blocks_and_counts_drops)
{
        enum { TOTAL = 4 * CONSOLE_RING_SIZE };
        struct evloop loop;
        struct console_out c;
        cleanup_error cap_error_t err = NULL;
        int p[2];
        cleanup_free char *buf = xmalloc0(TOTAL);
        static uint8_t chunk[4096];
        memset(chunk, 'x', sizeof(chunk));
        CHECK(pipe2(p, O_NONBLOCK | O_CLOEXEC) == 0);
        CHECK(evloop_init(&loop, &err) == 0 && evloop_start(&loop, &err) == 0);
        /* A blocking write end, as a caller's stdout: the console must reopen it non-blocking. */
        CHECK(fcntl(p[1], F_SETFL, 0) == 0);
        bool opened = console_out_open(&c, p[1], true, &loop, &err) == 0;
        for (size_t i = 0; opened && i < TOTAL / sizeof(chunk); i++)
                console_out_put(&c, chunk, sizeof(chunk));
        usleep(100000);
        pthread_mutex_lock(&c.lock);
        uint64_t dropped_early = c.dropped;
        pthread_mutex_unlock(&c.lock);
        /* The reader wakes up: what the pipe held, then the rest of the ring on the way out. */
        size_t got = drain_pipe(p[0], buf, TOTAL);
        evloop_stop(&loop);
        uint64_t dropped = c.dropped;
        console_out_close(&c);
        got += drain_pipe(p[0], buf + got, TOTAL - got);
        evloop_destroy(&loop);
        close(p[0]);
        CHECK(opened);
        CHECK(dropped_early >= TOTAL - 2 * CONSOLE_RING_SIZE); /* at most the ring and a 64 KiB pipe held */
        CHECK(got + dropped == TOTAL);
}
