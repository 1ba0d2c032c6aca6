/* Shared between spec.c (top level, mounts, hooks, freeing, the default config), spec_json.c
 * (reading JSON values with the field path in errors), spec_process.c and spec_linux.c.
 * Not part of the public contract. */
#ifndef CAPSULE_RUNTIME_SPEC_INTERNAL_H
#define CAPSULE_RUNTIME_SPEC_INTERNAL_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "runtime/spec.h"

struct pctx {
        const char *origin;
        cap_error_t *err;
};

/* spec_json.c */
__attribute__((format(printf, 3, 4))) int pfail(struct pctx *c, const char *path, const char *fmt, ...);
char *path_field(const char *parent, const char *key);
char *path_index(const char *parent, size_t i);
json_t *member(json_t *obj, const char *key);
int absent(struct pctx *c, const char *path, bool required);
int conv_u64(struct pctx *c, json_t *v, const char *path, uint64_t max, uint64_t *out);
int conv_strv(struct pctx *c, json_t *v, const char *path, bool non_empty, char ***out);
int get_str(struct pctx *c, json_t *obj, const char *parent, const char *key, bool required, char **out);
int get_abs_path(struct pctx *c, json_t *obj, const char *parent, const char *key, bool required, char **out);
int get_bool(struct pctx *c, json_t *obj, const char *parent, const char *key, bool required, bool *out, bool *set);
int get_opt_bool(struct pctx *c, json_t *obj, const char *parent, const char *key, opt_bool *out);
int get_u64(struct pctx *c, json_t *obj, const char *parent, const char *key, bool required, uint64_t max,
            uint64_t *out, bool *set);
int get_u32(struct pctx *c, json_t *obj, const char *parent, const char *key, bool required, uint32_t *out);
int get_opt_u64(struct pctx *c, json_t *obj, const char *parent, const char *key, uint64_t max, opt_u64 *out);
int get_i64(struct pctx *c, json_t *obj, const char *parent, const char *key, bool required, int64_t min,
            int64_t max, int64_t *out, bool *set);
int get_opt_i64(struct pctx *c, json_t *obj, const char *parent, const char *key, opt_i64 *out);
int get_strv(struct pctx *c, json_t *obj, const char *parent, const char *key, char ***out);
int get_map(struct pctx *c, json_t *obj, const char *parent, const char *key, char ***out);
int get_object(struct pctx *c, json_t *obj, const char *parent, const char *key, bool required, json_t **out);
int get_array(struct pctx *c, json_t *obj, const char *parent, const char *key, json_t **out);
int array_object(struct pctx *c, json_t *arr, const char *path, size_t i, json_t **elem, char **elem_path);
int name_lookup(const char *const *names, size_t n, const char *name);
json_t *load_json(struct pctx *c, const char *text);

/* spec_process.c */
int parse_process(struct pctx *c, json_t *obj, const char *path, struct spec_process *p);

/* spec_linux.c */
int parse_linux(struct pctx *c, json_t *root, struct spec_linux *l);

#endif
