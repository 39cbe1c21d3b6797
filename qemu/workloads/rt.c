/* gdbfault workload runtime: output, JSON, argument parsing, the end. */
#include "rt.h"

#ifdef __x86_64__
long sys_mmap_anon(size_t len, int prot)
{
	/* mmap (9): addr, len, prot, flags, fd, offset in registers */
	return sys6(NR_mmap, 0, (long)len, prot, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
}
#else
long sys_mmap_anon(size_t len, int prot)
{
	/* old mmap (90): one pointer to addr, len, prot, flags, fd, offset */
	volatile long args[6];
	args[0] = 0;
	args[1] = (long)len;
	args[2] = prot;
	args[3] = MAP_PRIVATE | MAP_ANONYMOUS;
	args[4] = -1;
	args[5] = 0;
	return sys1(NR_mmap, (long)args);
}
#endif

void *memset(void *d, int c, size_t n)
{
	u8 *p = d;
	while (n--) *p++ = (u8)c;
	return d;
}

void *memcpy(void *d, const void *s, size_t n)
{
	u8 *p = d; const u8 *q = s;
	while (n--) *p++ = *q++;
	return d;
}

size_t str_len(const char *s)
{
	size_t n = 0;
	while (s[n]) n++;
	return n;
}

void put_buf(const char *s, size_t n)
{
	while (n > 0) {
		long r = sys_write(1, s, n);
		if (r <= 0) return;       /* nothing sensible to do */
		s += r; n -= (size_t)r;
	}
}

void put_str(const char *s) { put_buf(s, str_len(s)); }

char *fmt_u64(char *dst, u64 v)
{
	char tmp[20];
	int n = 0;
	do { tmp[n++] = (char)('0' + (int)(v % 10)); v /= 10; } while (v);
	while (n) *dst++ = tmp[--n];
	return dst;
}

void put_u64(u64 v)
{
	char b[20];
	put_buf(b, (size_t)(fmt_u64(b, v) - b));
}

static void json_raw(struct json *j, const char *s)
{
	while (*s && j->len < sizeof j->buf - 2)
		j->buf[j->len++] = *s++;
}

static void json_key(struct json *j, const char *key)
{
	if (!j->first) json_raw(j, ", ");
	j->first = 0;
	json_raw(j, "\""); json_raw(j, key); json_raw(j, "\": ");
}

void json_begin(struct json *j, const char *prefix)
{
	j->len = 0; j->first = 1;
	json_raw(j, prefix); json_raw(j, " {");
}

void json_str(struct json *j, const char *key, const char *val)
{
	/* values are our own identifiers: no escaping needed */
	json_key(j, key); json_raw(j, "\""); json_raw(j, val); json_raw(j, "\"");
}

void json_u64(struct json *j, const char *key, u64 val)
{
	char b[21];
	json_key(j, key);
	*fmt_u64(b, val) = 0;
	json_raw(j, b);
}

void json_bool(struct json *j, const char *key, int val)
{
	json_key(j, key); json_raw(j, val ? "true" : "false");
}

void json_end_print(struct json *j)
{
	json_raw(j, "}");
	j->buf[j->len++] = '\n';
	put_buf(j->buf, j->len);
}

__attribute__((noreturn)) void rt_finish(int code)
{
	/* SAFETY: reboot only when we are init (pid 1, i.e. inside the guest).
	 * On a host, as an ordinary process, always just exit. */
	if (code == 0 && sys_getpid() == 1)
		sys_reboot(REBOOT_MAGIC1, REBOOT_MAGIC2, REBOOT_CMD_RESTART);
	sys_exit(code);
}
