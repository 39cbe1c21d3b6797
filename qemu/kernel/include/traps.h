/* traps.c */
#ifndef _LAB_TRAPS_H
#define _LAB_TRAPS_H
#include "compiler.h"
struct pt_regs;
__noreturn void die(const char *str, struct pt_regs *regs, long err);
void trap_init(void);
#endif
