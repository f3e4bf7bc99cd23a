// SPDX-License-Identifier: GPL-2.0
/*
 * dm-parallels metadata: load, change and commit the header and BAT.
 * See prl_meta.h for the commit protocol and the locking rules.
 */
#include <linux/bitmap.h>
#include <linux/blkdev.h>
#include <linux/dm-io.h>
#include <linux/ioprio.h>
#include <linux/slab.h>
#include <linux/vmalloc.h>

#include "prl_meta.h"

#define DM_MSG_PREFIX "parallels"

struct prl_meta {
	const char *name;	/* the dm device, for log lines */
	struct block_device *bdev;
	struct dm_io_client *io;
	struct prl_geom geom;

	void *buf;		/* header + BAT, as on disk */
	__le32 *bat;		/* points into buf */
	void *commit_buf;	/* the blocks being written by a commit (rw only) */
	unsigned int block_sectors;
	unsigned int nr_blocks;
	sector_t meta_sectors;	/* header + BAT, in whole blocks */

	spinlock_t lock;	/* buf, dirty, dirty_gen, allocated */
	unsigned long *dirty;	/* blocks changed since the last cut */
	unsigned long *writing;	/* blocks of the commit in progress */
	u64 dirty_gen;		/* bumped by every change */
	u64 committed_gen;	/* dirty_gen that the last commit covered */
	u32 allocated;
	sector_t dev_sectors;
	sector_t image_end;	/* first sector after the last used cluster */
};

int prl_meta_io(struct prl_meta *pm, blk_opf_t opf, void *buf,
		sector_t sector, sector_t count)
{
	struct dm_io_region where = {
		.bdev = pm->bdev,
		.sector = sector,
		.count = count,
	};
	struct dm_io_request req = {
		.bi_opf = opf,
		.mem.type = DM_IO_VMA,
		.mem.ptr.vma = buf,
		.client = pm->io,
	};
	unsigned long error_bits;

#ifdef PRL_DM_IO_IOPRIO
	return dm_io(&req, 1, &where, &error_bits, IOPRIO_DEFAULT);
#else
	return dm_io(&req, 1, &where, &error_bits);
#endif
}

static void prl_meta_log_bat_error(const struct prl_meta *pm,
				   const struct prl_bat_err *err,
				   const char *why)
{
	if (err->entry == PRL_ENTRY_EXT)
		DMERR("%s: %s: format extension at sector %llu", pm->name, why,
		      err->value);
	else if (err->other == PRL_ENTRY_EXT || !err->other)
		DMERR("%s: %s: BAT entry %u (sector %llu)", pm->name, why,
		      err->entry, err->value);
	else
		DMERR("%s: %s: BAT entries %u and %u (sector %llu)", pm->name,
		      why, err->entry, err->other, err->value);
}

/*
 * Read the BAT and check it: allocated count and image end from it.
 * @whole: also look for clusters shared by two entries (memory: 8 bytes
 * an entry); without, each entry alone.
 */
static int prl_meta_read_bat(struct prl_meta *pm, sector_t meta_sectors,
			     bool whole, char **error)
{
	struct prl_geom *g = &pm->geom;
	struct prl_bat_err err = {};
	u64 *scratch = NULL;
	const char *why;
	u32 allocated;
	u64 end;
	int r;

	r = prl_meta_io(pm, REQ_OP_READ, pm->buf, 0, meta_sectors);
	if (r) {
		*error = "Cannot read the BAT";
		return r;
	}
	allocated = prl_count_allocated(g, pm->bat);
	if (whole) {
		scratch = kvmalloc_array((size_t)allocated + 1,
					 sizeof(*scratch), GFP_KERNEL);
		if (!scratch) {
			*error = "Cannot allocate memory to check the BAT";
			return -ENOMEM;
		}
	}
	r = prl_check_bat(g, pm->bat, pm->dev_sectors, scratch, &end, &err,
			  &why);
	kvfree(scratch);
	if (r) {
		prl_meta_log_bat_error(pm, &err, why);
		*error = (char *)why;
		return r;
	}
	pm->allocated = allocated;
	pm->image_end = end;
	return 0;
}

/*
 * Read and check the header and the BAT.  On failure *error says what is
 * wrong; the kernel log also names the BAT entry where there is one.
 */
