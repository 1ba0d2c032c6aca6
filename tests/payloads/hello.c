/* Prints a line on COM1 and exits 0. */
#include "payload.h"

int payload_main(uint64_t index, uint64_t ncpus)
{
        (void)index;
        (void)ncpus;
        puts_serial("hello from ring 3\n");
        return 0;
}
