// SPDX-License-Identifier: GPL-2.0
/*
 * Unit tests of userspace/image.c and ops.c on real files in a temporary
 * folder: create, cluster I/O, the in_use protocol, refusal of corrupted
 * images, and grow / merge / fill / convert keeping every cluster.  Every
 * image is judged against a raw reference file by our own reads and, where
 * qemu-img is installed, by QEMU (check, compare); images made by QEMU
 * and by ploop must open and read correctly.
 */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <cmocka.h>

#include "image.h"

#define SECTOR	512
#define ARRAY_SIZE(a)	(sizeof(a) / sizeof((a)[0]))
/* ploop 1.15 crashes with a short environment (notes/qemu-7.2-quirks.md). */
#define PLOOP	"env PAD=$(head -c 8192 /dev/zero | tr '\\0' x) ploop"

static char dir[64];
static bool have_qemu, have_ploop;

/* A path in the test folder (a few live at once). */
static const char *tp(const char *fmt, ...)
{
	static char bufs[8][PATH_MAX];
	static int next;
	char name[256];
	va_list ap;
	char *b = bufs[next++ % 8];

	va_start(ap, fmt);
	vsnprintf(name, sizeof(name), fmt, ap);
	va_end(ap);
	snprintf(b, PATH_MAX, "%s/%s", dir, name);
	return b;
}

static int sh(const char *fmt, ...)
{
	char cmd[4096];
	va_list ap;
	int st;

	va_start(ap, fmt);
	vsnprintf(cmd, sizeof(cmd), fmt, ap);
	va_end(ap);
	st = system(cmd);
	return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static int group_setup(void **state)
{
	const char *tmp = getenv("TMPDIR");

	(void)state;
	/*
	 * tmpfs if there is one: the many fsyncs cost nothing there, and
	 * the crash test judges logical states, not the disk cache.
	 */
	if (!tmp || !*tmp)
		tmp = access("/dev/shm", W_OK) ? "/tmp" : "/dev/shm";
	snprintf(dir, sizeof(dir), "%.40s/test_image.XXXXXX", tmp);
	if (!mkdtemp(dir))
		return -1;
	have_qemu = !sh("command -v qemu-img >/dev/null 2>&1 && command -v qemu-io >/dev/null 2>&1");
	have_ploop = !sh("command -v ploop >/dev/null 2>&1");
	if (!have_qemu)
		fprintf(stderr, "# qemu-img/qemu-io not found: QEMU checks skipped\n");
	return 0;
}

static int group_teardown(void **state)
{
	(void)state;
	return sh("rm -rf '%s'", dir);
}

/* ---- reference content ---------------------------------------------------- */

/* Bytes of cluster @c for write generation @seed: unique per word. */
static void pattern(void *buf, size_t len, uint64_t c, uint64_t seed)
{
	uint64_t *w = buf;
	size_t i;

	for (i = 0; i < len / 8; i++)
		w[i] = (seed * 0x9E3779B97F4A7C15ULL) ^ (c << 24) ^ i;
}

/* A raw reference of the virtual disk, kept beside each image. */
struct ref {
	int fd;
	char path[PATH_MAX];
	uint64_t sectors;
};

static void ref_open(struct ref *r, const char *path, uint64_t sectors)
{
	snprintf(r->path, sizeof(r->path), "%s", path);
	r->fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);
	assert_true(r->fd >= 0);
	assert_int_equal(ftruncate(r->fd, (off_t)(sectors * SECTOR)), 0);
	r->sectors = sectors;
}

static void ref_resize(struct ref *r, uint64_t sectors)
{
	assert_int_equal(ftruncate(r->fd, (off_t)(sectors * SECTOR)), 0);
	r->sectors = sectors;
}

static void ref_close(struct ref *r)
{
	close(r->fd);
}

/* The part of cluster @c inside the virtual size, in bytes. */
static size_t visible(uint64_t sectors, uint32_t cs, uint64_t c)
{
	uint64_t left = sectors - c * cs;

	return (size_t)(left < cs ? left : cs) * SECTOR;
}

static void ref_put(struct ref *r, uint32_t cs, uint64_t c, const void *buf)
{
	assert_int_equal(prl_pwrite_full(r->fd, buf, visible(r->sectors, cs, c),
					 c * cs * SECTOR), 0);
}

/* Write cluster @c of @img with generation @seed, and into @r. */
static void put(struct prl_image *img, struct ref *r, uint64_t c,
		uint64_t seed)
{
	size_t len = (size_t)img->geom.cluster_sectors * SECTOR;
	void *buf = malloc(len);
	struct prl_err err;

	pattern(buf, len, c, seed);
	assert_int_equal(prl_image_write_cluster(img, c, buf, &err), 0);
	if (r)
		ref_put(r, img->geom.cluster_sectors, c, buf);
	free(buf);
}

/* How much of QEMU's judgement verify_n() asks for. */
enum { Q_NONE, Q_CHECK, Q_ALL };

/*
 * The first @limit clusters of @path, alone, read as @r, and QEMU agrees
 * on all of it: check exits 0 (or 3, leaks only, if @maybe_leaks) and
 * (Q_ALL) compare finds the same content.
 */
static void verify_n(const char *path, const struct ref *r, bool maybe_leaks,
		     uint64_t limit, int qemu)
{
	struct prl_image *img;
	struct prl_err err;
	size_t len;
	void *a, *b;
	bool present;
	uint64_t c;
	int rc;

	rc = prl_image_open(path, 0, &img, &err);
	if (rc)
		fail_msg("%s", err.msg);
	assert_int_equal(img->geom.nb_sectors, r->sectors);
	len = (size_t)img->geom.cluster_sectors * SECTOR;
	a = malloc(len);
	b = malloc(len);
	for (c = 0; c < prl_image_clusters(img) && c < limit; c++) {
		size_t v = visible(r->sectors, img->geom.cluster_sectors, c);

		assert_int_equal(prl_image_read_cluster(img, c, a, &present,
							&err), 0);
		assert_int_equal(prl_pread_full(r->fd, b, v,
						c * img->geom.cluster_sectors *
						SECTOR), 0);
		if (memcmp(a, b, v))
			fail_msg("%s: cluster %llu differs", path,
				 (unsigned long long)c);
	}
	free(a);
	free(b);
	assert_int_equal(prl_image_close(img, &err), 0);

	if (!have_qemu || qemu == Q_NONE)
		return;
	rc = sh("qemu-img check -f parallels '%s' >/dev/null 2>&1", path);
	if (!(rc == 0 || (maybe_leaks && rc == 3)))
		fail_msg("qemu-img check %s: exit %d", path, rc);
	if (qemu == Q_CHECK)
		return;
	rc = sh("qemu-img compare -f parallels '%s' -F raw '%s' >/dev/null 2>&1",
		path, r->path);
	if (rc)
		fail_msg("qemu-img compare %s %s: exit %d", path, r->path, rc);
}

static void verify(const char *path, const struct ref *r, bool maybe_leaks)
{
	verify_n(path, r, maybe_leaks, UINT64_MAX, Q_ALL);
}

static struct prl_image *open_ok(const char *path, unsigned int flags)
{
	struct prl_image *img;
	struct prl_err err;

	if (prl_image_open(path, flags, &img, &err))
		fail_msg("open %s: %s", path, err.msg);
	return img;
}

static void close_ok(struct prl_image *img)
{
	struct prl_err err;

	if (prl_image_close(img, &err))
		fail_msg("close: %s", err.msg);
}