static int prl_meta_load(struct prl_meta *pm, const char *name,
			 struct block_device *bdev, struct dm_io_client *io,
			 bool writable, char **error)
{
	struct prl_geom *g = &pm->geom;
	unsigned int lbs = bdev_logical_block_size(bdev);
	const char *why;
	int r;

	spin_lock_init(&pm->lock);
	pm->name = name;
	pm->bdev = bdev;
	pm->io = io;
	pm->dev_sectors = bdev_nr_sectors(bdev);
	pm->block_sectors = lbs >> SECTOR_SHIFT;
	if (pm->dev_sectors < pm->block_sectors) {
		*error = "Image device too small to hold a header";
		return -EINVAL;
	}

	/* The first logical block holds the header; read it alone first. */
	pm->buf = vmalloc(lbs);
	if (!pm->buf) {
		*error = "Cannot allocate memory for the header";
		return -ENOMEM;
	}
	r = prl_meta_io(pm, REQ_OP_READ, pm->buf, 0, pm->block_sectors);
	if (r) {
		*error = "Cannot read the image header";
		return r;
	}
	r = prl_parse_header(pm->buf, pm->dev_sectors, g, &why);
	if (r) {
		*error = (char *)why;
		return r;
	}
	if (!IS_ALIGNED(g->data_off, pm->block_sectors) ||
	    !IS_ALIGNED(g->cluster_sectors, pm->block_sectors)) {
		*error = "Clusters are not aligned to the image device's logical block size";
		return -EINVAL;
	}

	/* Header and BAT in whole blocks: the rounding stays below data_off. */
	pm->meta_sectors = round_up(DIV_ROUND_UP_ULL(g->meta_bytes, SECTOR_SIZE),
				    pm->block_sectors);
	pm->nr_blocks = pm->meta_sectors / pm->block_sectors;
	vfree(pm->buf);
	pm->buf = vmalloc(pm->meta_sectors << SECTOR_SHIFT);
	pm->dirty = bitmap_zalloc(pm->nr_blocks, GFP_KERNEL);
	if (writable) {
		/* Only commits need a second copy of the BAT. */
		pm->commit_buf = vmalloc(pm->meta_sectors << SECTOR_SHIFT);
		pm->writing = bitmap_zalloc(pm->nr_blocks, GFP_KERNEL);
	}
	if (!pm->buf || !pm->dirty ||
	    (writable && (!pm->commit_buf || !pm->writing))) {
		*error = "Cannot allocate memory for the BAT";
		return -ENOMEM;
	}
	pm->bat = pm->buf + PRL_HEADER_SIZE;
	return prl_meta_read_bat(pm, pm->meta_sectors, true, error);
}

/*
 * Read the header and BAT again, as another table left them (see
 * prl_meta.h).  The layout must be the one prl_meta_load() sized for.
 */
int prl_meta_refresh(struct prl_meta *pm, char **error)
{
	struct prl_geom g;
	const char *why;
	int r;

	pm->dev_sectors = bdev_nr_sectors(pm->bdev);
	r = prl_meta_io(pm, REQ_OP_READ, pm->buf, 0, pm->block_sectors);
	if (r) {
		*error = "Cannot read the image header";
		return r;
	}
	r = prl_parse_header(pm->buf, pm->dev_sectors, &g, &why);
	if (r) {
		*error = (char *)why;
		return r;
	}
	if (g.cluster_sectors != pm->geom.cluster_sectors ||
	    g.bat_entries != pm->geom.bat_entries ||
	    g.data_off != pm->geom.data_off || g.off_mult != pm->geom.off_mult ||
	    g.nb_sectors != pm->geom.nb_sectors) {
		*error = "The image's layout changed since the table was loaded";
		return -EINVAL;
	}
	pm->geom = g;
	/*
	 * Checked whole at load; since then only tables of this device wrote
	 * it.  Each entry is checked again, without the memory a search for
	 * shared clusters needs: the device is suspended.
	 */
	r = prl_meta_read_bat(pm, pm->meta_sectors, false, error);
	if (r)
		return r;
	bitmap_zero(pm->dirty, pm->nr_blocks);
	pm->committed_gen = pm->dirty_gen;
	return 0;
}

void prl_meta_grow(struct prl_meta *pm)
{
	sector_t now = bdev_nr_sectors(pm->bdev);

	spin_lock_irq(&pm->lock);
	/* A device that shrank below the data would fail writes, not corrupt. */
	if (now > pm->dev_sectors)
		pm->dev_sectors = now;
	spin_unlock_irq(&pm->lock);
}

