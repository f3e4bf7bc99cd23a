// SPDX-License-Identifier: GPL-2.0
/*
 * libFuzzer target for a whole disk folder, as prldisk meets it: a
 * DiskDescriptor.xml, its images and their format extensions.
 *
 * Input: sections split by SEP ("@@@@"):
 *   descriptor, image 1, extension 1, image 2, extension 2, image 3, ext 3
 * Image k is written to the file of the descriptor's k-th Image (one in
 * the folder itself; others are left missing), padded with zeros to whole
 * clusters (so a seed needs no trailing zeros).  A non-empty extension
 * section becomes the body of the image's format extension cluster at its
 * header's ext_off, sealed with magic and MD5, so the fuzzer gets past the
 * hash into the features and the dirty bitmap.
 *
 * Then what prldisk does read-only on a folder: load the descriptor, open
 * each chain (prl_image_open of every expandable image, top to root),
 * prl_check() each image and load each dirty bitmap (bitmap list).
 * Promises (abort() otherwise): every refusal says why on one line; a
 * loaded bitmap has the disk's granules and no more than the limit; and
 * nothing writes a byte of the folder.  Each run uses a fresh folder under
 * $TMPDIR (or /tmp), removed before the next.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <endian.h>
#include <openssl/evp.h>

#include "bitmap.h"
#include "check.h"
#include "descriptor.h"
#include "image.h"
#include "util.h"

#define SEP		"@@@@"
#define SEP_LEN		4
#define MAX_SECTIONS	7
#define MAX_IMAGES	3
/* Padding and extension clusters only up to these sizes. */
#define MAX_PAD_CLUSTER	(1u << 20)
#define MAX_FILE	(8u << 20)

struct section {
	const uint8_t *p;
	size_t len;
};

static size_t split(const uint8_t *data, size_t size, struct section *s)
{
	size_t n = 0, start = 0, i = 0;

	while (n < MAX_SECTIONS - 1 && i + SEP_LEN <= size) {
		if (memcmp(data + i, SEP, SEP_LEN)) {
			i++;
			continue;
		}
		s[n++] = (struct section){ data + start, i - start };
		i += SEP_LEN;
		start = i;
	}
	s[n++] = (struct section){ data + start, size - start };
	return n;
}

static void must_msg(const struct prl_err *err)
{
	if (!err->msg[0] || strchr(err->msg, '\n')) {
		fprintf(stderr, "a refusal without a one-line message: '%s'\n", err->msg);
		abort();
	}
}

static uint32_t get32(const uint8_t *p)
{
	return p[0] | p[1] << 8 | p[2] << 16 | (uint32_t)p[3] << 24;
}

/*
 * Write image @img to @path, padded to whole clusters, with @ext sealed at
 * ext_off.  An image whose cluster size is 0 or over MAX_PAD_CLUSTER is
 * written as it is.
 */
static void write_image(const char *path, struct section img, struct section ext)
{
	uint8_t h[PRL_HEADER_SIZE] = { 0 };
	uint64_t cb, ext_off, size = img.len;
	struct prl_ext_header eh;
	unsigned int n;
	uint8_t *cl;
	int fd;

	fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0 || (img.len && prl_pwrite_full(fd, img.p, img.len, 0)))
		abort();
	/* The header as the padded file will have it (trailing zeros). */
	memcpy(h, img.p, img.len < sizeof(h) ? img.len : sizeof(h));
	cb = (uint64_t)get32(h + 28) * PRL_SECTOR_SIZE;
	ext_off = (uint64_t)get32(h + 56) | (uint64_t)get32(h + 60) << 32;
	if (cb && cb <= MAX_PAD_CLUSTER) {
		size = (size + cb - 1) / cb * cb;
		if (ext.len && ext_off && ext_off < MAX_FILE / PRL_SECTOR_SIZE &&
		    ext_off * PRL_SECTOR_SIZE + cb <= MAX_FILE) {
			cl = calloc(1, cb);
			if (!cl)
				abort();
			memcpy(cl + sizeof(eh), ext.p,
			       ext.len < cb - sizeof(eh) ? ext.len : cb - sizeof(eh));
			eh.magic = htole64(PRL_EXT_MAGIC);
			if (!EVP_Digest(cl + sizeof(eh), cb - sizeof(eh), eh.md5, &n,
					EVP_md5(), NULL))
				abort();
			memcpy(cl, &eh, sizeof(eh));
			if (prl_pwrite_full(fd, cl, cb, ext_off * PRL_SECTOR_SIZE))
				abort();
			free(cl);
			if (ext_off * PRL_SECTOR_SIZE + cb > size)
				size = ext_off * PRL_SECTOR_SIZE + cb;
		}
		if (size <= MAX_FILE && ftruncate(fd, (off_t)size))
			abort();
	}
	close(fd);
}

/* A cheap fingerprint of a file: size and FNV-1a of its bytes. */
static uint64_t fingerprint(const char *path)
{
	uint64_t h = 1469598103934665603ULL;
	uint8_t buf[65536];
	ssize_t n, i;
	int fd = open(path, O_RDONLY | O_CLOEXEC);

	if (fd < 0)
		return 0;
	while ((n = read(fd, buf, sizeof(buf))) > 0)
		for (i = 0; i < n; i++)
			h = (h ^ buf[i]) * 1099511628211ULL;
	close(fd);
	return h;
}

