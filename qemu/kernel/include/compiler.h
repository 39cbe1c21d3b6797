/* Compiler attributes the kernel relies on. */
#ifndef _LAB_COMPILER_H
#define _LAB_COMPILER_H

/* cdecl on i386: arguments on the stack (the entry code depends on it). */
#define asmlinkage

/*
 * A probe point: a real, out-of-line, global function that GDB can put one
 * breakpoint on and see every call.  noinline keeps the body out of its
 * callers, noclone stops gcc from making .constprop/.isra copies with other
 * names, and "used" keeps it even if gcc thinks it could drop it.
 */
#define __probe __attribute__((noinline, noclone, used))

#define __always_inline inline __attribute__((always_inline))
#define __noreturn __attribute__((noreturn))
#define __packed __attribute__((packed))
#define __aligned(x) __attribute__((aligned(x)))
#define __section(s) __attribute__((section(s)))
#define __unused __attribute__((unused))

#define likely(x) __builtin_expect(!!(x), 1)
#define unlikely(x) __builtin_expect(!!(x), 0)

#define barrier() __asm__ __volatile__("" ::: "memory")

#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

#endif
