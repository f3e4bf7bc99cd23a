// SPDX-License-Identifier: GPL-2.0
/*
 * Parallels expandable image files, offline: open (validated by the
 * kernel's own prl_format.c), cluster I/O, allocation at the image end and
 * the commit order data -> fsync -> BAT -> fsync.  See image.h.
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

static uint64_t div_up(uint64_t a, uint64_t b)
{
	return a / b + (a % b != 0);
}

static size_t cluster_bytes(const struct prl_image *img)
{
	return (size_t)img->geom.cluster_sectors << PRL_SECTOR_SHIFT;
}

uint64_t prl_image_clusters(const struct prl_image *img)
{
	return div_up(img->geom.nb_sectors, img->geom.cluster_sectors);
}

uint64_t prl_image_max_end(const struct prl_image *img)
{
	return img->end + (uint64_t)(img->geom.bat_entries - img->allocated) *
			  img->geom.cluster_sectors;
}

uint64_t prl_image_count_mapped(const struct prl_image *img)
{
	uint64_t c, n = 0;

	for (c = 0; c < prl_image_clusters(img); c++)
		n += prl_image_lookup(img, c) != 0;
	return n;
}

uint64_t prl_image_lookup(const struct prl_image *img, uint64_t cluster)
{
	if (cluster >= img->geom.bat_entries)
		return 0;
	return prl_entry_sector(&img->geom, le32toh(img->bat[cluster]));
}

static void mark_dirty(struct prl_image *img, uint64_t byte)
{
	uint64_t s = byte >> PRL_SECTOR_SHIFT;

	if (s < img->meta_sectors) {
		img->dirty[s / 8] |= 1U << (s % 8);
		img->meta_dirty = true;
	}
}

static void free_image(struct prl_image *img)
{
	if (img->fd >= 0)
		close(img->fd);
	free(img->meta);
	free(img->dirty);
	free(img->path);
	free(img);
}

/* Explain a refused BAT: which entry, and where it points. */
static int bat_refused(struct prl_image *img, const struct prl_bat_err *be,
		       const char *why, struct prl_err *err)
{
	if (be->entry == PRL_ENTRY_EXT && !be->other)
		return prl_errf(err, EINVAL, "%s: %s (ext_off = sector %llu)",
				img->path, why, (unsigned long long)be->value);
	if (be->other == PRL_ENTRY_EXT)
		return prl_errf(err, EINVAL,
				"%s: %s (BAT entry %u, sector %llu)", img->path,
				why, be->entry, (unsigned long long)be->value);
	/* Only a duplicate names a second entry (never entry 0). */
	if (be->other)
		return prl_errf(err, EINVAL,
				"%s: %s (entries %u and %u, sector %llu)",
				img->path, why, be->entry, be->other,
				(unsigned long long)be->value);
	return prl_errf(err, EINVAL, "%s: %s (BAT entry %u -> sector %llu)",
			img->path, why, be->entry,
			(unsigned long long)be->value);
}

/* Read header + BAT and validate them exactly as the kernel does. */
static int load_meta(struct prl_image *img, struct prl_err *err)
{
	struct prl_header h;
	struct prl_geom g2;
	struct prl_bat_err be = { 0 };
	const char *why = NULL;
	__u64 *scratch, end;
	uint32_t n;
	int r;

	if (img->file_sectors < 1)
		return prl_errf(err, EINVAL,
				"%s: too small to be a Parallels image",
				img->path);
	r = prl_pread_full(img->fd, &h, sizeof(h), 0);
	if (r)
		return prl_errf(err, r, "%s: cannot read the header: %s",
				img->path, strerror(-r));
	if (prl_parse_header(&h, img->file_sectors, &img->geom, &why))
		return prl_errf(err, EINVAL, "%s: %s", img->path, why);

	img->meta_sectors = (uint32_t)div_up(img->geom.meta_bytes, SECTOR);
	img->meta = prl_xcalloc(img->meta_sectors, SECTOR);
	img->dirty = prl_xcalloc(div_up(img->meta_sectors, 8), 1);
	img->hdr = img->meta;
	img->bat = (__le32 *)((char *)img->meta + PRL_HEADER_SIZE);
	r = prl_pread_full(img->fd, img->meta,
			   (size_t)img->meta_sectors * SECTOR, 0);
	if (r)
		return prl_errf(err, r, "%s: cannot read the BAT: %s",
				img->path, strerror(-r));
	/* Trust only what was validated: the header as it is in meta. */
	if (prl_parse_header(img->hdr, img->file_sectors, &g2, &why))
		return prl_errf(err, EINVAL, "%s: %s", img->path, why);
	if (memcmp(&g2, &img->geom, sizeof(g2)))
		return prl_errf(err, EAGAIN,
				"%s: the header changed while it was read",
				img->path);

	n = prl_count_allocated(&img->geom, img->bat);
	scratch = prl_xcalloc((size_t)n + 1, sizeof(*scratch));
	r = prl_check_bat(&img->geom, img->bat, img->file_sectors, scratch,
			  &end, &be, &why);
	free(scratch);
	if (r)
		return bat_refused(img, &be, why, err);
	img->end = end;
	img->allocated = n;
	return 0;
}

