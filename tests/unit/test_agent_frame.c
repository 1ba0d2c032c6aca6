/* frame.c: the framing of the agent's messages, with what a hostile peer may send. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "check.h"
#include "common/frame.h"
#include "common/util.h"

/* The result of frame_recv on a stream that carries exactly bytes and then ends. */
static int recv_bytes(const void *bytes, size_t len, json_t **msg, cap_error_t *err)
{
        int sv[2];
        if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
                return -2;
        if (len && write_all(sv[1], bytes, len) < 0)
                return -2;
        close(sv[1]);
        int r = frame_recv(sv[0], msg, err);
        close(sv[0]);
        return r;
}

static int recv_frame(uint32_t len, const char *body, size_t body_len, json_t **msg, cap_error_t *err)
{
        char buf[256];
        uint8_t hdr[4] = { len & 0xff, (len >> 8) & 0xff, (len >> 16) & 0xff, len >> 24 };
        memcpy(buf, hdr, 4);
        memcpy(buf + 4, body, body_len);
        return recv_bytes(buf, 4 + body_len, msg, err);
}

TEST(frame_round_trip)
{
        int sv[2];
        CHECK(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0);
        cap_error_t err = NULL;
        json_t *out = json_pack("{s:s,s:i}", "op", "state", "n", 7);
        CHECK(frame_send(sv[1], out, &err) == 0);
        CHECK(frame_send(sv[1], out, &err) == 0);
        close(sv[1]);
        json_decref(out);
        for (int i = 0; i < 2; i++) {
                json_t *in = NULL;
                CHECK(frame_recv(sv[0], &in, &err) == 1);
                CHECK_STR(json_string_value(json_object_get(in, "op")), "state");
                CHECK(json_integer_value(json_object_get(in, "n")) == 7);
                json_decref(in);
        }
        json_t *in = NULL;
        CHECK(frame_recv(sv[0], &in, &err) == 0); /* a clean end between frames */
        CHECK(in == NULL && err == NULL);
        close(sv[0]);
}

TEST(frame_truncated_header)
{
        cap_error_t err = NULL;
        json_t *msg = NULL;
        CHECK(recv_bytes("\x05\x00", 2, &msg, &err) == -1);
        CHECK(err && strstr(err->msg, "inside a frame header"));
        CHECK(msg == NULL);
        cap_error_free(&err);
}

TEST(frame_truncated_body)
{
        cap_error_t err = NULL;
        json_t *msg = NULL;
        CHECK(recv_frame(20, "{\"op\":", 6, &msg, &err) == -1);
        CHECK(err && strstr(err->msg, "inside a frame of 20 bytes"));
        CHECK(msg == NULL);
        cap_error_free(&err);
}

TEST(frame_over_long_length)
{
        cap_error_t err = NULL;
        json_t *msg = NULL;
        /* Refused from the header alone: nothing of that size is allocated or read. */
        CHECK(recv_frame(FRAME_MAX + 1, "{}", 2, &msg, &err) == -1);
        CHECK(err && err->errnum == EMSGSIZE);
        cap_error_free(&err);
        CHECK(recv_frame(0xffffffffu, "", 0, &msg, &err) == -1);
        CHECK(err && err->errnum == EMSGSIZE);
        cap_error_free(&err);
        uint32_t len;
        const uint8_t max[4] = { 0, 0, 0x10, 0 };
        CHECK(frame_header_len(max, &len, &err) == 0 && len == FRAME_MAX);
}

TEST(frame_not_an_object)
{
        static const char *const bodies[] = { "[1,2]", "\"op\"", "42", "null", "{\"op\":", "{} {}", "{\"a\":1,\"a\":2}", "" };
        for (size_t i = 0; i < ARRAY_SIZE(bodies); i++) {
                cap_error_t err = NULL;
                json_t *msg = NULL;
                CHECK(recv_frame((uint32_t)strlen(bodies[i]), bodies[i], strlen(bodies[i]), &msg, &err) == -1);
                CHECK(err && err->errnum == EPROTO);
                CHECK(msg == NULL);
                cap_error_free(&err);
        }
}

TEST(frame_send_too_long)
{
        int sv[2];
        CHECK(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0);
        char *big = xmalloc0(FRAME_MAX + 1);
        memset(big, 'x', FRAME_MAX);
        json_t *msg = json_pack("{s:s}", "config", big);
        free(big);
        cap_error_t err = NULL;
        CHECK(frame_send(sv[1], msg, &err) == -1);
        CHECK(err && err->errnum == EMSGSIZE);
        cap_error_free(&err);
        json_decref(msg);
        close(sv[0]);
        close(sv[1]);
}
