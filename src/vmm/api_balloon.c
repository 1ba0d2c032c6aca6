/* The control channel's balloon commands: the target (inflate/deflate) and the statistics of
 * the virtio-balloon device (vmm/virtio/balloon.h). */
#include <jansson.h>

#include "common/util.h"
#include "vmm/api_internal.h"
#include "vmm/virtio/balloon.h"

static void api_set_stat(json_t *j, const char *key, uint64_t v)
{
        if (v != UINT64_MAX)
                json_object_set_new(j, key, json_integer((json_int_t)v));
}

void api_balloon_stats(const struct api_vm *vm, json_int_t arg, struct api_reply *r)
{
        (void)arg;
        struct balloon_stats s;
        balloon_get_stats(vm->balloon, &s);
        json_t *j = api_ok();
        json_object_set_new(j, "target", json_integer((json_int_t)s.target_bytes));
        json_object_set_new(j, "actual", json_integer((json_int_t)s.actual_bytes));
        json_object_set_new(j, "reported", json_integer((json_int_t)s.reported_bytes));
        if (s.have_guest_stats) {
                json_t *g = json_object();
                json_object_set_new(g, "age-ms", json_integer((json_int_t)s.age_ms));
                api_set_stat(g, "swap-in", s.swap_in);
                api_set_stat(g, "swap-out", s.swap_out);
                api_set_stat(g, "major-faults", s.major_faults);
                api_set_stat(g, "minor-faults", s.minor_faults);
                api_set_stat(g, "free-memory", s.free_memory);
                api_set_stat(g, "total-memory", s.total_memory);
                api_set_stat(g, "available-memory", s.available_memory);
                api_set_stat(g, "disk-caches", s.disk_caches);
                api_set_stat(g, "hugetlb-allocations", s.hugetlb_allocations);
                api_set_stat(g, "hugetlb-failures", s.hugetlb_failures);
                json_object_set_new(j, "guest", g);
        } else {
                json_object_set_new(j, "guest", json_null());
        }
        r->text = api_dump(j);
}

void api_balloon(const struct api_vm *vm, json_int_t size, struct api_reply *r)
{
        cleanup_error cap_error_t err = NULL;
        if (balloon_set_target(vm->balloon, (uint64_t)size, &err) < 0) {
                r->text = api_error_text(err->msg);
                return;
        }
        json_t *j = api_ok();
        json_object_set_new(j, "target", json_integer(size));
        r->text = api_dump(j);
}
