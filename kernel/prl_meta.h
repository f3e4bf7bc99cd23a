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
 * A table loaded while another table of the same device still writes the
 * image (dmsetup reload of a live table) reads the header and BAT again
 * with prl_meta_refresh() once the old one has committed and closed: at its
 * preresume, when nothing else touches them.
 *
 * Locking: prl_meta_entry() may be called from any context without a lock.
 * prl_meta_set_entry() and the other setters take an irq-safe spinlock.
 * Only one thread may call prl_meta_commit() at a time (the target's
 * worker, or its suspend hooks when the worker is idle); it sleeps.
 */
#ifndef PRL_META_H
#define PRL_META_H

#include <linux/device-mapper.h>
#include <linux/spinlock.h>

#include "prl_format.h"

struct dm_io_client;
struct prl_meta;	/* opaque: its layout is prl_meta.c's */

/* Synchronous I/O of @count sectors of the image at @sector, via dm-io. */
int prl_meta_io(struct prl_meta *pm, blk_opf_t opf, void *buf,
		sector_t sector, sector_t count);

/*
 * Read and check the header and the BAT of the image on @bdev.  @name: the
 * dm device, for log lines.  @writable: also allocate what
 * prl_meta_commit() needs.  On failure *@error says what is wrong.
 */
int prl_meta_create(struct prl_meta **pmp, const char *name,
		    struct block_device *bdev, struct dm_io_client *io,
		    bool writable, char **error);
void prl_meta_destroy(struct prl_meta *pm);

/* Read the header and BAT again; the layout must not have changed. */
int prl_meta_refresh(struct prl_meta *pm, char **error);

/* The image device grew (losetup -c, lvextend): allocate into it. */
void prl_meta_grow(struct prl_meta *pm);

/*
 * The header as it is in memory.  Its layout fields never change; in_use,
 * flags and ext_off change by the setters below.
 */
const struct prl_geom *prl_meta_geom(const struct prl_meta *pm);
const char *prl_meta_name(const struct prl_meta *pm);
u32 prl_meta_allocated(struct prl_meta *pm);
/* First sector after the last cluster in use. */
sector_t prl_meta_image_end(struct prl_meta *pm);

/* The BAT entry of @cluster (0: none); any context, no lock. */
u32 prl_meta_entry(struct prl_meta *pm, sector_t cluster);

/* True if every change so far is on disk. */
bool prl_meta_clean(struct prl_meta *pm);

/*
 * The entry of @cluster, and in *@clean whether it (and everything else)
 * is committed: an entry set after the last commit's cut is never seen as
 * clean (prl_meta_set_entry() dirties before it publishes).
 */
u32 prl_meta_entry_clean(struct prl_meta *pm, sector_t cluster, bool *clean);

/*
 * Check the clusters a dirty bitmap's L1 table points at against the BAT
 * (prl_check_l1()); *@end: the image end counting them.  -EINVAL with
 * *@why, or -ENOMEM.
 */
int prl_meta_check_l1(struct prl_meta *pm, const __le64 *l1, u32 l1_size,
		      sector_t *end, const char **why);

/* Reserve the next cluster at the image end: its file sector, or -ENOSPC. */
int prl_meta_alloc(struct prl_meta *pm, sector_t *sector);

/* Give back @sector from prl_meta_alloc() if nothing was allocated after it. */
void prl_meta_unalloc(struct prl_meta *pm, sector_t sector);

/* Why -ENOSPC: true if the BAT cannot address the next cluster (v1: 2 TiB). */
bool prl_meta_beyond_bat(struct prl_meta *pm);

/*
 * Point @cluster at file sector @sector (from prl_meta_alloc()), or with 0 at
 * nothing.  The first allocation also clears the header's Empty flag.
 */
void prl_meta_set_entry(struct prl_meta *pm, sector_t cluster, sector_t sector);

/*
 * Make every change so far durable: 1 if it wrote (and flushed the image
 * device, after every write that had completed when it was called), 0 if
 * there was nothing to write (and it flushed nothing), or -errno.
 */
int prl_meta_commit(struct prl_meta *pm);

/* Point the header's ext_off at @sector (0: none), from the next commit. */
void prl_meta_set_ext(struct prl_meta *pm, sector_t sector);

/* Clusters below @end are taken (a format extension's): allocate past it. */
void prl_meta_reserve(struct prl_meta *pm, sector_t end);

/* Set the header's in_use to open (before the first write) or closed. */
void prl_meta_set_in_use(struct prl_meta *pm, bool open);

#endif /* PRL_META_H */
