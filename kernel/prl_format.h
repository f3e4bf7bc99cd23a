/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Parallels expandable image ("ploop") on-disk format.
 *
 * This header and prl_format.c are built into dm-parallels.ko and into the
 * userspace library, so the validation the kernel trusts is the one that is
 * unit-tested and fuzzed on the host.  Only uapi types are used here; the
 * userspace build supplies __packed and BIT() (userspace/prl_compat.h).
 *
 * Layout (all little endian):
 *
 *   sector 0      struct prl_header (64 bytes)
 *   byte 64       BAT: bat_entries x __le32
 *   data_off      data area: clusters of cluster_sectors sectors
 *
 * A BAT entry is 0 (cluster not allocated) or the file offset of the cluster,
 * in sectors for "WithoutFreeSpace" (v1) images and in clusters for
 * "WithouFreSpacExt" (v2) images.  ext_off, if non-zero, is the sector of the
 * one-cluster Format Extension and follows the rules of a BAT entry.
 */
#ifndef PRL_FORMAT_H
#define PRL_FORMAT_H

#include <linux/types.h>
#ifdef __KERNEL__
#include <linux/bits.h>
#endif

#define PRL_SECTOR_SHIFT	9
#define PRL_SECTOR_SIZE		BIT(PRL_SECTOR_SHIFT)

#define PRL_MAGIC_V1		"WithoutFreeSpace"	/* BAT in sectors */
#define PRL_MAGIC_V2		"WithouFreSpacExt"	/* BAT in clusters */
#define PRL_MAGIC_LEN		16
#define PRL_VERSION		2

/*
 * in_use: 0 means closed by software that predates the format extension.
 * Any other value the spec does not list is a creator's stamp (Parallels
 * Desktop writes "pd17", "pd22" in ASCII): closed, the format extension
 * not kept, so taken like 0.  QEMU 7.2 and Parallels Desktop both take
 * only PRL_IN_USE_OPEN for "not closed cleanly".
 */
#define PRL_IN_USE_CLOSED_OLD	0x00000000U
#define PRL_IN_USE_OPEN		0x746F6E59U
#define PRL_IN_USE_CLOSED	0x312e3276U

#define PRL_FLAG_EMPTY		0x00000001U

/* Format extension cluster and its features. */
#define PRL_EXT_MAGIC		0xAB234CEF23DCEA87ULL
#define PRL_EXT_END		0x0000000000000000ULL
#define PRL_EXT_DIRTY_BITMAP	0x20385FAE252CB34AULL
#define PRL_EXT_FLAG_NECESSARY	0x1ULL
#define PRL_EXT_FLAG_TRANSIT	0x2ULL

/*
 * Limits this implementation accepts.  A cluster larger than 1 GiB is not
 * written by QEMU or ploop and would make a single fill unreasonably large.
 */
#define PRL_MAX_CLUSTER_SECTORS	BIT(21)
/* 2^28 entries is a 1 GiB BAT: 256 TiB with 1 MiB clusters. */
#define PRL_MAX_BAT_ENTRIES	BIT(28)
/*
 * The format extension cluster is read and hashed whole, and a dirty
 * bitmap is kept whole in memory (2^31 bits: 256 MiB), by the target and
 * by prldisk alike; a larger one is not used.
 */
#define PRL_MAX_EXT_CLUSTER_BYTES	(64ULL << 20)
#define PRL_MAX_BITMAP_BITS		BIT_ULL(31)

struct prl_header {
	char	magic[PRL_MAGIC_LEN];
	__le32	version;
	__le32	heads;
	__le32	cylinders;
	__le32	tracks;		/* cluster size in sectors */
	__le32	bat_entries;
	__le64	nb_sectors;	/* v1: only the low 32 bits, high must be 0 */
	__le32	in_use;
	__le32	data_off;	/* sectors; v1 may leave it 0 */
	__le32	flags;
	__le64	ext_off;	/* sectors, 0 = no format extension */
} __packed;

#define PRL_HEADER_SIZE		64

struct prl_ext_header {
	__le64	magic;
	__u8	md5[16];	/* of the cluster after these 24 bytes */
} __packed;

struct prl_ext_feature {
	__le64	magic;
	__le64	flags;
	__le32	data_size;
	__le32	unused;
} __packed;

struct prl_ext_dirty_bitmap {
	__le64	size;		/* bits, in sectors of the disk */
	__u8	id[16];
	__le32	granularity;	/* sectors per bit */
	__le32	l1_size;
	/* followed by __le64 l1[l1_size] */
} __packed;

enum prl_format_version {
	PRL_V1 = 1,	/* "WithoutFreeSpace" */
	PRL_V2 = 2,	/* "WithouFreSpacExt" */
};

/* The header decoded and checked: every field here may be trusted. */
struct prl_geom {
	enum prl_format_version fmt;
	__u32	cluster_sectors;
	__u32	bat_entries;
	__u32	off_mult;	/* sectors per unit of a BAT entry */
	__u32	in_use;
	__u32	flags;
	__u64	nb_sectors;	/* virtual size */
	__u64	data_off;	/* sectors, first data cluster */
	__u64	ext_off;	/* sectors, 0 if none */
	__u64	meta_bytes;	/* header + BAT */
};

/* Where a BAT check failed, for a message that names the entries. */
struct prl_bat_err {
	__u32	entry;		/* BAT index, or PRL_ENTRY_EXT for ext_off */
	__u32	other;		/* the other entry for duplicates */
	__u64	value;		/* offending file offset in sectors */
};

#define PRL_ENTRY_EXT		0xffffffffU

