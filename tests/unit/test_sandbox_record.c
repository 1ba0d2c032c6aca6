/* sandbox.json (src/sandbox/sandbox_record.c): what delete needs after create, the network's
 * identity included, read back as written; a damaged one is refused, never half-used. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
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
