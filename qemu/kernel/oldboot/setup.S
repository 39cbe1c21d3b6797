/*
 * setup.S - a real-mode setup for the lab kernel, in the bzImage layout of
 * Linux 2.2 (boot protocol 2.01) or 2.4 (2.03: the same, with the 2.02/2.03
 * header fields honoured).
 *
 * The image is: this setup (the 512-byte boot sector with the setup header
 * at 0x1f1, then SETUP_SECTS more sectors) followed by the protected-mode
 * kernel, which the boot loader puts at 1 MiB (loadflags LOADED_HIGH).  A
 * 2.01 loader (GRUB's linux16) loads the setup at a 64 KiB segment (0x9000
 * with protocol 2.01), fills in the header (type_of_loader, heap_end_ptr,
 * cl_magic/cl_offset for the command line, ramdisk_image/size) and jumps to
 * segment+0x20:0, i.e. to offset 0x200 here, with %ds = %es = %ss = segment.
 *
 * A 2.02+ loader (QEMU's -kernel, for images mkbzimage.py marks 2.03) loads
 * the setup at 0x10000 and passes the command line in cmd_line_ptr instead;
 * the code below does not care where it was put.
 *
 * Here, as 2.x's setup did: ask the BIOS for the memory size (E801h, then
 * 88h) and store it in the zero page (this segment), open A20, load a flat
 * GDT (kernel code 0x10, data 0x18), switch to protected mode and jump to
 * code32_start with %esi = this segment's linear address.  mkbzimage.py
 * fills setup_sects, syssize, code32_start and the version string.
 */
	.code16
	.text
	.globl _start
_start:
	/* Booted from a floppy as a boot sector: not supported, say so. */
	ljmp $0x07c0, $(1f - _start)
1:	movw %cs, %ax
	movw %ax, %ds
	movw $(no_floppy - _start), %si
2:	lodsb
	orb %al, %al
	jz 3f
	movb $0x0e, %ah
	movw $7, %bx
	int $0x10
	jmp 2b
3:	hlt
	jmp 3b
no_floppy:
	.asciz "gdbfault lab kernel: boot me with a Linux boot loader (GRUB linux16)\r\n"

	.org 0x1f1
setup_sects:	.byte 0			/* mkbzimage.py */
root_flags:	.word 0
syssize:	.word 0			/* protected-mode part, 16-byte units (mkbzimage.py) */
swap_dev:	.word 0
ram_size:	.word 0
vid_mode:	.word 0xffff		/* normal */
root_dev:	.word 0
boot_flag:	.word 0xaa55

	.org 0x200
	jmp start_of_setup		/* 2 bytes: the loader enters at 0x200 */
header:		.ascii "HdrS"
version:	.word 0x0201
realmode_swtch:	.long 0
start_sys_seg:	.word 0x1000
kernel_version:	.word kernel_version_string - 0x200
type_of_loader:	.byte 0
loadflags:	.byte 0x01		/* LOADED_HIGH: a bzImage */
setup_move_size: .word 0x8000
code32_start:	.long 0x100000		/* mkbzimage.py: the kernel's startup_32 */
ramdisk_image:	.long 0
ramdisk_size:	.long 0
bootsect_kludge: .long 0
heap_end_ptr:	.word 0
	/* protocol 2.02 and 2.03 (mkbzimage.py sets the version): a 2.01
	 * loader leaves these alone, and we never read them here */
pad1:		.word 0
cmd_line_ptr:	.long 0			/* 2.02: the command line, from the loader */
initrd_addr_max: .long 0x37ffffff	/* 2.03: highest initrd address, as Linux 2.4 */

start_of_setup:
	cli
	cld
	movw %cs, %ax			/* %cs = segment + 0x20; the data is at segment:0 */
	subw $0x20, %ax
	movw %ax, %ds
	movw %ax, %es

	/* Memory above 1 MiB, in KiB: E801h (up to 4 GiB), else 88h (64 MiB). */
	movb $0x88, %ah
	int $0x15
	jnc 1f
	xorw %ax, %ax
1:	movw %ax, 0x002			/* ext_mem_k */
	movl $0, 0x1e0			/* alt_mem_k */
	xorw %cx, %cx
	xorw %dx, %dx
	movw $0xe801, %ax
	int $0x15
	jc 3f
	jcxz 2f				/* some BIOSes answer in %ax/%bx only */
	movw %cx, %ax
	movw %dx, %bx
2:	movzwl %ax, %eax		/* KiB between 1 and 16 MiB */
	movzwl %bx, %ebx		/* 64 KiB blocks above 16 MiB */
	shll $6, %ebx
	addl %ebx, %eax
	movl %eax, 0x1e0
3:	cli

	/* A20 through the "fast A20" port (QEMU has it; GRUB opened it too). */
	inb $0x92, %al
	orb $0x02, %al
	andb $0xfe, %al
	outb %al, $0x92

	/* The GDT's linear address, and the boot parameters' in %esi. */
	xorl %eax, %eax
	movw %ds, %ax
	shll $4, %eax
	movl %eax, %esi
	addl $gdt, %eax
	movl %eax, gdt_desc + 2
	movl code32_start, %eax
	movl %eax, kernel_entry
	lidtl idt_desc			/* no IDT until the kernel loads its own */
	lgdtl gdt_desc

	movl %cr0, %eax
	orb $1, %al			/* PE */
	movl %eax, %cr0
	/* The data segments still hold real-mode values: startup_32 loads
	 * the flat data selector before it touches memory. */
	ljmpl *kernel_entry

	.balign 8
gdt:
	.quad 0
	.quad 0
	.quad 0x00cf9a000000ffff		/* 0x10: code, base 0, 4 GiB, 32-bit */
	.quad 0x00cf92000000ffff		/* 0x18: data, base 0, 4 GiB */
gdt_end:
gdt_desc:
	.word gdt_end - gdt - 1
	.long 0					/* linear base, set above */
idt_desc:
	.word 0
	.long 0
kernel_entry:
	.long 0					/* code32_start */
	.word 0x10

kernel_version_string:
	.fill 128, 1, 0				/* mkbzimage.py */

	.balign 512
setup_end:
