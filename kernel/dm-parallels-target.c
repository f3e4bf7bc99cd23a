// SPDX-License-Identifier: GPL-2.0
/*
 * dm-parallels: serve Parallels expandable images ("ploop") as block devices.
 *
 * The whole BAT is read and validated at construction and kept in memory in
 * its on-disk form.  map() remaps a bio to the image for allocated clusters
 * and to the lower device (the parent snapshot, or zeros) for the others, so
 * a stack of images becomes a chain of tables.  This version serves read-only
 * tables.  See Documentation/dm-parallels.rst.
 */
#include <linux/bio.h>
#include <linux/blkdev.h>
#include <linux/device-mapper.h>
#include <linux/dm-io.h>
#include <linux/ioprio.h>
#include <linux/log2.h>
#include <linux/math64.h>
#include <linux/module.h>
#include <linux/slab.h>
#include <linux/vmalloc.h>

#include "prl_format.h"

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

struct prl_target {
	struct dm_target *ti;
	struct dm_dev *image;
	struct dm_dev *lower;		/* NULL: unallocated clusters are zeros */
	sector_t lower_sectors;

	struct prl_geom geom;
	unsigned int cluster_shift;	/* log2(cluster), if a power of two */
	bool cluster_pow2;

	void *meta;			/* header and BAT, as on disk */
	__le32 *bat;			/* points into meta */
	u32 allocated;
	sector_t image_end;		/* first sector after the last cluster */
	enum prl_state state;

	struct dm_io_client *io;

	/* Optional arguments, kept to print the table back. */
	bool ignore_in_use;
	bool no_discard;
	unsigned int commit_interval_ms;
};

static int prl_io(struct prl_target *pt, blk_opf_t opf, void *buf,
		  sector_t sector, sector_t count)
{
	struct dm_io_region where = {
		.bdev = pt->image->bdev,
		.sector = sector,
		.count = count,
	};
	struct dm_io_request req = {
		.bi_opf = opf,
		.mem.type = DM_IO_VMA,
		.mem.ptr.vma = buf,
		.client = pt->io,
	};
	unsigned long error_bits;

#ifdef PRL_DM_IO_IOPRIO
	return dm_io(&req, 1, &where, &error_bits, IOPRIO_DEFAULT);
#else
	return dm_io(&req, 1, &where, &error_bits);
#endif
}

/*
 * Read and check the header and the BAT.  On failure ti->error says what is
 * wrong; the kernel log also names the BAT entry where there is one.
 */
static int prl_load_metadata(struct prl_target *pt)
{
	struct dm_target *ti = pt->ti;
	struct prl_geom *g = &pt->geom;
	unsigned int lbs = bdev_logical_block_size(pt->image->bdev);
	sector_t dev_sectors = bdev_nr_sectors(pt->image->bdev);
	sector_t lbs_sectors = lbs >> SECTOR_SHIFT;
	struct prl_bat_err err = {};
	sector_t meta_sectors;
	const char *why;
	u64 *scratch;
	u64 end;
	int r;

	if (dev_sectors < lbs_sectors) {
		ti->error = "Image device too small to hold a header";
		return -EINVAL;
	}

	/* The first logical block holds the header; read it alone first. */
	pt->meta = vmalloc(lbs);
	if (!pt->meta) {
		ti->error = "Cannot allocate memory for the header";
		return -ENOMEM;
	}
	r = prl_io(pt, REQ_OP_READ, pt->meta, 0, lbs_sectors);
	if (r) {
		ti->error = "Cannot read the image header";
		return r;
	}
	r = prl_parse_header(pt->meta, dev_sectors, g, &why);
	if (r) {
		ti->error = (char *)why;
		return r;
	}

	if (ti->len > g->nb_sectors) {
		ti->error = "Target length exceeds the image's virtual size";
		return -EINVAL;
	}
	if (!IS_ALIGNED(g->data_off, lbs_sectors) ||
	    !IS_ALIGNED(g->cluster_sectors, lbs_sectors)) {
		ti->error = "Clusters are not aligned to the image device's logical block size";
		return -EINVAL;
	}

	/* Header and BAT, rounded up to whole blocks (still before data_off). */
	meta_sectors = round_up(DIV_ROUND_UP_ULL(g->meta_bytes, SECTOR_SIZE),
				lbs_sectors);
	vfree(pt->meta);
	pt->meta = vmalloc(meta_sectors << SECTOR_SHIFT);
	if (!pt->meta) {
		ti->error = "Cannot allocate memory for the BAT";
		return -ENOMEM;
	}
	pt->bat = pt->meta + PRL_HEADER_SIZE;
	r = prl_io(pt, REQ_OP_READ, pt->meta, 0, meta_sectors);
	if (r) {
		ti->error = "Cannot read the BAT";
		return r;
	}

	pt->allocated = prl_count_allocated(g, pt->bat);
	scratch = kvmalloc_array((size_t)pt->allocated + 1, sizeof(*scratch),
				 GFP_KERNEL);
	if (!scratch) {
		ti->error = "Cannot allocate memory to check the BAT";
		return -ENOMEM;
	}
	r = prl_check_bat(g, pt->bat, dev_sectors, scratch, &end, &err, &why);
	kvfree(scratch);
	if (r) {
		if (err.entry == PRL_ENTRY_EXT)
			DMERR("%s: format extension at sector %llu",
			      why, err.value);
		else if (err.other == PRL_ENTRY_EXT || !err.other)
			DMERR("%s: BAT entry %u (sector %llu)",
			      why, err.entry, err.value);
		else
			DMERR("%s: BAT entries %u and %u (sector %llu)",
			      why, err.entry, err.other, err.value);
		ti->error = (char *)why;
		return r;
	}
	pt->image_end = end;

	pt->cluster_pow2 = is_power_of_2(g->cluster_sectors);
	if (pt->cluster_pow2)
		pt->cluster_shift = ilog2(g->cluster_sectors);
	return 0;
}

