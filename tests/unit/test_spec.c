#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <linux/magic.h>
#include <unistd.h>

#include "check.h"
#include "common/util.h"
#include "runtime/spec.h"

static const char full_config[] =
        "{\n"
        "  \"ociVersion\": \"1.1.0\",\n"
        "  \"extraField\": {\"ignored\": true},\n"
        "  \"root\": {\"path\": \"/srv/rootfs\", \"readonly\": true},\n"
        "  \"hostname\": \"box\", \"domainname\": \"example.org\",\n"
        "  \"process\": {\n"
        "    \"terminal\": true, \"consoleSize\": {\"height\": 24, \"width\": 80},\n"
        "    \"user\": {\"uid\": 1000, \"gid\": 100, \"umask\": 18, \"additionalGids\": [5, 6],\n"
        "             \"username\": \"joe\"},\n"
        "    \"args\": [\"/bin/sh\", \"-c\", \"true\"],\n"
        "    \"env\": [\"PATH=/bin\", \"EMPTY=\"],\n"
        "    \"cwd\": \"/home\",\n"
        "    \"capabilities\": {\"bounding\": [\"CAP_KILL\", \"CAP_CHOWN\"], \"effective\": [\"CAP_KILL\"],\n"
        "                     \"inheritable\": [], \"permitted\": [\"CAP_KILL\"], \"ambient\": [\"CAP_KILL\"]},\n"
        "    \"rlimits\": [{\"type\": \"RLIMIT_NOFILE\", \"soft\": 1024, \"hard\": 4096},\n"
        "                {\"type\": \"RLIMIT_CORE\", \"soft\": 18446744073709551615,\n"
        "                 \"hard\": 18446744073709551615}],\n"
        "    \"noNewPrivileges\": true,\n"
        "    \"apparmorProfile\": \"unconfined\", \"selinuxLabel\": \"system_u:system_r:svirt_lxc_net_t:s0\",\n"
        "    \"oomScoreAdj\": -500,\n"
        "    \"scheduler\": {\"policy\": \"SCHED_DEADLINE\", \"nice\": -5, \"priority\": 0,\n"
        "                  \"flags\": [\"SCHED_FLAG_RESET_ON_FORK\"], \"runtime\": 1000,\n"
        "                  \"deadline\": 2000, \"period\": 3000},\n"
        "    \"ioPriority\": {\"class\": \"IOPRIO_CLASS_BE\", \"priority\": 4}\n"
        "  },\n"
        "  \"mounts\": [\n"
        "    {\"destination\": \"/proc\", \"type\": \"proc\", \"source\": \"proc\"},\n"
        "    {\"destination\": \"/data\", \"type\": \"bind\", \"source\": \"/srv/data\",\n"
        "     \"options\": [\"rbind\", \"ro\"]},\n"
        "    {\"destination\": \"/tmp\"}\n"
        "  ],\n"
        "  \"hooks\": {\n"
        "    \"prestart\": [{\"path\": \"/bin/pre\", \"args\": [\"pre\", \"x\"], \"env\": [\"A=1\"], \"timeout\": 5}],\n"
        "    \"createRuntime\": [{\"path\": \"/bin/cr\"}],\n"
        "    \"createContainer\": [{\"path\": \"/bin/cc\"}],\n"
        "    \"startContainer\": [{\"path\": \"/bin/sc\"}],\n"
        "    \"poststart\": [{\"path\": \"/bin/ps1\"}, {\"path\": \"/bin/ps2\"}],\n"
        "    \"poststop\": [{\"path\": \"/bin/stop\", \"timeout\": 1}]\n"
        "  },\n"
        "  \"annotations\": {\"org.example.key\": \"value\"},\n"
        "  \"linux\": {\n"
        "    \"namespaces\": [{\"type\": \"pid\"}, {\"type\": \"network\", \"path\": \"/run/netns/x\"},\n"
        "                   {\"type\": \"mount\"}, {\"type\": \"ipc\"}, {\"type\": \"uts\"}, {\"type\": \"user\"},\n"
        "                   {\"type\": \"cgroup\"}, {\"type\": \"time\"}],\n"
        "    \"uidMappings\": [{\"containerID\": 0, \"hostID\": 100000, \"size\": 65536}],\n"
        "    \"gidMappings\": [{\"containerID\": 0, \"hostID\": 200000, \"size\": 1000},\n"
        "                    {\"containerID\": 1000, \"hostID\": 1000, \"size\": 1}],\n"
        "    \"sysctl\": {\"net.ipv4.ip_forward\": \"1\"},\n"
        "    \"cgroupsPath\": \"/capsule/test\",\n"
        "    \"devices\": [{\"path\": \"/dev/fuse\", \"type\": \"c\", \"major\": 10, \"minor\": 229,\n"
        "                 \"fileMode\": 438, \"uid\": 0, \"gid\": 0},\n"
        "                {\"path\": \"/dev/fifo\", \"type\": \"p\"}],\n"
        "    \"resources\": {\n"
        "      \"devices\": [{\"allow\": false, \"access\": \"rwm\"},\n"
        "                  {\"allow\": true, \"type\": \"c\", \"major\": 10, \"minor\": 229, \"access\": \"rw\"},\n"
        "                  {\"allow\": true, \"type\": \"b\", \"major\": 8}],\n"
        "      \"memory\": {\"limit\": 536870912, \"reservation\": 268435456, \"swap\": -1,\n"
        "                 \"kernel\": 0, \"kernelTCP\": 1024, \"swappiness\": 60,\n"
        "                 \"disableOOMKiller\": true, \"useHierarchy\": false, \"checkBeforeUpdate\": true},\n"
        "      \"cpu\": {\"shares\": 512, \"quota\": 50000, \"burst\": 1000, \"period\": 100000,\n"
        "              \"realtimeRuntime\": 950, \"realtimePeriod\": 1000, \"cpus\": \"0-1\", \"mems\": \"0\",\n"
        "              \"idle\": 1},\n"
        "      \"pids\": {\"limit\": 64},\n"
        "      \"blockIO\": {\"weight\": 500, \"leafWeight\": 300,\n"
        "                \"weightDevice\": [{\"major\": 8, \"minor\": 0, \"weight\": 200}],\n"
        "                \"throttleReadBpsDevice\": [{\"major\": 8, \"minor\": 0, \"rate\": 1048576}],\n"
        "                \"throttleWriteBpsDevice\": [{\"major\": 8, \"minor\": 1, \"rate\": 2}],\n"
        "                \"throttleReadIOPSDevice\": [{\"major\": 8, \"minor\": 2, \"rate\": 3}],\n"
        "                \"throttleWriteIOPSDevice\": [{\"major\": 8, \"minor\": 3, \"rate\": 4},\n"
        "                                            {\"major\": 8, \"minor\": 4, \"rate\": 5}]},\n"
        "      \"hugepageLimits\": [{\"pageSize\": \"2MB\", \"limit\": 209715200}],\n"
        "      \"network\": {\"classID\": 1048577, \"priorities\": [{\"name\": \"eth0\", \"priority\": 500}]},\n"
        "      \"unified\": {\"memory.high\": \"1G\", \"io.weight\": \"100\"}\n"
        "    },\n"
        "    \"maskedPaths\": [\"/proc/kcore\"],\n"
        "    \"readonlyPaths\": [\"/proc/sys\", \"/proc/bus\"],\n"
        "    \"rootfsPropagation\": \"rslave\",\n"
        "    \"mountLabel\": \"system_u:object_r:svirt_sandbox_file_t:s0\",\n"
        "    \"seccomp\": {\"defaultAction\": \"SCMP_ACT_ERRNO\", \"defaultErrnoRet\": 38,\n"
        "                \"architectures\": [\"SCMP_ARCH_X86_64\", \"SCMP_ARCH_X86\"],\n"
        "                \"flags\": [\"SECCOMP_FILTER_FLAG_LOG\"],\n"
        "                \"listenerPath\": \"/run/seccomp.sock\", \"listenerMetadata\": \"meta\",\n"
        "                \"syscalls\": [{\"names\": [\"read\", \"write\"], \"action\": \"SCMP_ACT_ALLOW\"},\n"
        "                             {\"names\": [\"personality\"], \"action\": \"SCMP_ACT_ERRNO\",\n"
        "                              \"errnoRet\": 1,\n"
        "                              \"args\": [{\"index\": 0, \"value\": 8, \"op\": \"SCMP_CMP_EQ\"},\n"
        "                                       {\"index\": 5, \"value\": 18446744073709551615,\n"
        "                                        \"valueTwo\": 3, \"op\": \"SCMP_CMP_MASKED_EQ\"}]}]},\n"
        "    \"personality\": {\"domain\": \"LINUX32\", \"flags\": []},\n"
        "    \"timeOffsets\": {\"boottime\": {\"secs\": -3600, \"nanosecs\": 5},\n"
        "                    \"monotonic\": {\"secs\": 86400}},\n"
        "    \"intelRdt\": {\"closID\": \"ignored\"}\n"
        "  }\n"
        "}\n";

