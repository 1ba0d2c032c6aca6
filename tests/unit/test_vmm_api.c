/* The control channel (src/vmm/api*.c) against a fake VM: the request parser and dispatcher
 * directly, then the socket on a real event loop (no KVM needed). */
#include <fcntl.h>
#include <jansson.h>
#include <poll.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "check.h"
#include "common/util.h"
#include "vmm/api.h"
#include "vmm/vm.h"

struct fake {
        atomic_int pauses, resumes, buttons, hard_stops;
        atomic_bool paused, parks_at_once;
        atomic_uint hard_stop_timeout;
};

static struct fake fake;

static bool fake_pause(void *vm)
{
        (void)vm;
        fake.pauses++;
        if (fake.parks_at_once)
                fake.paused = true;
        return fake.paused;
}

static bool fake_paused(void *vm)
{
        (void)vm;
        return fake.paused;
}

static void fake_resume(void *vm)
{
        (void)vm;
        fake.resumes++;
        fake.paused = false;
}

static void fake_button(void *vm)
{
        (void)vm;
        fake.buttons++;
}

static void fake_hard_stop(void *vm, unsigned int timeout_s)
{
        (void)vm;
        fake.hard_stop_timeout = timeout_s;
        fake.hard_stops++;
}

static struct vm_config fake_cfg = { .cpus = 2, .memory = 256ULL << 20, .kernel = "/k/vmlinux", .cmdline = "console=ttyS0" };

static struct api_vm fake_vm(int pause_fd)
{
        memset(&fake, 0, sizeof(fake));
        fake.parks_at_once = true;
        return (struct api_vm){ .config = &fake_cfg, .n_vcpus = 2, .pause = fake_pause, .paused = fake_paused,
                                .resume = fake_resume, .pause_fd = pause_fd, .power_button = fake_button,
                                .hard_stop = fake_hard_stop };
}

/* Run one request; the parsed answer (NULL when pending). */
static json_t *request(const struct api_vm *vm, const char *line, struct api_reply *r)
{
        api_request(vm, line, strlen(line), r);
        if (!r->text)
                return NULL;
        json_t *j = json_loads(r->text, 0, NULL);
        free(r->text);
        r->text = NULL;
        return j;
}

static bool is_ok(json_t *j)
{
        return json_is_true(json_object_get(j, "ok"));
}

static const char *error_of(json_t *j)
{
        return json_is_false(json_object_get(j, "ok")) ? json_string_value(json_object_get(j, "error")) : NULL;
}

static const char *str_of(json_t *j, const char *key)
{
        return json_string_value(json_object_get(j, key));
}

TEST(pause_resume_and_info)
{
        struct api_vm vm = fake_vm(-1);
        struct api_reply r;
        json_t *j = request(&vm, "{\"command\": \"pause\"}", &r);
        CHECK(is_ok(j) && !r.pending && fake.pauses == 1);
        CHECK_STR(str_of(j, "state"), "paused");
        json_decref(j);
        j = request(&vm, "{\"command\":\"info\"}", &r);
        CHECK(is_ok(j));
        CHECK_STR(str_of(j, "state"), "paused");
        CHECK(json_integer_value(json_object_get(j, "vcpus")) == 2);
        CHECK(json_integer_value(json_object_get(j, "memory")) == 256 << 20);
        CHECK(json_integer_value(json_object_get(j, "rss")) > 0);
        json_t *cfg = json_object_get(j, "config");
        CHECK_STR(str_of(cfg, "kernel"), "/k/vmlinux");
        CHECK(json_integer_value(json_object_get(cfg, "cpus")) == 2);
        CHECK(json_is_null(json_object_get(cfg, "initrd")));
        json_decref(j);
        j = request(&vm, "{\"command\":\"resume\"}", &r);
        CHECK(is_ok(j) && r.resumed && fake.resumes == 1 && !fake.paused);
        CHECK_STR(str_of(j, "state"), "running");
        json_decref(j);
        j = request(&vm, "{\"command\":\"info\"}", &r);
        CHECK_STR(str_of(j, "state"), "running");
        json_decref(j);
}

TEST(pause_waits_for_the_vcpus)
{
        struct api_vm vm = fake_vm(-1);
        fake.parks_at_once = false;
        struct api_reply r;
        json_t *j = request(&vm, "{\"command\":\"pause\"}", &r);
        CHECK(j == NULL && r.pending && fake.pauses == 1);
        char *text = api_paused_text();
        j = json_loads(text, 0, NULL);
        free(text);
        CHECK(is_ok(j));
        CHECK_STR(str_of(j, "state"), "paused");
        json_decref(j);
}

