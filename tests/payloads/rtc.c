/* Reads the CMOS clock (0x70/0x71), prints it as "rtc YYYY-MM-DD HH:MM:SS"
 * and exits 0 if every field is in range, 1 otherwise. */
#include "payload.h"

static uint8_t cmos_read(uint8_t reg)
{
        outb(0x70, reg);
        return inb(0x71);
}

static void put2(unsigned v)
{
        putc_serial((char)('0' + v / 10 % 10));
        putc_serial((char)('0' + v % 10));
}

int payload_main(uint64_t index, uint64_t ncpus)
{
        (void)index;
        (void)ncpus;
        /* Wait for the end of an update cycle (status A bit 7), bounded. */
        for (int i = 0; i < 1000000 && (cmos_read(0x0a) & 0x80); i++)
                cpu_relax();
        unsigned sec = cmos_read(0x00), min = cmos_read(0x02), hour = cmos_read(0x04);
        unsigned day = cmos_read(0x07), month = cmos_read(0x08), year = cmos_read(0x09);
        uint8_t status_b = cmos_read(0x0b);
        if (!(status_b & 0x04)) { /* BCD */
#define BCD(x) (((x) >> 4) * 10 + ((x) & 0xf))
                sec = BCD(sec);
                min = BCD(min);
                hour = BCD(hour & 0x7f) | (hour & 0x80);
                day = BCD(day);
                month = BCD(month);
                year = BCD(year);
        }
        if (!(status_b & 0x02) && (hour & 0x80)) /* 12-hour clock, PM */
                hour = (hour & 0x7f) % 12 + 12;
        else if (!(status_b & 0x02))
                hour = (hour & 0x7f) % 12;
        puts_serial("rtc 20");
        put2(year);
        putc_serial('-');
        put2(month);
        putc_serial('-');
        put2(day);
        putc_serial(' ');
        put2(hour);
        putc_serial(':');
        put2(min);
        putc_serial(':');
        put2(sec);
        putc_serial('\n');
        return sec < 60 && min < 60 && hour < 24 && day >= 1 && day <= 31 && month >= 1 && month <= 12 && year <= 99 ? 0 : 1;
}
