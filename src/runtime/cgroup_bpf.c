/* The cgroup v2 device filter: linux.resources.devices compiled to a
 * BPF_PROG_TYPE_CGROUP_DEVICE program.
 *
 * Semantics: each requested access bit (m, r, w) is decided on its own by the
 * last rule that matches the device and names that bit; a bit no rule matches
 * is denied; the access is allowed only if every requested bit is. */
#include <linux/bpf.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <fcntl.h>

#include "common/log.h"
#include "common/util.h"
#include "runtime/cgroup_internal.h"

/* registers: r1 = ctx at entry, r6 = access bits, r7 = device type, r8 = major, r9 = minor */
enum { R0 = 0, R1 = 1, R6 = 6, R7 = 7, R8 = 8, R9 = 9 };

struct fixup {
        size_t insn, label;
};

struct bpf_asm {
        struct bpf_insn *insns;
        size_t n, cap;
        size_t *labels;
        size_t n_labels;
        struct fixup *fixups;
        size_t n_fixups;
};

static void asm_free(struct bpf_asm *a)
{
        free(a->insns);
        free(a->labels);
        free(a->fixups);
}

static void *grow(void *p, size_t n, size_t size)
{
        void *np = realloc(p, (n + 1) * size);
        if (!np)
                abort();
        return np;
}

static void emit(struct bpf_asm *a, uint8_t code, uint8_t dst, uint8_t src, int16_t off, int32_t imm)
{
        a->insns = grow(a->insns, a->n, sizeof(*a->insns));
        a->insns[a->n++] = (struct bpf_insn){ .code = code, .dst_reg = dst, .src_reg = src, .off = off, .imm = imm };
}

static size_t label_new(struct bpf_asm *a)
{
        a->labels = grow(a->labels, a->n_labels, sizeof(*a->labels));
        a->labels[a->n_labels] = SIZE_MAX;
        return a->n_labels++;
}

static void label_bind(struct bpf_asm *a, size_t label)
{
        a->labels[label] = a->n;
}

/* A jump whose offset is filled in once the label is bound. */
static void emit_jump(struct bpf_asm *a, uint8_t code, uint8_t dst, int32_t imm, size_t label)
{
        a->fixups = grow(a->fixups, a->n_fixups, sizeof(*a->fixups));
        a->fixups[a->n_fixups++] = (struct fixup){ a->n, label };
        emit(a, code, dst, 0, 0, imm);
}

static int asm_link(struct bpf_asm *a, cap_error_t *err)
{
        for (size_t i = 0; i < a->n_fixups; i++) {
                long off = (long)a->labels[a->fixups[i].label] - (long)a->fixups[i].insn - 1;
                if (off > INT16_MAX)
                        return cap_fail(err, 0, "linux.resources.devices: too many rules for one device filter");
                a->insns[a->fixups[i].insn].off = (int16_t)off;
        }
        return 0;
}

static uint32_t access_bits(const char *access)
{
        uint32_t bits = 0;
        if (!access || !*access)
                access = "rwm";
        for (const char *p = access; *p; p++)
                bits |= *p == 'm' ? BPF_DEVCG_ACC_MKNOD : *p == 'r' ? BPF_DEVCG_ACC_READ : *p == 'w' ? BPF_DEVCG_ACC_WRITE : 0;
        return bits;
}