static bool strv_eq(char **v, const char *const *want)
{
        size_t i = 0;
        for (; want[i]; i++)
                if (!v || !v[i] || strcmp(v[i], want[i]) != 0)
                        return false;
        return v && v[i] == NULL;
}

#define STRV(...) ((const char *const[]){ __VA_ARGS__, NULL })
#define EMPTY_STRV ((const char *const[]){ NULL })

TEST(parse_full_process)
{
        cleanup_spec struct spec *s = NULL;
        cleanup_error cap_error_t err = NULL;

        CHECK(spec_parse(full_config, "config.json", &s, &err) == 0);
        CHECK(err == NULL);
        CHECK_STR(s->oci_version, "1.1.0");
        CHECK_STR(s->root_path, "/srv/rootfs");
        CHECK(s->root_readonly);
        CHECK_STR(s->hostname, "box");
        CHECK_STR(s->domainname, "example.org");

        struct spec_process *p = s->process;
        CHECK(p != NULL);
        CHECK(p->terminal);
        CHECK(p->console_height.set && p->console_height.v == 24);
        CHECK(p->console_width.set && p->console_width.v == 80);
        CHECK(p->user.uid == 1000 && p->user.gid == 100);
        CHECK(p->user.umask.set && p->user.umask.v == 18);
        CHECK(p->user.n_additional_gids == 2 && p->user.additional_gids[0] == 5 && p->user.additional_gids[1] == 6);
        CHECK_STR(p->user.username, "joe");
        CHECK(strv_eq(p->args, STRV("/bin/sh", "-c", "true")));
        CHECK(strv_eq(p->env, STRV("PATH=/bin", "EMPTY=")));
        CHECK_STR(p->cwd, "/home");
        CHECK(p->capabilities != NULL);
        CHECK(strv_eq(p->capabilities->bounding, STRV("CAP_KILL", "CAP_CHOWN")));
        CHECK(strv_eq(p->capabilities->effective, STRV("CAP_KILL")));
        CHECK(strv_eq(p->capabilities->inheritable, EMPTY_STRV));
        CHECK(strv_eq(p->capabilities->permitted, STRV("CAP_KILL")));
        CHECK(strv_eq(p->capabilities->ambient, STRV("CAP_KILL")));
        CHECK(p->n_rlimits == 2);
        CHECK(p->rlimits[0].resource == RLIMIT_NOFILE);
        CHECK_STR(p->rlimits[0].type, "RLIMIT_NOFILE");
        CHECK(p->rlimits[0].soft == 1024 && p->rlimits[0].hard == 4096);
        CHECK(p->rlimits[1].resource == RLIMIT_CORE);
        CHECK(p->rlimits[1].soft == UINT64_MAX && p->rlimits[1].hard == UINT64_MAX);
        CHECK(p->no_new_privileges);
        CHECK_STR(p->apparmor_profile, "unconfined");
        CHECK_STR(p->selinux_label, "system_u:system_r:svirt_lxc_net_t:s0");
        CHECK(p->oom_score_adj.set && p->oom_score_adj.v == -500);
        CHECK(p->scheduler.set);
        CHECK_STR(p->scheduler.policy, "SCHED_DEADLINE");
        CHECK(p->scheduler.nice == -5 && p->scheduler.priority == 0);
        CHECK(strv_eq(p->scheduler.flags, STRV("SCHED_FLAG_RESET_ON_FORK")));
        CHECK(p->scheduler.runtime == 1000 && p->scheduler.deadline == 2000 && p->scheduler.period == 3000);
        CHECK(p->io_priority.set);
        CHECK_STR(p->io_priority.class_name, "IOPRIO_CLASS_BE");
        CHECK(p->io_priority.priority == 4);
}