TEST(stop_presses_the_button_with_a_timeout)
{
        struct api_vm vm = fake_vm(-1);
        struct api_reply r;
        json_t *j = request(&vm, "{\"command\":\"stop\"}", &r);
        CHECK(is_ok(j) && fake.buttons == 1 && r.stop_timeout_s == API_STOP_TIMEOUT_DEFAULT);
        CHECK(r.resumed && fake.resumes == 1); /* a paused guest would not see the button */
        json_decref(j);
        j = request(&vm, "{\"command\":\"stop\",\"timeout\":3}", &r);
        CHECK(is_ok(j) && fake.buttons == 2 && r.stop_timeout_s == 3);
        CHECK(json_integer_value(json_object_get(j, "timeout")) == 3);
        json_decref(j);
        const char *bad[] = { "{\"command\":\"stop\",\"timeout\":\"3\"}", "{\"command\":\"stop\",\"timeout\":-1}",
                              "{\"command\":\"stop\",\"timeout\":3601}", "{\"command\":\"stop\",\"timeout\":1.5}",
                              "{\"command\":\"stop\",\"timeout\":null}" };
        for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
                j = request(&vm, bad[i], &r);
                CHECK(error_of(j) && strstr(error_of(j), "timeout") && r.stop_timeout_s == -1);
                json_decref(j);
        }
        CHECK(fake.buttons == 2 && fake.resumes == 2);
}

TEST(malformed_requests_change_nothing)
{
        struct api_vm vm = fake_vm(-1);
        static const struct {
                const char *line;
                const char *error;
        } cases[] = {
                { "", "invalid JSON" },
                { "{", "invalid JSON" },
                { "pause", "invalid JSON" },
                { "{\"command\":\"pause\"} {}", "invalid JSON" },
                { "{\"command\":\"pause\",\"command\":\"resume\"}", "invalid JSON" },
                { "[\"pause\"]", "a request is a JSON object" },
                { "null", "invalid JSON" },
                { "\"pause\"", "invalid JSON" },
                { "{}", "needs \"command\"" },
                { "{\"command\":1}", "needs \"command\"" },
                { "{\"command\":null}", "needs \"command\"" },
                { "{\"command\":\"reboot\"}", "unknown command `reboot`" },
                { "{\"command\":\"PAUSE\"}", "unknown command" },
                { "{\"command\":\"pause\",\"now\":true}", "pause: unknown key `now`" },
                { "{\"command\":\"info\",\"size\":1}", "info: unknown key `size`" },
                { "{\"command\":\"balloon\"}", "balloon: size" },
                { "{\"command\":\"balloon\",\"size\":\"1G\"}", "balloon: size" },
                { "{\"command\":\"balloon\",\"size\":-4096}", "balloon: size" },
                { "{\"command\":\"balloon\",\"size\":1e9}", "balloon: size" },
                { "{\"command\":\"balloon\",\"size\":4096}", "no balloon device" },
                { "{\"command\":\"balloon-stats\"}", "no balloon device" },
                { "{\"command\":\"stop\",\"timeout\":5,\"force\":true}", "stop: unknown key `force`" },
        };
        for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
                struct api_reply r;
                json_t *j = request(&vm, cases[i].line, &r);
                const char *e = error_of(j);
                if (!e || !strstr(e, cases[i].error) || strchr(e, '\n'))
                        fprintf(stderr, "request %s: answer %s\n", cases[i].line, e ? e : "(not an error)");
                CHECK(e && strstr(e, cases[i].error) && !strchr(e, '\n'));
                CHECK(!r.pending && !r.resumed && r.stop_timeout_s == -1);
                json_decref(j);
        }
        /* Not even a NUL byte or invalid UTF-8 gets through. */
        struct api_reply r;
        api_request(&vm, "{\"command\":\"pa\0use\"}", 20, &r);
        CHECK(r.text && strstr(r.text, "\"ok\":false"));
        free(r.text);
        api_request(&vm, "{\"command\":\"\xff\"}", 15, &r);
        CHECK(r.text && strstr(r.text, "\"ok\":false"));
        free(r.text);
        CHECK(fake.pauses == 0 && fake.resumes == 0 && fake.buttons == 0);
}

