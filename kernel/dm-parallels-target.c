// SPDX-License-Identifier: GPL-2.0
/*
 * dm-parallels: serve Parallels expandable images ("ploop") as block devices.
 *
 * The whole BAT is read and validated at construction and kept in memory in
 * its on-disk form (prl_meta.c).  map() remaps a bio to the image for
 * allocated clusters and reads of the others to the lower device (the parent
 * snapshot, or zeros), so a stack of images becomes a chain of tables.
 *
 * Everything else goes to one worker: a write to a cluster the image lacks
 * gets a new cluster at the image end, filled from the lower device (or
 * zeroed) unless the write covers it whole, and is let through once the
 * fill is on disk; only then does the BAT entry point at it.  Flush and FUA
 * bios wait for a metadata commit (prl_meta.h).  See
 * Documentation/dm-parallels.rst.
 */
#include <linux/bio.h>
#include <linux/blkdev.h>
#include <linux/device-mapper.h>
#include <linux/dm-io.h>
#include <linux/dm-kcopyd.h>
#include <linux/hashtable.h>
#include <linux/log2.h>
#include <linux/math64.h>
#include <linux/mempool.h>
#include <linux/module.h>
#include <linux/mutex.h>
#include <linux/sched/mm.h>
#include <linux/slab.h>
#include <linux/workqueue.h>

#include "prl_cbt.h"
#include "prl_meta.h"

#define DM_MSG_PREFIX "parallels"

#define PRL_DEFAULT_COMMIT_MS	1000

/* 6.5 turned fmode_t into blk_mode_t for block device opens. */
#ifdef BLK_OPEN_READ
#define PRL_MODE_READ	BLK_OPEN_READ
#define PRL_MODE_WRITE	BLK_OPEN_WRITE
#else
#define PRL_MODE_READ	FMODE_READ
#define PRL_MODE_WRITE	FMODE_WRITE
#endif

enum prl_state {
	PRL_STATE_RW,
	PRL_STATE_RO,
	PRL_STATE_NEEDS_CHECK,
	PRL_STATE_ERROR,
};

static const char * const prl_state_names[] = {
	[PRL_STATE_RW] = "rw",
	[PRL_STATE_RO] = "ro",
	[PRL_STATE_NEEDS_CHECK] = "needs_check",
	[PRL_STATE_ERROR] = "error",
};

/* A cluster being allocated: writes to it wait here until it is filled. */
struct prl_alloc {
	struct prl_target *pt;
	struct hlist_node node;
	sector_t cluster;		/* virtual cluster */
	sector_t sector;		/* its new place in the image */
	struct bio *bio;		/* the write that asked for it */
	struct bio_list waiting;	/* later writes to the same cluster */
	atomic_t jobs;			/* fill jobs in flight */
	bool failed;
	bool zero_only;			/* a discard or write-zeroes of it all */
};

/* Per-bio data: a whole-cluster write is hooked to learn when it landed. */
struct prl_bio {
	bio_end_io_t *end_io;
	struct prl_alloc *alloc;
};

#define PRL_ALLOC_HASH_BITS	6
#define PRL_MIN_ALLOCS		16

struct prl_target {
	struct dm_target *ti;
	struct dm_dev *image;
	struct dm_dev *lower;		/* NULL: unallocated clusters are zeros */
	sector_t lower_sectors;

	struct prl_meta *meta;
	const struct prl_geom *g;	/* prl_meta_geom(meta) */
	struct prl_cbt cbt;
	unsigned int cluster_shift;	/* log2(cluster), if a power of two */
	bool cluster_pow2;
	bool writable;
	bool open;			/* in_use is set on disk */
	bool refresh;			/* reloaded over a live table: re-read */
	bool takeover;			/* ... that had (or may have) it open */
	bool cbt_current;		/* suspended, the bitmap stored as it is */
	enum prl_state state;
	const char *error_op;		/* what failed, for the status */
	int error_errno;
	struct list_head node;		/* in prl_tables */
	struct mapped_device *md;

	struct dm_io_client *io;
	struct dm_kcopyd_client *kc;
	struct workqueue_struct *wq;
	struct work_struct worker;
	struct delayed_work waker;
	mempool_t alloc_pool;

	spinlock_t lock;		/* the lists and allocs below */
	struct bio_list deferred;	/* writes and flushes for the worker */
	struct bio_list commit_wait;	/* written, complete after a commit */
	DECLARE_HASHTABLE(allocs, PRL_ALLOC_HASH_BITS);
	bool commit_requested;
	bool flush_requested;		/* "commit": flush even if clean */
	int flush_result;		/* ... and how that went */
	bool cbt_store_requested;	/* "commit": the bitmap too */
	struct mutex suspend_lock;	/* postsuspend vs the commit message */
	u64 nospc;			/* writes refused for lack of space */

	/* Optional arguments, kept to print the table back. */
	bool ignore_in_use;
	bool no_discard;
	unsigned int commit_interval_ms;
	bool cbt_arg;			/* "cbt" */
	u32 cbt_granularity;		/* "cbt_granularity:<n>", or 0 */
	unsigned int logical_bs;	/* "logical_block_size:<n>", or 0 */
	unsigned int physical_bs;	/* "physical_block_size:<n>", or 0 */
};

/*
 * Every table, so that one loaded over a live table of the same device
 * (dmsetup reload) knows that the image it read may still change until
 * that table is suspended, and reads it again at its preresume.
 */
static LIST_HEAD(prl_tables);
static DEFINE_MUTEX(prl_tables_lock);

static bool prl_same(struct prl_target *a, struct prl_target *b)
{
	return a != b && a->md == b->md && a->image->bdev == b->image->bdev;
}

/* A writable table of this device that has the image open, or may have. */
static bool prl_open_by(struct prl_target *o)
{
	return o->writable && (READ_ONCE(o->open) || o->takeover);
}

/*
 * Is another table of this device on the same image?  Then re-read it at
 * preresume; and if that one has it open, its in_use flag is ours.
 */
static void prl_register(struct prl_target *pt)
{
	struct prl_target *o;

	mutex_lock(&prl_tables_lock);
	list_for_each_entry(o, &prl_tables, node) {
		if (!prl_same(o, pt))
			continue;
		pt->refresh = true;
		if (prl_open_by(o))
			pt->takeover = true;
	}
	list_add(&pt->node, &prl_tables);
	mutex_unlock(&prl_tables_lock);
}

