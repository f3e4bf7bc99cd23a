// SPDX-License-Identifier: GPL-2.0
/*
 * Offline operations on images: grow, merge, fill, convert (image.h).
 *
 * Every operation is ordered so that a crash at any point leaves an image
 * that opens and reads as before or as after: data is copied and fsync'ed
 * before a BAT entry points at it, a cluster is given up only after no
 * entry points at it any more, and header changes that reinterpret the
 * image are single-sector writes or an atomic rename.
 */
#define _GNU_SOURCE
#include "image.h"
#include "folder.h"

#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#define SECTOR		PRL_SECTOR_SIZE
#define PROGRESS_EVERY	64	/* clusters between progress calls */

static uint64_t div_up(uint64_t a, uint64_t b)
{
	return a / b + (a % b != 0);
}

static size_t cluster_bytes(const struct prl_image *img)
{
	return (size_t)img->geom.cluster_sectors << PRL_SECTOR_SHIFT;
}

static int need_rw(const struct prl_image *img, struct prl_err *err)
{
	if (!img->writable)
		return prl_errf(err, EBADF, "%s: image is opened read-only",
				img->path);
	if (img->geom.ext_off)
		return prl_errf(err, EOPNOTSUPP,
				"%s: image has a format extension, which prldisk cannot keep",
				img->path);
	return 0;
}

static void report(prl_progress_fn progress, void *ctx, uint64_t done,
		   uint64_t total)
{
	if (progress && (done % PROGRESS_EVERY == 0 || done == total))
		progress(ctx, done, total);
}

/*
 * A long copy commits its progress: the BAT is synced every COMMIT_BYTES
 * copied (or every 1/16 of the work on a small one), so a copy killed
 * midway keeps all but the last stretch, and a rerun, which copies only
 * what is still missing, goes on from there instead of from zero.
 */
#define COMMIT_BYTES	(2ULL << 30)

static uint64_t commit_every(const struct prl_image *img, uint64_t total)
{
	uint64_t n = COMMIT_BYTES / cluster_bytes(img), f = total / 16;

	if (f < 64)
		f = 64;
	return n && n < f ? n : f;
}

static int fsync_fd(int fd, const char *path, struct prl_err *err)
{
	if (fsync(fd))
		return prl_errf(err, errno, "%s: fsync failed: %s", path,
				strerror(errno));
	return 0;
}

/* ---- grow -------------------------------------------------------------- */

static uint32_t cylinders_of(uint64_t size)
{
	return size / (16 * 32) > UINT32_MAX ? UINT32_MAX :
	       (uint32_t)(size / (16 * 32));
}

/*
 * The sectors of the last cluster past the old size were never part of the
 * disk and may hold anything (a writer's whole-cluster buffer, another
 * tool's leftovers): once visible they must read as zeros.  Written before
 * the header that makes them visible; prl_image_sync() fsyncs them first.
 */
static int zero_tail(struct prl_image *img, struct prl_err *err)
{
	uint32_t cs = img->geom.cluster_sectors;
	uint64_t used = img->geom.nb_sectors % cs;
	uint64_t s = prl_image_lookup(img, img->geom.nb_sectors / cs);
	void *zero;
	int r;

	if (!used || !s)
		return 0;
	zero = prl_xcalloc(cs - used, SECTOR);
	r = prl_pwrite_full(img->fd, zero, (cs - used) * SECTOR,
			    (s + used) * SECTOR);
	free(zero);
	if (r)
		return prl_errf(err, r, "%s: cannot clear the end of the last cluster: %s",
				img->path, strerror(-r));
	return 0;
}

/* The BAT is big enough already: only the header's size changes. */
static int grow_in_place(struct prl_image *img, uint64_t new_size,
			 struct prl_err *err)
{
	int r = zero_tail(img, err);

	if (r)
		return r;
	img->hdr->nb_sectors = htole64(new_size);
	img->hdr->cylinders = htole32(cylinders_of(new_size));
	img->geom.nb_sectors = new_size;
	/* Sector 0 holds the header: set_entry's dirty bit for entry 0. */
	img->dirty[0] |= 1;
	img->meta_dirty = true;
	return prl_image_sync(img, err);
}

struct move {
	uint32_t entry;
	uint64_t to;
};

/*
 * Move every data cluster below sector @limit to the image end: copy, fsync,
 * then repoint the BAT entries and sync.  Until the BAT sync the old copies
 * are used, after it they are leaked; both read the same.
 */
