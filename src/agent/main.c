/* capsule-guest: pid 1 of a sandbox VM. It sets the guest up, then serves the host's requests
 * (common/agent_proto.h) until the container's init has ended, and powers the VM off. */
#include <stdio.h>
#include <unistd.h>

#include "agent/agent.h"
#include "agent/system.h"

int main(void)
{
        static struct agent a;
        a.boot_us = system_uptime_us();
        if (getpid() != 1) {
                fprintf(stderr, "capsule-guest: runs only as pid 1 of a capsule sandbox VM\n");
                return 1;
        }
        cleanup_error cap_error_t err = NULL;
        if (system_setup(&err) < 0)
                system_fatal("%s", err->msg);
        agent_serve(&a);
}
