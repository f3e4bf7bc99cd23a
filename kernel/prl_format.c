// SPDX-License-Identifier: GPL-2.0
/*
 * Parallels image header and BAT validation, shared by dm-parallels.ko and
 * the userspace tools.  Every value read from an image is checked here
 * before anything else uses it; see prl_format.h for the layout.
 */
#include "prl_format.h"

#ifdef __KERNEL__
#include <linux/errno.h>
#include <linux/kernel.h>
#include <linux/math64.h>
#include <linux/sort.h>
#include <linux/string.h>
#include <asm/byteorder.h>

#define prl_le32(x)	le32_to_cpu(x)
#define prl_le64(x)	le64_to_cpu(x)
#else
#include <endian.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define prl_le32(x)	le32toh(x)
#define prl_le64(x)	le64toh(x)

static inline __u64 div_u64_rem(__u64 a, __u32 b, __u32 *rem)
{
	*rem = a % b;
	return a / b;
}
#endif

static int prl_cmp_u64(const void *a, const void *b)
{
	__u64 x = *(const __u64 *)a, y = *(const __u64 *)b;

	return x < y ? -1 : x > y;
}

static void prl_sort_u64(__u64 *v, __u32 n)
{
#ifdef __KERNEL__
	sort(v, n, sizeof(*v), prl_cmp_u64, NULL);
#else
	qsort(v, n, sizeof(*v), prl_cmp_u64);
#endif
}

int prl_parse_header(const struct prl_header *hdr, __u64 dev_sectors,
		     struct prl_geom *g, const char **why)
{
	__u32 cs, raw_off, rem;
	__u64 meta_sectors;

	memset(g, 0, sizeof(*g));
	if (!memcmp(hdr->magic, PRL_MAGIC_V1, PRL_MAGIC_LEN)) {
		g->fmt = PRL_V1;
	} else if (!memcmp(hdr->magic, PRL_MAGIC_V2, PRL_MAGIC_LEN)) {
		g->fmt = PRL_V2;
	} else {
		*why = "Bad magic: not a Parallels expandable image";
		return -EINVAL;
	}
	if (prl_le32(hdr->version) != PRL_VERSION) {
		*why = "Unsupported header version (must be 2)";
		return -EINVAL;
	}

	cs = prl_le32(hdr->tracks);
	if (!cs) {
		*why = "Cluster size is zero";
		return -EINVAL;
	}
	if (cs > PRL_MAX_CLUSTER_SECTORS) {
		*why = "Cluster size too large (maximum 1 GiB)";
		return -EINVAL;
	}
	g->cluster_sectors = cs;
	g->off_mult = g->fmt == PRL_V1 ? 1 : cs;

	g->bat_entries = prl_le32(hdr->bat_entries);
	if (g->bat_entries > PRL_MAX_BAT_ENTRIES) {
		*why = "BAT too large (more than 2^28 entries)";
		return -EINVAL;
	}
	g->meta_bytes = sizeof(*hdr) + (__u64)g->bat_entries * sizeof(__le32);
	meta_sectors = (g->meta_bytes + PRL_SECTOR_SIZE - 1) >> PRL_SECTOR_SHIFT;
	if (meta_sectors > dev_sectors) {
		*why = "Image truncated: BAT extends past the end of the image";
		return -EINVAL;
	}

	g->nb_sectors = prl_le64(hdr->nb_sectors);
	if (g->fmt == PRL_V1 && g->nb_sectors >> 32) {
		*why = "WithoutFreeSpace header with a size above 32 bits";
		return -EINVAL;
	}
	if (!g->nb_sectors) {
		*why = "Virtual size is zero";
		return -EINVAL;
	}
	if (g->nb_sectors > (__u64)g->bat_entries * cs) {
		*why = "Virtual size exceeds what the BAT covers";
		return -EINVAL;
	}

	raw_off = prl_le32(hdr->data_off);
	if (g->fmt == PRL_V2) {
		if (!raw_off) {
			*why = "data_off is zero in a WithouFreSpacExt image";
			return -EINVAL;
		}
		div_u64_rem(raw_off, cs, &rem);
		if (rem) {
			*why = "data_off is not a multiple of the cluster size";
			return -EINVAL;
		}
	}
	g->data_off = raw_off ? raw_off : meta_sectors;
	if (g->data_off < meta_sectors) {
		*why = "data_off points inside the header or BAT";
		return -EINVAL;
	}
	if (g->data_off > dev_sectors) {
		*why = "data_off is beyond the end of the image";
		return -EINVAL;
	}

	/* Any value: those the spec does not list are creator stamps. */
	g->in_use = prl_le32(hdr->in_use);
	g->flags = prl_le32(hdr->flags);

	g->ext_off = prl_le64(hdr->ext_off);
	if (g->ext_off && prl_check_cluster(g, g->ext_off, dev_sectors, why)) {
		*why = "ext_off does not point at a valid cluster";
		return -EINVAL;
	}
	return 0;
}

