#!/bin/sh
# Guest side of tests/testbed/test_vm_control.py (guest_action=script:ctl_powerbtn): powerbtn
# waits for the ACPI power button and powers the guest off.
exec powerbtn
