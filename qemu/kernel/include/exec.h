/* exec.c */
#ifndef _LAB_EXEC_H
#define _LAB_EXEC_H
#include "compiler.h"

#define MAX_INIT_ARGS 32
#define MAX_INIT_ENVS 32

struct task_struct;
struct pt_regs;
int exec_init(struct task_struct *tsk, const void *image, unsigned long size,
	      char **argv, int argc, char **envp, int envc,
	      unsigned long *entry, unsigned long *sp);
struct pt_regs *start_thread(struct task_struct *tsk, unsigned long eip,
			     unsigned long esp);
__noreturn void ret_to_user(struct pt_regs *regs);

#endif