static int move_below(struct prl_image *img, uint64_t limit,
		      struct prl_err *err)
{
	uint64_t max = div_up(limit - img->geom.data_off,
			      img->geom.cluster_sectors);
	struct move *mv = prl_xcalloc(max + 1, sizeof(*mv));
	void *buf = prl_xmalloc(cluster_bytes(img));
	uint64_t n = 0, i, s;
	int r = 0;

	if (img->end < limit)
		img->end = limit;
	for (i = 0; i < img->geom.bat_entries && !r; i++) {
		s = prl_image_lookup(img, i);
		if (!s || s >= limit)
			continue;
		if (n > max) {	/* cannot happen with a checked BAT */
			r = prl_errf(err, EIO, "%s: BAT changed under grow",
				     img->path);
			break;
		}
		r = prl_image_alloc(img, &mv[n].to, err);
		if (r)
			break;
		r = prl_pread_full(img->fd, buf, cluster_bytes(img), s * SECTOR);
		if (!r)
			r = prl_pwrite_full(img->fd, buf, cluster_bytes(img),
					    mv[n].to * SECTOR);
		if (r) {
			r = prl_errf(err, r, "%s: cannot move cluster %llu: %s",
				     img->path, (unsigned long long)i,
				     strerror(-r));
			break;
		}
		mv[n++].entry = (uint32_t)i;
	}
	free(buf);
	/* Only what was written makes the file longer. */
	if (n && mv[n - 1].to + img->geom.cluster_sectors > img->file_sectors)
		img->file_sectors = mv[n - 1].to + img->geom.cluster_sectors;
	/* The copies must be durable before an entry points at them. */
	if (!r)
		r = fsync_fd(img->fd, img->path, err);
	for (i = 0; i < n && !r; i++)
		r = prl_image_set_entry(img, mv[i].entry, mv[i].to, err);
	free(mv);
	if (!r)
		r = prl_image_sync(img, err);
	return r;
}

/*
 * Zero sectors [@from, @to): ploop reads the whole first data_off sectors
 * as BAT (its check "fixes" any non-zero entry past bat_entries), so the
 * padding before data_off must be zeros, not the data of moved clusters.
 */
static int zero_range(struct prl_image *img, uint64_t from, uint64_t to,
		      struct prl_err *err)
{
	const uint64_t chunk = 2048;	/* sectors a write */
	void *zero = prl_xcalloc(chunk, SECTOR);
	uint64_t n;
	int r = 0;

	for (; from < to && !r; from += n) {
		n = to - from < chunk ? to - from : chunk;
		r = prl_pwrite_full(img->fd, zero, n * SECTOR, from * SECTOR);
	}
	free(zero);
	if (r)
		return prl_errf(err, r, "%s: cannot write the new BAT: %s",
				img->path, strerror(-r));
	return 0;
}

/*
 * Make meta @nms sectors long with @new_bat entries (the new ones zero) and
 * write the BAT sectors past the old header+BAT, and zeros up to @nd;
 * nothing reads them yet.
 */
static int write_new_bat(struct prl_image *img, uint32_t nms, uint64_t nd,
			 struct prl_err *err)
{
	uint32_t oms = img->meta_sectors;
	size_t old_bytes = img->geom.meta_bytes;
	int r;

	img->meta = realloc(img->meta, (size_t)nms * SECTOR);
	img->dirty = realloc(img->dirty, div_up(nms, 8));
	if (!img->meta || !img->dirty) {
		fputs("prldisk: out of memory\n", stderr);
		abort();
	}
	/* Zero the old padding too: it becomes BAT entries. */
	memset((char *)img->meta + old_bytes, 0,
	       (size_t)nms * SECTOR - old_bytes);
	memset(img->dirty, 0, div_up(nms, 8));
	img->hdr = img->meta;
	img->bat = (__le32 *)((char *)img->meta + PRL_HEADER_SIZE);
	img->meta_sectors = nms;

	r = prl_pwrite_full(img->fd, (char *)img->meta +
			    (size_t)(oms - 1) * SECTOR,
			    (size_t)(nms - oms + 1) * SECTOR,
			    (uint64_t)(oms - 1) * SECTOR);
	if (r)
		return prl_errf(err, r, "%s: cannot write the new BAT: %s",
				img->path, strerror(-r));
	r = zero_range(img, nms, nd, err);
	if (r)
		return r;
	return fsync_fd(img->fd, img->path, err);
}

