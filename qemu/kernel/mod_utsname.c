/*
 * mod_utsname.c - built-in module "utsname": uname(2) and sethostname(2).
 */
#define EXTABLE_SECTION "__ex_table_utsname"
#include "types.h"
#include "compiler.h"
#include "kernel.h"
#include "errno.h"
#include "string.h"
#include "uaccess.h"
#include "module.h"
#include "unistd.h"
#include "version.h"

#define UTS_LEN 65

struct new_utsname {
	char sysname[UTS_LEN];
	char nodename[UTS_LEN];
	char release[UTS_LEN];
	char version[UTS_LEN];
	char machine[UTS_LEN];
	char domainname[UTS_LEN];
};

static struct new_utsname system_utsname = {
	.sysname = "Linux",
	.nodename = "lab",
	.release = UTS_RELEASE,
	.version = "#1 " LAB_VARIANT,
	.machine = "i386",
	.domainname = "(none)",
};

static asmlinkage long sys_newuname(struct new_utsname *name)
{
	if (copy_to_user(name, &system_utsname, sizeof(*name)))
		return -EFAULT;
	return 0;
}

/* uname (109): the 2.0 struct, five fields of 65 bytes. */
static asmlinkage long sys_olduname(struct new_utsname *name)
{
	if (copy_to_user(name, &system_utsname, 5 * UTS_LEN))
		return -EFAULT;
	return 0;
}

static asmlinkage long sys_sethostname(const char *name, int len)
{
	char tmp[UTS_LEN];

	if (len < 0 || len >= UTS_LEN)
		return -EINVAL;
	if (copy_from_user(tmp, name, len))
		return -EFAULT;
	tmp[len] = '\0';
	memcpy(system_utsname.nodename, tmp, len + 1);
	return 0;
}

static int utsname_init(void)
{
	register_syscall(__NR_newuname, (syscall_fn)sys_newuname);
	register_syscall(__NR_sethostname, (syscall_fn)sys_sethostname);
	register_syscall(__NR_olduname, (syscall_fn)sys_olduname);
	return 0;
}

DECLARE_BUILTIN_MODULE(utsname, utsname_init);
