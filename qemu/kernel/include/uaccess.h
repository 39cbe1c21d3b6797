/*
 * Access to user memory, 2.x style: the kernel touches user addresses
 * directly, and every instruction that may fault on a bad user address has
 * an entry {insn, fixup} in an exception table.  When such an instruction
 * faults on an address no vm area allows, do_page_fault finds the entry
 * (search_exception_table) and resumes at the fixup, which makes the
 * primitive return -EFAULT (or the number of bytes it could not copy).
 *
 * A fault on a *valid* user address (not yet present, or a write to a
 * read-only PTE in a writable area) is resolved by handle_mm_fault and the
 * instruction simply runs again.
 *
 * The table entries go to the section named by EXTABLE_SECTION.  The kernel
 * proper uses "__ex_table"; a built-in module defines EXTABLE_SECTION to its
 * own "__ex_table_<name>" *before* including this header, so its user
 * accesses land in its own table (see module.c).  The primitives are
 * always_inline so each call site is a real, separate table entry.
 *
 * Every primitive stops at the first fault: one bad pointer costs exactly
 * one kernel-mode page fault.
 */
#ifndef _LAB_UACCESS_H
#define _LAB_UACCESS_H
#include "types.h"
#include "compiler.h"
#include "errno.h"
#include "page.h"
#include "string.h"

#ifndef EXTABLE_SECTION
#define EXTABLE_SECTION "__ex_table"
#endif

struct exception_table_entry {
	unsigned long insn;	/* address of the instruction that may fault */
	unsigned long fixup;	/* where to continue if it does */
};

/* asm fragments: an entry in this unit's table, and out-of-line fixup code */
#define _EX_ENTRY(from, to)						\
	".section " EXTABLE_SECTION ",\"a\"\n"				\
	"	.balign 4\n"						\
	"	.long " from "," to "\n"				\
	".previous\n"
#define _FIXUP_BEGIN ".section .fixup,\"ax\"\n"
#define _FIXUP_END   ".previous\n"

/*
 * access_ok: the whole range lies below TASK_SIZE.  Whether it is mapped
 * is found out by touching it.
 */
static __always_inline int access_ok(const void *addr, unsigned long size)
{
	unsigned long a = (unsigned long)addr;
	return size <= TASK_SIZE && a <= TASK_SIZE - size;
}

/* ---- single values -------------------------------------------------- */

static __always_inline int __get_user_1(u8 *dst, const void *uaddr)
{
	int err = 0;
	u8 v;
	__asm__ __volatile__(
		"1:	movb (%2),%1\n"
		"2:\n"
		_FIXUP_BEGIN
		"3:	movl %3,%0\n"
		"	xorb %1,%1\n"
		"	jmp 2b\n"
		_FIXUP_END
		_EX_ENTRY("1b", "3b")
		: "+r"(err), "=q"(v)
		: "r"(uaddr), "i"(-EFAULT));
	*dst = v;
	return err;
}

static __always_inline int __get_user_2(u16 *dst, const void *uaddr)
{
	int err = 0;
	u16 v;
	__asm__ __volatile__(
		"1:	movw (%2),%1\n"
		"2:\n"
		_FIXUP_BEGIN
		"3:	movl %3,%0\n"
		"	xorw %1,%1\n"
		"	jmp 2b\n"
		_FIXUP_END
		_EX_ENTRY("1b", "3b")
		: "+r"(err), "=r"(v)
		: "r"(uaddr), "i"(-EFAULT));
	*dst = v;
	return err;
}

static __always_inline int __get_user_4(u32 *dst, const void *uaddr)
{
	int err = 0;
	u32 v;
	__asm__ __volatile__(
		"1:	movl (%2),%1\n"
		"2:\n"
		_FIXUP_BEGIN
		"3:	movl %3,%0\n"
		"	xorl %1,%1\n"
		"	jmp 2b\n"
		_FIXUP_END
		_EX_ENTRY("1b", "3b")
		: "+r"(err), "=r"(v)
		: "r"(uaddr), "i"(-EFAULT));
	*dst = v;
	return err;
}

