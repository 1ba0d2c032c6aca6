/* ACPI fixed hardware: the PM1a event and control blocks and the FADT reset
 * register. The machine is always in ACPI mode (SCI_EN reads set, the FADT
 * has no SMI command port); S5 powers the VM off, the reset value reboots it.
 * The only event is the fixed power button (acpi_pm_power_button): its status
 * bit raises the level-triggered SCI while the guest enables it. */
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "common/error.h"
#include "vmm/device.h"
#include "vmm/devices/acpi_pm.h"
#include "vmm/vm.h"
#include "vmm/x86/layout.h"

#define PM1_EVT_LEN 4 /* status (write one to clear), enable */
#define PM1_PWRBTN 0x0100 /* PWRBTN_STS in status, PWRBTN_EN in enable */
#define PM1_CNT_LEN 2

#define PM1_CNT_SCI_EN 0x0001
#define PM1_CNT_SLP_TYP_SHIFT 10
#define PM1_CNT_SLP_TYP_MASK (7u << PM1_CNT_SLP_TYP_SHIFT)
#define PM1_CNT_SLP_EN 0x2000 /* write-only: starts the sleep */
#define PM1_CNT_STORED 0x1fff /* what reads back: SCI_EN, BM_RLD, SLP_TYP */

struct acpi_pm {
        pthread_mutex_t lock;
        struct vm_devices *ctx;
        uint16_t status, enable, control;
        bool sci; /* the level the SCI line has */
};

static struct acpi_pm pm = { .lock = PTHREAD_MUTEX_INITIALIZER };

static void put16(uint8_t *regs, unsigned int off, uint16_t v)
{
        regs[off] = (uint8_t)v;
        regs[off + 1] = (uint8_t)(v >> 8);
}

static uint16_t get16(const uint8_t *regs, unsigned int off)
{
        return (uint16_t)(regs[off] | regs[off + 1] << 8);
}

/* Called with the lock held: the SCI follows (status & enable). */
static void acpi_pm_update_sci(struct acpi_pm *p)
{
        bool level = (p->status & p->enable & PM1_PWRBTN) != 0;
        if (level == p->sci)
                return;
        p->sci = level;
        p->ctx->irq_line(p->ctx->vm, IRQ_ACPI_SCI, level);
}

void acpi_pm_power_button(void)
{
        pthread_mutex_lock(&pm.lock);
        if (pm.ctx) {
                pm.status |= PM1_PWRBTN;
                acpi_pm_update_sci(&pm);
        }
        pthread_mutex_unlock(&pm.lock);
}

static void acpi_pm_evt_io(void *opaque, uint64_t offset, uint8_t *data, uint32_t len, bool is_write)
{
        struct acpi_pm *p = opaque;
        uint8_t regs[PM1_EVT_LEN];
        if (offset >= PM1_EVT_LEN || len > PM1_EVT_LEN - offset)
                return;
        pthread_mutex_lock(&p->lock);
        put16(regs, 0, p->status);
        put16(regs, 2, p->enable);
        if (!is_write) {
                for (uint32_t i = 0; i < len; i++)
                        data[i] = regs[offset + i];
        } else {
                uint8_t clear[2] = { 0, 0 };
                for (uint32_t i = 0; i < len; i++) {
                        if (offset + i < 2)
                                clear[offset + i] = data[i];
                        else
                                regs[offset + i] = data[i];
                }
                p->status &= (uint16_t)~get16(clear, 0);
                p->enable = get16(regs, 2);
                acpi_pm_update_sci(p);
        }
        pthread_mutex_unlock(&p->lock);
}

static void acpi_pm_cnt_io(void *opaque, uint64_t offset, uint8_t *data, uint32_t len, bool is_write)
{
        struct acpi_pm *p = opaque;
        uint8_t regs[PM1_CNT_LEN];
        bool poweroff = false;
        if (offset >= PM1_CNT_LEN || len > PM1_CNT_LEN - offset)
                return;
        pthread_mutex_lock(&p->lock);
        put16(regs, 0, p->control);
        if (!is_write) {
                for (uint32_t i = 0; i < len; i++)
                        data[i] = regs[offset + i];
        } else {
                for (uint32_t i = 0; i < len; i++)
                        regs[offset + i] = data[i];
                uint16_t v = get16(regs, 0);
                p->control = (v & PM1_CNT_STORED) | PM1_CNT_SCI_EN;
                /* Only S5 exists: the DSDT offers no other sleep state, so other types do nothing. */
                poweroff = (v & PM1_CNT_SLP_EN) &&
                           ((v & PM1_CNT_SLP_TYP_MASK) >> PM1_CNT_SLP_TYP_SHIFT) == ACPI_S5_SLP_TYP;
        }
        pthread_mutex_unlock(&p->lock);
        if (poweroff)
                p->ctx->request_exit(p->ctx->vm, VM_EXIT_POWEROFF, 0);
}

static void acpi_pm_reset_io(void *opaque, uint64_t offset, uint8_t *data, uint32_t len, bool is_write)
{
        struct acpi_pm *p = opaque;
        (void)offset;
        (void)len;
        if (!is_write)
                data[0] = 0; /* the bus keeps accesses to 1 byte */
        else if (data[0] == ACPI_RESET_VALUE)
                p->ctx->request_exit(p->ctx->vm, VM_EXIT_REBOOT, VM_STATUS_REBOOT);
}

static int acpi_pm_init(struct vm_devices *ctx, cap_error_t *err)
{
        pthread_mutex_lock(&pm.lock);
        pm.ctx = ctx;
        pm.status = pm.enable = 0;
        pm.sci = false;
        pm.control = PM1_CNT_SCI_EN;
        pthread_mutex_unlock(&pm.lock);
        if (bus_register(ctx->pio, PORT_ACPI_PM1A_EVT, PM1_EVT_LEN, acpi_pm_evt_io, &pm, "acpi pm1a event", err) < 0 ||
            bus_register(ctx->pio, PORT_ACPI_PM1A_CNT, PM1_CNT_LEN, acpi_pm_cnt_io, &pm, "acpi pm1a control", err) < 0)
                return -1;
        return bus_register(ctx->pio, PORT_ACPI_RESET, 1, acpi_pm_reset_io, &pm, "acpi reset", err);
}

static void acpi_pm_exit(struct vm_devices *ctx)
{
        (void)ctx;
        pthread_mutex_lock(&pm.lock);
        pm.ctx = NULL; /* the power button has no VM to press any more */
        pthread_mutex_unlock(&pm.lock);
}

DEVICE_REGISTER(acpi_pm, DEVICE_ORDER_PLATFORM, .name = "acpi_pm", .init = acpi_pm_init, .exit = acpi_pm_exit)
