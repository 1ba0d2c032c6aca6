/* virtio-fs: a host directory shared with the guest (`mount -t virtiofs TAG DIR`), one
 * instance per share[i]. capsule is only the vhost-user front-end: virtiofsd serves the
 * FUSE requests straight from the rings in guest memory (the memfd is shared with it),
 * and capsule hands it the memory table, the rings and the kick/call eventfds.
 *
 * capsule starts virtiofsd itself unless share[i].socket names a running back-end. The
 * handshake and the memory table run on a thread of their own beside the guest's boot
 * (virtiofsd's own start-up is most of a VM's set-up time otherwise); the driver's DRIVER_OK
 * waits for them, and sets up the rings. A back-end that fails them stops the VM with
 * that error.
 *
 * A back-end that dies while the guest runs is noticed on the event loop (its socket
 * hangs up). Linux's virtio-fs driver ignores DEVICE_NEEDS_RESET and would wait forever
 * for its requests, so capsule takes the queues over instead: from where the back-end
 * left the rings, every request is answered with EIO. The guest's file operations fail,
 * the guest and the other devices go on. Requests the back-end had taken and not
 * answered are lost with it (the vhost-user protocol keeps no record of them here). */
#include <linux/fuse.h>
#include <linux/virtio_fs.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/log.h"
#include "common/util.h"
#include "vmm/device.h"
#include "vmm/virtio/vhost_user.h"
#include "vmm/virtio/vhost_user_backend.h"
#include "vmm/virtio/virtio.h"
#include "vmm/vm.h"

#define FS_REQUEST_QUEUES 1
#define FS_QUEUES (1 + FS_REQUEST_QUEUES) /* the hiprio queue, then the request queues */
#define FS_QUEUE_SIZE 1024
#define FS_TAG_MAX 36
#define VIRTIOFSD_DEFAULT "/usr/lib/qemu/virtiofsd"
/* Another virtiofsd binary (and tests use it for a missing one). */
#define VIRTIOFSD_ENV "CAPSULE_VIRTIOFSD"
/* How long a dying back-end gets to be reaped, for its exit status in the message. */
#define FS_EXIT_WAIT_MS 1000

/* What the back-end must offer: what the driver may accept from capsule's core. */
#define FS_BACKEND_FEATURES                                                                                      \
        ((1ULL << VIRTIO_F_VERSION_1) | (1ULL << VIRTIO_RING_F_INDIRECT_DESC) | (1ULL << VIRTIO_RING_F_EVENT_IDX))

struct fs;

struct fs_kick {
        struct fs *fs;
        unsigned int q;
};

struct fs {
        struct virtio_dev dev;
        struct virtio_fs_config config;
        char setting[24];   /* "share[0]": every message starts with it */
        const char *tag;
        struct vm_devices *ctx;
        struct vhost_user vu;
        struct vhost_user_backend backend; /* pid 0: a socket the user gave */
        bool started[FS_QUEUES];
        /* The handshake's thread and its outcome: 0 while it runs, 1 done, -1 failed, under
         * ready_lock. Until it ends only that thread uses vu and backend. */
        pthread_t handshake;
        bool handshake_started;
        pthread_mutex_t ready_lock;
        pthread_cond_t ready_cond;
        int ready;
        bool watching;      /* the socket is on the event loop */
        bool backend_gone;  /* under dev.lock */
        /* Once the back-end is gone: capsule answers the queues itself (under dev.lock). */
        struct fs_kick kicks[FS_QUEUES];
        bool polling[FS_QUEUES];
        struct virtq_chain chain;
};

static void fs_stop_rings(struct fs *fs)
{
        for (unsigned int q = 0; q < FS_QUEUES; q++) {
                if (!fs->started[q])
                        continue;
                fs->started[q] = false;
                cleanup_error cap_error_t err = NULL;
                uint16_t base;
                if (!fs->backend_gone && !fs->vu.broken && vhost_user_vring_stop(&fs->vu, q, &base, &err) < 0)
                        log_warning("%s", err->msg);
        }
}

/* The driver's DRIVER_OK (a vCPU, dev.lock held) waits for the handshake: at most its
 * per-message timeouts, and the handshake's thread takes no lock of the device's. Whether
 * it succeeded. */
static bool fs_wait_ready(struct fs *fs)
{
        pthread_mutex_lock(&fs->ready_lock);
        while (fs->ready == 0)
                pthread_cond_wait(&fs->ready_cond, &fs->ready_lock);
        int ready = fs->ready;
        pthread_mutex_unlock(&fs->ready_lock);
        return ready > 0;
}