static void create_ok(const char *path, enum prl_format_version fmt,
		      uint32_t cs, uint64_t size)
{
	struct prl_create_opts o = { .size = size, .cluster_sectors = cs,
				     .fmt = fmt };
	struct prl_err err;

	if (prl_image_create(path, &o, &err))
		fail_msg("create %s: %s", path, err.msg);
}

static void read_hdr(const char *path, struct prl_header *h)
{
	int fd = open(path, O_RDONLY);

	assert_true(fd >= 0);
	assert_int_equal(prl_pread_full(fd, h, sizeof(*h), 0), 0);
	close(fd);
}

static void write_at(const char *path, uint64_t off, const void *p, size_t n)
{
	int fd = open(path, O_WRONLY);

	assert_true(fd >= 0);
	assert_int_equal(prl_pwrite_full(fd, p, n, off), 0);
	close(fd);
}

static uint64_t file_size(const char *path)
{
	struct stat st;

	assert_int_equal(stat(path, &st), 0);
	return (uint64_t)st.st_size;
}

/* ---- create ---------------------------------------------------------------- */

/* Our header matches QEMU's and ploop's field by field. */
static void test_create_like_oracles(void **state)
{
	struct prl_header ours, theirs;
	struct prl_err err;
	struct prl_create_opts o = { .size = 0 };

	(void)state;
	create_ok(tp("c-v2.hds"), 0, 0, 131072);
	read_hdr(tp("c-v2.hds"), &ours);
	assert_memory_equal(ours.magic, PRL_MAGIC_V2, 16);
	assert_int_equal(le32toh(ours.heads), 16);
	assert_int_equal(le32toh(ours.cylinders), 256);
	assert_int_equal(le32toh(ours.tracks), 2048);
	assert_int_equal(le32toh(ours.bat_entries), 64);
	assert_int_equal(le64toh(ours.nb_sectors), 131072);
	assert_int_equal(le32toh(ours.in_use), PRL_IN_USE_CLOSED_OLD);
	assert_int_equal(le32toh(ours.data_off), 2048);
	assert_int_equal(le32toh(ours.flags), PRL_FLAG_EMPTY);
	assert_int_equal(le64toh(ours.ext_off), 0);
	assert_int_equal(file_size(tp("c-v2.hds")), 1 << 20);
	if (have_qemu) {
		/* QEMU writes in_use 0 and no flags; the rest is the same. */
		assert_int_equal(sh("qemu-img create -q -f parallels '%s' 64M",
				    tp("q-64m.hds")), 0);
		read_hdr(tp("q-64m.hds"), &theirs);
		assert_memory_equal(&ours, &theirs, 44);
		assert_int_equal(ours.data_off, theirs.data_off);
		assert_int_equal(file_size(tp("q-64m.hds")),
				 file_size(tp("c-v2.hds")));
	}

	create_ok(tp("c-v1.hds"), PRL_V1, 0, 131072);
	read_hdr(tp("c-v1.hds"), &ours);
	assert_memory_equal(ours.magic, PRL_MAGIC_V1, 16);
	assert_int_equal(le32toh(ours.in_use), 0);
	if (have_ploop) {
		assert_int_equal(sh("mkdir '%s' && cd '%s' && " PLOOP " init -s 64M -t none -f ploop1 root.hds >/dev/null 2>&1",
				    tp("ploop-c"), tp("ploop-c")), 0);
		read_hdr(tp("ploop-c/root.hds"), &theirs);
		/* ploop v1: the whole header is the same, in_use 0 too. */
		assert_memory_equal(&ours, &theirs, sizeof(ours));
	} else {
		fprintf(stderr, "# ploop not found: ploop header check skipped\n");
	}

	/* Refusals: O_EXCL, zero size, v1 over 32 bits, cluster too big. */
	o.size = 100;
	assert_int_equal(prl_image_create(tp("c-v2.hds"), &o, &err), -EEXIST);
	assert_non_null(strstr(err.msg, "c-v2.hds"));
	o.size = 0;
	assert_int_equal(prl_image_create(tp("c-x.hds"), &o, &err), -EINVAL);
	o.size = 1ULL << 32;
	o.fmt = PRL_V1;
	assert_int_equal(prl_image_create(tp("c-x.hds"), &o, &err), -EFBIG);
	o.fmt = PRL_V2;
	o.cluster_sectors = PRL_MAX_CLUSTER_SECTORS * 2;
	assert_int_equal(prl_image_create(tp("c-x.hds"), &o, &err), -EINVAL);
	assert_int_equal(access(tp("c-x.hds"), F_OK), -1);
}

/* ---- write / read over formats, cluster sizes and sizes ---------------------- */

struct geo {
	enum prl_format_version fmt;
	uint32_t cs;
	uint64_t size;
};

static const struct geo geos[] = {
	{ PRL_V2, 1, 40 },
	{ PRL_V2, 3, 100 },		/* non power of two, not a multiple */
	{ PRL_V2, 8, 8 * 300 },		/* BAT over one sector */
	{ PRL_V2, 63, 63 * 20 + 5 },
	{ PRL_V2, 2048, 2048 * 5 },
	{ PRL_V1, 1, 33 },
	{ PRL_V1, 3, 3 * 50 },
	{ PRL_V1, 8, 8 * 200 + 7 },
	{ PRL_V1, 256, 256 * 9 },
	{ PRL_V1, 2048, 2048 * 3 + 1000 },
};

static void test_write_read(void **state)
{
	size_t i;

	(void)state;
	for (i = 0; i < ARRAY_SIZE(geos); i++) {
		const struct geo *g = &geos[i];
		const char *path = tp("wr-%zu.hds", i);
		struct prl_image *img;
		struct prl_header h;
		struct ref r;
		uint64_t n, c;

		create_ok(path, g->fmt, g->cs, g->size);
		ref_open(&r, tp("wr-%zu.raw", i), g->size);
		verify_n(path, &r, true, UINT64_MAX,
			 i % 3 ? Q_NONE : Q_CHECK);

		img = open_ok(path, PRL_OPEN_RW);
		assert_true(img->geom.flags & PRL_FLAG_EMPTY);
		n = prl_image_clusters(img);
		assert_int_equal(n, (g->size + g->cs - 1) / g->cs);
		/* Last, first, then a stride: allocation order != BAT order. */
		put(img, &r, n - 1, 1);
		put(img, &r, 0, 1);
		for (c = 1; c < n - 1; c += 3)
			put(img, &r, c, 2);
		put(img, &r, 0, 3);		/* overwrite in place */
		assert_false(img->geom.flags & PRL_FLAG_EMPTY);
		close_ok(img);

		read_hdr(path, &h);
		assert_int_equal(le32toh(h.flags) & PRL_FLAG_EMPTY, 0);
		assert_int_equal(le32toh(h.in_use), PRL_IN_USE_CLOSED_OLD);
		verify(path, &r, false);

		/* Reopen and write again: the new cluster goes to the end. */
		img = open_ok(path, PRL_OPEN_RW);
		c = img->end;
		put(img, &r, n > 2 ? 2 : 0, 4);
		if (n > 2)
			assert_int_equal(prl_image_lookup(img, 2), c);
		close_ok(img);
		verify(path, &r, false);
		ref_close(&r);
	}
}