static void check_bitmap(const char *path)
{
	struct prl_dirty_bitmap bm;
	struct prl_err err = { "" };
	int r;

	r = prl_bitmap_load(path, &bm, &err);
	if (r < 0) {
		must_msg(&err);
		return;
	}
	if (!r)
		return;
	if (!bm.granularity || bm.nr_bits > PRL_MAX_BITMAP_BITS ||
	    bm.nr_bits != (bm.nb_sectors + bm.granularity - 1) / bm.granularity ||
	    prl_bitmap_weight(&bm) > bm.nr_bits) {
		fprintf(stderr, "bitmap of %s: %lu bits\n", path, (unsigned long)bm.nr_bits);
		abort();
	}
	prl_bitmap_free(&bm);
}

/* The chain below @guid opens image by image, as activate and info do. */
static void open_chain(const struct prl_desc *d, const char *guid)
{
	const struct prl_desc_image **chain;
	struct prl_image *img;
	struct prl_err err = { "" };
	size_t i, n;

	if (prl_desc_chain(d, guid, &chain, &n, &err)) {
		must_msg(&err);
		return;
	}
	for (i = 0; i < n; i++) {
		if (chain[i]->type != PRL_IMAGE_COMPRESSED)
			continue;
		err.msg[0] = '\0';
		if (prl_image_open(chain[i]->path, 0, &img, &err)) {
			must_msg(&err);
			continue;
		}
		prl_image_close(img, &err);
	}
	free(chain);
}

static void check_images(const struct prl_desc *d)
{
	struct prl_check_opts o = { .repair = false };
	struct prl_check_report rep;
	struct prl_err err;
	size_t i;
	int r;

	for (i = 0; i < d->nr_images; i++) {
		if (d->images[i].type != PRL_IMAGE_COMPRESSED ||
		    access(d->images[i].path, F_OK))
			continue;
		memset(&rep, 0, sizeof(rep));
		err.msg[0] = '\0';
		r = prl_check(d->images[i].path, &o, &rep, &err);
		if (r < 0)
			must_msg(&err);
		else if (r != 0 && r != 2 && r != 3)
			abort();
		prl_check_report_free(&rep);
		check_bitmap(d->images[i].path);
	}
}

static void rm_folder(const char *dir)
{
	struct dirent *e;
	char *p;
	DIR *dp = opendir(dir);

	if (!dp)
		abort();
	while ((e = readdir(dp))) {
		if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
			continue;
		p = prl_xasprintf("%s/%s", dir, e->d_name);
		if (unlink(p))
			abort();	/* only files are made here */
		free(p);
	}
	closedir(dp);
	if (rmdir(dir))
		abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct section s[MAX_SECTIONS], none = { NULL, 0 };
	uint64_t sum[MAX_IMAGES + 1] = { 0 };
	const char *tmp = getenv("TMPDIR");
	char dir[PATH_MAX], xml[PATH_MAX + 32];
	struct prl_desc *d;
	struct prl_err err = { "" };
	size_t n, i, k, nimg;
	const char *slash;
	int fd;

	n = split(data, size, s);
	snprintf(dir, sizeof(dir), "%s/fuzz-folder.XXXXXX", tmp && *tmp ? tmp : "/tmp");
	if (!mkdtemp(dir))
		abort();
	snprintf(xml, sizeof(xml), "%s/%s", dir, PRL_DESC_NAME);
	fd = open(xml, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (fd < 0 || (s[0].len && prl_pwrite_full(fd, s[0].p, s[0].len, 0)))
		abort();
	close(fd);

	if (prl_desc_load(xml, 0, &d, &err)) {
		must_msg(&err);
		rm_folder(dir);
		return 0;
	}
	/* Image k of the input to the descriptor's k-th Image in this folder. */
	nimg = d->nr_images < MAX_IMAGES ? d->nr_images : MAX_IMAGES;
	for (i = 0, k = 1; i < nimg && k < n; i++, k += 2) {
		slash = strrchr(d->images[i].path, '/');
		if (!slash || (size_t)(slash - d->images[i].path) != strlen(d->dir) ||
		    strncmp(d->images[i].path, d->dir, strlen(d->dir)))
			continue;
		write_image(d->images[i].path, s[k], k + 1 < n ? s[k + 1] : none);
	}
	sum[0] = fingerprint(xml);
	for (i = 0; i < nimg; i++)
		sum[i + 1] = fingerprint(d->images[i].path);

	for (i = 0; i < d->nr_images; i++)
		open_chain(d, d->images[i].guid);
	check_images(d);

	/* Read-only: the folder is as it was written. */
	if (fingerprint(xml) != sum[0])
		abort();
	for (i = 0; i < nimg; i++)
		if (fingerprint(d->images[i].path) != sum[i + 1]) {
			fprintf(stderr, "%s changed\n", d->images[i].path);
			abort();
		}
	prl_desc_free(d);
	rm_folder(dir);
	return 0;
}