static int fs_activate(struct virtio_dev *dev, cap_error_t *err)
{
        struct fs *fs = dev->opaque;
        /* A failed handshake has stopped the VM with its own message already; the rings are
         * left alone, and the device gets no second one. */
        if (!fs_wait_ready(fs))
                return 0;
        if (fs->backend_gone)
                return cap_fail(err, 0, "%s: the vhost-user back-end is gone", fs->setting);
        if (vhost_user_set_features(&fs->vu, dev->driver_features, err) < 0)
                return -1;
        for (unsigned int q = 0; q < dev->n_queues; q++) {
                const struct virtq *vq = &dev->queues[q];
                if (!vq->ready)
                        continue;
                struct vhost_user_vring v = {
                        .size = vq->num, /* the size virtq_enable checked the rings for */
                        .desc_gpa = vq->desc_gpa,
                        .avail_gpa = vq->avail_gpa,
                        .used_gpa = vq->used_gpa,
                        .base = vq->last_avail,
                };
                if (virtio_queue_fds(dev, q, &v.kick_fd, &v.call_fd, err) < 0 ||
                    vhost_user_vring_start(&fs->vu, q, &v, dev->ctx->mem, err) < 0) {
                        fs_stop_rings(fs);
                        return -1;
                }
                fs->started[q] = true;
        }
        return 0;
}

static void fs_stop_polling(struct fs *fs)
{
        for (unsigned int q = 0; q < FS_QUEUES; q++) {
                if (fs->polling[q])
                        evloop_del(fs->ctx->loop, fs->dev.io[q].kick_fd);
                fs->polling[q] = false;
        }
}

static void fs_reset(struct virtio_dev *dev)
{
        struct fs *fs = dev->opaque;
        fs_stop_polling(fs);
        fs_stop_rings(fs);
}

/* Answer every request on queue q with EIO (dev.lock held). A request queue's chain
 * starts with the FUSE header and has room for the reply's; a hiprio FORGET has no
 * reply. Only the header's unique id is read, and only through the chain helpers. */
static void fs_fail_requests(struct fs *fs, unsigned int q)
{
        struct virtq_chain *c = &fs->chain;
        bool any = false;
        while (virtio_queue_pop(&fs->dev, q, c) == 1) {
                struct fuse_in_header in;
                uint32_t written = 0;
                if (c->in_len >= sizeof(struct fuse_out_header) &&
                    virtq_chain_read(c, 0, &in, sizeof(in)) == sizeof(in)) {
                        struct fuse_out_header out = {
                                .len = sizeof(out),
                                .error = -EIO,
                                .unique = in.unique,
                        };
                        written = (uint32_t)virtq_chain_write(c, 0, &out, sizeof(out));
                }
                virtio_queue_push(&fs->dev, q, c->head, written);
                any = true;
        }
        if (any)
                virtio_queue_signal(&fs->dev, q);
}

static void fs_kick_ready(void *opaque, uint32_t events)
{
        struct fs_kick *k = opaque;
        uint64_t n;
        (void)events;
        if (read(k->fs->dev.io[k->q].kick_fd, &n, sizeof(n)) < 0 && errno != EAGAIN)
                return;
        virtio_dev_lock(&k->fs->dev);
        fs_fail_requests(k->fs, k->q);
        virtio_dev_unlock(&k->fs->dev);
}

/* The back-end is gone while its rings run (dev.lock held): serve them from here on. */
static void fs_take_over(struct fs *fs)
{
        for (unsigned int q = 0; q < FS_QUEUES; q++) {
                if (!fs->started[q])
                        continue;
                fs->started[q] = false;
                virtio_queue_adopt(&fs->dev, q);
                fs->kicks[q] = (struct fs_kick){ .fs = fs, .q = q };
                cleanup_error cap_error_t err = NULL;
                if (evloop_add(fs->ctx->loop, fs->dev.io[q].kick_fd, EPOLLIN, fs_kick_ready, &fs->kicks[q], &err) < 0) {
                        virtio_dev_fail(&fs->dev, err->msg);
                        return;
                }
                fs->polling[q] = true;
                fs_fail_requests(fs, q);
        }
}

/* The back-end's socket hung up (event loop thread): it exited or crashed. */
static void fs_backend_hup(void *opaque, uint32_t events)
{
        struct fs *fs = opaque;
        (void)events;
        evloop_del(fs->ctx->loop, fs->vu.fd);
        virtio_dev_lock(&fs->dev);
        fs->watching = false;
        if (!fs->backend_gone) {
                fs->backend_gone = true;
                fs->vu.broken = true;
                int status;
                char how[96];
                if (fs->backend.pid > 0) {
                        pid_t pid = fs->backend.pid;
                        if (vhost_user_backend_exited(&fs->backend, FS_EXIT_WAIT_MS, &status))
                                snprintf(how, sizeof(how), "virtiofsd (pid %d) %s", (int)pid,
                                         vhost_user_backend_describe(status, (char[64]){ 0 }, 64));
                        else
                                snprintf(how, sizeof(how), "virtiofsd (pid %d) closed its connection", (int)pid);
                } else {
                        snprintf(how, sizeof(how), "the vhost-user back-end closed its connection");
                }
                log_warning("%s: %s; the guest's file system `%s` fails with EIO from now on", fs->setting, how,
                            fs->tag);
                fs_take_over(fs);
        }
        virtio_dev_unlock(&fs->dev);
}

