/* Framed JSON messages over a stream socket: a 4-byte little-endian length, then that many bytes
 * of one JSON object. The runtime talks to the guest agent this way over vsock (agent_proto.h);
 * the length bound is checked before anything is allocated, so a hostile peer cannot make the
 * reader allocate more than FRAME_MAX. */
#ifndef CAPSULE_COMMON_FRAME_H
#define CAPSULE_COMMON_FRAME_H

#include <jansson.h>

#include "common/error.h"

#define FRAME_MAX (1u << 20)

/* Write one object. Returns 0 or -1 with err set. */
int frame_send(int fd, const json_t *msg, cap_error_t *err);
/* Read one object. Returns 1 with *msg set, 0 at a clean end of stream before any byte of a frame,
 * or -1 with err set (short frame, too long, not a JSON object). */
int frame_recv(int fd, json_t **msg, cap_error_t *err);

#endif
