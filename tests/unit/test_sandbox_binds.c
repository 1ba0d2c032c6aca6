/* A VM container's host bind mounts (src/sandbox/sandbox_binds.c): which mounts the guest gets
 * from the binds share, the sources the agent sees, and the binding itself, which must not follow
 * a symlink in a hostile config's source. */
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "check.h"
#include "common/agent_proto.h"
#include "common/util.h"
#include "sandbox/sandbox_internal.h"

TEST(binds_plan_rewrites_bind_sources)
{
        const char *text = "{\"mounts\":["
                           "{\"destination\":\"/proc\",\"type\":\"proc\",\"source\":\"proc\"},"
                           "{\"destination\":\"/etc/hosts\",\"type\":\"bind\",\"source\":\"/var/lib/c/hosts\",\"options\":[\"ro\"]},"
                           "{\"destination\":\"/data\",\"source\":\"/srv/data\",\"options\":[\"rw\",\"rbind\"]},"
                           "{\"destination\":\"/rel\",\"type\":\"bind\",\"source\":\"relative\"},"
                           "{\"destination\":\"/tmp\",\"type\":\"tmpfs\",\"source\":\"/not-a-bind\"}],"
                           "\"root\":{\"path\":\"rootfs\"}}";
        char *out = NULL;
        char **sources = NULL;
        cap_error_t err = NULL;
        CHECK(sandbox_binds_plan(text, AGENT_BINDS, &out, &sources, &err) == 0);
        CHECK(strv_len(sources) == 2);
        CHECK_STR(sources[0], "r/var/lib/c/hosts");
        CHECK_STR(sources[1], "w/srv/data");
        json_t *cfg = json_loads(out, 0, NULL);
        json_t *m = json_object_get(cfg, "mounts");
        CHECK_STR(json_string_value(json_object_get(json_array_get(m, 0), "source")), "proc");
        CHECK_STR(json_string_value(json_object_get(json_array_get(m, 1), "source")), AGENT_BINDS "/0");
        CHECK_STR(json_string_value(json_object_get(json_array_get(m, 2), "source")), AGENT_BINDS "/1");
        CHECK_STR(json_string_value(json_object_get(json_array_get(m, 3), "source")), "relative");
        CHECK_STR(json_string_value(json_object_get(json_array_get(m, 4), "source")), "/not-a-bind");
        CHECK_STR(json_string_value(json_object_get(json_object_get(cfg, "root"), "path")), "rootfs");
        json_decref(cfg);
        free(out);
        cap_strvfreep(&sources);
}

TEST(binds_plan_refuses_too_many_and_bad_json)
{
        char text[16384] = "{\"mounts\":[";
        for (int i = 0; i <= SANDBOX_BINDS_MAX; i++)
                strcat(text, i ? ",{\"type\":\"bind\",\"source\":\"/x\"}" : "{\"type\":\"bind\",\"source\":\"/x\"}");
        strcat(text, "]}");
        char *out = NULL;
        char **sources = NULL;
        cap_error_t err = NULL;
        CHECK(sandbox_binds_plan(text, AGENT_BINDS, &out, &sources, &err) < 0 && strstr(err->msg, "at most 64 bind mounts"));
        cap_error_free(&err);
        CHECK(sandbox_binds_plan("{", AGENT_BINDS, &out, &sources, &err) < 0 && strstr(err->msg, "config.json: line 1"));
        cap_error_free(&err);
}

/* In a child (the mount namespace is the child's own): bind the sources, report what binds/0 holds,
 * whether it refuses a write, and whether binds/1/inner takes one. */
static int setup_in_child(const char *dir, char *const *sources, char *why, size_t len)
{
        int p[2];
        if (pipe(p) < 0)
                return -1;
        pid_t pid = fork();
        if (pid == 0) {
                close(p[0]);
                cap_error_t err = NULL;
                if (sandbox_binds_setup(dir, sources, &err) < 0) {
                        dprintf(p[1], "E%s", err->msg);
                        _exit(1);
                }
                char path[4096], buf[64] = "";
                snprintf(path, sizeof(path), "%s/0", dir);
                int fd = open(path, O_RDONLY);
                ssize_t n = fd < 0 ? -1 : read(fd, buf, sizeof(buf) - 1);
                int ro = open(path, O_WRONLY) < 0 && errno == EROFS;
                snprintf(path, sizeof(path), "%s/1/inner", dir);
                int rw = open(path, O_WRONLY) >= 0;
                dprintf(p[1], "O%.*s|ro %d|rw %d", n > 0 ? (int)n : 0, buf, ro, rw);
                _exit(0);
        }
        close(p[1]);
        ssize_t n = read(p[0], why, len - 1);
        why[n > 0 ? n : 0] = '\0';
        close(p[0]);
        int status;
        waitpid(pid, &status, 0);
        return WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 0 : -1;
}

TEST(binds_setup_binds_files_and_dirs_not_symlinks)
{
        if (geteuid() != 0)
                SKIP("needs root (a mount namespace and bind mounts)");
        char tmp[] = "/tmp/capsule-binds-XXXXXX";
        CHECK(mkdtemp(tmp));
        cleanup_free char *file = xasprintf("%s/hosts", tmp), *dir = xasprintf("%s/vol", tmp);
        cleanup_free char *inner = xasprintf("%s/vol/inner", tmp), *link = xasprintf("%s/link", tmp);
        cleanup_free char *binds = xasprintf("%s/binds", tmp), *binds2 = xasprintf("%s/binds2", tmp);
        cleanup_free char *entry = xasprintf("%s/binds/0", tmp);
        cap_error_t err = NULL;
        char why[512];
        CHECK(write_file(file, "127.0.0.1 h\n", 12, &err) == 0);
        CHECK(mkdir(dir, 0700) == 0 && write_file(inner, "", 0, &err) == 0);
        CHECK(symlink(file, link) == 0);
        cleanup_free char *ro_file = xasprintf("r%s", file), *rw_dir = xasprintf("w%s", dir), *w_link = xasprintf("w%s", link);
        char *ok[] = { ro_file, rw_dir, NULL };
        int r = setup_in_child(binds, ok, why, sizeof(why));
        CHECK(r == 0);
        CHECK_STR(why, "O127.0.0.1 h\n|ro 1|rw 1");
        /* The host's own view is untouched: the entries are empty, the mounts were the child's. */
        struct stat st;
        CHECK(stat(entry, &st) == 0 && S_ISREG(st.st_mode) && st.st_size == 0);
        char *bad[] = { w_link, NULL };
        r = setup_in_child(binds2, bad, why, sizeof(why));
        CHECK(r < 0 && strstr(why, "is a symlink"));
        CHECK(rm_rf(tmp, &err) == 0);
}
