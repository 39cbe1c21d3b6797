/*
 * extable.c - exception table lookup.
 *
 * The kernel's table (__ex_table, one entry per user-access instruction,
 * see uaccess.h) and each registered module's table are sorted by
 * instruction address at boot, then searched by binary search.  A lookup
 * walks the kernel table and then every module on module_list, so an
 * address that is in no table -- for example the user-mode eip of an
 * ordinary user page fault, in the vanilla fault order -- costs one failed
 * binary search per table.
 */
#include "types.h"
#include "compiler.h"
#include "kernel.h"
#include "uaccess.h"
#include "module.h"

/* The kernel table's last entry (set once the table is sorted). */
static const struct exception_table_entry *kernel_ex_table_last;

/* Binary search of one sorted table [first, last] (inclusive, 2.x style). */
unsigned long __probe search_one_table(const struct exception_table_entry *first,
				       const struct exception_table_entry *last,
				       unsigned long value)
{
	while (first <= last) {
		const struct exception_table_entry *mid = first + (last - first) / 2;
		if (mid->insn == value)
			return mid->fixup;
		if (mid->insn < value)
			first = mid + 1;
		else
			last = mid - 1;
	}
	return 0;
}

/* The fixup address for a faulting instruction, or 0 if there is none. */
unsigned long __probe search_exception_table(unsigned long addr)
{
	struct module *mp;
	unsigned long ret;

	/* the kernel proper first: it holds nearly every user access */
	ret = search_one_table(__start___ex_table, kernel_ex_table_last, addr);
	if (ret)
		return ret;

	/* then each module, most recently registered first */
	for (mp = module_list; mp != NULL; mp = mp->next) {
		if (mp->ex_table_start == mp->ex_table_end)
			continue;
		ret = search_one_table(mp->ex_table_start, mp->ex_table_end - 1, addr);
		if (ret)
			return ret;
	}
	return 0;
}

/*
 * Insertion sort by instruction address.  The linker emits entries in
 * object and function order, which gcc's function reordering (hot/cold
 * sections) does not keep monotonic, so the tables must be sorted once.
 */
void sort_extable(struct exception_table_entry *start,
		  struct exception_table_entry *end)
{
	struct exception_table_entry *p, *q, tmp;

	for (p = start + 1; p < end; p++) {
		tmp = *p;
		for (q = p; q > start && (q - 1)->insn > tmp.insn; q--)
			*q = *(q - 1);
		*q = tmp;
	}
}

void extable_init(void)
{
	sort_extable(__start___ex_table, __stop___ex_table);
	{
		/* one before the end symbol, computed without an out-of-bounds
		 * pointer expression the compiler would warn about */
		unsigned long last = (unsigned long)__stop___ex_table -
				     sizeof(struct exception_table_entry);
		kernel_ex_table_last = (const struct exception_table_entry *)last;
	}
	printk("Exception table: %u entries\n",
	       (unsigned)(__stop___ex_table - __start___ex_table));
}
