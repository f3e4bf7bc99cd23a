// SPDX-License-Identifier: GPL-2.0
/*
 * dm-parallels changed block tracking: load, track and store the dirty
 * bitmap of the format extension.  See prl_cbt.h for the protocol.
 */
#include <crypto/hash.h>
#include <linux/bitmap.h>
#include <linux/blkdev.h>
#include <linux/device-mapper.h>
#include <linux/log2.h>
#include <linux/random.h>
#include <linux/sched/mm.h>
#include <linux/slab.h>
#include <linux/uuid.h>
#include <linux/vmalloc.h>

#include "prl_cbt.h"

#define DM_MSG_PREFIX "parallels"

/* Shared with prldisk (prl_format.h). */
#define PRL_CBT_MAX_CLUSTER	PRL_MAX_EXT_CLUSTER_BYTES
#define PRL_CBT_MAX_BITS	PRL_MAX_BITMAP_BITS

static u64 prl_cbt_bytes(const struct prl_meta *pm)
{
	return (u64)prl_meta_geom(pm)->cluster_sectors << SECTOR_SHIFT;
}

static struct prl_cbt_map *prl_cbt_map_alloc(u64 nb_sectors, u32 granularity)
{
	struct prl_cbt_map *m;
	u64 nr = DIV_ROUND_UP_ULL(nb_sectors, granularity);

	if (!nr || nr > PRL_CBT_MAX_BITS)
		return NULL;
	/* Whole 64-bit words: prl_cbt_word() reads them on 32-bit too. */
	m = kvzalloc(struct_size(m, bits, BITS_TO_LONGS(round_up(nr, 64))),
		     GFP_KERNEL);
	if (!m)
		return NULL;
	m->nr_bits = nr;
	m->shift = ilog2(granularity);
	return m;
}

static void prl_cbt_map_free(struct rcu_head *rcu)
{
	kvfree(container_of(rcu, struct prl_cbt_map, rcu));
}

/* A new map in place of the old one, which goes after a grace period. */
static void prl_cbt_swap(struct prl_cbt *c, struct prl_cbt_map *m)
{
	struct prl_cbt_map *old;

	old = rcu_replace_pointer(c->map, m, lockdep_is_held(&c->lock));
	if (old)
		call_rcu(&old->rcu, prl_cbt_map_free);
}

/* L1 entries (one per bitmap cluster) of @m, QEMU's way. */
static u32 prl_cbt_l1_size(const struct prl_meta *pm, const struct prl_cbt_map *m)
{
	return prl_bitmap_l1_size(prl_meta_geom(pm)->nb_sectors, 1U << m->shift,
				  prl_cbt_bytes(pm));
}

/* clusters[] sized for @m, keeping what we own where the sizes agree. */
static int prl_cbt_size_clusters(struct prl_cbt *c, const struct prl_meta *pm,
				 const struct prl_cbt_map *m)
{
	u32 n = prl_cbt_l1_size(pm, m);
	sector_t *cl;

	if (n == c->l1_size)
		return 0;
	cl = kvcalloc(n, sizeof(*cl), GFP_KERNEL);
	if (!cl)
		return -ENOMEM;
	if (c->clusters)
		memcpy(cl, c->clusters, min(n, c->l1_size) * sizeof(*cl));
	kvfree(c->clusters);
	c->clusters = cl;
	c->l1_size = n;
	return 0;
}

/* Word @w (64 bits, bit n of the map at bit n % 64) of the map. */
static u64 prl_cbt_word(const struct prl_cbt_map *m, u64 w)
{
#if BITS_PER_LONG == 64
	return m->bits[w];
#else
	return m->bits[2 * w] | (u64)m->bits[2 * w + 1] << 32;
#endif
}

static void prl_cbt_set_word(struct prl_cbt_map *m, u64 w, u64 val)
{
#if BITS_PER_LONG == 64
	m->bits[w] = val;
#else
	m->bits[2 * w] = (u32)val;
	m->bits[2 * w + 1] = val >> 32;
#endif
}