/* Write meta sectors [first, first + n) as they are in memory. */
static int write_meta(struct prl_image *img, uint32_t first, uint32_t n)
{
	return prl_pwrite_full(img->fd, (char *)img->meta +
			       (size_t)first * SECTOR, (size_t)n * SECTOR,
			       (uint64_t)first * SECTOR);
}

static int fsync_img(struct prl_image *img, struct prl_err *err)
{
	if (fsync(img->fd))
		return prl_errf(err, errno, "%s: fsync failed: %s", img->path,
				strerror(errno));
	return 0;
}

/* Set in_use in the header on disk and make it durable. */
static int write_in_use(struct prl_image *img, uint32_t val,
			struct prl_err *err)
{
	int r;

	img->hdr->in_use = htole32(val);
	img->geom.in_use = val;
	r = write_meta(img, 0, 1);
	if (r)
		return prl_errf(err, r, "%s: cannot write the header: %s",
				img->path, strerror(-r));
	return fsync_img(img, err);
}

static int open_rw(struct prl_image *img, unsigned int flags,
		   struct prl_err *err)
{
	if (img->geom.ext_off)
		return prl_errf(err, EOPNOTSUPP,
				"%s: image has a format extension (dirty bitmap) that prldisk cannot keep up to date offline; it can only be opened read-only",
				img->path);
	if (img->geom.in_use == PRL_IN_USE_OPEN &&
	    !(flags & PRL_OPEN_IGNORE_IN_USE))
		return prl_errf(err, EBUSY,
				"image %s is in use or was not closed cleanly: run prldisk check --repair",
				img->path);
	/*
	 * Closed as 0, whatever the image had: ploop 1.15 takes any other
	 * value (the spec's 0x312e3276 included) for "dirty", QEMU writes 0
	 * too, and 0x312e3276 only vouches for a dirty bitmap, which an
	 * image opened here never has (see above).
	 */
	img->closed_in_use = PRL_IN_USE_CLOSED_OLD;
	img->writable = true;
	return write_in_use(img, PRL_IN_USE_OPEN, err);
}

int prl_image_open(const char *path, unsigned int flags,
		   struct prl_image **out, struct prl_err *err)
{
	struct prl_image *img = prl_xcalloc(1, sizeof(*img));
	uint64_t bytes;
	struct stat st;
	int r;

	*out = NULL;
	img->path = prl_xstrdup(path);
	/*
	 * O_EXCL: a block device that the kernel holds (mounted, or under
	 * an active dm table) is refused with EBUSY; no effect on files.
	 */
	img->fd = prl_open_image_file(path, flags & PRL_OPEN_RW ?
				      O_RDWR | O_EXCL : O_RDONLY, &st, err);
	if (img->fd == -EBUSY) {
		img->fd = -1;
		r = prl_errf(err, EBUSY,
			     "cannot open %s for writing: the device is in use (mounted or part of an active device)",
			     path);
		goto fail;
	}
	if (img->fd < 0) {
		r = img->fd;
		img->fd = -1;
		goto fail;
	}
	if (prl_fd_size(img->fd, &bytes)) {
		r = prl_errf(err, EINVAL,
			     "%s: not a regular file or block device", path);
		goto fail;
	}
	img->blkdev = S_ISBLK(st.st_mode);
	img->file_sectors = bytes >> PRL_SECTOR_SHIFT;
	/*
	 * Another prldisk writing the image now would make in_use look
	 * stale: lock before reading anything.  (QEMU's byte-range locks
	 * and the kernel target do not see this lock; in_use covers them.)
	 */
	if ((flags & PRL_OPEN_RW) && flock(img->fd, LOCK_EX | LOCK_NB)) {
		r = prl_errf(err, errno == EWOULDBLOCK ? EBUSY : errno,
			     "%s: image is opened for writing by another process",
			     path);
		goto fail;
	}
	r = load_meta(img, err);
	if (r)
		goto fail;
	if (flags & PRL_OPEN_RW) {
		r = open_rw(img, flags, err);
		if (r) {
			img->writable = false;	/* leave the header as it is */
			goto fail;
		}
	}
	*out = img;
	return 0;
fail:
	free_image(img);
	return r;
}

