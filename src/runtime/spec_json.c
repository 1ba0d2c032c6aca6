/* Reading config.json values: conversions and member getters that name the field path on failure. */
#include "runtime/spec_internal.h"

#include <stdarg.h>
#include <string.h>

#include "common/util.h"

/* jansson keeps integers as long long, so values above INT64_MAX (RLIM_INFINITY,
 * seccomp masks) would not parse. They are rewritten into strings starting with
 * this character before parsing, and conv_u64() reads them back. */
#define BIG_INT_MARK '\x01'

/* "origin: path: message" (or "origin: message" at the top level). */
__attribute__((format(printf, 3, 4))) int pfail(struct pctx *c, const char *path, const char *fmt, ...)
{
        va_list ap;

        if (*c->err)
                return -1;
        va_start(ap, fmt);
        cap_failv(c->err, 0, fmt, ap);
        va_end(ap);
        if (*path)
                cap_error_prefix(c->err, "%s", path);
        return cap_error_prefix(c->err, "%s", c->origin);
}

char *path_field(const char *parent, const char *key)
{
        return *parent ? xasprintf("%s.%s", parent, key) : xstrdup(key);
}

char *path_index(const char *parent, size_t i)
{
        return xasprintf("%s[%zu]", parent, i);
}

/* JSON null counts as absent, as Go's encoding/json treats it. */
json_t *member(json_t *obj, const char *key)
{
        json_t *v = json_object_get(obj, key);
        return json_is_null(v) ? NULL : v;
}

static bool is_big_integer(const char *p, size_t n)
{
        if (p[0] == '0')
                return false;
        if (n == 19)
                return strncmp(p, "9223372036854775807", 19) > 0;
        return n == 20 && strncmp(p, "18446744073709551615", 20) <= 0;
}

/* Rewrite bare integers in (INT64_MAX, UINT64_MAX] as "\u0001<digits>" strings. */
static char *quote_big_integers(const char *text)
{
        size_t len = strlen(text);
        /* A rewritten number has at least 19 digits and grows by 8 characters. */
        char *out = xmalloc0(len + len / 2 + 16);
        char *o = out;
        bool in_string = false;

        for (const char *p = text; *p;) {
                if (in_string) {
                        if (*p == '\\' && p[1]) {
                                *o++ = *p++;
                                *o++ = *p++;
                                continue;
                        }
                        if (*p == '"')
                                in_string = false;
                        *o++ = *p++;
                        continue;
                }
                if (*p == '"') {
                        in_string = true;
                        *o++ = *p++;
                        continue;
                }
                if (*p >= '0' && *p <= '9') {
                        size_t n = strspn(p, "0123456789");
                        bool whole = (p == text || !strchr("+-eE.", p[-1])) && (!p[n] || !strchr("eE.", p[n]));
                        if (whole && is_big_integer(p, n))
                                o += sprintf(o, "\"\\u%04x%.*s\"", BIG_INT_MARK, (int)n, p);
                        else
                                o = mempcpy(o, p, n);
                        p += n;
                        continue;
                }
                *o++ = *p++;
        }
        *o = '\0';
        return out;
}

/* ---- value conversions: each names the field path on failure ---- */

static int conv_str(struct pctx *c, json_t *v, const char *path, char **out)
{
        if (!json_is_string(v))
                return pfail(c, path, "must be a string");
        free(*out);
        *out = xstrdup(json_string_value(v));
        return 0;
}

int conv_u64(struct pctx *c, json_t *v, const char *path, uint64_t max, uint64_t *out)
{
        if (json_is_integer(v)) {
                json_int_t i = json_integer_value(v);
                if (i < 0 || (uint64_t)i > max)
                        return pfail(c, path, "value %lld out of range 0..%llu", (long long)i, (unsigned long long)max);
                *out = (uint64_t)i;
                return 0;
        }
        if (json_is_string(v) && json_string_value(v)[0] == BIG_INT_MARK) {
                unsigned long long u;
                const char *digits = json_string_value(v) + 1;
                if (parse_u64(digits, &u) < 0 || u > max)
                        return pfail(c, path, "value %s out of range 0..%llu", digits, (unsigned long long)max);
                *out = u;
                return 0;
        }
        return pfail(c, path, "must be an unsigned integer");
}