/* Did a table of this device open the image and not close it? */
static bool prl_predecessor_open(struct prl_target *pt)
{
	struct prl_target *o;
	bool open = false;

	mutex_lock(&prl_tables_lock);
	list_for_each_entry(o, &prl_tables, node)
		if (prl_same(o, pt) && prl_open_by(o))
			open = true;
	mutex_unlock(&prl_tables_lock);
	return open;
}

/*
 * The dirty bitmap for a table that takes over: the one its predecessor
 * stored at its suspend, as that one has it in memory (nothing to read or
 * allocate while suspended), else read from the image.
 */
static int prl_cbt_takeover(struct prl_target *pt, char **why)
{
	struct prl_cbt fresh = {};
	struct prl_target *o;
	bool done = false;
	int r;

	mutex_lock(&prl_tables_lock);
	list_for_each_entry(o, &prl_tables, node)
		if (!done && prl_same(o, pt) && o->writable &&
		    READ_ONCE(o->cbt_current)) {
			prl_cbt_exchange(&pt->cbt, &o->cbt);
			WRITE_ONCE(o->cbt_current, false);
			done = true;
		}
	mutex_unlock(&prl_tables_lock);
	if (done)
		return 0;
	r = prl_cbt_load(&fresh, pt->meta, false, 0, why);
	if (!r)
		prl_cbt_exchange(&pt->cbt, &fresh);
	prl_cbt_release(&fresh);
	return r;
}

/*
 * A sector size the block layer takes for a dm device: a power of two from
 * 512 up to the page size (4096 on every architecture Debian ships with a
 * 4 KiB page; larger pages would allow more, but no disk format asks it).
 */
#define PRL_MAX_BLOCK_SIZE	4096

static bool prl_block_size_ok(unsigned int bs)
{
	return bs >= SECTOR_SIZE && bs <= PRL_MAX_BLOCK_SIZE && is_power_of_2(bs);
}

static int prl_parse_args(struct prl_target *pt, struct dm_arg_set *as)
{
	static const struct dm_arg _args[] = {
		{0, 10, "Invalid number of optional arguments"},
	};
	struct dm_target *ti = pt->ti;
	unsigned int argc;
	int r;

	pt->commit_interval_ms = PRL_DEFAULT_COMMIT_MS;
	if (!as->argc)
		return 0;
	r = dm_read_arg_group(_args, as, &argc, &ti->error);
	if (r)
		return r;

	while (argc--) {
		const char *arg = dm_shift_arg(as);
		unsigned int val;
		char dummy;

		if (!strcasecmp(arg, "ignore_in_use")) {
			pt->ignore_in_use = true;
			continue;
		}
		if (!strcasecmp(arg, "no_discard")) {
			pt->no_discard = true;
			continue;
		}
		if (sscanf(arg, "commit_interval_ms:%u%c", &val, &dummy) == 1) {
			if (!val || val > 3600 * 1000) {
				ti->error = "commit_interval_ms must be 1..3600000";
				return -EINVAL;
			}
			pt->commit_interval_ms = val;
			continue;
		}
		if (!strcasecmp(arg, "cbt")) {
			pt->cbt_arg = true;
			continue;
		}
		if (sscanf(arg, "cbt_granularity:%u%c", &val, &dummy) == 1) {
			if (!val || !is_power_of_2(val) || val > PRL_CBT_MAX_GRANULARITY) {
				ti->error = "cbt_granularity must be a power of two up to 2^22";
				return -EINVAL;
			}
			pt->cbt_granularity = val;
			continue;
		}
		/* What the disk says its sectors are (DiskDescriptor.xml). */
		if (sscanf(arg, "logical_block_size:%u%c", &val, &dummy) == 1) {
			if (!prl_block_size_ok(val)) {
				ti->error = "logical_block_size must be 512, 1024, 2048 or 4096";
				return -EINVAL;
			}
			pt->logical_bs = val;
			continue;
		}
		if (sscanf(arg, "physical_block_size:%u%c", &val, &dummy) == 1) {
			if (!prl_block_size_ok(val)) {
				ti->error = "physical_block_size must be 512, 1024, 2048 or 4096";
				return -EINVAL;
			}
			pt->physical_bs = val;
			continue;
		}
		ti->error = "Unknown optional argument";
		return -EINVAL;
	}
	if (as->argc) {
		ti->error = "Unexpected arguments after the optional arguments";
		return -EINVAL;
	}
	if (pt->physical_bs && pt->physical_bs < pt->logical_bs) {
		ti->error = "physical_block_size is smaller than logical_block_size";
		return -EINVAL;
	}
	/* dm would refuse it too, but without naming the argument. */
	if (pt->logical_bs &&
	    ((ti->begin | ti->len) & ((pt->logical_bs >> SECTOR_SHIFT) - 1))) {
		ti->error = "Target length is not a multiple of logical_block_size";
		return -EINVAL;
	}
	return 0;
}

static void prl_destroy(struct prl_target *pt)
{
	if (!list_empty(&pt->node)) {
		mutex_lock(&prl_tables_lock);
		list_del(&pt->node);
		mutex_unlock(&prl_tables_lock);
	}
	if (pt->wq)
		destroy_workqueue(pt->wq);
	mempool_exit(&pt->alloc_pool);
	if (pt->kc)
		dm_kcopyd_client_destroy(pt->kc);
	if (pt->writable)
		prl_cbt_release(&pt->cbt);
	prl_meta_destroy(pt->meta);
	if (pt->io)
		dm_io_client_destroy(pt->io);
	if (pt->lower)
		dm_put_device(pt->ti, pt->lower);
	if (pt->image)
		dm_put_device(pt->ti, pt->image);
	kfree(pt);
}

static void prl_worker(struct work_struct *ws);
static void prl_waker(struct work_struct *ws);

