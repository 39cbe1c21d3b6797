/* Tiny multiboot guest for testing the faultcount plugin without the lab
 * kernel: calls 'func' BOOT_CALLS times, passes 'arm_here', calls 'func'
 * WORK_CALLS times (func executes exactly FUNC_INSNS instructions, ret
 * included), then exits QEMU through isa-debug-exit (status 3). */
#ifndef BOOT_CALLS
#define BOOT_CALLS 10
#endif
#ifndef WORK_CALLS
#define WORK_CALLS 1000
#endif
        .section .multiboot, "a"
        .align 4
        .long 0x1BADB002
        .long 0x00000003
        .long -(0x1BADB002 + 0x00000003)

        .text
        .globl _start
_start:
        cli
        mov $stack_top, %esp
        mov $BOOT_CALLS, %ecx
1:      call func
        .globl after_call_boot
after_call_boot:
        loop 1b
        .globl arm_here
arm_here:
        nop
        mov $WORK_CALLS, %ecx
2:      call func
        .globl after_call
after_call:
        loop 2b
        mov $1, %eax
        mov $0xf4, %dx
        outl %eax, %dx
3:      hlt
        jmp 3b

        .globl func
func:                           /* 6 instructions, ret included */
        push %ebx
        mov $5, %ebx
        .globl func_event
func_event:
        add %ebx, %eax
        add %ebx, %eax
        pop %ebx
        ret

        .bss
        .align 16
        .space 4096
stack_top:
