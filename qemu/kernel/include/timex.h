/* Kernel time (time.c). */
#ifndef _LAB_TIMEX_H
#define _LAB_TIMEX_H

#define HZ 100

extern volatile unsigned long jiffies;
void time_init(void);

#endif
