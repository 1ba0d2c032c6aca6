/* Exits with status 42 through the debug exit port. */
#include "payload.h"

int payload_main(uint64_t index, uint64_t ncpus)
{
        (void)index;
        (void)ncpus;
        return 42;
}