static void feed(struct api_lines *l, const char *data, size_t n)
{
        size_t room;
        char *space = api_lines_space(l, &room);
        memcpy(space, data, n < room ? n : room);
        api_lines_added(l, n < room ? n : room);
}

TEST(lines_are_cut_at_newlines_across_reads)
{
        struct api_lines *l = xmalloc0(sizeof(*l));
        const char *line;
        size_t n;
        feed(l, "{\"comm", 6);
        CHECK(!api_lines_next(l, &line, &n) && !api_lines_overlong(l));
        feed(l, "and\":1}\n\n{}\nrest", 16);
        CHECK(api_lines_next(l, &line, &n) && n == 13 && memcmp(line, "{\"command\":1}", 13) == 0);
        CHECK(api_lines_next(l, &line, &n) && n == 0);
        CHECK(api_lines_next(l, &line, &n) && n == 2 && memcmp(line, "{}", 2) == 0);
        CHECK(!api_lines_next(l, &line, &n));
        feed(l, "\n", 1);
        CHECK(api_lines_next(l, &line, &n) && n == 4 && memcmp(line, "rest", 4) == 0);
        /* A line of exactly the limit fits; one byte more is overlong. */
        char *big = xmalloc0(API_LINE_MAX + 1);
        memset(big, 'x', API_LINE_MAX);
        big[API_LINE_MAX] = '\n';
        feed(l, big, API_LINE_MAX + 1);
        CHECK(api_lines_next(l, &line, &n) && n == API_LINE_MAX && !api_lines_overlong(l));
        feed(l, big, API_LINE_MAX);
        CHECK(!api_lines_next(l, &line, &n) && api_lines_overlong(l));
        size_t room;
        api_lines_space(l, &room);
        CHECK(room == 1);
        free(big);
        free(l);
}

/* ---- the socket ---------------------------------------------------------------------------- */

struct server {
        struct evloop loop;
        struct api *api;
        struct api_vm vm;
        int pause_fd;
        char dir[64], path[128];
};

static bool server_start(struct server *s)
{
        snprintf(s->dir, sizeof(s->dir), "/tmp/capsule-api-XXXXXX");
        if (!mkdtemp(s->dir))
                return false;
        snprintf(s->path, sizeof(s->path), "%s/api.sock", s->dir);
        s->pause_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
        s->vm = fake_vm(s->pause_fd);
        cleanup_error cap_error_t err = NULL;
        if (evloop_init(&s->loop, &err) < 0 || evloop_start(&s->loop, &err) < 0)
                return false;
        return api_open(&s->api, s->path, &s->loop, &s->vm, &err) == 0;
}

static void server_stop(struct server *s)
{
        evloop_stop(&s->loop);
        api_close(s->api);
        evloop_destroy(&s->loop);
        close(s->pause_fd);
        rmdir(s->dir);
}

static int client(const char *path)
{
        struct sockaddr_un addr = { .sun_family = AF_UNIX };
        snprintf(addr.sun_path, sizeof(addr.sun_path), "%s", path);
        int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (connect(fd, (struct sockaddr *)&addr, sizeof(addr)) < 0) {
                close(fd);
                return -1;
        }
        return fd;
}

/* One answer line within ms, or NULL (also at EOF). */
static char *answer(int fd, int ms)
{
        char buf[8192];
        size_t len = 0;
        while (len < sizeof(buf) - 1) {
                struct pollfd p = { .fd = fd, .events = POLLIN };
                if (poll(&p, 1, ms) <= 0)
                        return NULL;
                if (read(fd, buf + len, 1) != 1)
                        return NULL;
                if (buf[len] == '\n') {
                        buf[len] = '\0';
                        return xstrdup(buf);
                }
                len++;
        }
        return NULL;
}

static bool closed_within(int fd, int ms)
{
        char c;
        struct pollfd p = { .fd = fd, .events = POLLIN };
        return poll(&p, 1, ms) == 1 && read(fd, &c, 1) <= 0;
}

static bool says(const char *text, const char *part)
{
        return text && strstr(text, part);
}