static __always_inline int __put_user_1(u8 v, void *uaddr)
{
	int err = 0;
	__asm__ __volatile__(
		"1:	movb %1,(%2)\n"
		"2:\n"
		_FIXUP_BEGIN
		"3:	movl %3,%0\n"
		"	jmp 2b\n"
		_FIXUP_END
		_EX_ENTRY("1b", "3b")
		: "+r"(err)
		: "q"(v), "r"(uaddr), "i"(-EFAULT)
		: "memory");
	return err;
}

static __always_inline int __put_user_2(u16 v, void *uaddr)
{
	int err = 0;
	__asm__ __volatile__(
		"1:	movw %1,(%2)\n"
		"2:\n"
		_FIXUP_BEGIN
		"3:	movl %3,%0\n"
		"	jmp 2b\n"
		_FIXUP_END
		_EX_ENTRY("1b", "3b")
		: "+r"(err)
		: "r"(v), "r"(uaddr), "i"(-EFAULT)
		: "memory");
	return err;
}

static __always_inline int __put_user_4(u32 v, void *uaddr)
{
	int err = 0;
	__asm__ __volatile__(
		"1:	movl %1,(%2)\n"
		"2:\n"
		_FIXUP_BEGIN
		"3:	movl %3,%0\n"
		"	jmp 2b\n"
		_FIXUP_END
		_EX_ENTRY("1b", "3b")
		: "+r"(err)
		: "r"(v), "r"(uaddr), "i"(-EFAULT)
		: "memory");
	return err;
}

extern int __bad_user_access_size(void);	/* never defined: link error */

/* __get_user / __put_user: no range check (the caller did access_ok). */
#define __get_user(x, ptr)						\
({									\
	int __gu_err;							\
	unsigned long __gu_val;						\
	__typeof__(ptr) __gu_ptr = (ptr);	/* evaluated once */	\
	switch (sizeof(*__gu_ptr)) {					\
	case 1: { u8 __v; __gu_err = __get_user_1(&__v, __gu_ptr); __gu_val = __v; break; } \
	case 2: { u16 __v; __gu_err = __get_user_2(&__v, __gu_ptr); __gu_val = __v; break; } \
	case 4: { u32 __v; __gu_err = __get_user_4(&__v, __gu_ptr); __gu_val = __v; break; } \
	default: __gu_err = __bad_user_access_size(); __gu_val = 0;	\
	}								\
	(x) = (__typeof__(*__gu_ptr))__gu_val;				\
	__gu_err;							\
})

#define __put_user(x, ptr)						\
({									\
	int __pu_err;							\
	__typeof__(ptr) __pu_ptr = (ptr);	/* evaluated once */	\
	switch (sizeof(*__pu_ptr)) {					\
	case 1: __pu_err = __put_user_1((u8)(unsigned long)(x), __pu_ptr); break;	\
	case 2: __pu_err = __put_user_2((u16)(unsigned long)(x), __pu_ptr); break;	\
	case 4: __pu_err = __put_user_4((u32)(unsigned long)(x), __pu_ptr); break;	\
	default: __pu_err = __bad_user_access_size();			\
	}								\
	__pu_err;							\
})

/* get_user / put_user: check the range first; ptr is evaluated once. */
#define get_user(x, ptr)						\
({									\
	int __g_err = -EFAULT;						\
	__typeof__(ptr) __g_ptr = (ptr);				\
	if (access_ok(__g_ptr, sizeof(*__g_ptr)))			\
		__g_err = __get_user((x), __g_ptr);			\
	else								\
		(x) = 0;						\
	__g_err;							\
})

#define put_user(x, ptr)						\
({									\
	int __p_err = -EFAULT;						\
	__typeof__(ptr) __p_ptr = (ptr);				\
	if (access_ok(__p_ptr, sizeof(*__p_ptr)))			\
		__p_err = __put_user((x), __p_ptr);			\
	__p_err;							\
})

