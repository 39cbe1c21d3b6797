/*
 * The task: one process (init) plus the bookkeeping 2.x kept in
 * task_struct.  `signal` and `blocked` sit at fixed offsets because the
 * return-to-user path in entry.S tests them (TSK_SIGNAL, TSK_BLOCKED).
 */
#ifndef _LAB_SCHED_H
#define _LAB_SCHED_H

#define TSK_STATE   0
#define TSK_SIGNAL  4
#define TSK_BLOCKED 8

#define KERNEL_STACK_SIZE 8192

#ifndef __ASSEMBLER__
#include "types.h"
#include "compiler.h"
#include "signal.h"

#define TASK_RUNNING 0
#define TASK_ZOMBIE  4

/* The per-task fault record 2.x kept in tsk->tss (see do_page_fault). */
struct thread_struct {
	unsigned long esp0;	/* kernel stack top, loaded into the TSS */
	unsigned long cr2;	/* fault address of the last user fault */
	unsigned long trap_no;	/* its vector */
	unsigned long error_code; /* its error code */
};

struct mm_struct;

struct task_struct {
	volatile long state;	/* TSK_STATE */
	sigset_t signal;	/* TSK_SIGNAL: pending */
	sigset_t blocked;	/* TSK_BLOCKED */
	pid_t pid;
	pid_t ppid;
	int exit_code;
	char comm[16];
	struct mm_struct *mm;
	struct signal_struct *sig;
	/* tick accounting, by the privilege level the timer interrupted */
	long utime, stime, cutime, cstime;
	unsigned long start_time;
	struct thread_struct tss;
};

/* A task and its kernel stack share one 8 KiB block, like 2.x. */
union task_union {
	struct task_struct task;
	unsigned long stack[KERNEL_STACK_SIZE / sizeof(long)];
};

extern struct task_struct *current;
extern union task_union init_task_union;

__noreturn void do_exit(int code);
#endif

#endif