static u64 prl_cbt_words(const struct prl_cbt_map *m)
{
	return DIV_ROUND_UP_ULL(m->nr_bits, 64);
}

/* Bitmap cluster @i (its first bit: @i * cluster bits) from disk, or all set. */
static int prl_cbt_read_cluster(struct prl_meta *pm, struct prl_cbt_map *m,
				u32 i, u64 entry, __le64 *tmp)
{
	u64 per = prl_cbt_bytes(pm) / 8, first = i * per, w;
	int r;

	if (first >= prl_cbt_words(m))
		return 0;
	if (entry == 1) {
		for (w = first; w < min(first + per, prl_cbt_words(m)); w++)
			prl_cbt_set_word(m, w, ~0ULL);
		return 0;
	}
	r = prl_meta_io(pm, REQ_OP_READ, tmp, entry, prl_meta_geom(pm)->cluster_sectors);
	if (r)
		return r;
	for (w = first; w < min(first + per, prl_cbt_words(m)); w++)
		prl_cbt_set_word(m, w, le64_to_cpu(tmp[w - first]));
	return 0;
}

/* The bits past the disk's end are not ours to report. */
static void prl_cbt_trim(struct prl_cbt_map *m)
{
	u64 words = BITS_TO_LONGS(m->nr_bits) * BITS_PER_LONG;

	if (words > m->nr_bits)
		bitmap_clear(m->bits, m->nr_bits, words - m->nr_bits);
}

/*
 * The bitmap of a valid extension: its clusters checked against the BAT,
 * then read (closed as v2.1) or all set (not).  A bad one is dropped.
 */
static int prl_cbt_load_bitmap(struct prl_cbt *c, struct prl_meta *pm,
			       const void *ext, const struct prl_ext_bitmap *bm)
{
	const __le64 *l1 = ext + bm->l1_pos;
	const char *why;
	struct prl_cbt_map *m;
	__le64 *tmp = NULL;
	sector_t end;
	u32 i;
	int r;

	r = prl_meta_check_l1(pm, l1, bm->l1_size, &end, &why);
	if (r == -ENOMEM)
		return r;
	if (r) {
		DMWARN("%s: dirty bitmap dropped: %s", prl_meta_name(pm), why);
		return 0;
	}
	m = prl_cbt_map_alloc(prl_meta_geom(pm)->nb_sectors, bm->granularity);
	if (!m) {
		DMWARN("%s: dirty bitmap dropped: too large to keep in memory", prl_meta_name(pm));
		return 0;
	}
	r = prl_cbt_size_clusters(c, pm, m);
	if (r)
		goto fail;
	/* Its clusters are ours: kept for the next store, never allocated over. */
	prl_meta_reserve(pm, end);
	for (i = 0; i < bm->l1_size && i < c->l1_size; i++)
		if (le64_to_cpu(l1[i]) > 1)
			c->clusters[i] = le64_to_cpu(l1[i]);
	memcpy(c->id, bm->id, sizeof(c->id));

	if (prl_meta_geom(pm)->in_use != PRL_IN_USE_CLOSED) {
		DMWARN("%s: dirty bitmap %pUb %s: every block counts as changed",
		       prl_meta_name(pm), c->id,
		       prl_in_use_foreign(prl_meta_geom(pm)->in_use) ?
		       "left by software that does not keep it (foreign creator stamp)" :
		       "not closed cleanly");
		bitmap_fill(m->bits, m->nr_bits);
		goto done;
	}
	tmp = vmalloc(prl_cbt_bytes(pm));
	r = tmp ? 0 : -ENOMEM;
	for (i = 0; i < bm->l1_size && !r; i++)
		if (le64_to_cpu(l1[i]))
			r = prl_cbt_read_cluster(pm, m, i, le64_to_cpu(l1[i]), tmp);
	vfree(tmp);
	if (r)
		goto fail;
done:
	prl_cbt_trim(m);
	rcu_assign_pointer(c->map, m);
	return 0;
fail:
	kvfree(m);
	return r;
}

/*
 * The buffers a store needs, allocated while the device runs: a store at
 * suspend must not fail for want of memory (nor wait for reclaim I/O to
 * the suspended device).  Clusters too big for them never get a store.
 */
