/*
 * printk.c - formatted output to the console.
 *
 * A small vsnprintf: %d %i %u %x %X %o %c %s %p %%, with '-', '0', width,
 * precision for strings, and the 'l' / 'h' / 'z' length modifiers (all
 * integers are 32-bit here).
 */
#include "types.h"
#include "compiler.h"
#include "kernel.h"
#include "string.h"

struct outbuf {
	char *buf;
	size_t size;
	size_t len;
};

static void put(struct outbuf *o, char c)
{
	if (o->len + 1 < o->size)
		o->buf[o->len] = c;
	o->len++;
}

static void put_num(struct outbuf *o, unsigned long v, unsigned base, int neg,
		    int width, int zero, int left, int upper)
{
	char tmp[16];
	const char *digits = upper ? "0123456789ABCDEF" : "0123456789abcdef";
	int n = 0, pad;

	do {
		tmp[n++] = digits[v % base];
		v /= base;
	} while (v);
	pad = width - n - (neg ? 1 : 0);
	if (!left && !zero)
		while (pad-- > 0)
			put(o, ' ');
	if (neg)
		put(o, '-');
	if (!left && zero)
		while (pad-- > 0)
			put(o, '0');
	while (n)
		put(o, tmp[--n]);
	if (left)
		while (pad-- > 0)
			put(o, ' ');
}

int vsnprintf(char *buf, size_t size, const char *fmt, va_list ap)
{
	struct outbuf o = { buf, size, 0 };

	for (; *fmt; fmt++) {
		int width = 0, prec = -1, zero = 0, left = 0;
		if (*fmt != '%') {
			put(&o, *fmt);
			continue;
		}
		fmt++;
		for (;; fmt++) {
			if (*fmt == '0')
				zero = 1;
			else if (*fmt == '-')
				left = 1;
			else
				break;
		}
		while (*fmt >= '0' && *fmt <= '9')
			width = width * 10 + (*fmt++ - '0');
		if (*fmt == '.') {
			prec = 0;
			fmt++;
			while (*fmt >= '0' && *fmt <= '9')
				prec = prec * 10 + (*fmt++ - '0');
		}
		while (*fmt == 'l' || *fmt == 'h' || *fmt == 'z')
			fmt++;
		switch (*fmt) {
		case 'd':
		case 'i': {
			long v = va_arg(ap, long);
			put_num(&o, v < 0 ? -(unsigned long)v : (unsigned long)v, 10,
				v < 0, width, zero, left, 0);
			break;
		}
		case 'u':
			put_num(&o, va_arg(ap, unsigned long), 10, 0, width, zero, left, 0);
			break;
		case 'x':
		case 'X':
			put_num(&o, va_arg(ap, unsigned long), 16, 0, width, zero, left,
				*fmt == 'X');
			break;
		case 'o':
			put_num(&o, va_arg(ap, unsigned long), 8, 0, width, zero, left, 0);
			break;
		case 'p':
			put_num(&o, (unsigned long)va_arg(ap, void *), 16, 0, 8, 1, 0, 0);
			break;
		case 'c':
			put(&o, (char)va_arg(ap, int));
			break;
		case 's': {
			const char *s = va_arg(ap, const char *);
			int n, shown;
			if (!s)
				s = "(null)";
			n = shown = (int)strnlen(s, prec >= 0 ? (size_t)prec : 0x7fffffff);
			if (!left)
				while (width-- > n)
					put(&o, ' ');
			while (n-- > 0)
				put(&o, *s++);
			if (left)
				while (width-- > shown)
					put(&o, ' ');
			break;
		}
		case '%':
			put(&o, '%');
			break;
		case '\0':
			fmt--;
			break;
		default:
			put(&o, '%');
			put(&o, *fmt);
		}
	}
	if (size)
		buf[o.len < size ? o.len : size - 1] = '\0';
	return (int)o.len;
}

int snprintf(char *buf, size_t size, const char *fmt, ...)
{
	va_list ap;
	int n;
	va_start(ap, fmt);
	n = vsnprintf(buf, size, fmt, ap);
	va_end(ap);
	return n;
}

int printk(const char *fmt, ...)
{
	static char buf[1024];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	console_write(buf, min((size_t)n, sizeof(buf) - 1));
	return n;
}
