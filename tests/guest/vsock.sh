# Guest side of tests/testbed/test_virtio_vsock.py (run by /init as guest_action=script:vsock,
# guest_args=BIG): serves echo (port 1234) and sink (port 1235) for the host's CONNECTs, runs
# the guest → host checks against the host's echo (<socket>_5000) and sink (<socket>_5001),
# then waits until the host says it is done (a connection to port 1236).
big=${1:-67108864}
vsock listen 1234 || exit 1
vsock sink 1235 || exit 1
echo "guest: vsock ready"
echo "guest: vsock g2h echo $(vsock echo 2 5000 100000 1)"
echo "guest: vsock g2h many $(vsock many 2 5000 32 65536)"
echo "guest: vsock g2h big $(vsock send 2 5001 "$big" 3)"
echo "guest: vsock g2h refused $(vsock echo 2 5999 10 1)"
vsock wait 1236
echo "guest: vsock host done"
# Last: bytes the host reads slowly, then the guest powers off at once (the script ends): the
# VMM must still hand them over.
echo "guest: vsock g2h last $(vsock push 2 5002 4194304 13)"