/* What a writable table needs beyond reading: the worker and its tools. */
static int prl_init_writer(struct prl_target *pt)
{
	struct dm_target *ti = pt->ti;
	const struct prl_geom *g = pt->g;
	int r;

	/* A live table of this device holds it open: see preresume. */
	if (g->in_use == PRL_IN_USE_OPEN && !pt->ignore_in_use &&
	    !pt->takeover) {
		ti->error = "Image in use or not closed cleanly (see ignore_in_use)";
		return -EBUSY;
	}
	if (prl_in_use_foreign(g->in_use)) {
		char st[PRL_STAMP_LEN], q[PRL_STAMP_LEN + 2];

		/* Like 0: the extension is not trusted. */
		snprintf(q, sizeof(q), prl_in_use_stamp(g->in_use, st) ?
			 "'%s'" : "%s", st);
		DMINFO("%s: foreign creator stamp %s in in_use: read as closed by old software",
		       dm_table_device_name(ti->table), q);
	}
	pt->writable = true;	/* from here on prl_destroy() releases the cbt */
	if (pt->refresh) {
		/* The live table may still change it: taken at preresume. */
		prl_cbt_init(&pt->cbt);
	} else {
		r = prl_cbt_load(&pt->cbt, pt->meta,
				 pt->cbt_arg || pt->cbt_granularity,
				 pt->cbt_granularity ?: PRL_CBT_DEFAULT_GRANULARITY,
				 &ti->error);
		if (r)
			return r;
	}

	pt->kc = dm_kcopyd_client_create(NULL);
	if (IS_ERR(pt->kc)) {
		r = PTR_ERR(pt->kc);
		pt->kc = NULL;
		ti->error = "Cannot create kcopyd client";
		return r;
	}
	r = mempool_init_kmalloc_pool(&pt->alloc_pool, PRL_MIN_ALLOCS,
				      sizeof(struct prl_alloc));
	if (r) {
		ti->error = "Cannot allocate memory";
		return r;
	}
	pt->wq = alloc_workqueue("dm-" DM_MSG_PREFIX, WQ_MEM_RECLAIM, 1);
	if (!pt->wq) {
		ti->error = "Cannot create workqueue";
		return -ENOMEM;
	}
	INIT_WORK(&pt->worker, prl_worker);
	INIT_DELAYED_WORK(&pt->waker, prl_waker);
	spin_lock_init(&pt->lock);
	mutex_init(&pt->suspend_lock);
	bio_list_init(&pt->deferred);
	bio_list_init(&pt->commit_wait);
	hash_init(pt->allocs);

	if (!pt->no_discard) {
		ti->num_discard_bios = 1;
		ti->discards_supported = true;
	}
	ti->num_write_zeroes_bios = 1;
	ti->per_io_data_size = sizeof(struct prl_bio);
	ti->accounts_remapped_io = true;
	return 0;
}

/* A writable table may not leave allocated clusters out of its length. */
static int prl_check_len(struct prl_target *pt, char **error)
{
	struct prl_meta *pm = pt->meta;
	u32 c, first = DIV_ROUND_UP_ULL(pt->ti->len, pt->g->cluster_sectors);

	for (c = first; c < pt->g->bat_entries; c++)
		if (prl_meta_entry(pm, c)) {
			DMERR("%s: cluster %u is allocated past the table's length %llu",
			      dm_table_device_name(pt->ti->table), c,
			      (unsigned long long)pt->ti->len);
			*error = "Target length leaves allocated clusters out";
			return -EINVAL;
		}
	return 0;
}

/*
 * <image_dev> <lower_dev|-> [<#opt_args> <opt_arg>...]
 */
static int prl_ctr(struct dm_target *ti, unsigned int argc, char **argv)
{
	struct dm_arg_set as = { .argc = argc, .argv = argv };
	struct prl_target *pt;
	const char *image_path, *lower_path;
	const struct prl_geom *g;
	int r;

	if (argc < 2) {
		ti->error = "Invalid argument count: need <image_dev> <lower_dev|->";
		return -EINVAL;
	}
	pt = kzalloc(sizeof(*pt), GFP_KERNEL);
	if (!pt) {
		ti->error = "Cannot allocate target context";
		return -ENOMEM;
	}
	pt->ti = ti;
	pt->md = dm_table_get_md(ti->table);
	INIT_LIST_HEAD(&pt->node);
	image_path = dm_shift_arg(&as);
	lower_path = dm_shift_arg(&as);

	r = prl_parse_args(pt, &as);
	if (r)
		goto bad;

	r = dm_get_device(ti, image_path, dm_table_get_mode(ti->table),
			  &pt->image);
	if (r) {
		ti->error = "Cannot open the image device";
		goto bad;
	}
	if (strcmp(lower_path, "-")) {
		/* Only ever read, so a read-only parent can serve. */
		r = dm_get_device(ti, lower_path, PRL_MODE_READ, &pt->lower);
		if (r) {
			ti->error = "Cannot open the lower device";
			goto bad;
		}
		if (pt->lower->bdev == pt->image->bdev) {
			ti->error = "The lower device is the image device";
			r = -EINVAL;
			goto bad;
		}
		pt->lower_sectors = bdev_nr_sectors(pt->lower->bdev);
	}

	pt->io = dm_io_client_create();
	if (IS_ERR(pt->io)) {
		r = PTR_ERR(pt->io);
		pt->io = NULL;
		ti->error = "Cannot create dm-io client";
		goto bad;
	}

	prl_register(pt);
	r = prl_meta_create(&pt->meta, dm_table_device_name(ti->table),
			    pt->image->bdev, pt->io,
			    dm_table_get_mode(ti->table) & PRL_MODE_WRITE,
			    &ti->error);
	if (r)
		goto bad;
	pt->g = prl_meta_geom(pt->meta);
	g = pt->g;
	if (ti->len > g->nb_sectors) {
		ti->error = "Target length exceeds the image's virtual size";
		r = -EINVAL;
		goto bad;
	}
	pt->cluster_pow2 = is_power_of_2(g->cluster_sectors);
	if (pt->cluster_pow2)
		pt->cluster_shift = ilog2(g->cluster_sectors);

	if (dm_table_get_mode(ti->table) & PRL_MODE_WRITE) {
		r = prl_check_len(pt, &ti->error);
		if (!r)
			r = prl_init_writer(pt);
		if (r)
			goto bad;
		pt->state = PRL_STATE_RW;
	} else if (pt->cbt_arg || pt->cbt_granularity) {
		ti->error = "Changed block tracking needs a writable table";
		r = -EINVAL;
		goto bad;
	} else {
		pt->state = g->in_use == PRL_IN_USE_OPEN ?
			    PRL_STATE_NEEDS_CHECK : PRL_STATE_RO;
	}

	r = dm_set_target_max_io_len(ti, g->cluster_sectors);
	if (r)
		goto bad;
	ti->num_flush_bios = 1;
	/* Flushes reach map() even if no device below has a write cache. */
	ti->flush_supported = true;
	ti->private = pt;
	return 0;

bad:
	prl_destroy(pt);
	return r;
}

static void prl_dtr(struct dm_target *ti)
{
	prl_destroy(ti->private);
}

/*
 * Any failure to write metadata leaves the target failing writes, for good:
 * entered once, logged once, no retries.  The way back is a new table
 * (dmsetup reload, once the device below works), or prldisk check --repair.
 */
