/* sandbox.json (src/sandbox/sandbox_record.c): what delete needs after create, the network's
 * identity included, read back as written; a damaged one is refused, never half-used. */
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "check.h"
#include "common/util.h"
#include "sandbox/sandbox_internal.h"

/* A state root with the directory of container c1, or NULL. */
static char *make_root(void)
{
        char tmpl[] = "/tmp/capsule-record-XXXXXX";
        if (!mkdtemp(tmpl))
                return NULL;
        cleanup_free char *dir = xasprintf("%s/c1", tmpl);
        if (mkdir(dir, 0700) < 0)
                return NULL;
        return xstrdup(tmpl);
}

static void remove_root(char *root)
{
        cap_error_t err = NULL;
        rm_rf(root, &err);
        cap_error_free(&err);
        free(root);
}

TEST(record_round_trip_with_and_without_net)
{
        char *root = make_root();
        CHECK(root);
        cap_error_t err = NULL;
        struct sandbox_record w = { .pid = 42, .start_time = 7, .agent_socket = "/run/x/agent.sock", .net_ifindex = 3,
                                    .netns_dev = 4, .netns_ino = 4026532000ULL, .memory = 512ULL << 20 };
        CHECK(sandbox_record_save(root, "c1", &w, &err) == 0);
        struct sandbox_record r;
        CHECK(sandbox_record_load(root, "c1", &r, &err) == 0);
        CHECK(r.pid == 42 && r.start_time == 7 && strcmp(r.agent_socket, w.agent_socket) == 0);
        CHECK(r.net_ifindex == 3 && r.netns_dev == 4 && r.netns_ino == 4026532000ULL && r.memory == 512ULL << 20);
        sandbox_record_free(&r);
        w.net_ifindex = 0;
        w.memory = 0; /* as a record written before capsule kept the guest's RAM */
        CHECK(sandbox_record_save(root, "c1", &w, &err) == 0);
        CHECK(sandbox_record_load(root, "c1", &r, &err) == 0);
        CHECK(r.net_ifindex == 0 && r.memory == 0);
        sandbox_record_free(&r);
        remove_root(root);
}

TEST(record_with_a_damaged_net_is_refused)
{
        static const char *const bad[] = {
                "{\"pid\":1,\"start_time\":1,\"agent_socket\":\"/a\",\"net\":{\"ifindex\":0,\"dev\":1,\"ino\":1}}",
                "{\"pid\":1,\"start_time\":1,\"agent_socket\":\"/a\",\"net\":{\"ifindex\":2}}",
                "{\"pid\":1,\"start_time\":1,\"agent_socket\":\"/a\",\"net\":{\"ifindex\":4294967296,\"dev\":1,\"ino\":1}}",
                "{\"pid\":1,\"start_time\":1,\"agent_socket\":\"/a\",\"net\":\"eth0\"}",
                "{\"pid\":1,\"start_time\":1,\"agent_socket\":\"/a\",\"memory\":0}",
                "{\"pid\":1,\"start_time\":1,\"agent_socket\":\"/a\",\"memory\":\"512M\"}",
        };
        char *root = make_root();
        CHECK(root);
        cleanup_free char *path = xasprintf("%s/c1/" SANDBOX_RECORD, root);
        for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
                cap_error_t err = NULL;
                FILE *f = fopen(path, "w");
                CHECK(f && fputs(bad[i], f) >= 0 && fclose(f) == 0);
                struct sandbox_record r;
                CHECK(sandbox_record_load(root, "c1", &r, &err) < 0);
                CHECK(err && strstr(err->msg, "corrupt sandbox record"));
                CHECK(r.agent_socket == NULL && r.net_ifindex == 0);
                cap_error_free(&err);
        }
        remove_root(root);
}

TEST(netns_holder_is_the_live_vm_whose_record_names_the_namespace)
{
        char *root = make_root();
        CHECK(root);
        cap_error_t err = NULL;
        cleanup_free char *state = xasprintf("%s/c1/state.json", root);
        CHECK(write_file(state, "{}", 2, &err) == 0);
        /* This process stands in for the VMM: alive, with its own start time. */
        struct sandbox_record w = { .pid = getpid(), .start_time = proc_start_time(getpid()), .agent_socket = "/a",
                                    .net_ifindex = 2, .netns_dev = 4, .netns_ino = 99 };
        CHECK(sandbox_record_save(root, "c1", &w, &err) == 0);
        cleanup_free char *holder = sandbox_netns_holder(root, 4, 99);
        CHECK(holder && strcmp(holder, "c1") == 0);
        CHECK(!sandbox_netns_holder(root, 4, 98));
        /* A VMM that is gone (its pid taken by another process since) holds nothing. */
        w.start_time++;
        CHECK(sandbox_record_save(root, "c1", &w, &err) == 0);
        CHECK(!sandbox_netns_holder(root, 4, 99));
        /* Nor one without a NIC, whatever the identity says. */
        w.start_time--;
        w.net_ifindex = 0;
        CHECK(sandbox_record_save(root, "c1", &w, &err) == 0);
        CHECK(!sandbox_netns_holder(root, 4, 99));
        CHECK(!sandbox_netns_holder("/nonexistent", 4, 99));
        remove_root(root);
}

