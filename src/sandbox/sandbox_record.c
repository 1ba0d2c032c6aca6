/* sandbox.json: what the commands after create need to reach a VM container. */
#include "sandbox/sandbox_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/util.h"
#include "sandbox/sandbox.h"

bool sandbox_owns(const char *root, const char *id)
{
        cleanup_error cap_error_t ignored = NULL;
        if (state_check_id(id, &ignored) < 0)
                return false;
        cleanup_free char *path = xasprintf("%s/%s/" SANDBOX_RECORD, root, id);
        return access(path, F_OK) == 0;
}

int sandbox_record_save(const char *root, const char *id, const struct sandbox_record *r, cap_error_t *err)
{
        json_t *o = json_pack("{s:I,s:I,s:s}", "pid", (json_int_t)r->pid, "start_time", (json_int_t)r->start_time, "agent_socket",
                              r->agent_socket);
        if (o && r->memory)
                json_object_set_new(o, "memory", json_integer((json_int_t)r->memory));
        if (o && r->pod)
                json_object_set_new(o, "pod", json_pack("{s:I,s:I}", "dev", (json_int_t)r->pod_netns_dev, "ino",
                                                        (json_int_t)r->pod_netns_ino));
        if (o && r->member_of) {
                json_object_set_new(o, "member_of", json_string(r->member_of));
                json_object_set_new(o, "member_dir", json_string(r->member_dir));
        }
        if (o && r->net_ifindex)
                json_object_set_new(o, "net", json_pack("{s:i,s:I,s:I}", "ifindex", r->net_ifindex, "dev", (json_int_t)r->netns_dev,
                                                        "ino", (json_int_t)r->netns_ino));
        cleanup_free char *text = o ? json_dumps(o, JSON_INDENT(2)) : NULL;
        json_decref(o);
        if (!text)
                return cap_fail(err, ENOMEM, SANDBOX_RECORD);
        cleanup_free char *path = xasprintf("%s/%s/" SANDBOX_RECORD, root, id);
        return write_file_atomic(path, text, strlen(text), err);
}

int sandbox_record_load(const char *root, const char *id, struct sandbox_record *r, cap_error_t *err)
{
        cleanup_free char *path = xasprintf("%s/%s/" SANDBOX_RECORD, root, id);
        cleanup_free char *text = NULL;
        memset(r, 0, sizeof(*r));
        if (read_file(path, &text, NULL, 1 << 16, err) < 0)
                return -1;
        json_error_t jerr;
        json_t *o = json_loads(text, 0, &jerr);
        json_int_t pid = -1, start = 0;
        const char *sock = NULL;
        int bad = !o || json_unpack(o, "{s:I,s:I,s:s}", "pid", &pid, "start_time", &start, "agent_socket", &sock) < 0 || pid < 0 ||
                  pid > INT32_MAX;
        json_t *net = o ? json_object_get(o, "net") : NULL;
        json_int_t ifindex = 0, dev = 0, ino = 0;
        if (!bad && net)
                bad = json_unpack(net, "{s:I,s:I,s:I}", "ifindex", &ifindex, "dev", &dev, "ino", &ino) < 0 || ifindex < 1 ||
                      ifindex > INT32_MAX;
        json_t *memory = o ? json_object_get(o, "memory") : NULL;
        if (!bad && memory)
                bad = !json_is_integer(memory) || json_integer_value(memory) < 1;
        json_t *pod = o ? json_object_get(o, "pod") : NULL;
        json_int_t pod_dev = 0, pod_ino = 0;
        if (!bad && pod)
                bad = json_unpack(pod, "{s:I,s:I}", "dev", &pod_dev, "ino", &pod_ino) < 0;
        /* Names, never paths: delete unmounts and removes members/DIR of the pod's directory. */
        json_t *member_of = o ? json_object_get(o, "member_of") : NULL;
        const char *member_pod = NULL, *member_dir = NULL;
        cleanup_error cap_error_t id_err = NULL;
        if (!bad && member_of)
                bad = json_unpack(o, "{s:s,s:s}", "member_of", &member_pod, "member_dir", &member_dir) < 0 ||
                      state_check_id(member_pod, &id_err) < 0 || state_check_id(member_dir, &id_err) < 0;
        if (!bad) {
                r->pod = pod != NULL;
                r->pod_netns_dev = (unsigned long long)pod_dev;
                r->pod_netns_ino = (unsigned long long)pod_ino;
                r->member_of = member_pod ? xstrdup(member_pod) : NULL;
                r->member_dir = member_dir ? xstrdup(member_dir) : NULL;
                r->agent_socket = xstrdup(sock);
                r->memory = memory ? (uint64_t)json_integer_value(memory) : 0;
                r->net_ifindex = (int)ifindex;
                r->netns_dev = (unsigned long long)dev;
                r->netns_ino = (unsigned long long)ino;
        }
        r->pid = (pid_t)pid;
        r->start_time = (unsigned long long)start;
        json_decref(o);
        if (bad)
                return cap_fail(err, 0, "%s: corrupt sandbox record", path);
        return 0;
}

void sandbox_record_free(struct sandbox_record *r)
{
        free(r->agent_socket);
        r->agent_socket = NULL;
        free(r->member_of);
        r->member_of = NULL;
        free(r->member_dir);
        r->member_dir = NULL;
}