static void prl_set_error(struct prl_target *pt, const char *op, int err)
{
	if (READ_ONCE(pt->state) == PRL_STATE_ERROR)
		return;
	pt->error_op = op;
	pt->error_errno = err;
	DMERR("%s: %s failed (%d): writes now fail; reload the table once the image device works",
	      dm_table_device_name(pt->ti->table), op, err);
	/* pairs with smp_load_acquire() in prl_status() */
	smp_store_release(&pt->state, PRL_STATE_ERROR);
	dm_table_event(pt->ti->table);
}

static bool prl_failed(struct prl_target *pt)
{
	return READ_ONCE(pt->state) == PRL_STATE_ERROR;
}

static sector_t prl_cluster_of(struct prl_target *pt, sector_t vsec,
			       u32 *offset)
{
	if (pt->cluster_pow2) {
		*offset = vsec & (pt->g->cluster_sectors - 1);
		return vsec >> pt->cluster_shift;
	}
	return div_u64_rem(vsec, pt->g->cluster_sectors, offset);
}

static void prl_remap_image(struct prl_target *pt, struct bio *bio,
			    sector_t sector, u32 offset)
{
	bio_set_dev(bio, pt->image->bdev);
	bio->bi_iter.bi_sector = sector + offset;
}

/* Clusters the image does not have come from below, or read as zeros. */
static int prl_map_lower(struct prl_target *pt, struct bio *bio, sector_t vsec)
{
	if (!pt->lower || vsec >= pt->lower_sectors) {
		zero_fill_bio(bio);
		bio_endio(bio);
		return DM_MAPIO_SUBMITTED;
	}
	/* A parent made before the disk grew: the rest comes back as zeros. */
	if (bio_end_sector(bio) - bio->bi_iter.bi_sector >
	    pt->lower_sectors - vsec)
		dm_accept_partial_bio(bio, pt->lower_sectors - vsec);
	bio_set_dev(bio, pt->lower->bdev);
	bio->bi_iter.bi_sector = vsec;
	return DM_MAPIO_REMAPPED;
}

static void prl_defer(struct prl_target *pt, struct bio *bio)
{
	unsigned long flags;

	spin_lock_irqsave(&pt->lock, flags);
	bio_list_add(&pt->deferred, bio);
	spin_unlock_irqrestore(&pt->lock, flags);
	queue_work(pt->wq, &pt->worker);
}

static bool prl_is_zeroing(struct bio *bio)
{
	return bio_op(bio) == REQ_OP_DISCARD ||
	       bio_op(bio) == REQ_OP_WRITE_ZEROES;
}

static bool prl_is_flush(struct bio *bio)
{
	return bio->bi_opf & (REQ_PREFLUSH | REQ_FUA);
}

static int prl_map(struct dm_target *ti, struct bio *bio)
{
	struct prl_target *pt = ti->private;
	sector_t vsec, cluster;
	u32 offset, entry;
	bool clean;

	if (unlikely(pt->refresh))
		return DM_MAPIO_KILL;	/* a failed preresume: never trust it */
	if (unlikely(!bio_sectors(bio))) {
		/* An empty flush: it waits for a commit if one is due. */
		if (pt->writable && !prl_meta_clean(pt->meta)) {
			prl_defer(pt, bio);
			return DM_MAPIO_SUBMITTED;
		}
		bio_set_dev(bio, pt->image->bdev);
		return DM_MAPIO_REMAPPED;
	}

	vsec = dm_target_offset(ti, bio->bi_iter.bi_sector);
	cluster = prl_cluster_of(pt, vsec, &offset);
	entry = prl_meta_entry_clean(pt->meta, cluster, &clean);

	if (bio_op(bio) == REQ_OP_READ) {
		if (!entry)
			return prl_map_lower(pt, bio, vsec);
		prl_remap_image(pt, bio, prl_entry_sector(pt->g, entry),
				offset);
		return DM_MAPIO_REMAPPED;
	}

	if (unlikely(!pt->writable || prl_failed(pt)))
		return DM_MAPIO_KILL;
	if (prl_is_zeroing(bio)) {
		/* One cluster at a time; dm sends the rest again. */
		u32 left = pt->g->cluster_sectors - offset;

		if (bio_sectors(bio) > left)
			dm_accept_partial_bio(bio, left);
		/* Discard promises nothing: only whole clusters we own go. */
		if (bio_op(bio) == REQ_OP_DISCARD &&
		    (!entry || offset || bio_sectors(bio) < left)) {
			bio_endio(bio);
			return DM_MAPIO_SUBMITTED;
		}
		prl_cbt_mark(&pt->cbt, vsec, bio_sectors(bio));
		prl_defer(pt, bio);
		return DM_MAPIO_SUBMITTED;
	}
	if (unlikely(bio_op(bio) != REQ_OP_WRITE))
		return DM_MAPIO_KILL;
	/* The bitmap knows of a write before the write can land. */
	prl_cbt_mark(&pt->cbt, vsec, bio_sectors(bio));
	/* Allocation, the first write and commits are the worker's. */
	if (!entry || !smp_load_acquire(&pt->open) ||
	    (prl_is_flush(bio) && !clean)) {
		prl_defer(pt, bio);
		return DM_MAPIO_SUBMITTED;
	}
	prl_remap_image(pt, bio, prl_entry_sector(pt->g, entry),
			offset);
	return DM_MAPIO_REMAPPED;
}

static struct prl_alloc *prl_find_alloc(struct prl_target *pt,
					sector_t cluster)
{
	struct prl_alloc *a;

	hash_for_each_possible(pt->allocs, a, node, cluster)
		if (a->cluster == cluster)
			return a;
	return NULL;
}

/*
 * The new cluster holds its data (fill or whole write): point the BAT at it
 * and send the writes that waited back to the worker.  Bios to complete now
 * go to @finish, with their status set.  Any context.
 */
static void prl_alloc_done(struct prl_alloc *a, struct bio_list *finish)
{
	struct prl_target *pt = a->pt;
	unsigned long flags;
	struct bio *bio;

	spin_lock_irqsave(&pt->lock, flags);
	if (!a->failed) {
		prl_meta_set_entry(pt->meta, a->cluster, a->sector);
		bio_list_merge(&pt->deferred, &a->waiting);
	} else {
		/*
		 * The writes that waited fail with it, rather than each
		 * leaking a cluster of its own on a device that fails; the
		 * cluster goes back if it is the last one.
		 */
		prl_meta_unalloc(pt->meta, a->sector);
		while ((bio = bio_list_pop(&a->waiting))) {
			bio->bi_status = BLK_STS_IOERR;
			bio_list_add(finish, bio);
		}
	}
	hash_del(&a->node);
	if (a->bio) {
		if (a->failed)
			a->bio->bi_status = BLK_STS_IOERR;
		if (a->failed || a->zero_only)
			bio_list_add(finish, a->bio);
		else
			bio_list_add(&pt->deferred, a->bio);
	}
	spin_unlock_irqrestore(&pt->lock, flags);
	queue_work(pt->wq, &pt->worker);
	mempool_free(a, &pt->alloc_pool);
}

