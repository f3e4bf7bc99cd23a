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

static void prl_meta_log_bat_error(const struct prl_bat_err *err,
				   const char *why)
{
	if (err->entry == PRL_ENTRY_EXT)
		DMERR("%s: format extension at sector %llu", why, err->value);
	else if (err->other == PRL_ENTRY_EXT || !err->other)
		DMERR("%s: BAT entry %u (sector %llu)", why, err->entry,
		      err->value);
	else
		DMERR("%s: BAT entries %u and %u (sector %llu)", why,
		      err->entry, err->other, err->value);
}

/*
 * Read and check the header and the BAT.  On failure *error says what is
 * wrong; the kernel log also names the BAT entry where there is one.
 */
int prl_meta_load(struct prl_meta *pm, struct block_device *bdev,
		  struct dm_io_client *io, bool writable, char **error)
{
	struct prl_geom *g = &pm->geom;
	unsigned int lbs = bdev_logical_block_size(bdev);
	struct prl_bat_err err = {};
	sector_t meta_sectors;
	const char *why;
	u64 *scratch;
	u64 end;
	int r;

	spin_lock_init(&pm->lock);
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
	meta_sectors = round_up(DIV_ROUND_UP_ULL(g->meta_bytes, SECTOR_SIZE),
				pm->block_sectors);
	pm->nr_blocks = meta_sectors / pm->block_sectors;
	vfree(pm->buf);
	pm->buf = vmalloc(meta_sectors << SECTOR_SHIFT);
	pm->dirty = bitmap_zalloc(pm->nr_blocks, GFP_KERNEL);
	if (writable) {
		/* Only commits need a second copy of the BAT. */
		pm->commit_buf = vmalloc(meta_sectors << SECTOR_SHIFT);
		pm->writing = bitmap_zalloc(pm->nr_blocks, GFP_KERNEL);
	}
	if (!pm->buf || !pm->dirty ||
	    (writable && (!pm->commit_buf || !pm->writing))) {
		*error = "Cannot allocate memory for the BAT";
		return -ENOMEM;
	}
	pm->bat = pm->buf + PRL_HEADER_SIZE;
	r = prl_meta_io(pm, REQ_OP_READ, pm->buf, 0, meta_sectors);
	if (r) {
		*error = "Cannot read the BAT";
		return r;
	}

	pm->allocated = prl_count_allocated(g, pm->bat);
	scratch = kvmalloc_array((size_t)pm->allocated + 1, sizeof(*scratch),
				 GFP_KERNEL);
	if (!scratch) {
		*error = "Cannot allocate memory to check the BAT";
		return -ENOMEM;
	}
	r = prl_check_bat(g, pm->bat, pm->dev_sectors, scratch, &end, &err,
			  &why);
	kvfree(scratch);
	if (r) {
		prl_meta_log_bat_error(&err, why);
		*error = (char *)why;
		return r;
	}
	pm->image_end = end;
	return 0;
}

void prl_meta_release(struct prl_meta *pm)
{
	bitmap_free(pm->writing);
	bitmap_free(pm->dirty);
	vfree(pm->commit_buf);
	vfree(pm->buf);
}

/* Caller holds pm->lock. */
static void prl_meta_dirty_bytes(struct prl_meta *pm, size_t off, size_t len)
{
	unsigned int bs = pm->block_sectors << SECTOR_SHIFT;

	bitmap_set(pm->dirty, off / bs, (off + len - 1) / bs - off / bs + 1);
	pm->dirty_gen++;
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
	WRITE_ONCE(pm->bat[cluster], cpu_to_le32(entry));
	prl_meta_dirty_bytes(pm, (void *)&pm->bat[cluster] - pm->buf,
			     sizeof(*pm->bat));
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
		DMERR("Metadata commit failed: %d", r);
		return r;
	}
	WRITE_ONCE(pm->committed_gen, gen);
	return 0;
}

int prl_meta_set_in_use(struct prl_meta *pm, bool open)
{
	struct prl_header *hdr = pm->buf;
	u32 val = open ? PRL_IN_USE_OPEN : PRL_IN_USE_CLOSED;

	spin_lock_irq(&pm->lock);
	pm->geom.in_use = val;
	hdr->in_use = cpu_to_le32(val);
	prl_meta_dirty_bytes(pm, 0, sizeof(*hdr));
	spin_unlock_irq(&pm->lock);
	return prl_meta_commit(pm);
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
