/* printk, panic and friends. */
#ifndef _LAB_KERNEL_H
#define _LAB_KERNEL_H
#include "types.h"
#include "compiler.h"

int printk(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
int vsnprintf(char *buf, size_t size, const char *fmt, va_list ap);
int snprintf(char *buf, size_t size, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
void console_write(const char *s, size_t n);
void serial_init(void);

__noreturn void panic(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
__noreturn void qemu_exit(unsigned int value);
__noreturn void machine_restart(void);

extern const char linux_banner[];
extern char saved_command_line[];

/* labtest= switches from the command line */
extern int labtest_oops;
extern int labtest_hang;

#define min(a, b) ((a) < (b) ? (a) : (b))
#define max(a, b) ((a) > (b) ? (a) : (b))

/* a system call result that is really -errno */
#define IS_ERR_VALUE(x) ((unsigned long)(x) >= (unsigned long)-4095)

#endif