static void prl_fill_done(int read_err, unsigned long write_err, void *context)
{
	struct prl_alloc *a = context;
	struct bio_list finish = BIO_EMPTY_LIST;
	struct bio *bio;

	if (read_err || write_err)
		a->failed = true;
	if (!atomic_dec_and_test(&a->jobs))
		return;
	if (a->failed)
		DMERR_LIMIT("%s: cannot fill a new cluster at sector %llu",
			    dm_table_device_name(a->pt->ti->table),
			    (unsigned long long)a->sector);
	prl_alloc_done(a, &finish);
	while ((bio = bio_list_pop(&finish)))
		bio_endio(bio);
}

/* A write that covered its whole new cluster has landed. */
static void prl_overwrite_endio(struct bio *bio)
{
	struct prl_bio *pb = dm_per_bio_data(bio, sizeof(*pb));
	struct prl_alloc *a = pb->alloc;
	struct prl_target *pt = a->pt;
	struct bio_list finish = BIO_EMPTY_LIST;
	struct bio *w;
	unsigned long flags;

	bio->bi_end_io = pb->end_io;
	a->failed = bio->bi_status != BLK_STS_OK;
	a->bio = NULL;
	prl_alloc_done(a, &finish);
	while ((w = bio_list_pop(&finish)))
		bio_endio(w);
	if (!bio->bi_status && (bio->bi_opf & (REQ_PREFLUSH | REQ_FUA))) {
		/* Durable only once the BAT entry is: after a commit. */
		spin_lock_irqsave(&pt->lock, flags);
		bio_list_add(&pt->commit_wait, bio);
		spin_unlock_irqrestore(&pt->lock, flags);
		queue_work(pt->wq, &pt->worker);
		return;
	}
	bio_endio(bio);
}

/* Fill the rest of the new cluster: from the lower device, then zeros. */
static void prl_fill(struct prl_target *pt, struct prl_alloc *a)
{
	sector_t cs = pt->g->cluster_sectors;
	sector_t vstart = a->cluster * cs, copy = 0;
	struct dm_io_region from, to;

	if (pt->lower && vstart < pt->lower_sectors && !a->zero_only)
		copy = min(cs, pt->lower_sectors - vstart);
	atomic_set(&a->jobs, (copy > 0) + (copy < cs));

	if (copy < cs) {
		to.bdev = pt->image->bdev;
		to.sector = a->sector + copy;
		to.count = cs - copy;
		dm_kcopyd_zero(pt->kc, 1, &to, 0, prl_fill_done, a);
	}
	if (copy) {
		from.bdev = pt->lower->bdev;
		from.sector = vstart;
		from.count = copy;
		to.bdev = pt->image->bdev;
		to.sector = a->sector;
		to.count = copy;
		dm_kcopyd_copy(pt->kc, &from, 1, &to, 0, prl_fill_done, a);
	}
}

/* Worker: a write to a cluster the image lacks, with no allocation yet. */
static void prl_allocate(struct prl_target *pt, struct bio *bio,
			 sector_t cluster, u32 offset)
{
	struct prl_bio *pb = dm_per_bio_data(bio, sizeof(*pb));
	struct prl_alloc *a;
	sector_t sector;

	if (prl_meta_alloc(pt->meta, &sector)) {
		spin_lock_irq(&pt->lock);
		pt->nospc++;
		spin_unlock_irq(&pt->lock);
		DMERR_LIMIT("%s: %s, write refused",
			    dm_table_device_name(pt->ti->table),
			    prl_meta_beyond_bat(pt->meta) ?
			    "image at the end its BAT can address (v1: 2 TiB)" :
			    "image device full");
		bio->bi_status = BLK_STS_NOSPC;
		bio_endio(bio);
		return;
	}

	a = mempool_alloc(&pt->alloc_pool, GFP_NOIO);
	a->pt = pt;
	a->cluster = cluster;
	a->sector = sector;
	a->failed = false;
	a->zero_only = prl_is_zeroing(bio) && !offset &&
		       bio_sectors(bio) == pt->g->cluster_sectors;
	bio_list_init(&a->waiting);
	spin_lock_irq(&pt->lock);
	hash_add(pt->allocs, &a->node, cluster);
	spin_unlock_irq(&pt->lock);

	if (!offset && bio_sectors(bio) == pt->g->cluster_sectors &&
	    !prl_is_zeroing(bio)) {
		/* The write is the whole cluster: no fill, and no read. */
		a->bio = NULL;
		pb->alloc = a;
		pb->end_io = bio->bi_end_io;
		bio->bi_end_io = prl_overwrite_endio;
		prl_remap_image(pt, bio, sector, 0);
		dm_submit_bio_remap(bio, NULL);
		return;
	}
	a->bio = bio;
	prl_fill(pt, a);
}

static void prl_zero_done(int read_err, unsigned long write_err, void *context)
{
	struct bio *bio = context;

	if (read_err || write_err)
		bio->bi_status = BLK_STS_IOERR;
	bio_endio(bio);
}

/* The unmapped cluster's space went back, or not: the bio did its part. */
static void prl_giveback_endio(struct bio *bio)
{
	struct prl_bio *pb = dm_per_bio_data(bio, sizeof(*pb));

	bio->bi_end_io = pb->end_io;
	bio->bi_status = BLK_STS_OK;
	bio_endio(bio);
}

/*
 * Worker: a discard of a whole cluster the image owns (map() ends the
 * others), or a write-zeroes of part or all of one cluster.
 *
 * A discarded cluster is unmapped: it reads as the lower device again
 * (zeros without one), and its old place is discarded on the image device
 * by the bio itself, asynchronously.  Write-zeroes reads back zeros: a
 * whole cluster with nothing below is unmapped the same way unless the bio
 * says REQ_NOUNMAP, the rest is zeroed in place, allocating the cluster
 * first if the lower device would otherwise show through.
 */