TEST(parse_full_mounts_hooks_annotations)
{
        cleanup_spec struct spec *s = NULL;
        cleanup_error cap_error_t err = NULL;

        CHECK(spec_parse(full_config, "config.json", &s, &err) == 0);
        CHECK(s->n_mounts == 3);
        CHECK_STR(s->mounts[0].destination, "/proc");
        CHECK_STR(s->mounts[0].type, "proc");
        CHECK_STR(s->mounts[0].source, "proc");
        CHECK(s->mounts[0].options == NULL);
        CHECK_STR(s->mounts[1].source, "/srv/data");
        CHECK(strv_eq(s->mounts[1].options, STRV("rbind", "ro")));
        CHECK(s->mounts[2].type == NULL && s->mounts[2].source == NULL);

        CHECK(s->hooks.prestart.n == 1);
        CHECK_STR(s->hooks.prestart.hooks[0].path, "/bin/pre");
        CHECK(strv_eq(s->hooks.prestart.hooks[0].args, STRV("pre", "x")));
        CHECK(strv_eq(s->hooks.prestart.hooks[0].env, STRV("A=1")));
        CHECK(s->hooks.prestart.hooks[0].timeout.set && s->hooks.prestart.hooks[0].timeout.v == 5);
        CHECK(s->hooks.create_runtime.n == 1 && !s->hooks.create_runtime.hooks[0].timeout.set);
        CHECK_STR(s->hooks.create_container.hooks[0].path, "/bin/cc");
        CHECK_STR(s->hooks.start_container.hooks[0].path, "/bin/sc");
        CHECK(s->hooks.poststart.n == 2);
        CHECK_STR(s->hooks.poststart.hooks[1].path, "/bin/ps2");
        CHECK(s->hooks.poststop.n == 1 && s->hooks.poststop.hooks[0].timeout.v == 1);
        CHECK(strv_eq(s->annotations, STRV("org.example.key", "value")));
}

TEST(parse_full_linux)
{
        cleanup_spec struct spec *s = NULL;
        cleanup_error cap_error_t err = NULL;

        CHECK(spec_parse(full_config, "config.json", &s, &err) == 0);
        struct spec_linux *l = &s->linux;
        CHECK(l->n_namespaces == 8);
        const int types[] = { CLONE_NEWPID, CLONE_NEWNET,  CLONE_NEWNS,     CLONE_NEWIPC,
                              CLONE_NEWUTS, CLONE_NEWUSER, CLONE_NEWCGROUP, CLONE_NEWTIME };
        for (size_t i = 0; i < 8; i++)
                CHECK(l->namespaces[i].type == types[i]);
        CHECK_STR(l->namespaces[1].name, "network");
        CHECK_STR(l->namespaces[1].path, "/run/netns/x");
        CHECK(l->namespaces[0].path == NULL);
        CHECK(spec_namespace(s, CLONE_NEWNET) == &l->namespaces[1]);
        CHECK(spec_namespace(s, CLONE_NEWTIME) == &l->namespaces[7]);

        CHECK(l->n_uid_mappings == 1);
        CHECK(l->uid_mappings[0].container_id == 0 && l->uid_mappings[0].host_id == 100000 &&
              l->uid_mappings[0].size == 65536);
        CHECK(l->n_gid_mappings == 2 && l->gid_mappings[1].container_id == 1000 && l->gid_mappings[1].size == 1);
        CHECK(strv_eq(l->sysctl, STRV("net.ipv4.ip_forward", "1")));
        CHECK_STR(l->cgroups_path, "/capsule/test");

        CHECK(l->n_devices == 2);
        CHECK_STR(l->devices[0].path, "/dev/fuse");
        CHECK(l->devices[0].type == 'c' && l->devices[0].major == 10 && l->devices[0].minor == 229);
        CHECK(l->devices[0].file_mode.set && l->devices[0].file_mode.v == 0666);
        CHECK(l->devices[0].uid.set && l->devices[0].gid.set && l->devices[0].uid.v == 0);
        CHECK(l->devices[1].type == 'p' && !l->devices[1].file_mode.set);

        CHECK(strv_eq(l->masked_paths, STRV("/proc/kcore")));
        CHECK(strv_eq(l->readonly_paths, STRV("/proc/sys", "/proc/bus")));
        CHECK_STR(l->rootfs_propagation, "rslave");
        CHECK_STR(l->mount_label, "system_u:object_r:svirt_sandbox_file_t:s0");
        CHECK_STR(l->personality_domain, "LINUX32");
        CHECK(l->time_boottime.set && l->time_boottime.secs == -3600 && l->time_boottime.nanosecs == 5);
        CHECK(l->time_monotonic.set && l->time_monotonic.secs == 86400 && l->time_monotonic.nanosecs == 0);
}

TEST(parse_full_resources)
{
        cleanup_spec struct spec *s = NULL;
        cleanup_error cap_error_t err = NULL;

        CHECK(spec_parse(full_config, "config.json", &s, &err) == 0);
        struct spec_resources *r = s->linux.resources;
        CHECK(r != NULL);
        CHECK(r->n_devices == 3);
        CHECK(!r->devices[0].allow && r->devices[0].type == 'a' && r->devices[0].major == -1 &&
              r->devices[0].minor == -1);
        CHECK_STR(r->devices[0].access, "rwm");
        CHECK(r->devices[1].allow && r->devices[1].type == 'c' && r->devices[1].major == 10 &&
              r->devices[1].minor == 229);
        CHECK_STR(r->devices[1].access, "rw");
        CHECK(r->devices[2].type == 'b' && r->devices[2].major == 8 && r->devices[2].minor == -1);
        CHECK_STR(r->devices[2].access, "rwm");

        CHECK(r->memory.limit.set && r->memory.limit.v == 536870912);
        CHECK(r->memory.reservation.v == 268435456);
        CHECK(r->memory.swap.set && r->memory.swap.v == -1);
        CHECK(r->memory.kernel.set && r->memory.kernel.v == 0);
        CHECK(r->memory.kernel_tcp.v == 1024);
        CHECK(r->memory.swappiness.set && r->memory.swappiness.v == 60);
        CHECK(r->memory.disable_oom_killer.set && r->memory.disable_oom_killer.v);
        CHECK(r->memory.use_hierarchy.set && !r->memory.use_hierarchy.v);
        CHECK(r->memory.check_before_update.set && r->memory.check_before_update.v);

        CHECK(r->cpu.shares.set && r->cpu.shares.v == 512);
        CHECK(r->cpu.quota.set && r->cpu.quota.v == 50000);
        CHECK(r->cpu.burst.v == 1000 && r->cpu.period.v == 100000);
        CHECK(r->cpu.realtime_runtime.v == 950 && r->cpu.realtime_period.v == 1000);
        CHECK_STR(r->cpu.cpus, "0-1");
        CHECK_STR(r->cpu.mems, "0");
        CHECK(r->cpu.idle.set && r->cpu.idle.v == 1);
        CHECK(r->pids_limit.set && r->pids_limit.v == 64);

        CHECK(r->blkio.weight.v == 500 && r->blkio.leaf_weight.v == 300);
        CHECK(r->blkio.n_weight_devices == 1 && r->blkio.weight_devices[0].major == 8 &&
              r->blkio.weight_devices[0].weight.v == 200 && !r->blkio.weight_devices[0].leaf_weight.set);
        CHECK(r->blkio.n_throttle_read_bps == 1 && r->blkio.throttle_read_bps[0].rate == 1048576);
        CHECK(r->blkio.n_throttle_write_bps == 1 && r->blkio.throttle_write_bps[0].minor == 1);
        CHECK(r->blkio.n_throttle_read_iops == 1 && r->blkio.throttle_read_iops[0].rate == 3);
        CHECK(r->blkio.n_throttle_write_iops == 2 && r->blkio.throttle_write_iops[1].rate == 5);

        CHECK(r->n_hugepage_limits == 1);
        CHECK_STR(r->hugepage_limits[0].page_size, "2MB");
        CHECK(r->hugepage_limits[0].limit == 209715200);
        CHECK(r->net_class_id.set && r->net_class_id.v == 1048577);
        CHECK(r->n_net_priorities == 1 && r->net_priorities[0].priority == 500);
        CHECK_STR(r->net_priorities[0].name, "eth0");
        CHECK(strv_eq(r->unified, STRV("memory.high", "1G", "io.weight", "100")));
}