TEST(netns_lock_lets_one_create_at_a_time_and_goes_with_its_unlock)
{
        char *root = make_root();
        CHECK(root);
        cap_error_t err = NULL;
        cleanup_free char *path = NULL;
        int fd = sandbox_netns_lock(root, 4, 99, &path, &err);
        CHECK(fd >= 0 && path && str_has_prefix(path, root));
        /* Another create (a process of its own) waits until the holder unlocks... */
        int got[2];
        CHECK(pipe(got) == 0);
        pid_t other = fork();
        CHECK(other >= 0);
        if (other == 0) {
                cleanup_free char *p = NULL;
                cap_closep(&fd);
                int l = sandbox_netns_lock(root, 4, 99, &p, &err);
                _exit(l >= 0 && write(got[1], "L", 1) == 1 ? 0 : 1);
        }
        close(got[1]);
        struct pollfd pfd = { .fd = got[0], .events = POLLIN };
        CHECK(poll(&pfd, 1, 300) == 0);
        /* ...while a lock of another namespace is free. */
        cleanup_free char *path2 = NULL;
        int fd2 = sandbox_netns_lock(root, 4, 98, &path2, &err);
        CHECK(fd2 >= 0);
        sandbox_netns_unlock(&fd2, &path2);
        CHECK(fd2 == -1 && !path2);
        sandbox_netns_unlock(&fd, &path);
        CHECK(poll(&pfd, 1, 5000) == 1);
        int status;
        CHECK(waitpid(other, &status, 0) == other && WIFEXITED(status) && WEXITSTATUS(status) == 0);
        close(got[0]);
        /* The killed holder's lock went with it; its file stays, and is taken again. */
        fd = sandbox_netns_lock(root, 4, 99, &path, &err);
        CHECK(fd >= 0);
        sandbox_netns_unlock(&fd, &path);
        /* Nothing is left: only c1, the record's directory. */
        cleanup_free char *lock = xasprintf("%s/.netns-4-99.lock", root);
        CHECK(access(lock, F_OK) < 0);
        remove_root(root);
}

TEST(record_of_a_pod_and_of_a_member)
{
        char *root = make_root();
        CHECK(root);
        cap_error_t err = NULL;
        struct sandbox_record w = { .pid = 42, .start_time = 7, .agent_socket = "/a", .pod = true, .pod_netns_dev = 4,
                                    .pod_netns_ino = 4026532001ULL };
        CHECK(sandbox_record_save(root, "c1", &w, &err) == 0);
        struct sandbox_record r;
        CHECK(sandbox_record_load(root, "c1", &r, &err) == 0);
        CHECK(r.pod && r.pod_netns_dev == 4 && r.pod_netns_ino == 4026532001ULL && !r.member_of);
        sandbox_record_free(&r);
        w = (struct sandbox_record){ .pid = 43, .start_time = 8, .agent_socket = "/a", .member_of = "pod-1", .member_dir = "c1.5" };
        CHECK(sandbox_record_save(root, "c1", &w, &err) == 0);
        CHECK(sandbox_record_load(root, "c1", &r, &err) == 0);
        CHECK(!r.pod && r.member_of && strcmp(r.member_of, "pod-1") == 0 && strcmp(r.member_dir, "c1.5") == 0);
        sandbox_record_free(&r);
        /* A member's pod id and its directory are names, never paths; it has both. */
        cleanup_free char *path = xasprintf("%s/c1/sandbox.json", root);
        static const char *const bad[] = { "{\"pid\":1,\"start_time\":1,\"agent_socket\":\"/a\",\"member_of\":\"../x\",\"member_dir\":\"c1.5\"}",
                                           "{\"pid\":1,\"start_time\":1,\"agent_socket\":\"/a\",\"member_of\":3,\"member_dir\":\"c1.5\"}",
                                           "{\"pid\":1,\"start_time\":1,\"agent_socket\":\"/a\",\"member_of\":\"p\",\"member_dir\":\"../../x\"}",
                                           "{\"pid\":1,\"start_time\":1,\"agent_socket\":\"/a\",\"member_of\":\"p\",\"member_dir\":\".\"}",
                                           "{\"pid\":1,\"start_time\":1,\"agent_socket\":\"/a\",\"member_of\":\"p\"}",
                                           "{\"pid\":1,\"start_time\":1,\"agent_socket\":\"/a\",\"pod\":{\"dev\":1}}" };
        for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
                CHECK(write_file(path, bad[i], strlen(bad[i]), &err) == 0);
                CHECK(sandbox_record_load(root, "c1", &r, &err) < 0 && strstr(err->msg, "corrupt sandbox record"));
                cap_error_free(&err);
        }
        remove_root(root);
}

TEST(vmm_log_line_is_the_marked_line_from_its_marker)
{
        char *root = make_root();
        CHECK(root);
        cleanup_free char *log = xasprintf("%s/c1/" SANDBOX_VMM_LOG, root);
        CHECK(sandbox_vmm_log_line(root, "c1", SANDBOX_GUEST_DEATH) == NULL); /* no vmm.log */
        FILE *f = fopen(log, "w");
        CHECK(f);
        /* Only a line of capsule's own counts, not one that quotes the marker (as virtiofsd may
         * quote a file name the guest chose). */
        fputs("[virtiofsd] lookup: capsule: " SANDBOX_GUEST_DEATH "the guest chose this\n"
              "capsule: warning: " SANDBOX_GUEST_DEATH "nor this\n"
              "capsule: " SANDBOX_GUEST_DEATH "the guest triple-faulted (status 82)\n"
              "capsule: " SANDBOX_GUEST_DEATH,
              f);
        fclose(f);
        cleanup_free char *line = sandbox_vmm_log_line(root, "c1", SANDBOX_GUEST_DEATH);
        CHECK(line && strcmp(line, SANDBOX_GUEST_DEATH "the guest triple-faulted (status 82)") == 0);
        CHECK(sandbox_vmm_log_line(root, "c1", SANDBOX_SECCOMP_DEATH) == NULL);
        remove_root(root);
}
