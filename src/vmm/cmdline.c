#include "vmm/cmdline.h"

#include <stdlib.h>

#include "common/util.h"

void cmdline_append(char **line, const char *text)
{
        char *joined = *line && **line ? xasprintf("%s %s", *line, text) : xstrdup(text);
        free(*line);
        *line = joined;
}

char *cmdline_compose(const char *devices, const char *user)
{
        char *line = NULL;
        if (devices && *devices)
                cmdline_append(&line, devices);
        if (user && *user)
                cmdline_append(&line, user);
        return line ? line : xstrdup("");
}
