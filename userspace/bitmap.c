// SPDX-License-Identifier: GPL-2.0
/*
 * Dirty bitmaps in a format extension, offline (bitmap.h).  The extension
 * is checked exactly as the kernel checks it (prl_parse_ext() and
 * prl_check_l1() of prl_format.c), with libcrypto's MD5.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/statvfs.h>

#include <endian.h>
#include <openssl/evp.h>
#include <uuid/uuid.h>

#include "bitmap.h"
#include "descriptor.h"
#include "image.h"

#define SECTOR			512
/* As the kernel: the extension cluster is read and hashed whole. */
#define EXT_MAX_CLUSTER		PRL_MAX_EXT_CLUSTER_BYTES

/* An image's extension, read and checked. */
struct ext {
	struct prl_image *img;
	uint64_t cb;		/* cluster bytes */
	uint8_t *buf;		/* the extension cluster */
	struct prl_ext_info info;
	__le64 *l1;		/* inside buf, info.bitmap.l1_size entries */
};

static int md5_of(const uint8_t *p, size_t len, uint8_t out[16])
{
	unsigned int n = 0;

	return EVP_Digest(p, len, out, &n, EVP_md5(), NULL) && n == 16 ? 0 : -1;
}

static void ext_free(struct ext *x)
{
	free(x->buf);
	prl_image_close(x->img, &(struct prl_err){ "" });
	memset(x, 0, sizeof(*x));
}

/* 1: @x holds a checked extension with a bitmap; 0: none; -errno. */
static int ext_read(const char *path, struct ext *x, struct prl_err *err)
{
	const struct prl_geom *g;
	uint8_t md5[16];
	const char *why;
	__u64 *scratch, end;
	int r;

	memset(x, 0, sizeof(*x));
	r = prl_image_open(path, PRL_OPEN_IGNORE_IN_USE, &x->img, err);
	if (r)
		return r;
	g = &x->img->geom;
	if (!g->ext_off)
		return 0;
	x->cb = (uint64_t)g->cluster_sectors * SECTOR;
	if (x->cb > EXT_MAX_CLUSTER)
		return prl_errf(err, EOPNOTSUPP,
				"%s: format extensions in clusters over 64 MiB are not supported",
				path);
	x->buf = malloc(x->cb);
	if (!x->buf)
		return prl_errf(err, ENOMEM,
				"%s: not enough memory to read its format extension (one cluster, %" PRIu64 " bytes)",
				path, x->cb);
	r = prl_pread_full(x->img->fd, x->buf, x->cb, g->ext_off * SECTOR);
	if (r)
		return prl_errf(err, r, "%s: cannot read the format extension: %s",
				path, strerror(-r));
	if (le64toh(((struct prl_ext_header *)x->buf)->magic) != PRL_EXT_MAGIC) {
		why = "bad magic";
	} else if (md5_of(x->buf + sizeof(struct prl_ext_header),
			  x->cb - sizeof(struct prl_ext_header), md5) ||
		   memcmp(md5, ((struct prl_ext_header *)x->buf)->md5, 16)) {
		why = "MD5 mismatch";
	} else if (!prl_parse_ext(x->buf, (uint32_t)x->cb, g, &x->info, &why)) {
		if (!x->info.nr_bitmaps)
			return 0;
		x->l1 = (__le64 *)(x->buf + x->info.bitmap.l1_pos);
		scratch = calloc((size_t)x->img->allocated + 1 +
				 x->info.bitmap.l1_size, sizeof(*scratch));
		if (!scratch)
			return prl_errf(err, ENOMEM,
					"%s: not enough memory to check its dirty bitmap against %" PRIu32 " clusters",
					path, x->img->allocated);
		r = prl_check_l1(g, x->img->bat, x->l1, x->info.bitmap.l1_size,
				 x->img->file_sectors, scratch, &end, &why);
		free(scratch);
		if (!r)
			return 1;
	}
	return prl_errf(err, EINVAL,
			"%s: the format extension is damaged (%s): its dirty bitmap cannot be used (the target drops it; so does prldisk check --repair)",
			path, why);
}

