/* SPDX-License-Identifier: GPL-2.0 */
/*
 * dm-parallels metadata: the image header and BAT, in memory and on disk.
 *
 * The header and BAT are kept in one buffer laid out exactly as on disk, so
 * a commit writes changed logical blocks of it as they are.  BAT changes are
 * served at once from memory and become durable at the next commit:
 *
 *   1. copy the changed blocks aside (under the lock: a consistent cut),
 *   2. flush the image device, so the data those entries point at is stable,
 *   3. write the copied blocks, flush again.
 *
 * An entry is only set once the cluster it points at has been written, so a
 * crash can leak clusters but never expose a BAT entry to unwritten data.
 *
 * Locking: prl_meta_entry() may be called from any context without a lock.
 * prl_meta_set_entry() and prl_meta_dirty() take an irq-safe spinlock.  Only
 * one thread may call prl_meta_commit() and prl_meta_set_in_use() at a time
 * (the target's worker, or its suspend hooks when the worker is idle); they
 * sleep.
 */
#ifndef PRL_META_H
#define PRL_META_H

#include <linux/device-mapper.h>
#include <linux/spinlock.h>

#include "prl_format.h"

struct dm_io_client;

struct prl_meta {
	struct block_device *bdev;
	struct dm_io_client *io;
	struct prl_geom geom;

	void *buf;		/* header + BAT, as on disk */
	__le32 *bat;		/* points into buf */
	void *commit_buf;	/* the blocks being written by a commit (rw only) */
	unsigned int block_sectors;
	unsigned int nr_blocks;

	spinlock_t lock;	/* buf, dirty, dirty_gen, allocated */
	unsigned long *dirty;	/* blocks changed since the last cut */
	unsigned long *writing;	/* blocks of the commit in progress */
	u64 dirty_gen;		/* bumped by every change */
	u64 committed_gen;	/* dirty_gen that the last commit covered */
	u32 allocated;
	sector_t dev_sectors;
	sector_t image_end;	/* first sector after the last used cluster */
};

/* Synchronous I/O of @count sectors of the image at @sector, via dm-io. */
int prl_meta_io(struct prl_meta *pm, blk_opf_t opf, void *buf,
		sector_t sector, sector_t count);

/* @writable: also allocate what prl_meta_commit() needs. */
int prl_meta_load(struct prl_meta *pm, struct block_device *bdev,
		  struct dm_io_client *io, bool writable, char **error);
void prl_meta_release(struct prl_meta *pm);

static inline u32 prl_meta_entry(struct prl_meta *pm, sector_t cluster)
{
	return le32_to_cpu(READ_ONCE(pm->bat[cluster]));
}

/* Reserve the next cluster at the image end: its file sector, or -ENOSPC. */
int prl_meta_alloc(struct prl_meta *pm, sector_t *sector);

/* Why -ENOSPC: true if the BAT cannot address the next cluster (v1: 2 TiB). */
bool prl_meta_beyond_bat(struct prl_meta *pm);

/*
 * Point @cluster at file sector @sector (from prl_meta_alloc()), or with 0 at
 * nothing.  The first allocation also clears the header's Empty flag.
 */
void prl_meta_set_entry(struct prl_meta *pm, sector_t cluster, sector_t sector);

/* True if every change so far is on disk. */
static inline bool prl_meta_clean(struct prl_meta *pm)
{
	return READ_ONCE(pm->committed_gen) == READ_ONCE(pm->dirty_gen);
}

int prl_meta_commit(struct prl_meta *pm);

/* Point the header's ext_off at @sector (0: none), from the next commit. */
void prl_meta_set_ext(struct prl_meta *pm, sector_t sector);

/* Clusters below @end are taken (a format extension's): allocate past it. */
void prl_meta_reserve(struct prl_meta *pm, sector_t end);

/* Set the header's in_use to open (before the first write) or closed. */
int prl_meta_set_in_use(struct prl_meta *pm, bool open);

#endif /* PRL_META_H */
