/* The options of a config.json mount: mount flags, propagation, and the data string. */
#include "runtime/rootfs_internal.h"

#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/sysmacros.h>

#include "common/util.h"

struct flag_option {
        const char *name;
        bool clear;
        unsigned long flag;
};

static const struct flag_option flag_options[] = {
        { "defaults", false, 0 },
        { "ro", false, MS_RDONLY },
        { "rw", true, MS_RDONLY },
        { "suid", true, MS_NOSUID },
        { "nosuid", false, MS_NOSUID },
        { "dev", true, MS_NODEV },
        { "nodev", false, MS_NODEV },
        { "exec", true, MS_NOEXEC },
        { "noexec", false, MS_NOEXEC },
        { "sync", false, MS_SYNCHRONOUS },
        { "async", true, MS_SYNCHRONOUS },
        { "dirsync", false, MS_DIRSYNC },
        { "remount", false, MS_REMOUNT },
        { "mand", false, MS_MANDLOCK },
        { "nomand", true, MS_MANDLOCK },
        { "atime", true, MS_NOATIME },
        { "noatime", false, MS_NOATIME },
        { "diratime", true, MS_NODIRATIME },
        { "nodiratime", false, MS_NODIRATIME },
        { "relatime", false, MS_RELATIME },
        { "norelatime", true, MS_RELATIME },
        { "strictatime", false, MS_STRICTATIME },
        { "nostrictatime", true, MS_STRICTATIME },
};

struct propagation_option {
        const char *name;
        unsigned long flags;
};

static const struct propagation_option propagation_options[] = {
        { "private", MS_PRIVATE },
        { "rprivate", MS_PRIVATE | MS_REC },
        { "shared", MS_SHARED },
        { "rshared", MS_SHARED | MS_REC },
        { "slave", MS_SLAVE },
        { "rslave", MS_SLAVE | MS_REC },
        { "unbindable", MS_UNBINDABLE },
        { "runbindable", MS_UNBINDABLE | MS_REC },
};

unsigned long propagation_lookup(const char *name)
{
        for (size_t i = 0; i < ARRAY_SIZE(propagation_options); i++)
                if (strcmp(name, propagation_options[i].name) == 0)
                        return propagation_options[i].flags;
        return 0;
}

int mount_options_parse(char *const *options, struct mount_options *out, cap_error_t *err)
{
        struct mount_options mo = { 0 };
        size_t data_len = 0;

        for (size_t i = 0; options && options[i]; i++) {
                const char *opt = options[i];
                bool known = false;

                if (*opt == '\0')
                        continue;
                for (size_t j = 0; j < ARRAY_SIZE(flag_options); j++) {
                        if (strcmp(opt, flag_options[j].name) != 0)
                                continue;
                        if (flag_options[j].clear) {
                                mo.flags &= ~flag_options[j].flag;
                                mo.clear |= flag_options[j].flag;
                        } else {
                                mo.flags |= flag_options[j].flag;
                                mo.clear &= ~flag_options[j].flag;
                        }
                        known = true;
                        break;
                }
                if (known)
                        continue;
                unsigned long prop = propagation_lookup(opt);
                if (prop) {
                        mo.propagation = prop;
                } else if (strcmp(opt, "bind") == 0) {
                        mo.bind = true;
                        mo.flags |= MS_BIND;
                } else if (strcmp(opt, "rbind") == 0) {
                        mo.rbind = true;
                        mo.flags |= MS_BIND | MS_REC;
                } else if (strcmp(opt, "rro") == 0) {
                        mo.recursive_ro = true;
                } else if (strcmp(opt, "tmpcopyup") == 0) {
                        /* Handled by the tmpfs mount itself (rootfs_setup). */
                } else if (strcmp(opt, "idmap") == 0 || strcmp(opt, "ridmap") == 0 ||
                           str_has_prefix(opt, "idmap=") || str_has_prefix(opt, "ridmap=")) {
                        free(mo.data);
                        return cap_fail(err, EOPNOTSUPP, "mount option `%s`: idmapped mounts are not supported", opt);
                } else {
                        size_t len = strlen(opt);
                        char *nd = realloc(mo.data, data_len + len + 2);
                        if (!nd)
                                abort();
                        mo.data = nd;
                        if (data_len)
                                mo.data[data_len++] = ',';
                        memcpy(mo.data + data_len, opt, len + 1);
                        data_len += len;
                }
        }
        *out = mo;
        return 0;
}

void mount_options_free(struct mount_options *mo)
{
        free(mo->data);
        mo->data = NULL;
}
