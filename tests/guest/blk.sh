#!/bin/sh
# virtio-blk in the guest, for tests/testbed/test_virtio_blk.py, which gives four disks:
#   vda  ext2: files written, synced, read back after a remount
#   vdb  read-only, with a pattern the host wrote at 1 MiB
#   vdc  raw: parallel dd jobs with O_DIRECT, discard, write-zeroes
#   vdd  the host opens it with O_DIRECT: aligned and unaligned guest buffers
# Every result is a "guest: key=value" line; the host checks them and the images.
say() { echo "guest: $*"; }
md5() { md5sum | cut -c1-32; }

mkdir -p /mnt /tmp
# The kernel's messages (a read-only disk's failed rw mount) share the console with our lines and
# can land inside one: they stay in dmesg only.
dmesg -n 1
for d in /sys/block/vd*; do
        n=${d##*/}
        q=$d/queue
        say "disk_$n=size:$(cat "$d/size") ro:$(cat "$d/ro") serial:$(cat "$d/serial") queues:$(ls "$d/mq" | wc -l)" \
                "lbs:$(cat $q/logical_block_size) cache:$(cat $q/write_cache | tr ' ' _)" \
                "discard:$(cat $q/discard_max_bytes) zeroes:$(cat $q/write_zeroes_max_bytes)"
done

# vda: a file system, a small file and a 4 MiB one, fsync (a flush), remount, read back.
mke2fs -L capsule /dev/vda >/dev/null 2>&1 || say "vda_mke2fs=failed"
if mount -t ext2 /dev/vda /mnt; then
        echo "hello from the guest on vda" >/mnt/hello.txt
        dd if=/dev/urandom of=/mnt/big bs=64k count=64 2>/dev/null
        say "vda_big_md5=$(md5 </mnt/big)"
        sync /mnt/big /mnt/hello.txt
        umount /mnt
        echo 3 >/proc/sys/vm/drop_caches
        mount -t ext2 -o ro /dev/vda /mnt
        say "vda_hello=$(cat /mnt/hello.txt)"
        say "vda_big_md5_reread=$(md5 </mnt/big)"
        umount /mnt
else
        say "vda_mount=failed"
fi
# /sys/block/*/stat: field 16 counts flushes, field 12 discards.
say "vda_flushes=$(awk '{ print $16 }' /sys/block/vda/stat)"

# vdb: an ext2 image from the host, read-only: its file reads back, and every way
# of writing fails.
mount -t ext2 /dev/vdb /mnt 2>/tmp/err || say "vdb_mount=failed $(tr '\n' ' ' </tmp/err)"
say "vdb_mount=$(awk '$1 == "/dev/vdb" { print $4 }' /proc/mounts | cut -d, -f1)"
say "vdb_pattern=$(cat /mnt/pattern.txt)"
if (echo x >/mnt/new) 2>/tmp/err; then say "vdb_create=succeeded"; else say "vdb_create=failed $(cat /tmp/err)"; fi
umount /mnt
if dd if=/dev/zero of=/dev/vdb bs=512 count=1 conv=fsync 2>/tmp/err; then
        say "vdb_write=succeeded"
else
        say "vdb_write=failed $(tr '\n' ' ' </tmp/err)"
fi

# vdc: eight dd jobs at once write 1 MiB each with O_DIRECT, then read it back in parallel.
for i in 0 1 2 3 4 5 6 7; do
        dd if=/dev/urandom of=/tmp/p$i bs=64k count=16 2>/dev/null
done
for i in 0 1 2 3 4 5 6 7; do
        (dd if=/tmp/p$i of=/dev/vdc bs=64k seek=$((i * 16)) oflag=direct conv=notrunc,fsync 2>/dev/null; echo $? >/tmp/w$i) &
done
wait
for i in 0 1 2 3 4 5 6 7; do
        (dd if=/dev/vdc bs=64k skip=$((i * 16)) count=16 iflag=direct 2>/dev/null | md5 >/tmp/r$i) &
done
wait
for i in 0 1 2 3 4 5 6 7; do
        say "vdc_job$i=$(md5 </tmp/p$i) $(cat /tmp/r$i) dd_exit:$(cat /tmp/w$i)"
done
# Discard MiB 4, zero the first half of MiB 6; read both back past the page cache.
blkdiscard -o $((4 << 20)) -l $((1 << 20)) /dev/vdc && say "vdc_discard=ok"
say "vdc_zeroout=$(blktool zeroout /dev/vdc $((6 << 20)) $((512 << 10)))"
say "vdc_mib4=$(dd if=/dev/vdc bs=64k skip=64 count=16 iflag=direct 2>/dev/null | md5)"
say "vdc_mib6=$(dd if=/dev/vdc bs=64k skip=96 count=8 iflag=direct 2>/dev/null | md5)"
say "vdc_discards=$(awk '{ print $12 }' /sys/block/vdc/stat)"

# vdd: O_DIRECT from an aligned buffer and from one 512 bytes off a page.
say "vdd_aligned=$(blktool direct /dev/vdd 0 65536 0 0x5a)"
say "vdd_unaligned=$(blktool direct /dev/vdd 65536 65536 512 0xa5)"
printf 'through the guest page cache' | dd of=/dev/vdd bs=512 seek=256 conv=notrunc,sync,fsync 2>/dev/null
say "vdd_buffered=$?"
say "zeros_1m=$(dd if=/dev/zero bs=64k count=16 2>/dev/null | md5)"
say "zeros_512k=$(dd if=/dev/zero bs=64k count=8 2>/dev/null | md5)"
