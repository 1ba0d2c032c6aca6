#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "check.h"
#include "common/util.h"
#include "vmm/kvm.h"

static char *fake_sys_module(const char *const *modules)
{
        char tmpl[] = "/tmp/capsule-sysmod-XXXXXX";
        char *dir = mkdtemp(tmpl) ? xstrdup(tmpl) : NULL;
        for (; dir && *modules; modules++) {
                cleanup_free char *p = xasprintf("%s/%s", dir, *modules);
                mkdir(p, 0755);
        }
        return dir;
}

static void remove_tree(const char *dir)
{
        cleanup_error cap_error_t err = NULL;
        rm_rf(dir, &err);
}

TEST(flavour_pvm)
{
        const char *mods[] = { "kvm", "kvm_pvm", NULL };
        cleanup_free char *dir = fake_sys_module(mods);
        CHECK(dir);
        enum kvm_flavour f = kvm_flavour_at(dir);
        remove_tree(dir);
        CHECK(f == KVM_FLAVOUR_PVM);
}

TEST(flavour_hardware)
{
        const char *intel[] = { "kvm", "kvm_intel", NULL };
        const char *amd_and_pvm[] = { "kvm", "kvm_amd", "kvm_pvm", NULL };
        const char *none[] = { NULL };
        cleanup_free char *a = fake_sys_module(intel);
        cleanup_free char *b = fake_sys_module(amd_and_pvm);
        cleanup_free char *c = fake_sys_module(none);
        CHECK(a && b && c);
        enum kvm_flavour fa = kvm_flavour_at(a), fb = kvm_flavour_at(b), fc = kvm_flavour_at(c);
        remove_tree(a);
        remove_tree(b);
        remove_tree(c);
        CHECK(fa == KVM_FLAVOUR_HW);
        CHECK(fb == KVM_FLAVOUR_HW);
        CHECK(fc == KVM_FLAVOUR_HW);
}

TEST(open_missing_device)
{
        cleanup_error cap_error_t err = NULL;
        CHECK(kvm_open("/nonexistent/kvm", &err) == -1);
        CHECK_STR(err->msg, "/nonexistent/kvm does not exist: KVM is not available on this host");
}

TEST(open_not_kvm)
{
        cleanup_error cap_error_t err = NULL;
        CHECK(kvm_open("/dev/null", &err) == -1);
        CHECK(err && strstr(err->msg, "API version"));
}

TEST(open_real_kvm)
{
        if (access("/dev/kvm", R_OK | W_OK) < 0)
                SKIP("needs read-write /dev/kvm");
        cleanup_error cap_error_t err = NULL;
        int fd = kvm_open(NULL, &err);
        CHECK(fd >= 0);
        CHECK(kvm_cap(fd, 0x7fffffff) == 0);
        close(fd);
}
