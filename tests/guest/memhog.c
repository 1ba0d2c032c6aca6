/* Memory the guest takes and gives back, for tests/guest/balloon.sh:
 *   memhog MIB HOLD_S
 * maps MIB MiB of anonymous memory and writes every page (so the host must back it),
 * prints "guest: phase=touched", holds it HOLD_S seconds, unmaps it (the pages go back to
 * the guest kernel's free lists at once, which free page reporting then hands to the
 * host) and prints "guest: phase=freed". Exits non-zero if the memory cannot be had. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

int main(int argc, char **argv)
{
        if (argc != 3) {
                fprintf(stderr, "usage: memhog MIB HOLD_S\n");
                return 2;
        }
        size_t len = strtoull(argv[1], NULL, 10) << 20;
        unsigned int hold = (unsigned int)strtoul(argv[2], NULL, 10);
        char *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (p == MAP_FAILED) {
                perror("memhog: mmap");
                return 1;
        }
        /* Not zeros: a zero-filled page could stay the shared zero page. */
        for (size_t off = 0; off < len; off += 4096)
                p[off] = (char)(off >> 12 | 1);
        printf("guest: phase=touched\n");
        fflush(stdout);
        sleep(hold);
        munmap(p, len);
        printf("guest: phase=freed\n");
        fflush(stdout);
        return 0;
}