int prl_image_sync(struct prl_image *img, struct prl_err *err)
{
	uint32_t s, first;
	int r;

	if (!img->writable)
		return 0;
	/* Data first: no BAT entry may reach the disk before its cluster. */
	r = fsync_img(img, err);
	if (r || !img->meta_dirty)
		return r;
	for (s = 0; s < img->meta_sectors; s++) {
		if (!(img->dirty[s / 8] & (1U << (s % 8))))
			continue;
		for (first = s; s < img->meta_sectors &&
		     (img->dirty[s / 8] & (1U << (s % 8))); s++)
			;
		r = write_meta(img, first, s - first);
		if (r)
			return prl_errf(err, r, "%s: cannot write the BAT: %s",
					img->path, strerror(-r));
	}
	r = fsync_img(img, err);
	if (r)
		return r;
	memset(img->dirty, 0, div_up(img->meta_sectors, 8));
	img->meta_dirty = false;
	return 0;
}

int prl_image_close(struct prl_image *img, struct prl_err *err)
{
	int r = 0;

	if (!img)
		return 0;
	if (img->writable) {
		r = prl_image_sync(img, err);
		/* A failed sync leaves in_use set: the image needs a check. */
		if (!r)
			r = write_in_use(img, img->closed_in_use, err);
	}
	if (close(img->fd) && !r)
		r = prl_errf(err, errno, "%s: close failed: %s", img->path,
			     strerror(errno));
	img->fd = -1;
	free_image(img);
	return r;
}

int prl_image_read_cluster(struct prl_image *img, uint64_t cluster, void *buf,
			   bool *present, struct prl_err *err)
{
	uint64_t s;
	int r;

	if (cluster >= img->geom.bat_entries)
		return prl_errf(err, EINVAL,
				"%s: cluster %llu is beyond the BAT (%u entries)",
				img->path, (unsigned long long)cluster,
				img->geom.bat_entries);
	s = prl_image_lookup(img, cluster);
	*present = s != 0;
	if (!s) {
		memset(buf, 0, cluster_bytes(img));
		return 0;
	}
	r = prl_pread_full(img->fd, buf, cluster_bytes(img), s * SECTOR);
	if (r)
		return prl_errf(err, r, "%s: cannot read cluster %llu at sector %llu: %s",
				img->path, (unsigned long long)cluster,
				(unsigned long long)s, strerror(-r));
	return 0;
}

/* QEMU ignores the flag, ploop sets it on new images: clear it. */
static void clear_empty(struct prl_image *img)
{
	if (img->geom.flags & PRL_FLAG_EMPTY) {
		img->geom.flags &= ~PRL_FLAG_EMPTY;
		img->hdr->flags = htole32(img->geom.flags);
		mark_dirty(img, 0);
	}
}

int prl_image_alloc(struct prl_image *img, uint64_t *sector,
		    struct prl_err *err)
{
	uint64_t s = img->end, unit = s / img->geom.off_mult;

	if (!img->writable)
		return prl_errf(err, EBADF, "%s: image is opened read-only",
				img->path);
	if (unit > UINT32_MAX || s % img->geom.off_mult)
		return prl_errf(err, EFBIG,
				"%s: image is full: its BAT cannot address a cluster at sector %llu%s",
				img->path, (unsigned long long)s,
				img->geom.fmt == PRL_V1 ?
				" (WithoutFreeSpace: 2 TiB at most; convert it to v2)" : "");
	if (img->blkdev && (s > img->file_sectors ||
			    img->file_sectors - s < img->geom.cluster_sectors))
		return prl_errf(err, ENOSPC,
				"%s: no room for another cluster on the device",
				img->path);
	clear_empty(img);
	img->end = s + img->geom.cluster_sectors;
	*sector = s;
	return 0;
}