static int conv_i64(struct pctx *c, json_t *v, const char *path, int64_t min, int64_t max, int64_t *out)
{
        if (json_is_string(v) && json_string_value(v)[0] == BIG_INT_MARK)
                return pfail(c, path, "value %s out of range %lld..%lld", json_string_value(v) + 1, (long long)min,
                             (long long)max);
        if (!json_is_integer(v))
                return pfail(c, path, "must be an integer");
        json_int_t i = json_integer_value(v);
        if (i < min || i > max)
                return pfail(c, path, "value %lld out of range %lld..%lld", (long long)i, (long long)min, (long long)max);
        *out = i;
        return 0;
}

int conv_strv(struct pctx *c, json_t *v, const char *path, bool non_empty, char ***out)
{
        const char *what = non_empty ? "must be a non-empty array of strings" : "must be an array of strings";
        if (!json_is_array(v) || (non_empty && json_array_size(v) == 0))
                return pfail(c, path, "%s", what);
        size_t n = json_array_size(v);
        cleanup_strv char **strv = xmalloc0((n + 1) * sizeof(char *));
        for (size_t i = 0; i < n; i++) {
                json_t *s = json_array_get(v, i);
                if (!json_is_string(s)) {
                        cleanup_free char *p = path_index(path, i);
                        return pfail(c, p, "must be a string");
                }
                strv[i] = xstrdup(json_string_value(s));
        }
        cap_strvfreep(out);
        *out = steal_pointer(&strv);
        return 0;
}

/* An object of strings, flattened to key, value, ..., NULL. */
static int conv_map(struct pctx *c, json_t *v, const char *path, char ***out)
{
        if (!json_is_object(v))
                return pfail(c, path, "must be an object of strings");
        cleanup_strv char **strv = xmalloc0((2 * json_object_size(v) + 1) * sizeof(char *));
        const char *key;
        json_t *val;
        size_t n = 0;
        json_object_foreach(v, key, val) {
                if (!json_is_string(val)) {
                        cleanup_free char *p = xasprintf("%s[\"%s\"]", path, key);
                        return pfail(c, p, "must be a string");
                }
                strv[n++] = xstrdup(key);
                strv[n++] = xstrdup(json_string_value(val));
        }
        cap_strvfreep(out);
        *out = steal_pointer(&strv);
        return 0;
}

/* ---- member getters: absent (or null) members keep the default unless required ---- */

int absent(struct pctx *c, const char *path, bool required)
{
        return required ? pfail(c, path, "is required") : 0;
}

int get_str(struct pctx *c, json_t *obj, const char *parent, const char *key, bool required, char **out)
{
        cleanup_free char *path = path_field(parent, key);
        json_t *v = member(obj, key);
        if (!v)
                return absent(c, path, required);
        if (conv_str(c, v, path, out) < 0)
                return -1;
        if (required && !**out)
                return pfail(c, path, "must not be empty");
        return 0;
}

/* An absolute path, as the runtime-spec requires for most path fields. */
int get_abs_path(struct pctx *c, json_t *obj, const char *parent, const char *key, bool required, char **out)
{
        if (get_str(c, obj, parent, key, required, out) < 0)
                return -1;
        if (*out && (*out)[0] != '/') {
                cleanup_free char *path = path_field(parent, key);
                return pfail(c, path, "\"%s\" is not an absolute path", *out);
        }
        return 0;
}

int get_bool(struct pctx *c, json_t *obj, const char *parent, const char *key, bool required, bool *out, bool *set)
{
        cleanup_free char *path = path_field(parent, key);
        json_t *v = member(obj, key);
        if (!v)
                return absent(c, path, required);
        if (!json_is_boolean(v))
                return pfail(c, path, "must be a boolean");
        *out = json_is_true(v);
        if (set)
                *set = true;
        return 0;
}

int get_opt_bool(struct pctx *c, json_t *obj, const char *parent, const char *key, opt_bool *out)
{
        return get_bool(c, obj, parent, key, false, &out->v, &out->set);
}