int prl_bitmap_load(const char *path, struct prl_dirty_bitmap *bm,
		    struct prl_err *err)
{
	const struct prl_ext_bitmap *b;
	uint64_t i, bytes, at, off, len;
	struct ext x;
	int r;

	memset(bm, 0, sizeof(*bm));
	r = ext_read(path, &x, err);
	if (r <= 0)
		goto out;
	b = &x.info.bitmap;
	memcpy(bm->id, b->id, sizeof(bm->id));
	uuid_unparse_lower(bm->id, bm->id_text);
	bm->granularity = b->granularity;
	bm->nb_sectors = x.img->geom.nb_sectors;
	bm->nr_bits = (bm->nb_sectors + b->granularity - 1) / b->granularity;
	bm->in_use = x.img->geom.in_use;
	bm->trusted = bm->in_use == PRL_IN_USE_CLOSED;
	/*
	 * The disk's granules, never more: a header can claim a 64 TiB
	 * disk in a file of a few MiB.  Over the kernel's limit the target
	 * drops the bitmap; so do we, before allocating anything.
	 */
	if (bm->nr_bits > PRL_MAX_BITMAP_BITS) {
		r = prl_errf(err, EFBIG,
			     "%s: the dirty bitmap's granularity (%" PRIu32 " sectors) for a disk of %" PRIu64 " sectors makes %" PRIu64 " bits, over the %llu (%llu MiB) that prldisk and the target keep in memory: the bitmap is not used; back up the whole disk, and track with a coarser granularity",
			     path, b->granularity, bm->nb_sectors, bm->nr_bits,
			     PRL_MAX_BITMAP_BITS, PRL_MAX_BITMAP_BITS / 8 >> 20);
		goto fail;
	}
	/* Whole 64-bit words, as QEMU serializes it. */
	bytes = (bm->nr_bits + 63) / 64 * 8;
	bm->bits = calloc(bytes, 1);
	if (!bm->bits) {
		r = prl_errf(err, ENOMEM,
			     "%s: not enough memory for its dirty bitmap (%" PRIu64 " bytes for %" PRIu64 " granules)",
			     path, bytes, bm->nr_bits);
		goto fail;
	}
	/* Only the part of each bitmap cluster that holds granules. */
	for (i = 0; i < b->l1_size && r > 0; i++) {
		at = le64toh(x.l1[i]);
		off = i * x.cb;
		if (off >= bytes)
			break;
		len = bytes - off < x.cb ? bytes - off : x.cb;
		if (at == 1)
			memset(bm->bits + off, 0xff, len);
		else if (at > 1 &&
			 prl_pread_full(x.img->fd, bm->bits + off, len, at * SECTOR))
			r = prl_errf(err, EIO, "%s: cannot read the dirty bitmap at sector %" PRIu64,
				     path, at);
	}
	/* Bits past the disk's end are not granules. */
	for (i = bm->nr_bits; i < bytes * 8; i++)
		bm->bits[i / 8] &= (uint8_t)~(1U << (i % 8));
fail:
	if (r < 0)
		prl_bitmap_free(bm);
out:
	ext_free(&x);
	return r;
}

void prl_bitmap_free(struct prl_dirty_bitmap *bm)
{
	free(bm->bits);
	memset(bm, 0, sizeof(*bm));
}

uint64_t prl_bitmap_weight(const struct prl_dirty_bitmap *bm)
{
	uint64_t i, n = 0;

	for (i = 0; i < (bm->nr_bits + 7) / 8; i++)
		n += (uint64_t)__builtin_popcount(bm->bits[i]);
	return n;
}

static int set_in_use(int fd, const char *path, uint32_t v, struct prl_err *err)
{
	__le32 le = htole32(v);
	int r = prl_pwrite_full(fd, &le, sizeof(le),
				offsetof(struct prl_header, in_use));

	if (!r && fsync(fd))
		r = -errno;
	return r ? prl_errf(err, r, "%s: cannot write the header: %s", path,
			    strerror(-r)) : 0;
}