int prl_meta_create(struct prl_meta **pmp, const char *name,
		    struct block_device *bdev, struct dm_io_client *io,
		    bool writable, char **error)
{
	struct prl_meta *pm = kzalloc(sizeof(*pm), GFP_KERNEL);
	int r;

	if (!pm) {
		*error = "Cannot allocate memory for the metadata";
		return -ENOMEM;
	}
	r = prl_meta_load(pm, name, bdev, io, writable, error);
	if (r) {
		prl_meta_destroy(pm);
		return r;
	}
	*pmp = pm;
	return 0;
}

void prl_meta_destroy(struct prl_meta *pm)
{
	if (!pm)
		return;
	bitmap_free(pm->writing);
	bitmap_free(pm->dirty);
	vfree(pm->commit_buf);
	vfree(pm->buf);
	kfree(pm);
}

const struct prl_geom *prl_meta_geom(const struct prl_meta *pm)
{
	return &pm->geom;
}

const char *prl_meta_name(const struct prl_meta *pm)
{
	return pm->name;
}

u32 prl_meta_allocated(struct prl_meta *pm)
{
	return READ_ONCE(pm->allocated);
}

sector_t prl_meta_image_end(struct prl_meta *pm)
{
	return READ_ONCE(pm->image_end);
}

u32 prl_meta_entry(struct prl_meta *pm, sector_t cluster)
{
	return le32_to_cpu(READ_ONCE(pm->bat[cluster]));
}

bool prl_meta_clean(struct prl_meta *pm)
{
	return READ_ONCE(pm->committed_gen) == READ_ONCE(pm->dirty_gen);
}

u32 prl_meta_entry_clean(struct prl_meta *pm, sector_t cluster, bool *clean)
{
	u32 entry = prl_meta_entry(pm, cluster);

	smp_rmb();	/* pairs with smp_wmb() in prl_meta_set_entry() */
	*clean = prl_meta_clean(pm);
	return entry;
}

int prl_meta_check_l1(struct prl_meta *pm, const __le64 *l1, u32 l1_size,
		      sector_t *end, const char **why)
{
	u64 *scratch, e;
	int r;

	scratch = kvmalloc_array((size_t)pm->allocated + 1 + l1_size,
				 sizeof(*scratch), GFP_KERNEL);
	if (!scratch)
		return -ENOMEM;
	r = prl_check_l1(&pm->geom, pm->bat, l1, l1_size, pm->dev_sectors,
			 scratch, &e, why);
	kvfree(scratch);
	if (!r)
		*end = e;
	return r;
}

/* Caller holds pm->lock. */
static void prl_meta_dirty_bytes(struct prl_meta *pm, size_t off, size_t len)
{
	unsigned int bs = pm->block_sectors << SECTOR_SHIFT;

	bitmap_set(pm->dirty, off / bs, (off + len - 1) / bs - off / bs + 1);
	WRITE_ONCE(pm->dirty_gen, pm->dirty_gen + 1);
}

int prl_meta_alloc(struct prl_meta *pm, sector_t *sector)
{
	const struct prl_geom *g = &pm->geom;
	unsigned long flags;
	sector_t next;
	int r = -ENOSPC;

	spin_lock_irqsave(&pm->lock, flags);
	next = pm->image_end + g->cluster_sectors;
	/* A BAT entry is 32 bits, in sectors (v1) or clusters (v2). */
	if (next <= pm->dev_sectors &&
	    div_u64(pm->image_end, g->off_mult) <= U32_MAX) {
		*sector = pm->image_end;
		pm->image_end = next;
		r = 0;
	}
	spin_unlock_irqrestore(&pm->lock, flags);
	return r;
}

void prl_meta_unalloc(struct prl_meta *pm, sector_t sector)
{
	unsigned long flags;

	spin_lock_irqsave(&pm->lock, flags);
	if (sector + pm->geom.cluster_sectors == pm->image_end)
		pm->image_end = sector;
	spin_unlock_irqrestore(&pm->lock, flags);
}

bool prl_meta_beyond_bat(struct prl_meta *pm)
{
	return div_u64(READ_ONCE(pm->image_end), pm->geom.off_mult) > U32_MAX;
}