static void test_bounds(void **state)
{
	struct prl_image *img;
	struct prl_err err;
	char buf[8 * SECTOR];
	bool present;

	(void)state;
	create_ok(tp("b.hds"), PRL_V2, 8, 8 * 10 - 3);
	img = open_ok(tp("b.hds"), 0);
	assert_int_equal(prl_image_write_cluster(img, 0, buf, &err), -EBADF);
	assert_int_equal(prl_image_read_cluster(img, 10, buf, &present, &err),
			 -EINVAL);
	assert_int_equal(prl_image_read_cluster(img, 9, buf, &present, &err), 0);
	assert_false(present);
	assert_int_equal(prl_image_lookup(img, 1ULL << 40), 0);
	close_ok(img);
	img = open_ok(tp("b.hds"), PRL_OPEN_RW);
	memset(buf, 7, sizeof(buf));
	assert_int_equal(prl_image_write_cluster(img, 10, buf, &err), -EINVAL);
	assert_int_equal(prl_image_write_cluster(img, 9, buf, &err), 0);
	assert_int_equal(prl_image_read_cluster(img, 9, buf, &present, &err), 0);
	assert_true(present);
	assert_int_equal(img->allocated, 1);
	assert_int_equal(img->end, 16);
	assert_int_equal(prl_image_count_mapped(img), 1);
	assert_int_equal(prl_image_max_end(img), 16 + 9 * 8);
	close_ok(img);
}

/* ---- in_use ----------------------------------------------------------------- */

static uint32_t in_use_of(const char *path)
{
	struct prl_header h;

	read_hdr(path, &h);
	return le32toh(h.in_use);
}

static void test_in_use(void **state)
{
	const char *path = tp("iu.hds");
	struct prl_image *img, *img2;
	struct prl_err err;
	pid_t pid;
	int st;

	(void)state;
	create_ok(path, PRL_V2, 8, 800);
	img = open_ok(path, PRL_OPEN_RW);
	assert_int_equal(in_use_of(path), PRL_IN_USE_OPEN);	/* on disk now */
	/* A second writer is refused; a reader is not. */
	assert_int_equal(prl_image_open(path, PRL_OPEN_RW | PRL_OPEN_IGNORE_IN_USE,
					&img2, &err), -EBUSY);
	assert_null(img2);
	img2 = open_ok(path, 0);
	close_ok(img2);
	close_ok(img);
	assert_int_equal(in_use_of(path), PRL_IN_USE_CLOSED_OLD);

	/* A writer that dies without closing leaves in_use set. */
	pid = fork();
	assert_true(pid >= 0);
	if (!pid) {
		if (prl_image_open(path, PRL_OPEN_RW, &img, &err))
			_exit(1);
		_exit(0);
	}
	assert_int_equal(waitpid(pid, &st, 0), pid);
	assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
	assert_int_equal(in_use_of(path), PRL_IN_USE_OPEN);

	assert_int_equal(prl_image_open(path, PRL_OPEN_RW, &img, &err), -EBUSY);
	assert_null(img);
	assert_non_null(strstr(err.msg, "is in use or was not closed cleanly"));
	assert_non_null(strstr(err.msg, "prldisk check --repair"));
	assert_non_null(strstr(err.msg, path));
	assert_int_equal(in_use_of(path), PRL_IN_USE_OPEN);	/* untouched */
	img = open_ok(path, 0);			/* read-only is fine */
	close_ok(img);
	img = open_ok(path, PRL_OPEN_RW | PRL_OPEN_IGNORE_IN_USE);
	close_ok(img);
	assert_int_equal(in_use_of(path), PRL_IN_USE_CLOSED_OLD);

	/* v1 closed with 0 (ploop) stays 0; QEMU's 0 on v2 stays 0. */
	create_ok(tp("iu1.hds"), PRL_V1, 8, 800);
	img = open_ok(tp("iu1.hds"), PRL_OPEN_RW);
	assert_int_equal(in_use_of(tp("iu1.hds")), PRL_IN_USE_OPEN);
	close_ok(img);
	assert_int_equal(in_use_of(tp("iu1.hds")), 0);
}

/*
 * A creator stamp in in_use (Parallels Desktop: "pd17"): read-only opens
 * leave it, a writer closes the image as QEMU 7.2 does (0: closed by
 * software that does not keep the format extension).
 */
static void set32(const char *path, uint64_t off, uint32_t v);

static void test_in_use_stamp(void **state)
{
	const char *path = tp("st.hds");
	struct prl_image *img;

	(void)state;
	create_ok(path, PRL_V1, 2048, 64 * 2048);
	write_at(path, 44, "pd17", 4);
	img = open_ok(path, 0);
	assert_int_equal(img->geom.in_use, 0x37316470);
	close_ok(img);
	assert_int_equal(in_use_of(path), 0x37316470);	/* untouched */
	img = open_ok(path, PRL_OPEN_RW);
	assert_int_equal(in_use_of(path), PRL_IN_USE_OPEN);
	close_ok(img);
	assert_int_equal(in_use_of(path), PRL_IN_USE_CLOSED_OLD);

	/* Any value the spec does not list, in a v2 image too. */
	create_ok(tp("st2.hds"), PRL_V2, 2048, 64 * 2048);
	set32(tp("st2.hds"), 44, 0x12345678);
	img = open_ok(tp("st2.hds"), 0);
	close_ok(img);
	assert_int_equal(in_use_of(tp("st2.hds")), 0x12345678);
	img = open_ok(tp("st2.hds"), PRL_OPEN_RW);
	close_ok(img);
	assert_int_equal(in_use_of(tp("st2.hds")), PRL_IN_USE_CLOSED_OLD);
}

/* ---- corrupted images ---------------------------------------------------------- */

/* A v2 image of 8-sector clusters with clusters 0 and 1 written. */
static const char *corrupt_base(const char *name)
{
	const char *path = tp("%s", name);
	struct prl_image *img;

	create_ok(path, PRL_V2, 8, 8 * 16);
	img = open_ok(path, PRL_OPEN_RW);
	put(img, NULL, 0, 1);
	put(img, NULL, 1, 1);
	close_ok(img);
	return path;
}

static void expect_refused(const char *path, unsigned int flags,
			   const char *why)
{
	struct prl_image *img;
	struct prl_err err;

	assert_true(prl_image_open(path, flags, &img, &err) < 0);
	assert_null(img);
	if (!strstr(err.msg, why) || !strstr(err.msg, path))
		fail_msg("expected \"%s\" for %s, got \"%s\"", why, path,
			 err.msg);
}

static void set32(const char *path, uint64_t off, uint32_t v)
{
	__le32 x = htole32(v);

	write_at(path, off, &x, 4);
}

