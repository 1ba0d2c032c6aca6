/* A VM container's phases file (src/sandbox/sandbox_phases.c): one appended line per step, which
 * bench/vm_container.py reads, and no failure when the state directory is gone. */
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "check.h"
#include "common/util.h"
#include "sandbox/sandbox_internal.h"

TEST(phases_append_one_line_per_step)
{
        char dir[] = "/tmp/capsule-phases.XXXXXX";
        CHECK(mkdtemp(dir) != NULL);
        long long a = sandbox_phase_now();
        long long b = sandbox_phase_now();
        CHECK(a > 0 && b >= a);
        sandbox_phase_mark(dir, "create", a);
        sandbox_phase_mark(dir, "guest_boot_us", 1234);
        sandbox_phase_mark(dir, "started", b);
        char *path = xasprintf("%s/" SANDBOX_PHASES, dir);
        char *text = NULL;
        cap_error_t err = NULL;
        int r = read_file(path, &text, NULL, 0, &err);
        struct stat st;
        bool private = stat(path, &st) == 0 && (st.st_mode & 0777) == 0600;
        char *want = xasprintf("create %lld\nguest_boot_us 1234\nstarted %lld\n", a, b);
        bool same = r == 0 && strcmp(text, want) == 0;
        rm_rf(dir, &err);
        free(want);
        free(text);
        free(path);
        CHECK(same);
        CHECK(private);
}

TEST(phases_without_a_directory_do_nothing)
{
        char dir[] = "/tmp/capsule-phases.XXXXXX";
        CHECK(mkdtemp(dir) != NULL);
        CHECK(rmdir(dir) == 0);
        sandbox_phase_mark(dir, "vmm", sandbox_phase_now());
        CHECK(access(dir, F_OK) < 0);
}
