/* From inside a VM container: reach the guest agent's vsock port as the host would, and ask it
 * to exec a program that creates /pwned. The agent accepts only the host's CID, so every try
 * must end without an answer (refused, or closed unanswered). One report line per CID:
 *   cid=N connect: <error>    |    cid=N reply: <bytes>    |    cid=N closed unanswered */
#include <linux/vm_sockets.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/time.h>

#include "attack.h"

#define AGENT_PORT 1024

static void try_cid(unsigned int cid)
{
        int s = socket(AF_VSOCK, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (s < 0) {
                report("cid=%u socket: %s", cid, strerror(errno));
                return;
        }
        struct timeval tv = { .tv_sec = 5 };
        setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
        struct sockaddr_vm addr = { .svm_family = AF_VSOCK, .svm_cid = cid, .svm_port = AGENT_PORT };
        if (connect(s, (struct sockaddr *)&addr, sizeof(addr)) < 0) {
                report("cid=%u connect: %s", cid, strerror(errno));
                close(s);
                return;
        }
        /* The agent's framing: a u32 little-endian length, then the JSON request. */
        static const char req[] = "{\"op\":\"exec\",\"exec\":\"evil\",\"stdio\":\"pipes\",\"process\":"
                                  "\"{\\\"args\\\":[\\\"/bin/touch\\\",\\\"/pwned\\\"],\\\"cwd\\\":\\\"/\\\"}\"}";
        uint32_t len = sizeof(req) - 1;
        unsigned char hdr[4] = { len & 0xff, (len >> 8) & 0xff, (len >> 16) & 0xff, len >> 24 };
        if (send(s, hdr, sizeof(hdr), MSG_NOSIGNAL) < 0 || send(s, req, len, MSG_NOSIGNAL) < 0) {
                report("cid=%u closed unanswered (send: %s)", cid, strerror(errno));
                close(s);
                return;
        }
        char buf[256];
        ssize_t n = recv(s, buf, sizeof(buf) - 1, 0);
        if (n > 0) {
                buf[n] = '\0';
                for (ssize_t i = 0; i < n; i++)
                        if ((unsigned char)buf[i] < 0x20 || (unsigned char)buf[i] >= 0x7f)
                                buf[i] = '?';
                report("cid=%u reply: %s", cid, buf);
        } else {
                report("cid=%u closed unanswered (%s)", cid, n == 0 ? "end of file" : strerror(errno));
        }
        close(s);
}

int main(void)
{
        try_cid(VMADDR_CID_LOCAL);
        try_cid(VMADDR_CID_HOST);
        try_cid(3); /* the guest's own CID */
        return 0;
}