TEST(parse_full_seccomp)
{
        cleanup_spec struct spec *s = NULL;
        cleanup_error cap_error_t err = NULL;

        CHECK(spec_parse(full_config, "config.json", &s, &err) == 0);
        struct spec_seccomp *sc = s->linux.seccomp;
        CHECK(sc != NULL);
        CHECK_STR(sc->default_action, "SCMP_ACT_ERRNO");
        CHECK(sc->default_errno_ret.set && sc->default_errno_ret.v == 38);
        CHECK(strv_eq(sc->architectures, STRV("SCMP_ARCH_X86_64", "SCMP_ARCH_X86")));
        CHECK(strv_eq(sc->flags, STRV("SECCOMP_FILTER_FLAG_LOG")));
        CHECK_STR(sc->listener_path, "/run/seccomp.sock");
        CHECK_STR(sc->listener_metadata, "meta");
        CHECK(sc->n_syscalls == 2);
        CHECK(strv_eq(sc->syscalls[0].names, STRV("read", "write")));
        CHECK_STR(sc->syscalls[0].action, "SCMP_ACT_ALLOW");
        CHECK(!sc->syscalls[0].errno_ret.set && sc->syscalls[0].n_args == 0);
        CHECK(sc->syscalls[1].errno_ret.set && sc->syscalls[1].errno_ret.v == 1);
        CHECK(sc->syscalls[1].n_args == 2);
        CHECK(sc->syscalls[1].args[0].index == 0 && sc->syscalls[1].args[0].value == 8);
        CHECK_STR(sc->syscalls[1].args[0].op, "SCMP_CMP_EQ");
        CHECK(sc->syscalls[1].args[1].index == 5 && sc->syscalls[1].args[1].value == UINT64_MAX &&
              sc->syscalls[1].args[1].value_two == 3);
}

TEST(parse_minimal)
{
        cleanup_spec struct spec *s = NULL;
        cleanup_error cap_error_t err = NULL;

        CHECK(spec_parse("{\"ociVersion\": \"1.0.2\", \"root\": {\"path\": \"rootfs\"}, \"process\": null}", NULL, &s,
                         &err) == 0);
        CHECK_STR(s->root_path, "rootfs");
        CHECK(!s->root_readonly);
        CHECK(s->process == NULL);
        CHECK(s->linux.resources == NULL && s->linux.seccomp == NULL);
        CHECK(s->n_mounts == 0 && s->linux.n_namespaces == 0);
        CHECK(spec_namespace(s, CLONE_NEWPID) == NULL);
}

TEST(linux_devices_may_be_made_in_a_deny_all_cgroup)
{
        cleanup_spec struct spec *s = NULL;
        cleanup_error cap_error_t err = NULL;

        CHECK(spec_parse("{\"ociVersion\": \"1.0.2\", \"root\": {\"path\": \"rootfs\"}, \"linux\": {\"devices\": [\n"
                         "  {\"path\": \"/dev/mem0\", \"type\": \"c\", \"major\": 1, \"minor\": 1},\n"
                         "  {\"path\": \"/dev/sdz\", \"type\": \"b\", \"major\": 8, \"minor\": 7},\n"
                         "  {\"path\": \"/dev/fuse\", \"type\": \"c\", \"major\": 10, \"minor\": 229},\n"
                         "  {\"path\": \"/dev/fifo\", \"type\": \"p\"}],\n"
                         " \"resources\": {\"devices\": [{\"allow\": false, \"access\": \"rwm\"},\n"
                         "  {\"allow\": true, \"type\": \"c\", \"major\": 10, \"minor\": -1, \"access\": \"rw\"}]}}}",
                         NULL, &s, &err) == 0);
        struct spec_resources *r = s->linux.resources;
        /* mknod only, after the config's rules; /dev/fuse keeps the rules that name it; a fifo needs none */
        CHECK(r->n_devices == 4);
        CHECK(r->devices[2].allow && r->devices[2].type == 'c' && r->devices[2].major == 1 && r->devices[2].minor == 1);
        CHECK_STR(r->devices[2].access, "m");
        CHECK(r->devices[3].allow && r->devices[3].type == 'b' && r->devices[3].major == 8 && r->devices[3].minor == 7);
        CHECK_STR(r->devices[3].access, "m");
}

static bool has_cgroup2(void)
{
        struct statfs fs;
        return statfs("/sys/fs/cgroup", &fs) == 0 && fs.f_type == CGROUP2_SUPER_MAGIC;
}

