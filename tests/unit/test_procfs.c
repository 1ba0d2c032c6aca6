/* procfs_write: writes land on procfs or fail with a clear error, never in an ordinary file. */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "common/util.h"
#include "runtime/procfs.h"

static char *read_back(const char *path)
{
        char *text = NULL;
        cap_error_t err = NULL;
        if (read_file(path, &text, NULL, 0, &err) < 0)
                cap_error_free(&err);
        return text;
}

TEST(writes_a_procfs_file)
{
        cap_error_t err = NULL;
        char *before = read_back("/proc/self/comm");
        CHECK(before != NULL);
        CHECK(procfs_write("/proc/self/comm", "procfs-test", strlen("procfs-test"), &err) == 0);
        char *after = read_back("/proc/self/comm");
        CHECK_STR(after, "procfs-test\n");
        before[strcspn(before, "\n")] = '\0';
        CHECK(procfs_write("/proc/self/comm", before, strlen(before), &err) == 0);
        free(before);
        free(after);
}

TEST(refuses_an_ordinary_file)
{
        char path[] = "/tmp/capsule-procfs-XXXXXX";
        int fd = mkstemp(path);
        CHECK(fd >= 0);
        close(fd);
        cap_error_t err = NULL;
        int r = procfs_write(path, "1", 1, &err);
        char *text = read_back(path);
        unlink(path);
        CHECK(r < 0 && err && strstr(err->msg, "is not on procfs"));
        CHECK_STR(text, "");
        cap_error_free(&err);
        free(text);
}

TEST(does_not_follow_a_final_symlink)
{
        char dir[] = "/tmp/capsule-procfs-XXXXXX";
        CHECK(mkdtemp(dir) != NULL);
        char *link = xasprintf("%s/oom_score_adj", dir);
        CHECK(symlink("/proc/self/oom_score_adj", link) == 0);
        cap_error_t err = NULL;
        int r = procfs_write(link, "0", 1, &err);
        unlink(link);
        rmdir(dir);
        free(link);
        CHECK(r < 0 && err && err->errnum == ELOOP);
        cap_error_free(&err);
}