static void test_corrupt(void **state)
{
	const char *p;
	struct prl_header h;

	(void)state;
	p = corrupt_base("k-magic.hds");
	write_at(p, 0, "NotAParallelsImg", 16);
	expect_refused(p, 0, "Bad magic");

	p = corrupt_base("k-past.hds");
	set32(p, PRL_HEADER_SIZE + 4, 1000);	/* entry 1 -> cluster 1000 */
	expect_refused(p, 0, "BAT entry points past the end of the image");
	expect_refused(p, 0, "BAT entry 1 ");
	/* A refused writable open writes nothing (in_use stays closed). */
	assert_int_equal(sh("cp '%s' '%s.orig'", p, p), 0);
	expect_refused(p, PRL_OPEN_RW, "BAT entry points past the end");
	assert_int_equal(sh("cmp -s '%s' '%s.orig'", p, p), 0);

	p = corrupt_base("k-dup.hds");
	read_hdr(p, &h);
	assert_int_equal(le32toh(h.data_off), 8);
	set32(p, PRL_HEADER_SIZE + 4, 1);	/* entries 0 and 1 share */
	expect_refused(p, 0, "Two BAT entries point at the same cluster");
	expect_refused(p, 0, "entries 0 and 1");

	/*
	 * v2 entries count clusters, so only 0 (free) is below data_off;
	 * read as v1 (sectors) the entries 1 and 2 point into the BAT.
	 */
	p = corrupt_base("k-meta.hds");
	write_at(p, 0, PRL_MAGIC_V1, 16);
	expect_refused(p, 0, "BAT entry points into the header or BAT");

	p = corrupt_base("k-unal.hds");
	write_at(p, 0, PRL_MAGIC_V1, 16);
	set32(p, PRL_HEADER_SIZE + 0, 8 + 3);	/* off the grid */
	set32(p, PRL_HEADER_SIZE + 4, 0);
	expect_refused(p, 0, "BAT entry is not on a cluster boundary");

	p = corrupt_base("k-trunc.hds");
	assert_int_equal(truncate(p, 8 * SECTOR + 100), 0);
	expect_refused(p, 0, "past the end of the image");
	assert_int_equal(truncate(p, 40), 0);
	expect_refused(p, 0, "too small");

	p = corrupt_base("k-size.hds");
	set32(p, 32, 3);			/* 3 entries for 16 clusters */
	expect_refused(p, 0, "Virtual size exceeds what the BAT covers");

	p = corrupt_base("k-doff.hds");
	set32(p, 48, 5);
	expect_refused(p, 0, "data_off is not a multiple of the cluster size");

	/* An extension: fine read-only, refused read-write. */
	p = corrupt_base("k-ext.hds");
	set32(p, 56, 3 * 8);			/* the free cluster after 0, 1 */
	assert_int_equal(truncate(p, 4 * 8 * SECTOR), 0);
	close_ok(open_ok(p, 0));
	expect_refused(p, PRL_OPEN_RW, "format extension");
	set32(p, PRL_HEADER_SIZE + 4, 3);	/* entry 1 -> the extension */
	expect_refused(p, 0, "BAT entry points at the format extension cluster");

	expect_refused("/dev/null", 0, "not a regular file or block device");
	expect_refused(tp("missing.hds"), 0, "cannot open");
}

/*
 * Random damage to header and BAT: every open either refuses with a
 * message or yields an image whose every cluster reads back, and a
 * writable open that was accepted leaves an image that opens again.
 */
static void test_mutations(void **state)
{
	const char *base = corrupt_base("mu-base.hds");
	char work[PATH_MAX], buf[8 * SECTOR], orig[64 * SECTOR], cur[64 * SECTOR];
	unsigned int seed = 12345, accepted = 0;
	size_t size = file_size(base);
	struct prl_image *img;
	struct prl_err err;
	bool present;
	uint64_t c;
	int i, k, fd;

	(void)state;
	snprintf(work, sizeof(work), "%s", tp("mu-work.hds"));
	assert_true(size <= sizeof(orig));
	fd = open(base, O_RDONLY);
	assert_true(fd >= 0);
	assert_int_equal(prl_pread_full(fd, orig, size, 0), 0);
	close(fd);
	for (i = 0; i < 300; i++) {
		memcpy(cur, orig, size);
		for (k = 0; k < 1 + i % 4; k++) {
			/* mostly the header and first BAT entries */
			unsigned int at = rand_r(&seed) % (i % 2 ? 80 : 1024);

			cur[at] = (char)rand_r(&seed);
		}
		fd = open(work, O_WRONLY | O_CREAT | O_TRUNC, 0600);
		assert_true(fd >= 0);
		assert_int_equal(prl_pwrite_full(fd, cur, size, 0), 0);
		close(fd);
		if (prl_image_open(work, i % 3 ? 0 : PRL_OPEN_RW, &img, &err)) {
			assert_true(err.msg[0] != 0);
			assert_null(img);
			continue;
		}
		accepted++;
		for (c = 0; c < img->geom.bat_entries && c < 64; c++)
			if (img->geom.cluster_sectors <= 8)
				assert_int_equal(prl_image_read_cluster(img, c,
						 buf, &present, &err), 0);
		close_ok(img);
		close_ok(open_ok(work, 0));
	}
	assert_true(accepted > 0);
}

/* ---- images made by QEMU and ploop --------------------------------------------- */

static void qemu_case(uint32_t cluster_bytes, const char *size, uint64_t sectors)
{
	const char *path = tp("qemu-%u.hds", cluster_bytes);
	uint32_t cs = (cluster_bytes + SECTOR - 1) / SECTOR;
	struct prl_image *img;
	struct ref r;
	char *buf;
	uint64_t c;

	assert_int_equal(sh("qemu-img create -q -f parallels -o cluster_size=%u '%s' %s",
			    cluster_bytes, path, size), 0);
	assert_int_equal(sh("qemu-io -c 'write -P 0xab 0 64k' -c 'write -P 0xcd 200k 10k' '%s' >/dev/null",
			    path), 0);
	ref_open(&r, tp("qemu-%u.raw", cluster_bytes), sectors);
	buf = malloc(64 << 10);
	memset(buf, 0xab, 64 << 10);
	assert_int_equal(prl_pwrite_full(r.fd, buf, 64 << 10, 0), 0);
	memset(buf, 0xcd, 10 << 10);
	assert_int_equal(prl_pwrite_full(r.fd, buf, 10 << 10, 200 << 10), 0);
	free(buf);

	img = open_ok(path, 0);
	assert_int_equal(img->geom.fmt, PRL_V2);
	assert_int_equal(img->geom.cluster_sectors, cs);
	assert_int_equal(img->geom.nb_sectors, sectors);
	assert_int_equal(img->geom.in_use, 0);	/* QEMU closes with 0 */
	close_ok(img);
	verify(path, &r, false);

	/* We write into it; QEMU still agrees. */
	img = open_ok(path, PRL_OPEN_RW);
	c = prl_image_clusters(img) - 1;
	put(img, &r, c, 9);
	put(img, &r, 0, 9);
	close_ok(img);
	verify(path, &r, false);
	ref_close(&r);
}

static void test_qemu_images(void **state)
{
	(void)state;
	if (!have_qemu)
		skip();
	qemu_case(4096, "1M", 2048);
	qemu_case(1536, "1001k", 2002);		/* 3 sectors, odd size */
	qemu_case(65536, "3M", 6144);
	qemu_case(1048576, "5M", 10240);
}

