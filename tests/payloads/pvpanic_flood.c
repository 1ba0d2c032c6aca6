/* Writes "crash kernel loaded" to the pvpanic port 20000 times, then exits 0. */
#include "payload.h"

#define PVPANIC 0x505
#define PVPANIC_CRASH_LOADED 0x02

int payload_main(uint64_t index, uint64_t ncpus)
{
        (void)index;
        (void)ncpus;
        for (int i = 0; i < 20000; i++)
                outb(PVPANIC, PVPANIC_CRASH_LOADED);
        return 0;
}
