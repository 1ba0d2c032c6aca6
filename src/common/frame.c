/* Framed JSON messages: see frame.h. */
#include "common/frame.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/util.h"

int frame_send(int fd, const json_t *msg, cap_error_t *err)
{
        cleanup_free char *text = json_dumps(msg, JSON_COMPACT);
        if (!text)
                return cap_fail(err, ENOMEM, "frame: cannot encode message");
        size_t len = strlen(text);
        if (len > FRAME_MAX)
                return cap_fail(err, EMSGSIZE, "frame: message of %zu bytes is over %u", len, FRAME_MAX);
        uint8_t hdr[4] = { len & 0xff, (len >> 8) & 0xff, (len >> 16) & 0xff, (len >> 24) & 0xff };
        if (send_all(fd, hdr, sizeof(hdr)) < 0 || send_all(fd, text, len) < 0)
                return cap_fail(err, errno, "frame: write");
        return 0;
}

int frame_header_len(const uint8_t hdr[FRAME_HDR], uint32_t *len, cap_error_t *err)
{
        *len = hdr[0] | hdr[1] << 8 | hdr[2] << 16 | (uint32_t)hdr[3] << 24;
        if (*len > FRAME_MAX)
                return cap_fail(err, EMSGSIZE, "frame: length %u is over %u", *len, FRAME_MAX);
        return 0;
}

int frame_decode(const char *text, size_t len, json_t **msg, cap_error_t *err)
{
        json_error_t jerr;
        json_t *j = json_loadb(text, len, JSON_REJECT_DUPLICATES, &jerr);
        if (!j)
                return cap_fail(err, EPROTO, "frame: not JSON: %s", jerr.text);
        if (!json_is_object(j)) {
                json_decref(j);
                return cap_fail(err, EPROTO, "frame: not a JSON object");
        }
        *msg = j;
        return 0;
}

int frame_recv(int fd, json_t **msg, cap_error_t *err)
{
        uint8_t hdr[FRAME_HDR];
        uint32_t len;
        ssize_t n = read_all(fd, hdr, sizeof(hdr));
        if (n < 0)
                return cap_fail(err, errno, "frame: read");
        if (n == 0)
                return 0;
        if ((size_t)n < sizeof(hdr))
                return cap_fail(err, EPROTO, "frame: stream ended inside a frame header");
        if (frame_header_len(hdr, &len, err) < 0)
                return -1;
        cleanup_free char *text = xmalloc0(len + 1);
        n = read_all(fd, text, len);
        if (n < 0)
                return cap_fail(err, errno, "frame: read");
        if ((size_t)n < len)
                return cap_fail(err, EPROTO, "frame: stream ended inside a frame of %u bytes", len);
        return frame_decode(text, len, msg, err) < 0 ? -1 : 1;
}