/* ---- blocks --------------------------------------------------------- */

/*
 * Copy n bytes, words first then the tail.  A fault in either string
 * instruction leaves %ecx counting what was left; the fixup turns that into
 * bytes not copied and returns.  No retry: one fault, one answer.
 */
static __always_inline unsigned long __copy_user(void *to, const void *from,
						 unsigned long n)
{
	unsigned long cnt = n >> 2;
	__asm__ __volatile__(
		"0:	rep; movsl\n"
		"	movl %[tail],%%ecx\n"
		"1:	rep; movsb\n"
		"2:\n"
		_FIXUP_BEGIN
		"3:	leal (%[tail],%%ecx,4),%%ecx\n"
		"	jmp 2b\n"
		_FIXUP_END
		_EX_ENTRY("0b", "3b")
		_EX_ENTRY("1b", "2b")
		: "+c"(cnt), "+D"(to), "+S"(from)
		: [tail] "r"(n & 3)
		: "memory");
	return cnt;
}

/* Returns the number of bytes that could not be copied (0 = success). */
static __always_inline unsigned long copy_to_user(void *to, const void *from,
						  unsigned long n)
{
	if (!access_ok(to, n))
		return n;
	return __copy_user(to, from, n);
}

/* Like copy_to_user; the uncopied tail of the kernel buffer is zeroed. */
static __always_inline unsigned long copy_from_user(void *to, const void *from,
						    unsigned long n)
{
	unsigned long left = n;
	if (access_ok(from, n))
		left = __copy_user(to, from, n);
	if (unlikely(left))
		memset((char *)to + (n - left), 0, left);
	return left;
}

/* Zero n user bytes; returns the number not cleared. */
static __always_inline unsigned long clear_user(void *to, unsigned long n)
{
	unsigned long cnt;
	if (!access_ok(to, n))
		return n;
	cnt = n >> 2;
	__asm__ __volatile__(
		"0:	rep; stosl\n"
		"	movl %[tail],%%ecx\n"
		"1:	rep; stosb\n"
		"2:\n"
		_FIXUP_BEGIN
		"3:	leal (%[tail],%%ecx,4),%%ecx\n"
		"	jmp 2b\n"
		_FIXUP_END
		_EX_ENTRY("0b", "3b")
		_EX_ENTRY("1b", "2b")
		: "+c"(cnt), "+D"(to)
		: [tail] "r"(n & 3), "a"(0)
		: "memory");
	return cnt;
}

/*
 * Copy a NUL-terminated string of at most count bytes.  Returns its length
 * (count if no NUL was found within count bytes) or -EFAULT.
 */
static __always_inline long strncpy_from_user(char *dst, const char *src, long count)
{
	long res = count;
	long left = count;
	int dummy;
	if (!access_ok(src, 1))
		return -EFAULT;
	__asm__ __volatile__(
		"	testl %[left],%[left]\n"
		"	jz 2f\n"
		"0:	lodsb\n"
		"	stosb\n"
		"	testb %%al,%%al\n"
		"	jz 1f\n"
		"	decl %[left]\n"
		"	jnz 0b\n"
		"1:	subl %[left],%[res]\n"
		"2:\n"
		_FIXUP_BEGIN
		"3:	movl %[efault],%[res]\n"
		"	jmp 2b\n"
		_FIXUP_END
		_EX_ENTRY("0b", "3b")
		: [res] "+&d"(res), [left] "+&c"(left), "+S"(src), "+D"(dst), "=&a"(dummy)
		: [efault] "i"(-EFAULT)
		: "memory");
	return res;
}

/* extable.c */
unsigned long search_exception_table(unsigned long addr);
unsigned long search_one_table(const struct exception_table_entry *first,
			       const struct exception_table_entry *last,
			       unsigned long value);
void sort_extable(struct exception_table_entry *start,
		  struct exception_table_entry *end);
void extable_init(void);
extern struct exception_table_entry __start___ex_table[], __stop___ex_table[];

#endif
