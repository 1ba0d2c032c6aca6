/* The pure parts of the KVM interrupt plumbing: the GSI routing table capsule hands
 * KVM_SET_GSI_ROUTING, GSI allocation and masked MSI routes (which never reach KVM),
 * and the kernel command line the devices add to. */
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "common/util.h"
#include "vmm/cmdline.h"
#include "vmm/irq.h"

static struct kvm_irq_routing_entry routes[IRQ_ROUTES_MAX];
static struct irq_msi msi[IRQ_GSI_MAX];

static int count_route(uint32_t n, uint32_t gsi, uint32_t type, uint32_t chip, uint32_t pin)
{
        int found = 0;
        for (uint32_t i = 0; i < n; i++)
                if (routes[i].gsi == gsi && routes[i].type == type &&
                    (type != KVM_IRQ_ROUTING_IRQCHIP ||
                     (routes[i].u.irqchip.irqchip == chip && routes[i].u.irqchip.pin == pin)))
                        found++;
        return found;
}

TEST(routing_default_table_is_kvms)
{
        memset(msi, 0, sizeof(msi));
        uint32_t n = irq_routing_build(msi, IRQ_GSI_MAX, routes);
        CHECK(n == IRQ_IOAPIC_PINS + IRQ_PIC_PINS);
        for (uint32_t gsi = 0; gsi < IRQ_IOAPIC_PINS; gsi++)
                CHECK(count_route(n, gsi, KVM_IRQ_ROUTING_IRQCHIP, KVM_IRQCHIP_IOAPIC, gsi) == 1);
        for (uint32_t gsi = 0; gsi < 8; gsi++)
                CHECK(count_route(n, gsi, KVM_IRQ_ROUTING_IRQCHIP, KVM_IRQCHIP_PIC_MASTER, gsi) == 1);
        for (uint32_t gsi = 8; gsi < 16; gsi++)
                CHECK(count_route(n, gsi, KVM_IRQ_ROUTING_IRQCHIP, KVM_IRQCHIP_PIC_SLAVE, gsi - 8) == 1);
        /* No PIC route above 15. */
        for (uint32_t i = 0; i < n; i++)
                CHECK(routes[i].u.irqchip.irqchip == KVM_IRQCHIP_IOAPIC || routes[i].gsi < 16);
}

TEST(routing_installs_only_unmasked_msi)
{
        memset(msi, 0, sizeof(msi));
        msi[24] = (struct irq_msi){ .allocated = true, .installed = true, .addr = 0xfee01000, .data = 0x4041 };
        msi[25] = (struct irq_msi){ .allocated = true, .installed = false, .addr = 0xfee00000, .data = 0x30 };
        msi[40] = (struct irq_msi){ .allocated = true, .installed = true, .addr = 0x1fee00000ULL, .data = 0x31 };
        uint32_t n = irq_routing_build(msi, 41, routes);
        CHECK(n == IRQ_IOAPIC_PINS + IRQ_PIC_PINS + 2);
        CHECK(count_route(n, 24, KVM_IRQ_ROUTING_MSI, 0, 0) == 1);
        CHECK(count_route(n, 25, KVM_IRQ_ROUTING_MSI, 0, 0) == 0);
        CHECK(count_route(n, 40, KVM_IRQ_ROUTING_MSI, 0, 0) == 1);
        const struct kvm_irq_routing_entry *last = &routes[n - 1];
        CHECK(last->gsi == 40 && last->u.msi.address_lo == 0xfee00000u && last->u.msi.address_hi == 1 &&
              last->u.msi.data == 0x31);
        /* GSIs past the limit given are not looked at. */
        CHECK(irq_routing_build(msi, 30, routes) == IRQ_IOAPIC_PINS + IRQ_PIC_PINS + 1);
}

/* With no VM (fd -1) every ioctl fails: what succeeds never reached KVM. */
TEST(gsi_alloc_and_masked_routes)
{
        cleanup_error cap_error_t err = NULL;
        struct vm_irq *irq = xmalloc0(sizeof(*irq));
        CHECK(vm_irq_init(irq, -1, 27, &err) == 0);
        uint32_t gsi[3];
        for (int i = 0; i < 3; i++)
                CHECK(vm_irq_gsi_alloc(irq, &gsi[i], &err) == 0 && gsi[i] == (uint32_t)(24 + i));
        CHECK(vm_irq_gsi_alloc(irq, &gsi[0], &err) < 0 && strstr(err->msg, "no free GSI"));
        cap_error_free(&err);
        /* Masked: not installed, so KVM's table does not change. */
        CHECK(vm_irq_msi_route(irq, 24, 0xfee00000, 0x41, true, &err) == 0);
        CHECK(!irq->msi[24].installed && irq->msi[24].data == 0x41);
        /* Unmasking changes the table: the failed ioctl leaves the old state. */
        CHECK(vm_irq_msi_route(irq, 24, 0xfee00000, 0x41, false, &err) < 0 && strstr(err->msg, "KVM_SET_GSI_ROUTING"));
        CHECK(!irq->msi[24].installed);
        cap_error_free(&err);
        CHECK(vm_irq_msi_route(irq, 23, 0xfee00000, 0x41, true, &err) < 0);
        cap_error_free(&err);
        CHECK(vm_irq_msi_route(irq, 27, 0xfee00000, 0x41, true, &err) < 0);
        vm_irq_destroy(irq);
        free(irq);
}

TEST(gsi_limit_below_ioapic_refused)
{
        cleanup_error cap_error_t err = NULL;
        struct vm_irq *irq = xmalloc0(sizeof(*irq));
        CHECK(vm_irq_init(irq, -1, 0, &err) < 0 && strstr(err->msg, "KVM_CAP_IRQ_ROUTING"));
        vm_irq_destroy(irq);
        free(irq);
}

TEST(cmdline_devices_come_first)
{
        cleanup_free char *devices = NULL;
        cmdline_append(&devices, "virtio_mmio.device=4K@0xc0000000:5");
        cmdline_append(&devices, "virtio_mmio.device=4K@0xc0001000:6");
        CHECK_STR(devices, "virtio_mmio.device=4K@0xc0000000:5 virtio_mmio.device=4K@0xc0001000:6");
        cleanup_free char *line = cmdline_compose(devices, "console=ttyS0 -- init-arg");
        /* Whatever follows " -- " goes to init: the user's part must stay last. */
        CHECK_STR(line, "virtio_mmio.device=4K@0xc0000000:5 virtio_mmio.device=4K@0xc0001000:6 console=ttyS0 -- init-arg");
}

TEST(cmdline_empty_parts)
{
        cleanup_free char *a = cmdline_compose(NULL, NULL);
        cleanup_free char *b = cmdline_compose("", "quiet");
        cleanup_free char *c = cmdline_compose("virtio_mmio.device=4K@0xc0000000:5", "");
        CHECK_STR(a, "");
        CHECK_STR(b, "quiet");
        CHECK_STR(c, "virtio_mmio.device=4K@0xc0000000:5");
}
