/* A VM container's block-device rootfs (src/sandbox/sandbox_rootfs.c): config.json is hostile, so
 * its annotation may only name a regular file inside the bundle, reached without a symlink. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include "check.h"
#include "common/util.h"
#include "sandbox/sandbox_internal.h"

#define PREFIX "annotation " SANDBOX_ROOTFS_BLOCK_ANNOTATION ": "

/* A fresh bundle directory, removed with its contents by the cleanup attribute. */
static char *bundle_new(void)
{
        char dir[] = "/tmp/capsule-rootfs-XXXXXX";
        return mkdtemp(dir) ? xstrdup(dir) : NULL;
}

static void bundle_removep(char **dir)
{
        cleanup_error cap_error_t ignored = NULL;
        if (*dir)
                rm_rf(*dir, &ignored);
        free(*dir);
}
#define cleanup_bundle __attribute__((cleanup(bundle_removep)))

static bool file_at(const char *bundle, const char *name, const char *text)
{
        cleanup_free char *path = xasprintf("%s/%s", bundle, name);
        cleanup_error cap_error_t err = NULL;
        return write_file(path, text, strlen(text), &err) == 0;
}

/* sandbox_rootfs_open() with the annotation set to name (NULL: none) and root.readonly as
 * readonly says: its result, the fd in *fd, and the error's message in *why (NULL when it
 * succeeded). */
static bool readonly;

static int open_named(const char *bundle, const char *name, int *fd, char **why)
{
        struct spec spec = { .root_readonly = readonly };
        char *annotations[] = { SANDBOX_ROOTFS_BLOCK_ANNOTATION, (char *)name, NULL };
        if (name)
                spec.annotations = annotations;
        cap_error_t err = NULL;
        int r = sandbox_rootfs_open(&spec, bundle, fd, &err);
        *why = err ? xstrdup(err->msg) : NULL;
        cap_error_free(&err);
        return r;
}

static bool refused(const char *bundle, const char *name, const char *needle)
{
        int fd = 123;
        cleanup_free char *why = NULL;
        bool ok = open_named(bundle, name, &fd, &why) < 0 && fd == -1 && why && strstr(why, needle) &&
                  strncmp(why, PREFIX, strlen(PREFIX)) == 0;
        if (!ok)
                fprintf(stderr, "%s: %s\n", name, why ? why : "(accepted)");
        return ok;
}

TEST(rootfs_none_without_the_annotation)
{
        cleanup_bundle char *bundle = bundle_new();
        int fd = 123;
        cleanup_free char *why = NULL;
        CHECK(bundle && open_named(bundle, NULL, &fd, &why) == 0 && fd == -1 && why == NULL);
}

TEST(rootfs_a_regular_file_in_the_bundle)
{
        cleanup_bundle char *bundle = bundle_new();
        CHECK(bundle && file_at(bundle, "disk.img", "image"));
        cleanup_free char *images = xasprintf("%s/images", bundle);
        CHECK(mkdir(images, 0755) == 0 && file_at(bundle, "images/root.ext4", "nested"));
        int fd;
        cleanup_free char *why = NULL;
        CHECK(open_named(bundle, "disk.img", &fd, &why) == 0 && fd >= 0);
        /* O_PATH: the VMM reopens it through /proc/self/fd with the access it needs. */
        CHECK((fcntl(fd, F_GETFL) & O_PATH) == O_PATH && (fcntl(fd, F_GETFD) & FD_CLOEXEC));
        char path[64], text[16] = { 0 };
        snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
        int rd = open(path, O_RDONLY | O_CLOEXEC);
        CHECK(rd >= 0 && read(rd, text, sizeof(text) - 1) == 5);
        CHECK_STR(text, "image");
        close(rd);
        close(fd);
        CHECK(open_named(bundle, "./images/root.ext4", &fd, &why) == 0 && fd >= 0);
        close(fd);
        /* A `..` that stays inside is no escape. */
        CHECK(open_named(bundle, "images/../disk.img", &fd, &why) == 0 && fd >= 0);
        close(fd);
}

