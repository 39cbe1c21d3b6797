/*
 * Built-in "modules": drivers linked into the kernel image but registered at
 * boot the way 2.x registered loadable modules, each with its own exception
 * table.  search_exception_table searches the kernel's table and then walks
 * module_list, so a miss costs one binary search per table.
 */
#ifndef _LAB_MODULE_H
#define _LAB_MODULE_H
#include "uaccess.h"

struct module {
	struct module *next;
	const char *name;
	struct exception_table_entry *ex_table_start;
	struct exception_table_entry *ex_table_end;	/* one past the last */
	int (*init)(void);
	unsigned long flags;
};
#define MOD_RUNNING 1

extern struct module *module_list;
int register_module(struct module *mod);
void init_builtin_modules(void);

/*
 * Declares `struct module <name>_module` for a built-in module whose user
 * accesses were compiled with EXTABLE_SECTION "__ex_table_<name>"; the
 * linker script brackets that section with __start_/__stop_ symbols.
 */
#define DECLARE_BUILTIN_MODULE(modname, initfn)				\
	extern struct exception_table_entry				\
		__start___ex_table_##modname[], __stop___ex_table_##modname[]; \
	struct module modname##_module = {				\
		.name = #modname,					\
		.ex_table_start = __start___ex_table_##modname,		\
		.ex_table_end = __stop___ex_table_##modname,		\
		.init = initfn,						\
	}

/* Modules add their system calls here (sys.c). */
typedef long (*syscall_fn)();
int register_syscall(unsigned int nr, syscall_fn fn);

#endif
