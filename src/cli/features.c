/* capsule features: the OCI runtime features document (containerd reads it). */
#include <stdio.h>
#include <stdlib.h>

#include <jansson.h>
#include <seccomp.h>

#include "cli/cli.h"
#include "common/version.h"
#include "runtime/process.h"

static json_t *strings(const char *const *v)
{
        json_t *a = json_array();
        for (size_t i = 0; v[i]; i++)
                json_array_append_new(a, json_string(v[i]));
        return a;
}

static int cmd_features(struct cli_global *g, int argc, char **argv, cap_error_t *err)
{
        static const char *const hooks[] = { "prestart", "createRuntime", "createContainer", "startContainer", "poststart", "poststop", NULL };
        static const char *const mount_options[] = {
                "async", "atime", "bind", "defaults", "dev", "diratime", "dirsync", "exec", "mand", "noatime", "nodev", "nodiratime",
                "noexec", "nomand", "norelatime", "nostrictatime", "nosuid", "private", "rbind", "relatime", "remount", "ro",
                "rprivate", "rro", "rshared", "rslave", "runbindable", "rw", "shared", "slave", "strictatime", "suid", "sync",
                "tmpcopyup", "unbindable", NULL
        };
        static const char *const namespaces[] = { "cgroup", "ipc", "mount", "network", "pid", "time", "user", "uts", NULL };
        static const char *const actions[] = { "SCMP_ACT_ALLOW", "SCMP_ACT_ERRNO", "SCMP_ACT_KILL", "SCMP_ACT_KILL_PROCESS",
                                               "SCMP_ACT_KILL_THREAD", "SCMP_ACT_LOG", "SCMP_ACT_NOTIFY", "SCMP_ACT_TRACE", "SCMP_ACT_TRAP", NULL };
        static const char *const operators[] = { "SCMP_CMP_EQ", "SCMP_CMP_GE", "SCMP_CMP_GT", "SCMP_CMP_LE", "SCMP_CMP_LT",
                                                 "SCMP_CMP_MASKED_EQ", "SCMP_CMP_NE", NULL };
        static const char *const archs[] = { "SCMP_ARCH_X86", "SCMP_ARCH_X86_64", "SCMP_ARCH_X32", "SCMP_ARCH_ARM", "SCMP_ARCH_AARCH64",
                                             "SCMP_ARCH_MIPS", "SCMP_ARCH_MIPS64", "SCMP_ARCH_MIPS64N32", "SCMP_ARCH_MIPSEL",
                                             "SCMP_ARCH_MIPSEL64", "SCMP_ARCH_MIPSEL64N32", "SCMP_ARCH_PPC", "SCMP_ARCH_PPC64",
                                             "SCMP_ARCH_PPC64LE", "SCMP_ARCH_RISCV64", "SCMP_ARCH_S390", "SCMP_ARCH_S390X", NULL };
        static const char *const flags[] = { "SECCOMP_FILTER_FLAG_TSYNC", "SECCOMP_FILTER_FLAG_LOG", "SECCOMP_FILTER_FLAG_SPEC_ALLOW", NULL };

        (void)g;
        if (cli_want_args(argc, argv, 1, 0, "features", err) < 0)
                return -1;
        const struct scmp_version *v = seccomp_version();
        char libseccomp[32];
        snprintf(libseccomp, sizeof(libseccomp), "%u.%u.%u", v->major, v->minor, v->micro);
        json_t *doc = json_pack(
                "{s:s,s:s,s:o,s:o,s:{s:o,s:o,s:{s:b,s:b,s:b,s:b,s:b},s:{s:b,s:o,s:o,s:o,s:o,s:o},s:{s:b},s:{s:b},s:{s:b},s:{s:{s:b}}},"
                "s:{s:s,s:s}}",
                "ociVersionMin", "1.0.0", "ociVersionMax", CAPSULE_OCI_VERSION, "hooks", strings(hooks), "mountOptions",
                strings(mount_options), "linux", "namespaces", strings(namespaces), "capabilities", strings(process_known_capabilities()),
                "cgroup", "v1", 1, "v2", 1, "systemd", 0, "systemdUser", 0, "rdma", 0, "seccomp", "enabled", 1, "actions", strings(actions),
                "operators", strings(operators), "archs", strings(archs), "knownFlags", strings(flags), "supportedFlags", strings(flags),
                "apparmor", "enabled", 1, "selinux", "enabled", 1, "intelRdt", "enabled", 0, "mountExtensions", "idmap", "enabled", 0,
                "annotations", "io.github.seccomp.libseccomp.version", libseccomp, "org.opencontainers.runc.checkpoint.enabled", "false");
        char *text = json_dumps(doc, JSON_INDENT(4));
        printf("%s\n", text);
        free(text);
        json_decref(doc);
        return 0;
}

CLI_COMMAND(features, "features", "print the OCI features document (JSON)", cmd_features)