TEST(rootfs_refuses_what_leaves_the_bundle)
{
        cleanup_bundle char *bundle = bundle_new();
        CHECK(bundle);
        CHECK(refused(bundle, "../../../../etc/shadow", "`../../../../etc/shadow` leads out of the bundle directory"));
        CHECK(refused(bundle, "/etc/shadow", "`/etc/shadow` is not a relative path inside the bundle directory"));
        CHECK(refused(bundle, "", "is not a relative path inside the bundle directory"));
        cleanup_free char *link = xasprintf("%s/link.img", bundle), *dirlink = xasprintf("%s/etc", bundle);
        cleanup_free char *inner = xasprintf("%s/inner.img", bundle);
        CHECK(symlink("/etc/passwd", link) == 0);
        CHECK(refused(bundle, "link.img", "`link.img` is or passes through a symbolic link"));
        CHECK(symlink("/etc", dirlink) == 0);
        CHECK(refused(bundle, "etc/passwd", "is or passes through a symbolic link"));
        /* Not even one that points inside is followed. */
        CHECK(file_at(bundle, "target.img", "x") && symlink("target.img", inner) == 0);
        CHECK(refused(bundle, "inner.img", "is or passes through a symbolic link"));
        CHECK(refused(bundle, "missing.img", "`missing.img` does not exist in the bundle directory"));
}

TEST(rootfs_refuses_what_is_no_image_file)
{
        cleanup_bundle char *bundle = bundle_new();
        CHECK(bundle);
        cleanup_free char *dir = xasprintf("%s/dir", bundle), *fifo = xasprintf("%s/fifo", bundle);
        cleanup_free char *one = xasprintf("%s/one.img", bundle), *two = xasprintf("%s/two.img", bundle);
        CHECK(mkdir(dir, 0755) == 0);
        CHECK(refused(bundle, "dir", "`dir` is not a regular file (a disk image)"));
        /* Opening a FIFO for reading would block: O_PATH does not. */
        CHECK(mkfifo(fifo, 0600) == 0);
        CHECK(refused(bundle, "fifo", "is not a regular file (a disk image)"));
        CHECK(file_at(bundle, "one.img", "x") && link(one, two) == 0);
        CHECK(refused(bundle, "two.img", "`two.img` has other hard links"));
}

/* A device node in a hostile bundle could be the host's disk; O_PATH never opens it for real. */
TEST(rootfs_refuses_a_device_node)
{
        if (geteuid() != 0)
                SKIP("making a device node takes root");
        cleanup_bundle char *bundle = bundle_new();
        CHECK(bundle);
        cleanup_free char *dev = xasprintf("%s/null", bundle);
        CHECK(mknod(dev, S_IFCHR | 0600, makedev(1, 3)) == 0);
        CHECK(refused(bundle, "null", "is not a regular file (a disk image)"));
}

/* As the VMM locks an image: exclusively, or shared when read-only. */
TEST(rootfs_refuses_an_image_another_vm_uses)
{
        cleanup_bundle char *bundle = bundle_new();
        CHECK(bundle && file_at(bundle, "disk.img", "image"));
        cleanup_free char *path = xasprintf("%s/disk.img", bundle);
        cleanup_close int holder = open(path, O_RDONLY | O_CLOEXEC);
        CHECK(holder >= 0 && flock(holder, LOCK_SH) == 0);
        readonly = false;
        CHECK(refused(bundle, "disk.img", "`disk.img` is in use by another VM or program (it is locked)"));
        /* Readers share the image. */
        readonly = true;
        int fd;
        cleanup_free char *why = NULL;
        CHECK(open_named(bundle, "disk.img", &fd, &why) == 0 && fd >= 0);
        close(fd);
        CHECK(flock(holder, LOCK_EX) == 0);
        CHECK(refused(bundle, "disk.img", "is in use by another VM or program"));
        /* The check holds no lock of its own: a writer may come after. */
        CHECK(flock(holder, LOCK_UN) == 0);
        readonly = false;
        CHECK(open_named(bundle, "disk.img", &fd, &why) == 0 && fd >= 0);
        cleanup_close int again = open(path, O_RDONLY | O_CLOEXEC);
        CHECK(again >= 0 && flock(again, LOCK_EX | LOCK_NB) == 0);
        close(fd);
}
