#include <stdint.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "common/util.h"
#include "sandbox/sandbox_internal.h"

static int64_t overhead(void)
{
        return 32 + sysconf(_SC_NPROCESSORS_ONLN);
}

TEST(host_limits_leave_the_guest_its_device_rules_and_the_vmm_its_threads)
{
        struct spec_device_cgroup rule = { 0 };
        struct spec_resources res = { .devices = &rule, .n_devices = 1, .pids_limit = { .set = true, .v = 8 } };
        res.memory.limit.set = true;
        res.memory.limit.v = 256 << 20;
        struct spec_resources host;
        sandbox_host_resources(&res, &host);
        CHECK(host.devices == NULL && host.n_devices == 0);
        CHECK(host.pids_limit.set && host.pids_limit.v == 8 + overhead());
        CHECK(host.memory.limit.set && host.memory.limit.v == 256 << 20);
        CHECK(res.pids_limit.v == 8 && res.n_devices == 1);
}

TEST(unlimited_and_huge_pids_limits_stay_as_given)
{
        struct spec_resources res = { .pids_limit = { .set = true, .v = -1 } };
        struct spec_resources host;
        sandbox_host_resources(&res, &host);
        CHECK(host.pids_limit.v == -1);
        res.pids_limit.v = INT64_MAX - 1;
        sandbox_host_resources(&res, &host);
        CHECK(host.pids_limit.v == INT64_MAX - 1);
        res.pids_limit.set = false;
        res.pids_limit.v = 0;
        sandbox_host_resources(&res, &host);
        CHECK(!host.pids_limit.set);
}

TEST(pod_size_is_read_from_a_sandbox_containers_annotations_only)
{
        char *annotations[] = { "io.kubernetes.cri.container-type", "sandbox", SANDBOX_POD_MEMORY_ANNOTATION, "1073741824",
                                SANDBOX_POD_CPU_QUOTA_ANNOTATION, "250000", SANDBOX_POD_CPU_PERIOD_ANNOTATION, "100000", NULL };
        struct spec spec = { .annotations = annotations };
        struct sandbox_pod_size size;
        cap_error_t err = NULL;
        CHECK(sandbox_pod_size(&spec, &size, &err) == 0);
        CHECK(size.memory == 1ull << 30 && size.cpu_quota == 250000 && size.cpu_period == 100000);
        /* containerd writes "0" for what the kubelet left unset. */
        annotations[3] = annotations[5] = annotations[7] = "0";
        CHECK(sandbox_pod_size(&spec, &size, &err) == 0 && size.memory == 0 && size.cpu_quota == 0 && size.cpu_period == 0);
        /* A member's (or a plain container's) are not the pod's: not even read. */
        annotations[1] = "container";
        annotations[3] = "junk";
        CHECK(sandbox_pod_size(&spec, &size, &err) == 0 && size.memory == 0);
}

TEST(pod_size_refuses_each_bad_value_naming_its_annotation)
{
        static const struct {
                int key; /* index in annotations */
                const char *value;
        } bad[] = {
                { 2, "" }, { 2, "-1" }, { 2, "+1" }, { 2, " 1" }, { 2, "1G" }, { 2, "0x10" }, { 2, "9223372036854775808" },
                { 2, "99999999999999999999999" }, { 4, "-100000" }, { 4, "999" }, { 4, "1.5" }, { 4, "9223372036854775808" },
                { 6, "999" }, { 6, "1000001" }, { 6, "-1" }, { 6, "100000us" },
        };
        for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
                char *annotations[] = { "io.kubernetes.cri.container-type", "sandbox", SANDBOX_POD_MEMORY_ANNOTATION, "0",
                                        SANDBOX_POD_CPU_QUOTA_ANNOTATION, "0", SANDBOX_POD_CPU_PERIOD_ANNOTATION, "0", NULL };
                annotations[bad[i].key + 1] = (char *)bad[i].value;
                struct spec spec = { .annotations = annotations };
                struct sandbox_pod_size size;
                cap_error_t err = NULL;
                CHECK(sandbox_pod_size(&spec, &size, &err) < 0);
                cleanup_free char *want = xasprintf("annotation %s: `%s` is not ", annotations[bad[i].key], bad[i].value);
                CHECK(err && strncmp(err->msg, want, strlen(want)) == 0 && strstr(err->msg, "(0: unset)"));
                cap_error_free(&err);
        }
}
