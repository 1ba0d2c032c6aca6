/* MC146818 RTC and CMOS RAM at 0x70/0x71. The clock registers always show the
 * host's UTC time, converted at each read to the format register B asks for
 * (BCD or binary, 24 or 12 hour); the guest cannot set the host clock, so
 * writes to them are ignored. No RTC interrupts are generated. */
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>
#include <time.h>

#include "common/error.h"
#include "vmm/device.h"
#include "vmm/memory.h"
#include "vmm/x86/layout.h"

#define CMOS_SIZE 128
/* Bit 7 of the index gates NMIs on a PC; nothing here raises NMIs, so it is only masked off. */
#define INDEX_MASK 0x7f

#define REG_SECONDS 0x00
#define REG_MINUTES 0x02
#define REG_HOURS 0x04
#define REG_WEEKDAY 0x06
#define REG_DAY 0x07
#define REG_MONTH 0x08
#define REG_YEAR 0x09
#define REG_A 0x0a
#define REG_B 0x0b
#define REG_C 0x0c
#define REG_D 0x0d
#define REG_CENTURY 0x32

#define REG_A_UIP 0x80
#define REG_A_DEFAULT 0x26 /* 32.768 kHz time base, 1024 Hz periodic rate */
#define REG_B_DM 0x04      /* binary instead of BCD */
#define REG_B_24H 0x02
#define REG_D_VRT 0x80     /* the battery is fine */
#define HOUR_PM 0x80

/* Memory size registers, as SeaBIOS and the PC BIOS fill them. */
#define REG_BASE_MEM_LO 0x15 /* KiB below 1 MiB */
#define REG_BASE_MEM_HI 0x16
#define REG_EXT_MEM_LO 0x17  /* KiB from 1 MiB to 64 MiB */
#define REG_EXT_MEM_HI 0x18
#define REG_EXT_MEM2_LO 0x30
#define REG_EXT_MEM2_HI 0x31
#define REG_MEM_16M_LO 0x34  /* 64 KiB units from 16 MiB to the PCI hole */
#define REG_MEM_16M_HI 0x35
#define REG_MEM_4G_0 0x5b    /* 64 KiB units above 4 GiB, 3 bytes */
#define REG_MEM_4G_1 0x5c
#define REG_MEM_4G_2 0x5d

struct rtc {
        pthread_mutex_t lock;
        uint8_t index;
        uint8_t cmos[CMOS_SIZE];
};

static struct rtc rtc = { .lock = PTHREAD_MUTEX_INITIALIZER };

static bool rtc_is_clock(uint8_t index)
{
        switch (index) {
        case REG_SECONDS:
        case REG_MINUTES:
        case REG_HOURS:
        case REG_WEEKDAY:
        case REG_DAY:
        case REG_MONTH:
        case REG_YEAR:
        case REG_CENTURY:
                return true;
        default:
                return false;
        }
}

static uint8_t rtc_encode(const struct rtc *r, unsigned int v)
{
        if (r->cmos[REG_B] & REG_B_DM)
                return (uint8_t)v;
        return (uint8_t)(((v / 10) % 10) << 4 | (v % 10));
}

static uint8_t rtc_read_clock(const struct rtc *r, uint8_t index)
{
        struct tm tm;
        time_t now = time(NULL);
        gmtime_r(&now, &tm);
        switch (index) {
        case REG_SECONDS:
                return rtc_encode(r, (unsigned int)tm.tm_sec);
        case REG_MINUTES:
                return rtc_encode(r, (unsigned int)tm.tm_min);
        case REG_HOURS:
                if (r->cmos[REG_B] & REG_B_24H)
                        return rtc_encode(r, (unsigned int)tm.tm_hour);
                /* 12-hour mode: 12, 1..11 with bit 7 for PM, in either format. */
                return (uint8_t)(rtc_encode(r, tm.tm_hour % 12 ? (unsigned int)tm.tm_hour % 12 : 12) |
                                 (tm.tm_hour >= 12 ? HOUR_PM : 0));
        case REG_WEEKDAY:
                return rtc_encode(r, (unsigned int)tm.tm_wday + 1); /* 1 = Sunday */
        case REG_DAY:
                return rtc_encode(r, (unsigned int)tm.tm_mday);
        case REG_MONTH:
                return rtc_encode(r, (unsigned int)tm.tm_mon + 1);
        case REG_YEAR:
                return rtc_encode(r, (unsigned int)(tm.tm_year + 1900) % 100);
        default: /* REG_CENTURY */
                return rtc_encode(r, (unsigned int)(tm.tm_year + 1900) / 100);
        }
}

