// SPDX-License-Identifier: GPL-2.0
/*
 * Unit tests of userspace/check.c: "prldisk check [--repair]".
 *
 * Images are built by hand here (header, BAT and cluster bytes written
 * directly, nothing from image.c), and by QEMU and ploop where they are
 * installed.  Each corruption of the catalogue is checked for the exact
 * problem kinds and exit code, then repaired and checked again; the
 * repaired file is judged by "qemu-img check", and the guest-visible data
 * of the clusters that were fine ("qemu-img convert -O raw") must not have
 * changed.  What qemu-img check 7.2 says before the repair is asserted too,
 * which documents what it misses.
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
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>
#include <cmocka.h>

#include <openssl/evp.h>

#include "check.h"
#include "prl_format.h"

#define KIND(k)		(1U << (k))
#define NOQ		(-1)	/* no qemu-img verdict asserted */

static char dir[256];
static bool have_qemu, have_ploop;

/* ---- file helpers -------------------------------------------------- */

static char *path_of(const char *name)
{
	static char p[8][512];
	static int n;

	n = (n + 1) % 8;
	snprintf(p[n], sizeof(p[n]), "%s/%s", dir, name);
	return p[n];
}

static void pwr(const char *path, const void *buf, size_t len, uint64_t off)
{
	int fd = open(path, O_WRONLY | O_CREAT, 0644);

	assert_true(fd >= 0);
	assert_int_equal(pwrite(fd, buf, len, (off_t)off), (ssize_t)len);
	assert_int_equal(close(fd), 0);
}

static void poke32(const char *path, uint64_t off, uint32_t v)
{
	v = htole32(v);
	pwr(path, &v, 4, off);
}

static void poke64(const char *path, uint64_t off, uint64_t v)
{
	v = htole64(v);
	pwr(path, &v, 8, off);
}

static uint32_t peek32(const char *path, uint64_t off)
{
	uint32_t v = 0;
	int fd = open(path, O_RDONLY);

	assert_true(fd >= 0);
	assert_int_equal(pread(fd, &v, 4, (off_t)off), 4);
	close(fd);
	return le32toh(v);
}

static void set_size(const char *path, uint64_t bytes)
{
	assert_int_equal(truncate(path, (off_t)bytes), 0);
}

static uint64_t size_of(const char *path)
{
	struct stat st;

	assert_int_equal(stat(path, &st), 0);
	return (uint64_t)st.st_size;
}

static void fill(const char *path, uint64_t off, size_t len, int byte)
{
	char *b = malloc(len);

	assert_non_null(b);
	memset(b, byte, len);
	pwr(path, b, len, off);
	free(b);
}