/*
 * prl_parse_header - decode and validate a header against the image size.
 * @hdr: the first PRL_HEADER_SIZE bytes of the image.
 * @dev_sectors: size of the image file or device in sectors.
 * @g: filled in on success.
 * @why: on failure, a static string naming the problem.
 *
 * Returns 0 or -EINVAL.  Does not look at the BAT.
 */
int prl_parse_header(const struct prl_header *hdr, __u64 dev_sectors,
		     struct prl_geom *g, const char **why);

/* Whether @in_use is a foreign creator stamp rather than a spec value. */
static inline int prl_in_use_foreign(__u32 in_use)
{
	return in_use != PRL_IN_USE_CLOSED_OLD && in_use != PRL_IN_USE_OPEN &&
	       in_use != PRL_IN_USE_CLOSED;
}

#define PRL_STAMP_LEN		11	/* "0x12345678" and its NUL */

/*
 * prl_in_use_stamp - an in_use value as a user reads it: its four bytes in
 * file order when they are printable ASCII ("pd17"), else "0x%08x".
 * Returns 1 for the text form (callers quote it), 0 for the number.
 */
int prl_in_use_stamp(__u32 in_use, char buf[PRL_STAMP_LEN]);

/*
 * prl_entry_sector - file sector of a raw BAT entry, without checks.
 * Only for entries that prl_check_bat() accepted.
 */
static inline __u64 prl_entry_sector(const struct prl_geom *g, __u32 entry)
{
	return (__u64)entry * g->off_mult;
}

/*
 * prl_check_cluster - check one file offset (in sectors) that a BAT entry or
 * ext_off points at: in the data area, aligned to the cluster grid that
 * starts at data_off, and the whole cluster inside the image.
 */
int prl_check_cluster(const struct prl_geom *g, __u64 sector,
		      __u64 dev_sectors, const char **why);

/* Number of non-zero BAT entries. */
__u32 prl_count_allocated(const struct prl_geom *g, const __le32 *bat);

/*
 * prl_check_bat - validate every entry of a BAT, and ext_off.
 * @bat: g->bat_entries entries as stored on disk.
 * @scratch: room for prl_count_allocated() + 1 entries, to find duplicates;
 *       NULL checks each entry alone (no duplicates: O(n), no memory), for
 *       a BAT only this code changed since it was checked whole.
 * @end: receives the first sector after the last used cluster (at least
 *       data_off): where the next cluster would be allocated.
 * @err: on failure, which entry.
 *
 * Returns 0 or -EINVAL with @why set.  Runs in O(n log n).
 */
int prl_check_bat(const struct prl_geom *g, const __le32 *bat,
		  __u64 dev_sectors, __u64 *scratch, __u64 *end,
		  struct prl_bat_err *err, const char **why);

/* ---- the format extension -------------------------------------------- */

/* A dirty bitmap feature, as found in a format extension cluster. */
struct prl_ext_bitmap {
	__u64	size;		/* sectors: the image's nb_sectors */
	__u8	id[16];
	__u32	granularity;	/* sectors per bit, a power of two */
	__u32	l1_size;
	__u32	l1_pos;		/* byte offset of its __le64 L1 table */
};

/* What prl_parse_ext() found; only the first valid bitmap is described. */
struct prl_ext_info {
	__u32	nr_bitmaps;
	struct prl_ext_bitmap bitmap;
	__u32	nr_transit;	/* unknown TRANSIT features, kept as they are */
	__u32	transit_bytes;	/* their headers and padded data, in all */
	__u32	nr_dropped;	/* unknown plain features, bad or extra bitmaps */
	__u32	necessary;	/* unknown NECESSARY features: change nothing */
};

/*
 * prl_bitmap_l1_size - L1 entries of a dirty bitmap of @nb_sectors at
 * @granularity sectors per bit, serialized (as QEMU does) in 64-bit words
 * into clusters of @cluster_bytes.  Bit n is bit n % 8 of byte n / 8.
 */
__u64 prl_bitmap_l1_size(__u64 nb_sectors, __u32 granularity,
			 __u64 cluster_bytes);

/*
 * prl_parse_ext - walk the features of a format extension cluster whose
 * magic and MD5 the caller checked.  @buf: its first @len bytes (the
 * feature list must end inside them).  A dirty bitmap that does not fit
 * image @g is counted in nr_dropped; its L1 entries are not checked here
 * (prl_check_l1()).  Returns 0, or -EINVAL with @why for a feature list
 * that has no end marker or overruns the cluster.
 */
int prl_parse_ext(const void *buf, __u32 len, const struct prl_geom *g,
		  struct prl_ext_info *info, const char **why);

/*
 * prl_ext_copy_transit - copy the unknown TRANSIT features (headers and
 * padded data, in order) of an extension that prl_parse_ext() accepted to
 * @out, which holds its info->transit_bytes.
 */
void prl_ext_copy_transit(const void *buf, __u32 len, void *out);

/*
 * prl_check_l1 - check the clusters a dirty bitmap's L1 table points at
 * (entries 0 and 1 stand for all-clear and all-set and own none): each a
 * valid cluster, shared with no BAT entry, ext_off or other L1 entry.
 * @bat was accepted by prl_check_bat().  @scratch: room for
 * prl_count_allocated() + 1 + @l1_size entries.  @end: as prl_check_bat()
 * but counting these clusters too.  Returns 0 or -EINVAL with @why.
 */
int prl_check_l1(const struct prl_geom *g, const __le32 *bat,
		 const __le64 *l1, __u32 l1_size, __u64 dev_sectors,
		 __u64 *scratch, __u64 *end, const char **why);

#endif /* PRL_FORMAT_H */