static void prl_zero_range(struct prl_target *pt, struct bio *bio,
			   sector_t cluster, u32 offset, u32 entry)
{
	const struct prl_geom *g = pt->g;
	sector_t cs = g->cluster_sectors, sector;
	bool below = pt->lower && cluster * cs < pt->lower_sectors;
	bool discard = bio_op(bio) == REQ_OP_DISCARD;
	struct dm_io_region to;
	struct prl_bio *pb;

	if (!entry) {
		if (below && !discard)
			prl_allocate(pt, bio, cluster, offset);
		else
			bio_endio(bio);	/* what it reads now will do */
		return;
	}
	sector = prl_entry_sector(g, entry);
	if (discard || (!offset && bio_sectors(bio) == cs && !below &&
			!(bio->bi_opf & REQ_NOUNMAP))) {
		/* Clusters are never reused, so the old one is simply gone. */
		prl_meta_set_entry(pt->meta, cluster, 0);
		if ((discard && !bdev_max_discard_sectors(pt->image->bdev)) ||
		    (!discard && !bdev_write_zeroes_sectors(pt->image->bdev))) {
			bio_endio(bio);
			return;
		}
		/* Give the space back below: the bio, sent to the old place. */
		pb = dm_per_bio_data(bio, sizeof(*pb));
		pb->end_io = bio->bi_end_io;
		bio->bi_end_io = prl_giveback_endio;
		bio->bi_opf &= ~REQ_NOUNMAP;
		prl_remap_image(pt, bio, sector, 0);
		dm_submit_bio_remap(bio, NULL);
		return;
	}
	to.bdev = pt->image->bdev;
	to.sector = sector + offset;
	to.count = bio_sectors(bio);
	dm_kcopyd_zero(pt->kc, 1, &to, 0, prl_zero_done, bio);
}

/* Worker: one deferred write.  Returns true if it must wait for a commit. */
static bool prl_handle_write(struct prl_target *pt, struct bio *bio)
{
	sector_t vsec = dm_target_offset(pt->ti, bio->bi_iter.bi_sector);
	struct prl_alloc *a;
	sector_t cluster;
	u32 offset, entry;

	cluster = prl_cluster_of(pt, vsec, &offset);
	spin_lock_irq(&pt->lock);
	entry = prl_meta_entry(pt->meta, cluster);
	a = entry ? NULL : prl_find_alloc(pt, cluster);
	if (a)
		bio_list_add(&a->waiting, bio);
	spin_unlock_irq(&pt->lock);
	if (a)
		return false;

	if (prl_is_zeroing(bio)) {
		prl_zero_range(pt, bio, cluster, offset, entry);
		return false;
	}
	if (!entry) {
		prl_allocate(pt, bio, cluster, offset);
		return false;
	}
	prl_remap_image(pt, bio, prl_entry_sector(pt->g, entry),
			offset);
	if (prl_is_flush(bio) && !prl_meta_clean(pt->meta))
		return true;
	dm_submit_bio_remap(bio, NULL);
	return false;
}

/* A commit: 1 if it wrote and flushed, 0 if there was nothing, or -errno. */
static int prl_commit(struct prl_target *pt)
{
	int r;

	if (prl_failed(pt))
		return -EIO;	/* no retries: see prl_set_error() */
	r = prl_meta_commit(pt->meta);
	if (r < 0)
		prl_set_error(pt, "commit", r);
	return r;
}

/* The in-use flag is on disk before the first write goes down. */
static int prl_open_image(struct prl_target *pt)
{
	int r;

	prl_cbt_open(&pt->cbt, pt->meta);
	prl_meta_set_in_use(pt->meta, true);
	r = prl_commit(pt);
	if (r < 0)
		return r;
	/* pairs with smp_load_acquire() in prl_map() */
	smp_store_release(&pt->open, true);
	return 0;
}

static void prl_worker(struct work_struct *ws)
{
	struct prl_target *pt = container_of(ws, struct prl_target, worker);
	struct bio_list bios, done, after_commit = BIO_EMPTY_LIST;
	bool commit, flush, store, flushed = false;
	struct bio *bio;
	int r = 0;

	spin_lock_irq(&pt->lock);
	bios = pt->deferred;
	bio_list_init(&pt->deferred);
	done = pt->commit_wait;
	bio_list_init(&pt->commit_wait);
	commit = pt->commit_requested;
	pt->commit_requested = false;
	flush = pt->flush_requested;
	pt->flush_requested = false;
	store = pt->cbt_store_requested;
	pt->cbt_store_requested = false;
	spin_unlock_irq(&pt->lock);

	if (!bio_list_empty(&bios) && !pt->open && !prl_failed(pt))
		prl_open_image(pt);

	while ((bio = bio_list_pop(&bios))) {
		if (prl_failed(pt))
			bio_io_error(bio);
		else if (!bio_sectors(bio) || prl_handle_write(pt, bio))
			bio_list_add(&after_commit, bio);
	}

	/*
	 * The bitmap of an open image: kept, though trusted only once closed.
	 * A failure here costs nothing yet: postsuspend stores it again.
	 */
	if (store && pt->open && !prl_failed(pt)) {
		int sr = prl_cbt_store(&pt->cbt, pt->meta);

		if (sr)
			DMWARN_LIMIT("%s: dirty bitmap not stored on commit (%d)",
				     dm_table_device_name(pt->ti->table), sr);
	}

	if (commit || !bio_list_empty(&after_commit) || !bio_list_empty(&done)) {
		r = prl_commit(pt);
		flushed = r > 0;
		if (r > 0)
			r = 0;
	}
	/* "commit" promises every write so far durable, BAT changed or not. */
	if (!r && flush && !flushed) {
		r = blkdev_issue_flush(pt->image->bdev);
		flushed = !r;
	}
	if (flush) {
		spin_lock_irq(&pt->lock);
		pt->flush_result = r;
		spin_unlock_irq(&pt->lock);
	}

	while ((bio = bio_list_pop(&after_commit))) {
		if (r)
			bio_io_error(bio);
		else if (!bio_sectors(bio) && flushed)
			bio_endio(bio);	/* the commit flushed the image */
		else if (!bio_sectors(bio)) {
			/*
			 * Nothing was written, so nothing flushed after the
			 * writes this flush covers: it goes down itself (map()
			 * left it pointing at this device).
			 */
			bio_set_dev(bio, pt->image->bdev);
			dm_submit_bio_remap(bio, NULL);
		} else {
			dm_submit_bio_remap(bio, NULL);
		}
	}
	while ((bio = bio_list_pop(&done))) {
		if (r)
			bio->bi_status = BLK_STS_IOERR;
		bio_endio(bio);
	}
}