static int prl_cbt_buffers(struct prl_cbt *c, const struct prl_meta *pm)
{
	u64 cb = prl_cbt_bytes(pm);

	if (cb > PRL_CBT_MAX_CLUSTER)
		return -EOPNOTSUPP;
	if (!c->ext_buf)
		c->ext_buf = vmalloc(cb);
	if (!c->tmp_buf)
		c->tmp_buf = vmalloc(cb);
	return c->ext_buf && c->tmp_buf ? 0 : -ENOMEM;
}

/* Keep the unknown TRANSIT features, as they are, for the next store. */
static int prl_cbt_keep_transit(struct prl_cbt *c, const void *ext, u32 len,
				const struct prl_ext_info *info)
{
	if (!info->transit_bytes)
		return 0;
	c->transit = kvmalloc(info->transit_bytes, GFP_KERNEL);
	if (!c->transit)
		return -ENOMEM;
	prl_ext_copy_transit(ext, len, c->transit);
	c->transit_len = info->transit_bytes;
	return 0;
}

static int prl_cbt_read_ext(struct prl_cbt *c, struct prl_meta *pm,
			    char **error)
{
	const struct prl_ext_header *eh;
	struct prl_ext_info info;
	u64 cb = prl_cbt_bytes(pm);
	const char *why;
	u8 md5[16];
	void *ext;
	int r;

	/* Its cluster is ours, whatever it holds. */
	c->ext_sector = prl_meta_geom(pm)->ext_off;
	if (cb > PRL_CBT_MAX_CLUSTER) {
		/* Stale once written: dropped with the in_use commit. */
		DMWARN("%s: format extension dropped: clusters over 64 MiB are not kept",
		       prl_meta_name(pm));
		c->drop_ext = true;
		return 0;
	}
	ext = vmalloc(cb);
	if (!ext) {
		*error = "Cannot allocate memory for the format extension";
		return -ENOMEM;
	}
	r = prl_meta_io(pm, REQ_OP_READ, ext, prl_meta_geom(pm)->ext_off,
			prl_meta_geom(pm)->cluster_sectors);
	if (r) {
		*error = "Cannot read the format extension";
		goto out;
	}
	eh = ext;
	r = crypto_shash_tfm_digest(c->md5, ext + sizeof(*eh), cb - sizeof(*eh),
				    md5);
	if (r) {
		*error = "Cannot compute the format extension's MD5";
		goto out;
	}
	if (le64_to_cpu(eh->magic) != PRL_EXT_MAGIC) {
		DMWARN("%s: format extension dropped: bad magic", prl_meta_name(pm));
		goto out;
	}
	if (memcmp(md5, eh->md5, sizeof(md5))) {
		DMWARN("%s: format extension dropped: MD5 mismatch", prl_meta_name(pm));
		goto out;
	}
	if (prl_parse_ext(ext, cb, prl_meta_geom(pm), &info, &why)) {
		DMWARN("%s: format extension dropped: %s", prl_meta_name(pm), why);
		goto out;
	}
	if (info.necessary) {
		*error = "Image has a necessary format extension feature this target does not know";
		r = -EINVAL;
		goto out;
	}
	if (info.nr_dropped)
		DMINFO("%s: dropping %u format extension feature(s) (unknown or unusable)",
		       prl_meta_name(pm), info.nr_dropped);
	r = prl_cbt_keep_transit(c, ext, cb, &info);
	if (!r && info.nr_bitmaps)
		r = prl_cbt_load_bitmap(c, pm, ext, &info.bitmap);
	if (r)
		*error = "Cannot load the dirty bitmap";
out:
	vfree(ext);
	return r;
}

void prl_cbt_init(struct prl_cbt *c)
{
	mutex_init(&c->lock);
}