int cgroup_bpf_build(const struct spec_device_cgroup *rules, size_t n, void **insns, size_t *n_insns, cap_error_t *err)
{
        static const uint32_t bits[] = { BPF_DEVCG_ACC_MKNOD, BPF_DEVCG_ACC_READ, BPF_DEVCG_ACC_WRITE };
        struct bpf_asm a = { 0 };

        for (size_t i = 0; i < n; i++) {
                const struct spec_device_cgroup *r = &rules[i];
                if (r->type != 'a' && r->type != 'c' && r->type != 'b') {
                        asm_free(&a);
                        return cap_fail(err, 0, "linux.resources.devices[%zu].type: `%c` is not a, b or c", i, r->type);
                }
                if (r->type != 'a' && (r->major > UINT32_MAX || r->minor > UINT32_MAX)) {
                        asm_free(&a);
                        return cap_fail(err, 0, "linux.resources.devices[%zu]: major/minor out of range", i);
                }
        }

        emit(&a, BPF_LDX | BPF_MEM | BPF_W, R6, R1, offsetof(struct bpf_cgroup_dev_ctx, access_type), 0);
        emit(&a, BPF_ALU64 | BPF_MOV | BPF_X, R7, R6, 0, 0);
        emit(&a, BPF_ALU | BPF_AND | BPF_K, R7, 0, 0, 0xffff);
        emit(&a, BPF_ALU | BPF_RSH | BPF_K, R6, 0, 0, 16);
        emit(&a, BPF_LDX | BPF_MEM | BPF_W, R8, R1, offsetof(struct bpf_cgroup_dev_ctx, major), 0);
        emit(&a, BPF_LDX | BPF_MEM | BPF_W, R9, R1, offsetof(struct bpf_cgroup_dev_ctx, minor), 0);

        for (size_t b = 0; b < ARRAY_SIZE(bits); b++) {
                size_t done = label_new(&a);
                /* bit not requested: nothing to decide */
                emit(&a, BPF_ALU64 | BPF_MOV | BPF_X, R0, R6, 0, 0);
                emit(&a, BPF_ALU | BPF_AND | BPF_K, R0, 0, 0, (int32_t)bits[b]);
                emit_jump(&a, BPF_JMP32 | BPF_JEQ | BPF_K, R0, 0, done);

                bool decided = false;
                for (size_t i = n; i-- > 0 && !decided;) {
                        const struct spec_device_cgroup *r = &rules[i];
                        if (!(access_bits(r->access) & bits[b]))
                                continue;
                        size_t next = label_new(&a);
                        bool any = true;
                        if (r->type != 'a') {
                                emit_jump(&a, BPF_JMP32 | BPF_JNE | BPF_K, R7,
                                          r->type == 'c' ? BPF_DEVCG_DEV_CHAR : BPF_DEVCG_DEV_BLOCK, next);
                                any = false;
                                if (r->major >= 0)
                                        emit_jump(&a, BPF_JMP32 | BPF_JNE | BPF_K, R8, (int32_t)(uint32_t)r->major, next);
                                if (r->minor >= 0)
                                        emit_jump(&a, BPF_JMP32 | BPF_JNE | BPF_K, R9, (int32_t)(uint32_t)r->minor, next);
                        }
                        if (r->allow) {
                                emit_jump(&a, BPF_JMP | BPF_JA, 0, 0, done);
                        } else {
                                emit(&a, BPF_ALU64 | BPF_MOV | BPF_K, R0, 0, 0, 0);
                                emit(&a, BPF_JMP | BPF_EXIT, 0, 0, 0, 0);
                        }
                        label_bind(&a, next);
                        /* a rule matching every device decides the bit: what precedes it is unreachable,
                         * which the verifier refuses */
                        decided = any;
                }
                if (!decided) {
                        emit(&a, BPF_ALU64 | BPF_MOV | BPF_K, R0, 0, 0, 0);
                        emit(&a, BPF_JMP | BPF_EXIT, 0, 0, 0, 0);
                }
                label_bind(&a, done);
        }
        emit(&a, BPF_ALU64 | BPF_MOV | BPF_K, R0, 0, 0, 1);
        emit(&a, BPF_JMP | BPF_EXIT, 0, 0, 0, 0);

        if (asm_link(&a, err) < 0) {
                asm_free(&a);
                return -1;
        }
        *insns = a.insns;
        *n_insns = a.n;
        a.insns = NULL;
        asm_free(&a);
        return 0;
}

static int bpf(int cmd, union bpf_attr *attr)
{
        return (int)syscall(SYS_bpf, cmd, attr, sizeof(*attr));
}

int cgroup_bpf_load(const struct spec_device_cgroup *rules, size_t n, cap_error_t *err)
{
        cleanup_free void *insns = NULL;
        size_t n_insns = 0;
        if (cgroup_bpf_build(rules, n, &insns, &n_insns, err) < 0)
                return -1;

        union bpf_attr attr;
        memset(&attr, 0, sizeof(attr));
        attr.prog_type = BPF_PROG_TYPE_CGROUP_DEVICE;
        attr.insns = (uint64_t)(uintptr_t)insns;
        attr.insn_cnt = (uint32_t)n_insns;
        attr.license = (uint64_t)(uintptr_t) "GPL";
        int fd = bpf(BPF_PROG_LOAD, &attr);
        if (fd >= 0)
                return fd;
        int e = errno;
        /* load again with the verifier log, so the error says why */
        cleanup_free char *log = xmalloc0(65536);
        attr.log_buf = (uint64_t)(uintptr_t)log;
        attr.log_size = 65536;
        attr.log_level = 1;
        fd = bpf(BPF_PROG_LOAD, &attr);
        if (fd >= 0)
                return fd;
        size_t len = strlen(log);
        while (len > 0 && log[len - 1] == '\n')
                log[--len] = '\0';
        char *last = strrchr(log, '\n');
        return cap_fail(err, e, "linux.resources.devices: BPF_PROG_LOAD device filter (%zu insns)%s%s", n_insns,
                        len ? ": " : "", len ? (last ? last + 1 : log) : "");
}