static int grow_bat(struct prl_image *img, uint64_t new_size,
		    uint64_t new_bat, struct prl_err *err)
{
	uint64_t nmb = PRL_HEADER_SIZE + new_bat * sizeof(__le32);
	uint64_t nms = div_up(nmb, SECTOR), nd = img->geom.data_off;
	uint32_t cs = img->geom.cluster_sectors;
	struct prl_header h;
	struct prl_geom g;
	const char *why;
	int r;

	/* Keep the grid: the data area moves by whole clusters. */
	if (nms > nd)
		nd += div_up(nms - nd, cs) * cs;
	if (nd > UINT32_MAX)
		return prl_errf(err, EFBIG, "%s: the BAT would be too large",
				img->path);
	r = move_below(img, nd, err);
	if (r)
		return r;
	if (img->file_sectors < nd) {
		if (img->blkdev)
			return prl_errf(err, ENOSPC, "%s: device too small",
					img->path);
		if (ftruncate(img->fd, (off_t)(nd * SECTOR)))
			return prl_errf(err, errno, "%s: cannot extend: %s",
					img->path, strerror(errno));
		img->file_sectors = nd;
	}
	r = write_new_bat(img, (uint32_t)nms, nd, err);
	if (!r)
		r = zero_tail(img, err);
	if (r)
		return r;

	/* The switch: one sector, checked by the kernel's parser first. */
	h = *img->hdr;
	h.bat_entries = htole32((uint32_t)new_bat);
	h.nb_sectors = htole64(new_size);
	h.cylinders = htole32(cylinders_of(new_size));
	h.data_off = htole32((uint32_t)nd);
	if (prl_parse_header(&h, img->file_sectors, &g, &why))
		return prl_errf(err, EIO, "%s: grow made a bad header: %s",
				img->path, why);
	*img->hdr = h;
	img->geom = g;
	img->dirty[0] |= 1;
	img->meta_dirty = true;
	return prl_image_sync(img, err);
}

int prl_image_grow(struct prl_image *img, uint64_t new_size,
		   struct prl_err *err)
{
	uint64_t new_bat;
	int r;

	r = need_rw(img, err);
	if (r)
		return r;
	if (new_size < img->geom.nb_sectors)
		return prl_errf(err, EINVAL,
				"%s: shrinking an image is not supported",
				img->path);
	if (new_size == img->geom.nb_sectors)
		return 0;
	if (img->geom.fmt == PRL_V1 && new_size > UINT32_MAX)
		return prl_errf(err, EFBIG,
				"%s: a WithoutFreeSpace (v1) image cannot be larger than 2^32 - 1 sectors; convert it to v2 first",
				img->path);
	new_bat = div_up(new_size, img->geom.cluster_sectors);
	if (new_bat > PRL_MAX_BAT_ENTRIES)
		return prl_errf(err, EFBIG,
				"%s: size too large for this cluster size (BAT over 2^28 entries)",
				img->path);
	/* Commit what is pending, so the steps below start clean. */
	r = prl_image_sync(img, err);
	if (r)
		return r;
	if (new_bat <= img->geom.bat_entries)
		return grow_in_place(img, new_size, err);
	return grow_bat(img, new_size, new_bat, err);
}

/* ---- merge and fill ------------------------------------------------------ */

/*
 * Two images of one operation must be different files (the same one
 * opened twice would read what it is overwriting) with one cluster size.
 */
static int same_clusters(const struct prl_image *a, const struct prl_image *b,
			 struct prl_err *err)
{
	struct stat sa, sb;

	if (a == b || (!fstat(a->fd, &sa) && !fstat(b->fd, &sb) &&
		       sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino &&
		       sa.st_rdev == sb.st_rdev))
		return prl_errf(err, EINVAL, "%s and %s are the same image",
				a->path, b->path);
	if (a->geom.cluster_sectors == b->geom.cluster_sectors)
		return 0;
	return prl_errf(err, EINVAL,
			"%s and %s have different cluster sizes (%u and %u sectors)",
			a->path, b->path, a->geom.cluster_sectors,
			b->geom.cluster_sectors);
}

/*
 * A Plain root gets at least @from's virtual size before anything is
 * written: a file is extended (sparse), a device must be large enough.
 */
static int prepare_raw(const struct prl_image *from, int fd,
		       struct prl_err *err)
{
	uint64_t bytes, want = from->geom.nb_sectors * SECTOR;
	struct stat st;

