/* Runs on every vCPU until capsule is stopped from outside (tests send SIGTERM). */
#include "payload.h"

int payload_main(uint64_t index, uint64_t ncpus)
{
        (void)ncpus;
        if (index == 0)
                puts_serial("spinning\n");
        payload_idle();
}
