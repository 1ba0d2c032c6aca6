/* cgroup tests against the real hierarchies of this host. Every cgroup made here
 * lives below the cgroup this process already sits in and is removed again. */
#include <fcntl.h>
#include <dirent.h>
#include <grp.h>
#include <pthread.h>
#include <sched.h>
#include <linux/magic.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/vfs.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "check.h"
#include "common/util.h"
#include "runtime/cgroup.h"
#include "runtime/cgroup_internal.h"

/* This process's own cgroup in the hierarchy holding controller ("" = unified). */
static char *own_cgroup(const char *controller)
{
        cleanup_free char *self = NULL;
        cleanup_error cap_error_t err = NULL;
        if (read_file("/proc/self/cgroup", &self, NULL, 0, &err) < 0)
                return NULL;
        cleanup_strv char **lines = strv_split(self, "\n");
        for (size_t i = 0; lines[i]; i++) {
                char *c1 = strchr(lines[i], ':'), *c2 = c1 ? strchr(c1 + 1, ':') : NULL;
                if (!c2)
                        continue;
                *c2 = '\0';
                bool match = controller[0] ? cgroup_list_has(c1 + 1, controller) : c1[1] == '\0';
                if (match)
                        return xstrdup(strcmp(c2 + 1, "/") == 0 ? "" : c2 + 1);
        }
        return NULL;
}

static char *read_trim(const char *path)
{
        char *buf = NULL;
        size_t len = 0;
        cleanup_error cap_error_t err = NULL;
        if (read_file(path, &buf, &len, 0, &err) < 0)
                return NULL;
        while (len > 0 && (buf[len - 1] == '\n' || buf[len - 1] == ' '))
                buf[--len] = '\0';
        return buf;
}

static char *cg_file(const char *dir, const char *file)
{
        cleanup_free char *path = xasprintf("%s/%s", dir, file);
        return read_trim(path);
}

static char *unique_name(void)
{
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        return xasprintf("capsule-test-%d-%ld", (int)getpid(), ts.tv_nsec);
}

static bool exists(const char *path)
{
        struct stat st;
        return stat(path, &st) == 0;
}

static pid_t fork_sleeper(void)
{
        pid_t pid = fork();
        if (pid == 0) {
                for (;;)
                        pause();
        }
        return pid;
}

/* Released on every exit path of a test: destroy the cgroup (which kills and thaws), reap the
 * children, and turn hugetlb back off in the unified root if this test turned it on. */
struct fixture {
        struct cgroup *cg;
        pid_t children[4];
        bool restore_hugetlb;
};

/* The children are reaped first: a cgroup that still holds one (a test that failed before
 * moving it everywhere) cannot be removed. */
static void fixture_release(struct fixture *f)
{
        for (size_t i = 0; i < ARRAY_SIZE(f->children); i++) {
                if (f->children[i] > 0) {
                        kill(f->children[i], SIGKILL);
                        waitpid(f->children[i], NULL, 0);
                }
        }
        if (f->cg) {
                cap_error_t err = NULL;
                if (cgroup_destroy(f->cg, &err) < 0) {
                        fprintf(stderr, "cleanup: %s\n", err->msg);
                        cap_error_free(&err);
                }
        }
        cgroup_free(f->cg);
        f->cg = NULL;
        if (f->restore_hugetlb) {
                cap_error_t err = NULL;
                if (cgroup_write("/sys/fs/cgroup/unified", "cgroup.subtree_control", "cleanup", "-hugetlb", &err) < 0) {
                        fprintf(stderr, "cleanup: %s\n", err->msg);
                        cap_error_free(&err);
                }
        }
}
#define cleanup_fixture __attribute__((cleanup(fixture_release)))

static bool json_strv_has(json_t *arr, const char *s)
{
        size_t i;
        json_t *v;
        json_array_foreach (arr, i, v)
                if (strcmp(json_string_value(v), s) == 0)
                        return true;
        return false;
}

/* Every directory the cgroup says it created, from its saved form. */
static char **created_dirs(struct cgroup *cg)
{
        json_t *saved = cgroup_save(cg);
        size_t n = 0, i, k;
        json_t *h, *d;
        json_array_foreach (json_object_get(saved, "hierarchies"), i, h)
                n += json_array_size(json_object_get(h, "created"));
        char **out = xmalloc0((n + 1) * sizeof(char *));
        n = 0;
        json_array_foreach (json_object_get(saved, "hierarchies"), i, h)
                json_array_foreach (json_object_get(h, "created"), k, d)
                        out[n++] = xstrdup(json_string_value(d));
        json_decref(saved);
        return out;
}

TEST(detect_matches_statfs)
{
        enum cgroup_mode mode, expected;
        cleanup_error cap_error_t err = NULL;
        struct statfs st;

        CHECK(statfs("/sys/fs/cgroup", &st) == 0);
        if (st.f_type == CGROUP2_SUPER_MAGIC)
                expected = CGROUP_MODE_V2;
        else if (statfs("/sys/fs/cgroup/unified", &st) == 0 && st.f_type == CGROUP2_SUPER_MAGIC)
                expected = CGROUP_MODE_HYBRID;
        else
                expected = CGROUP_MODE_V1;
        CHECK(cgroup_detect(&mode, &err) == 0);
        CHECK(mode == expected);
        CHECK_STR(cgroup_mode_name(mode), expected == CGROUP_MODE_V2 ? "v2" : expected == CGROUP_MODE_V1 ? "v1" : "hybrid");
        printf("# cgroup mode: %s\n", cgroup_mode_name(mode));
}