TEST(socket_is_private_and_removed_at_close)
{
        struct server s;
        CHECK(server_start(&s));
        struct stat st;
        CHECK(lstat(s.path, &st) == 0 && S_ISSOCK(st.st_mode) && (st.st_mode & 0777) == 0600);
        cleanup_close int fd = client(s.path);
        CHECK(fd >= 0);
        const char req[] = "{\"command\":\"info\"}\n{\"command\":\"pause\"}\n";
        CHECK(write(fd, req, strlen(req)) == (ssize_t)strlen(req));
        cleanup_free char *a1 = answer(fd, 5000);
        cleanup_free char *a2 = answer(fd, 5000);
        CHECK(says(a1, "\"state\":\"running\"") && says(a1, "\"rss\""));
        CHECK(says(a2, "\"ok\":true") && says(a2, "paused"));
        server_stop(&s);
        CHECK(lstat(s.path, &st) < 0 && errno == ENOENT);
        CHECK(closed_within(fd, 1000));
}

TEST(bad_and_oversized_requests_are_refused)
{
        struct server s;
        CHECK(server_start(&s));
        cleanup_close int fd = client(s.path);
        CHECK(write(fd, "{\"command\":\n", 12) == 12);
        cleanup_free char *a1 = answer(fd, 5000);
        CHECK(says(a1, "\"ok\":false") && says(a1, "invalid JSON"));
        /* The connection goes on after a malformed request. */
        CHECK(write(fd, "{\"command\":\"resume\"}\n", 21) == 21);
        cleanup_free char *a2 = answer(fd, 5000);
        CHECK(says(a2, "running"));
        /* A line longer than the limit: an error, then the connection is closed. */
        size_t big = API_LINE_MAX + 100;
        cleanup_free char *junk = xmalloc0(big);
        memset(junk, '{', big);
        cleanup_close int fd2 = client(s.path);
        size_t sent = 0;
        while (sent < big) {
                ssize_t n = send(fd2, junk + sent, big - sent, MSG_NOSIGNAL);
                if (n <= 0)
                        break;
                sent += (size_t)n;
        }
        cleanup_free char *a3 = answer(fd2, 5000);
        CHECK(says(a3, "request longer than 65536 bytes"));
        CHECK(closed_within(fd2, 5000));
        /* The first client is still served, and nothing changed. */
        CHECK(write(fd, "{\"command\":\"info\"}\n", 19) == 19);
        cleanup_free char *a4 = answer(fd, 5000);
        CHECK(says(a4, "running"));
        CHECK(fake.pauses == 0 && fake.buttons == 0 && fake.resumes == 1);
        server_stop(&s);
}

TEST(pending_pause_answers_in_order)
{
        struct server s;
        CHECK(server_start(&s));
        fake.parks_at_once = false;
        cleanup_close int fd = client(s.path);
        const char req[] = "{\"command\":\"pause\"}\n{\"command\":\"info\"}\n";
        CHECK(write(fd, req, strlen(req)) == (ssize_t)strlen(req));
        cleanup_free char *none = answer(fd, 300);
        CHECK(none == NULL); /* the vCPUs have not parked */
        /* Another client is served meanwhile. */
        cleanup_close int other = client(s.path);
        CHECK(write(other, "{\"command\":\"info\"}\n", 19) == 19);
        cleanup_free char *a0 = answer(other, 5000);
        CHECK(says(a0, "\"ok\":true"));
        fake.paused = true;
        uint64_t one = 1;
        CHECK(write(s.pause_fd, &one, sizeof(one)) == sizeof(one));
        cleanup_free char *a1 = answer(fd, 5000);
        cleanup_free char *a2 = answer(fd, 5000);
        CHECK(says(a1, "\"state\":\"paused\"") && !says(a1, "vcpus"));
        CHECK(says(a2, "\"vcpus\":2"));
        server_stop(&s);
}

TEST(resume_overtakes_a_pending_pause)
{
        struct server s;
        CHECK(server_start(&s));
        fake.parks_at_once = false;
        cleanup_close int fd = client(s.path);
        CHECK(write(fd, "{\"command\":\"pause\"}\n", 20) == 20);
        cleanup_free char *none = answer(fd, 300);
        CHECK(none == NULL);
        cleanup_close int other = client(s.path);
        CHECK(write(other, "{\"command\":\"resume\"}\n", 21) == 21);
        cleanup_free char *a0 = answer(other, 5000);
        CHECK(says(a0, "running"));
        cleanup_free char *a1 = answer(fd, 5000);
        CHECK(says(a1, "\"ok\":false") && says(a1, "resumed before"));
        CHECK(write(fd, "{\"command\":\"info\"}\n", 19) == 19);
        cleanup_free char *a2 = answer(fd, 5000);
        CHECK(says(a2, "running"));
        server_stop(&s);
}