static void test_ploop_image(void **state)
{
	const char *path = tp("ploop-o/root.hds");
	struct prl_image *img;
	struct prl_err err;
	struct ref r;

	(void)state;
	if (!have_ploop)
		skip();
	assert_int_equal(sh("mkdir '%s' && cd '%s' && " PLOOP " init -s 64M -t none -f ploop1 root.hds >/dev/null 2>&1",
			    tp("ploop-o"), tp("ploop-o")), 0);
	img = open_ok(path, 0);
	assert_int_equal(img->geom.fmt, PRL_V1);
	assert_int_equal(img->geom.cluster_sectors, 2048);
	assert_int_equal(img->geom.nb_sectors, 131072);
	assert_true(img->geom.flags & PRL_FLAG_EMPTY);
	assert_int_equal(img->allocated, 0);
	close_ok(img);

	ref_open(&r, tp("ploop-o.raw"), 131072);
	img = open_ok(path, PRL_OPEN_RW);
	put(img, &r, 5, 1);
	put(img, &r, 63, 1);
	close_ok(img);
	verify(path, &r, false);
	img = open_ok(path, 0);
	assert_false(img->geom.flags & PRL_FLAG_EMPTY);
	assert_int_equal(img->geom.in_use, 0);
	close_ok(img);
	ref_close(&r);

	/* QEMU writes leave the Empty flag set; our first write clears it. */
	if (!have_qemu)
		goto ploop_check;
	assert_int_equal(sh("mkdir '%s' && cd '%s' && " PLOOP " init -s 8M -t none -f ploop1 q.hds >/dev/null 2>&1 && qemu-io -c 'write -P 0x11 0 1M' q.hds >/dev/null",
			    tp("ploop-q"), tp("ploop-q")), 0);
	img = open_ok(tp("ploop-q/q.hds"), PRL_OPEN_RW);
	assert_true(img->geom.flags & PRL_FLAG_EMPTY);
	assert_int_equal(img->allocated, 1);
	put(img, NULL, 0, 2);			/* in place: no allocation */
	assert_int_equal(img->allocated, 1);
	close_ok(img);
	img = open_ok(tp("ploop-q/q.hds"), 0);
	assert_false(img->geom.flags & PRL_FLAG_EMPTY);
	close_ok(img);

ploop_check:
	/* ploop's own check of our writes (it rejects sparse files). */
	assert_int_equal(sh("cd '%s' && cp --sparse=never root.hds full.hds && " PLOOP " check -f full.hds >/dev/null 2>&1 && cmp -s full.hds root.hds",
			    tp("ploop-o")), 0);

	/*
	 * Grow a ploop image (32 KiB clusters, data_off 64) past what its
	 * first BAT cluster holds: clusters move, data_off becomes 192.
	 */
	assert_int_equal(sh("mkdir '%s' && cd '%s' && " PLOOP " init -s 1M -b 64 -t none -f ploop1 g.hds >/dev/null 2>&1",
			    tp("ploop-g"), tp("ploop-g")), 0);
	ref_open(&r, tp("ploop-g.raw"), 2048);
	img = open_ok(tp("ploop-g/g.hds"), PRL_OPEN_RW);
	assert_int_equal(img->geom.data_off, 64);
	put(img, &r, 0, 3);
	put(img, &r, 1, 3);
	put(img, &r, 31, 3);
	assert_int_equal(prl_image_grow(img, 1 << 20, &err), 0);
	assert_int_equal(img->geom.data_off, 192);
	put(img, &r, 16383, 3);
	close_ok(img);
	ref_resize(&r, 1 << 20);
	verify_n(tp("ploop-g/g.hds"), &r, false, 64, Q_ALL);
	ref_close(&r);
	assert_int_equal(sh("cd '%s' && cp --sparse=never g.hds full.hds && " PLOOP " check -f full.hds >/dev/null 2>&1 && cmp -s full.hds g.hds",
			    tp("ploop-g")), 0);
}

/* ---- grow ------------------------------------------------------------------------ */

static void grow_case(enum prl_format_version fmt, uint32_t cs, uint64_t size,
		      uint64_t new_size, bool moves, const char *name)
{
	const char *path = tp("%s.hds", name);
	struct prl_image *img;
	struct prl_err err;
	struct ref r;
	uint64_t n, c, doff;

	create_ok(path, fmt, cs, size);
	ref_open(&r, tp("%s.raw", name), size);
	img = open_ok(path, PRL_OPEN_RW);
	n = prl_image_clusters(img);
	for (c = 0; c < n; c += 2)
		put(img, &r, c, 5);
	doff = img->geom.data_off;
	if (prl_image_grow(img, new_size, &err))
		fail_msg("grow %s: %s", name, err.msg);
	assert_int_equal(img->geom.nb_sectors, new_size);
	/* data_off moves iff the BAT needs the room, by whole clusters. */
	if (moves)
		assert_true(img->geom.data_off > doff);
	else
		assert_int_equal(img->geom.data_off, doff);
	assert_int_equal((img->geom.data_off - doff) % cs, 0);
	assert_int_equal(img->geom.data_off % (fmt == PRL_V2 ? cs : 1), 0);
	close_ok(img);
	ref_resize(&r, new_size);
	verify(path, &r, false);

	/* The new space is usable, and the old data stays. */
	img = open_ok(path, PRL_OPEN_RW);
	put(img, &r, prl_image_clusters(img) - 1, 6);
	put(img, &r, 1, 6);
	assert_int_equal(prl_image_grow(img, new_size - 1, &err), -EINVAL);
	close_ok(img);
	verify(path, &r, false);
	ref_close(&r);
}

static void test_grow(void **state)
{
	(void)state;
	/* Inside the BAT: only the size changes. */
	grow_case(PRL_V2, 8, 8 * 10 - 3, 8 * 10, false, "g-in");
	/* BAT grows into the padding before data_off. */
	grow_case(PRL_V2, 2048, 2048 * 4, 2048 * 100, false, "g-pad");
	/* BAT grows over data clusters: they move to the end. */
	grow_case(PRL_V2, 8, 8 * 100, 8 * 5000 + 3, true, "g-move2");
	grow_case(PRL_V1, 8, 8 * 100, 8 * 5000, true, "g-move1");
	grow_case(PRL_V2, 3, 3 * 30 + 1, 3 * 2000, true, "g-odd2");
	grow_case(PRL_V1, 3, 3 * 30, 3 * 2000 + 2, true, "g-odd1");
	grow_case(PRL_V1, 1, 100, 10000, true, "g-cs1");
}

static void test_grow_refused(void **state)
{
	struct prl_image *img;
	struct prl_err err;

	(void)state;
	create_ok(tp("gr.hds"), PRL_V1, 2048, 2048);
	img = open_ok(tp("gr.hds"), PRL_OPEN_RW);
	assert_int_equal(prl_image_grow(img, 1ULL << 32, &err), -EFBIG);
	assert_non_null(strstr(err.msg, "v1"));
	assert_int_equal(prl_image_grow(img, 2048, &err), 0);
	close_ok(img);
	img = open_ok(tp("gr.hds"), 0);
	assert_int_equal(prl_image_grow(img, 4096, &err), -EBADF);
	close_ok(img);
}

/* ---- merge and fill ----------------------------------------------------------------- */

/*
 * base (v2): clusters 0, 2, 4...; top (v1): 1, 4, 7... (some shared).
 * @both gets top over base, @rbase base alone.
 */
static void make_pair(const char *base, const char *top, struct ref *both,
		      struct ref *rbase, uint32_t cs, uint64_t size)
{
	size_t len = (size_t)cs * SECTOR;
	struct prl_image *b, *t;
	struct prl_err err;
	void *buf = malloc(len);
	uint64_t n, c;

	create_ok(base, PRL_V2, cs, size);
	create_ok(top, PRL_V1, cs, size);
	b = open_ok(base, PRL_OPEN_RW);
	t = open_ok(top, PRL_OPEN_RW);
	n = prl_image_clusters(b);
	for (c = 0; c < n; c += 2) {
		pattern(buf, len, c, 10);
		assert_int_equal(prl_image_write_cluster(b, c, buf, &err), 0);
		ref_put(both, cs, c, buf);
		ref_put(rbase, cs, c, buf);
	}
	for (c = 1; c < n; c += 3)
		put(t, both, c, 11);
	close_ok(b);
	close_ok(t);
	free(buf);
}