int prl_image_set_entry(struct prl_image *img, uint64_t cluster,
			uint64_t sector, struct prl_err *err)
{
	uint32_t old, val;

	if (!img->writable)
		return prl_errf(err, EBADF, "%s: image is opened read-only",
				img->path);
	if (cluster >= img->geom.bat_entries)
		return prl_errf(err, EINVAL,
				"%s: cluster %llu is beyond the BAT (%u entries)",
				img->path, (unsigned long long)cluster,
				img->geom.bat_entries);
	if (sector % img->geom.off_mult ||
	    sector / img->geom.off_mult > UINT32_MAX ||
	    (sector && (sector < img->geom.data_off ||
			(sector - img->geom.data_off) %
			img->geom.cluster_sectors)))
		return prl_errf(err, EINVAL,
				"%s: sector %llu is not a cluster of the data area",
				img->path, (unsigned long long)sector);
	old = le32toh(img->bat[cluster]);
	val = (uint32_t)(sector / img->geom.off_mult);
	img->allocated += (val != 0) - (old != 0);
	img->bat[cluster] = htole32(val);
	mark_dirty(img, PRL_HEADER_SIZE + cluster * sizeof(__le32));
	if (sector && sector + img->geom.cluster_sectors > img->end)
		img->end = sector + img->geom.cluster_sectors;
	return 0;
}

int prl_image_write_cluster(struct prl_image *img, uint64_t cluster,
			    const void *buf, struct prl_err *err)
{
	uint64_t s, old_end = img->end;
	uint32_t old_flags = img->geom.flags;
	bool fresh = false;
	int r;

	if (!img->writable)
		return prl_errf(err, EBADF, "%s: image is opened read-only",
				img->path);
	if (cluster >= prl_image_clusters(img))
		return prl_errf(err, EINVAL,
				"%s: cluster %llu is beyond the virtual size (%llu clusters)",
				img->path, (unsigned long long)cluster,
				(unsigned long long)prl_image_clusters(img));
	s = prl_image_lookup(img, cluster);
	if (!s) {
		r = prl_image_alloc(img, &s, err);
		if (r)
			return r;
		fresh = true;
	}
	r = prl_pwrite_full(img->fd, buf, cluster_bytes(img), s * SECTOR);
	if (r) {
		if (fresh) {
			/* Nothing points at it: give the cluster back. */
			img->end = old_end;
			if (old_flags & PRL_FLAG_EMPTY) {
				img->geom.flags = old_flags;
				img->hdr->flags = htole32(old_flags);
			}
		}
		return prl_errf(err, r, "%s: cannot write cluster %llu at sector %llu: %s",
				img->path, (unsigned long long)cluster,
				(unsigned long long)s, strerror(-r));
	}
	if (s + img->geom.cluster_sectors > img->file_sectors)
		img->file_sectors = s + img->geom.cluster_sectors;
	/* Also for an image QEMU wrote into: ploop check wants it clear. */
	clear_empty(img);
	if (fresh)
		return prl_image_set_entry(img, cluster, s, err);
	return 0;
}

int prl_image_truncate(struct prl_image *img, struct prl_err *err)
{
	int r;

	if (!img->writable || img->blkdev)
		return 0;
	r = prl_image_sync(img, err);
	if (r)
		return r;
	if (ftruncate(img->fd, (off_t)(img->end * SECTOR)))
		return prl_errf(err, errno, "%s: cannot truncate: %s",
				img->path, strerror(errno));
	img->file_sectors = img->end;
	return fsync_img(img, err);
}

bool prl_cluster_size_ok(uint64_t sectors)
{
	return sectors >= PRL_CREATE_MIN_CLUSTER_SECTORS &&
	       sectors <= PRL_CREATE_MAX_CLUSTER_SECTORS &&
	       !(sectors & (sectors - 1));
}

