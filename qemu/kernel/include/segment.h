/* GDT layout: the same selectors Linux 2.x used on i386. */
#ifndef _LAB_SEGMENT_H
#define _LAB_SEGMENT_H

#define __KERNEL_CS 0x10
#define __KERNEL_DS 0x18
#define __USER_CS   0x23
#define __USER_DS   0x2B
#define __TSS_SEL   0x30

#define GDT_ENTRIES 7

#endif