static void test_merge(void **state)
{
	struct prl_image *from, *into;
	struct prl_err err;
	struct ref both, rbase;
	int raw;

	(void)state;
	ref_open(&both, tp("m.raw"), 8 * 50 - 5);
	ref_open(&rbase, tp("m-base.raw"), 8 * 50 - 5);
	make_pair(tp("m-base.hds"), tp("m-top.hds"), &both, &rbase, 8,
		  8 * 50 - 5);
	verify(tp("m-base.hds"), &rbase, false);
	from = open_ok(tp("m-top.hds"), 0);
	into = open_ok(tp("m-base.hds"), PRL_OPEN_RW);
	{
		/* The same file opened twice is refused. */
		struct prl_image *again = open_ok(tp("m-base.hds"), 0);

		assert_int_equal(prl_image_merge(again, into, -1, NULL, NULL,
						 &err), -EINVAL);
		assert_non_null(strstr(err.msg, "are the same image"));
		close_ok(again);
	}
	assert_int_equal(prl_image_merge(from, into, -1, NULL, NULL, &err), 0);
	close_ok(into);
	verify(tp("m-base.hds"), &both, false);

	/* Into a Plain (raw) root holding base: it reads as top over it. */
	ref_close(&rbase);
	raw = open(tp("m-base.raw"), O_RDWR);
	assert_true(raw >= 0);
	assert_int_equal(prl_image_merge(from, NULL, raw, NULL, NULL, &err), 0);
	close(raw);
	assert_int_equal(sh("cmp '%s' '%s'", tp("m-base.raw"), tp("m.raw")), 0);

	/* Cluster sizes must match; a smaller target must be grown. */
	create_ok(tp("m-cs.hds"), PRL_V2, 16, 8 * 50 - 5);
	into = open_ok(tp("m-cs.hds"), PRL_OPEN_RW);
	assert_int_equal(prl_image_merge(from, into, -1, NULL, NULL, &err),
			 -EINVAL);
	assert_non_null(strstr(err.msg, "cluster sizes"));
	close_ok(into);
	create_ok(tp("m-small.hds"), PRL_V2, 8, 8 * 10);
	into = open_ok(tp("m-small.hds"), PRL_OPEN_RW);
	assert_int_equal(prl_image_merge(from, into, -1, NULL, NULL, &err),
			 -EINVAL);
	assert_non_null(strstr(err.msg, "grow it first"));
	close_ok(into);
	close_ok(from);
	ref_close(&both);
}

static void count_progress(void *ctx, uint64_t done, uint64_t total)
{
	uint64_t *n = ctx;

	assert_true(done <= total);
	(*n)++;
}

static void test_merge_raw_fresh(void **state)
{
	struct prl_image *top;
	struct prl_err err;
	struct ref r;
	uint64_t calls = 0, c;
	int raw;

	(void)state;
	/* A raw root with a pattern; an image over it; merge down. */
	ref_open(&r, tp("mr.raw"), 2048 * 3 + 100);
	create_ok(tp("mr-top.hds"), PRL_V2, 256, 2048 * 3 + 100);
	top = open_ok(tp("mr-top.hds"), PRL_OPEN_RW);
	for (c = 0; c < prl_image_clusters(top); c += 5)
		put(top, &r, c, 12);
	put(top, &r, prl_image_clusters(top) - 1, 12);
	close_ok(top);
	/* An empty file: merge extends it to the virtual size. */
	raw = open(tp("mr-plain.raw"), O_RDWR | O_CREAT, 0600);
	assert_true(raw >= 0);
	top = open_ok(tp("mr-top.hds"), 0);
	assert_int_equal(prl_image_merge(top, NULL, raw, count_progress, &calls,
					 &err), 0);
	assert_true(calls > 0);
	close_ok(top);
	close(raw);
	assert_int_equal(file_size(tp("mr-plain.raw")), (2048 * 3 + 100) * SECTOR);
	assert_int_equal(sh("cmp '%s' '%s'", tp("mr-plain.raw"), tp("mr.raw")), 0);
	ref_close(&r);
}

static void test_fill(void **state)
{
	struct prl_image *img, *below;
	struct prl_err err;
	struct ref both;
	uint64_t calls = 0, c, n, bsize = 8 * 30 - 3;
	void *buf = malloc(8 * SECTOR);

	(void)state;
	/* below is smaller (and ends mid-cluster): past it reads zeros. */
	ref_open(&both, tp("f.raw"), 8 * 40);
	create_ok(tp("f-below.hds"), PRL_V1, 8, bsize);
	create_ok(tp("f-top.hds"), PRL_V2, 8, 8 * 40);
	below = open_ok(tp("f-below.hds"), PRL_OPEN_RW);
	img = open_ok(tp("f-top.hds"), PRL_OPEN_RW);
	n = prl_image_clusters(below);
	for (c = 0; c < n; c++) {
		if (c % 2 && c != n - 1)
			continue;
		pattern(buf, 8 * SECTOR, c, 20);
		assert_int_equal(prl_image_write_cluster(below, c, buf, &err), 0);
		/* The stack shows below's visible part only. */
		if (c == n - 1)
			memset((char *)buf + (bsize - c * 8) * SECTOR, 0,
			       (8 - (bsize - c * 8)) * SECTOR);
		assert_int_equal(prl_pwrite_full(both.fd, buf, 8 * SECTOR,
						 c * 8 * SECTOR), 0);
	}
	for (c = 0; c < 40; c += 3)
		put(img, &both, c, 21);
	close_ok(below);
	below = open_ok(tp("f-below.hds"), 0);
	assert_int_equal(prl_image_fill(img, below, count_progress, &calls,
					&err), 0);
	assert_true(calls > 0);
	assert_int_equal(prl_image_fill(img, img, NULL, NULL, &err), -EINVAL);
	close_ok(below);
	close_ok(img);
	verify(tp("f-top.hds"), &both, false);
	ref_close(&both);
	free(buf);
}

/* ---- convert -------------------------------------------------------------------- */

static void test_convert(void **state)
{
	struct prl_image *img;
	struct prl_err err;
	struct ref r;
	uint64_t c, n;
	size_t i;

	(void)state;
	for (i = 0; i < ARRAY_SIZE(geos); i++) {
		const struct geo *g = &geos[i];
		const char *path = tp("cv-%zu.hds", i);

		create_ok(path, g->fmt, g->cs, g->size);
		ref_open(&r, tp("cv-%zu.raw", i), g->size);
		img = open_ok(path, PRL_OPEN_RW);
		n = prl_image_clusters(img);
		for (c = n; c-- > 0;)
			if (c % 3 != 1)
				put(img, &r, c, 30);
		if (prl_image_convert(img, g->fmt == PRL_V1 ? PRL_V2 : PRL_V1,
				      &err))
			fail_msg("convert %s: %s", path, err.msg);
		assert_int_equal(img->geom.fmt, g->fmt == PRL_V1 ? PRL_V2 : PRL_V1);
		put(img, &r, 1, 31);		/* still writable */
		close_ok(img);
		verify(path, &r, false);

		img = open_ok(path, PRL_OPEN_RW);
		assert_int_equal(prl_image_convert(img, g->fmt, &err), 0);
		assert_int_equal(img->geom.fmt, g->fmt);
		close_ok(img);
		verify(path, &r, false);
		ref_close(&r);
	}
}