static int prl_parse_args(struct prl_target *pt, struct dm_arg_set *as)
{
	static const struct dm_arg _args[] = {
		{0, 8, "Invalid number of optional arguments"},
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
		if (!strcasecmp(arg, "cbt") ||
		    !strncasecmp(arg, "cbt_granularity:", 16))
			ti->error = "Changed block tracking (cbt) is not supported yet";
		else
			ti->error = "Unknown optional argument";
		return -EINVAL;
	}
	if (as->argc) {
		ti->error = "Unexpected arguments after the optional arguments";
		return -EINVAL;
	}
	return 0;
}

static void prl_destroy(struct prl_target *pt)
{
	if (pt->io)
		dm_io_client_destroy(pt->io);
	vfree(pt->meta);
	if (pt->lower)
		dm_put_device(pt->ti, pt->lower);
	if (pt->image)
		dm_put_device(pt->ti, pt->image);
	kfree(pt);
}

/*
 * <image_dev> <lower_dev|-> [<#opt_args> <opt_arg>...]
 */
static int prl_ctr(struct dm_target *ti, unsigned int argc, char **argv)
{
	struct dm_arg_set as = { .argc = argc, .argv = argv };
	struct prl_target *pt;
	const char *image_path, *lower_path;
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
	image_path = dm_shift_arg(&as);
	lower_path = dm_shift_arg(&as);

	r = prl_parse_args(pt, &as);
	if (r)
		goto bad;

	if (dm_table_get_mode(ti->table) & PRL_MODE_WRITE) {
		ti->error = "Writable tables are not supported yet: load the table read-only";
		r = -EROFS;
		goto bad;
	}

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

	r = prl_load_metadata(pt);
	if (r)
		goto bad;
	pt->state = pt->geom.in_use == PRL_IN_USE_OPEN ?
		    PRL_STATE_NEEDS_CHECK : PRL_STATE_RO;

	r = dm_set_target_max_io_len(ti, pt->geom.cluster_sectors);
	if (r)
		goto bad;
	ti->num_flush_bios = 1;
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

static sector_t prl_cluster_of(struct prl_target *pt, sector_t vsec,
			       u32 *offset)
{
	if (pt->cluster_pow2) {
		*offset = vsec & (pt->geom.cluster_sectors - 1);
		return vsec >> pt->cluster_shift;
	}
	return div_u64_rem(vsec, pt->geom.cluster_sectors, offset);
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

static int prl_map(struct dm_target *ti, struct bio *bio)
{
	struct prl_target *pt = ti->private;
	sector_t vsec, cluster;
	u32 offset, entry;

	if (unlikely(!bio_sectors(bio))) {
		/* An empty flush: nothing of ours is dirty, pass it down. */
		bio_set_dev(bio, pt->image->bdev);
		return DM_MAPIO_REMAPPED;
	}
	if (unlikely(bio_op(bio) != REQ_OP_READ))
		return DM_MAPIO_KILL;

	vsec = dm_target_offset(ti, bio->bi_iter.bi_sector);
	cluster = prl_cluster_of(pt, vsec, &offset);
	entry = le32_to_cpu(READ_ONCE(pt->bat[cluster]));
	if (!entry)
		return prl_map_lower(pt, bio, vsec);

	bio_set_dev(bio, pt->image->bdev);
	bio->bi_iter.bi_sector = prl_entry_sector(&pt->geom, entry) + offset;
	return DM_MAPIO_REMAPPED;
}

static void prl_status(struct dm_target *ti, status_type_t type,
		       unsigned int status_flags, char *result,
		       unsigned int maxlen)
{
	struct prl_target *pt = ti->private;
	unsigned int sz = 0, nr_opts;

	switch (type) {
	case STATUSTYPE_INFO:
		DMEMIT("%u/%u %u %llu %s -", pt->allocated,
		       pt->geom.bat_entries, pt->geom.cluster_sectors,
		       (unsigned long long)pt->image_end,
		       prl_state_names[pt->state]);
		break;
	case STATUSTYPE_TABLE:
		DMEMIT("%s %s", pt->image->name,
		       pt->lower ? pt->lower->name : "-");
		nr_opts = pt->ignore_in_use + pt->no_discard +
			  (pt->commit_interval_ms != PRL_DEFAULT_COMMIT_MS);
		if (!nr_opts)
			break;
		DMEMIT(" %u", nr_opts);
		if (pt->ignore_in_use)
			DMEMIT(" ignore_in_use");
		if (pt->no_discard)
			DMEMIT(" no_discard");
		if (pt->commit_interval_ms != PRL_DEFAULT_COMMIT_MS)
			DMEMIT(" commit_interval_ms:%u", pt->commit_interval_ms);
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
	int r;

	/* The image is addressed by BAT, not by target offset: use its size. */
	r = fn(ti, pt->image, 0, bdev_nr_sectors(pt->image->bdev), data);
	if (!r && pt->lower)
		r = fn(ti, pt->lower, 0, pt->lower_sectors, data);
	return r;
}

static void prl_io_hints(struct dm_target *ti, struct queue_limits *limits)
{
	struct prl_target *pt = ti->private;
	unsigned int cluster_bytes = pt->geom.cluster_sectors << SECTOR_SHIFT;

	/* Whole-cluster I/O never straddles two image extents. */
	limits->io_opt = cluster_bytes;
}

static struct target_type prl_target_type = {
	.name = "parallels",
	.version = {0, 1, 0},
	.module = THIS_MODULE,
	.ctr = prl_ctr,
	.dtr = prl_dtr,
	.map = prl_map,
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
