/* Shared by the attacker programs of tests/e2e/test_attacks.py. They run inside a
 * container, as a hostile workload would, and append what they saw and did to a
 * report file that the test reads from the host. */
#ifndef CAPSULE_TESTS_ATTACK_H
#define CAPSULE_TESTS_ATTACK_H

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static FILE *report_file;

static inline void report(const char *fmt, ...)
{
        va_list ap;
        va_start(ap, fmt);
        vfprintf(report_file ? report_file : stdout, fmt, ap);
        va_end(ap);
        fputc('\n', report_file ? report_file : stdout);
        fflush(report_file ? report_file : stdout);
}

static inline void report_open(const char *path)
{
        report_file = fopen(path, "a");
        if (!report_file) {
                perror(path);
                exit(2);
        }
}

static inline long long ms_now(void)
{
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return ts.tv_sec * 1000LL + ts.tv_nsec / 1000000;
}

/* Whether argv[0] of pid is exactly argv0 (cmdline is readable for any process). */
static inline bool argv0_is(int pid, const char *argv0)
{
        char path[64], buf[4096];
        snprintf(path, sizeof(path), "/proc/%d/cmdline", pid);
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0)
                return false;
        ssize_t n = read(fd, buf, sizeof(buf) - 1);
        close(fd);
        if (n <= 0)
                return false;
        buf[n] = '\0';
        return strcmp(buf, argv0) == 0;
}

/* The first process other than ourselves whose argv[0] is argv0, or 0 after deadline. */
static inline int find_process(const char *argv0, long long deadline)
{
        int self = getpid();
        while (ms_now() < deadline) {
                DIR *d = opendir("/proc");
                struct dirent *de;
                int found = 0;
                while (d && !found && (de = readdir(d))) {
                        int pid = atoi(de->d_name);
                        if (pid > 0 && pid != self && argv0_is(pid, argv0))
                                found = pid;
                }
                if (d)
                        closedir(d);
                if (found)
                        return found;
        }
        return 0;
}

#endif