TEST(connections_are_capped)
{
        struct server s;
        CHECK(server_start(&s));
        int fds[API_MAX_CONNS];
        for (int i = 0; i < API_MAX_CONNS; i++) {
                fds[i] = client(s.path);
                CHECK(fds[i] >= 0);
                CHECK(write(fds[i], "{\"command\":\"info\"}\n", 19) == 19);
                cleanup_free char *a = answer(fds[i], 5000); /* each one accepted before the next */
                CHECK(says(a, "\"ok\":true"));
        }
        cleanup_close int extra = client(s.path);
        cleanup_free char *a = answer(extra, 5000);
        CHECK(says(a, "too many connections"));
        CHECK(closed_within(extra, 5000));
        close(fds[0]);
        /* A slot freed is usable again once the server has seen the close. */
        cleanup_free char *again = NULL;
        for (int tries = 0; tries < 50 && !says(again, "\"vcpus\""); tries++) {
                free(again);
                cleanup_close int fd = client(s.path);
                (void)!write(fd, "{\"command\":\"info\"}\n", 19);
                again = answer(fd, 5000);
                if (!says(again, "\"vcpus\""))
                        usleep(20000);
        }
        CHECK(says(again, "\"vcpus\""));
        for (int i = 1; i < API_MAX_CONNS; i++)
                close(fds[i]);
        server_stop(&s);
}

TEST(stop_timer_hard_stops)
{
        struct server s;
        CHECK(server_start(&s));
        cleanup_close int fd = client(s.path);
        CHECK(write(fd, "{\"command\":\"stop\",\"timeout\":0}\n", 31) == 31);
        cleanup_free char *a = answer(fd, 5000);
        CHECK(says(a, "stopping"));
        for (int i = 0; i < 200 && fake.hard_stops == 0; i++)
                usleep(10000);
        CHECK(fake.buttons == 1 && fake.hard_stops == 1 && fake.hard_stop_timeout == 0);
        server_stop(&s);
}

TEST(existing_paths)
{
        char dir[] = "/tmp/capsule-api-XXXXXX";
        CHECK(mkdtemp(dir));
        cleanup_free char *file = xasprintf("%s/file", dir);
        cleanup_free char *stale = xasprintf("%s/stale.sock", dir);
        cleanup_free char *live = xasprintf("%s/live.sock", dir);
        cleanup_error cap_error_t werr = NULL;
        CHECK(write_file(file, "x", 1, &werr) == 0);
        struct evloop loop;
        cleanup_error cap_error_t err = NULL;
        CHECK(evloop_init(&loop, &err) == 0);
        int pause_fd = eventfd(0, EFD_CLOEXEC);
        struct api_vm vm = fake_vm(pause_fd);
        struct api *a = NULL;
        /* A file that is not a socket is refused and left alone. */
        CHECK(api_open(&a, file, &loop, &vm, &err) < 0);
        CHECK(says(err->msg, "api-socket: ") && says(err->msg, "not a socket"));
        struct stat st;
        CHECK(stat(file, &st) == 0 && S_ISREG(st.st_mode));
        cap_error_free(&err);
        /* A socket somebody listens on is refused. */
        struct sockaddr_un addr = { .sun_family = AF_UNIX };
        snprintf(addr.sun_path, sizeof(addr.sun_path), "%s", live);
        cleanup_close int l = socket(AF_UNIX, SOCK_STREAM, 0);
        CHECK(bind(l, (struct sockaddr *)&addr, sizeof(addr)) == 0 && listen(l, 1) == 0);
        CHECK(api_open(&a, live, &loop, &vm, &err) < 0);
        CHECK(says(err->msg, "in use"));
        cap_error_free(&err);
        /* A socket left behind by a killed VM is replaced. */
        snprintf(addr.sun_path, sizeof(addr.sun_path), "%s", stale);
        int d = socket(AF_UNIX, SOCK_STREAM, 0);
        CHECK(bind(d, (struct sockaddr *)&addr, sizeof(addr)) == 0);
        close(d);
        CHECK(api_open(&a, stale, &loop, &vm, &err) == 0);
        api_close(a);
        CHECK(lstat(stale, &st) < 0);
        /* No directory: the error names the setting. */
        cleanup_free char *nodir = xasprintf("%s/no/such.sock", dir);
        CHECK(api_open(&a, nodir, &loop, &vm, &err) < 0);
        CHECK(says(err->msg, "api-socket: cannot create"));
        evloop_destroy(&loop);
        close(pause_fd);
        unlink(file);
        unlink(live);
        rmdir(dir);
}