int prl_in_use_stamp(__u32 in_use, char buf[PRL_STAMP_LEN])
{
	static const char hex[] = "0123456789abcdef";
	int i;

	for (i = 0; i < 4; i++) {
		__u8 ch = in_use >> (8 * i);

		if (ch < 0x20 || ch > 0x7e || ch == '\'' || ch == '\\')
			break;
		buf[i] = (char)ch;
	}
	if (i == 4) {
		buf[4] = 0;
		return 1;
	}
	buf[0] = '0';
	buf[1] = 'x';
	for (i = 0; i < 8; i++)
		buf[2 + i] = hex[(in_use >> (28 - 4 * i)) & 0xf];
	buf[10] = 0;
	return 0;
}

int prl_check_cluster(const struct prl_geom *g, __u64 sector,
		      __u64 dev_sectors, const char **why)
{
	__u32 rem;

	if (sector < g->data_off) {
		*why = "BAT entry points into the header or BAT";
		return -EINVAL;
	}
	div_u64_rem(sector - g->data_off, g->cluster_sectors, &rem);
	if (rem) {
		*why = "BAT entry is not on a cluster boundary";
		return -EINVAL;
	}
	if (sector > dev_sectors || dev_sectors - sector < g->cluster_sectors) {
		*why = "BAT entry points past the end of the image";
		return -EINVAL;
	}
	return 0;
}

__u32 prl_count_allocated(const struct prl_geom *g, const __le32 *bat)
{
	__u32 i, n = 0;

	for (i = 0; i < g->bat_entries; i++)
		n += bat[i] != 0;
	return n;
}

/* Sort key: data-area cluster index above, BAT index below. */
static __u64 prl_dup_key(const struct prl_geom *g, __u64 sector, __u32 entry)
{
	__u32 rem;

	return div_u64_rem(sector - g->data_off, g->cluster_sectors, &rem) << 32 |
	       entry;
}

/*
 * The sort keys of the clusters the BAT and the extension use, in @scratch;
 * their number.  *@top: the end of the last of them.
 */
static __u32 prl_data_keys(const struct prl_geom *g, const __le32 *bat,
			   __u64 *scratch, __u64 *top)
{
	__u64 sector;
	__u32 i, n = 0;

	*top = g->data_off;
	for (i = 0; i < g->bat_entries; i++) {
		__u32 e = prl_le32(bat[i]);

		if (!e)
			continue;
		sector = prl_entry_sector(g, e);
		if (scratch)
			scratch[n++] = prl_dup_key(g, sector, i);
		if (sector + g->cluster_sectors > *top)
			*top = sector + g->cluster_sectors;
	}
	if (g->ext_off) {
		if (scratch)
			scratch[n++] = prl_dup_key(g, g->ext_off, PRL_ENTRY_EXT);
		if (g->ext_off + g->cluster_sectors > *top)
			*top = g->ext_off + g->cluster_sectors;
	}
	return n;
}

int prl_check_bat(const struct prl_geom *g, const __le32 *bat,
		  __u64 dev_sectors, __u64 *scratch, __u64 *end,
		  struct prl_bat_err *err, const char **why)
{
	__u64 sector, top;
	__u32 i, n, rem;

	for (i = 0; i < g->bat_entries; i++) {
		__u32 e = prl_le32(bat[i]);

		if (!e)
			continue;
		sector = prl_entry_sector(g, e);
		if (prl_check_cluster(g, sector, dev_sectors, why)) {
			err->entry = i;
			err->value = sector;
			return -EINVAL;
		}
	}
	/* A cluster index above 32 bits cannot be told apart. */
	if (g->ext_off &&
	    div_u64_rem(g->ext_off - g->data_off, g->cluster_sectors, &rem) >> 32) {
		*why = "ext_off too far into the image";
		err->entry = PRL_ENTRY_EXT;
		err->value = g->ext_off;
		return -EINVAL;
	}

	n = prl_data_keys(g, bat, scratch, &top);
	if (scratch)
		prl_sort_u64(scratch, n);
	for (i = 1; i < n; i++) {
		if (scratch[i] >> 32 != scratch[i - 1] >> 32)
			continue;
		err->entry = (__u32)scratch[i - 1];
		err->other = (__u32)scratch[i];
		err->value = g->data_off +
			     (scratch[i] >> 32) * g->cluster_sectors;
		*why = err->other == PRL_ENTRY_EXT ?
		       "BAT entry points at the format extension cluster" :
		       "Two BAT entries point at the same cluster";
		return -EINVAL;
	}
	*end = top;
	return 0;
}

/* ---- the format extension -------------------------------------------- */

__u64 prl_bitmap_l1_size(__u64 nb_sectors, __u32 granularity,
			 __u64 cluster_bytes)
{
	__u64 bits = nb_sectors / granularity + !!(nb_sectors % granularity);
	__u64 bytes = (bits + 63) / 64 * 8;

	return bytes / cluster_bytes + !!(bytes % cluster_bytes);
}

