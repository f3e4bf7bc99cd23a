/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Parallels expandable image files, offline (../shared/specs/parallels.txt;
 * layout and validation in ../kernel/prl_format.h, the code the kernel
 * trusts).  No kernel is involved: plain pread/pwrite on the file.
 *
 * Writes follow the target's rule: data first (fsync), then the BAT entry
 * that points at it, so a crash can leak a cluster but never expose
 * unwritten data.  An image opened writable has its in_use flag set (and
 * synced) by prl_image_open() and closed by prl_image_close().
 */
#ifndef PRL_IMAGE_H
#define PRL_IMAGE_H

#include <stdbool.h>
#include <stdint.h>

#include <linux/types.h>

#include "prl_format.h"
#include "util.h"

struct prl_image {
	int fd;
	char *path;
	bool writable;
	uint64_t file_sectors;	/* size of the file when opened, sectors
				 * (kept up to date as writes extend it) */
	struct prl_geom geom;	/* validated by prl_parse_header() */
	void *meta;		/* header + BAT as on disk, meta_sectors */
	struct prl_header *hdr;	/* == meta */
	__le32 *bat;		/* geom.bat_entries entries, inside meta */
	uint32_t allocated;	/* non-zero BAT entries */
	uint64_t end;		/* first sector after the last used cluster */
	bool meta_dirty;	/* meta changed since the last sync */
	/* Added by image.c; the fields above keep their meaning. */
	uint32_t meta_sectors;	/* size of meta: header + BAT rounded up */
	uint8_t *dirty;		/* bit per meta sector changed since sync */
	bool blkdev;		/* a block device: it cannot grow */
	uint32_t closed_in_use;	/* what in_use becomes at close */
};

/* prl_image_open() flags */
#define PRL_OPEN_RW		0x1	/* read-write (sets in_use) */
#define PRL_OPEN_IGNORE_IN_USE	0x2	/* accept an image whose in_use is set */

/*
 * Open @path and validate its header and BAT with prl_format.c (exactly the
 * kernel's checks); a bad image is refused with the reason.  An image with
 * in_use set is refused for PRL_OPEN_RW unless PRL_OPEN_IGNORE_IN_USE (the
 * message says to run "prldisk check --repair").
 */
int prl_image_open(const char *path, unsigned int flags,
		   struct prl_image **out, struct prl_err *err);

/*
 * Sync and close: for a writable image, write the changed metadata after an
 * fsync of the data, set in_use closed, fsync.  Frees @img in every case.
 */
int prl_image_close(struct prl_image *img, struct prl_err *err);

/*
 * The cluster sizes prldisk makes images and disks with: those both ploop
 * 1.15 ("ploop init -b", "ploop check") and QEMU (qemu-img create -o
 * cluster_size) accept, powers of two from 32 KiB to 64 MiB.  QEMU
 * alone takes any multiple of 512 up to 1 GiB, and images it made with
 * such sizes are still read, checked and served; prldisk only makes none.
 */
#define PRL_CREATE_MIN_CLUSTER_SECTORS	64U		/* 32 KiB */
#define PRL_CREATE_MAX_CLUSTER_SECTORS	131072U		/* 64 MiB */
bool prl_cluster_size_ok(uint64_t sectors);

struct prl_create_opts {
	uint64_t size;			/* virtual size, sectors (> 0) */
	uint32_t cluster_sectors;	/* default 2048 (1 MiB) */
	enum prl_format_version fmt;	/* PRL_V1 or PRL_V2 (default) */
	const struct stat *like;	/* owner, group, mode; else 0600 */
};

/*
 * Create a new, empty image at @path (O_EXCL: an existing file is an
 * error): header, zeroed BAT, data_off rounded up to a cluster, Empty flag
 * set, in_use closed.  A v1 image is limited to 2^32 - 1 sectors (and the
 * file to 2 TiB): a larger size is refused.  The file is fsync'ed.
 */
int prl_image_create(const char *path, const struct prl_create_opts *o,
		     struct prl_err *err);

/* File sector of virtual cluster @cluster, 0 if the image lacks it. */
uint64_t prl_image_lookup(const struct prl_image *img, uint64_t cluster);

/*
 * Read / write whole clusters of this image alone (no backing chain):
 * @buf holds geom.cluster_sectors * 512 bytes.  read: *present says
 * whether the image has the cluster (buf is zeroed if not); any cluster
 * of the BAT.  write: only clusters inside the virtual size; allocates at
 * the image end if needed; the BAT entry is set in memory and reaches the
 * disk at prl_image_sync() after an fsync of the data.  A write clears
 * the Empty flag (kept set by QEMU, checked by ploop).  On a block device
 * an allocation past its end fails with -ENOSPC.
 */
