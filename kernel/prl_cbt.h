/* SPDX-License-Identifier: GPL-2.0 */
/*
 * dm-parallels changed block tracking: the dirty bitmap of the image's
 * format extension (Documentation/dm-parallels.rst, "Changed block
 * tracking").
 *
 * The bitmap lives in memory while the table is loaded: every write,
 * discard and write-zeroes sets its granules before it is remapped, and
 * the bitmap reaches the image only at clean teardown (postsuspend), in
 * this order: bitmap clusters and the extension cluster (with its MD5),
 * then, by the commit that closes the image, the header with ext_off and
 * in_use "closed v2.1".  The image is open (in_use set) all the while, so
 * a crash leaves a bitmap that the next load does not trust: it comes back
 * with every bit set, and the next backup is a full one.
 *
 * Locking: prl_cbt_mark() and prl_cbt_count() may run in any context; the
 * bitmap they see is protected by RCU.  The other functions sleep and take
 * c->lock, so messages, the suspend hook and the destructor do not race.
 */
#ifndef PRL_CBT_H
#define PRL_CBT_H

#include <linux/mutex.h>
#include <linux/rcupdate.h>

#include "prl_meta.h"

struct crypto_shash;

#define PRL_CBT_DEFAULT_GRANULARITY	128	/* sectors: 64 KiB */
#define PRL_CBT_MAX_GRANULARITY		BIT(22)	/* sectors: 2 GiB */

struct prl_cbt_map {
	struct rcu_head rcu;
	u64 nr_bits;
	unsigned int shift;		/* log2(granularity) */
	unsigned long bits[];
};

struct prl_cbt {
	struct mutex lock;		/* everything but map readers */
	struct prl_cbt_map __rcu *map;	/* NULL: not tracking */
	u8 id[16];
	u32 l1_size;
	sector_t *clusters;		/* [l1_size]: bitmap clusters we own */
	sector_t ext_sector;		/* the extension cluster we own, or 0 */
	void *transit;			/* unknown TRANSIT features, verbatim */
	u32 transit_len;
	bool changed;			/* differs from the image: store it */
	bool drop_ext;			/* in a cluster too big to keep */
	struct crypto_shash *md5;
	/* For prl_cbt_store(), which runs at suspend: allocated before. */
	void *ext_buf;			/* the extension cluster */
	void *tmp_buf;			/* one bitmap cluster */
};

/*
 * Read the image's format extension (writable tables): a bitmap closed as
 * v2.1 is loaded, one that is not is loaded with every bit set, a damaged
 * extension is dropped with a warning.  @want: start a new bitmap of
 * @granularity sectors if there is none.  Fails (with *error) for an
 * unknown NECESSARY feature or no memory.
 */
int prl_cbt_load(struct prl_cbt *c, struct prl_meta *pm, bool want,
		 u32 granularity, char **error);
/* Ready to be released or exchanged, tracking nothing. */
void prl_cbt_init(struct prl_cbt *c);
void prl_cbt_release(struct prl_cbt *c);

/*
 * Swap what @a and @b track (bitmap, its clusters, extension), for a table
 * that takes over from another of the same device; readers of either
 * bitmap are gone when it returns.  Sleeps.
 */
void prl_cbt_exchange(struct prl_cbt *a, struct prl_cbt *b);

/* The image is being opened: drop an extension that cannot be kept. */
void prl_cbt_open(struct prl_cbt *c, struct prl_meta *pm);

/* The table tracks, so the image must be opened before it is stored. */
static inline bool prl_cbt_dirty(struct prl_cbt *c)
{
	return READ_ONCE(c->changed);
}

/*
 * Write the bitmap and extension clusters and point the header's ext_off
 * at them (or clear it when there is nothing to keep), in memory: the
 * caller's next commit makes it durable after them.  The image must be
 * open (in_use set on disk).
 */
int prl_cbt_store(struct prl_cbt *c, struct prl_meta *pm);

/* Set the granules of [@sector, @sector + @nr) of the virtual disk. */
static inline void prl_cbt_mark(struct prl_cbt *c, sector_t sector,
				sector_t nr)
{
	struct prl_cbt_map *m;
	u64 i, last;

	if (!rcu_access_pointer(c->map))
		return;
	rcu_read_lock();
	m = rcu_dereference(c->map);
	if (m && nr) {
		last = min_t(u64, (sector + nr - 1) >> m->shift, m->nr_bits - 1);
		for (i = sector >> m->shift; i <= last; i++)
			if (!test_bit(i, m->bits))
				set_bit(i, m->bits);
	}
	rcu_read_unlock();
}

/* Dirty and total bits; false when not tracking. */
bool prl_cbt_count(struct prl_cbt *c, u64 *dirty, u64 *total);

int prl_cbt_start(struct prl_cbt *c, struct prl_meta *pm, u32 granularity);
int prl_cbt_stop(struct prl_cbt *c);
int prl_cbt_clear(struct prl_cbt *c);

#endif /* PRL_CBT_H */