/* A v1 image whose clusters sit off the v2 grid (data_off 0 = 1 sector). */
static void test_convert_offgrid(void **state)
{
	const char *path = tp("og.hds");
	unsigned char sec[SECTOR] = { 0 };
	struct prl_header *h = (void *)sec;
	__le32 *bat = (__le32 *)(sec + PRL_HEADER_SIZE);
	struct prl_image *img;
	struct prl_err err;
	struct ref r;
	char buf[3 * SECTOR];
	int fd, k;

	(void)state;
	memcpy(h->magic, PRL_MAGIC_V1, 16);
	h->version = htole32(2);
	h->tracks = htole32(3);
	h->bat_entries = htole32(20);
	h->nb_sectors = htole64(59);
	ref_open(&r, tp("og.raw"), 59);
	fd = open(path, O_RDWR | O_CREAT | O_EXCL, 0600);
	assert_true(fd >= 0);
	/* clusters 19, 0, 7 at sectors 1, 4, 7 */
	bat[19] = htole32(1);
	bat[0] = htole32(4);
	bat[7] = htole32(7);
	assert_int_equal(prl_pwrite_full(fd, sec, SECTOR, 0), 0);
	for (k = 0; k < 3; k++) {
		unsigned int c = k == 0 ? 19 : k == 1 ? 0 : 7;

		pattern(buf, sizeof(buf), c, 40);
		assert_int_equal(prl_pwrite_full(fd, buf, sizeof(buf),
						 (1 + 3 * k) * SECTOR), 0);
		ref_put(&r, 3, c, buf);
	}
	close(fd);
	verify(path, &r, false);
	assert_int_equal(sh("cp '%s' '%s'", path, tp("og-grow.hds")), 0);

	img = open_ok(path, PRL_OPEN_RW);
	assert_int_equal(img->geom.data_off, 1);
	assert_int_equal(prl_image_convert(img, PRL_V2, &err), 0);
	assert_int_equal(img->geom.data_off % 3, 0);
	close_ok(img);
	verify(path, &r, false);

	/* Grow keeps its grid: data_off 1 + k * 3, cluster at 1 moves. */
	img = open_ok(tp("og-grow.hds"), PRL_OPEN_RW);
	assert_int_equal(prl_image_grow(img, 3 * 200, &err), 0);
	assert_int_equal(img->geom.data_off, 4);
	assert_int_not_equal(prl_image_lookup(img, 19), 1);
	close_ok(img);
	ref_resize(&r, 3 * 200);
	verify(tp("og-grow.hds"), &r, false);
	ref_close(&r);
}

static void test_convert_refused(void **state)
{
	struct prl_image *img;
	struct prl_err err;
	struct prl_header before, after;

	(void)state;
	/* 2^33 sectors with 1 GiB clusters: v1 cannot hold it. */
	create_ok(tp("cr.hds"), PRL_V2, PRL_MAX_CLUSTER_SECTORS, 1ULL << 33);
	read_hdr(tp("cr.hds"), &before);
	img = open_ok(tp("cr.hds"), PRL_OPEN_RW);
	assert_int_equal(prl_image_convert(img, PRL_V1, &err), -EFBIG);
	assert_int_equal(prl_image_convert(img, PRL_V2, &err), 0);
	close_ok(img);
	read_hdr(tp("cr.hds"), &after);
	assert_memory_equal(&before, &after, sizeof(before));
}

/* ---- block devices ------------------------------------------------------------ */

static char loopdev[64];

static int detach_loop(void **state)
{
	(void)state;
	if (loopdev[0])
		sh("losetup -d '%s'", loopdev);
	loopdev[0] = 0;
	return 0;
}

/* On a loop device the image works the same but cannot grow. */
static void test_blockdev(void **state)
{
	const char *path = tp("bd.hds");
	struct prl_image *img;
	struct prl_err err;
	struct ref r;
	char buf[8 * SECTOR];
	char cmd[PATH_MAX + 64];
	FILE *f;
	int k;

	(void)state;
	create_ok(path, PRL_V2, 8, 8 * 100);
	assert_int_equal(truncate(path, (8 + 4 * 8) * SECTOR), 0);
	snprintf(cmd, sizeof(cmd), "losetup --find --show '%s' 2>/dev/null",
		 path);
	f = popen(cmd, "r");
	if (!f || !fgets(loopdev, sizeof(loopdev), f)) {
		if (f)
			pclose(f);
		loopdev[0] = 0;
		fprintf(stderr, "# no loop device: block device test skipped\n");
		skip();
	}
	pclose(f);
	loopdev[strcspn(loopdev, "\n")] = 0;

	/* Held by someone else (as dm would): no writable open. */
	k = open(loopdev, O_RDONLY | O_EXCL);
	assert_true(k >= 0);
	expect_refused(loopdev, PRL_OPEN_RW, "the device is in use");
	close_ok(open_ok(loopdev, 0));
	close(k);

	ref_open(&r, tp("bd.raw"), 8 * 100);
	img = open_ok(loopdev, PRL_OPEN_RW);
	assert_true(img->blkdev);
	for (k = 0; k < 4; k++)
		put(img, &r, 10 * k, 60);
	memset(buf, 1, sizeof(buf));
	assert_int_equal(prl_image_write_cluster(img, 99, buf, &err), -ENOSPC);
	assert_int_equal(prl_image_convert(img, PRL_V1, &err), -EOPNOTSUPP);
	close_ok(img);
	detach_loop(NULL);
	verify(path, &r, false);
	ref_close(&r);
}

/* ---- crashes: the process killed at every write of an operation ---------- */

/*
 * Child side: "--op grow PATH SECTORS", "--op convert PATH 1|2" or
 * "--op write PATH SEED" (writes every third cluster with SEED).
 */
static int child_op(int argc, char **argv)
{
	struct prl_image *img;
	struct prl_err err;
	unsigned long long v;
	int r;

	if (argc < 5)
		return 2;
	v = strtoull(argv[4], NULL, 0);
	if (prl_image_open(argv[3], PRL_OPEN_RW, &img, &err))
		return 3;
	if (!strcmp(argv[2], "grow")) {
		r = prl_image_grow(img, v, &err);
	} else if (!strcmp(argv[2], "convert")) {
		r = prl_image_convert(img, (enum prl_format_version)v, &err);
	} else {
		size_t len = (size_t)img->geom.cluster_sectors * SECTOR;
		void *buf = malloc(len);
		uint64_t c;

		for (c = 0, r = 0; c < prl_image_clusters(img) && !r; c += 3) {
			pattern(buf, len, c, v);
			r = prl_image_write_cluster(img, c, buf, &err);
		}
		free(buf);
	}
	if (r) {
		fprintf(stderr, "%s\n", err.msg);
		return 4;
	}
	return prl_image_close(img, &err) ? 5 : 0;
}

/* Clear in_use as a repair would, after our reads. */
static void reopen_clean(const char *path)
{
	close_ok(open_ok(path, PRL_OPEN_RW | PRL_OPEN_IGNORE_IN_USE));
}