int prl_cbt_load(struct prl_cbt *c, struct prl_meta *pm, bool want,
		 u32 granularity, char **error)
{
	int r = 0;

	prl_cbt_init(c);
	if (!prl_meta_geom(pm)->ext_off && !want)
		return 0;
	c->md5 = crypto_alloc_shash("md5", 0, 0);
	if (IS_ERR(c->md5)) {
		r = PTR_ERR(c->md5);
		c->md5 = NULL;
		*error = "Cannot allocate MD5 for the format extension";
		return r;
	}
	mutex_lock(&c->lock);
	r = prl_cbt_buffers(c, pm);
	if (r == -EOPNOTSUPP && !want)
		r = 0;		/* an extension we cannot keep: dropped */
	if (r)
		*error = r == -ENOMEM ?
			 "Cannot allocate memory for the format extension" :
			 "Changed block tracking needs clusters of at most 64 MiB";
	else if (prl_meta_geom(pm)->ext_off)
		r = prl_cbt_read_ext(c, pm, error);
	mutex_unlock(&c->lock);
	if (!r && want && !rcu_access_pointer(c->map)) {
		r = prl_cbt_start(c, pm, granularity);
		if (r)
			*error = "Cannot allocate the dirty bitmap";
	}
	return r;
}

void prl_cbt_release(struct prl_cbt *c)
{
	struct prl_cbt_map *m = rcu_dereference_protected(c->map, true);

	if (!c->md5)
		return;		/* never tracked */
	/* No reader is left (the table is going), but a stop may be in flight. */
	rcu_barrier();
	kvfree(m);
	kvfree(c->clusters);
	kvfree(c->transit);
	vfree(c->ext_buf);
	vfree(c->tmp_buf);
	if (c->md5)
		crypto_free_shash(c->md5);
}

void prl_cbt_open(struct prl_cbt *c, struct prl_meta *pm)
{
	/*
	 * Its bitmap clusters were never read, so never reserved: ext_off
	 * must be gone from the header before any of them is allocated.
	 */
	if (c->drop_ext && prl_meta_geom(pm)->ext_off)
		prl_meta_set_ext(pm, 0);
}

void prl_cbt_exchange(struct prl_cbt *a, struct prl_cbt *b)
{
	struct prl_cbt t;
	struct prl_cbt_map *ma, *mb;

	mutex_lock(&a->lock);
	mutex_lock_nested(&b->lock, SINGLE_DEPTH_NESTING);
	ma = rcu_dereference_protected(a->map, lockdep_is_held(&a->lock));
	mb = rcu_dereference_protected(b->map, lockdep_is_held(&b->lock));
	/* Everything but the locks and the bitmaps readers follow. */
	t = *a;
	memcpy(a->id, b->id, sizeof(a->id));
	a->l1_size = b->l1_size;
	a->clusters = b->clusters;
	a->ext_sector = b->ext_sector;
	a->transit = b->transit;
	a->transit_len = b->transit_len;
	a->changed = b->changed;
	a->drop_ext = b->drop_ext;
	a->md5 = b->md5;
	a->ext_buf = b->ext_buf;
	a->tmp_buf = b->tmp_buf;
	memcpy(b->id, t.id, sizeof(b->id));
	b->l1_size = t.l1_size;
	b->clusters = t.clusters;
	b->ext_sector = t.ext_sector;
	b->transit = t.transit;
	b->transit_len = t.transit_len;
	b->changed = t.changed;
	b->drop_ext = t.drop_ext;
	b->md5 = t.md5;
	b->ext_buf = t.ext_buf;
	b->tmp_buf = t.tmp_buf;
	rcu_assign_pointer(a->map, mb);
	rcu_assign_pointer(b->map, ma);
	mutex_unlock(&b->lock);
	mutex_unlock(&a->lock);
	/* Whoever still reads a map through the other table is done. */
	synchronize_rcu();
}

/*
 * Bitmap cluster @i of @m into @buf, little-endian words, zero padded.
 * Returns whether any of its bits is set; *@all_set whether all are.
 */