static uint8_t rtc_read(struct rtc *r)
{
        uint8_t index = r->index;
        if (rtc_is_clock(index))
                return rtc_read_clock(r, index);
        switch (index) {
        case REG_A:
                /* UIP reads 0: each read converts the host time at once, no update is ever in progress. */
                return r->cmos[REG_A] & (uint8_t)~REG_A_UIP;
        case REG_C: {
                uint8_t v = r->cmos[REG_C];
                r->cmos[REG_C] = 0; /* read to clear */
                return v;
        }
        case REG_D:
                return REG_D_VRT;
        default:
                return r->cmos[index];
        }
}

static void rtc_write(struct rtc *r, uint8_t v)
{
        uint8_t index = r->index;
        if (rtc_is_clock(index))
                return;
        switch (index) {
        case REG_A:
                r->cmos[REG_A] = v & (uint8_t)~REG_A_UIP;
                break;
        case REG_C:
        case REG_D:
                break; /* read-only */
        default:
                r->cmos[index] = v;
                break;
        }
}

static void rtc_io(void *opaque, uint64_t offset, uint8_t *data, uint32_t len, bool is_write)
{
        struct rtc *r = opaque;
        pthread_mutex_lock(&r->lock);
        for (uint32_t i = 0; i < len; i++) {
                if (offset + i == 0) {
                        if (is_write)
                                r->index = data[i] & INDEX_MASK;
                        else
                                data[i] = 0xff; /* the index port is write-only */
                } else if (offset + i == 1) {
                        if (is_write)
                                rtc_write(r, data[i]);
                        else
                                data[i] = rtc_read(r);
                } else if (!is_write) {
                        data[i] = 0xff;
                }
        }
        pthread_mutex_unlock(&r->lock);
}

static void rtc_set_memory_size(struct rtc *r, const struct guest_mem *mem)
{
        const uint64_t kib = 1024, mib = 1024 * kib;
        uint64_t low = guest_mem_low_end(mem);
        uint64_t high = mem->size > low ? mem->size - low : 0;
        uint64_t ext = low > mib ? (low - mib) / kib : 0;
        if (ext > 0xfc00)
                ext = 0xfc00; /* 63 MiB: the 16-bit field's historical maximum */
        uint64_t above16m = low > 16 * mib ? (low - 16 * mib) / (64 * kib) : 0;
        if (above16m > 0xffff)
                above16m = 0xffff;
        uint64_t above4g = high / (64 * kib);
        if (above4g > 0xffffff)
                above4g = 0xffffff;

        r->cmos[REG_BASE_MEM_LO] = 640 & 0xff;
        r->cmos[REG_BASE_MEM_HI] = 640 >> 8;
        r->cmos[REG_EXT_MEM_LO] = r->cmos[REG_EXT_MEM2_LO] = (uint8_t)ext;
        r->cmos[REG_EXT_MEM_HI] = r->cmos[REG_EXT_MEM2_HI] = (uint8_t)(ext >> 8);
        r->cmos[REG_MEM_16M_LO] = (uint8_t)above16m;
        r->cmos[REG_MEM_16M_HI] = (uint8_t)(above16m >> 8);
        r->cmos[REG_MEM_4G_0] = (uint8_t)above4g;
        r->cmos[REG_MEM_4G_1] = (uint8_t)(above4g >> 8);
        r->cmos[REG_MEM_4G_2] = (uint8_t)(above4g >> 16);
}

static int rtc_init(struct vm_devices *ctx, cap_error_t *err)
{
        struct rtc *r = &rtc;
        pthread_mutex_lock(&r->lock);
        memset(r->cmos, 0, sizeof(r->cmos));
        r->index = 0;
        r->cmos[REG_A] = REG_A_DEFAULT;
        r->cmos[REG_B] = REG_B_24H;
        if (ctx->mem)
                rtc_set_memory_size(r, ctx->mem);
        pthread_mutex_unlock(&r->lock);
        return bus_register(ctx->pio, PORT_RTC, 2, rtc_io, r, "rtc", err);
}

DEVICE_REGISTER(rtc, DEVICE_ORDER_PLATFORM, .name = "rtc", .init = rtc_init)