/* The MD5 over the cluster after the extension header. */
static void ext_seal(uint8_t *buf, uint64_t cb)
{
	struct prl_ext_header *eh = (struct prl_ext_header *)buf;

	eh->magic = htole64(PRL_EXT_MAGIC);
	md5_of(buf + sizeof(*eh), cb - sizeof(*eh), eh->md5);
}

int prl_bitmap_clear(const char *path, struct prl_err *err)
{
	uint8_t *zero = NULL;
	uint64_t i, at;
	struct ext x;
	int fd = -1, r;

	r = ext_read(path, &x, err);
	if (!r)
		r = prl_errf(err, ENOENT, "%s has no dirty bitmap", path);
	if (r < 0)
		goto out;
	if (x.info.necessary) {
		r = prl_errf(err, EOPNOTSUPP,
			     "%s has a necessary format extension feature prldisk does not know: not changed",
			     path);
		goto out;
	}
	if (x.img->geom.in_use == PRL_IN_USE_OPEN) {
		r = prl_errf(err, EBUSY,
			     "%s is in use or was not closed cleanly: run prldisk check --repair first",
			     path);
		goto out;
	}
	/* O_EXCL: a block device the kernel holds (a dm table) is EBUSY. */
	fd = prl_open_image_file(path, O_RDWR | O_EXCL, NULL, err);
	if (fd < 0) {
		r = fd;
		goto out;
	}
	/* Open while it changes: a crash leaves a bitmap nobody trusts. */
	r = set_in_use(fd, path, PRL_IN_USE_OPEN, err);
	if (r)
		goto out;
	zero = prl_xcalloc(1, x.cb);
	for (i = 0; i < x.info.bitmap.l1_size && !r; i++) {
		at = le64toh(x.l1[i]);
		if (at == 1)
			x.l1[i] = 0;
		else if (at > 1)
			r = prl_pwrite_full(fd, zero, x.cb, at * SECTOR);
	}
	ext_seal(x.buf, x.cb);
	if (!r)
		r = prl_pwrite_full(fd, x.buf, x.cb, x.img->geom.ext_off * SECTOR);
	if (r) {
		r = prl_errf(err, r, "%s: cannot write the bitmap: %s", path, strerror(-r));
		goto out;
	}
	r = set_in_use(fd, path, PRL_IN_USE_CLOSED, err);
out:
	if (fd >= 0)
		close(fd);
	free(zero);
	ext_free(&x);
	return r;
}

/*
 * Cluster @i of @bm as stored (an untrusted bitmap with every bit set) in
 * @chunk, @cb bytes: 0 all clear, 1 all set (L1 values that own no
 * cluster), 2 mixed (written out).
 */
static int bitmap_chunk(const struct prl_dirty_bitmap *bm, uint64_t i,
			uint64_t cb, uint8_t *chunk)
{
	bool any = false, all = true;
	uint64_t j;

	for (j = 0; j < cb; j++) {
		uint64_t bit = (i * cb + j) * 8;
		uint8_t mask = bit >= bm->nr_bits ? 0 :
			       bm->nr_bits - bit < 8 ?
			       (uint8_t)((1U << (bm->nr_bits - bit)) - 1) : 0xff;
		uint8_t v = mask ? (bm->trusted ? bm->bits[i * cb + j] : 0xff) & mask : 0;

		if (mask)
			all &= v == mask;
		chunk[j] = v;
		any |= v != 0;
	}
	return !any ? 0 : all ? 1 : 2;
}

int prl_bitmap_store_new(const char *path, const struct prl_dirty_bitmap *bm,
			 struct prl_err *err)
{
	struct prl_ext_dirty_bitmap bh = { 0 };
	struct prl_ext_feature fh = { 0 };
	struct prl_image *img;
	struct prl_header h;
	uint8_t *ext = NULL, *chunk = NULL;
	uint64_t cb, l1n, i, pos, need;
	struct statvfs sv;
	__le64 *l1;
	int fd = -1, r, v;

