# kbuild.mk - build one variant of the lab kernel from the sources in the
# current directory.  Called by the Makefile:
#     make -f kbuild.mk OUT=<dir> VARIANT=<name>
# OUT gets kernel.elf (multiboot ELF with DWARF) and System.map.

CC      ?= gcc
LD      := ld
NM      := nm
OUT     ?= build/vanilla
VARIANT ?= vanilla
OBJDIR  := $(OUT)/obj

# -fno-partial-inlining and -fno-optimize-sibling-calls keep each probe
# function whole and make every call a real call: a backtrace from
# force_sig shows do_page_fault, and do_page_fault returns through its own ret.
CPPFLAGS := -nostdinc -Iinclude -DLAB_VARIANT='"$(VARIANT)"'
CFLAGS   := -m32 -march=i686 -ffreestanding -fno-pic -fno-pie -fno-stack-protector \
            -fno-asynchronous-unwind-tables -fno-omit-frame-pointer \
            -fno-delete-null-pointer-checks -fno-strict-aliasing \
            -fno-partial-inlining -fno-optimize-sibling-calls \
            -mgeneral-regs-only -mno-red-zone \
            -O2 -g -std=gnu11 -Wall -Wextra -Wno-unused-parameter \
            -Wno-override-init -MMD -MP
ASFLAGS  := -m32 -g -D__ASSEMBLER__ -MMD -MP
LDFLAGS  := -m elf_i386 -nostdlib -T kernel.ld --build-id=none -z noexecstack

# boot.S first: the multiboot header must be in the first 8 KiB
ASM_SRCS := boot.S entry.S
C_SRCS   := $(sort $(wildcard *.c))
OBJS     := $(ASM_SRCS:%.S=$(OBJDIR)/%.o) $(C_SRCS:%.c=$(OBJDIR)/%.o)
LIBGCC   := $(shell $(CC) -m32 -print-libgcc-file-name)

all: $(OUT)/kernel.elf $(OUT)/System.map

$(OBJDIR):
	mkdir -p $@

$(OBJDIR)/%.o: %.c kbuild.mk | $(OBJDIR)
	$(CC) $(CPPFLAGS) $(CFLAGS) -c -o $@ $<

$(OBJDIR)/%.o: %.S kbuild.mk | $(OBJDIR)
	$(CC) $(CPPFLAGS) $(ASFLAGS) -c -o $@ $<

$(OUT)/kernel.elf: $(OBJS) kernel.ld
	$(LD) $(LDFLAGS) -o $@ $(OBJS) $(LIBGCC)

# Linux's System.map format: "c0101234 T do_page_fault", sorted by address,
# without absolute, undefined and weak symbols.
$(OUT)/System.map: $(OUT)/kernel.elf
	$(NM) -n $< | grep -v ' [aAUwW] ' > $@

-include $(OBJS:.o=.d)

.PHONY: all
