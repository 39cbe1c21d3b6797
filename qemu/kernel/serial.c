/*
 * serial.c - the console: a 16550 UART on COM1 (0x3f8), polled.
 *
 * Polling keeps the console independent of interrupts, so printk works from
 * anywhere, including die() with interrupts off.
 */
#include "types.h"
#include "kernel.h"
#include "io.h"

#define COM1 0x3f8
#define UART_THR 0	/* transmit holding */
#define UART_IER 1
#define UART_FCR 2
#define UART_LCR 3
#define UART_MCR 4
#define UART_LSR 5
#define UART_LSR_THRE 0x20

void serial_init(void)
{
	outb(0x00, COM1 + UART_IER);	/* no interrupts */
	outb(0x80, COM1 + UART_LCR);	/* DLAB on */
	outb(0x01, COM1 + 0);		/* divisor 1: 115200 baud */
	outb(0x00, COM1 + 1);
	outb(0x03, COM1 + UART_LCR);	/* 8N1, DLAB off */
	outb(0x07, COM1 + UART_FCR);	/* FIFOs on and cleared */
	outb(0x03, COM1 + UART_MCR);	/* DTR, RTS */
}

static void serial_putc(char c)
{
	int spins = 100000;
	while (!(inb(COM1 + UART_LSR) & UART_LSR_THRE) && --spins)
		;
	outb((u8)c, COM1 + UART_THR);
}

void console_write(const char *s, size_t n)
{
	while (n--)
		serial_putc(*s++);
}
