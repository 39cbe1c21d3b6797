/*
 * module.c - the module list.
 *
 * 2.x kept loaded modules on module_list, each with its own exception table,
 * and search_exception_table walked all of them.  The lab kernel has no
 * module loader; instead a few small drivers are built in as "modules"
 * (mod_*.c), each with its own exception-table section, and registered here
 * at boot in a fixed order.  A failed search therefore walks the kernel's
 * table and then every module's.
 */
#include "types.h"
#include "compiler.h"
#include "kernel.h"
#include "module.h"

struct module *module_list;

extern struct module clock_module, utsname_module, sysinfo_module;

/* Registration order: the last one registered is searched first (2.x). */
static struct module *const builtin_modules[] = {
	&clock_module,
	&utsname_module,
	&sysinfo_module,
};

int register_module(struct module *mod)
{
	int err;

	sort_extable(mod->ex_table_start, mod->ex_table_end);
	if (mod->init) {
		err = mod->init();
		if (err) {
			printk("module %s: init failed (%d)\n", mod->name, err);
			return err;
		}
	}
	mod->flags |= MOD_RUNNING;
	mod->next = module_list;
	module_list = mod;
	printk("module %s: %u exception table entries\n", mod->name,
	       (unsigned)(mod->ex_table_end - mod->ex_table_start));
	return 0;
}

void init_builtin_modules(void)
{
	unsigned int i;

	for (i = 0; i < ARRAY_SIZE(builtin_modules); i++)
		register_module(builtin_modules[i]);
}

/*
 * Room for replacement functions loaded by a debugger into the running
 * kernel (gdbfault --live-patch), as 2.x kept room for modules: zero-filled,
 * page-aligned, never touched by the kernel itself.  kernel.ld brackets it
 * with __livepatch_start / __livepatch_end so a System.map gives its size.
 */
char livepatch_area[16384] __attribute__((aligned(4096), section(".bss.livepatch")));
