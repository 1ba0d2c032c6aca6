/* config.json and process.json (exec -p) come from whoever wrote the bundle:
 * spec_parse() and spec_parse_process() must reject anything malformed with an
 * error, never crash or leak. The mounts' options go through
 * mount_options_parse() too, as rootfs_setup() would do with them. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/rootfs.h"
#include "runtime/spec.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void parse_mounts(const struct spec *spec)
{
        for (size_t i = 0; i < spec->n_mounts; i++) {
                cap_error_t err = NULL;
                struct mount_options mo;

                if (mount_options_parse(spec->mounts[i].options, &mo, &err) == 0)
                        mount_options_free(&mo);
                cap_error_free(&err);
        }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        /* The parsers take NUL-terminated text, as read_file() returns it. */
        char *text = malloc(size + 1);
        struct spec *spec = NULL;
        struct spec_process *process = NULL;
        cap_error_t err = NULL;

        if (text == NULL)
                return 0;
        memcpy(text, data, size);
        text[size] = '\0';

        if (spec_parse(text, "config.json", &spec, &err) == 0) {
                parse_mounts(spec);
                spec_free(spec);
        } else if (err == NULL) {
                abort(); /* a failure must say why */
        }
        cap_error_free(&err);

        if (spec_parse_process(text, "process.json", &process, &err) == 0)
                spec_process_free(process);
        else if (err == NULL)
                abort();
        cap_error_free(&err);

        free(text);
        return 0;
}