TEST(resolve_relative_default_absolute)
{
        cleanup_error cap_error_t err = NULL;
        cleanup_cgroup struct cgroup *rel = NULL, *dflt = NULL, *abs = NULL;
        enum cgroup_mode mode;
        CHECK(cgroup_detect(&mode, &err) == 0);

        CHECK(cgroup_resolve("a/./b/", "id1", false, &rel, &err) == 0);
        CHECK(cgroup_resolve(NULL, "id1", false, &dflt, &err) == 0);
        CHECK(cgroup_resolve("/abs//x", "id1", false, &abs, &err) == 0);
        if (mode != CGROUP_MODE_V2) {
                cleanup_free char *own = own_cgroup("memory");
                CHECK(own != NULL);
                cleanup_free char *want_rel = xasprintf("/sys/fs/cgroup/memory%s/a/b", own);
                cleanup_free char *want_dflt = xasprintf("/sys/fs/cgroup/memory%s/capsule/id1", own);
                CHECK_STR(cgroup_controller_path(rel, "memory"), want_rel);
                CHECK_STR(cgroup_controller_path(dflt, "memory"), want_dflt);
                CHECK_STR(cgroup_controller_path(abs, "memory"), "/sys/fs/cgroup/memory/abs/x");
                /* comounted or not, cpu and cpuacct both resolve */
                cleanup_free char *own_cpu = own_cgroup("cpuacct");
                cleanup_free char *want_cpu = xasprintf("%s/a/b", own_cpu);
                const char *cpuacct = cgroup_controller_path(rel, "cpuacct");
                CHECK(cpuacct && strstr(cpuacct, want_cpu) && str_has_prefix(cpuacct, "/sys/fs/cgroup/"));
                CHECK(cgroup_controller_path(rel, "name=systemd") != NULL);
                CHECK(cgroup_controller_path(rel, "no-such-controller") == NULL);
        } else {
                CHECK(cgroup_controller_path(rel, "memory") == NULL);
        }
        if (mode == CGROUP_MODE_V1) {
                CHECK(cgroup_unified_path(rel) == NULL);
        } else {
                const char *mount = mode == CGROUP_MODE_V2 ? "/sys/fs/cgroup" : "/sys/fs/cgroup/unified";
                cleanup_free char *own = own_cgroup("");
                cleanup_free char *want_rel = xasprintf("%s%s/a/b", mount, own);
                cleanup_free char *want_abs = xasprintf("%s/abs/x", mount);
                CHECK_STR(cgroup_unified_path(rel), want_rel);
                CHECK_STR(cgroup_unified_path(abs), want_abs);
        }
}

TEST(resolve_systemd)
{
        cleanup_error cap_error_t err = NULL;
        cleanup_cgroup struct cgroup *a = NULL, *b = NULL, *c = NULL, *d = NULL;
        enum cgroup_mode mode;
        CHECK(cgroup_detect(&mode, &err) == 0);

        CHECK(cgroup_resolve("machine-foo.slice:capsule:abc", "x", true, &a, &err) == 0);
        CHECK(cgroup_resolve(":capsule:abc", "x", true, &b, &err) == 0);
        CHECK(cgroup_resolve("-.slice:p:n", "x", true, &c, &err) == 0);
        CHECK(cgroup_resolve(NULL, "idx", true, &d, &err) == 0);
        const char *(*get)(const struct cgroup *) = cgroup_unified_path;
        const char *mount = mode == CGROUP_MODE_V2 ? "/sys/fs/cgroup" : "/sys/fs/cgroup/unified";
        if (mode == CGROUP_MODE_V1)
                get = NULL;
        cleanup_free char *wa = xasprintf("%s/machine.slice/machine-foo.slice/capsule-abc.scope", mount);
        cleanup_free char *wb = xasprintf("%s/system.slice/capsule-abc.scope", mount);
        cleanup_free char *wc = xasprintf("%s/p-n.scope", mount);
        cleanup_free char *wd = xasprintf("%s/system.slice/capsule-idx.scope", mount);
        if (get) {
                CHECK_STR(get(a), wa);
                CHECK_STR(get(b), wb);
                CHECK_STR(get(c), wc);
                CHECK_STR(get(d), wd);
        }
        if (mode != CGROUP_MODE_V2)
                CHECK_STR(cgroup_controller_path(a, "memory"),
                          "/sys/fs/cgroup/memory/machine.slice/machine-foo.slice/capsule-abc.scope");

        static const char *const bad[] = { "foo.slice:x", "a/b.slice:x:y", "a--b.slice:x:y", "-a.slice:x:y", "nosuffix:x:y",
                                           "s.slice:x:", "s.slice:x:y:z", "s.slice:p/q:y" };
        for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
                cleanup_cgroup struct cgroup *cg = NULL;
                cleanup_error cap_error_t e = NULL;
                CHECK(cgroup_resolve(bad[i], "x", true, &cg, &e) < 0);
                CHECK(e && strstr(e->msg, "linux.cgroupsPath"));
        }
}