/* Commit every commit_interval_ms so unflushed changes do not pile up. */
static void prl_waker(struct work_struct *ws)
{
	struct prl_target *pt = container_of(to_delayed_work(ws),
					     struct prl_target, waker);

	if (prl_failed(pt))
		return;		/* nothing commits any more */
	if (!prl_meta_clean(pt->meta)) {
		spin_lock_irq(&pt->lock);
		pt->commit_requested = true;
		spin_unlock_irq(&pt->lock);
		queue_work(pt->wq, &pt->worker);
	}
	queue_delayed_work(pt->wq, &pt->waker,
			   msecs_to_jiffies(pt->commit_interval_ms));
}

/* dm has waited for every bio; persist the BAT and close the image. */
static void prl_postsuspend(struct dm_target *ti)
{
	struct prl_target *pt = ti->private;
	int r;

	if (!pt->writable)
		return;
	cancel_delayed_work_sync(&pt->waker);
	/* A commit message waits, so this is the only committer. */
	mutex_lock(&pt->suspend_lock);
	flush_workqueue(pt->wq);
	if (prl_failed(pt))
		goto out;
	/* A bitmap changed by messages alone is stored too, image opened. */
	if (!pt->open && !prl_cbt_dirty(&pt->cbt)) {
		WRITE_ONCE(pt->cbt_current, true);
		goto out;
	}
	if (!pt->open && prl_open_image(pt) < 0)
		goto out;
	if (prl_commit(pt) < 0)
		goto out;
	r = prl_cbt_store(&pt->cbt, pt->meta);
	if (r) {
		prl_set_error(pt, "cbt_store", r);
		goto out;
	}
	prl_meta_set_in_use(pt->meta, false);
	if (prl_commit(pt) < 0)
		goto out;
	/* The next write after a resume opens the image again. */
	WRITE_ONCE(pt->open, false);
	/* A table reloaded over this one may take the bitmap as it is. */
	WRITE_ONCE(pt->cbt_current, true);
out:
	mutex_unlock(&pt->suspend_lock);
}

/*
 * Before this table goes live.  One loaded over a live table of the same
 * device (dmsetup reload) read the image while that table still wrote it;
 * that one is suspended now, its changes committed and the image closed,
 * so read the header, BAT and bitmap again.  Also take what a grown image
 * device offers.
 */
static int prl_preresume(struct dm_target *ti)
{
	struct prl_target *pt = ti->private;
	const char *dev = dm_table_device_name(ti->table);
	bool want = pt->cbt_arg || pt->cbt_granularity;
	bool open = false;
	unsigned int noio;
	char *why = NULL;
	int r;

	if (!pt->refresh) {
		if (pt->writable)
			prl_meta_grow(pt->meta);
		return 0;
	}
	/* The device is suspended: reclaim must not write to it. */
	noio = memalloc_noio_save();
	r = prl_meta_refresh(pt->meta, &why);
	if (!r && pt->writable && pt->g->in_use == PRL_IN_USE_OPEN) {
		open = true;
		if (pt->ignore_in_use || pt->takeover ||
		    prl_predecessor_open(pt)) {
			/* Left open by the old table: ours now, as after a crash. */
			if (!pt->ignore_in_use)
				DMWARN("%s: taking over the image the old table left open",
				       dev);
		} else {
			why = "Image in use or not closed cleanly (see ignore_in_use)";
			r = -EBUSY;
		}
	}
	if (!r && pt->writable)
		r = prl_cbt_takeover(pt, &why);
	if (!r && pt->writable && want &&
	    prl_cbt_start(&pt->cbt, pt->meta,
			  pt->cbt_granularity ?: PRL_CBT_DEFAULT_GRANULARITY) == -ENOMEM)
		DMWARN("%s: no memory to start tracking changes: cbt start later",
		       dev);
	memalloc_noio_restore(noio);
	if (r) {
		/* I/O stays refused (map() sees refresh): resume again, or reload. */
		DMERR("%s: cannot resume: %s (%d)", dev, why, r);
		return r;
	}
	if (!pt->writable)
		pt->state = pt->g->in_use == PRL_IN_USE_OPEN ?
			    PRL_STATE_NEEDS_CHECK : PRL_STATE_RO;
	/* An image left open is open: the first write need not open it. */
	smp_store_release(&pt->open, open);
	pt->takeover = false;
	pt->refresh = false;
	return 0;
}

static void prl_resume(struct dm_target *ti)
{
	struct prl_target *pt = ti->private;

	if (pt->writable && !prl_failed(pt)) {
		WRITE_ONCE(pt->cbt_current, false);
		queue_delayed_work(pt->wq, &pt->waker,
				   msecs_to_jiffies(pt->commit_interval_ms));
	}
}

/* "cbt start <granularity>", "cbt stop", "cbt clear". */
static int prl_cbt_message(struct prl_target *pt, unsigned int argc,
			   char **argv)
{
	const char *dev = dm_table_device_name(pt->ti->table);
	unsigned int gran;
	char dummy;
	int r;

	if (!pt->writable) {
		DMWARN("%s: cbt: the table is read-only", dev);
		return -EINVAL;
	}
	if (argc == 2 && !strcasecmp(argv[0], "start")) {
		if (sscanf(argv[1], "%u%c", &gran, &dummy) != 1 || !gran ||
		    !is_power_of_2(gran) || gran > PRL_CBT_MAX_GRANULARITY) {
			DMWARN("%s: cbt start: bad granularity %s", dev, argv[1]);
			return -EINVAL;
		}
		r = prl_cbt_start(&pt->cbt, pt->meta, gran);
		if (r == -EEXIST)
			DMWARN("%s: cbt start: already tracking (cbt stop first)", dev);
		else if (r == -EOPNOTSUPP)
			DMWARN("%s: cbt start: clusters over 64 MiB are not supported", dev);
		return r;
	}
	if (argc == 1 && !strcasecmp(argv[0], "stop")) {
		r = prl_cbt_stop(&pt->cbt);
	} else if (argc == 1 && !strcasecmp(argv[0], "clear")) {
		r = prl_cbt_clear(&pt->cbt);
	} else {
		DMWARN("%s: unknown cbt message (known: start <granularity>, stop, clear)",
		       dev);
		return -EINVAL;
	}
	if (r == -ENOENT)
		DMWARN("%s: cbt %s: not tracking", dev, argv[0]);
	return r;
}

/*
 * "commit": make every change so far durable before the message returns.
 * The worker takes the request at its next run; flush_work() waits for it.
 */
