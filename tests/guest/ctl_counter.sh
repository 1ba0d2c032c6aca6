#!/bin/sh
# Guest side of tests/testbed/test_vm_control.py (guest_action=script:ctl_counter): a counter on
# the console every 100 ms, forever, so the host sees the vCPUs' progress stop and resume. It
# ignores the power button (no one listens for it), so `vm ctl stop` must end it the hard way.
i=0
while :; do
        echo "tick $i"
        i=$((i + 1))
        usleep 100000
done