TEST(default_spec_round_trip)
{
        cleanup_free char *json = spec_default_json(false);
        cleanup_spec struct spec *s = NULL;
        cleanup_error cap_error_t err = NULL;

        CHECK(json != NULL);
        CHECK(strstr(json, "\n\t\"ociVersion\": \"1.1.0\"") != NULL); /* tab-indented, like runc */
        CHECK(spec_parse(json, "config.json", &s, &err) == 0);
        CHECK_STR(s->oci_version, "1.1.0");
        CHECK_STR(s->root_path, "rootfs");
        CHECK(s->root_readonly);
        CHECK_STR(s->hostname, "capsule");
        struct spec_process *p = s->process;
        CHECK(p->terminal && p->no_new_privileges);
        CHECK(strv_eq(p->args, STRV("sh")));
        CHECK(strv_eq(p->env, STRV("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "TERM=xterm")));
        CHECK_STR(p->cwd, "/");
        CHECK(p->user.uid == 0 && p->user.gid == 0);
        const char *const *caps = STRV("CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE");
        CHECK(strv_eq(p->capabilities->bounding, caps));
        CHECK(strv_eq(p->capabilities->effective, caps));
        CHECK(strv_eq(p->capabilities->permitted, caps));
        CHECK(p->capabilities->inheritable == NULL && p->capabilities->ambient == NULL);
        CHECK(p->n_rlimits == 1 && p->rlimits[0].resource == RLIMIT_NOFILE && p->rlimits[0].soft == 1024 &&
              p->rlimits[0].hard == 1024);

        CHECK(s->n_mounts == 7);
        const char *const dests[] = { "/proc", "/dev", "/dev/pts", "/dev/shm", "/dev/mqueue", "/sys", "/sys/fs/cgroup" };
        for (size_t i = 0; i < 7; i++)
                CHECK_STR(s->mounts[i].destination, dests[i]);
        CHECK(s->mounts[0].options == NULL);
        CHECK(strv_eq(s->mounts[2].options,
                      STRV("nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5")));
        CHECK_STR(s->mounts[5].type, "sysfs");
        CHECK(strv_eq(s->mounts[6].options, STRV("nosuid", "noexec", "nodev", "relatime", "ro")));

        struct spec_linux *l = &s->linux;
        CHECK(l->resources != NULL && l->resources->n_devices == 1);
        CHECK(!l->resources->devices[0].allow && l->resources->devices[0].type == 'a');
        CHECK_STR(l->resources->devices[0].access, "rwm");
        CHECK(l->n_namespaces == (has_cgroup2() ? 6u : 5u));
        CHECK(spec_namespace(s, CLONE_NEWPID) && spec_namespace(s, CLONE_NEWNET) && spec_namespace(s, CLONE_NEWIPC) &&
              spec_namespace(s, CLONE_NEWUTS) && spec_namespace(s, CLONE_NEWNS));
        CHECK(spec_namespace(s, CLONE_NEWUSER) == NULL);
        CHECK((spec_namespace(s, CLONE_NEWCGROUP) != NULL) == has_cgroup2());
        CHECK(l->n_uid_mappings == 0);
        CHECK(strv_len(l->masked_paths) == 13 && strv_contains(l->masked_paths, "/proc/kcore") &&
              strv_contains(l->masked_paths, "/sys/firmware") && strv_contains(l->masked_paths, "/proc/interrupts") &&
              strv_contains(l->masked_paths, "/sys/devices/virtual/powercap"));
        CHECK(strv_eq(l->readonly_paths, STRV("/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger")));
}

TEST(default_rootless_spec_round_trip)
{
        cleanup_free char *json = spec_default_json(true);
        cleanup_spec struct spec *s = NULL;
        cleanup_error cap_error_t err = NULL;

        CHECK(spec_parse(json, "config.json", &s, &err) == 0);
        struct spec_linux *l = &s->linux;
        CHECK(l->resources == NULL);
        CHECK(spec_namespace(s, CLONE_NEWUSER) != NULL);
        CHECK(spec_namespace(s, CLONE_NEWNET) == NULL);
        CHECK(l->namespaces[l->n_namespaces - 1].type == CLONE_NEWUSER);
        CHECK(l->n_uid_mappings == 1 && l->uid_mappings[0].container_id == 0 &&
              l->uid_mappings[0].host_id == geteuid() && l->uid_mappings[0].size == 1);
        CHECK(l->n_gid_mappings == 1 && l->gid_mappings[0].host_id == getegid());
        CHECK(s->n_mounts == 7);
        CHECK_STR(s->mounts[5].destination, "/sys");
        CHECK_STR(s->mounts[5].type, "none");
        CHECK_STR(s->mounts[5].source, "/sys");
        CHECK(strv_eq(s->mounts[5].options, STRV("rbind", "nosuid", "noexec", "nodev", "ro")));
        CHECK(strv_eq(s->mounts[2].options, STRV("nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620")));
}

/* Parse `json`; the error must be one line containing every `want` fragment. */
static bool fails_with(const char *json, const char *const *want)
{
        struct spec *s = NULL;
        cleanup_error cap_error_t err = NULL;

        if (spec_parse(json, "config.json", &s, &err) == 0) {
                spec_free(s);
                fprintf(stderr, "unexpectedly parsed: %s\n", json);
                return false;
        }
        if (!err || !err->msg || s != NULL || strchr(err->msg, '\n'))
                return false;
        for (size_t i = 0; want[i]; i++) {
                if (!strstr(err->msg, want[i])) {
                        fprintf(stderr, "error \"%s\" lacks \"%s\"\n", err->msg, want[i]);
                        return false;
                }
        }
        return true;
}

#define BASE "\"ociVersion\": \"1.1.0\", \"root\": {\"path\": \"rootfs\"}"
#define PROC(extra) "{" BASE ", \"process\": {\"args\": [\"sh\"], \"cwd\": \"/\"" extra "}}"
#define LINUX(body) "{" BASE ", \"linux\": {" body "}}"
#define RES(body) LINUX("\"resources\": {" body "}")

TEST(errors_json_and_top_level)
{
        CHECK(fails_with("{\n  \"ociVersion\": \"1.1.0\",\n  \"root\": {\"path\": \"rootfs\"\n  \"x\": 1}",
                         STRV("config.json: invalid JSON at line 4 column")));
        CHECK(fails_with("[1, 2]", STRV("config.json: must be a JSON object")));
        CHECK(fails_with("{\"root\": {\"path\": \"rootfs\"}}", STRV("config.json: ociVersion: is required")));
        CHECK(fails_with("{\"ociVersion\": 1, \"root\": {\"path\": \"rootfs\"}}", STRV("ociVersion: must be a string")));
        CHECK(fails_with("{\"ociVersion\": \"1.1.0\"}", STRV("config.json: root: is required")));
        CHECK(fails_with("{\"ociVersion\": \"1.1.0\", \"root\": {}}", STRV("root.path: is required")));
        CHECK(fails_with("{\"ociVersion\": \"1.1.0\", \"root\": {\"path\": \"\"}}", STRV("root.path: must not be empty")));
        CHECK(fails_with("{" BASE ", \"hostname\": \"h\"}", STRV("hostname: requires a uts namespace")));
        CHECK(fails_with("{" BASE ", \"annotations\": {\"a\": 1}}", STRV("annotations[\"a\"]: must be a string")));
        CHECK(fails_with("{" BASE ", \"mounts\": [{\"destination\": \"rel\"}]}",
                         STRV("mounts[0].destination: \"rel\" is not an absolute path")));
        CHECK(fails_with("{" BASE ", \"mounts\": [{\"type\": \"tmpfs\"}]}", STRV("mounts[0].destination: is required")));
        CHECK(fails_with("{" BASE ", \"mounts\": [{\"destination\": \"/a\", \"options\": [\"ro\", 1]}]}",
                         STRV("mounts[0].options[1]: must be a string")));
        CHECK(fails_with("{" BASE ", \"hooks\": {\"poststop\": [{\"path\": \"/x\", \"timeout\": 0}]}}",
                         STRV("hooks.poststop[0].timeout: value 0 out of range")));
        CHECK(fails_with("{" BASE ", \"hooks\": {\"prestart\": [{\"args\": []}]}}", STRV("hooks.prestart[0].path: is required")));
        CHECK(fails_with("{" BASE ", \"hooks\": {\"createRuntime\": [{\"path\": \"x\"}]}}",
                         STRV("hooks.createRuntime[0].path: \"x\" is not an absolute path")));
}

TEST(errors_process)
{
        CHECK(fails_with("{" BASE ", \"process\": {\"cwd\": \"/\"}}",
                         STRV("config.json: process.args: must be a non-empty array of strings")));
        CHECK(fails_with("{" BASE ", \"process\": {\"args\": [], \"cwd\": \"/\"}}",
                         STRV("process.args: must be a non-empty array of strings")));
        CHECK(fails_with("{" BASE ", \"process\": {\"args\": [\"a\", 2], \"cwd\": \"/\"}}",
                         STRV("process.args[1]: must be a string")));
        CHECK(fails_with("{" BASE ", \"process\": {\"args\": [\"sh\"]}}", STRV("process.cwd: is required")));
        CHECK(fails_with("{" BASE ", \"process\": {\"args\": [\"sh\"], \"cwd\": \"tmp\"}}",
                         STRV("process.cwd: \"tmp\" is not an absolute path")));
        CHECK(fails_with("{" BASE ", \"process\": 3}", STRV("process: must be an object")));
        CHECK(fails_with(PROC(", \"terminal\": \"yes\""), STRV("process.terminal: must be a boolean")));
        CHECK(fails_with(PROC(", \"env\": [\"NOEQUALS\"]"), STRV("process.env[0]: \"NOEQUALS\" is not of the form")));
        CHECK(fails_with(PROC(", \"consoleSize\": {\"height\": 1}"), STRV("process.consoleSize.width: is required")));
        CHECK(fails_with(PROC(", \"user\": {\"uid\": -1}"), STRV("process.user.uid: value -1 out of range")));
        CHECK(fails_with(PROC(", \"user\": {\"uid\": 4294967296}"), STRV("process.user.uid: value 4294967296 out of range")));
        CHECK(fails_with(PROC(", \"user\": {\"gid\": 1.5}"), STRV("process.user.gid: must be an unsigned integer")));
        CHECK(fails_with(PROC(", \"user\": {\"additionalGids\": [1, \"x\"]}"),
                         STRV("process.user.additionalGids[1]: must be an unsigned integer")));
        CHECK(fails_with(PROC(", \"capabilities\": {\"bounding\": \"CAP_KILL\"}"),
                         STRV("process.capabilities.bounding: must be an array of strings")));
        CHECK(fails_with(PROC(", \"rlimits\": [{\"type\": \"RLIMIT_FOO\", \"soft\": 1, \"hard\": 1}]"),
                         STRV("process.rlimits[0].type: unknown rlimit \"RLIMIT_FOO\"")));
        CHECK(fails_with(PROC(", \"rlimits\": [{\"type\": \"RLIMIT_NOFILE\", \"soft\": 2, \"hard\": 1}]"),
                         STRV("process.rlimits[0].soft: soft limit 2 is greater than hard limit 1")));
        CHECK(fails_with(PROC(", \"rlimits\": [{\"type\": \"RLIMIT_NOFILE\", \"soft\": 1, \"hard\": 1},"
                              "{\"type\": \"RLIMIT_NOFILE\", \"soft\": 1, \"hard\": 1}]"),
                         STRV("process.rlimits[1].type: duplicate rlimit \"RLIMIT_NOFILE\"")));
        CHECK(fails_with(PROC(", \"rlimits\": [{\"type\": \"RLIMIT_NOFILE\", \"soft\": 1}]"),
                         STRV("process.rlimits[0].hard: is required")));
        CHECK(fails_with(PROC(", \"rlimits\": [{\"type\": \"RLIMIT_NOFILE\", \"soft\": 1, \"hard\": 18446744073709551616}]"),
                         STRV("config.json: invalid JSON")));
        CHECK(fails_with(PROC(", \"oomScoreAdj\": 1001"), STRV("process.oomScoreAdj: value 1001 out of range -1000..1000")));
        CHECK(fails_with(PROC(", \"scheduler\": {\"policy\": \"SCHED_FAST\"}"),
                         STRV("process.scheduler.policy: unknown scheduler policy \"SCHED_FAST\"")));
        CHECK(fails_with(PROC(", \"scheduler\": {\"nice\": 1}"), STRV("process.scheduler.policy: is required")));
        CHECK(fails_with(PROC(", \"scheduler\": {\"policy\": \"SCHED_OTHER\", \"flags\": [\"X\"]}"),
                         STRV("process.scheduler.flags[0]: unknown scheduler flag \"X\"")));
        CHECK(fails_with(PROC(", \"ioPriority\": {\"class\": \"IOPRIO_CLASS_X\", \"priority\": 1}"),
                         STRV("process.ioPriority.class: unknown I/O priority class")));
        CHECK(fails_with(PROC(", \"ioPriority\": {\"class\": \"IOPRIO_CLASS_RT\", \"priority\": 8}"),
                         STRV("process.ioPriority.priority: value 8 out of range 0..7")));
}

TEST(errors_linux)
{
        CHECK(fails_with(LINUX("\"namespaces\": [{\"type\": \"pid\"}, {\"type\": \"uts\"}, {\"type\": \"foo\"}]"),
                         STRV("config.json: linux.namespaces[2].type: unknown namespace \"foo\"")));
        CHECK(fails_with(LINUX("\"namespaces\": [{\"type\": \"pid\"}, {\"type\": \"pid\"}]"),
                         STRV("linux.namespaces[1].type: duplicate namespace \"pid\"")));
        CHECK(fails_with(LINUX("\"namespaces\": [{\"type\": \"net\"}]"), STRV("linux.namespaces[0].type: unknown namespace")));
        CHECK(fails_with(LINUX("\"namespaces\": [{\"path\": \"/x\"}]"), STRV("linux.namespaces[0].type: is required")));
        CHECK(fails_with(LINUX("\"namespaces\": [{\"type\": \"ipc\", \"path\": \"x\"}]"),
                         STRV("linux.namespaces[0].path: \"x\" is not an absolute path")));
        CHECK(fails_with(LINUX("\"namespaces\": {}"), STRV("linux.namespaces: must be an array")));
        CHECK(fails_with(LINUX("\"uidMappings\": [{\"containerID\": 0, \"hostID\": 1000, \"size\": 0}]"),
                         STRV("linux.uidMappings[0].size: must be greater than 0")));
        CHECK(fails_with(LINUX("\"gidMappings\": [{\"containerID\": 4294967295, \"hostID\": 0, \"size\": 2}]"),
                         STRV("linux.gidMappings[0].size: range", "overflows")));
        CHECK(fails_with(LINUX("\"uidMappings\": [{\"containerID\": 0, \"size\": 1}]"),
                         STRV("linux.uidMappings[0].hostID: is required")));
        CHECK(fails_with(LINUX("\"sysctl\": {\"kernel.x\": 1}"), STRV("linux.sysctl[\"kernel.x\"]: must be a string")));
        CHECK(fails_with(LINUX("\"devices\": [{\"path\": \"/dev/x\", \"type\": \"z\", \"major\": 1, \"minor\": 1}]"),
                         STRV("linux.devices[0].type: unknown device type \"z\"")));
        CHECK(fails_with(LINUX("\"devices\": [{\"path\": \"dev/x\", \"type\": \"c\", \"major\": 1, \"minor\": 1}]"),
                         STRV("linux.devices[0].path: \"dev/x\" is not an absolute path")));
        CHECK(fails_with(LINUX("\"devices\": [{\"path\": \"/dev/x\", \"type\": \"b\", \"major\": 1}]"),
                         STRV("linux.devices[0].minor: is required")));
        CHECK(fails_with(LINUX("\"devices\": [{\"path\": \"/dev/x\", \"type\": \"u\", \"minor\": 1}]"),
                         STRV("linux.devices[0].major: is required")));
        CHECK(fails_with(LINUX("\"maskedPaths\": [\"/ok\", \"rel\"]"),
                         STRV("linux.maskedPaths[1]: \"rel\" is not an absolute path")));
        CHECK(fails_with(LINUX("\"readonlyPaths\": \"/x\""), STRV("linux.readonlyPaths: must be an array of strings")));
        CHECK(fails_with(LINUX("\"rootfsPropagation\": \"weird\""), STRV("linux.rootfsPropagation: unknown propagation")));
        CHECK(fails_with(LINUX("\"personality\": {\"domain\": \"LINUX64\"}"),
                         STRV("linux.personality.domain: unknown personality domain \"LINUX64\"")));
        CHECK(fails_with(LINUX("\"personality\": {\"domain\": \"LINUX\", \"flags\": [1]}"),
                         STRV("linux.personality.flags[0]: must be a string")));
        CHECK(fails_with(LINUX("\"timeOffsets\": {\"realtime\": {\"secs\": 1}}"),
                         STRV("linux.timeOffsets.realtime: unknown clock \"realtime\"")));
        CHECK(fails_with(LINUX("\"timeOffsets\": {\"boottime\": {\"nanosecs\": 1000000000}}"),
                         STRV("linux.timeOffsets.boottime.nanosecs: value 1000000000 out of range")));
        CHECK(fails_with(LINUX("\"seccomp\": {\"syscalls\": []}"), STRV("linux.seccomp.defaultAction: is required")));
        CHECK(fails_with(LINUX("\"seccomp\": {\"defaultAction\": \"SCMP_ACT_ALLOW\", \"syscalls\": [{\"action\": \"A\"}]}"),
                         STRV("linux.seccomp.syscalls[0].names: is required")));
        CHECK(fails_with(LINUX("\"seccomp\": {\"defaultAction\": \"SCMP_ACT_ALLOW\", \"syscalls\": [{\"names\": [\"read\"], "
                               "\"action\": \"A\", \"args\": [{\"index\": 6, \"value\": 1, \"op\": \"SCMP_CMP_EQ\"}]}]}"),
                         STRV("linux.seccomp.syscalls[0].args[0].index: value 6 out of range 0..5")));
        CHECK(fails_with(LINUX("\"seccomp\": {\"defaultAction\": \"SCMP_ACT_ALLOW\", \"syscalls\": [{\"names\": [\"read\"], "
                               "\"action\": \"A\", \"args\": [{\"index\": 1, \"value\": 1}]}]}"),
                         STRV("linux.seccomp.syscalls[0].args[0].op: is required")));
        CHECK(fails_with(LINUX("\"seccomp\": {\"defaultAction\": \"SCMP_ACT_ALLOW\", \"architectures\": [3]}"),
                         STRV("linux.seccomp.architectures[0]: must be a string")));
}

TEST(errors_resources)
{
        CHECK(fails_with(RES("\"devices\": [{\"access\": \"rwm\"}]"), STRV("linux.resources.devices[0].allow: is required")));
        CHECK(fails_with(RES("\"devices\": [{\"allow\": true, \"type\": \"u\"}]"),
                         STRV("linux.resources.devices[0].type: unknown device type \"u\"")));
        CHECK(fails_with(RES("\"devices\": [{\"allow\": true, \"access\": \"rwx\"}]"),
                         STRV("linux.resources.devices[0].access: \"rwx\" is not a subset of \"rwm\"")));
        CHECK(fails_with(RES("\"devices\": [{\"allow\": true, \"major\": -2}]"),
                         STRV("linux.resources.devices[0].major: value -2 out of range")));
        CHECK(fails_with(RES("\"memory\": {\"limit\": \"1G\"}"), STRV("linux.resources.memory.limit: must be an integer")));
        CHECK(fails_with(RES("\"memory\": {\"swappiness\": 101}"), STRV("linux.resources.memory.swappiness: value 101")));
        CHECK(fails_with(RES("\"memory\": {\"disableOOMKiller\": 1}"),
                         STRV("linux.resources.memory.disableOOMKiller: must be a boolean")));
        CHECK(fails_with(RES("\"cpu\": {\"shares\": -1}"), STRV("linux.resources.cpu.shares: value -1 out of range")));
        CHECK(fails_with(RES("\"cpu\": {\"cpus\": 1}"), STRV("linux.resources.cpu.cpus: must be a string")));
        CHECK(fails_with(RES("\"pids\": {\"limit\": true}"), STRV("linux.resources.pids.limit: must be an integer")));
        CHECK(fails_with(RES("\"blockIO\": {\"weight\": 70000}"), STRV("linux.resources.blockIO.weight: value 70000")));
        CHECK(fails_with(RES("\"blockIO\": {\"weightDevice\": [{\"major\": 8, \"weight\": 1}]}"),
                         STRV("linux.resources.blockIO.weightDevice[0].minor: is required")));
        CHECK(fails_with(RES("\"blockIO\": {\"throttleWriteIOPSDevice\": [{\"major\": 8, \"minor\": 0}]}"),
                         STRV("linux.resources.blockIO.throttleWriteIOPSDevice[0].rate: is required")));
        CHECK(fails_with(RES("\"hugepageLimits\": [{\"limit\": 1}]"),
                         STRV("linux.resources.hugepageLimits[0].pageSize: is required")));
        CHECK(fails_with(RES("\"network\": {\"priorities\": [{\"name\": \"eth0\", \"priority\": -1}]}"),
                         STRV("linux.resources.network.priorities[0].priority: value -1")));
        CHECK(fails_with(RES("\"unified\": {\"memory.max\": 5}"), STRV("linux.resources.unified[\"memory.max\"]: must be a string")));
        CHECK(fails_with(RES("\"memory\": [1]"), STRV("linux.resources.memory: must be an object")));
}

TEST(parse_process_json)
{
        struct spec_process *p = NULL;
        cleanup_error cap_error_t err = NULL;

        CHECK(spec_parse_process("{\"args\": [\"ls\", \"-l\"], \"cwd\": \"/tmp\", \"env\": [\"A=b\"], "
                                 "\"user\": {\"uid\": 7}, \"capabilities\": {\"bounding\": [\"CAP_KILL\"]}}",
                                 "process.json", &p, &err) == 0);
        CHECK(p != NULL);
        if (!p)
                return;
        bool ok = strv_eq(p->args, STRV("ls", "-l")) && strcmp(p->cwd, "/tmp") == 0 && p->user.uid == 7 &&
                  p->capabilities && strv_eq(p->capabilities->bounding, STRV("CAP_KILL"));
        spec_process_free(p);
        CHECK(ok);

        p = NULL;
        CHECK(spec_parse_process("{\"cwd\": \"/\"}", "process.json", &p, &err) < 0);
        CHECK(p == NULL);
        CHECK(err && strstr(err->msg, "process.json: args: must be a non-empty array of strings"));
        cap_error_free(&err);

        CHECK(spec_parse_process("{\"args\": [\"x\"], \"cwd\": \"rel\"}", "process.json", &p, &err) < 0);
        CHECK(err && strstr(err->msg, "process.json: cwd: \"rel\" is not an absolute path"));
        cap_error_free(&err);

        CHECK(spec_parse_process("{\"args\": [\"x\"], \"cwd\": \"/\", \"rlimits\": [{\"type\": \"RLIMIT_NOFILE\", "
                                 "\"soft\": 5, \"hard\": 4}]}", "process.json", &p, &err) < 0);
        CHECK(err && strstr(err->msg, "process.json: rlimits[0].soft"));
        cap_error_free(&err);

        CHECK(spec_parse_process("[\"x\"]", "process.json", &p, &err) < 0);
        CHECK(err && strstr(err->msg, "process.json: must be a JSON object"));
        cap_error_free(&err);

        CHECK(spec_parse_process("{\"args\": [\"x\"", "process.json", &p, &err) < 0);
        CHECK(err && strstr(err->msg, "process.json: invalid JSON at line 1"));
}

/* A temporary bundle; removed by bundle_cleanup. */
static char *bundle_make(const char *config)
{
        char tmpl[] = "/tmp/capsule-test-spec-XXXXXX";
        cap_error_t err = NULL;

        if (!mkdtemp(tmpl))
                return NULL;
        char *dir = xstrdup(tmpl);
        cleanup_free char *path = xasprintf("%s/config.json", dir);
        if (write_file(path, config, strlen(config), &err) < 0)
                cap_error_free(&err);
        return dir;
}

static void bundle_cleanup(char **dir)
{
        cap_error_t err = NULL;

        if (*dir && rm_rf(*dir, &err) < 0)
                cap_error_free(&err);
        free(*dir);
}

TEST(load_relative_root)
{
        __attribute__((cleanup(bundle_cleanup))) char *dir =
                bundle_make("{\"ociVersion\": \"1.1.0\", \"root\": {\"path\": \"rootfs\"}}");
        cleanup_spec struct spec *s = NULL;
        cleanup_error cap_error_t err = NULL;

        CHECK(dir != NULL);
        cleanup_free char *rootfs = xasprintf("%s/rootfs", dir);
        CHECK(mkdir(rootfs, 0755) == 0);
        CHECK(spec_load(dir, &s, &err) == 0);
        CHECK_STR(s->root_path, rootfs);
}

TEST(load_absolute_root)
{
        __attribute__((cleanup(bundle_cleanup))) char *dir =
                bundle_make("{\"ociVersion\": \"1.1.0\", \"root\": {\"path\": \"/\"}}");
        cleanup_spec struct spec *s = NULL;
        cleanup_error cap_error_t err = NULL;

        CHECK(dir != NULL);
        CHECK(spec_load(dir, &s, &err) == 0);
        CHECK_STR(s->root_path, "/");
}

TEST(load_missing_rootfs)
{
        __attribute__((cleanup(bundle_cleanup))) char *dir =
                bundle_make("{\"ociVersion\": \"1.1.0\", \"root\": {\"path\": \"rootfs\"}}");
        cleanup_spec struct spec *s = NULL;
        cleanup_error cap_error_t err = NULL;

        CHECK(dir != NULL);
        CHECK(spec_load(dir, &s, &err) < 0);
        CHECK(s == NULL);
        cleanup_free char *want = xasprintf("%s/rootfs: rootfs does not exist", dir);
        CHECK(err && strcmp(err->msg, want) == 0);
        cap_error_free(&err);

        /* A regular file is not a rootfs either. */
        cleanup_free char *file = xasprintf("%s/rootfs", dir);
        CHECK(write_file(file, "", 0, &err) == 0);
        CHECK(spec_load(dir, &s, &err) < 0);
        CHECK(err && strcmp(err->msg, want) == 0);
}

TEST(load_bad_config_and_missing_bundle)
{
        __attribute__((cleanup(bundle_cleanup))) char *dir = bundle_make("{\"ociVersion\": \"1.1.0\"}");
        cleanup_spec struct spec *s = NULL;
        cleanup_error cap_error_t err = NULL;

        CHECK(dir != NULL);
        CHECK(spec_load(dir, &s, &err) < 0);
        CHECK(err && strstr(err->msg, "config.json: root: is required"));
        cap_error_free(&err);

        cleanup_free char *missing = xasprintf("%s/nope", dir);
        CHECK(spec_load(missing, &s, &err) < 0);
        CHECK(err && strstr(err->msg, missing) && err->errnum == ENOENT);
}

TEST(parse_resources_alone)
{
        cleanup_spec struct spec *spec = NULL;
        cleanup_error cap_error_t err = NULL;
        CHECK(spec_parse_resources("{\"memory\": {\"limit\": 268435456}, \"pids\": {\"limit\": 64}}", "update", &spec, &err) == 0);
        CHECK(spec && spec->linux.resources && spec->linux.resources->memory.limit.set &&
              spec->linux.resources->memory.limit.v == 268435456 && spec->linux.resources->pids_limit.v == 64);
        CHECK(spec_parse_resources("{\"memory\": {\"limit\": \"lots\"}}", "update", &spec, &err) < 0);
        CHECK(err && strstr(err->msg, "update: linux.resources.memory.limit"));
        cap_error_free(&err);
        /* Above INT64_MAX: it crosses the re-encoding as the big integer it is, refused by range. */
        CHECK(spec_parse_resources("{\"memory\": {\"limit\": 18446744073709551615}}", "update", &spec, &err) < 0);
        CHECK(err && strstr(err->msg, "linux.resources.memory.limit"));
        cap_error_free(&err);
        CHECK(spec_parse_resources("[1]", "update", &spec, &err) < 0);
        CHECK(err && strstr(err->msg, "update"));
}