int prl_image_read_cluster(struct prl_image *img, uint64_t cluster, void *buf,
			   bool *present, struct prl_err *err);
int prl_image_write_cluster(struct prl_image *img, uint64_t cluster,
			    const void *buf, struct prl_err *err);

/* fsync the data, write the changed header/BAT sectors, fsync again. */
int prl_image_sync(struct prl_image *img, struct prl_err *err);

/* Number of clusters of the virtual disk: ceil(nb_sectors / cluster). */
uint64_t prl_image_clusters(const struct prl_image *img);

/* Clusters inside the virtual size that the BAT maps. */
uint64_t prl_image_count_mapped(const struct prl_image *img);

/*
 * The largest end (in sectors) the image can reach when every BAT entry
 * it lacks is allocated at the end: what a file must be pre-extended to
 * for a loop device to cover all future allocations (DESIGN.md).
 */
uint64_t prl_image_max_end(const struct prl_image *img);

/*
 * Building blocks for ops.c and check (the image must be writable):
 * alloc reserves the cluster at the image end (img->end moves on; the file
 * grows when it is written) and clears the Empty flag; set_entry points
 * BAT entry @cluster at file sector @sector (0: unmapped) in memory and
 * marks its BAT sector dirty.  Nothing reaches the disk before
 * prl_image_sync(), so write the data first.
 */
int prl_image_alloc(struct prl_image *img, uint64_t *sector,
		    struct prl_err *err);
int prl_image_set_entry(struct prl_image *img, uint64_t cluster,
			uint64_t sector, struct prl_err *err);

/*
 * Cut a file image to img->end after a sync (space of clusters past the
 * last used one, e.g. after a failed write or a pre-extension).  Block
 * devices are left alone.
 */
int prl_image_truncate(struct prl_image *img, struct prl_err *err);

/*
 * Offline operations (ops.c).  Each keeps what every other snapshot sees
 * unchanged and is ordered so that a crash leaves a usable image.
 *
 * merge: copy every cluster @from has into @into (overwriting), so that
 * @into then reads as @from over @into.  @into may be NULL with @raw_fd a
 * Plain root image to write into instead (a file shorter than @from's
 * virtual size is extended to it, a device that small is refused before
 * anything is written).  Cluster sizes must match and @into must be at
 * least as large as @from (grow it first).  Progress through @progress.
 *
 * fill: copy into @img every cluster that @img lacks and @below has (so
 * that @img no longer needs @below for those).
 *
 * grow: make the virtual size @new_size sectors; when the bigger BAT needs
 * room, the data clusters in its way move to the image end first.
 *
 * convert: rewrite the header and BAT as @fmt (v1 "WithoutFreeSpace" or
 * v2 "WithouFreSpacExt"), moving clusters where the new grid needs it;
 * refused (and nothing changed) if a v1 image could not address the data.
 * The unit of every BAT entry changes with the magic, which no in-place
 * write order can make crash safe, so convert writes a new file beside the
 * image (clusters packed in BAT order) and renames it over the image; @img
 * then describes the new file.  Image files only, not block devices; the
 * image must not be in use elsewhere (a loop device would keep the old
 * file).  grow keeps the image in place and its cluster grid.
 */
typedef void (*prl_progress_fn)(void *ctx, uint64_t done, uint64_t total);

int prl_image_merge(struct prl_image *from, struct prl_image *into, int raw_fd,
		    prl_progress_fn progress, void *ctx, struct prl_err *err);
int prl_image_fill(struct prl_image *img, struct prl_image *below,
		   prl_progress_fn progress, void *ctx, struct prl_err *err);
/*
 * fill_part: fill from cluster *@next on, at most @max clusters (0: no
 * limit); *@next is where to go on.  Returns 1 if clusters to fill are
 * left past *@next, 0 if not, or a negative errno.  Both fill and merge
 * sync the BAT every few GiB, so a run killed midway keeps its progress.
 */
int prl_image_fill_part(struct prl_image *img, struct prl_image *below,
			uint64_t *next, uint64_t max, prl_progress_fn progress,
			void *ctx, struct prl_err *err);
int prl_image_grow(struct prl_image *img, uint64_t new_size,
		   struct prl_err *err);
int prl_image_convert(struct prl_image *img, enum prl_format_version fmt,
		      struct prl_err *err);

#endif /* PRL_IMAGE_H */
