/* The guest kernel's command line: the user's, plus what devices announce on it
 * (virtio_mmio.device=<size>@<addr>:<gsi>). */
#ifndef CAPSULE_VMM_CMDLINE_H
#define CAPSULE_VMM_CMDLINE_H

/* Append text to *line (NULL: empty), separated by one space. */
void cmdline_append(char **line, const char *text);
/* The whole command line (never NULL, caller frees): the devices' parameters first,
 * so that the user's " -- args for init", which must stay last, still is. */
char *cmdline_compose(const char *devices, const char *user);

#endif
