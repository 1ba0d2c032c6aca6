/* OCI mount options (config.json "mounts[].options") through mount_options_parse().
 * The input is the options list, one option per line. Besides not crashing, the
 * result must be consistent: a flag is never both set and cleared, and the data
 * string (the unrecognised options, comma-joined) is never empty and never longer
 * than the options it came from. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/rootfs.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Split on '\n' into a NULL-terminated vector; empty lines stay (as empty options). */
static char **split_lines(const uint8_t *data, size_t size)
{
        size_t n = 1;
        for (size_t i = 0; i < size; i++)
                n += data[i] == '\n';
        char **v = calloc(n + 1, sizeof(char *));
        if (v == NULL)
                return NULL;
        size_t start = 0, k = 0;
        for (size_t i = 0; i <= size; i++) {
                if (i < size && data[i] != '\n')
                        continue;
                v[k] = strndup((const char *)data + start, i - start);
                if (v[k] == NULL)
                        abort();
                k++;
                start = i + 1;
        }
        return v;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        char **options = split_lines(data, size);
        struct mount_options mo;
        cap_error_t err = NULL;

        if (options == NULL)
                return 0;
        if (mount_options_parse(options, &mo, &err) == 0) {
                if (mo.flags & mo.clear)
                        abort();
                if (mo.data != NULL && (mo.data[0] == '\0' || strlen(mo.data) > size))
                        abort();
                mount_options_free(&mo);
        } else if (err == NULL) {
                abort();
        }
        cap_error_free(&err);
        for (size_t i = 0; options[i]; i++)
                free(options[i]);
        free(options);
        return 0;
}
