# virtio-fs whose back-end dies (tests/testbed/test_virtio_fs.py): mount TAG, say
# "guest: mounted", after which the host kills virtiofsd; then the file system must fail
# (an error, not a hang) while the rest of the guest goes on. A hung operation is reported,
# and the script still ends, so the guest powers off either way.
tag=$1
mkdir -p /mnt/fs
mount -t virtiofs "$tag" /mnt/fs || exit 10
echo "guest: ls=$(ls /mnt/fs | tr '\n' ' ')"
echo "guest: mounted"
(
        i=0
        while [ $i -lt 600 ]; do
                if ! error=$(ls /mnt/fs 2>&1 >/dev/null); then
                        echo "guest: error=$error"
                        # Every later operation fails the same way, none hangs.
                        cat /mnt/fs/hello.txt >/dev/null 2>&1 && echo "guest: read after the error worked"
                        echo "guest: second error=$(cat /mnt/fs/hello.txt 2>&1 >/dev/null)"
                        exit 0
                fi
                sleep 0.1
                i=$((i + 1))
        done
        echo "guest: no error"
) &
watcher=$!
i=0
while kill -0 $watcher 2>/dev/null && [ $i -lt 900 ]; do
        sleep 0.1
        i=$((i + 1))
done
kill -0 $watcher 2>/dev/null && echo "guest: a file system operation hangs"
echo "guest: still running, $(echo alive)"
exit 0
