#!/bin/sh
# Guest side of bench/virtio_io.sh's virtio-blk rows: fio on /dev/vda, RUNS times
# (args: RUNS SECONDS), each run one fio process with three jobs one after the other:
# sequential read and write in 1 MiB blocks (queue depth 4) and 4 KiB random reads at
# queue depth 32, all O_DIRECT through io_uring, time-based. Prints one line per job:
#   bench: blk JOB RUN bw_kib=N iops=N
runs=$1 secs=$2
[ -b /dev/vda ] || { echo "bench: blk error: no /dev/vda (no virtio-blk disk)"; exit 1; }
# How the driver set the disk up, for comparing the two VMMs' devices in the logs.
q=/sys/block/vda/queue
echo "bench: vda max_sectors_kb=$(cat $q/max_sectors_kb) max_segments=$(cat $q/max_segments)" \
        "queues=$(ls /sys/block/vda/mq | wc -l) irqs: $(grep virtio /proc/interrupts | awk '{ print $(NF-1), $NF }' | tr '\n' ' ')" \
        "clocksource=$(cat /sys/devices/system/clocksource/clocksource0/current_clocksource)"
cat >/tmp/bench.fio <<JOBS
[global]
filename=/dev/vda
direct=1
ioengine=io_uring
thread
time_based
runtime=$secs
ramp_time=1
[seqread]
rw=read
bs=1M
iodepth=4
[seqwrite]
stonewall
rw=write
bs=1M
iodepth=4
[randread]
stonewall
rw=randread
bs=4k
iodepth=32
JOBS
run=1
while [ "$run" -le "$runs" ]; do
        # Terse v3: field 3 is the job, 7/8 read KiB/s and IOPS, 48/49 write KiB/s and IOPS.
        fio --output-format=terse --terse-version=3 /tmp/bench.fio >/tmp/fio.out 2>/tmp/fio.err ||
                { echo "bench: blk error: fio failed: $(head -n 3 /tmp/fio.err | tr '\n' ' ')"; exit 1; }
        awk -F';' -v run="$run" '$1 == 3 {
                if ($3 == "seqwrite") { bw = $48; iops = $49 } else { bw = $7; iops = $8 }
                printf "bench: blk %s %d bw_kib=%d iops=%d\n", $3, run, bw, iops }' /tmp/fio.out
        run=$((run + 1))
done