/* A dirty bitmap feature of @size bytes at @d: 0 if image @g can use it. */
static int prl_parse_bitmap(const __u8 *d, __u32 size, __u32 pos,
			    const struct prl_geom *g, struct prl_ext_bitmap *bm)
{
	struct prl_ext_dirty_bitmap raw;
	__u64 cb = (__u64)g->cluster_sectors << 9, bits, words;

	if (size < sizeof(raw))
		return -EINVAL;
	memcpy(&raw, d, sizeof(raw));
	bm->size = prl_le64(raw.size);
	memcpy(bm->id, raw.id, sizeof(bm->id));
	bm->granularity = prl_le32(raw.granularity);
	bm->l1_size = prl_le32(raw.l1_size);
	bm->l1_pos = pos + sizeof(raw);
	if (bm->size != g->nb_sectors || !bm->granularity ||
	    (bm->granularity & (bm->granularity - 1)) ||
	    bm->granularity > (1U << 22))
		return -EINVAL;
	if ((__u64)bm->l1_size * 8 > size - sizeof(raw))
		return -EINVAL;
	/* ploop serializes in bytes, QEMU in 64-bit words: accept both. */
	bits = g->nb_sectors / bm->granularity +
	       !!(g->nb_sectors % bm->granularity);
	words = prl_bitmap_l1_size(g->nb_sectors, bm->granularity, cb);
	if (bm->l1_size != words &&
	    bm->l1_size != (bits + 7) / 8 / cb + !!((bits + 7) / 8 % cb))
		return -EINVAL;
	return 0;
}

int prl_parse_ext(const void *buf, __u32 len, const struct prl_geom *g,
		  struct prl_ext_info *info, const char **why)
{
	const __u8 *p = buf;
	struct prl_ext_feature fh;
	struct prl_ext_bitmap bm;
	__u32 pos = sizeof(struct prl_ext_header), size, padded;
	__u64 magic, flags;

	memset(info, 0, sizeof(*info));
	for (;;) {
		if (pos > len || len - pos < sizeof(fh)) {
			*why = "Format extension has no end of features";
			return -EINVAL;
		}
		memcpy(&fh, p + pos, sizeof(fh));
		magic = prl_le64(fh.magic);
		flags = prl_le64(fh.flags);
		size = prl_le32(fh.data_size);
		if (magic == PRL_EXT_END)
			return 0;
		padded = (size + 7) & ~7U;
		if (size > len || padded > len - pos - sizeof(fh)) {
			*why = "Format extension feature overruns its cluster";
			return -EINVAL;
		}
		if (magic == PRL_EXT_DIRTY_BITMAP) {
			if (!prl_parse_bitmap(p + pos + sizeof(fh), size,
					      pos + sizeof(fh), g, &bm) &&
			    !info->nr_bitmaps++)
				info->bitmap = bm;
			else
				info->nr_dropped++;
		} else if (flags & PRL_EXT_FLAG_NECESSARY) {
			info->necessary++;
		} else if (flags & PRL_EXT_FLAG_TRANSIT) {
			info->nr_transit++;
			info->transit_bytes += sizeof(fh) + padded;
		} else {
			info->nr_dropped++;
		}
		pos += sizeof(fh) + padded;
	}
}

void prl_ext_copy_transit(const void *buf, __u32 len, void *out)
{
	const __u8 *p = buf;
	__u8 *o = out;
	struct prl_ext_feature fh;
	__u32 pos = sizeof(struct prl_ext_header), n;

	/* prl_parse_ext() found the end marker inside @len. */
	while (len - pos >= sizeof(fh)) {
		memcpy(&fh, p + pos, sizeof(fh));
		if (prl_le64(fh.magic) == PRL_EXT_END)
			return;
		n = sizeof(fh) + ((prl_le32(fh.data_size) + 7) & ~7U);
		if (prl_le64(fh.magic) != PRL_EXT_DIRTY_BITMAP &&
		    !(prl_le64(fh.flags) & PRL_EXT_FLAG_NECESSARY) &&
		    (prl_le64(fh.flags) & PRL_EXT_FLAG_TRANSIT)) {
			memcpy(o, p + pos, n);
			o += n;
		}
		pos += n;
	}
}

int prl_check_l1(const struct prl_geom *g, const __le32 *bat,
		 const __le64 *l1, __u32 l1_size, __u64 dev_sectors,
		 __u64 *scratch, __u64 *end, const char **why)
{
	__u64 sector, top;
	__u32 i, n, rem;

	n = prl_data_keys(g, bat, scratch, &top);
	for (i = 0; i < l1_size; i++) {
		sector = prl_le64(l1[i]);
		if (sector <= 1)
			continue;
		if (prl_check_cluster(g, sector, dev_sectors, why) ||
		    div_u64_rem(sector - g->data_off, g->cluster_sectors,
				&rem) >> 32) {
			*why = "Dirty bitmap points outside the data area";
			return -EINVAL;
		}
		scratch[n++] = prl_dup_key(g, sector, 1);
		if (sector + g->cluster_sectors > top)
			top = sector + g->cluster_sectors;
	}
	prl_sort_u64(scratch, n);
	for (i = 1; i < n; i++) {
		if (scratch[i] >> 32 == scratch[i - 1] >> 32) {
			*why = "Dirty bitmap shares a cluster with other data";
			return -EINVAL;
		}
	}
	*end = top;
	return 0;
}
