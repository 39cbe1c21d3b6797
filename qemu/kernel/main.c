/*
 * main.c - start_kernel: from the multiboot hand-off to init in ring 3.
 *
 * Order: console and banner; memory (boot information, kernel page tables,
 * page allocator); descriptor tables, interrupts and the timer; exception
 * tables and the built-in modules; then the command line is split into
 * init's argv/envp, init is loaded from multiboot module 0, and the kernel
 * leaves for user mode through the ordinary system-call exit path.
 */
#include "types.h"
#include "compiler.h"
#include "kernel.h"
#include "multiboot.h"
#include "mm.h"
#include "sched.h"
#include "signal.h"
#include "string.h"
#include "system.h"
#include "uaccess.h"
#include "module.h"
#include "irq.h"
#include "timex.h"
#include "traps.h"
#include "exec.h"
#include "version.h"

/* The banner, also readable from guest memory by tools (as in Linux). */
const char linux_banner[] = LAB_BANNER "\n";

#define COMMAND_LINE_SIZE 1024
#define MAX_MEM_REGIONS 32
#define MAX_MEMORY (512UL << 20)	/* RAM beyond this is left unused */
#define BOOT_MAPPED (16UL << 20)	/* boot.S maps this much */
#define LOW_MEMORY (1UL << 20)		/* never handed out */

char saved_command_line[COMMAND_LINE_SIZE];
int labtest_oops;
int labtest_hang;

extern char _text[], _etext[], _edata[], _end[];

static struct {
	unsigned long start, end;
} mem_regions[MAX_MEM_REGIONS];
static int nr_mem_regions;
static unsigned long init_image_phys, init_image_size;

static void add_region(u64 start, u64 end)
{
	if (start >= MAX_MEMORY || nr_mem_regions == MAX_MEM_REGIONS)
		return;
	if (end > MAX_MEMORY)
		end = MAX_MEMORY;
	mem_regions[nr_mem_regions].start = (unsigned long)start;
	mem_regions[nr_mem_regions].end = (unsigned long)end;
	nr_mem_regions++;
}

static unsigned long str_end_phys(u32 phys)
{
	if (!phys || phys >= BOOT_MAPPED)
		return 0;
	return phys + strnlen(__va(phys), BOOT_MAPPED - phys) + 1;
}

/*
 * Read what the boot loader told us while only the first 16 MiB are mapped:
 * usable RAM, the command line, and where init (module 0) is.  Returns the
 * end of RAM; *first_free is the first physical byte nothing lives in.
 */
static unsigned long parse_multiboot(u32 magic, u32 mbi_phys, unsigned long *first_free)
{
	const struct multiboot_info *mbi;
	unsigned long ff = __pa(_end), mem_end = 0;
	int i;

	if (magic != MULTIBOOT_BOOTLOADER_MAGIC)
		panic("not booted by a multiboot loader (magic %08x)", magic);
	if (mbi_phys >= BOOT_MAPPED)
		panic("multiboot information out of reach at %08x", mbi_phys);
	mbi = __va(mbi_phys);

	if (mbi->flags & MBI_MMAP) {
		unsigned long p = mbi->mmap_addr, end = p + mbi->mmap_length;
		while (p < end) {
			const struct multiboot_mmap *e = __va(p);
			if (e->type == 1)
				add_region(e->addr, e->addr + e->len);
			p += e->size + sizeof(e->size);
		}
	} else if (mbi->flags & MBI_MEMORY) {
		add_region(LOW_MEMORY, LOW_MEMORY + (u64)mbi->mem_upper * 1024);
	}
	for (i = 0; i < nr_mem_regions; i++)
		mem_end = max(mem_end, mem_regions[i].end);
	if (!mem_end)
		panic("no memory information from the boot loader");
	mem_end &= PAGE_MASK;

	if (mbi->flags & MBI_CMDLINE) {
		strlcpy(saved_command_line, __va(mbi->cmdline), sizeof(saved_command_line));
		ff = max(ff, str_end_phys(mbi->cmdline));
	}
	if ((mbi->flags & MBI_MODS) && mbi->mods_count) {
		const struct multiboot_mod *mod = __va(mbi->mods_addr);
		init_image_phys = mod[0].mod_start;
		init_image_size = mod[0].mod_end - mod[0].mod_start;
		for (i = 0; i < (int)mbi->mods_count; i++) {
			ff = max(ff, (unsigned long)mod[i].mod_end);
			ff = max(ff, str_end_phys(mod[i].string));
		}
	}
	*first_free = PAGE_ALIGN(ff);
	return mem_end;
}

