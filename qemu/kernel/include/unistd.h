/* Linux i386 system call numbers the lab kernel implements. */
#ifndef _LAB_UNISTD_H
#define _LAB_UNISTD_H

#define __NR_exit         1
#define __NR_read         3
#define __NR_write        4
#define __NR_open         5
#define __NR_close        6
#define __NR_time        13
#define __NR_getpid      20
#define __NR_stime       25
#define __NR_kill        37
#define __NR_times       43
#define __NR_brk         45
#define __NR_ioctl       54
#define __NR_getppid     64
#define __NR_sigaction   67
#define __NR_sgetmask    68
#define __NR_ssetmask    69
#define __NR_sigpending  73
#define __NR_sethostname 74
#define __NR_setrlimit   75
#define __NR_getrlimit   76
#define __NR_getrusage   77
#define __NR_gettimeofday 78
#define __NR_reboot      88
#define __NR_mmap        90
#define __NR_munmap      91
#define __NR_olduname   109
#define __NR_sysinfo    116
#define __NR_sigreturn  119
#define __NR_newuname   122
#define __NR_mprotect   125
#define __NR_sigprocmask 126
#define __NR_readv      145
#define __NR_writev     146
#define __NR_nanosleep  162
#define __NR_ugetrlimit 191

#define NR_syscalls 256

#endif
