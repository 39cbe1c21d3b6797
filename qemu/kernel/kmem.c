/*
 * kmem.c - fixed-size object caches (vm areas, mm structs, signal tables).
 *
 * Each cache carves whole pages into objects and keeps freed objects on a
 * LIFO list.  Pages are never returned: the working set is tiny.
 */
#include "types.h"
#include "compiler.h"
#include "kernel.h"
#include "mm.h"
#include "string.h"

void kmem_cache_init(struct kmem_cache *c, const char *name, unsigned int size)
{
	c->name = name;
	c->size = (size + 7) & ~7u;
	c->free = NULL;
	c->in_use = 0;
	c->pages = 0;
}

static int kmem_cache_grow(struct kmem_cache *c)
{
	unsigned long page = __get_free_page();
	unsigned int off;

	if (!page)
		return -1;
	c->pages++;
	for (off = 0; off + c->size <= PAGE_SIZE; off += c->size) {
		void **obj = (void **)(page + off);
		*obj = c->free;
		c->free = obj;
	}
	return 0;
}

/* Returns a zeroed object, or NULL when out of memory. */
void *kmem_cache_alloc(struct kmem_cache *c)
{
	void **obj;

	if (!c->free && kmem_cache_grow(c))
		return NULL;
	obj = c->free;
	c->free = *obj;
	c->in_use++;
	memset(obj, 0, c->size);
	return obj;
}

void kmem_cache_free(struct kmem_cache *c, void *p)
{
	void **obj = p;
	*obj = c->free;
	c->free = obj;
	c->in_use--;
}