static void mem_setup(u32 magic, u32 mbi_phys)
{
	unsigned long first_free, mem_end;
	int i;

	mem_end = parse_multiboot(magic, mbi_phys, &first_free);
	paging_init(mem_end, &first_free);
	mem_map_init(mem_end >> PAGE_SHIFT, &first_free);
	for (i = 0; i < nr_mem_regions; i++) {
		unsigned long s = max(mem_regions[i].start, max(first_free, LOW_MEMORY));
		unsigned long e = min(mem_regions[i].end, mem_end);
		if (s < e)
			free_area_init_range(s, e);
	}
	printk("Memory: %luk/%luk available (%luk kernel code, %luk data, %luk reserved)\n",
	       nr_free_pages() << (PAGE_SHIFT - 10), mem_end >> 10,
	       (unsigned long)(_etext - _text) >> 10,
	       (unsigned long)(_end - _etext) >> 10, first_free >> 10);
}

/*
 * Split the command line the way Linux hands it to init: the first word is
 * the kernel image's name (QEMU and GRUB put it there) and is dropped; the
 * words the kernel uses itself are consumed; any other word becomes an
 * environment string if it contains '=', an argument otherwise.
 */
static char cmdline_words[COMMAND_LINE_SIZE];
static char *init_argv[MAX_INIT_ARGS + 1] = { "init" };
static char *init_envp[MAX_INIT_ENVS + 1];
static int init_argc = 1, init_envc;

static int kernel_option(const char *w)
{
	if (!strcmp(w, "labtest=oops")) {
		labtest_oops = 1;
		return 1;
	}
	if (!strcmp(w, "labtest=hang")) {
		labtest_hang = 1;
		return 1;
	}
	if (!strncmp(w, "labtest=", 8)) {
		printk("unknown labtest '%s' ignored\n", w + 8);
		return 1;
	}
	if (!strncmp(w, "console=", 8))
		return 1;
	return 0;
}

static void parse_command_line(void)
{
	char *p = cmdline_words, *w;
	int first = 1;

	strlcpy(cmdline_words, saved_command_line, sizeof(cmdline_words));
	for (;;) {
		while (*p == ' ' || *p == '\t')
			p++;
		if (!*p)
			break;
		w = p;
		while (*p && *p != ' ' && *p != '\t')
			p++;
		if (*p)
			*p++ = '\0';
		if (first) {
			first = 0;
			continue;
		}
		if (kernel_option(w))
			continue;
		if (strchr(w, '=')) {
			if (init_envc < MAX_INIT_ENVS)
				init_envp[init_envc++] = w;
			else
				printk("too many environment strings, '%s' dropped\n", w);
		} else {
			if (init_argc < MAX_INIT_ARGS)
				init_argv[init_argc++] = w;
			else
				printk("too many arguments, '%s' dropped\n", w);
		}
	}
}

static void show_init_args(void)
{
	int i;

	printk("Starting init:");
	for (i = 0; i < init_argc; i++)
		printk(" %s", init_argv[i]);
	if (init_envc) {
		printk(" (env:");
		for (i = 0; i < init_envc; i++)
			printk(" %s", init_envp[i]);
		printk(")");
	}
	printk("\n");
}

asmlinkage __noreturn void start_kernel(u32 magic, u32 mbi_phys)
{
	struct task_struct *tsk = current;
	struct pt_regs *regs;
	unsigned long entry, sp;
	int err;

	serial_init();
	printk("%s", linux_banner);

	mem_setup(magic, mbi_phys);
	trap_init();
	init_IRQ();
	time_init();
	mmap_init();
	extable_init();
	init_builtin_modules();

	printk("Kernel command line: %s\n", saved_command_line);
	parse_command_line();

	tsk->pid = 1;
	tsk->ppid = 0;
	tsk->state = TASK_RUNNING;
	strlcpy(tsk->comm, "init", sizeof(tsk->comm));
	signal_init_task(tsk);

	if (!init_image_size)
		panic("no init found: pass a workload with -initrd");
	err = exec_init(tsk, __va(init_image_phys), init_image_size,
			init_argv, init_argc, init_envp, init_envc, &entry, &sp);
	if (err)
		panic("could not start init (error %d)", err);
	show_init_args();
	regs = start_thread(tsk, entry, sp);
	tsk->start_time = jiffies;

	if (labtest_hang) {
		printk("labtest=hang: spinning forever with interrupts enabled\n");
		sti();
		for (;;)
			__asm__ __volatile__("pause");
	}
	ret_to_user(regs);
}
