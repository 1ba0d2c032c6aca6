/* Replies from a vhost-user back-end (virtiofsd) are another process's bytes: the
 * front-end must bound, validate and reject them without trusting anything. The first
 * input byte picks the path:
 *   bit 0 clear: vhost_user_parse_reply() on the rest, for the request in byte 1;
 *   bit 0 set:   the rest is everything the back-end says, fed through a socket to a
 *                whole front-end session (handshake, memory table, features, a ring's
 *                start and stop) whose every step must fail cleanly or succeed. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/util.h"
#include "vmm/memory.h"
#include "vmm/virtio/vhost_user.h"

#define GUEST_RAM (1ULL << 20)

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct guest_mem mem;
static int kick_fd = -1, call_fd = -1;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
        (void)argc;
        (void)argv;
        cap_error_t err = NULL;
        if (guest_mem_init(&mem, GUEST_RAM, false, &err) < 0) {
                fprintf(stderr, "fuzz_vhost_user: %s\n", err->msg);
                exit(1);
        }
        kick_fd = eventfd(0, EFD_CLOEXEC);
        call_fd = eventfd(0, EFD_CLOEXEC);
        if (kick_fd < 0 || call_fd < 0)
                exit(1);
        return 0;
}

static void parse_one(const uint8_t *data, size_t size)
{
        if (size < 1)
                return;
        cap_error_t err = NULL;
        struct vhost_user_msg reply;
        if (vhost_user_parse_reply(data[0] & 0x1f, data + 1, size - 1, &reply, &err) == 0) {
                /* Accepted means exactly one reply of the size the request has. */
                uint32_t want = vhost_user_reply_size(data[0] & 0x1f);
                if (size - 1 != sizeof(reply.hdr) + (want ? want : 8) || !(reply.hdr.flags & VHOST_USER_REPLY_MASK))
                        abort();
        }
        cap_error_free(&err);
}

static void session(const uint8_t *data, size_t size)
{
        int sv[2];
        if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
                abort();
        /* The back-end's whole say, then it hangs up: every read ends, none waits. */
        for (size_t done = 0; done < size;) {
                ssize_t n = send(sv[1], data + done, size - done, MSG_DONTWAIT | MSG_NOSIGNAL);
                if (n <= 0)
                        break;
                done += (size_t)n;
        }
        shutdown(sv[1], SHUT_WR);
        struct vhost_user vu;
        vhost_user_init(&vu, sv[0], "share[0]");
        vu.timeout_ms = 50;
        cap_error_t err = NULL;
        struct vhost_user_vring v = { .size = 16, .desc_gpa = 0x1000, .avail_gpa = 0x2000, .used_gpa = 0x3000,
                                      .kick_fd = kick_fd, .call_fd = call_fd };
        uint16_t base;
        if (vhost_user_handshake(&vu, &err) == 0 && vhost_user_set_mem_table(&vu, &mem, &err) == 0 &&
            vhost_user_set_features(&vu, vu.features & (1ULL << 32), &err) == 0 &&
            vhost_user_vring_start(&vu, 1, &v, &mem, &err) == 0)
                vhost_user_vring_stop(&vu, 1, &base, &err);
        cap_error_free(&err);
        vhost_user_close(&vu);
        close(sv[1]);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        if (size < 1)
                return 0;
        if (data[0] & 1)
                session(data + 1, size - 1);
        else
                parse_one(data + 1, size - 1);
        return 0;
}
