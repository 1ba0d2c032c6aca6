/* The ACPI PM device's fixed power button, pressed from the host (the control channel's stop). */
#ifndef CAPSULE_VMM_DEVICES_ACPI_PM_H
#define CAPSULE_VMM_DEVICES_ACPI_PM_H

/* Set PWRBTN_STS; the SCI is raised while the guest has PWRBTN_EN set, until it clears the status. */
void acpi_pm_power_button(void);

#endif