/* Fill in the header of a new image for @o; 0 or -errno with @err set. */
static int make_header(struct prl_header *h, const struct prl_create_opts *o,
		       uint32_t cs, uint64_t *data_off, struct prl_err *err)
{
	enum prl_format_version fmt = o->fmt ? o->fmt : PRL_V2;
	uint64_t bat, meta;

	if (fmt != PRL_V1 && fmt != PRL_V2)
		return prl_errf(err, EINVAL, "unknown image format version %d",
				fmt);
	if (!o->size)
		return prl_errf(err, EINVAL, "the virtual size must not be zero");
	if (cs > PRL_MAX_CLUSTER_SECTORS)
		return prl_errf(err, EINVAL,
				"cluster size of %u sectors is too large (maximum %lu)",
				cs, (unsigned long)PRL_MAX_CLUSTER_SECTORS);
	if (fmt == PRL_V1 && o->size > UINT32_MAX)
		return prl_errf(err, EFBIG,
				"a WithoutFreeSpace (v1) image is limited to 2^32 - 1 sectors (2 TiB)");
	bat = div_up(o->size, cs);
	if (bat > PRL_MAX_BAT_ENTRIES)
		return prl_errf(err, EFBIG,
				"size too large for this cluster size (BAT over 2^28 entries)");
	meta = div_up(PRL_HEADER_SIZE + bat * sizeof(__le32), SECTOR);
	/* As QEMU and ploop do: the data area starts on a cluster. */
	*data_off = div_up(meta, cs) * cs;
	if (*data_off > UINT32_MAX)
		return prl_errf(err, EFBIG, "data_off would not fit 32 bits");

	memset(h, 0, sizeof(*h));
	memcpy(h->magic, fmt == PRL_V1 ? PRL_MAGIC_V1 : PRL_MAGIC_V2,
	       PRL_MAGIC_LEN);
	h->version = htole32(PRL_VERSION);
	/* QEMU and ploop: 16 heads, 32 sectors a track, so many cylinders. */
	h->heads = htole32(16);
	h->cylinders = htole32(o->size / (16 * 32) > UINT32_MAX ? UINT32_MAX :
			       (uint32_t)(o->size / (16 * 32)));
	h->tracks = htole32(cs);
	h->bat_entries = htole32((uint32_t)bat);
	h->nb_sectors = htole64(o->size);
	/*
	 * Closed as 0, as QEMU and ploop write it: ploop 1.15 takes any other
	 * value for "dirty".  0x312e3276 (closed v2.1) only matters for an
	 * image with a format extension, which prldisk does not write.
	 */
	h->in_use = htole32(PRL_IN_USE_CLOSED_OLD);
	h->data_off = htole32((uint32_t)*data_off);
	h->flags = htole32(PRL_FLAG_EMPTY);
	return 0;
}

int prl_image_create(const char *path, const struct prl_create_opts *o,
		     struct prl_err *err)
{
	uint32_t cs = o->cluster_sectors ? o->cluster_sectors : 2048;
	struct prl_header h;
	uint64_t data_off = 0;
	void *buf;
	int fd, r;

	r = make_header(&h, o, cs, &data_off, err);
	if (r)
		return r;

	fd = prl_folder_open(path, O_RDWR | O_CREAT | O_EXCL, 0600);
	if (fd < 0)
		return prl_errf(err, errno, "cannot create %s: %s", path,
				strerror(errno));
	/*
	 * The file is new: extending it to data_off gives the zero BAT and
	 * padding (ploop wants zeros up to data_off) without writing them.
	 */
	buf = prl_xcalloc(1, SECTOR);
	memcpy(buf, &h, sizeof(h));
	r = prl_pwrite_full(fd, buf, SECTOR, 0);
	free(buf);
	/* A layer of a user's disk is the user's, like the layer it goes on. */
	if (!r && o->like &&
	    ((fchown(fd, o->like->st_uid, o->like->st_gid) && errno != EPERM) ||
	     fchmod(fd, o->like->st_mode & 07777)))
		r = -errno;
	if (!r && ftruncate(fd, (off_t)(data_off * SECTOR)))
		r = -errno;
	if (!r && fsync(fd))
		r = -errno;
	if (close(fd) && !r)
		r = -errno;
	if (!r)
		r = prl_fsync_dir_of(path);
	if (r) {
		prl_folder_unlink(path);
		return prl_errf(err, r, "cannot write %s: %s", path,
				strerror(-r));
	}
	return 0;
}
