/* Multiboot (v1) boot information, as QEMU's -kernel loader provides it. */
#ifndef _LAB_MULTIBOOT_H
#define _LAB_MULTIBOOT_H

#define MULTIBOOT_HEADER_MAGIC     0x1BADB002
#define MULTIBOOT_BOOTLOADER_MAGIC 0x2BADB002
#define MULTIBOOT_PAGE_ALIGN 0x00000001
#define MULTIBOOT_MEMORY_INFO 0x00000002

#define MBI_MEMORY  0x001
#define MBI_CMDLINE 0x004
#define MBI_MODS    0x008
#define MBI_MMAP    0x040

#ifndef __ASSEMBLER__
#include "types.h"

struct multiboot_info {
	u32 flags;
	u32 mem_lower, mem_upper;	/* KiB below 1 MiB, KiB above 1 MiB */
	u32 boot_device;
	u32 cmdline;			/* physical address of a C string */
	u32 mods_count, mods_addr;
	u32 syms[4];
	u32 mmap_length, mmap_addr;
} __attribute__((packed));

struct multiboot_mod {
	u32 mod_start, mod_end;		/* physical, end exclusive */
	u32 string;
	u32 reserved;
} __attribute__((packed));

struct multiboot_mmap {
	u32 size;			/* of the rest of this entry */
	u64 addr, len;
	u32 type;			/* 1 = usable RAM */
} __attribute__((packed));
#endif

#endif