bool sandbox_vmm_alive(const struct sandbox_record *r)
{
        if (r->pid <= 0)
                return false;
        char path[64];
        cleanup_free char *stat = NULL;
        cleanup_error cap_error_t ignored = NULL;
        snprintf(path, sizeof(path), "/proc/%d/stat", (int)r->pid);
        if (read_file(path, &stat, NULL, 4096, &ignored) < 0)
                return false;
        const char *p = strrchr(stat, ')');
        if (!p || p[1] != ' ' || p[2] == 'Z' || p[2] == 'X')
                return false;
        return proc_start_time(r->pid) == r->start_time;
}

/* The id of root's first VM container with a live VMM for which holds(record, dev, ino), or NULL. */
static char *holder_find(const char *root, bool (*holds)(const struct sandbox_record *, unsigned long long, unsigned long long),
                         unsigned long long dev, unsigned long long ino)
{
        cleanup_strv char **ids = NULL;
        cleanup_error cap_error_t ignored = NULL;
        if (state_list(root, &ids, &ignored) < 0)
                return NULL;
        for (size_t i = 0; ids[i]; i++) {
                struct sandbox_record r;
                if (!sandbox_owns(root, ids[i]) || sandbox_record_load(root, ids[i], &r, &ignored) < 0) {
                        cap_error_free(&ignored);
                        continue;
                }
                bool found = holds(&r, dev, ino) && sandbox_vmm_alive(&r);
                sandbox_record_free(&r);
                if (found)
                        return xstrdup(ids[i]);
        }
        return NULL;
}

int sandbox_netns_lock(const char *root, unsigned long long dev, unsigned long long ino, char **path, cap_error_t *err)
{
        if (mkdir_p(root, 0700, err) < 0)
                return cap_error_prefix(err, "--root");
        /* A dot name: never a container id, so never a container's state directory. */
        cleanup_free char *p = xasprintf("%s/.netns-%llu-%llu.lock", root, dev, ino);
        long long deadline = now_ms() + SANDBOX_NETNS_LOCK_WAIT_MS;
        for (;;) {
                cleanup_close int fd = open(p, O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600);
                if (fd < 0)
                        return cap_fail(err, errno, "open `%s`", p);
                while (flock(fd, LOCK_EX | LOCK_NB) < 0) {
                        if (errno != EWOULDBLOCK && errno != EINTR)
                                return cap_fail(err, errno, "lock `%s`", p);
                        if (now_ms() > deadline)
                                return cap_fail(err, 0, "another create held `%s` for %d s", p, SANDBOX_NETNS_LOCK_WAIT_MS / 1000);
                        usleep(2000);
                }
                /* The holder before us unlinks it as it unlocks: then the lock is the file now at p. */
                struct stat held, now;
                if (fstat(fd, &held) < 0)
                        return cap_fail(err, errno, "stat `%s`", p);
                if (lstat(p, &now) == 0 && now.st_dev == held.st_dev && now.st_ino == held.st_ino) {
                        *path = steal_pointer(&p);
                        return steal_fd(&fd);
                }
        }
}

void sandbox_netns_unlock(int *fd, char **path)
{
        if (!*path)
                return;
        unlink(*path);
        cap_closep(fd);
        free(*path);
        *path = NULL;
}

static bool took_interface(const struct sandbox_record *r, unsigned long long dev, unsigned long long ino)
{
        return r->net_ifindex && r->netns_dev == dev && r->netns_ino == ino;
}

char *sandbox_netns_holder(const char *root, unsigned long long dev, unsigned long long ino)
{
        return holder_find(root, took_interface, dev, ino);
}

bool sandbox_vmm_in_netns(const struct sandbox_record *r, unsigned long long dev, unsigned long long ino)
{
        char path[64];
        struct stat st;
        snprintf(path, sizeof(path), "/proc/%d/ns/net", (int)r->pid);
        return r->pid > 0 && stat(path, &st) == 0 && (unsigned long long)st.st_dev == dev && (unsigned long long)st.st_ino == ino;
}

static bool vmm_is_in(const struct sandbox_record *r, unsigned long long dev, unsigned long long ino)
{
        return !r->member_of && sandbox_vmm_in_netns(r, dev, ino);
}

char *sandbox_vmm_netns_holder(const char *root, unsigned long long dev, unsigned long long ino)
{
        return holder_find(root, vmm_is_in, dev, ino);
}

char *sandbox_vmm_log_line(const char *root, const char *id, const char *marker)
{
        cleanup_free char *path = xasprintf("%s/%s/" SANDBOX_VMM_LOG, root, id);
        cleanup_free char *text = NULL;
        cleanup_error cap_error_t ignored = NULL;
        if (read_file(path, &text, NULL, 1 << 20, &ignored) < 0)
                return NULL;
        /* Only capsule's own lines: virtiofsd's, which may quote what the guest chose, start otherwise. */
        size_t at = strlen(SANDBOX_LOG_PREFIX), mlen = strlen(marker);
        for (const char *line = text; *line;) {
                size_t len = strcspn(line, "\n");
                if (len >= at + mlen && strncmp(line, SANDBOX_LOG_PREFIX, at) == 0 && strncmp(line + at, marker, mlen) == 0)
                        return strndup(line + at, len - at);
                line += len + (line[len] == '\n');
        }
        return NULL;
}