TEST(resolve_rejects_dotdot)
{
        static const char *const bad[] = { "../escape", "a/../../b", "/abs/..", ".." };
        for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
                cleanup_cgroup struct cgroup *cg = NULL;
                cleanup_error cap_error_t err = NULL;
                CHECK(cgroup_resolve(bad[i], "x", false, &cg, &err) < 0);
                CHECK(cg == NULL);
                CHECK(err && strstr(err->msg, "linux.cgroupsPath") && strstr(err->msg, ".."));
        }
        cleanup_cgroup struct cgroup *cg = NULL;
        cleanup_error cap_error_t err = NULL;
        CHECK(cgroup_resolve(NULL, "..", false, &cg, &err) < 0);
        CHECK(err && strstr(err->msg, "linux.cgroupsPath"));
}

TEST(lifecycle_limits_freeze_kill_destroy)
{
        cleanup_fixture struct fixture fx = { 0 };
        cleanup_error cap_error_t err = NULL;
        cleanup_free char *name = unique_name();
        cleanup_free char *rel = xasprintf("%s/c1", name);
        enum cgroup_mode mode;

        CHECK(cgroup_detect(&mode, &err) == 0);
        CHECK(cgroup_resolve(rel, "x", false, &fx.cg, &err) == 0);
        cleanup_free char *root_ctl = cg_file("/sys/fs/cgroup/unified", "cgroup.subtree_control");
        fx.restore_hugetlb = mode == CGROUP_MODE_HYBRID && root_ctl && !cgroup_list_has(root_ctl, "hugetlb");
        CHECK(cgroup_create(fx.cg, &err) == 0);

        cleanup_strv char **created = created_dirs(fx.cg);
        CHECK(strv_len(created) >= 2);
        for (size_t i = 0; created[i]; i++)
                CHECK(exists(created[i]));

        struct spec_device_cgroup rules[] = {
                { false, 'a', -1, -1, "rwm" },
                { true, 'c', 1, 3, "rwm" },
                { true, 'c', 10, 200, "rw" },
        };
        struct spec_hugepage_limit huge[] = { { "2MB", 4 << 20 } };
        struct spec_resources res = { 0 };
        res.memory.limit = (opt_i64){ true, 64 << 20 };
        res.memory.reservation = (opt_i64){ true, 32 << 20 };
        res.memory.swap = (opt_i64){ true, 128 << 20 };
        res.pids_limit = (opt_i64){ true, 32 };
        res.cpu.shares = (opt_u64){ true, 512 };
        res.cpu.quota = (opt_i64){ true, 50000 };
        res.cpu.period = (opt_u64){ true, 100000 };
        res.cpu.cpus = "0";
        res.cpu.mems = "0";
        res.devices = rules;
        res.n_devices = ARRAY_SIZE(rules);
        const char *unified = cgroup_unified_path(fx.cg);
        bool hugetlb = exists("/sys/kernel/mm/hugepages/hugepages-2048kB");
        if (hugetlb) {
                res.hugepage_limits = huge;
                res.n_hugepage_limits = 1;
        }
        if (cgroup_apply(fx.cg, &res, &err) < 0) {
                fprintf(stderr, "apply: %s\n", err->msg);
                CHECK(false);
        }

        if (mode != CGROUP_MODE_V2) {
                const char *mem = cgroup_controller_path(fx.cg, "memory");
                const char *cpu = cgroup_controller_path(fx.cg, "cpu");
                const char *cpuset = cgroup_controller_path(fx.cg, "cpuset");
                const char *pids = cgroup_controller_path(fx.cg, "pids");
                const char *dev = cgroup_controller_path(fx.cg, "devices");
                CHECK(mem && cpu && cpuset && pids && dev);
                cleanup_free char *v1 = cg_file(mem, "memory.limit_in_bytes");
                cleanup_free char *v2 = cg_file(mem, "memory.soft_limit_in_bytes");
                cleanup_free char *v3 = cg_file(pids, "pids.max");
                cleanup_free char *v4 = cg_file(cpu, "cpu.shares");
                cleanup_free char *v5 = cg_file(cpu, "cpu.cfs_quota_us");
                cleanup_free char *v6 = cg_file(cpu, "cpu.cfs_period_us");
                cleanup_free char *v7 = cg_file(cpuset, "cpuset.cpus");
                cleanup_free char *v8 = cg_file(cpuset, "cpuset.mems");
                cleanup_free char *v9 = cg_file(dev, "devices.list");
                cleanup_free char *sw = cg_file(mem, "memory.memsw.limit_in_bytes");
                CHECK_STR(v1, "67108864");
                CHECK_STR(v2, "33554432");
                CHECK_STR(sw, "134217728");
                CHECK_STR(v3, "32");
                CHECK_STR(v4, "512");
                CHECK_STR(v5, "50000");
                CHECK_STR(v6, "100000");
                CHECK_STR(v7, "0");
                CHECK_STR(v8, "0");
                CHECK(v9 && strstr(v9, "c 1:3 rwm") && strstr(v9, "c 10:200 rw") && strstr(v9, "c 1:5 rwm") &&
                      strstr(v9, "c 136:* rwm") && !strstr(v9, "a *:*"));
        } else {
                cleanup_free char *v1 = cg_file(unified, "memory.max");
                cleanup_free char *v3 = cg_file(unified, "pids.max");
                cleanup_free char *v4 = cg_file(unified, "cpu.weight");
                cleanup_free char *v5 = cg_file(unified, "cpu.max");
                cleanup_free char *sw = cg_file(unified, "memory.swap.max");
                CHECK_STR(v1, "67108864");
                CHECK_STR(sw, "67108864"); /* swap alone: 128M memory+swap - 64M memory */
                CHECK_STR(v3, "32");
                CHECK_STR(v4, "20"); /* 1 + (512 - 2) * 9999 / 262142 */
                CHECK_STR(v5, "50000 100000");
        }
        if (hugetlb && unified && mode == CGROUP_MODE_HYBRID) {
                cleanup_free char *h = cg_file(unified, "hugetlb.2MB.max");
                CHECK_STR(h, "4194304");
        }

        /* unlimited pids is written as "max" */
        struct spec_resources upd = { 0 };
        upd.pids_limit = (opt_i64){ true, -1 };
        CHECK(cgroup_apply(fx.cg, &upd, &err) == 0);
        const char *pids_dir = mode == CGROUP_MODE_V2 ? unified : cgroup_controller_path(fx.cg, "pids");
        cleanup_free char *pmax = cg_file(pids_dir, "pids.max");
        CHECK_STR(pmax, "max");

        /* a failed write names the field and the file */
        struct spec_resources bad = { 0 };
        bad.cpu.cpus = "4095";
        CHECK(cgroup_apply(fx.cg, &bad, &err) < 0);
        CHECK(err && str_has_prefix(err->msg, "linux.resources.cpu.cpus: write /sys/fs/cgroup/") &&
              strstr(err->msg, "/cpuset.cpus: "));
        cap_error_free(&err);

        fx.children[0] = fork_sleeper();
        CHECK(fx.children[0] > 0);
        CHECK(cgroup_enter(fx.cg, fx.children[0], &err) == 0);
        char procpath[64];
        snprintf(procpath, sizeof(procpath), "/proc/%d/cgroup", (int)fx.children[0]);
        cleanup_free char *membership = read_trim(procpath);
        CHECK(membership && strstr(membership, rel));
        if (unified) {
                cleanup_free char *line = xasprintf("0::%s", unified + strlen(mode == CGROUP_MODE_V2 ? "/sys/fs/cgroup"
                                                                                                  : "/sys/fs/cgroup/unified"));
                CHECK(strstr(membership, line));
        }

        cleanup_free pid_t *pids = NULL;
        size_t n = 0;
        CHECK(cgroup_pids(fx.cg, &pids, &n, &err) == 0);
        CHECK(n == 1 && pids[0] == fx.children[0]);

        CHECK(!cgroup_is_frozen(fx.cg));
        CHECK(cgroup_freeze(fx.cg, true, &err) == 0);
        CHECK(cgroup_is_frozen(fx.cg));
        const char *freezer = cgroup_controller_path(fx.cg, "freezer");
        if (freezer) {
                cleanup_free char *state = cg_file(freezer, "freezer.state");
                CHECK_STR(state, "FROZEN");
        }
        CHECK(cgroup_freeze(fx.cg, false, &err) == 0);
        CHECK(!cgroup_is_frozen(fx.cg));
        if (freezer) {
                cleanup_free char *state = cg_file(freezer, "freezer.state");
                CHECK_STR(state, "THAWED");
        }

        /* SIGTERM takes the freeze, signal, thaw path */
        int status;
        CHECK(cgroup_kill(fx.cg, SIGTERM, &err) == 0);
        CHECK(waitpid(fx.children[0], &status, 0) == fx.children[0]);
        fx.children[0] = 0;
        CHECK(WIFSIGNALED(status) && WTERMSIG(status) == SIGTERM);
        CHECK(!cgroup_is_frozen(fx.cg));

        fx.children[1] = fork_sleeper();
        CHECK(fx.children[1] > 0);
        CHECK(cgroup_enter(fx.cg, fx.children[1], &err) == 0);
        CHECK(cgroup_kill(fx.cg, SIGKILL, &err) == 0);
        CHECK(waitpid(fx.children[1], &status, 0) == fx.children[1]);
        fx.children[1] = 0;
        CHECK(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);

        /* destroy kills what is still inside */
        fx.children[2] = fork_sleeper();
        CHECK(fx.children[2] > 0);
        CHECK(cgroup_enter(fx.cg, fx.children[2], &err) == 0);
        CHECK(cgroup_destroy(fx.cg, &err) == 0);
        CHECK(waitpid(fx.children[2], &status, 0) == fx.children[2]);
        fx.children[2] = 0;
        CHECK(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
        for (size_t i = 0; created[i]; i++)
                CHECK(!exists(created[i]));
        CHECK(cgroup_destroy(fx.cg, &err) == 0);
}

TEST(save_load_destroy)
{
        cleanup_fixture struct fixture fx = { 0 };
        cleanup_error cap_error_t err = NULL;
        cleanup_free char *name = unique_name();
        cleanup_cgroup struct cgroup *orig = NULL;

        CHECK(cgroup_resolve(name, "x", false, &orig, &err) == 0);
        CHECK(cgroup_create(orig, &err) == 0);
        json_t *saved = cgroup_save(orig);
        cleanup_free char *text = json_dumps(saved, JSON_COMPACT);
        json_decref(saved);
        CHECK(text);
        json_t *parsed = json_loads(text, 0, NULL);
        CHECK(parsed);
        int r = cgroup_load(parsed, &fx.cg, &err);
        json_decref(parsed);
        if (r < 0) {
                /* the original still knows what it made */
                fx.cg = steal_pointer(&orig);
                CHECK(false);
        }
        enum cgroup_mode mode;
        CHECK(cgroup_detect(&mode, &err) == 0);
        CHECK(strstr(text, cgroup_mode_name(mode)));
        if (cgroup_unified_path(orig))
                CHECK_STR(cgroup_unified_path(fx.cg), cgroup_unified_path(orig));
        if (cgroup_controller_path(orig, "memory"))
                CHECK_STR(cgroup_controller_path(fx.cg, "memory"), cgroup_controller_path(orig, "memory"));

        cleanup_strv char **created = created_dirs(fx.cg);
        CHECK(strv_len(created) > 0);
        fx.children[0] = fork_sleeper();
        CHECK(fx.children[0] > 0);
        CHECK(cgroup_enter(fx.cg, fx.children[0], &err) == 0);
        CHECK(cgroup_destroy(fx.cg, &err) == 0);
        int status;
        CHECK(waitpid(fx.children[0], &status, 0) == fx.children[0]);
        fx.children[0] = 0;
        for (size_t i = 0; created[i]; i++)
                CHECK(!exists(created[i]));
}

TEST(saved_state_lists_created_dirs)
{
        cleanup_error cap_error_t err = NULL;
        cleanup_cgroup struct cgroup *cg = NULL;
        cleanup_free char *name = unique_name();
        cleanup_free char *rel = xasprintf("%s/inner", name);

        CHECK(cgroup_resolve(rel, "x", false, &cg, &err) == 0);
        CHECK(cgroup_create(cg, &err) == 0);
        json_t *saved = cgroup_save(cg);
        bool ok = true;
        size_t i;
        json_t *h;
        json_array_foreach (json_object_get(saved, "hierarchies"), i, h) {
                const char *path = json_string_value(json_object_get(h, "path"));
                json_t *created = json_object_get(h, "created");
                cleanup_free char *parent = xstrdup(path);
                *strrchr(parent, '/') = '\0';
                ok = ok && json_array_size(created) == 2 && json_strv_has(created, path) && json_strv_has(created, parent);
        }
        json_decref(saved);
        CHECK(cgroup_destroy(cg, &err) == 0);
        CHECK(ok);
}

/* create records cgroup_plan()'s output before anything exists; a runtime killed right after
 * cgroup_create leaves only that record to delete with. */
TEST(plan_saved_before_create_destroys_it)
{
        cleanup_fixture struct fixture fx = { 0 };
        cleanup_error cap_error_t err = NULL;
        cleanup_cgroup struct cgroup *cg = NULL;
        cleanup_free char *name = unique_name();
        cleanup_free char *rel = xasprintf("%s/inner", name);

        CHECK(cgroup_resolve(rel, "x", false, &cg, &err) == 0);
        cgroup_plan(cg);
        json_t *planned = cgroup_save(cg);
        CHECK(cgroup_load(planned, &fx.cg, &err) == 0);
        cleanup_strv char **dirs = created_dirs(fx.cg);
        CHECK(strv_len(dirs) == 2 * fx.cg->n_hiers);
        for (size_t i = 0; dirs[i]; i++)
                CHECK(!exists(dirs[i]));

        CHECK(cgroup_create(cg, &err) == 0);
        json_t *made = cgroup_save(cg);
        bool same = json_equal(planned, made);
        json_decref(made);
        json_decref(planned);
        CHECK(same);
        fx.children[0] = fork_sleeper();
        CHECK(fx.children[0] > 0);
        CHECK(cgroup_enter(cg, fx.children[0], &err) == 0);

        CHECK(cgroup_destroy(fx.cg, &err) == 0);
        int status;
        CHECK(waitpid(fx.children[0], &status, 0) == fx.children[0]);
        fx.children[0] = 0;
        CHECK(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
        for (size_t i = 0; dirs[i]; i++)
                CHECK(!exists(dirs[i]));
}

TEST(apply_errors_name_fields)
{
        cleanup_error cap_error_t err = NULL;
        cleanup_cgroup struct cgroup *cg = NULL, *v1 = NULL, *mem_only = NULL;
        enum cgroup_mode mode;

        CHECK(cgroup_detect(&mode, &err) == 0);
        if (mode == CGROUP_MODE_V2)
                SKIP("needs v1 hierarchies; this host is pure cgroup v2");
        /* a v1-only host, from a saved state without the unified hierarchy: no files are touched */
        CHECK(cgroup_resolve("/capsule-never-created", "x", false, &cg, &err) == 0);
        json_t *saved = cgroup_save(cg);
        json_t *hiers = json_object_get(saved, "hierarchies"), *kept = json_array(), *mem = json_array();
        size_t i;
        json_t *h;
        json_array_foreach (hiers, i, h) {
                if (json_is_true(json_object_get(h, "unified")))
                        continue;
                json_array_append(kept, h);
                if (strcmp(json_string_value(json_object_get(h, "controllers")), "memory") == 0)
                        json_array_append(mem, h);
        }
        json_object_set_new(saved, "mode", json_string("v1"));
        json_object_set_new(saved, "hierarchies", kept);
        CHECK(cgroup_load(saved, &v1, &err) == 0);
        json_object_set_new(saved, "hierarchies", mem);
        CHECK(cgroup_load(saved, &mem_only, &err) == 0);
        json_decref(saved);

        char *kv[] = { "memory.max", "1", NULL };
        struct spec_resources res = { 0 };
        res.unified = kv;
        CHECK(cgroup_apply(v1, &res, &err) < 0);
        CHECK(err && str_has_prefix(err->msg, "linux.resources.unified: "));
        cap_error_free(&err);

        struct spec_resources pids = { 0 };
        pids.pids_limit = (opt_i64){ true, 10 };
        CHECK(cgroup_apply(mem_only, &pids, &err) < 0);
        CHECK(err && strstr(err->msg, "linux.resources.pids.limit") && strstr(err->msg, "pids controller"));
        cap_error_free(&err);

        /* a limit whose controller is missing is refused, never skipped (net_cls, as runc does) */
        struct spec_resources net = { 0 };
        net.net_class_id = (opt_u64){ true, 0x100001 };
        CHECK(cgroup_apply(mem_only, &net, &err) < 0);
        CHECK(err && strstr(err->msg, "linux.resources.network.classID") && strstr(err->msg, "net_cls controller"));
        cap_error_free(&err);
}

TEST(rootless_without_cgroup)
{
        if (geteuid() != 0)
                SKIP("needs root");
        cleanup_free char *name = unique_name();
        pid_t pid = fork();
        if (pid == 0) {
                cap_error_t err = NULL;
                struct cgroup *cg = NULL;
                if (setgroups(0, NULL) < 0 || setresgid(65534, 65534, 65534) < 0 || setresuid(65534, 65534, 65534) < 0)
                        _exit(10);
                if (cgroup_resolve(name, "x", false, &cg, &err) < 0)
                        _exit(11);
                if (cgroup_create(cg, &err) < 0)
                        _exit(12);
                if (cgroup_unified_path(cg) || cgroup_controller_path(cg, "memory"))
                        _exit(13);
                struct spec_resources none = { 0 };
                if (cgroup_apply(cg, &none, &err) < 0)
                        _exit(14);
                struct spec_resources some = { 0 };
                some.pids_limit = (opt_i64){ true, 5 };
                if (cgroup_apply(cg, &some, &err) == 0 || !str_has_prefix(err->msg, "linux.resources"))
                        _exit(15);
                cap_error_free(&err);
                if (cgroup_destroy(cg, &err) < 0)
                        _exit(16);
                cgroup_free(cg);
                _exit(0);
        }
        int status;
        CHECK(pid > 0 && waitpid(pid, &status, 0) == pid);
        if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
                fprintf(stderr, "rootless child: status %d\n", status);
        CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
}

TEST(bpf_device_filter_loads)
{
        cleanup_error cap_error_t err = NULL;
        struct spec_device_cgroup rules[] = {
                { false, 'a', -1, -1, "rwm" }, { true, 'c', 1, 3, "rw" },   { true, 'b', 8, -1, "r" },
                { false, 'c', 1, 3, "w" },     { true, 'c', -1, -1, "m" }, { true, 'c', 4000, 1048575, NULL },
        };
        int fd = cgroup_bpf_load(rules, ARRAY_SIZE(rules), &err);
        if (fd < 0)
                fprintf(stderr, "%s\n", err->msg);
        CHECK(fd >= 0);
        close(fd);
        fd = cgroup_bpf_load(NULL, 0, &err);
        CHECK(fd >= 0);
        close(fd);
        fd = cgroup_bpf_load(cgroup_default_devices, cgroup_n_default_devices, &err);
        CHECK(fd >= 0);
        close(fd);
        /* a catch-all in the middle makes earlier rules unreachable; the builder must drop them */
        struct spec_device_cgroup shadow[] = { { true, 'c', 1, 3, "rwm" }, { true, 'a', -1, -1, "rwm" } };
        fd = cgroup_bpf_load(shadow, ARRAY_SIZE(shadow), &err);
        CHECK(fd >= 0);
        close(fd);
        struct spec_device_cgroup bad[] = { { true, 'x', 1, 3, "rwm" } };
        CHECK(cgroup_bpf_load(bad, 1, &err) < 0);
        CHECK(err && strstr(err->msg, "linux.resources.devices[0].type"));
}

/* Fork a child into dir and report whether it could open /dev/null for reading and for writing. */
static int probe_dev_null(const char *dir)
{
        pid_t pid = fork();
        if (pid == 0) {
                cap_error_t err = NULL;
                char buf[32];
                snprintf(buf, sizeof(buf), "%d", (int)getpid());
                if (cgroup_write(dir, "cgroup.procs", "probe", buf, &err) < 0)
                        _exit(100);
                int r = open("/dev/null", O_RDONLY), w = open("/dev/null", O_WRONLY);
                _exit((r >= 0 ? 1 : 0) | (w >= 0 ? 2 : 0) | ((r < 0 && errno != EPERM) ? 4 : 0));
        }
        int status;
        if (pid < 0 || waitpid(pid, &status, 0) != pid || !WIFEXITED(status))
                return -1;
        return WEXITSTATUS(status);
}

struct tmpdir {
        char *path;
};

static void tmpdir_release(struct tmpdir *t)
{
        if (t->path && rmdir(t->path) < 0 && errno != ENOENT)
                fprintf(stderr, "cleanup: rmdir %s: %s\n", t->path, strerror(errno));
        free(t->path);
}

TEST(bpf_device_filter_enforced)
{
        cleanup_error cap_error_t err = NULL;
        enum cgroup_mode mode;
        CHECK(cgroup_detect(&mode, &err) == 0);
        if (mode == CGROUP_MODE_V1)
                SKIP("needs the unified hierarchy (BPF device filter); this host is cgroup v1 only");
        cleanup_free char *own = own_cgroup("");
        cleanup_free char *name = unique_name();
        __attribute__((cleanup(tmpdir_release))) struct tmpdir dir = {
                xasprintf("%s%s/%s", mode == CGROUP_MODE_V2 ? "/sys/fs/cgroup" : "/sys/fs/cgroup/unified", own, name)
        };
        CHECK(mkdir(dir.path, 0755) == 0);

        struct spec_device_cgroup deny_all[] = { { false, 'a', -1, -1, "rwm" } };
        CHECK(cgroup_bpf_apply(dir.path, deny_all, 1, false, &err) == 0);
        CHECK(probe_dev_null(dir.path) == 0);

        /* replacing the filter must detach the previous one, or it would still deny */
        struct spec_device_cgroup allow_null[] = { { false, 'a', -1, -1, "rwm" }, { true, 'c', 1, 3, "rw" } };
        CHECK(cgroup_bpf_apply(dir.path, allow_null, 2, false, &err) == 0);
        CHECK(probe_dev_null(dir.path) == 3);

        /* last match wins, per access bit */
        struct spec_device_cgroup no_write[] = { { true, 'a', -1, -1, "rwm" }, { false, 'c', 1, 3, "w" } };
        CHECK(cgroup_bpf_apply(dir.path, no_write, 2, false, &err) == 0);
        CHECK(probe_dev_null(dir.path) == 1);

        struct spec_device_cgroup other_dev[] = { { false, 'a', -1, -1, "rwm" }, { true, 'c', 1, 5, "rw" },
                                                  { true, 'b', 1, 3, "rw" } };
        CHECK(cgroup_bpf_apply(dir.path, other_dev, 3, false, &err) == 0);
        CHECK(probe_dev_null(dir.path) == 0);

        /* the OCI default devices are always allowed */
        CHECK(cgroup_bpf_apply(dir.path, deny_all, 1, true, &err) == 0);
        CHECK(probe_dev_null(dir.path) == 3);
}

static void *idle_thread(void *arg)
{
        (void)arg;
        for (;;)
                pause();
        return NULL;
}

/* A child that starts `threads` more threads, enters cg itself and says whether that worked
 * ('y' or 'n' on the pipe); then it waits to be killed. */
static pid_t fork_self_enterer(struct cgroup *cg, int threads, char *said)
{
        int p[2];
        if (pipe(p) < 0)
                return -1;
        pid_t pid = fork();
        if (pid == 0) {
                for (int i = 0; i < threads; i++) {
                        pthread_t t;
                        if (pthread_create(&t, NULL, idle_thread, NULL) != 0)
                                _exit(1);
                }
                cap_error_t err = NULL;
                char r = cgroup_enter(cg, getpid(), &err) == 0 ? 'y' : 'n';
                if (write(p[1], &r, 1) != 1)
                        _exit(1);
                for (;;)
                        pause();
        }
        close(p[1]);
        if (pid < 0 || read(p[0], said, 1) != 1)
                *said = '?';
        close(p[0]);
        return pid;
}

/* Every thread of pid is listed in every hierarchy's thread list of cg. */
static bool every_thread_in(struct cgroup *cg, pid_t pid)
{
        cleanup_free char *tasks_dir = xasprintf("/proc/%d/task", (int)pid);
        DIR *d = opendir(tasks_dir);
        size_t seen = 0;
        bool ok = d != NULL;
        for (struct dirent *e; ok && (e = readdir(d));) {
                if (e->d_name[0] == '.')
                        continue;
                seen++;
                for (size_t i = 0; ok && i < cg->n_hiers; i++) {
                        const struct cgroup_hier *h = &cg->hiers[i];
                        cleanup_free char *list = cg_file(h->path, h->unified ? "cgroup.threads" : "tasks");
                        cleanup_strv char **tids = strv_split(list ? list : "", "\n");
                        bool found = false;
                        for (size_t k = 0; tids[k] && !found; k++)
                                found = strcmp(tids[k], e->d_name) == 0;
                        if (!found)
                                fprintf(stderr, "thread %s of %d is not in %s\n", e->d_name, (int)pid, h->path);
                        ok = found;
                }
        }
        if (d)
                closedir(d);
        return ok && seen > 0;
}

/* cgroup_enter(getpid()) moves a single-threaded process by its one thread in v1 hierarchies, and a
 * process with more threads as a whole: either way every thread ends up in every hierarchy. */
TEST(enter_self_moves_every_thread)
{
        for (int threads = 0; threads <= 2; threads += 2) {
                cleanup_fixture struct fixture fx = { 0 };
                cleanup_error cap_error_t err = NULL;
                cleanup_free char *name = unique_name();
                CHECK(cgroup_resolve(name, "x", false, &fx.cg, &err) == 0);
                CHECK(cgroup_create(fx.cg, &err) == 0);
                char said;
                fx.children[0] = fork_self_enterer(fx.cg, threads, &said);
                CHECK(fx.children[0] > 0);
                CHECK(said == 'y');
                CHECK(every_thread_in(fx.cg, fx.children[0]));
        }
}

static pthread_t forked_main;

static void *signal_main(void *arg)
{
        (void)arg;
        return (void *)(intptr_t)pthread_kill(forked_main, SIGUSR1);
}

/* Whether the calling process is in the unified hierarchy's cgroup of cg. */
static bool born_in_unified(struct cgroup *cg)
{
        struct cgroup_hier *u = hier_unified(cg);
        cleanup_free char *mine = NULL;
        cleanup_error cap_error_t err = NULL;
        if (read_file("/proc/self/cgroup", &mine, NULL, 0, &err) < 0)
                return false;
        cleanup_free char *want = xasprintf("0::%s\n", u->path + strlen(u->mount));
        return strstr(mine, want) != NULL;
}

/* In cgroup_fork's child: 'b' if it began outside the unified hierarchy's cgroup, 't' if glibc
 * does not know its main thread's id (another thread cannot signal it), 'r' without a robust
 * futex list, 'e' if entering the rest failed; 'y' when all is well. */
static char forked_child_checks(struct cgroup *cg)
{
        cleanup_error cap_error_t err = NULL;
        if (!born_in_unified(cg))
                return 'b';
        sigset_t usr1;
        sigemptyset(&usr1);
        sigaddset(&usr1, SIGUSR1);
        pthread_sigmask(SIG_BLOCK, &usr1, NULL);
        forked_main = pthread_self();
        pthread_t t;
        void *sent;
        struct timespec two_s = { 2, 0 };
        if (pthread_create(&t, NULL, signal_main, NULL) != 0 || pthread_join(t, &sent) != 0 || sent != NULL ||
            sigtimedwait(&usr1, NULL, &two_s) != SIGUSR1)
                return 't';
        void *head = NULL;
        size_t len = 0;
        if (syscall(SYS_get_robust_list, 0, &head, &len) < 0 || head == NULL)
                return 'r';
        return cgroup_enter(cg, getpid(), &err) == 0 ? 'y' : 'e';
}

/* cgroup_fork(cg, ns_flags) of fx's cgroup; the child answers checks(cg) and waits to be killed.
 * The answer, or '?'. */
static char fork_checked(struct fixture *fx, unsigned long ns_flags, char (*checks)(struct cgroup *))
{
        int p[2];
        if (pipe(p) < 0)
                return '?';
        fx->children[0] = cgroup_fork(fx->cg, ns_flags);
        if (fx->children[0] == 0) {
                char r = checks(fx->cg);
                if (write(p[1], &r, 1) != 1)
                        _exit(1);
                for (;;)
                        pause();
        }
        close(p[1]);
        char said = '?';
        if (fx->children[0] < 0 || read(p[0], &said, 1) != 1)
                said = '?';
        close(p[0]);
        return said;
}

/* cgroup_fork's child is born in the unified hierarchy's cgroup (no migration there), is a
 * whole process to glibc (thread id, robust list), and enters the v1 hierarchies itself. */
TEST(fork_child_is_born_in_the_cgroup)
{
        cleanup_fixture struct fixture fx = { 0 };
        cleanup_error cap_error_t err = NULL;
        cleanup_free char *name = unique_name();
        CHECK(cgroup_resolve(name, "x", false, &fx.cg, &err) == 0);
        if (hier_unified(fx.cg) == NULL)
                SKIP("no unified cgroup hierarchy here: cgroup_fork is fork()");
        CHECK(cgroup_create(fx.cg, &err) == 0);
        CHECK(fork_checked(&fx, 0, forked_child_checks) == 'y');
        CHECK(fx.cg->unified_entered);
        CHECK(every_thread_in(fx.cg, fx.children[0]));
}

/* The uts namespace's inode of pid (0: the caller's). */
static ino_t uts_ns(pid_t pid)
{
        struct stat st;
        cleanup_free char *path = pid ? xasprintf("/proc/%d/ns/uts", (int)pid) : xstrdup("/proc/self/ns/uts");
        return stat(path, &st) == 0 ? st.st_ino : 0;
}

static ino_t parent_uts;

/* 'b' if the child began outside the unified hierarchy's cgroup, 'n' in its parent's uts
 * namespace, 'y' when all is well. */
static char cloned_child_checks(struct cgroup *cg)
{
        return !born_in_unified(cg) ? 'b' : uts_ns(0) == parent_uts ? 'n' : 'y';
}

/* As create clones a container's init: into new namespaces and the unified hierarchy's cgroup
 * at once; its parent then moves it through the v1 hierarchies (cgroup_enter), not into the
 * unified one again. */
TEST(fork_into_namespaces_is_born_in_the_cgroup)
{
        cleanup_fixture struct fixture fx = { 0 };
        cleanup_error cap_error_t err = NULL;
        cleanup_free char *name = unique_name();
        CHECK(cgroup_resolve(name, "x", false, &fx.cg, &err) == 0);
        if (hier_unified(fx.cg) == NULL)
                SKIP("no unified cgroup hierarchy here: cgroup_fork is clone()");
        CHECK(cgroup_create(fx.cg, &err) == 0);
        parent_uts = uts_ns(0);
        CHECK(fork_checked(&fx, CLONE_NEWUTS, cloned_child_checks) == 'y');
        CHECK(fx.cg->unified_entered);
        CHECK(uts_ns(fx.children[0]) != parent_uts);
        CHECK(cgroup_enter(fx.cg, fx.children[0], &err) == 0);
        CHECK(every_thread_in(fx.cg, fx.children[0]));
}
