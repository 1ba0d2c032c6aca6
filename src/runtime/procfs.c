#include "runtime/procfs.h"

#include <fcntl.h>
#include <linux/magic.h>
#include <sys/vfs.h>
#include <unistd.h>

#include "common/util.h"

int procfs_write(const char *path, const char *value, size_t len, cap_error_t *err)
{
        cleanup_close int fd = open(path, O_WRONLY | O_NOFOLLOW | O_NOCTTY | O_CLOEXEC);
        if (fd < 0)
                return cap_fail(err, errno, "write `%s`", path);
        struct statfs st;
        if (fstatfs(fd, &st) < 0)
                return cap_fail(err, errno, "statfs `%s`", path);
        if (st.f_type != PROC_SUPER_MAGIC)
                return cap_fail(err, 0, "`%s` is not on procfs (is /proc redirected by a symlink or a mount?)", path);
        if (write_all(fd, value, len) < 0)
                return cap_fail(err, errno, "write `%s`", path);
        return 0;
}
