/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Dirty bitmaps in an image's format extension, offline: read one as the
 * kernel target would (MD5, layout and clusters checked by prl_format.c),
 * clear one, and copy one into a new, empty delta (a snapshot's new top,
 * so tracking goes on there).  See Documentation/dm-parallels.rst,
 * "Changed block tracking".
 */
#ifndef PRL_BITMAP_H
#define PRL_BITMAP_H

#include <stdbool.h>
#include <stdint.h>

#include "util.h"

struct prl_dirty_bitmap {
	uint8_t id[16];
	char id_text[37];	/* as QEMU names it: no braces */
	uint32_t granularity;	/* sectors per bit */
	uint64_t nb_sectors;	/* the disk it covers */
	uint64_t nr_bits;
	uint8_t *bits;		/* bit n is bit n % 8 of byte n / 8; nr_bits
				 * rounded up to 64-bit words, bits past
				 * nr_bits clear */
	bool trusted;		/* the image was closed as v2.1 */
	uint32_t in_use;	/* the image's in_use field */
};

/*
 * Load the dirty bitmap of image @path: 1 and @bm filled, 0 if the image
 * has none (no extension, or one without a bitmap), -errno with a message
 * for a damaged one, one of more than PRL_MAX_BITMAP_BITS granules
 * (-EFBIG: the target does not use it either) or one there is no memory
 * for (-ENOMEM).  Memory: the extension cluster while loading, then the
 * disk's granules in bits.  prl_bitmap_free() after 1.
 */
int prl_bitmap_load(const char *path, struct prl_dirty_bitmap *bm,
		    struct prl_err *err);
void prl_bitmap_free(struct prl_dirty_bitmap *bm);

static inline bool prl_bitmap_test(const struct prl_dirty_bitmap *bm,
				   uint64_t n)
{
	return bm->bits[n / 8] >> (n % 8) & 1;
}

uint64_t prl_bitmap_weight(const struct prl_dirty_bitmap *bm);

/*
 * Clear every bit of the image's bitmap in place: in_use opened (synced),
 * bitmap clusters zeroed, extension rewritten with its MD5 (synced), then
 * in_use closed as v2.1.  Refused for an image that is open (in_use set).
 */
int prl_bitmap_clear(const char *path, struct prl_err *err);

/*
 * Write @bm into @path, a closed image with no data and no extension (a
 * new delta): bitmap clusters and the extension at its end, synced, then
 * the header (ext_off, in_use closed as v2.1), synced.  An untrusted @bm
 * is written with every bit set.  A file system without the free space
 * the bitmap clusters and the extension need is refused (-ENOSPC) before
 * a byte is written.
 */
int prl_bitmap_store_new(const char *path, const struct prl_dirty_bitmap *bm,
			 struct prl_err *err);

struct prl_desc_image;

/*
 * A snapshot's new top goes on tracking: the dirty bitmap of the old top
 * @from (closed) is written into @to, a new delta.  1 carried, 0 none to
 * carry (also: a Plain image has no format extension), -errno with a
 * message.
 */
int prl_bitmap_carry(const struct prl_desc_image *from, const char *to,
		     struct prl_err *err);

#endif /* PRL_BITMAP_H */