	if (fstat(fd, &st) || prl_fd_size(fd, &bytes))
		return prl_errf(err, EINVAL,
				"the raw image is not a regular file or block device");
	if (bytes >= want)
		return 0;
	if (!S_ISREG(st.st_mode))
		return prl_errf(err, ENOSPC,
				"the raw device (%llu bytes) is smaller than %s (%llu bytes)",
				(unsigned long long)bytes, from->path,
				(unsigned long long)want);
	if (ftruncate(fd, (off_t)want))
		return prl_errf(err, errno, "cannot extend the raw image: %s",
				strerror(errno));
	return 0;
}

static int merge_target(const struct prl_image *from,
			const struct prl_image *into, struct prl_err *err)
{
	int r = need_rw(into, err);

	if (!r)
		r = same_clusters(from, into, err);
	if (!r && into->geom.nb_sectors < from->geom.nb_sectors)
		r = prl_errf(err, EINVAL, "%s is smaller than %s: grow it first",
			     into->path, from->path);
	return r;
}

/*
 * Past its virtual size an image reads as zeros (DESIGN.md: a shorter
 * lower device supplies zeros); the tail of its last cluster may hold
 * anything, so it is not copied where it could become visible.
 */
static void clear_tail(const struct prl_image *img, uint64_t c, void *buf)
{
	uint32_t cs = img->geom.cluster_sectors;
	uint64_t left = img->geom.nb_sectors - c * cs;

	if (left < cs)
		memset((char *)buf + left * SECTOR, 0, (cs - left) * SECTOR);
}

/* Write the part of cluster @c of @from inside its virtual size to @fd. */
static int write_raw(const struct prl_image *from, int fd, uint64_t c,
		     const void *buf, struct prl_err *err)
{
	uint64_t off = c * from->geom.cluster_sectors;
	uint64_t len = from->geom.nb_sectors - off;
	int r;

	if (len > from->geom.cluster_sectors)
		len = from->geom.cluster_sectors;
	r = prl_pwrite_full(fd, buf, len * SECTOR, off * SECTOR);
	if (r)
		return prl_errf(err, r, "cannot write sector %llu of the raw image: %s",
				(unsigned long long)off, strerror(-r));
	return 0;
}

int prl_image_merge(struct prl_image *from, struct prl_image *into, int raw_fd,
		    prl_progress_fn progress, void *ctx, struct prl_err *err)
{
	uint64_t n = prl_image_clusters(from), c, done = 0, total, every;
	void *buf;
	bool present;
	int r;

	r = into ? merge_target(from, into, err) :
	    raw_fd < 0 ? prl_errf(err, EBADF, "merge: nothing to merge into") :
	    prepare_raw(from, raw_fd, err);
	if (r)
		return r;

	total = prl_image_count_mapped(from);
	every = commit_every(from, total);
	buf = prl_xmalloc(cluster_bytes(from));
	for (c = 0, r = 0; c < n && !r; c++) {
		if (!prl_image_lookup(from, c))
			continue;
		r = prl_image_read_cluster(from, c, buf, &present, err);
		if (r)
			break;
		clear_tail(from, c, buf);
		r = into ? prl_image_write_cluster(into, c, buf, err) :
		    write_raw(from, raw_fd, c, buf, err);
		report(progress, ctx, ++done, total);
		if (!r && into && done % every == 0)
			r = prl_image_sync(into, err);
	}
	free(buf);
	if (r)
		return r;
	if (into)
		return prl_image_sync(into, err);
	return fsync_fd(raw_fd, "the raw image", err);
}

/* Does @below supply cluster @c (inside its virtual size)? */
static bool supplies(const struct prl_image *below, uint64_t c)
{
	return c * below->geom.cluster_sectors < below->geom.nb_sectors &&
	       prl_image_lookup(below, c);
}

int prl_image_fill_part(struct prl_image *img, struct prl_image *below,
			uint64_t *next, uint64_t max, prl_progress_fn progress,
			void *ctx, struct prl_err *err)
{
	uint64_t n = prl_image_clusters(img), c, done = 0, total = 0, every;
	void *buf;
	bool present;
	int r;

	r = need_rw(img, err);
	if (!r)
		r = same_clusters(img, below, err);
	if (r)
		return r;
	for (c = *next; c < n; c++)
		total += !prl_image_lookup(img, c) && supplies(below, c);
	if (max && total > max)
		total = max;
	every = commit_every(img, total);

	buf = prl_xmalloc(cluster_bytes(img));
	for (c = *next; c < n && !r && done < total; c++) {
		if (prl_image_lookup(img, c) || !supplies(below, c))
			continue;
		r = prl_image_read_cluster(below, c, buf, &present, err);
		if (r)
			break;
		clear_tail(below, c, buf);
		r = prl_image_write_cluster(img, c, buf, err);
		report(progress, ctx, ++done, total);
		if (!r && done % every == 0)
			r = prl_image_sync(img, err);
	}
	free(buf);
	if (r)
		return r;
	*next = c;
	r = prl_image_sync(img, err);
	if (r)
		return r;
	/* Anything left past @next? */
	for (; c < n; c++)
		if (!prl_image_lookup(img, c) && supplies(below, c))
			return 1;
	return 0;
}

