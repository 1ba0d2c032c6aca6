/* Every vCPU prints "cpu N" and counts itself in a shared counter; the last
 * one to arrive exits with the count, the others idle. */
#include "payload.h"

static volatile int print_lock;
static volatile uint64_t arrived;

static void lock(void)
{
        while (__atomic_exchange_n(&print_lock, 1, __ATOMIC_ACQUIRE))
                while (__atomic_load_n(&print_lock, __ATOMIC_RELAXED))
                        cpu_relax();
}

static void unlock(void)
{
        __atomic_store_n(&print_lock, 0, __ATOMIC_RELEASE);
}

int payload_main(uint64_t index, uint64_t ncpus)
{
        lock();
        puts_serial("cpu ");
        put_dec(index);
        puts_serial("\n");
        unlock();
        if (__atomic_add_fetch(&arrived, 1, __ATOMIC_ACQ_REL) != ncpus)
                payload_idle();
        return (int)ncpus;
}