int get_u64(struct pctx *c, json_t *obj, const char *parent, const char *key, bool required, uint64_t max,
                   uint64_t *out, bool *set)
{
        cleanup_free char *path = path_field(parent, key);
        json_t *v = member(obj, key);
        if (!v)
                return absent(c, path, required);
        if (conv_u64(c, v, path, max, out) < 0)
                return -1;
        if (set)
                *set = true;
        return 0;
}

int get_u32(struct pctx *c, json_t *obj, const char *parent, const char *key, bool required, uint32_t *out)
{
        uint64_t v = *out;
        if (get_u64(c, obj, parent, key, required, UINT32_MAX, &v, NULL) < 0)
                return -1;
        *out = (uint32_t)v;
        return 0;
}

int get_opt_u64(struct pctx *c, json_t *obj, const char *parent, const char *key, uint64_t max, opt_u64 *out)
{
        return get_u64(c, obj, parent, key, false, max, &out->v, &out->set);
}

int get_i64(struct pctx *c, json_t *obj, const char *parent, const char *key, bool required, int64_t min,
                   int64_t max, int64_t *out, bool *set)
{
        cleanup_free char *path = path_field(parent, key);
        json_t *v = member(obj, key);
        if (!v)
                return absent(c, path, required);
        if (conv_i64(c, v, path, min, max, out) < 0)
                return -1;
        if (set)
                *set = true;
        return 0;
}

int get_opt_i64(struct pctx *c, json_t *obj, const char *parent, const char *key, opt_i64 *out)
{
        return get_i64(c, obj, parent, key, false, INT64_MIN, INT64_MAX, &out->v, &out->set);
}

int get_strv(struct pctx *c, json_t *obj, const char *parent, const char *key, char ***out)
{
        cleanup_free char *path = path_field(parent, key);
        json_t *v = member(obj, key);
        return v ? conv_strv(c, v, path, false, out) : 0;
}

int get_map(struct pctx *c, json_t *obj, const char *parent, const char *key, char ***out)
{
        cleanup_free char *path = path_field(parent, key);
        json_t *v = member(obj, key);
        return v ? conv_map(c, v, path, out) : 0;
}

/* *out stays NULL when the member is absent. */
static int get_typed(struct pctx *c, json_t *obj, const char *parent, const char *key, bool required, json_type type,
                     json_t **out)
{
        cleanup_free char *path = path_field(parent, key);
        json_t *v = member(obj, key);
        *out = NULL;
        if (!v)
                return absent(c, path, required);
        if (json_typeof(v) != type)
                return pfail(c, path, "must be %s", type == JSON_OBJECT ? "an object" : "an array");
        *out = v;
        return 0;
}

int get_object(struct pctx *c, json_t *obj, const char *parent, const char *key, bool required, json_t **out)
{
        return get_typed(c, obj, parent, key, required, JSON_OBJECT, out);
}

int get_array(struct pctx *c, json_t *obj, const char *parent, const char *key, json_t **out)
{
        return get_typed(c, obj, parent, key, false, JSON_ARRAY, out);
}

/* The i-th element of an array of objects, with its path. */
int array_object(struct pctx *c, json_t *arr, const char *path, size_t i, json_t **elem, char **elem_path)
{
        *elem_path = path_index(path, i);
        *elem = json_array_get(arr, i);
        if (!json_is_object(*elem))
                return pfail(c, *elem_path, "must be an object");
        return 0;
}

int name_lookup(const char *const *names, size_t n, const char *name)
{
        for (size_t i = 0; i < n; i++)
                if (strcmp(names[i], name) == 0)
                        return (int)i;
        return -1;
}

json_t *load_json(struct pctx *c, const char *text)
{
        cleanup_free char *quoted = quote_big_integers(text);
        json_error_t jerr;
        json_t *root = json_loads(quoted, 0, &jerr);

        if (!root) {
                cap_fail(c->err, 0, "%s: invalid JSON at line %d column %d: %s", c->origin, jerr.line, jerr.column,
                         jerr.text);
                return NULL;
        }
        if (!json_is_object(root)) {
                json_decref(root);
                pfail(c, "", "must be a JSON object");
                return NULL;
        }
        return root;
}