int prl_image_fill(struct prl_image *img, struct prl_image *below,
		   prl_progress_fn progress, void *ctx, struct prl_err *err)
{
	uint64_t next = 0;
	int r = prl_image_fill_part(img, below, &next, 0, progress, ctx, err);

	return r < 0 ? r : 0;
}

/* ---- convert ------------------------------------------------------------- */

/*
 * A conversion changes the unit of every BAT entry along with the magic,
 * which no single-sector write can do, so it writes a complete new image
 * next to the old one (allocated clusters packed in BAT order on the new
 * grid) and renames it over the old: a crash leaves one or the other.
 */
struct conv {
	struct prl_image *img;
	enum prl_format_version fmt;
	uint64_t data_off, end;
	void *meta;
	char *real;	/* the file behind img->path (not a symlink) */
	char *tmp;
	int fd;
};

static int conv_plan(struct conv *cv, struct prl_err *err)
{
	struct prl_image *img = cv->img;
	uint32_t cs = img->geom.cluster_sectors;
	uint64_t last;

	if (cv->fmt == PRL_V1 && img->geom.nb_sectors > UINT32_MAX)
		return prl_errf(err, EFBIG,
				"%s: too large for a WithoutFreeSpace (v1) image (2^32 - 1 sectors at most)",
				img->path);
	cv->data_off = div_up(img->meta_sectors, cs) * cs;
	cv->end = cv->data_off + (uint64_t)img->allocated * cs;
	last = img->allocated ? cv->end - cs : 0;
	if (cv->data_off > UINT32_MAX ||
	    (cv->fmt == PRL_V1 ? last : last / cs) > UINT32_MAX)
		return prl_errf(err, EFBIG,
				"%s: the data would not be addressable in a %s image",
				img->path, cv->fmt == PRL_V1 ?
				"WithoutFreeSpace (v1)" : "WithouFreSpacExt (v2)");
	return 0;
}

/* Copy the clusters into the new file and build its header + BAT. */
static int conv_write(struct conv *cv, struct prl_err *err)
{
	struct prl_image *img = cv->img;
	uint32_t cs = img->geom.cluster_sectors;
	struct prl_header *h;
	__le32 *bat;
	uint64_t c, to = cv->data_off;
	void *buf;
	bool present;
	int r = 0;

	cv->meta = prl_xcalloc(img->meta_sectors, SECTOR);
	h = cv->meta;
	bat = (__le32 *)((char *)cv->meta + PRL_HEADER_SIZE);
	*h = *img->hdr;
	memcpy(h->magic, cv->fmt == PRL_V1 ? PRL_MAGIC_V1 : PRL_MAGIC_V2,
	       PRL_MAGIC_LEN);
	h->data_off = htole32((uint32_t)cv->data_off);
	h->ext_off = 0;
	/* Complete once renamed: a crash right after leaves it clean. */
	h->in_use = htole32(PRL_IN_USE_CLOSED_OLD);
	if (img->allocated)
		h->flags &= ~htole32(PRL_FLAG_EMPTY);

	buf = prl_xmalloc(cluster_bytes(img));
	for (c = 0; c < img->geom.bat_entries && !r; c++) {
		if (!prl_image_lookup(img, c))
			continue;
		r = prl_image_read_cluster(img, c, buf, &present, err);
		if (r)
			break;
		r = prl_pwrite_full(cv->fd, buf, cluster_bytes(img), to * SECTOR);
		if (r) {
			r = prl_errf(err, r, "%s: cannot write: %s", cv->tmp,
				     strerror(-r));
			break;
		}
		bat[c] = htole32((uint32_t)(cv->fmt == PRL_V1 ? to : to / cs));
		to += cs;
	}
	free(buf);
	if (r)
		return r;
	r = prl_pwrite_full(cv->fd, cv->meta, (size_t)img->meta_sectors * SECTOR,
			    0);
	if (!r && ftruncate(cv->fd, (off_t)(cv->end * SECTOR)))
		r = -errno;
	if (r)
		return prl_errf(err, r, "%s: cannot write: %s", cv->tmp,
				strerror(-r));
	return fsync_fd(cv->fd, cv->tmp, err);
}

