/*
 * boot.S - multiboot entry.
 *
 * QEMU's -kernel loader puts the image at its load (physical) addresses,
 * 1 MiB up, and jumps to the physical entry point in 32-bit protected mode
 * with paging off.  The kernel is linked at PAGE_OFFSET + 1 MiB (0xC0100000)
 * like Linux 2.x, so until paging is on every absolute address used here has
 * PAGE_OFFSET subtracted.
 *
 * We map the first 16 MiB twice, at 0 (so the instruction after the paging
 * switch still runs) and at PAGE_OFFSET, turn paging on and jump high.  C
 * code (paging_init) then builds the real kernel page directory with all of
 * RAM at PAGE_OFFSET and no identity map.
 */
#include "multiboot.h"
#include "page.h"

#define PHYS(x) ((x) - PAGE_OFFSET)
#define BOOT_MAP_TABLES 4		/* 4 page tables = 16 MiB */

	.section .multiboot, "a"
	.balign 4
multiboot_header:
	.long MULTIBOOT_HEADER_MAGIC
	.long MULTIBOOT_PAGE_ALIGN | MULTIBOOT_MEMORY_INFO
	.long -(MULTIBOOT_HEADER_MAGIC + (MULTIBOOT_PAGE_ALIGN | MULTIBOOT_MEMORY_INFO))

	.section .text.boot, "ax"
	.globl _start
_start:
	cli
	cld
	/* %eax = bootloader magic, %ebx = multiboot info (physical): keep them
	 * in %ebp and %ebx while we clear .bss and build the boot tables. */
	movl %eax, %ebp

	movl $PHYS(__bss_start), %edi
	movl $PHYS(_end), %ecx
	subl %edi, %ecx
	shrl $2, %ecx
	xorl %eax, %eax
	rep stosl

	/* boot_pg_tables: consecutive PTEs for 0..16 MiB, present+writable */
	movl $PHYS(boot_pg_tables), %edi
	movl $(_PAGE_PRESENT | _PAGE_RW), %eax
	movl $(BOOT_MAP_TABLES * 1024), %ecx
1:	stosl
	addl $PAGE_SIZE, %eax
	loop 1b

	/* boot_pg_dir: the tables at PDE 0.. (identity) and 768.. (high) */
	movl $PHYS(boot_pg_tables) + (_PAGE_PRESENT | _PAGE_RW), %eax
	movl $PHYS(boot_pg_dir), %edi
	xorl %ecx, %ecx
2:	movl %eax, (%edi,%ecx,4)
	movl %eax, (PAGE_OFFSET >> 20)(%edi,%ecx,4)
	addl $PAGE_SIZE, %eax
	incl %ecx
	cmpl $BOOT_MAP_TABLES, %ecx
	jne 2b

	movl %edi, %cr3
	movl %cr0, %eax
	orl $0x80010000, %eax		/* PG | WP: ring 0 honours read-only PTEs */
	movl %eax, %cr0
	movl $3f, %eax			/* absolute, high address */
	jmp *%eax
3:
	movl $boot_stack_top, %esp
	pushl %ebx			/* multiboot info, physical */
	pushl %ebp			/* magic */
	call start_kernel
4:	hlt
	jmp 4b

	.section .bss
	.balign PAGE_SIZE
	.globl boot_pg_dir
boot_pg_dir:
	.skip PAGE_SIZE
boot_pg_tables:
	.skip BOOT_MAP_TABLES * PAGE_SIZE
	.balign 16
boot_stack:
	.skip 8192
boot_stack_top:

	.section .note.GNU-stack, "", @progbits
