/* Basic fixed-size types for a freestanding i386 kernel. */
#ifndef _LAB_TYPES_H
#define _LAB_TYPES_H

typedef unsigned char u8;
typedef unsigned short u16;
typedef unsigned int u32;
typedef unsigned long long u64;
typedef signed char s8;
typedef short s16;
typedef int s32;
typedef long long s64;

typedef unsigned int size_t;
typedef int ssize_t;
typedef long clock_t;
typedef long time_t;
typedef int pid_t;

#define NULL ((void *)0)

typedef __builtin_va_list va_list;
#define va_start(ap, last) __builtin_va_start(ap, last)
#define va_arg(ap, type) __builtin_va_arg(ap, type)
#define va_end(ap) __builtin_va_end(ap)

#define offsetof(t, m) __builtin_offsetof(t, m)

#endif