	r = prl_image_open(path, 0, &img, err);
	if (r)
		return r;
	cb = (uint64_t)img->geom.cluster_sectors * SECTOR;
	l1n = prl_bitmap_l1_size(bm->nb_sectors, bm->granularity, cb);
	need = sizeof(struct prl_ext_header) + 2 * sizeof(fh) + sizeof(bh) + l1n * 8;
	if (img->allocated || img->geom.ext_off || img->geom.nb_sectors != bm->nb_sectors) {
		r = prl_errf(err, EINVAL, "%s: not a new delta of the same disk: no bitmap copied",
			     path);
		goto out;
	}
	if (cb > EXT_MAX_CLUSTER || need > cb) {
		r = prl_errf(err, EFBIG, "%s: the dirty bitmap does not fit one extension cluster",
			     path);
		goto out;
	}
	fd = prl_open_image_file(path, O_RDWR, NULL, err);
	if (fd < 0) {
		r = fd;
		goto out;
	}
	ext = prl_xcalloc(1, cb);
	chunk = prl_xmalloc(cb);
	l1 = (__le64 *)(ext + sizeof(struct prl_ext_header) + sizeof(fh) + sizeof(bh));
	/* Room for what is written, checked before writing a byte. */
	for (i = 0, need = cb; i < l1n; i++)
		need += bitmap_chunk(bm, i, cb, chunk) > 1 ? cb : 0;
	r = img->blkdev || !fstatvfs(fd, &sv) ? 0 : -errno;
	if (r) {
		r = prl_errf(err, r, "%s: cannot tell the free space of its file system: %s",
			     path, strerror(-r));
		goto out;
	}
	if (!img->blkdev && (uint64_t)sv.f_bavail * sv.f_frsize < need) {
		r = prl_errf(err, ENOSPC,
			     "%s: the dirty bitmap needs %" PRIu64 " bytes of free space, its file system has %" PRIu64 ": nothing written; make room and run it again",
			     path, need, (uint64_t)sv.f_bavail * sv.f_frsize);
		goto out;
	}
	pos = img->end;
	for (i = 0; i < l1n && !r; i++) {
		v = bitmap_chunk(bm, i, cb, chunk);
		if (v < 2) {
			l1[i] = htole64(v);
			continue;
		}
		r = prl_pwrite_full(fd, chunk, cb, pos * SECTOR);
		l1[i] = htole64(pos);
		pos += img->geom.cluster_sectors;
	}
	fh.magic = htole64(PRL_EXT_DIRTY_BITMAP);
	fh.data_size = htole32((uint32_t)(sizeof(bh) + l1n * 8));
	bh.size = htole64(bm->nb_sectors);
	memcpy(bh.id, bm->id, sizeof(bh.id));
	bh.granularity = htole32(bm->granularity);
	bh.l1_size = htole32((uint32_t)l1n);
	memcpy(ext + sizeof(struct prl_ext_header), &fh, sizeof(fh));
	memcpy(ext + sizeof(struct prl_ext_header) + sizeof(fh), &bh, sizeof(bh));
	ext_seal(ext, cb);
	if (!r)
		r = prl_pwrite_full(fd, ext, cb, pos * SECTOR);
	if (!r && fsync(fd))
		r = -errno;
	/* Then the header names it, closed as v2.1. */
	h = *img->hdr;
	h.ext_off = htole64(pos);
	h.in_use = htole32(PRL_IN_USE_CLOSED);
	if (!r)
		r = prl_pwrite_full(fd, &h, sizeof(h), 0);
	if (!r && fsync(fd))
		r = -errno;
	if (r)
		r = prl_errf(err, r, "%s: cannot write the dirty bitmap: %s", path,
			     strerror(-r));
out:
	if (fd >= 0)
		close(fd);
	free(chunk);
	free(ext);
	prl_image_close(img, &(struct prl_err){ "" });
	return r;
}

int prl_bitmap_carry(const struct prl_desc_image *from, const char *to,
		     struct prl_err *err)
{
	struct prl_dirty_bitmap bm;
	int r;

	if (from->type != PRL_IMAGE_COMPRESSED)
		return 0;
	r = prl_bitmap_load(from->path, &bm, err);
	if (r <= 0)
		return r;
	r = prl_bitmap_store_new(to, &bm, err);
	prl_bitmap_free(&bm);
	return r ? r : 1;
}