void prl_meta_set_entry(struct prl_meta *pm, sector_t cluster, sector_t sector)
{
	struct prl_header *hdr = pm->buf;
	u32 entry = div_u64(sector, pm->geom.off_mult);
	unsigned long flags;

	spin_lock_irqsave(&pm->lock, flags);
	if (!pm->bat[cluster] && entry)
		pm->allocated++;
	else if (pm->bat[cluster] && !entry)
		pm->allocated--;
	/*
	 * Dirty first: whoever sees the new entry (prl_meta_entry(), then
	 * prl_meta_clean()) must also see that it is not committed yet.
	 */
	prl_meta_dirty_bytes(pm, (void *)&pm->bat[cluster] - pm->buf,
			     sizeof(*pm->bat));
	smp_wmb();	/* pairs with smp_rmb() in prl_meta_entry_clean() */
	WRITE_ONCE(pm->bat[cluster], cpu_to_le32(entry));
	if (entry && (pm->geom.flags & PRL_FLAG_EMPTY)) {
		/* QEMU leaves Empty set on images with data; we do not. */
		pm->geom.flags &= ~PRL_FLAG_EMPTY;
		hdr->flags = cpu_to_le32(pm->geom.flags);
		prl_meta_dirty_bytes(pm, 0, sizeof(*hdr));
	}
	spin_unlock_irqrestore(&pm->lock, flags);
}

int prl_meta_commit(struct prl_meta *pm)
{
	unsigned int bs = pm->block_sectors << SECTOR_SHIFT;
	unsigned int start, end;
	u64 gen;
	int r;

	/* 1. A consistent cut of the changes; later ones go to the next commit. */
	spin_lock_irq(&pm->lock);
	gen = pm->dirty_gen;
	if (gen == pm->committed_gen) {
		spin_unlock_irq(&pm->lock);
		return 0;
	}
	bitmap_copy(pm->writing, pm->dirty, pm->nr_blocks);
	bitmap_zero(pm->dirty, pm->nr_blocks);
	for_each_set_bitrange(start, end, pm->writing, pm->nr_blocks)
		memcpy(pm->commit_buf + (size_t)start * bs,
		       pm->buf + (size_t)start * bs, (size_t)(end - start) * bs);
	spin_unlock_irq(&pm->lock);

	/* 2. The data the new entries point at must be stable first. */
	r = blkdev_issue_flush(pm->bdev);

	/* 3. The BAT blocks, then make them stable too. */
	for_each_set_bitrange(start, end, pm->writing, pm->nr_blocks) {
		if (r)
			break;
		r = prl_meta_io(pm, REQ_OP_WRITE,
				pm->commit_buf + (size_t)start * bs,
				(sector_t)start * pm->block_sectors,
				(sector_t)(end - start) * pm->block_sectors);
	}
	if (!r)
		r = blkdev_issue_flush(pm->bdev);

	if (r) {
		/* Keep them dirty: nothing is known to be on disk. */
		spin_lock_irq(&pm->lock);
		bitmap_or(pm->dirty, pm->dirty, pm->writing, pm->nr_blocks);
		spin_unlock_irq(&pm->lock);
		return r;
	}
	WRITE_ONCE(pm->committed_gen, gen);
	return 1;
}

/*
 * Closed as "v2.1" only where a format extension is there for it to vouch
 * for; else 0, what QEMU writes on close and the one value ploop 1.15's
 * check takes for clean.
 */
void prl_meta_set_in_use(struct prl_meta *pm, bool open)
{
	struct prl_header *hdr = pm->buf;
	u32 val;

	spin_lock_irq(&pm->lock);
	val = open ? PRL_IN_USE_OPEN :
	      pm->geom.ext_off ? PRL_IN_USE_CLOSED : PRL_IN_USE_CLOSED_OLD;
	pm->geom.in_use = val;
	hdr->in_use = cpu_to_le32(val);
	prl_meta_dirty_bytes(pm, 0, sizeof(*hdr));
	spin_unlock_irq(&pm->lock);
}

void prl_meta_set_ext(struct prl_meta *pm, sector_t sector)
{
	struct prl_header *hdr = pm->buf;

	spin_lock_irq(&pm->lock);
	pm->geom.ext_off = sector;
	hdr->ext_off = cpu_to_le64(sector);
	prl_meta_dirty_bytes(pm, 0, sizeof(*hdr));
	spin_unlock_irq(&pm->lock);
}

void prl_meta_reserve(struct prl_meta *pm, sector_t end)
{
	spin_lock_irq(&pm->lock);
	if (end > pm->image_end)
		pm->image_end = end;
	spin_unlock_irq(&pm->lock);
}