/* Each cluster of @path reads as in @a or as in @b (same size). */
static void verify_either(const char *path, const struct ref *a,
			  const struct ref *b)
{
	struct prl_image *img = open_ok(path, 0);
	uint32_t cs = img->geom.cluster_sectors;
	size_t len = (size_t)cs * SECTOR;
	void *x = malloc(len), *y = malloc(len), *z = malloc(len);
	bool present;
	struct prl_err err;
	uint64_t c;

	for (c = 0; c < prl_image_clusters(img); c++) {
		size_t v = visible(a->sectors, cs, c);

		assert_int_equal(prl_image_read_cluster(img, c, x, &present,
							&err), 0);
		assert_int_equal(prl_pread_full(a->fd, y, v, c * len), 0);
		assert_int_equal(prl_pread_full(b->fd, z, v, c * len), 0);
		if (memcmp(x, y, v) && memcmp(x, z, v))
			fail_msg("%s: cluster %llu is neither old nor new",
				 path, (unsigned long long)c);
	}
	free(x);
	free(y);
	free(z);
	close_ok(img);
}

/*
 * Run "--op OP WORK ARG" on a copy of @base killed at the n-th call of
 * @sys, for n = 1, 2, ... until it completes; judge every state.
 */
static void crash_loop(const char *base, const char *sys, const char *op,
		       const char *arg, const struct ref *before,
		       const struct ref *after)
{
	char work[PATH_MAX], self[PATH_MAX];
	ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
	struct prl_image *img;
	bool grown;
	int k, rc = -1;

	assert_true(n > 0);
	self[n] = 0;
	snprintf(work, sizeof(work), "%s", tp("crash-work.hds"));
	for (k = 1; k < 400 && rc; k++) {
		assert_int_equal(sh("cp '%s' '%s'", base, work), 0);
		rc = sh("ASAN_OPTIONS=detect_leaks=0 strace -f -o /dev/null -e trace=%s -e inject=%s:signal=KILL:when=%d '%s' --op %s '%s' %s 2>/dev/null",
			sys, sys, k, self, op, work, arg);
		/* Killed (strace reports 128 + 9) or done; nothing else. */
		if (rc != 0 && rc != 137)
			fail_msg("%s at %s #%d: exit %d", op, sys, k, rc);
		img = open_ok(work, 0);
		if (img->geom.nb_sectors == after->sectors && !rc)
			assert_int_equal(img->geom.in_use, PRL_IN_USE_CLOSED_OLD);
		close_ok(img);
		if (before->sectors == after->sectors) {
			verify_either(work, before, after);
			reopen_clean(work);
			if (!rc)
				verify(work, after, true);
			else if (have_qemu)
				verify_n(work, before, true, 0, Q_CHECK);
		} else {
			img = open_ok(work, 0);
			grown = img->geom.nb_sectors == after->sectors;
			close_ok(img);
			reopen_clean(work);
			verify_n(work, grown ? after : before, true, UINT64_MAX,
				 rc ? Q_CHECK : Q_ALL);
		}
	}
	assert_int_equal(rc, 0);
	if (k <= 2)	/* it must have been killed at least once */
		fail_msg("%s never called %s", op, sys);
	fprintf(stderr, "# %s %s: killed at each of %d %s calls, all states good\n",
		op, arg, k - 2, sys);
}

static void test_crash(void **state)
{
	struct prl_image *img;
	struct ref before, after, b2;
	char base[PATH_MAX];
	uint64_t c;

	(void)state;
	snprintf(base, sizeof(base), "%s", tp("cr-base.hds"));
	if (sh("strace -o /dev/null true >/dev/null 2>&1")) {
		fprintf(stderr, "# strace missing or not allowed to trace: crash test skipped\n");
		skip();
	}
	/* v2, 4 KiB clusters, 100 clusters + 5 sectors, half allocated. */
	create_ok(base, PRL_V2, 8, 8 * 100 + 5);
	ref_open(&before, tp("cr-before.raw"), 8 * 100 + 5);
	ref_open(&after, tp("cr-after.raw"), 8 * 3000);
	img = open_ok(base, PRL_OPEN_RW);
	for (c = 0; c < prl_image_clusters(img); c += 2)
		put(img, &before, c, 50);
	close_ok(img);
	assert_int_equal(sh("cp '%s' '%s'", before.path, after.path), 0);
	ref_resize(&after, 8 * 3000);
	crash_loop(base, "pwrite64", "grow", "24000", &before, &after);
	crash_loop(base, "fsync", "grow", "24000", &before, &after);

	/* An empty v1 image: the file must first grow to the new data_off. */
	{
		struct ref e1, e2;
		char empty[PATH_MAX];

		snprintf(empty, sizeof(empty), "%s", tp("cr-empty.hds"));
		create_ok(empty, PRL_V1, 8, 8 * 100);
		ref_open(&e1, tp("cr-e1.raw"), 8 * 100);
		ref_open(&e2, tp("cr-e2.raw"), 8 * 3000);
		crash_loop(empty, "ftruncate", "grow", "24000", &e1, &e2);
		crash_loop(empty, "pwrite64", "grow", "24000", &e1, &e2);
		ref_close(&e1);
		ref_close(&e2);
	}

	/* A smaller image for the rest: one run per cluster written. */
	ref_close(&before);
	snprintf(base, sizeof(base), "%s", tp("cr-small.hds"));
	create_ok(base, PRL_V2, 8, 8 * 20 + 5);
	ref_open(&before, tp("cr-small.raw"), 8 * 20 + 5);
	img = open_ok(base, PRL_OPEN_RW);
	for (c = 0; c < prl_image_clusters(img); c += 2)
		put(img, &before, c, 50);
	close_ok(img);

	/* convert: killed anywhere, the old or the new image is there. */
	crash_loop(base, "pwrite64", "convert", "1", &before, &before);
	crash_loop(base, "renameat", "convert", "1", &before, &before);

	/* writes: every cluster is old or new, never garbage. */
	ref_open(&b2, tp("cr-new.raw"), 8 * 20 + 5);
	assert_int_equal(sh("cp '%s' '%s'", before.path, b2.path), 0);
	for (c = 0; c < 21; c += 3) {
		size_t len = 8 * SECTOR;
		void *buf = malloc(len);

		pattern(buf, len, c, 51);
		ref_put(&b2, 8, c, buf);
		free(buf);
	}
	crash_loop(base, "pwrite64", "write", "51", &before, &b2);
	crash_loop(base, "fsync", "write", "51", &before, &b2);
	ref_close(&b2);
	ref_close(&before);
	ref_close(&after);
}

int main(int argc, char **argv)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_create_like_oracles),
		cmocka_unit_test(test_write_read),
		cmocka_unit_test(test_bounds),
		cmocka_unit_test(test_in_use),
		cmocka_unit_test(test_in_use_stamp),
		cmocka_unit_test(test_corrupt),
		cmocka_unit_test(test_mutations),
		cmocka_unit_test(test_qemu_images),
		cmocka_unit_test(test_ploop_image),
		cmocka_unit_test(test_grow),
		cmocka_unit_test(test_grow_refused),
		cmocka_unit_test(test_merge),
		cmocka_unit_test(test_merge_raw_fresh),
		cmocka_unit_test(test_fill),
		cmocka_unit_test(test_convert),
		cmocka_unit_test(test_convert_offgrid),
		cmocka_unit_test(test_convert_refused),
		cmocka_unit_test_teardown(test_blockdev, detach_loop),
		cmocka_unit_test(test_crash),
	};

	if (argc > 1 && !strcmp(argv[1], "--op"))
		return child_op(argc, argv);

	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