static int sh(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static int sh(const char *fmt, ...)
{
	char cmd[2048];
	va_list ap;
	int st;

	va_start(ap, fmt);
	vsnprintf(cmd, sizeof(cmd), fmt, ap);
	va_end(ap);
	st = system(cmd);
	if (st < 0 || !WIFEXITED(st))
		return -1;
	return WEXITSTATUS(st);
}

static int qemu_check(const char *img)
{
	return sh("qemu-img check -f parallels '%s' >/dev/null 2>&1", img);
}

/* Guest view of @img as raw bytes (malloc'ed, *len), or NULL if unreadable. */
static unsigned char *qemu_raw(const char *img, size_t *len)
{
	char *raw = path_of("view.raw");
	unsigned char *b;
	uint64_t n;
	int fd;

	unlink(raw);
	if (sh("qemu-img convert -f parallels -O raw '%s' '%s' >/dev/null 2>&1",
	       img, raw))
		return NULL;
	n = size_of(raw);
	b = malloc(n + 1);
	assert_non_null(b);
	fd = open(raw, O_RDONLY);
	assert_true(fd >= 0);
	assert_int_equal(pread(fd, b, n, 0), (ssize_t)n);
	close(fd);
	*len = n;
	return b;
}

/* ---- hand-made images ---------------------------------------------- */

/*
 * "base": WithouFreSpacExt, 64 KiB clusters (128 sectors), 16 entries
 * (1 MiB disk), data_off one cluster; virtual clusters 0..5 in file
 * clusters 1..6, each filled with 0xa0 + its virtual index.
 * "v1": the same as WithoutFreeSpace (BAT in sectors).
 * "small": WithouFreSpacExt with 1 KiB clusters and a 1024-entry BAT that
 * spans 9 sectors (data_off 10): vc 0..3 in the first 4 data clusters.
 */
#define CS		128U
#define CSB		(CS * 512U)
#define NBAT		16U
#define NMAP		6U

struct geo {
	const char *magic;
	uint32_t cs, nbat, doff, nmap;
	bool v1;
};

static const struct geo G_BASE = { PRL_MAGIC_V2, CS, NBAT, CS, NMAP, false };
static const struct geo G_V1 = { PRL_MAGIC_V1, CS, NBAT, CS, NMAP, true };
static const struct geo G_SMALL = { PRL_MAGIC_V2, 2, 1024, 10, 4, false };

static uint64_t cl_sector(const struct geo *g, uint32_t vc)
{
	return g->doff + (uint64_t)vc * g->cs;
}

static uint32_t entry_of(const struct geo *g, uint64_t sector)
{
	return g->v1 ? (uint32_t)sector : (uint32_t)(sector / g->cs);
}

static void mk(const char *path, const struct geo *g)
{
	struct prl_header h;
	uint32_t i;

	unlink(path);
	memset(&h, 0, sizeof(h));
	memcpy(h.magic, g->magic, PRL_MAGIC_LEN);
	h.version = htole32(2);
	h.heads = htole32(16);
	h.cylinders = htole32(4);
	h.tracks = htole32(g->cs);
	h.bat_entries = htole32(g->nbat);
	h.nb_sectors = htole64((uint64_t)g->nbat * g->cs);
	h.in_use = htole32(g->v1 ? 0 : PRL_IN_USE_CLOSED);
	h.data_off = htole32(g->doff);
	pwr(path, &h, sizeof(h), 0);
	set_size(path, (uint64_t)g->doff * 512);
	for (i = 0; i < g->nmap; i++) {
		poke32(path, 64 + 4 * i, entry_of(g, cl_sector(g, i)));
		fill(path, cl_sector(g, i) * 512, g->cs * 512, 0xa0 + i);
	}
}

static void bat_set(const char *path, const struct geo *g, uint32_t vc,
		    uint64_t sector)
{
	poke32(path, 64 + 4 * vc, entry_of(g, sector));
}

/* Format extension with one dirty bitmap, at file clusters 7 and 8. */
#define EXT_SECT	(CS * 7)
#define BM_SECT		(CS * 8)

static void ext_md5(const char *path, uint64_t ext_sect)
{
	unsigned char *b = malloc(CSB), md[EVP_MAX_MD_SIZE];
	unsigned int n = 0;
	int fd = open(path, O_RDWR);

	assert_non_null(b);
	assert_true(fd >= 0);
	assert_int_equal(pread(fd, b, CSB, (off_t)ext_sect * 512), CSB);
	assert_int_equal(EVP_Digest(b + 24, CSB - 24, md, &n, EVP_md5(), NULL), 1);
	assert_int_equal(n, 16);
	assert_int_equal(pwrite(fd, md, 16, (off_t)ext_sect * 512 + 8), 16);
	close(fd);
	free(b);
}

static void mk_ext(const char *path)
{
	unsigned char c[CSB];
	struct prl_ext_header *eh = (void *)c;
	struct prl_ext_feature *fh = (void *)(c + 24);
	struct prl_ext_dirty_bitmap *bm = (void *)(c + 48);
	uint64_t l1 = htole64(BM_SECT);
	unsigned char bits[2] = { 0x05, 0x00 };

	mk(path, &G_BASE);
	memset(c, 0, sizeof(c));
	eh->magic = htole64(PRL_EXT_MAGIC);
	fh->magic = htole64(PRL_EXT_DIRTY_BITMAP);
	fh->flags = 0;	/* QEMU 7.2 refuses any feature flag */
	fh->data_size = htole32(sizeof(*bm) + 8);
	bm->size = htole64(NBAT * CS);
	memcpy(bm->id, "\x12\x34\x56\x78\x9a\xbc\x4d\xef\x80\x01\x02\x03\x04\x05\x06\x07", 16);
	bm->granularity = htole32(CS);	/* 64 KiB: 16 bits, 1 L1 entry */
	bm->l1_size = htole32(1);
	memcpy(c + 48 + sizeof(*bm), &l1, 8);
	/* the end-of-features marker is the zeros after it */
	pwr(path, c, CSB, (uint64_t)EXT_SECT * 512);
	memset(c, 0, sizeof(c));
	memcpy(c, bits, sizeof(bits));
	pwr(path, c, CSB, (uint64_t)BM_SECT * 512);
	ext_md5(path, EXT_SECT);
	poke64(path, 56, EXT_SECT);
}

/* ---- running the check --------------------------------------------- */

static uint64_t prog_done, prog_total;
static unsigned int prog_calls;

static void prog(void *ctx, uint64_t done, uint64_t total)
{
	(void)ctx;
	assert_true(done <= total);
	/* monotonic within a pass; a repair's re-check starts again */
	assert_true(done >= prog_done || !prog_calls || done == 0);
	prog_done = done;
	prog_total = total;
	prog_calls++;
}

static unsigned int kinds(const struct prl_check_report *rep)
{
	unsigned int k, m = 0;

	for (k = 0; k < PRL_P_NR_KINDS; k++)
		if (rep->nr_by_kind[k])
			m |= KIND(k);
	return m;
}

static void dump(const struct prl_check_report *rep)
{
	size_t i;

	for (i = 0; i < rep->nr; i++)
		print_message("#   %s/%s entry %lld sector %llu: %s%s%s\n",
			      prl_problem_name(rep->problems[i].kind),
			      prl_severity_name(rep->problems[i].sev),
			      (long long)rep->problems[i].entry,
			      (unsigned long long)rep->problems[i].sector,
			      rep->problems[i].msg,
			      rep->problems[i].repaired ? " -> " : "",
			      rep->problems[i].fix);
}

static int run(const char *img, bool repair, struct prl_check_report *rep)
{
	struct prl_check_opts o = { .repair = repair, .progress = prog };
	struct prl_err err = { { 0 } };
	int r;

	prog_calls = 0;
	prog_done = 0;
	r = prl_check(img, &o, rep, &err);
	if (r < 0)
		print_message("# prl_check: %s\n", err.msg);
	return r;
}

/* Check @img: exit code @rc and exactly the kinds @k. */
static void expect(const char *img, int rc, unsigned int k)
{
	struct prl_check_report rep;
	int r = run(img, false, &rep);

	if (r != rc || kinds(&rep) != k) {
		print_message("# %s: rc %d (want %d), kinds 0x%x (want 0x%x)\n",
			      img, r, rc, kinds(&rep), k);
		dump(&rep);
	}
	assert_int_equal(r, rc);
	assert_int_equal(kinds(&rep), k);
	prl_check_report_free(&rep);
}

static bool find_msg(const struct prl_check_report *rep,
		     enum prl_problem_kind k, const char *text)
{
	size_t i;

	for (i = 0; i < rep->nr; i++)
		if (rep->problems[i].kind == k &&
		    strstr(rep->problems[i].msg, text))
			return true;
	return false;
}

/* What dm-parallels would say: the exact header and BAT checks it trusts. */
static void kernel_accepts(const char *img)
{
	uint64_t bytes = size_of(img);
	__u64 end = 0, *scratch;
	struct prl_header h;
	struct prl_bat_err be;
	const char *why = NULL;
	struct prl_geom g;
	__le32 *bat;
	int fd = open(img, O_RDONLY), r;

	assert_true(fd >= 0);
	assert_int_equal(pread(fd, &h, sizeof(h), 0), sizeof(h));
	r = prl_parse_header(&h, bytes / 512, &g, &why);
	if (r)
		print_message("# kernel refuses %s: %s\n", img, why);
	assert_int_equal(r, 0);
	bat = calloc(g.bat_entries + 1, 4);
	scratch = calloc(g.bat_entries + 2, sizeof(*scratch));
	assert_non_null(bat);
	assert_non_null(scratch);
	assert_int_equal(pread(fd, bat, g.bat_entries * 4, 64),
			 (ssize_t)g.bat_entries * 4);
	close(fd);
	r = prl_check_bat(&g, bat, bytes / 512, scratch, &end, &be, &why);
	if (r)
		print_message("# kernel refuses %s: %s (entry %u)\n", img, why,
			      be.entry);
	assert_int_equal(r, 0);
	free(bat);
	free(scratch);
}

/* ---- the catalogue ---------------------------------------------------- */

struct corruption {
	const char *name;
	const struct geo *geo;
	bool ext;			/* start from the image with an extension */
	void (*spoil)(const char *img, const struct geo *g);
	unsigned int kinds;		/* found before the repair */
	int rc;				/* exit code before */
	int rc_after;			/* after --repair */
	unsigned int kinds_after;
	int qemu_before, qemu_after;	/* qemu-img check, NOQ: not asserted */
	uint32_t keep;			/* virtual clusters whose data must stay */
	const char *msg;		/* text one problem message must contain */
	enum prl_problem_kind msg_kind;
};

#define ALL	0xffffU

static void sp_in_use(const char *p, const struct geo *g)
{
	(void)g;
	poke32(p, 44, PRL_IN_USE_OPEN);
}

static void sp_outside(const char *p, const struct geo *g)
{
	bat_set(p, g, 7, cl_sector(g, 40));
}

static void sp_meta_small(const char *p, const struct geo *g)
{
	bat_set(p, g, 5, 4);	/* sector 4: inside the 9-sector BAT */
}

static void sp_unaligned(const char *p, const struct geo *g)
{
	bat_set(p, g, 3, cl_sector(g, 3) + 5);
}

static void sp_dup(const char *p, const struct geo *g)
{
	bat_set(p, g, 4, cl_sector(g, 1));
}

static void sp_dup3(const char *p, const struct geo *g)
{
	bat_set(p, g, 4, cl_sector(g, 1));
	bat_set(p, g, 9, cl_sector(g, 1));
}

static void sp_orphan(const char *p, const struct geo *g)
{
	(void)g;
	poke32(p, 64 + 4 * 2, 0);
}

static void sp_orphans_tail(const char *p, const struct geo *g)
{
	(void)g;
	poke32(p, 64 + 4 * 1, 0);
	poke32(p, 64 + 4 * 2, 0);
	fill(p, size_of(p), 3 * CSB + 7, 0x77);
}

/* vc 5 unmapped: its cluster sits below the extension, which cannot move */
static void sp_orphan_ext(const char *p, const struct geo *g)
{
	(void)g;
	poke32(p, 64 + 4 * 5, 0);
}

static void sp_tail(const char *p, const struct geo *g)
{
	uint64_t sz = size_of(p);

	(void)g;
	fill(p, sz, 2 * CSB, 0x77);
}

static void sp_tail_partial(const char *p, const struct geo *g)
{
	(void)g;
	fill(p, size_of(p), 1000, 0x77);
}

static void sp_short(const char *p, const struct geo *g)
{
	(void)g;
	set_size(p, size_of(p) - CSB / 2 - 100);
}

static void sp_short_meta(const char *p, const struct geo *g)
{
	(void)g;
	set_size(p, 100);	/* 9 of the 16 entries left */
}

static void sp_doff_zero(const char *p, const struct geo *g)
{
	(void)g;
	poke32(p, 48, 0);
}

static void sp_doff_unaligned(const char *p, const struct geo *g)
{
	(void)g;
	poke32(p, 48, CS + 1);
}

static void sp_doff_in_bat(const char *p, const struct geo *g)
{
	(void)g;
	poke32(p, 48, 2);
}

static void sp_doff_past(const char *p, const struct geo *g)
{
	(void)g;
	poke32(p, 48, CS * 4096);
}

static void sp_doff_big(const char *p, const struct geo *g)
{
	(void)g;
	poke32(p, 48, CS * 2);	/* vc 0 is at cluster 1 */
}

static void sp_empty(const char *p, const struct geo *g)
{
	(void)g;
	poke32(p, 52, PRL_FLAG_EMPTY);
}

static void sp_ext_md5(const char *p, const struct geo *g)
{
	(void)g;
	fill(p, (uint64_t)EXT_SECT * 512 + 8, 1, 0x00);
	fill(p, (uint64_t)EXT_SECT * 512 + 9, 1, 0xff);
}

static void sp_ext_magic(const char *p, const struct geo *g)
{
	(void)g;
	poke64(p, (uint64_t)EXT_SECT * 512, 0x1122334455667788ULL);
}

static void sp_ext_overrun(const char *p, const struct geo *g)
{
	(void)g;
	poke32(p, (uint64_t)EXT_SECT * 512 + 24 + 16, CSB);
	ext_md5(p, EXT_SECT);
}

static void sp_ext_l1_past(const char *p, const struct geo *g)
{
	(void)g;
	poke64(p, (uint64_t)EXT_SECT * 512 + 48 + 32, CS * 100);
	ext_md5(p, EXT_SECT);
}

static void sp_ext_l1_meta(const char *p, const struct geo *g)
{
	(void)g;
	poke64(p, (uint64_t)EXT_SECT * 512 + 48 + 32, 2);
	ext_md5(p, EXT_SECT);
}

static void sp_ext_l1_data(const char *p, const struct geo *g)
{
	poke64(p, (uint64_t)EXT_SECT * 512 + 48 + 32, cl_sector(g, 2));
	ext_md5(p, EXT_SECT);
}

static void sp_bat_into_ext(const char *p, const struct geo *g)
{
	bat_set(p, g, 8, EXT_SECT);
}

static void sp_ext_past(const char *p, const struct geo *g)
{
	(void)g;
	poke64(p, 56, CS * 50);
}

static void sp_ext_stale(const char *p, const struct geo *g)
{
	(void)g;
	poke32(p, 44, PRL_IN_USE_OPEN);
}

static void sp_many(const char *p, const struct geo *g)
{
	sp_in_use(p, g);
	sp_empty(p, g);
	sp_dup(p, g);
	sp_outside(p, g);
	sp_tail(p, g);
}

static void sp_none(const char *p, const struct geo *g)
{
	(void)p;
	(void)g;
}

#define B	PRL_SEV_CORRUPT
static const struct corruption catalogue[] = {
	{ "clean v2", &G_BASE, false, sp_none, 0, 0, 0, 0, 0, 0, ALL, NULL, 0 },
	{ "clean v1", &G_V1, false, sp_none, 0, 0, 0, 0, 0, 0, ALL, NULL, 0 },
	{ "clean small clusters", &G_SMALL, false, sp_none, 0, 0, 0, 0, 0, 0, ALL, NULL, 0 },
	{ "in_use set", &G_BASE, false, sp_in_use, KIND(PRL_P_IN_USE), 2, 0, 0,
	  2, 0, ALL, NULL, 0 },
	{ "in_use set v1", &G_V1, false, sp_in_use, KIND(PRL_P_IN_USE), 2, 0, 0,
	  2, 0, ALL, NULL, 0 },
	{ "entry past the end", &G_BASE, false, sp_outside,
	  KIND(PRL_P_BAT_OUTSIDE), 2, 0, 0, 2, 0, 0x3f, "virtual cluster 7",
	  PRL_P_BAT_OUTSIDE },
	{ "entry into the BAT", &G_SMALL, false, sp_meta_small,
	  KIND(PRL_P_BAT_META), 2, 0, 0, 0, 0, 0x1f, "virtual cluster 5",
	  PRL_P_BAT_META },
	{ "entry off the grid (v1)", &G_V1, false, sp_unaligned,
	  KIND(PRL_P_BAT_UNALIGNED) | KIND(PRL_P_ORPHAN), 2, 3,
	  KIND(PRL_P_ORPHAN), 0, 0, 0x37, "virtual cluster 3",
	  PRL_P_BAT_UNALIGNED },
	{ "duplicate entries", &G_BASE, false, sp_dup,
	  KIND(PRL_P_BAT_DUP) | KIND(PRL_P_ORPHAN), 2, 3, KIND(PRL_P_ORPHAN),
	  0, 0, ALL, "virtual clusters 1 and 4", PRL_P_BAT_DUP },
	{ "three entries share a cluster", &G_BASE, false, sp_dup3,
	  KIND(PRL_P_BAT_DUP) | KIND(PRL_P_ORPHAN), 2, 3, KIND(PRL_P_ORPHAN),
	  0, 0, ALL, "virtual clusters 1 and 9", PRL_P_BAT_DUP },
	/* only leaks: compacted (vc 5 moves into the gap) */
	{ "orphan cluster", &G_BASE, false, sp_orphan, KIND(PRL_P_ORPHAN), 3, 0,
	  0, 0, 0, ALL, "1 cluster at sector 384", PRL_P_ORPHAN },
	{ "orphans and a tail", &G_BASE, false, sp_orphans_tail,
	  KIND(PRL_P_ORPHAN) | KIND(PRL_P_TAIL), 3, 0, 0, 3, 0, ALL,
	  "2 clusters at sector 256", PRL_P_ORPHAN },
	{ "orphan below the extension", &G_BASE, true, sp_orphan_ext,
	  KIND(PRL_P_ORPHAN), 3, 3, KIND(PRL_P_ORPHAN), 3, 3, ALL,
	  "1 cluster at sector 768", PRL_P_ORPHAN },
	{ "tail of whole clusters", &G_BASE, false, sp_tail, KIND(PRL_P_TAIL), 3,
	  0, 0, 3, 0, ALL, "2 unused clusters", PRL_P_TAIL },
	{ "partial trailing cluster", &G_BASE, false, sp_tail_partial,
	  KIND(PRL_P_TAIL), 3, 0, 0, 3, 0, ALL, "partial unused cluster",
	  PRL_P_TAIL },
	{ "file ends inside a cluster", &G_BASE, false, sp_short,
	  KIND(PRL_P_SHORT), 2, 0, 0, 0, 0, ALL, "virtual cluster 5",
	  PRL_P_SHORT },
	{ "file ends inside the BAT", &G_BASE, false, sp_short_meta,
	  KIND(PRL_P_SHORT) | KIND(PRL_P_BAT_OUTSIDE), 2, 0, 0, 2, 0, 0,
	  "inside the BAT", PRL_P_SHORT },
	{ "data_off zero (v2)", &G_BASE, false, sp_doff_zero,
	  KIND(PRL_P_DATA_OFF), 2, 0, 0, 0, 0, ALL, "is zero", PRL_P_DATA_OFF },
	{ "data_off unaligned (v2)", &G_BASE, false, sp_doff_unaligned,
	  KIND(PRL_P_DATA_OFF), 2, 0, 0, 0, 0, ALL, "not a multiple",
	  PRL_P_DATA_OFF },
	{ "data_off inside the BAT", &G_SMALL, false, sp_doff_in_bat,
	  KIND(PRL_P_DATA_OFF), 2, 0, 0, 0, 0, ALL, "inside the header",
	  PRL_P_DATA_OFF },
	{ "data_off past the file", &G_BASE, false, sp_doff_past,
	  KIND(PRL_P_DATA_OFF), 2, 0, 0, 0, 0, ALL, "past the end",
	  PRL_P_DATA_OFF },
	{ "data_off past clusters in use", &G_BASE, false, sp_doff_big,
	  KIND(PRL_P_DATA_OFF), 2, 0, 0, 0, 0, ALL, "outside the data area",
	  PRL_P_DATA_OFF },
	{ "Empty flag with data", &G_BASE, false, sp_empty,
	  KIND(PRL_P_EMPTY_FLAG), 0, 0, 0, 0, 0, ALL, "maps 6 clusters",
	  PRL_P_EMPTY_FLAG },
	{ "several at once", &G_BASE, false, sp_many,
	  KIND(PRL_P_IN_USE) | KIND(PRL_P_EMPTY_FLAG) | KIND(PRL_P_BAT_DUP) |
	  KIND(PRL_P_BAT_OUTSIDE) | KIND(PRL_P_ORPHAN) | KIND(PRL_P_TAIL), 2, 3,
	  KIND(PRL_P_ORPHAN), 2, 0, 0x3f, NULL, 0 },
	/* the extension lives in clusters 7 and 8, after the data */
	{ "valid extension", &G_BASE, true, sp_none, 0, 0, 0, 0, 3, 3, ALL, NULL, 0 },
	{ "extension MD5 wrong", &G_BASE, true, sp_ext_md5, KIND(PRL_P_EXT) | KIND(PRL_P_TAIL), 2,
	  0, 0, 1, 0, ALL, "MD5", PRL_P_EXT },
	{ "extension magic wrong", &G_BASE, true, sp_ext_magic, KIND(PRL_P_EXT) | KIND(PRL_P_TAIL),
	  2, 0, 0, 1, 0, ALL, "bad magic", PRL_P_EXT },
	{ "extension feature overruns", &G_BASE, true, sp_ext_overrun,
	  KIND(PRL_P_EXT) | KIND(PRL_P_TAIL), 2, 0, 0, 1, 0, ALL, "overruns", PRL_P_EXT },
	{ "bitmap L1 past the file", &G_BASE, true, sp_ext_l1_past,
	  KIND(PRL_P_EXT) | KIND(PRL_P_TAIL), 2, 0, 0, 3, 0, ALL,
	  "past the end", PRL_P_EXT },
	{ "bitmap L1 into the header", &G_BASE, true, sp_ext_l1_meta,
	  KIND(PRL_P_EXT) | KIND(PRL_P_TAIL), 2, 0, 0, 3, 0, ALL,
	  "inside the header", PRL_P_EXT },
	{ "bitmap L1 onto data", &G_BASE, true, sp_ext_l1_data,
	  KIND(PRL_P_EXT) | KIND(PRL_P_TAIL), 2, 0, 0, 3, 0, ALL,
	  "guest data", PRL_P_EXT },
	{ "entry into the extension", &G_BASE, true, sp_bat_into_ext,
	  KIND(PRL_P_BAT_META), 2, 0, 0, 3, 3, 0xff, "format extension cluster",
	  PRL_P_BAT_META },
	{ "ext_off past the file", &G_BASE, true, sp_ext_past,
	  KIND(PRL_P_EXT) | KIND(PRL_P_TAIL), 2, 0, 0, 1, 0, ALL,
	  "past the end", PRL_P_EXT },
	{ "stale bitmap (in_use set)", &G_BASE, true, sp_ext_stale,
	  KIND(PRL_P_EXT) | KIND(PRL_P_IN_USE), 2, 0, 0, 2, 0, ALL, "stale",
	  PRL_P_EXT },
};
#undef B

static void test_corruption(void **state)
{
	const struct corruption *t = *state;
	char *img = path_of("img.hds");
	unsigned char *before = NULL, *after = NULL;
	size_t nb = 0, na = 0, vc, csb = t->geo->cs * 512;
	struct prl_check_report rep;
	int r;

	if (t->ext)
		mk_ext(img);
	else
		mk(img, t->geo);
	/*
	 * What the guest saw before the damage, for when QEMU cannot read
	 * the damaged image (it refuses a bad extension).
	 */
	if (have_qemu && t->ext)
		before = qemu_raw(img, &nb);
	t->spoil(img, t->geo);

	/* the check alone */
	r = run(img, false, &rep);
	if (r != t->rc || kinds(&rep) != t->kinds) {
		print_message("# %s: rc %d (want %d), kinds 0x%x (want 0x%x)\n",
			      t->name, r, t->rc, kinds(&rep), t->kinds);
		dump(&rep);
	}
	assert_int_equal(r, t->rc);
	assert_int_equal(kinds(&rep), t->kinds);
	assert_int_equal(rep.found, t->rc);
	assert_int_equal(rep.repairs, 0);
	if (t->msg)
		assert_true(find_msg(&rep, t->msg_kind, t->msg));
	assert_true(prog_calls > 0);
	for (size_t i = 0; i < rep.nr; i++)
		assert_false(rep.problems[i].repaired);
	prl_check_report_free(&rep);

	if (have_qemu) {
		unsigned char *b;
		size_t n;

		int q = qemu_check(img);

		if (getenv("TEST_CHECK_VERBOSE"))
			print_message("# qemu-img check before: %d\n", q);
		if (t->qemu_before != NOQ)
			assert_int_equal(q, t->qemu_before);
		b = qemu_raw(img, &n);
		if (b) {
			free(before);
			before = b;
			nb = n;
		}
	}

	/* repair, and what is left */
	r = run(img, true, &rep);
	if (r != t->rc_after || getenv("TEST_CHECK_VERBOSE"))
		dump(&rep);
	assert_int_equal(r, t->rc_after);
	assert_int_equal(rep.found, t->rc);
	for (size_t i = 0; i < rep.nr; i++) {
		const struct prl_problem *p = &rep.problems[i];

		/* everything but orphans is repaired, and says how */
		if (p->kind == PRL_P_ORPHAN)
			continue;
		if (!p->repaired)
			dump(&rep);
		assert_true(p->repaired);
		assert_true(p->fix[0] != 0);
	}
	prl_check_report_free(&rep);
	expect(img, t->rc_after, t->kinds_after);
	if (t->rc_after != 2)
		kernel_accepts(img);

	if (!have_qemu)
		return;
	assert_int_equal(qemu_check(img), t->qemu_after);
	after = qemu_raw(img, &na);
	assert_non_null(after);
	if (before) {
		assert_int_equal(na, nb);
		for (vc = 0; vc < 16 && vc * csb < nb; vc++)
			if (t->keep & (1U << vc))
				assert_memory_equal(before + vc * csb,
						    after + vc * csb, csb);
	}
	free(before);
	free(after);
}

/*
 * A value in in_use that the spec does not list is a creator's stamp
 * (Parallels Desktop writes "pd17", "pd22"), not damage: reported as a
 * warning (exit 0), left as it is by --repair, and the kernel loads it.
 */
static void test_foreign_stamp(void **state)
{
	static const struct { uint32_t v; const char *say; } st[] = {
		{ 0x37316470, "foreign creator stamp 'pd17'" },
		{ 0x32326470, "foreign creator stamp 'pd22'" },
		{ 0x12345678, "foreign creator stamp 0x12345678" },
	};
	char *img = path_of("stamp.hds");
	struct prl_check_report rep;
	size_t i, j;
	int ext, q = 0;

	(void)state;
	for (ext = 0; ext < 3; ext++)
		for (i = 0; i < sizeof(st) / sizeof(st[0]); i++) {
			if (ext == 2)
				mk_ext(img);
			else
				mk(img, ext ? &G_V1 : &G_BASE);
			if (have_qemu)		/* 3 with an extension, see quirks */
				q = qemu_check(img);
			poke32(img, 44, st[i].v);
			assert_int_equal(run(img, false, &rep), 0);
			if (kinds(&rep) != KIND(PRL_P_IN_USE))
				dump(&rep);
			assert_int_equal(kinds(&rep), KIND(PRL_P_IN_USE));
			assert_true(find_msg(&rep, PRL_P_IN_USE, st[i].say));
			for (j = 0; j < rep.nr; j++)
				assert_int_equal(rep.problems[j].sev, PRL_SEV_WARN);
			prl_check_report_free(&rep);

			assert_int_equal(run(img, true, &rep), 0);
			assert_int_equal(rep.repairs, 0);
			for (j = 0; j < rep.nr; j++)
				assert_false(rep.problems[j].repaired);
			prl_check_report_free(&rep);
			assert_int_equal(peek32(img, 44), st[i].v);
			kernel_accepts(img);
			if (have_qemu)
				assert_int_equal(qemu_check(img), q);
		}
}

/* ---- images made by QEMU and ploop ---------------------------------- */

static void test_qemu_clean(void **state)
{
	char *img = path_of("q.hds");

	(void)state;
	if (!have_qemu)
		skip();
	unlink(img);
	assert_int_equal(sh("qemu-img create -q -f parallels '%s' 64M", img), 0);
	expect(img, 0, 0);
	assert_int_equal(sh("qemu-io -f parallels -c 'write -P 0x5a 0 1M' -c 'write -P 0x33 10M 64k' '%s' >/dev/null",
			    img), 0);
	expect(img, 0, 0);
	kernel_accepts(img);
	assert_int_equal(qemu_check(img), 0);

	/* 4 KiB clusters: header + BAT bigger than a cluster (QEMU: false leak) */
	unlink(img);
	assert_int_equal(sh("qemu-img create -q -f parallels -o cluster_size=4k '%s' 1G",
			    img), 0);
	expect(img, 0, 0);
	assert_int_equal(qemu_check(img), 3);
}

/* A QEMU-written image whose BAT gets a duplicate and an entry into it. */
static void test_qemu_dup(void **state)
{
	char *img = path_of("qd.hds");
	unsigned char *before, *after;
	struct prl_check_report rep;
	size_t nb, na;
	uint32_t e0;

	(void)state;
	if (!have_qemu)
		skip();
	unlink(img);
	assert_int_equal(sh("qemu-img create -q -f parallels '%s' 64M", img), 0);
	assert_int_equal(sh("qemu-io -f parallels -c 'write -P 0x5a 0 1M' -c 'write -P 0x6b 5M 1M' -c 'write -P 0x7c 9M 1M' '%s' >/dev/null",
			    img), 0);
	e0 = peek32(img, 64);
	assert_int_not_equal(e0, 0);
	poke32(img, 64 + 4 * 20, e0);		/* vc 20 shares vc 0's cluster */
	expect(img, 2, KIND(PRL_P_BAT_DUP));
	assert_int_equal(qemu_check(img), 0);	/* QEMU 7.2 misses it */
	before = qemu_raw(img, &nb);
	assert_non_null(before);
	assert_int_equal(run(img, true, &rep), 0);
	assert_int_equal(rep.found, 2);
	assert_true(find_msg(&rep, PRL_P_BAT_DUP, "virtual clusters 0 and 20"));
	prl_check_report_free(&rep);
	expect(img, 0, 0);
	assert_int_equal(qemu_check(img), 0);
	after = qemu_raw(img, &na);
	assert_non_null(after);
	assert_int_equal(na, nb);
	/* both keep what they read: the whole disk reads the same */
	assert_memory_equal(before, after, nb);
	assert_int_not_equal(peek32(img, 64 + 4 * 20), e0);
	free(before);
	free(after);
}

#define PLOOP "env PAD=$(head -c 8192 /dev/zero | tr '\\0' x) ploop"

static void test_ploop(void **state)
{
	char *d = path_of("ploop"), img[600];
	struct prl_check_report rep;

	(void)state;
	if (!have_ploop)
		skip();
	snprintf(img, sizeof(img), "%s/root.hds", d);
	sh("rm -rf '%s'", d);
	assert_int_equal(mkdir(d, 0755), 0);
	assert_int_equal(sh("cd '%s' && " PLOOP " init -s 64M -t none -f ploop1 root.hds >/dev/null 2>&1",
			    d), 0);
	expect(img, 0, 0);	/* v1, in_use 0, Empty flag set, no data */
	kernel_accepts(img);
	if (!have_qemu)
		return;
	/* QEMU writes into it and leaves the Empty flag set */
	assert_int_equal(sh("qemu-io -f parallels -c 'write -P 0x5a 0 1M' '%s' >/dev/null",
			    img), 0);
	expect(img, 0, KIND(PRL_P_EMPTY_FLAG));	/* a warning only */
	assert_int_equal(run(img, true, &rep), 0);
	prl_check_report_free(&rep);
	expect(img, 0, 0);
	assert_int_equal(peek32(img, 52) & PRL_FLAG_EMPTY, 0);
	assert_int_equal(qemu_check(img), 0);
	/* ploop accepts what the repair left (it wants a non-sparse file) */
	assert_int_equal(sh("cp --sparse=never '%s' '%s.full' && " PLOOP " check -f -r '%s.full' >/dev/null 2>&1",
			    img, img, img), 0);

	/* in_use set on a v1 image: closed the way ploop closes v1 (0) */
	poke32(img, 44, PRL_IN_USE_OPEN);
	expect(img, 2, KIND(PRL_P_IN_USE));
	assert_int_equal(run(img, true, &rep), 0);
	prl_check_report_free(&rep);
	assert_int_equal(peek32(img, 44), 0);
}

/* The hand-made extension is one QEMU accepts (it verifies the MD5). */
static void test_ext_qemu_accepts(void **state)
{
	char *img = path_of("ext.hds");

	(void)state;
	if (!have_qemu)
		skip();
	mk_ext(img);
	expect(img, 0, 0);
	assert_int_equal(sh("qemu-img info -f parallels '%s' >/dev/null 2>&1", img), 0);
	sp_ext_md5(img, &G_BASE);
	assert_int_not_equal(sh("qemu-img info -f parallels '%s' >/dev/null 2>&1", img), 0);
	/* the bitmap cluster, no longer trusted, is the tail */
	expect(img, 2, KIND(PRL_P_EXT) | KIND(PRL_P_TAIL));
}

/* An unknown feature: NECESSARY ones stop us, TRANSIT / plain ones do not. */
static void test_ext_unknown_feature(void **state)
{
	char *img = path_of("extu.hds");
	uint64_t f = (uint64_t)EXT_SECT * 512 + 24;
	struct prl_check_report rep;

	(void)state;
	mk_ext(img);
	poke64(img, f, 0x1234567890abcdefULL);		/* replace the bitmap */
	poke64(img, f + 8, PRL_EXT_FLAG_TRANSIT);
	ext_md5(img, EXT_SECT);
	/*
	 * The bitmap cluster is referenced by nothing known: a tail, but it
	 * may belong to the unknown feature, so it is kept.
	 */
	expect(img, 3, KIND(PRL_P_TAIL));
	assert_int_equal(run(img, true, &rep), 3);
	assert_false(rep.problems[0].repaired);
	assert_true(find_msg(&rep, PRL_P_TAIL, "unknown extension feature"));
	prl_check_report_free(&rep);
	assert_int_equal(size_of(img), 9ULL * CSB);

	mk_ext(img);
	poke64(img, f, 0x1234567890abcdefULL);
	poke64(img, f + 8, PRL_EXT_FLAG_NECESSARY);
	ext_md5(img, EXT_SECT);
	poke32(img, 44, PRL_IN_USE_OPEN);	/* even this is left */
	expect(img, 2, KIND(PRL_P_EXT) | KIND(PRL_P_TAIL) | KIND(PRL_P_IN_USE));
	assert_int_equal(run(img, true, &rep), 2);
	assert_true(find_msg(&rep, PRL_P_EXT, "nothing was changed"));
	assert_int_equal(rep.repairs, 0);
	for (size_t i = 0; i < rep.nr; i++)
		assert_false(rep.problems[i].repaired);
	prl_check_report_free(&rep);
	/* the file was not changed */
	assert_int_equal(peek32(img, 56), EXT_SECT);
	assert_int_equal(peek32(img, 44), PRL_IN_USE_OPEN);
	assert_int_equal(size_of(img), 9ULL * CSB);
}

static void test_header_unusable(void **state)
{
	char *img = path_of("h.hds");
	struct prl_check_report rep;

	(void)state;
	mk(img, &G_BASE);
	fill(img, 0, 4, 'X');
	expect(img, 2, KIND(PRL_P_HEADER));
	assert_int_equal(run(img, true, &rep), 2);	/* nothing touched */
	assert_false(rep.problems[0].repaired);
	prl_check_report_free(&rep);

	mk(img, &G_BASE);
	poke32(img, 28, 0);				/* cluster size 0 */
	expect(img, 2, KIND(PRL_P_HEADER));
	mk(img, &G_BASE);
	poke64(img, 36, (uint64_t)NBAT * CS + 1);	/* more than the BAT covers */
	expect(img, 2, KIND(PRL_P_HEADER));
	set_size(img, 10);
	expect(img, 2, KIND(PRL_P_HEADER));
}

/*
 * On a block device (loop over an image with room after it): the room is
 * not a tail, a duplicate gets its copy inside the device, orphans stay.
 */
static char loopdev[64];

static void test_blockdev(void **state)
{
	char *img = path_of("bd.hds"), cmd[700];
	struct prl_check_report rep;
	FILE *f;

	(void)state;
	mk(img, &G_BASE);
	sp_dup(img, &G_BASE);
	sp_in_use(img, &G_BASE);
	set_size(img, 12ULL * CSB);
	snprintf(cmd, sizeof(cmd), "losetup --find --show '%s' 2>/dev/null", img);
	f = popen(cmd, "r");
	if (!f || !fgets(loopdev, sizeof(loopdev), f)) {
		if (f)
			pclose(f);
		loopdev[0] = 0;
		skip();
	}
	pclose(f);
	loopdev[strcspn(loopdev, "\n")] = 0;
	expect(loopdev, 2, KIND(PRL_P_BAT_DUP) | KIND(PRL_P_ORPHAN) |
		KIND(PRL_P_IN_USE));
	/* the file under the loop device is not repaired behind its back */
	{
		struct prl_check_opts o = { .repair = true };
		struct prl_err err = { { 0 } };

		assert_int_equal(prl_check(img, &o, &rep, &err), -EBUSY);
		assert_non_null(strstr(err.msg, loopdev));
		prl_check_report_free(&rep);
	}
	assert_int_equal(run(loopdev, true, &rep), 3);
	assert_true(find_msg(&rep, PRL_P_ORPHAN, "block device"));
	prl_check_report_free(&rep);
	expect(loopdev, 3, KIND(PRL_P_ORPHAN));
	assert_int_equal(peek32(img, 64 + 4 * 4), 7);	/* the copy */
	assert_int_equal(size_of(img), 12ULL * CSB);
}

static int detach_loop(void **state)
{
	(void)state;
	if (loopdev[0])
		sh("losetup -d '%s'", loopdev);
	loopdev[0] = 0;
	return 0;
}

/* Another prldisk writing the image (flock) stops a repair, not a check. */
static void test_locked(void **state)
{
	char *img = path_of("lk.hds");
	struct prl_check_opts o = { .repair = true };
	struct prl_err err = { { 0 } };
	struct prl_check_report rep;
	int fd;

	(void)state;
	mk(img, &G_BASE);
	sp_in_use(img, &G_BASE);
	fd = open(img, O_RDWR);
	assert_true(fd >= 0);
	assert_int_equal(flock(fd, LOCK_EX), 0);
	assert_int_equal(prl_check(img, &o, &rep, &err), -EBUSY);
	prl_check_report_free(&rep);
	expect(img, 2, KIND(PRL_P_IN_USE));
	close(fd);
	assert_int_equal(prl_check(img, &o, &rep, &err), 0);
	prl_check_report_free(&rep);
}

/* A 2^28-entry BAT claimed by a tiny file: no 1 GiB allocation. */
static void test_huge_bat(void **state)
{
	char *img = path_of("big.hds");
	struct prl_check_report rep;

	(void)state;
	mk(img, &G_BASE);
	poke32(img, 32, PRL_MAX_BAT_ENTRIES);
	poke64(img, 36, (uint64_t)PRL_MAX_BAT_ENTRIES * CS);
	assert_int_equal(run(img, false, &rep), 2);
	assert_true(rep.nr_by_kind[PRL_P_SHORT] == 1);
	assert_int_equal(prog_total, PRL_MAX_BAT_ENTRIES);
	assert_int_equal(prog_done, PRL_MAX_BAT_ENTRIES);
	prl_check_report_free(&rep);
}

/* Thousands of bad entries: the list is capped, the counts are not. */
static void test_many_problems(void **state)
{
	char *img = path_of("many.hds");
	struct prl_check_report rep;
	struct prl_header h;
	uint32_t *bat, n = 20000, i;

	(void)state;
	unlink(img);
	memset(&h, 0, sizeof(h));
	memcpy(h.magic, PRL_MAGIC_V2, PRL_MAGIC_LEN);
	h.version = htole32(2);
	h.tracks = htole32(8);
	h.bat_entries = htole32(n);
	h.nb_sectors = htole64((uint64_t)n * 8);
	h.data_off = htole32(160);	/* 64 + 80000 bytes, rounded up */
	pwr(img, &h, sizeof(h), 0);
	bat = calloc(n, 4);
	assert_non_null(bat);
	for (i = 0; i < n; i++)
		bat[i] = htole32(1000000 + i);	/* all past the end */
	pwr(img, bat, n * 4, 64);
	free(bat);
	set_size(img, 160 * 512);
	assert_int_equal(run(img, false, &rep), 2);
	assert_true(rep.nr == PRL_CHECK_MAX_LISTED);
	assert_true(rep.nr_by_kind[PRL_P_BAT_OUTSIDE] == n);
	assert_true(rep.nr_unlisted == n - PRL_CHECK_MAX_LISTED);
	prl_check_report_free(&rep);
	assert_int_equal(run(img, true, &rep), 0);
	prl_check_report_free(&rep);
	expect(img, 0, 0);
}

static void test_names(void **state)
{
	int k;

	(void)state;
	for (k = 0; k < PRL_P_NR_KINDS; k++)
		assert_string_not_equal(prl_problem_name(k), "unknown");
	assert_string_equal(prl_problem_name(PRL_P_BAT_DUP), "bat_duplicate");
	assert_string_equal(prl_severity_name(PRL_SEV_LEAK), "leak");
}

static void test_not_found(void **state)
{
	struct prl_check_report rep;
	struct prl_err err = { { 0 } };

	(void)state;
	assert_int_equal(prl_check(path_of("missing.hds"), NULL, &rep, &err),
			 -ENOENT);
	assert_non_null(strstr(err.msg, "missing.hds"));
	prl_check_report_free(&rep);
}

static int setup(void **state)
{
	(void)state;
	snprintf(dir, sizeof(dir), "%s/test_check.XXXXXX",
		 getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
	if (!mkdtemp(dir))
		return -1;
	have_qemu = !sh("command -v qemu-img >/dev/null && command -v qemu-io >/dev/null");
	have_ploop = !sh("command -v ploop >/dev/null");
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	return sh("rm -rf '%s'", dir) ? -1 : 0;
}

#define NCAT (sizeof(catalogue) / sizeof(catalogue[0]))

int main(void)
{
	struct CMUnitTest tests[NCAT + 20];
	size_t i, n = 0;

	for (i = 0; i < NCAT; i++) {
		tests[n].name = catalogue[i].name;
		tests[n].test_func = test_corruption;
		tests[n].setup_func = NULL;
		tests[n].teardown_func = NULL;
		tests[n].initial_state = (void *)&catalogue[i];
		n++;
	}
	tests[n++] = (struct CMUnitTest)cmocka_unit_test(test_foreign_stamp);
	tests[n++] = (struct CMUnitTest)cmocka_unit_test(test_qemu_clean);
	tests[n++] = (struct CMUnitTest)cmocka_unit_test(test_qemu_dup);
	tests[n++] = (struct CMUnitTest)cmocka_unit_test(test_ploop);
	tests[n++] = (struct CMUnitTest)cmocka_unit_test(test_ext_qemu_accepts);
	tests[n++] = (struct CMUnitTest)cmocka_unit_test(test_ext_unknown_feature);
	tests[n++] = (struct CMUnitTest)cmocka_unit_test(test_header_unusable);
	tests[n++] = (struct CMUnitTest)cmocka_unit_test_teardown(test_blockdev,
								 detach_loop);
	tests[n++] = (struct CMUnitTest)cmocka_unit_test(test_locked);
	tests[n++] = (struct CMUnitTest)cmocka_unit_test(test_huge_bat);
	tests[n++] = (struct CMUnitTest)cmocka_unit_test(test_many_problems);
	tests[n++] = (struct CMUnitTest)cmocka_unit_test(test_names);
	tests[n++] = (struct CMUnitTest)cmocka_unit_test(test_not_found);
	return _cmocka_run_group_tests("check", tests, n, setup, teardown);
}
