/* The guest agent's input: one frame as the host sends it over vsock (a 4-byte length, then a
 * JSON object), checked with frame.c's header and body decoding, agent_req_parse(), and what
 * the agent then parses from a valid request (the config.json rewrite of a create, the
 * process.json of an exec, the resources of an update). Every refusal must come with an error,
 * never a crash or a leak. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "agent/request.h"
#include "common/frame.h"
#include "runtime/spec.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void parse_request(const json_t *msg)
{
        struct agent_req req;
        cap_error_t err = NULL;
        if (agent_req_parse(msg, &req, &err) < 0) {
                if (err == NULL)
                        abort();
                cap_error_free(&err);
                return;
        }
        if (req.op == AGENT_OP_CREATE) {
                char *out = NULL;
                int r = req.member ? agent_member_config_rewrite(req.config, "/run/capsule/members/m/rootfs", req.tty, 2, &out, &err)
                                   : agent_config_rewrite(req.config, "/run/capsule/rootfs", req.tty, &out, &err);
                if (r == 0) {
                        struct spec *spec = NULL;
                        if (spec_parse(out, "config.json", &spec, &err) == 0)
                                spec_free(spec);
                        free(out);
                } else if (err == NULL) {
                        abort();
                }
        } else if (req.op == AGENT_OP_UPDATE) {
                struct spec *spec = NULL;
                if (spec_parse_resources(req.resources, "update", &spec, &err) == 0)
                        spec_free(spec);
                else if (err == NULL)
                        abort();
        } else if (req.op == AGENT_OP_EXEC) {
                struct spec_process *p = NULL;
                if (spec_parse_process(req.process, "process", &p, &err) == 0)
                        spec_process_free(p);
                else if (err == NULL)
                        abort();
        }
        cap_error_free(&err);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        cap_error_t err = NULL;
        uint32_t len;
        if (size < FRAME_HDR)
                return 0;
        if (frame_header_len(data, &len, &err) < 0) {
                if (err == NULL)
                        abort();
                cap_error_free(&err);
                return 0;
        }
        /* A body shorter than announced is a stream that ended early: frame_recv's case. */
        if (len > size - FRAME_HDR)
                return 0;
        json_t *msg = NULL;
        if (frame_decode((const char *)data + FRAME_HDR, len, &msg, &err) < 0) {
                if (err == NULL || msg != NULL)
                        abort();
                cap_error_free(&err);
                return 0;
        }
        parse_request(msg);
        json_decref(msg);
        return 0;
}