static int prog_id(int fd, uint32_t *id)
{
        struct bpf_prog_info info;
        union bpf_attr attr;
        memset(&info, 0, sizeof(info));
        memset(&attr, 0, sizeof(attr));
        attr.info.bpf_fd = (uint32_t)fd;
        attr.info.info_len = sizeof(info);
        attr.info.info = (uint64_t)(uintptr_t)&info;
        if (bpf(BPF_OBJ_GET_INFO_BY_FD, &attr) < 0)
                return -1;
        *id = info.id;
        return 0;
}

int cgroup_bpf_apply(const char *dir, const struct spec_device_cgroup *rules, size_t n, bool defaults, cap_error_t *err)
{
        size_t total = n + (defaults ? cgroup_n_default_devices : 0);
        cleanup_free struct spec_device_cgroup *all = xmalloc0(total * sizeof(*all));
        memcpy(all, rules, n * sizeof(*all));
        if (defaults)
                memcpy(all + n, cgroup_default_devices, cgroup_n_default_devices * sizeof(*all));

        cleanup_close int prog = cgroup_bpf_load(all, total, err);
        if (prog < 0)
                return -1;
        cleanup_close int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (dfd < 0)
                return cap_fail(err, errno, "linux.resources.devices: open %s", dir);

        union bpf_attr attr;
        memset(&attr, 0, sizeof(attr));
        attr.target_fd = (uint32_t)dfd;
        attr.attach_bpf_fd = (uint32_t)prog;
        attr.attach_type = BPF_CGROUP_DEVICE;
        attr.attach_flags = BPF_F_ALLOW_MULTI;
        if (bpf(BPF_PROG_ATTACH, &attr) < 0)
                return cap_fail(err, errno, "linux.resources.devices: BPF_PROG_ATTACH to %s", dir);

        /* with ALLOW_MULTI every attached filter must agree: drop the ones of earlier applies */
        uint32_t mine, ids[64], count = ARRAY_SIZE(ids);
        if (prog_id(prog, &mine) < 0)
                return cap_fail(err, errno, "linux.resources.devices: BPF_OBJ_GET_INFO_BY_FD");
        memset(&attr, 0, sizeof(attr));
        attr.query.target_fd = (uint32_t)dfd;
        attr.query.attach_type = BPF_CGROUP_DEVICE;
        attr.query.prog_ids = (uint64_t)(uintptr_t)ids;
        attr.query.prog_cnt = count;
        if (bpf(BPF_PROG_QUERY, &attr) < 0)
                return cap_fail(err, errno, "linux.resources.devices: BPF_PROG_QUERY %s", dir);
        count = attr.query.prog_cnt < count ? attr.query.prog_cnt : count;
        for (uint32_t i = 0; i < count; i++) {
                if (ids[i] == mine)
                        continue;
                memset(&attr, 0, sizeof(attr));
                attr.prog_id = ids[i];
                cleanup_close int old = bpf(BPF_PROG_GET_FD_BY_ID, &attr);
                if (old < 0)
                        return cap_fail(err, errno, "linux.resources.devices: BPF_PROG_GET_FD_BY_ID %u", ids[i]);
                memset(&attr, 0, sizeof(attr));
                attr.target_fd = (uint32_t)dfd;
                attr.attach_bpf_fd = (uint32_t)old;
                attr.attach_type = BPF_CGROUP_DEVICE;
                if (bpf(BPF_PROG_DETACH, &attr) < 0 && errno != ENOENT)
                        return cap_fail(err, errno, "linux.resources.devices: BPF_PROG_DETACH old filter %u from %s", ids[i],
                                        dir);
                log_debug("cgroup: replaced device filter %u on %s", ids[i], dir);
        }
        return 0;
}