static bool prl_cbt_serialize(const struct prl_meta *pm,
			      const struct prl_cbt_map *m, u32 i, __le64 *buf,
			      bool *all_set)
{
	u64 per = prl_cbt_bytes(pm) / 8, first = i * per, w;
	unsigned long b0 = first * 64, b1 = min(b0 + per * 64, m->nr_bits);

	for (w = 0; w < per; w++)
		buf[w] = cpu_to_le64(first + w < prl_cbt_words(m) ?
				     prl_cbt_word(m, first + w) : 0);
	*all_set = find_next_zero_bit(m->bits, b1, b0) >= b1;
	return find_next_bit(m->bits, b1, b0) < b1;
}

/* Clusters, L1 table and feature header of the bitmap, into @ext at @pos. */
static int prl_cbt_store_bitmap(struct prl_cbt *c, struct prl_meta *pm,
				struct prl_cbt_map *m, void *ext, u32 pos)
{
	struct prl_ext_feature *fh = ext + pos;
	struct prl_ext_dirty_bitmap *bh = ext + pos + sizeof(*fh);
	__le64 *l1 = (void *)(bh + 1), *tmp;
	bool any, all_set;
	sector_t s;
	u32 i;
	int r = 0;

	fh->magic = cpu_to_le64(PRL_EXT_DIRTY_BITMAP);
	fh->data_size = cpu_to_le32(sizeof(*bh) + c->l1_size * 8);
	bh->size = cpu_to_le64(prl_meta_geom(pm)->nb_sectors);
	memcpy(bh->id, c->id, sizeof(bh->id));
	bh->granularity = cpu_to_le32(1U << m->shift);
	bh->l1_size = cpu_to_le32(c->l1_size);

	tmp = c->tmp_buf;
	for (i = 0; i < c->l1_size && !r; i++) {
		any = prl_cbt_serialize(pm, m, i, tmp, &all_set);
		if (!c->clusters[i] && (!any || all_set)) {
			l1[i] = cpu_to_le64(any ? 1 : 0);
			continue;
		}
		if (!c->clusters[i]) {
			r = prl_meta_alloc(pm, &s);
			if (r)
				break;
			c->clusters[i] = s;
		}
		r = prl_meta_io(pm, REQ_OP_WRITE, tmp, c->clusters[i],
				prl_meta_geom(pm)->cluster_sectors);
		l1[i] = cpu_to_le64(c->clusters[i]);
	}
	return r;
}

int prl_cbt_store(struct prl_cbt *c, struct prl_meta *pm)
{
	u64 cb = prl_cbt_bytes(pm);
	struct prl_ext_header *eh;
	struct prl_cbt_map *m;
	u32 pos = sizeof(*eh), need, i;
	sector_t old;
	unsigned int noio;
	void *ext = NULL;
	int r = 0;

	/* The device may hold swap or the root: no I/O to reclaim memory. */
	noio = memalloc_noio_save();
	mutex_lock(&c->lock);
	m = rcu_dereference_protected(c->map, lockdep_is_held(&c->lock));
	if (!m && !c->transit_len) {
		if (prl_meta_geom(pm)->ext_off)
			prl_meta_set_ext(pm, 0);
		goto done;
	}
	need = sizeof(*eh) + c->transit_len + sizeof(struct prl_ext_feature);
	if (m)
		need += sizeof(struct prl_ext_feature) +
			sizeof(struct prl_ext_dirty_bitmap) + c->l1_size * 8;
	if (cb > PRL_CBT_MAX_CLUSTER || need > cb) {
		DMWARN("%s: format extension dropped: it does not fit its cluster",
		       prl_meta_name(pm));
		prl_meta_set_ext(pm, 0);
		goto done;
	}
	ext = c->ext_buf;
	memset(ext, 0, cb);
	if (m) {
		r = prl_cbt_store_bitmap(c, pm, m, ext, pos);
		if (r == -ENOSPC) {
			DMWARN("%s: dirty bitmap dropped: no room for its clusters",
			       prl_meta_name(pm));
			prl_meta_set_ext(pm, 0);
			r = 0;
			goto done;
		}
		if (r)
			goto out;
		pos += sizeof(struct prl_ext_feature) +
		       sizeof(struct prl_ext_dirty_bitmap) + c->l1_size * 8;
	}
	memcpy(ext + pos, c->transit, c->transit_len);
	/* The end-of-features marker is the zeros that follow. */
	eh = ext;
	eh->magic = cpu_to_le64(PRL_EXT_MAGIC);
	r = crypto_shash_tfm_digest(c->md5, ext + sizeof(*eh),
				    cb - sizeof(*eh), eh->md5);
	/*
	 * The extension cluster comes after its bitmap clusters, so an image
	 * end that counts only the BAT and ext_off still covers them all;
	 * with no room for a new one, the old place will do.
	 */
	old = c->ext_sector;
	for (i = 0; !r && m && i < c->l1_size; i++)
		if (c->clusters[i] > c->ext_sector)
			c->ext_sector = 0;
	if (!r && !c->ext_sector) {
		r = prl_meta_alloc(pm, &c->ext_sector);
		if (r == -ENOSPC && old) {
			c->ext_sector = old;
			r = 0;
		}
	}
	if (r == -ENOSPC) {
		DMWARN("%s: format extension dropped: no room for its cluster", prl_meta_name(pm));
		prl_meta_set_ext(pm, 0);
		r = 0;
		goto done;
	}
	if (!r)
		r = prl_meta_io(pm, REQ_OP_WRITE, ext, c->ext_sector,
				prl_meta_geom(pm)->cluster_sectors);
	if (r)
		goto out;
	prl_meta_set_ext(pm, c->ext_sector);
done:
	WRITE_ONCE(c->changed, false);
out:
	mutex_unlock(&c->lock);
	memalloc_noio_restore(noio);
	return r;
}