static void fs_free(struct fs *fs)
{
        if (fs->handshake_started) {
                pthread_mutex_lock(&fs->ready_lock);
                bool running = fs->ready == 0;
                pthread_mutex_unlock(&fs->ready_lock);
                /* A back-end that has not answered yet: its next wait ends at once. */
                if (running)
                        shutdown(fs->vu.fd, SHUT_RDWR);
                pthread_join(fs->handshake, NULL);
        }
        pthread_cond_destroy(&fs->ready_cond);
        pthread_mutex_destroy(&fs->ready_lock);
        fs_stop_polling(fs);
        if (fs->watching)
                evloop_del(fs->ctx->loop, fs->vu.fd);
        vhost_user_close(&fs->vu);
        vhost_user_backend_stop(&fs->backend);
        free(fs);
}

static void fs_destroy(struct virtio_dev *dev)
{
        fs_free(dev->opaque);
}

static const struct virtio_dev_ops fs_ops = {
        .activate = fs_activate,
        .reset = fs_reset,
        .destroy = fs_destroy,
};

/* Start virtiofsd on share->dir; *sock is connected to it. */
static int fs_spawn(struct fs *fs, const struct vm_share *share, int *sock, cap_error_t *err)
{
        struct stat st;
        if (stat(share->dir, &st) < 0)
                return cap_fail(err, errno, "%s: %s", fs->setting, share->dir);
        if (!S_ISDIR(st.st_mode))
                return cap_fail(err, 0, "%s: %s is not a directory", fs->setting, share->dir);
        const char *bin = getenv(VIRTIOFSD_ENV);
        bool custom = bin && *bin;
        if (!custom)
                bin = VIRTIOFSD_DEFAULT;
        /* Absolute: virtiofsd looks the source up from its own sandbox. Without a comma: its -o
         * list has no quoting, so one would start options of the path's choosing. */
        cleanup_free char *dir = realpath(share->dir, NULL);
        if (!dir)
                return cap_fail(err, errno, "%s: %s", fs->setting, share->dir);
        if (strchr(dir, ','))
                return cap_fail(err, 0, "%s: the directory `%s` has a comma, which virtiofsd cannot share", fs->setting, dir);
        cleanup_free char *fd_arg = xasprintf("--fd=%d", VHOST_USER_BACKEND_LISTEN_FD);
        cleanup_free char *source = xasprintf("source=%s", dir);
        /* The namespace sandbox (its own mount, pid and net namespaces, pivoted into the
         * directory) keeps a guest from reaching outside it; cache=auto lets host-side
         * changes show up in the guest; only its errors reach capsule's stderr. */
        char *argv[] = { (char *)bin, fd_arg, "-o", source, "-o", "sandbox=namespace", "-o", "cache=auto",
                         "-o", "log_level=err", NULL };
        if (vhost_user_backend_start(&fs->backend, argv, sock, err) < 0)
                return cap_error_prefix(err, "%s: virtiofsd (%s)", fs->setting,
                                        custom ? "from " VIRTIOFSD_ENV : "apt-get install qemu-system-common");
        return 0;
}

/* Connect to the back-end (start virtiofsd, or the socket given); the handshake follows. */
static int fs_connect(struct fs *fs, const struct vm_share *share, cap_error_t *err)
{
        int sock = -1;
        if (share->socket) {
                if (vhost_user_connect(share->socket, &sock, err) < 0)
                        return cap_error_prefix(err, "%s", fs->setting);
        } else if (fs_spawn(fs, share, &sock, err) < 0) {
                return -1;
        }
        vhost_user_init(&fs->vu, sock, fs->setting);
        return 0;
}

