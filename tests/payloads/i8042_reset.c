/* Pulses the reset line through the i8042 controller (command 0xfe):
 * capsule ends with the reboot status, 80. Exits 1 if the VM survives. */
#include "payload.h"

int payload_main(uint64_t index, uint64_t ncpus)
{
        (void)index;
        (void)ncpus;
        outb(0x64, 0xfe);
        for (int i = 0; i < 10000000; i++)
                cpu_relax();
        return 1;
}