bool prl_cbt_count(struct prl_cbt *c, u64 *dirty, u64 *total)
{
	struct prl_cbt_map *m;
	bool on = false;

	rcu_read_lock();
	m = rcu_dereference(c->map);
	if (m) {
		*dirty = bitmap_weight(m->bits, m->nr_bits);
		*total = m->nr_bits;
		on = true;
	}
	rcu_read_unlock();
	return on;
}

int prl_cbt_start(struct prl_cbt *c, struct prl_meta *pm, u32 granularity)
{
	struct crypto_shash *md5;
	struct prl_cbt_map *m;
	unsigned int noio;
	int r;

	/* The worker waits on this lock: no reclaim I/O while holding it. */
	noio = memalloc_noio_save();
	mutex_lock(&c->lock);
	if (!c->md5) {
		md5 = crypto_alloc_shash("md5", 0, 0);
		r = PTR_ERR_OR_ZERO(md5);
		if (r)
			goto out;
		c->md5 = md5;
	}
	r = -EEXIST;
	if (rcu_access_pointer(c->map))
		goto out;
	r = prl_cbt_buffers(c, pm);
	if (r)
		goto out;
	r = -ENOMEM;
	m = prl_cbt_map_alloc(prl_meta_geom(pm)->nb_sectors, granularity);
	if (!m)
		goto out;
	r = prl_cbt_size_clusters(c, pm, m);
	if (r) {
		kvfree(m);
		goto out;
	}
	/* A new identity: a backup made against another bitmap is not based on it. */
	generate_random_uuid(c->id);
	rcu_assign_pointer(c->map, m);
	WRITE_ONCE(c->changed, true);
out:
	mutex_unlock(&c->lock);
	memalloc_noio_restore(noio);
	return r;
}

int prl_cbt_stop(struct prl_cbt *c)
{
	int r = -ENOENT;

	mutex_lock(&c->lock);
	if (rcu_access_pointer(c->map)) {
		prl_cbt_swap(c, NULL);
		WRITE_ONCE(c->changed, true);
		r = 0;
	}
	mutex_unlock(&c->lock);
	return r;
}

int prl_cbt_clear(struct prl_cbt *c)
{
	struct prl_cbt_map *m;
	int r = -ENOENT;

	mutex_lock(&c->lock);
	m = rcu_dereference_protected(c->map, lockdep_is_held(&c->lock));
	if (m) {
		bitmap_zero(m->bits, m->nr_bits);
		WRITE_ONCE(c->changed, true);
		r = 0;
	}
	mutex_unlock(&c->lock);
	return r;
}