/* The new file is in place: make @img describe it. */
static int conv_switch(struct conv *cv, struct prl_err *err)
{
	struct prl_image *img = cv->img;
	struct prl_geom g;
	const char *why;

	if (prl_parse_header(cv->meta, cv->end, &g, &why))
		return prl_errf(err, EIO, "%s: converted header is bad: %s",
				cv->tmp, why);
	if (prl_folder_rename(cv->tmp, cv->real))
		return prl_errf(err, errno, "cannot rename %s to %s: %s",
				cv->tmp, cv->real, strerror(errno));
	free(cv->tmp);
	cv->tmp = NULL;
	close(img->fd);
	img->fd = cv->fd;
	cv->fd = -1;
	free(img->meta);
	img->meta = cv->meta;
	cv->meta = NULL;
	img->hdr = img->meta;
	img->bat = (__le32 *)((char *)img->meta + PRL_HEADER_SIZE);
	memset(img->dirty, 0, div_up(img->meta_sectors, 8));
	img->meta_dirty = false;
	img->geom = g;
	img->end = cv->end;
	img->file_sectors = cv->end;
	/* As every image prldisk closes: 0, the one value ploop calls clean. */
	img->closed_in_use = PRL_IN_USE_CLOSED_OLD;
	if (prl_fsync_dir_of(cv->real))
		return prl_errf(err, EIO, "cannot sync the folder of %s",
				cv->real);
	return 0;
}

int prl_image_convert(struct prl_image *img, enum prl_format_version fmt,
		      struct prl_err *err)
{
	struct conv cv = { .img = img, .fmt = fmt, .fd = -1 };
	struct stat st;
	int r;

	if (fmt != PRL_V1 && fmt != PRL_V2)
		return prl_errf(err, EINVAL, "unknown image format version %d",
				fmt);
	r = need_rw(img, err);
	if (r || fmt == img->geom.fmt)
		return r;
	if (img->blkdev)
		return prl_errf(err, EOPNOTSUPP,
				"%s: only image files can be converted",
				img->path);
	r = conv_plan(&cv, err);
	if (r)
		return r;
	/*
	 * The image is only read from here on, so it is closed on disk now
	 * (our lock still keeps other writers out): a convert killed midway
	 * leaves it as clean as it was, plus the temporary file, which check
	 * names and check --repair removes.
	 */
	img->hdr->in_use = htole32(PRL_IN_USE_CLOSED_OLD);
	img->geom.in_use = PRL_IN_USE_CLOSED_OLD;
	img->dirty[0] |= 1;
	img->meta_dirty = true;
	r = prl_image_sync(img, err);
	if (r)
		return r;

	/* Beneath the disk folder no symlink is followed (folder.h). */
	cv.real = prl_folder_beneath(img->path) ? prl_xstrdup(img->path) :
						    realpath(img->path, NULL);
	if (!cv.real)
		return prl_errf(err, errno, "%s: %s", img->path,
				strerror(errno));
	cv.tmp = prl_xasprintf("%s.convert.XXXXXX", cv.real);
	cv.fd = prl_folder_mkstemp(cv.tmp);
	if (cv.fd < 0) {
		r = prl_errf(err, errno, "cannot create %s: %s", cv.tmp,
			     strerror(errno));
		free(cv.tmp);
		free(cv.real);
		return r;
	}
	/* Locked from birth: check --repair leaves a running convert's file alone. */
	if (flock(cv.fd, LOCK_EX | LOCK_NB))
		r = prl_errf(err, errno, "%s: cannot lock: %s", cv.tmp,
			     strerror(errno));
	else if (fstat(img->fd, &st) || fchmod(cv.fd, st.st_mode & 07777) ||
		 (fchown(cv.fd, st.st_uid, st.st_gid) && errno != EPERM))
		r = prl_errf(err, errno, "%s: cannot copy the owner and mode: %s",
			     cv.tmp, strerror(errno));
	if (!r)
		r = conv_write(&cv, err);
	if (!r)
		r = conv_switch(&cv, err);
	if (cv.tmp) {
		prl_folder_unlink(cv.tmp);
		free(cv.tmp);
	}
	if (cv.fd >= 0)
		close(cv.fd);
	free(cv.meta);
	free(cv.real);
	return r;
}
