#include <stdint.h>
#include <unistd.h>

#include "check.h"
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
