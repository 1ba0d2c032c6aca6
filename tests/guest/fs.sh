# virtio-fs from the guest (tests/testbed/test_virtio_fs.py). For each TAG given: mount it
# on /mnt/TAG, list it, read the host's hello.txt, write from-guest.txt; then say
# "guest: mounted" and wait (bounded) for late.txt, which the host creates only after
# that line: a host-side change seen by the running guest. Lines "guest: TAG key=value".
status=0
for tag in "$@"; do
        mkdir -p "/mnt/$tag"
        if ! mount -t virtiofs "$tag" "/mnt/$tag"; then
                echo "guest: $tag mount=failed"
                status=1
                continue
        fi
        echo "guest: $tag mount=ok"
        echo "guest: $tag ls=$(ls "/mnt/$tag" | tr '\n' ' ')"
        echo "guest: $tag read=$(cat "/mnt/$tag/hello.txt")"
        echo "written by the guest into $tag" >"/mnt/$tag/from-guest.txt" || status=1
        sync
done
echo "guest: mounted"
for tag in "$@"; do
        i=0
        while [ ! -e "/mnt/$tag/late.txt" ] && [ $i -lt 1200 ]; do
                sleep 0.1
                i=$((i + 1))
        done
        echo "guest: $tag late=$(cat "/mnt/$tag/late.txt" 2>&1)"
        umount "/mnt/$tag" || status=1
done
exit $status