static int prl_message(struct dm_target *ti, unsigned int argc, char **argv,
		       char *result, unsigned int maxlen)
{
	struct prl_target *pt = ti->private;
	int r;

	if (argc == 1 && !strcasecmp(argv[0], "commit")) {
		if (!pt->writable) {
			DMWARN("%s: commit: the table is read-only",
			       dm_table_device_name(ti->table));
			return -EINVAL;
		}
		mutex_lock(&pt->suspend_lock);
		spin_lock_irq(&pt->lock);
		pt->commit_requested = true;
		pt->flush_requested = true;
		pt->cbt_store_requested = true;
		spin_unlock_irq(&pt->lock);
		queue_work(pt->wq, &pt->worker);
		flush_work(&pt->worker);
		spin_lock_irq(&pt->lock);
		r = pt->flush_result;
		spin_unlock_irq(&pt->lock);
		mutex_unlock(&pt->suspend_lock);
		return r || prl_failed(pt) ? -EIO : 0;
	}
	if (argc >= 2 && !strcasecmp(argv[0], "cbt"))
		return prl_cbt_message(pt, argc - 1, argv + 1);
	DMWARN("%s: unknown message '%s' (known: commit, cbt)",
	       dm_table_device_name(ti->table), argc ? argv[0] : "");
	return -EINVAL;
}

static void prl_status(struct dm_target *ti, status_type_t type,
		       unsigned int status_flags, char *result,
		       unsigned int maxlen)
{
	struct prl_target *pt = ti->private;
	struct prl_meta *pm = pt->meta;
	unsigned int sz = 0, nr_opts;
	u64 dirty, total;

	switch (type) {
	case STATUSTYPE_INFO:
		/* DESIGN's fixed fields, then what this version adds. */
		DMEMIT("%u/%u %u %llu %s ", prl_meta_allocated(pm),
		       pt->g->bat_entries, pt->g->cluster_sectors,
		       (unsigned long long)prl_meta_image_end(pm),
		       prl_state_names[READ_ONCE(pt->state)]);
		if (pt->writable && prl_cbt_count(&pt->cbt, &dirty, &total))
			DMEMIT("%llu/%llu", dirty, total);
		else
			DMEMIT("-");
		DMEMIT(" %llu", READ_ONCE(pt->nospc));
		/* Why the state is error: what failed, and its errno. */
		if (smp_load_acquire(&pt->state) == PRL_STATE_ERROR)
			DMEMIT(" %s:%d", pt->error_op, pt->error_errno);
		else
			DMEMIT(" -");
		break;
	case STATUSTYPE_TABLE:
		DMEMIT("%s %s", pt->image->name,
		       pt->lower ? pt->lower->name : "-");
		nr_opts = pt->ignore_in_use + pt->no_discard +
			  (pt->commit_interval_ms != PRL_DEFAULT_COMMIT_MS) +
			  pt->cbt_arg + !!pt->cbt_granularity +
			  !!pt->logical_bs + !!pt->physical_bs;
		if (!nr_opts)
			break;
		DMEMIT(" %u", nr_opts);
		if (pt->ignore_in_use)
			DMEMIT(" ignore_in_use");
		if (pt->no_discard)
			DMEMIT(" no_discard");
		if (pt->commit_interval_ms != PRL_DEFAULT_COMMIT_MS)
			DMEMIT(" commit_interval_ms:%u", pt->commit_interval_ms);
		if (pt->cbt_arg)
			DMEMIT(" cbt");
		if (pt->cbt_granularity)
			DMEMIT(" cbt_granularity:%u", pt->cbt_granularity);
		if (pt->logical_bs)
			DMEMIT(" logical_block_size:%u", pt->logical_bs);
		if (pt->physical_bs)
			DMEMIT(" physical_block_size:%u", pt->physical_bs);
		break;
	case STATUSTYPE_IMA:
		*result = '\0';
		break;
	}
}

static int prl_iterate_devices(struct dm_target *ti,
			       iterate_devices_callout_fn fn, void *data)
{
	struct prl_target *pt = ti->private;

	/*
	 * The image is addressed by BAT, not by target offset: use its size.
	 * The lower device is only read (like dm-thin's external origin): it
	 * is left out, so that what it cannot do (write-zeroes, as a read-only
	 * table) is not taken from this one; io_hints takes its block size.
	 * The area is whole logical blocks: an image file need not end on one
	 * (the I/O sent to the image device is in its own sectors).
	 */
	return fn(ti, pt->image, 0,
		  round_down(bdev_nr_sectors(pt->image->bdev),
			     max(pt->logical_bs >> SECTOR_SHIFT, 1U)), data);
}

static void prl_io_hints(struct dm_target *ti, struct queue_limits *limits)
{
	struct prl_target *pt = ti->private;

	unsigned int cs = pt->g->cluster_sectors;

	if (pt->lower) {
		struct block_device *lb = pt->lower->bdev;

		limits->logical_block_size = max(limits->logical_block_size,
						 bdev_logical_block_size(lb));
		limits->physical_block_size = max(limits->physical_block_size,
						  bdev_physical_block_size(lb));
	}
	/* The disk's own sector sizes (a 4096-byte physical one is a hint). */
	limits->logical_block_size = max(limits->logical_block_size,
					 pt->logical_bs);
	limits->physical_block_size = max3(limits->physical_block_size,
					   pt->physical_bs,
					   limits->logical_block_size);
	limits->io_min = max(limits->io_min, limits->physical_block_size);
	/* Whole-cluster writes need no fill. */
	limits->io_opt = cs << SECTOR_SHIFT;
	if (pt->writable && !pt->no_discard) {
		/* Whole clusters are what a discard can give back. */
		limits->discard_granularity = cs << SECTOR_SHIFT;
		limits->max_hw_discard_sectors = min(cs * 64ULL,
						     (u64)UINT_MAX >> SECTOR_SHIFT);
		limits->max_discard_sectors = limits->max_hw_discard_sectors;
	}
}

static struct target_type prl_target_type = {
	.name = "parallels",
	.version = {0, 5, 0},
	.module = THIS_MODULE,
	.ctr = prl_ctr,
	.dtr = prl_dtr,
	.map = prl_map,
	.postsuspend = prl_postsuspend,
	.preresume = prl_preresume,
	.resume = prl_resume,
	.message = prl_message,
	.status = prl_status,
	.iterate_devices = prl_iterate_devices,
	.io_hints = prl_io_hints,
};

static int __init dm_parallels_init(void)
{
	return dm_register_target(&prl_target_type);
}

static void __exit dm_parallels_exit(void)
{
	dm_unregister_target(&prl_target_type);
}

module_init(dm_parallels_init);
module_exit(dm_parallels_exit);

MODULE_DESCRIPTION(DM_NAME " target for Parallels expandable disk images");
MODULE_LICENSE("GPL");