/* The handshake and the memory table, while nothing else talks to the back-end. */
static int fs_handshake(struct fs *fs, cap_error_t *err)
{
        int rc = vhost_user_handshake(&fs->vu, err);
        if (rc == 0 && (fs->vu.features & FS_BACKEND_FEATURES) != FS_BACKEND_FEATURES)
                rc = cap_fail(err, 0, "%s: the vhost-user back-end lacks feature bits %#llx", fs->setting,
                              (unsigned long long)(FS_BACKEND_FEATURES & ~fs->vu.features));
        if (rc == 0)
                rc = vhost_user_set_mem_table(&fs->vu, fs->ctx->mem, err);
        int status;
        if (rc < 0 && fs->backend.pid > 0 && vhost_user_backend_exited(&fs->backend, FS_EXIT_WAIT_MS, &status)) {
                /* Its exit is the news; the protocol error only says where it happened. */
                char how[64];
                size_t skip = strlen(fs->setting) + 2;
                cleanup_free char *detail = xstrdup((*err)->msg);
                cap_error_free(err);
                cap_fail(err, 0, "%s: virtiofsd %s before it was ready (%s)", fs->setting,
                         vhost_user_backend_describe(status, how, sizeof(how)),
                         strncmp(detail, fs->setting, skip - 2) == 0 ? detail + skip : detail);
        }
        if (rc == 0) {
                /* Before the watch exists: its hang-up handler is the one to clear it. */
                fs->watching = true;
                if (evloop_add(fs->ctx->loop, fs->vu.fd, EPOLLRDHUP, fs_backend_hup, fs, err) < 0) {
                        fs->watching = false;
                        rc = -1;
                }
        }
        return rc;
}

static void *fs_handshake_main(void *arg)
{
        struct fs *fs = arg;
        cleanup_error cap_error_t err = NULL;
        int rc = fs_handshake(fs, &err);
        /* The VM stops first: a DRIVER_OK waiting for this then finds it stopping. */
        if (rc < 0)
                fs->ctx->fail(fs->ctx->vm, err->msg);
        pthread_mutex_lock(&fs->ready_lock);
        fs->ready = rc < 0 ? -1 : 1;
        pthread_cond_broadcast(&fs->ready_cond);
        pthread_mutex_unlock(&fs->ready_lock);
        return NULL;
}

static int fs_check_tag(const struct vm_config *cfg, int i, cap_error_t *err)
{
        const char *tag = cfg->shares[i].tag;
        size_t len = strlen(tag);
        if (len == 0 || len > FS_TAG_MAX)
                return cap_fail(err, 0, "share[%d]: the tag `%s` is not 1 to %d bytes", i, tag, FS_TAG_MAX);
        for (int j = 0; j < i; j++)
                if (strcmp(cfg->shares[j].tag, tag) == 0)
                        return cap_fail(err, 0, "share[%d]: the tag `%s` is share[%d]'s too", i, tag, j);
        return 0;
}

static int fs_add(struct vm_devices *ctx, int i, cap_error_t *err)
{
        const struct vm_share *share = &ctx->config->shares[i];
        if (fs_check_tag(ctx->config, i, err) < 0)
                return -1;
        struct fs *fs = xmalloc0(sizeof(*fs));
        fs->ctx = ctx;
        fs->tag = share->tag;
        fs->vu.fd = -1;
        fs->backend.pidfd = -1;
        pthread_mutex_init(&fs->ready_lock, NULL);
        pthread_cond_init(&fs->ready_cond, NULL);
        snprintf(fs->setting, sizeof(fs->setting), "share[%d]", i);
        memcpy(fs->config.tag, share->tag, strlen(share->tag));
        fs->config.num_request_queues = FS_REQUEST_QUEUES; /* little-endian host */

        struct virtio_dev *dev = &fs->dev;
        snprintf(dev->name, sizeof(dev->name), "virtio-fs%d", i);
        dev->device_id = VIRTIO_ID_FS;
        dev->n_queues = FS_QUEUES;
        dev->queue_max = FS_QUEUE_SIZE;
        dev->config = &fs->config;
        dev->config_len = sizeof(fs->config);
        dev->vhost = true;
        dev->ops = &fs_ops;
        dev->opaque = fs;

        if (fs_connect(fs, share, err) < 0) {
                fs_free(fs);
                return -1;
        }
        if (virtio_dev_add(ctx, dev, err) < 0) {
                fs_free(fs);
                return cap_error_prefix(err, "%s", fs->setting);
        }
        return 0;
}

static int fs_init(struct vm_devices *ctx, cap_error_t *err)
{
        for (int i = 0; i < ctx->config->n_shares; i++)
                if (fs_add(ctx, i, err) < 0)
                        return -1;
        return 0;
}

static int fs_start(struct vm_devices *ctx, cap_error_t *err)
{
        for (struct virtio_dev *dev = ctx->virtio_devs; dev; dev = dev->next) {
                if (dev->ops != &fs_ops)
                        continue;
                struct fs *fs = dev->opaque;
                int e = pthread_create(&fs->handshake, NULL, fs_handshake_main, fs);
                if (e != 0)
                        return cap_fail(err, e, "%s: start the vhost-user handshake's thread", fs->setting);
                fs->handshake_started = true;
        }
        return 0;
}

DEVICE_REGISTER(virtio_fs, DEVICE_ORDER_VIRTIO, .name = "virtio-fs", .init = fs_init, .start = fs_start)
