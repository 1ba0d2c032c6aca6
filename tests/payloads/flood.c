/* Writes to COM1 without end, as fast as the vCPU can (tests stop it with a signal). */
#include "payload.h"

int payload_main(uint64_t index, uint64_t ncpus)
{
        (void)ncpus;
        if (index != 0)
                payload_idle();
        puts_serial("flooding\n");
        for (;;)
                outb(COM1, 'x');
}
