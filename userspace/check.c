// SPDX-License-Identifier: GPL-2.0
/*
 * prldisk check: find every inconsistency of a Parallels image, and with
 * repair fix what can be fixed without losing data.
 *
 * The header is decoded here leniently (prl_parse_header() stops at the
 * first problem); only what makes the rest meaningless (magic, version,
 * cluster size, BAT size, virtual size) ends the check as PRL_P_HEADER.
 *
 * Terms used below: D is the data offset the check judges entries by
 * (normally the header's data_off, see pick_data_off()); "cluster k" is the
 * k-th cluster of the grid that starts at D; a BAT entry "points at" the
 * file sector it decodes to.
 *
 * Repair order (do_repair()), so that a crash during a repair leaves an
 * image no worse than before, which checks (and repairs) again:
 *   0. refuse (write nothing) if the file system lacks the free space the
 *      steps below can add to a file image (check_room()).
 *   1. extend the file where it ends inside a used cluster, the BAT or
 *      before the data area (zeros: what QEMU reads there now); fsync.
 *   2. zero the BAT entries to drop (they point at nothing valid); fsync.
 *   3. copy each shared (duplicate) cluster to a new cluster at the image
 *      end, fsync; then point the duplicate entry at its copy; fsync.
 *   4. compaction, only if nothing corrupt was found: copy the last
 *      clusters into orphan holes, fsync; repoint their entries; fsync.
 *   5. header last: in_use closed, Empty flag, data_off, ext_off; fsync.
 *   6. truncate the unused tail; fsync.
 * Data is always durable before an entry points at it, and a cluster is
 * cut off only once nothing points at it.  The image is then checked again
 * (a repair can uncover more: the clusters of a dropped extension become
 * the tail), and repaired again if needed, at most PRL_CHECK_PASSES times.
 *
 * Severities: corrupt (exit 2) for anything that makes a reader see wrong
 * data, or that QEMU or dm-parallels refuse; leak (exit 3) for space that
 * is lost and the Empty flag (see check_flags()).
 */
#define _GNU_SOURCE
#include "check.h"
#include "folder.h"

#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <dirent.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "prl_format.h"

#define SECT			((uint64_t)512)
#define PRL_CHECK_PASSES	3
/* Bytes of the extension cluster parsed for features (the MD5 covers all). */
#define EXT_PARSE_MAX		(16U << 20)
/* Copy buffer for duplicate clusters. */
#define COPY_CHUNK		BIT(20)

#ifndef __printf
#define __printf(a, b)		__attribute__((format(printf, a, b)))
#endif

/* What the check decided about one BAT entry. */
enum ent_state {
	E_FREE,		/* zero */
	E_OK,		/* points at a good cluster */
	E_SHORT,	/* good cluster, but the file ends inside it */
	E_DUP,		/* shares a cluster with a lower entry: gets a copy */
	E_DROP,		/* outside / metadata / off the grid: set to zero */
};

/* Who uses a cluster of the data area. */
enum owner {
	OWN_BAT,	/* a BAT entry (idx = BAT index) */
	OWN_EXT,	/* the format extension cluster */
	OWN_BM,		/* a dirty bitmap data cluster (idx = L1 index) */
};

struct use {
	uint64_t cl;	/* cluster index on the grid at D */
	uint32_t owner;
	uint32_t idx;
};

struct ck {
	const char *path;	/* for messages */
	int fd;
	bool blk, repair;
	const struct prl_check_opts *o;
	struct prl_check_report *rep;
	bool corrupt, leak;	/* anything found, listed or not */

	uint64_t fbytes, fsect;		/* file size */
	union {
		struct prl_header hdr;
		unsigned char hraw[PRL_HEADER_SIZE];
	};
	enum prl_format_version fmt;
	uint32_t cs, nbat, off_mult, in_use, flags, raw_doff;
	uint64_t csb, nb_sectors, ext_off, meta_bytes, meta_sect;

	uint32_t nread;		/* BAT entries present in the file */
	__le32 *bat;		/* nread entries */
	uint8_t *st;		/* enum ent_state per entry */
	uint32_t allocated;	/* entries kept (OK, SHORT, DUP) */

	uint64_t D;		/* data offset used, sectors */
	bool fix_doff;		/* header data_off must become D */

	struct use *use;
	size_t nuse, use_cap;

	bool ext_valid;		/* ext header magic and MD5 good */
	bool ext_drop;		/* clear ext_off on repair */
	bool ext_keep;		/* unknown NECESSARY feature: change nothing */
	bool ext_unknown;	/* unknown feature: may own clusters we cannot see */

	uint64_t end;		/* first sector after the last used cluster */
	uint64_t extend_to;	/* bytes the file must have, 0 = no change */
	bool truncate_tail;
	bool fix_in_use, fix_flags;

	/* Orphan runs [from, to) in clusters, and the compaction plan. */
	struct run { uint64_t from, to; size_t p; } *runs;	/* p: index */
	size_t nruns, runs_cap;
	bool may_compact;	/* nothing corrupt found: orphans are leaks */
	struct move { uint32_t entry; uint64_t to_cl; } *moves;
	size_t nmoves;
	uint32_t new_in_use;
};

static const char *const kind_names[] = {
	[PRL_P_HEADER] = "header",
	[PRL_P_IN_USE] = "in_use",
	[PRL_P_DATA_OFF] = "data_off",
	[PRL_P_EMPTY_FLAG] = "empty_flag",
	[PRL_P_BAT_OUTSIDE] = "bat_outside",
	[PRL_P_BAT_META] = "bat_metadata",
	[PRL_P_BAT_UNALIGNED] = "bat_unaligned",
	[PRL_P_BAT_DUP] = "bat_duplicate",
	[PRL_P_ORPHAN] = "orphan",
	[PRL_P_TAIL] = "tail",
	[PRL_P_SHORT] = "short",
	[PRL_P_EXT] = "extension",
};

const char *prl_problem_name(enum prl_problem_kind kind)
{
	if ((unsigned int)kind < PRL_P_NR_KINDS)
		return kind_names[kind];
	return "unknown";
}

const char *prl_severity_name(enum prl_severity sev)
{
	return sev == PRL_SEV_LEAK ? "leak" : sev == PRL_SEV_WARN ? "warning" :
	       "corrupt";
}

void prl_check_report_free(struct prl_check_report *rep)
{
	if (!rep)
		return;
	free(rep->problems);
	rep->problems = NULL;
	rep->nr = 0;
}

/* ---- the report ------------------------------------------------------ */

static struct prl_problem *add(struct ck *c, enum prl_problem_kind kind,
			       enum prl_severity sev, int64_t entry,
			       uint64_t sector, const char *fmt, ...)
	__printf(6, 7);

/* A new slot at the end of @rep->problems, or NULL past the listing cap. */
static struct prl_problem *rep_slot(struct prl_check_report *rep)
{
	struct prl_problem *p;

	if (rep->nr >= PRL_CHECK_MAX_LISTED) {
		rep->nr_unlisted++;
		return NULL;
	}
	if (!rep->problems || !(rep->nr & (rep->nr - 1))) {
		size_t cap = rep->nr ? rep->nr * 2 : 16;

		if (rep->nr && rep->nr < 16)
			cap = 16;
		p = realloc(rep->problems, cap * sizeof(*p));
		if (!p) {
			fputs("prldisk: out of memory\n", stderr);
			abort();
		}
		rep->problems = p;
	}
	p = &rep->problems[rep->nr++];
	memset(p, 0, sizeof(*p));
	return p;
}

static struct prl_problem *add(struct ck *c, enum prl_problem_kind kind,
			       enum prl_severity sev, int64_t entry,
			       uint64_t sector, const char *fmt, ...)
{
	struct prl_problem *p;
	va_list ap;

	if (sev == PRL_SEV_CORRUPT)
		c->corrupt = true;
	else if (sev == PRL_SEV_LEAK)
		c->leak = true;
	c->rep->nr_by_kind[kind]++;
	p = rep_slot(c->rep);
	if (!p)
		return NULL;
	p->kind = kind;
	p->sev = sev;
	p->entry = entry;
	p->sector = sector;
	va_start(ap, fmt);
	vsnprintf(p->msg, sizeof(p->msg), fmt, ap);
	va_end(ap);
	return p;
}

/* Say what the repair will do about @p (only when repairing). */
static void fix(struct ck *c, struct prl_problem *p, const char *fmt, ...)
	__printf(3, 4);

static void fix(struct ck *c, struct prl_problem *p, const char *fmt, ...)
{
	va_list ap;

	if (!p || !c->repair)
		return;
	va_start(ap, fmt);
	vsnprintf(p->fix, sizeof(p->fix), fmt, ap);
	va_end(ap);
}

static void progress(struct ck *c, uint64_t done, uint64_t total)
{
	if (c->o && c->o->progress)
		c->o->progress(c->o->ctx, done, total);
}

/* ---- header -------------------------------------------------------- */

static uint64_t round_up(uint64_t v, uint64_t m)
{
	return (v + m - 1) / m * m;
}

/*
 * Decode what the rest depends on: 1 if usable, 0 if not (PRL_P_HEADER
 * reported), or a negative errno if it could not be read.
 */
static int read_header(struct ck *c, struct prl_err *err)
{
	const struct prl_header *h = &c->hdr;
	int r;

	if (c->fbytes < PRL_HEADER_SIZE) {
		add(c, PRL_P_HEADER, PRL_SEV_CORRUPT, -1, 0,
		    "file too short for a header (%" PRIu64 " bytes)", c->fbytes);
		return 0;
	}
	r = prl_pread_full(c->fd, c->hraw, PRL_HEADER_SIZE, 0);
	if (r)
		return prl_errf(err, r, "cannot read the header: %s",
				strerror(-r));
	if (!memcmp(h->magic, PRL_MAGIC_V1, PRL_MAGIC_LEN)) {
		c->fmt = PRL_V1;
	} else if (!memcmp(h->magic, PRL_MAGIC_V2, PRL_MAGIC_LEN)) {
		c->fmt = PRL_V2;
	} else {
		add(c, PRL_P_HEADER, PRL_SEV_CORRUPT, -1, 0,
		    "bad magic: not a Parallels expandable image");
		return 0;
	}
	if (le32toh(h->version) != PRL_VERSION) {
		add(c, PRL_P_HEADER, PRL_SEV_CORRUPT, -1, 0,
		    "unsupported header version %u (must be 2)",
		    le32toh(h->version));
		return 0;
	}
	c->cs = le32toh(h->tracks);
	if (!c->cs || c->cs > PRL_MAX_CLUSTER_SECTORS) {
		add(c, PRL_P_HEADER, PRL_SEV_CORRUPT, -1, 0,
		    "cluster size of %u sectors is not usable", c->cs);
		return 0;
	}
	c->csb = c->cs * SECT;
	c->off_mult = c->fmt == PRL_V1 ? 1 : c->cs;
	c->nbat = le32toh(h->bat_entries);
	if (c->nbat > PRL_MAX_BAT_ENTRIES) {
		add(c, PRL_P_HEADER, PRL_SEV_CORRUPT, -1, 0,
		    "BAT of %u entries is too large (maximum 2^28)", c->nbat);
		return 0;
	}
	c->nb_sectors = le64toh(h->nb_sectors);
	if (c->fmt == PRL_V1 && c->nb_sectors >> 32) {
		add(c, PRL_P_HEADER, PRL_SEV_CORRUPT, -1, 0,
		    "WithoutFreeSpace header with a size above 32 bits");
		return 0;
	}
	if (!c->nb_sectors || c->nb_sectors > (uint64_t)c->nbat * c->cs) {
		add(c, PRL_P_HEADER, PRL_SEV_CORRUPT, -1, 0,
		    "virtual size of %" PRIu64 " sectors is zero or more than the BAT covers (%u clusters of %u sectors)",
		    c->nb_sectors, c->nbat, c->cs);
		return 0;
	}
	c->meta_bytes = PRL_HEADER_SIZE + (uint64_t)c->nbat * 4;
	c->meta_sect = (c->meta_bytes + SECT - 1) / SECT;
	c->in_use = le32toh(h->in_use);
	c->raw_doff = le32toh(h->data_off);
	c->flags = le32toh(h->flags);
	c->ext_off = le64toh(h->ext_off);
	return 1;
}

/* The BAT: only what the file holds is read (and allocated). */
static int read_bat(struct ck *c, struct prl_err *err)
{
	uint64_t have = c->fbytes < c->meta_bytes ? c->fbytes : c->meta_bytes;
	int r;

	c->nread = (uint32_t)((have - PRL_HEADER_SIZE) / 4);
	c->bat = prl_xcalloc(c->nread, 4);
	c->st = prl_xcalloc(c->nread, 1);
	r = prl_pread_full(c->fd, c->bat, (size_t)c->nread * 4, PRL_HEADER_SIZE);
	if (r)
		return prl_errf(err, r, "cannot read the BAT: %s", strerror(-r));
	if (c->nread < c->nbat) {
		struct prl_problem *p;

		p = add(c, PRL_P_SHORT, PRL_SEV_CORRUPT, c->nread, c->fsect,
			"file ends inside the BAT (%" PRIu64 " of %" PRIu64 " bytes of header and BAT): entries from %u on read as zero",
			c->fbytes, c->meta_bytes, c->nread);
		if (!c->blk)
			fix(c, p, "extended the file with zeros to the data area");
	}
	return 0;
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

/* Entries that could be clusters: past the header and BAT, inside the file. */
static bool plausible(const struct ck *c, uint64_t s)
{
	return s >= c->meta_sect && s < c->fsect;
}

/* Plausible entries that data offset @d rejects (below it or off its grid). */
static uint64_t rejected_by(const struct ck *c, uint64_t d)
{
	uint64_t n = 0, s;
	uint32_t i;

	for (i = 0; i < c->nread; i++) {
		s = (uint64_t)le32toh(c->bat[i]) * c->off_mult;
		if (s && plausible(c, s) && (s < d || (s - d) % c->cs))
			n++;
	}
	return n;
}

/*
 * Choose D.  The header's data_off is used when it is valid and no
 * plausible entry contradicts it.  Valid means: v2 ("WithouFreSpacExt")
 * non-zero, a multiple of the cluster size and past the BAT, which is what
 * QEMU and ploop write (the BAT rounded up to a cluster); v1 zero (= right
 * after the BAT) or any sector past the BAT.  A larger data_off than
 * needed is legal and kept.  Otherwise the data offset is rebuilt from the
 * clusters in use: the lowest sector past the BAT on the grid most entries
 * are on (v2 entries count in clusters, so that is the BAT rounded up to a
 * cluster), and the header is corrected to it on repair.  This way a
 * damaged data_off is reported once, and does not make every entry look
 * bad (and get dropped by a repair).
 */
static void pick_data_off(struct ck *c)
{
	uint64_t hdr_d, alt, r = 0, bad_hdr, bad_alt, *res, s;
	uint64_t best_n = 0, run = 0;
	uint32_t i, n = 0;
	const char *why = NULL;
	struct prl_problem *p;
	bool hdr_ok;

	res = prl_xcalloc(c->nread, sizeof(*res));
	for (i = 0; i < c->nread; i++) {
		s = (uint64_t)le32toh(c->bat[i]) * c->off_mult;
		if (s && plausible(c, s))
			res[n++] = s % c->cs;
	}
	if (n)
		qsort(res, n, sizeof(*res), cmp_u64);
	for (i = 0; i < n; i++) {
		run = i && res[i] == res[i - 1] ? run + 1 : 1;
		if (run > best_n) {
			best_n = run;
			r = res[i];
		}
	}
	free(res);
	alt = c->meta_sect + (r + c->cs - c->meta_sect % c->cs) % c->cs;

	hdr_d = c->raw_doff ? c->raw_doff : c->meta_sect;
	if (c->fmt == PRL_V2 && !c->raw_doff)
		why = "is zero in a WithouFreSpacExt image";
	else if (c->fmt == PRL_V2 && c->raw_doff % c->cs)
		why = "is not a multiple of the cluster size";
	else if (hdr_d < c->meta_sect)
		why = "points inside the header or BAT";
	else if (hdr_d > c->fsect && hdr_d > alt)
		why = "is past the end of the file";
	hdr_ok = !why;

	bad_hdr = hdr_ok ? rejected_by(c, hdr_d) : 0;
	if (hdr_ok && !bad_hdr) {
		c->D = hdr_d;
	} else if (!hdr_ok) {
		c->D = alt;
	} else {
		bad_alt = rejected_by(c, alt);
		if (bad_alt < bad_hdr) {
			c->D = alt;
			why = "leaves clusters in use outside the data area";
		} else {
			c->D = hdr_d;
		}
	}
	if (why) {
		p = add(c, PRL_P_DATA_OFF, PRL_SEV_CORRUPT, -1, hdr_d,
			"data_off %u %s; the clusters in use follow a data area at sector %" PRIu64,
			c->raw_doff, why, c->D);
		fix(c, p, "set data_off to %" PRIu64, c->D);
		c->fix_doff = true;
	}
	/* A data area that starts past the end of the file (nothing in it). */
	if (c->D > c->fsect && c->nread == c->nbat) {
		p = add(c, PRL_P_DATA_OFF, PRL_SEV_CORRUPT, -1, c->D,
			"the data area (sector %" PRIu64 ") starts past the end of the file (%" PRIu64 " sectors)",
			c->D, c->fsect);
		if (!c->blk)
			fix(c, p, "extended the file with zeros to sector %" PRIu64,
			    c->D);
	}
	if (c->D > c->fsect && !c->blk)
		c->extend_to = c->D * SECT;
}

/* ---- BAT entries ----------------------------------------------------- */

static void use_add(struct ck *c, uint64_t sector, uint32_t owner, uint32_t idx)
{
	if (c->nuse == c->use_cap) {
		c->use_cap = c->use_cap ? c->use_cap * 2 : 64;
		c->use = realloc(c->use, c->use_cap * sizeof(*c->use));
		if (!c->use) {
			fputs("prldisk: out of memory\n", stderr);
			abort();
		}
	}
	c->use[c->nuse].cl = (sector - c->D) / c->cs;
	c->use[c->nuse].owner = owner;
	c->use[c->nuse].idx = idx;
	c->nuse++;
}

static void drop(struct ck *c, struct prl_problem *p, uint32_t i)
{
	c->st[i] = E_DROP;
	fix(c, p, "dropped the entry: virtual cluster %u now reads from the layer below (zeros if none)",
	    i);
}

static void check_entries(struct ck *c)
{
	uint64_t s, step = c->nread / 100 + 1;
	struct prl_problem *p;
	uint32_t i, e;

	for (i = 0; i < c->nread; i++) {
		if (!(i % step))
			progress(c, i, c->nbat);
		e = le32toh(c->bat[i]);
		if (!e)
			continue;
		s = (uint64_t)e * c->off_mult;
		if (s >= c->fsect) {
			p = add(c, PRL_P_BAT_OUTSIDE, PRL_SEV_CORRUPT, i, s,
				"virtual cluster %u points at sector %" PRIu64 ", past the end of the file (%" PRIu64 " sectors)",
				i, s, c->fsect);
			drop(c, p, i);
		} else if (s < c->D) {
			p = add(c, PRL_P_BAT_META, PRL_SEV_CORRUPT, i, s,
				"virtual cluster %u points at sector %" PRIu64 ", inside the header and BAT (data starts at %" PRIu64 ")",
				i, s, c->D);
			drop(c, p, i);
		} else if ((s - c->D) % c->cs) {
			p = add(c, PRL_P_BAT_UNALIGNED, PRL_SEV_CORRUPT, i, s,
				"virtual cluster %u points at sector %" PRIu64 ", off the cluster grid (data_off %" PRIu64 ", %u sectors per cluster)",
				i, s, c->D, c->cs);
			drop(c, p, i);
		} else {
			c->st[i] = E_OK;
			if ((s + c->cs) * SECT > c->fbytes) {
				c->st[i] = E_SHORT;
				p = add(c, PRL_P_SHORT, PRL_SEV_CORRUPT, i, s,
					"the file ends inside the cluster of virtual cluster %u (sector %" PRIu64 ", file %" PRIu64 " bytes)",
					i, s, c->fbytes);
				if (!c->blk) {
					fix(c, p, "extended the file with zeros to the end of the cluster");
					if ((s + c->cs) * SECT > c->extend_to)
						c->extend_to = (s + c->cs) * SECT;
				}
			}
			use_add(c, s, OWN_BAT, i);
		}
	}
	progress(c, c->nbat, c->nbat);
}

/* ---- format extension ---------------------------------------------- */

static void ext_problem(struct ck *c, uint64_t sector, const char *fmt, ...)
	__printf(3, 4);

/* A problem of the format extension: the repair drops the extension. */
static void ext_problem(struct ck *c, uint64_t sector, const char *fmt, ...)
{
	char msg[200];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	add(c, PRL_P_EXT, PRL_SEV_CORRUPT, -1, sector,
	    "format extension at sector %" PRIu64 ": %s", c->ext_off, msg);
	c->ext_drop = true;
}

/* A sector a bitmap L1 entry or ext_off gives: NULL if a good cluster. */
static const char *bad_cluster(const struct ck *c, uint64_t s)
{
	if (s >= c->fsect || (s + c->cs) * SECT > c->fbytes)
		return "past the end of the file";
	if (s < c->D)
		return "inside the header or BAT";
	if ((s - c->D) % c->cs)
		return "off the cluster grid";
	return NULL;
}

static void check_bitmap(struct ck *c, const unsigned char *d, uint32_t size,
			 uint32_t nr)
{
	struct prl_ext_dirty_bitmap bm;
	uint64_t bits, bytes, l1_words, l1_bytes, s;
	uint32_t gran, l1, i;
	const char *why;

	if (size < sizeof(bm)) {
		ext_problem(c, c->ext_off, "dirty bitmap %u is too small (%u bytes)",
			    nr, size);
		return;
	}
	memcpy(&bm, d, sizeof(bm));
	gran = le32toh(bm.granularity);
	l1 = le32toh(bm.l1_size);
	if (le64toh(bm.size) != c->nb_sectors) {
		ext_problem(c, c->ext_off, "dirty bitmap %u covers %" PRIu64 " sectors, not the disk size (%" PRIu64 ")",
			    nr, (uint64_t)le64toh(bm.size), c->nb_sectors);
		return;
	}
	if (!gran || (gran & (gran - 1)) || gran > (UINT32_MAX >> 9)) {
		ext_problem(c, c->ext_off, "dirty bitmap %u has a bad granularity (%u sectors)",
			    nr, gran);
		return;
	}
	if ((uint64_t)l1 * 8 > size - sizeof(bm)) {
		ext_problem(c, c->ext_off, "dirty bitmap %u: L1 table of %u entries overruns the feature",
			    nr, l1);
		return;
	}
	/* QEMU serializes in 64-bit words, ploop in bytes: accept both. */
	bits = (c->nb_sectors + gran - 1) / gran;
	bytes = (bits + 7) / 8;
	l1_bytes = (bytes + c->csb - 1) / c->csb;
	l1_words = (round_up(bits, 64) / 8 + c->csb - 1) / c->csb;
	if (l1 != l1_bytes && l1 != l1_words) {
		ext_problem(c, c->ext_off, "dirty bitmap %u: L1 table has %u entries, the bitmap needs %" PRIu64,
			    nr, l1, l1_words);
		return;
	}
	for (i = 0; i < l1; i++) {
		uint64_t v;

		memcpy(&v, d + sizeof(bm) + (size_t)i * 8, 8);
		s = le64toh(v);
		if (s <= 1)	/* 0: all clear, 1: all set */
			continue;
		why = bad_cluster(c, s);
		if (why) {
			ext_problem(c, s, "dirty bitmap %u: L1 entry %u points at sector %" PRIu64 ", %s",
				    nr, i, s, why);
			continue;
		}
		use_add(c, s, OWN_BM, i);
	}
}

/* What prldisk info shows of a feature whose bytes lie inside the cluster. */
static void note_feature(struct prl_check_report *rep,
			 const struct prl_ext_feature *fh, const unsigned char *d)
{
	struct prl_feature_info *f;
	struct prl_ext_dirty_bitmap bm;

	if (rep->nr_features >= sizeof(rep->features) / sizeof(rep->features[0]))
		return;
	f = &rep->features[rep->nr_features++];
	memset(f, 0, sizeof(*f));
	f->magic = le64toh(fh->magic);
	f->flags = le64toh(fh->flags);
	f->data_size = le32toh(fh->data_size);
	if (f->magic != PRL_EXT_DIRTY_BITMAP || f->data_size < sizeof(bm))
		return;
	memcpy(&bm, d, sizeof(bm));
	f->bitmap = true;
	f->bm_size = le64toh(bm.size);
	f->bm_granularity = le32toh(bm.granularity);
	f->bm_l1_size = le32toh(bm.l1_size);
	memcpy(f->bm_id, bm.id, sizeof(f->bm_id));
}

static void check_ext(struct ck *c)
{
	unsigned char *buf = NULL, md5[EVP_MAX_MD_SIZE];
	struct prl_ext_header eh;
	struct prl_ext_feature fh;
	uint64_t pos, left, off, len, nbuf;
	unsigned int md5_len = 0, nr = 0;
	EVP_MD_CTX *ctx = NULL;
	const char *why;

	if (!c->ext_off)
		return;
	why = bad_cluster(c, c->ext_off);
	if (why) {
		ext_problem(c, c->ext_off, "ext_off points %s", why);
		return;
	}
	/* Its cluster is in use even if its content is bad (until dropped). */
	use_add(c, c->ext_off, OWN_EXT, 0);
	c->rep->ext_present = true;

	nbuf = c->csb < EXT_PARSE_MAX ? c->csb : EXT_PARSE_MAX;
	buf = prl_xmalloc(nbuf);
	if (prl_pread_full(c->fd, buf, nbuf, c->ext_off * SECT)) {
		ext_problem(c, c->ext_off, "cannot be read");
		goto out;
	}
	memcpy(&eh, buf, sizeof(eh));
	if (le64toh(eh.magic) != PRL_EXT_MAGIC) {
		ext_problem(c, c->ext_off, "bad magic 0x%016" PRIx64,
			    (uint64_t)le64toh(eh.magic));
		goto out;
	}
	ctx = EVP_MD_CTX_new();
	if (!ctx || !EVP_DigestInit_ex(ctx, EVP_md5(), NULL) ||
	    !EVP_DigestUpdate(ctx, buf + sizeof(eh), nbuf - sizeof(eh)))
		goto md5_fail;
	for (off = nbuf; off < c->csb; off += len) {
		unsigned char *chunk = prl_xmalloc(COPY_CHUNK);

		len = c->csb - off < COPY_CHUNK ? c->csb - off : COPY_CHUNK;
		if (prl_pread_full(c->fd, chunk, len, c->ext_off * SECT + off) ||
		    !EVP_DigestUpdate(ctx, chunk, len)) {
			free(chunk);
			goto md5_fail;
		}
		free(chunk);
	}
	if (!EVP_DigestFinal_ex(ctx, md5, &md5_len) || md5_len != 16)
		goto md5_fail;
	if (memcmp(md5, eh.md5, 16)) {
		ext_problem(c, c->ext_off, "MD5 checksum mismatch: the extension is corrupt");
		goto out;
	}
	c->ext_valid = true;
	c->rep->ext_valid = true;

	for (pos = sizeof(eh);; pos += round_up(le32toh(fh.data_size), 8), nr++) {
		left = c->csb - pos;
		if (left < sizeof(fh) || pos + sizeof(fh) > nbuf) {
			ext_problem(c, c->ext_off + pos / SECT,
				    "feature list runs past the cluster (no end marker after %" PRIu64 " bytes)",
				    pos);
			goto out;
		}
		memcpy(&fh, buf + pos, sizeof(fh));
		pos += sizeof(fh);
		left -= sizeof(fh);
		if (le64toh(fh.magic) == PRL_EXT_END)
			break;
		if (round_up(le32toh(fh.data_size), 8) > left ||
		    pos + le32toh(fh.data_size) > nbuf) {
			ext_problem(c, c->ext_off + pos / SECT,
				    "feature %u (%u bytes) overruns the cluster",
				    nr, le32toh(fh.data_size));
			goto out;
		}
		note_feature(c->rep, &fh, buf + pos);
		if (le64toh(fh.magic) == PRL_EXT_DIRTY_BITMAP) {
			check_bitmap(c, buf + pos, le32toh(fh.data_size), nr);
		} else if (le64toh(fh.flags) & PRL_EXT_FLAG_NECESSARY) {
			/* The spec: then the file should not be changed. */
			add(c, PRL_P_EXT, PRL_SEV_CORRUPT, -1, c->ext_off,
				"format extension: unknown feature 0x%016" PRIx64 " is marked necessary: this image cannot be handled here%s",
				(uint64_t)le64toh(fh.magic),
				c->repair ? "; nothing was changed" : "");
			c->ext_keep = true;
			c->ext_unknown = true;
		} else {
			/*
			 * TRANSIT or plain: not a problem, but its data may
			 * live in clusters nothing we know points at.
			 */
			c->ext_unknown = true;
		}
	}
	goto out;

md5_fail:
	ext_problem(c, c->ext_off, "MD5 could not be computed");
out:
	EVP_MD_CTX_free(ctx);
	free(buf);
}

/* ---- who uses which cluster ---------------------------------------- */

static int cmp_use(const void *a, const void *b)
{
	const struct use *x = a, *y = b;

	if (x->cl != y->cl)
		return x->cl < y->cl ? -1 : 1;
	if (x->owner != y->owner)
		return x->owner < y->owner ? -1 : 1;
	return x->idx < y->idx ? -1 : x->idx > y->idx;
}

static void orphans(struct ck *c, uint64_t from, uint64_t to)
{
	struct prl_problem *p;
	uint64_t s = c->D + from * c->cs;

	if (from >= to)
		return;
	p = add(c, PRL_P_ORPHAN, PRL_SEV_LEAK, -1, s,
		"%" PRIu64 " cluster%s at sector %" PRIu64 " %s used by nothing (leaked space)",
		to - from, to - from > 1 ? "s" : "", s, to - from > 1 ? "are" : "is");
	if (c->nruns == c->runs_cap) {
		c->runs_cap = c->runs_cap ? c->runs_cap * 2 : 16;
		c->runs = realloc(c->runs, c->runs_cap * sizeof(*c->runs));
		if (!c->runs) {
			fputs("prldisk: out of memory\n", stderr);
			abort();
		}
	}
	c->runs[c->nruns].from = from;
	c->runs[c->nruns].to = to;
	c->runs[c->nruns].p = p ? (size_t)(p - c->rep->problems) : SIZE_MAX;
	c->nruns++;
}

/*
 * Walk the clusters in use in order.  Users of one cluster come sorted BAT
 * entries first (lowest index first), then the extension, then bitmap
 * data.  Who keeps a shared cluster:
 *  - an intact extension (magic and MD5 good) keeps its cluster: BAT
 *    entries pointing there cannot hold guest data and are dropped;
 *  - otherwise the lowest BAT entry keeps it, and every other BAT entry
 *    gets a copy of it (so each reads what it reads now: nothing lost,
 *    although at most one of them can be right);
 *  - bitmap data that shares a cluster with anything else makes the
 *    extension wrong (data is worth more than a dirty bitmap).
 * Gaps between clusters in use are orphans.
 */
static void check_uses(struct ck *c)
{
	uint64_t next = 0, s;
	struct prl_problem *p;
	size_t i, j, k;

	if (c->nuse)
		qsort(c->use, c->nuse, sizeof(*c->use), cmp_use);
	for (i = 0; i < c->nuse; i = j) {
		const struct use *u = &c->use[i];
		bool ext_owns = false;

		for (j = i + 1; j < c->nuse && c->use[j].cl == u->cl; j++)
			if (c->use[j].owner == OWN_EXT && c->ext_valid)
				ext_owns = true;
		s = c->D + u->cl * c->cs;
		for (k = i; k < j; k++) {
			const struct use *v = &c->use[k];

			if (v->owner == OWN_BAT && ext_owns) {
				p = add(c, PRL_P_BAT_META, PRL_SEV_CORRUPT, v->idx, s,
					"virtual cluster %u points at the format extension cluster (sector %" PRIu64 ")",
					v->idx, s);
				drop(c, p, v->idx);
			} else if (v->owner == OWN_BAT && k > i) {
				p = add(c, PRL_P_BAT_DUP, PRL_SEV_CORRUPT, v->idx, s,
					"virtual clusters %u and %u both point at sector %" PRIu64,
					u->idx, v->idx, s);
				c->st[v->idx] = E_DUP;
				fix(c, p, "copied the shared cluster to a new cluster for virtual cluster %u: both read what they read before",
				    v->idx);
			} else if (v->owner == OWN_BM && k > i) {
				ext_problem(c, s, "dirty bitmap L1 entry %u points at sector %" PRIu64 ", which %s uses",
					    v->idx, s,
					    u->owner == OWN_BAT ? "guest data" :
					    "other extension data");
			}
		}
		orphans(c, next, u->cl);
		next = u->cl + 1;
		if (c->D + next * c->cs > c->end)
			c->end = c->D + next * c->cs;
	}
}

/*
 * Compaction: fill orphan clusters with the last clusters of the image and
 * shrink the file.  Only when nothing corrupt was found (c->may_compact):
 * in a damaged image an orphan may hold the real data of an entry that
 * was dropped, and is left alone for whoever wants to look at it.  Only
 * clusters with one BAT user move; the extension and bitmap clusters stay
 * (moving them would mean rewriting the extension), and the move stops at
 * the first of them from the end.
 */
static void plan_compact(struct ck *c)
{
	size_t top, r = 0, cap = 0;
	uint64_t hole, end_cl, filled_to = 0;
	const struct use *u;

	if (!c->may_compact || c->corrupt || c->ext_unknown || !c->nruns ||
	    !c->nuse)
		return;
	if (c->D % c->off_mult)
		return;
	hole = c->runs[0].from;
	top = c->nuse;
	while (top > 0) {
		u = &c->use[top - 1];
		/* a movable cluster has exactly one user, a plain BAT entry */
		if ((top >= 2 && c->use[top - 2].cl == u->cl) ||
		    u->owner != OWN_BAT || c->st[u->idx] != E_OK)
			break;
		while (r < c->nruns && hole >= c->runs[r].to) {
			if (++r < c->nruns)
				hole = c->runs[r].from;
		}
		if (r == c->nruns || hole >= u->cl)
			break;
		if (c->nmoves == cap) {
			cap = cap ? cap * 2 : 16;
			c->moves = realloc(c->moves, cap * sizeof(*c->moves));
			if (!c->moves) {
				fputs("prldisk: out of memory\n", stderr);
				abort();
			}
		}
		c->moves[c->nmoves].entry = u->idx;
		c->moves[c->nmoves].to_cl = hole;
		c->nmoves++;
		filled_to = hole + 1;
		hole++;
		top--;
	}
	if (!c->nmoves)
		return;
	end_cl = top ? c->use[top - 1].cl + 1 : 0;
	if (filled_to > end_cl)
		end_cl = filled_to;
	c->end = c->D + end_cl * c->cs;
	c->truncate_tail = true;
	/* A run is gone if all of it was filled or is now past the end. */
	for (r = 0; r < c->nruns; r++) {
		/* holes below filled_to are all filled (in order) */
		if (c->runs[r].to <= filled_to || c->runs[r].from >= end_cl ||
		    filled_to >= end_cl)
			fix(c, c->runs[r].p == SIZE_MAX ? NULL :
			    &c->rep->problems[c->runs[r].p], "compacted: the last clusters of the image were moved into the gap, the file was shortened");
	}
	for (r = 0; r < c->rep->nr; r++)
		if (c->rep->problems[r].kind == PRL_P_TAIL)
			fix(c, &c->rep->problems[r], "truncated the file to %" PRIu64 " bytes",
			    c->end * SECT);
}

/* When repairing, say why an orphan stays. */
static void keep_orphans(struct ck *c)
{
	const char *why = c->blk ? "on a block device" :
			  c->ext_unknown ? "it may hold data of an unknown extension feature" :
			  c->corrupt || !c->may_compact ?
			  "the image was damaged, it may hold the data of a broken entry; a repair of the repaired image compacts it" :
			  "the clusters above it cannot move";
	struct prl_problem *p;
	size_t r, len;

	if (!c->repair)
		return;
	for (r = 0; r < c->nruns; r++) {
		if (c->runs[r].p == SIZE_MAX)
			continue;
		p = &c->rep->problems[c->runs[r].p];
		len = strlen(p->msg);
		if (!p->fix[0])
			snprintf(p->msg + len, sizeof(p->msg) - len,
				 "; kept (%s)", why);
	}
}

/* ---- the whole check ------------------------------------------------- */

static void check_tail(struct ck *c)
{
	uint64_t extra, whole, ndup = 0, final;
	struct prl_problem *p;
	uint32_t i;

	if (c->blk || c->fbytes <= c->end * SECT)
		return;
	extra = c->fbytes - c->end * SECT;
	whole = extra / c->csb;
	if (whole)
		p = add(c, PRL_P_TAIL, PRL_SEV_LEAK, -1, c->end,
			"the file goes on for %" PRIu64 " unused cluster%s (%" PRIu64 " bytes) after the last used cluster, at sector %" PRIu64,
			whole, whole > 1 ? "s" : "", extra, c->end);
	else
		p = add(c, PRL_P_TAIL, PRL_SEV_LEAK, -1, c->end,
			"the file has a partial unused cluster (%" PRIu64 " bytes) after the last used cluster, at sector %" PRIu64,
			extra, c->end);
	if (c->ext_unknown) {
		size_t len = p ? strlen(p->msg) : 0;

		if (p)
			snprintf(p->msg + len, sizeof(p->msg) - len,
				 " (it may hold data of an unknown extension feature: kept)");
		return;
	}
	/* Copies of shared clusters go to the image end first. */
	for (i = 0; i < c->nread; i++)
		ndup += c->st[i] == E_DUP;
	final = (c->end + ndup * c->cs) * SECT;
	if (final < c->fbytes)
		fix(c, p, "truncated the file to %" PRIu64 " bytes", final);
	else
		fix(c, p, "the space now holds copies of shared clusters");
	c->truncate_tail = true;
}

static void check_flags(struct ck *c)
{
	struct prl_problem *p;
	uint32_t i;

	for (i = 0; i < c->nread; i++)
		c->allocated += c->st[i] == E_OK || c->st[i] == E_SHORT ||
				c->st[i] == E_DUP;
	/*
	 * Empty flag set while the BAT maps data.  QEMU ignores the flag (and
	 * leaves it set when it writes into a ploop-made image); dm-parallels
	 * and prldisk follow the BAT, so no data is at risk with them.  Only a
	 * tool that honours the flag would show the disk as blank (ploop's
	 * check objects), so it is reported as a warning that does not change
	 * the verdict (exit 0: QEMU itself makes such images all the time), and
	 * fixed by clearing the flag.  A clear flag on
	 * an empty image is not a problem: QEMU never sets it, and a clear flag
	 * claims nothing.
	 */
	if ((c->flags & PRL_FLAG_EMPTY) && c->allocated) {
		p = add(c, PRL_P_EMPTY_FLAG, PRL_SEV_WARN, -1, 0,
			"the Empty flag is set but the BAT maps %u cluster%s",
			c->allocated, c->allocated > 1 ? "s" : "");
		fix(c, p, "cleared the Empty flag");
		c->fix_flags = true;
	}
}

static void check_in_use(struct ck *c)
{
	struct prl_problem *p;

	if (c->in_use == PRL_IN_USE_CLOSED || c->in_use == PRL_IN_USE_CLOSED_OLD)
		return;
	if (prl_in_use_foreign(c->in_use)) {
		char st[PRL_STAMP_LEN];
		int text = prl_in_use_stamp(c->in_use, st);

		/*
		 * Parallels Desktop's "pd17", "pd22": closed, like 0.  Left as
		 * it is: QEMU and Parallels Desktop take it for closed.
		 */
		add(c, PRL_P_IN_USE, PRL_SEV_WARN, -1, 0,
		    "in_use holds a foreign creator stamp %s%s%s (Parallels Desktop writes one): taken as closed by older software, not an error; the dirty bitmaps, if any, are not trusted",
		    text ? "'" : "", st, text ? "'" : "");
		return;
	}
	/*
	 * Closed as 0, in both versions: ploop 1.15 takes any other value,
	 * "v2.1" (0x312e3276) included, for "dirty".  "v2.1" only vouches
	 * for a dirty bitmap, and the extension is dropped below.
	 */
	c->new_in_use = PRL_IN_USE_CLOSED_OLD;
	/* Anything else is a creator stamp, handled above: only "open" is left. */
	if (c->o && c->o->left_open)
		p = add(c, PRL_P_IN_USE, PRL_SEV_LEAK, -1, 0,
			"left open by the interrupted operation (in_use is set); nothing committed is lost");
	else
		p = add(c, PRL_P_IN_USE, PRL_SEV_CORRUPT, -1, 0,
			"the image was not closed cleanly (in_use is set)");
	fix(c, p, "set in_use to closed (0x%08x)", c->new_in_use);
	c->fix_in_use = true;
	/*
	 * A dirty bitmap saved before an unclean session misses its writes:
	 * a backup that trusts it would skip changed blocks.  Drop it.
	 */
	if (c->ext_off && c->ext_valid && !c->ext_drop && !c->ext_keep)
		ext_problem(c, c->ext_off, "its dirty bitmaps are stale: the image was not closed cleanly");
}

static void set_ext_fix(struct ck *c)
{
	size_t i;

	if (!c->ext_drop || c->ext_keep || !c->repair)
		return;
	for (i = 0; i < c->rep->nr; i++)
		if (c->rep->problems[i].kind == PRL_P_EXT)
			fix(c, &c->rep->problems[i],
			    "dropped the format extension (ext_off cleared): its dirty bitmaps are gone, the next backup must be a full one");
}

static void ck_free(struct ck *c)
{
	free(c->bat);
	free(c->st);
	free(c->use);
	free(c->runs);
	free(c->moves);
	c->runs = NULL;
	c->moves = NULL;
	c->bat = NULL;
	c->st = NULL;
	c->use = NULL;
}

static int analyse(struct ck *c, struct prl_err *err)
{
	int r;

	r = prl_fd_size(c->fd, &c->fbytes);
	if (r)
		return prl_errf(err, r, "cannot get the size of the image: %s",
				strerror(-r));
	c->fsect = c->fbytes / SECT;
	r = read_header(c, err);
	if (r <= 0)
		return r;
	r = read_bat(c, err);
	if (r)
		return r;
	pick_data_off(c);
	c->end = c->D;
	check_entries(c);
	check_ext(c);
	check_in_use(c);
	check_uses(c);
	check_flags(c);
	check_tail(c);
	plan_compact(c);
	keep_orphans(c);
	set_ext_fix(c);
	if (c->ext_keep && c->repair) {
		/* unknown NECESSARY feature: no repair writes anything */
		size_t i;

		for (i = 0; i < c->rep->nr; i++)
			c->rep->problems[i].fix[0] = 0;
	}
	return 0;
}

/* ---- repair ---------------------------------------------------------- */

static int copy_cluster(struct ck *c, uint64_t from, uint64_t to, void *buf)
{
	uint64_t off, len;
	int r;

	for (off = 0; off < c->csb; off += len) {
		len = c->csb - off < COPY_CHUNK ? c->csb - off : COPY_CHUNK;
		r = prl_pread_full(c->fd, buf, len, from * SECT + off);
		if (!r)
			r = prl_pwrite_full(c->fd, buf, len, to * SECT + off);
		if (r)
			return r;
	}
	return 0;
}

static int sync_fd(struct ck *c, const char *what, struct prl_err *err)
{
	if (fsync(c->fd))
		return prl_errf(err, errno, "cannot sync the image after %s: %s",
				what, strerror(errno));
	return 0;
}

/* Write BAT entries [lo, hi] and fsync. */
static int write_bat(struct ck *c, uint32_t lo, uint32_t hi,
		     struct prl_err *err)
{
	int r;

	if (lo > hi)
		return 0;
	r = prl_pwrite_full(c->fd, &c->bat[lo], (size_t)(hi - lo + 1) * 4,
			    PRL_HEADER_SIZE + (uint64_t)lo * 4);
	if (r)
		return prl_errf(err, r, "cannot write the BAT: %s", strerror(-r));
	return sync_fd(c, "writing the BAT", err);
}

/* @bytes for a message, rounded up: "960 KiB", "16 MiB", "2 GiB". */
static const char *space(char *buf, size_t len, uint64_t bytes, bool up)
{
	static const char *const unit[] = { "KiB", "MiB", "GiB", "TiB" };
	uint64_t div = 1024;
	size_t i = 0;

	while (i < 3 && bytes >= div * 1024 * 10)
		div *= 1024, i++;
	snprintf(buf, len, "%" PRIu64 " %s", bytes / div +
		 (up && bytes % div), unit[i]);
	return buf;
}

/*
 * The most a repair can add to the file (the same choices do_repair()
 * makes): the extension of a short file, a new cluster for each shared
 * entry, and the compaction's copies (into holes that may be sparse).
 * *@copies: the shared entries that get a copy.
 */
static uint64_t repair_growth(const struct ck *c, uint64_t *copies)
{
	uint64_t bytes = 0, alloc = c->end;
	uint32_t i;

	*copies = 0;
	if (c->extend_to > c->fbytes)
		bytes += c->extend_to - c->fbytes;
	for (i = 0; i < c->nread; i++) {
		if (c->st[i] != E_DUP)
			continue;
		if ((c->blk && (alloc + c->cs) * SECT > c->fbytes) ||
		    alloc / c->off_mult > UINT32_MAX)
			continue;
		(*copies)++;
		alloc += c->cs;
	}
	return bytes + (*copies + c->nmoves) * c->csb;
}

/*
 * Refuse a repair the file system has no room for, before it writes a
 * byte: entries sharing one cluster each need a copy, and a BAT of 2^28
 * entries sharing one can ask for terabytes.  A block device has its own
 * bound (its size), checked per cluster.
 */
static int check_room(struct ck *c, struct prl_err *err)
{
	char a[32], b[32], why[160];
	struct statvfs sv;
	uint64_t need, avail, copies;
	size_t n = 0;

	if (c->blk)
		return 0;
	need = repair_growth(c, &copies);
	if (!need)
		return 0;
	if (fstatvfs(c->fd, &sv))
		return prl_errf(err, errno, "%s: cannot tell the free space of its file system: %s",
				c->path, strerror(errno));
	avail = (uint64_t)sv.f_bavail * sv.f_frsize;
	if (need <= avail)
		return 0;
	why[0] = 0;
	if (copies)
		n += (size_t)snprintf(why + n, sizeof(why) - n,
				      ", a copy of a shared cluster for each of %" PRIu64 " entries",
				      copies);
	if (c->nmoves && n < sizeof(why))
		n += (size_t)snprintf(why + n, sizeof(why) - n,
				      ", %zu clusters moved", c->nmoves);
	if (c->extend_to > c->fbytes && n < sizeof(why))
		snprintf(why + n, sizeof(why) - n, ", the file extended to %" PRIu64 " bytes",
			 c->extend_to);
	return prl_errf(err, ENOSPC,
			"%s: the repair needs %s of free space (%" PRIu64 " bytes%s), but its file system has %s (%" PRIu64 " bytes) free: nothing was changed; make room, or copy the image to a larger file system and repair it there",
			c->path, space(a, sizeof(a), need, true), need, why,
			space(b, sizeof(b), avail, false), avail);
}

/*
 * Order: (0) check the file system has room for it all, (1) grow the file
 * where it is short, (2) zero the entries to drop
 * (they point at nothing valid, so nothing depends on them), (3) copy the
 * shared clusters to new clusters, fsync, (4) point the duplicates at their
 * copies, fsync, (5) header, fsync, (6) truncate the tail, fsync.  A crash
 * at any point leaves at worst leaked clusters and the problems not yet
 * repaired, never an entry pointing at data that was not written.
 */
static int do_repair(struct ck *c, struct prl_err *err)
{
	uint32_t i, lo = UINT32_MAX, hi = 0;
	uint64_t alloc = c->end, cur;
	bool hdr_dirty = false;
	void *buf = NULL;
	size_t k;
	int r;

	/* 0. free space for what follows */
	r = check_room(c, err);
	if (r)
		return r;

	/* 1. room */
	if (c->extend_to > c->fbytes) {
		if (ftruncate(c->fd, (off_t)c->extend_to))
			return prl_errf(err, errno, "cannot extend the image: %s",
					strerror(errno));
		r = sync_fd(c, "extending it", err);
		if (r)
			return r;
	}

	/* 2. entries that point at nothing valid */
	for (i = 0; i < c->nread; i++) {
		if (c->st[i] != E_DROP)
			continue;
		c->bat[i] = 0;
		lo = i < lo ? i : lo;
		hi = i > hi ? i : hi;
	}
	r = write_bat(c, lo, hi, err);
	if (r)
		return r;

	/* 3. copies of shared clusters, at the image end */
	lo = UINT32_MAX;
	hi = 0;
	for (i = 0; i < c->nread; i++) {
		uint64_t from;

		if (c->st[i] != E_DUP)
			continue;
		if ((c->blk && (alloc + c->cs) * SECT > c->fbytes) ||
		    alloc / c->off_mult > UINT32_MAX)
			continue;	/* no room, or not addressable: left */
		if (!buf)
			buf = prl_xmalloc(COPY_CHUNK);
		from = (uint64_t)le32toh(c->bat[i]) * c->off_mult;
		r = copy_cluster(c, from, alloc, buf);
		if (r) {
			free(buf);
			return prl_errf(err, r, "cannot copy a shared cluster: %s",
					strerror(-r));
		}
		c->bat[i] = htole32((uint32_t)(alloc / c->off_mult));
		c->st[i] = E_OK;
		alloc += c->cs;
		lo = i < lo ? i : lo;
		hi = i > hi ? i : hi;
	}
	free(buf);
	if (lo <= hi) {
		r = sync_fd(c, "copying shared clusters", err);
		/* 4. the duplicates now point at their copies */
		if (!r)
			r = write_bat(c, lo, hi, err);
		if (r)
			return r;
	}
	for (k = 0; k < c->rep->nr; k++) {
		struct prl_problem *p = &c->rep->problems[k];

		if (p->kind == PRL_P_BAT_DUP && p->entry >= 0 &&
		    (uint64_t)p->entry < c->nread && c->st[p->entry] == E_DUP)
			p->fix[0] = 0;	/* could not be copied */
	}

	/* 4b. compaction: copy, fsync, repoint, fsync (truncated below) */
	if (c->nmoves) {
		lo = UINT32_MAX;
		hi = 0;
		buf = prl_xmalloc(COPY_CHUNK);
		for (k = 0; k < c->nmoves; k++) {
			uint32_t e = c->moves[k].entry;
			uint64_t to = c->D + c->moves[k].to_cl * c->cs;

			r = copy_cluster(c, (uint64_t)le32toh(c->bat[e]) * c->off_mult,
					 to, buf);
			if (r) {
				free(buf);
				return prl_errf(err, r, "cannot move a cluster: %s",
						strerror(-r));
			}
		}
		free(buf);
		r = sync_fd(c, "moving clusters", err);
		if (r)
			return r;
		for (k = 0; k < c->nmoves; k++) {
			uint32_t e = c->moves[k].entry;

			c->bat[e] = htole32((uint32_t)((c->D + c->moves[k].to_cl * c->cs) /
						       c->off_mult));
			lo = e < lo ? e : lo;
			hi = e > hi ? e : hi;
		}
		r = write_bat(c, lo, hi, err);
		if (r)
			return r;
		alloc = c->end;
	}

	/* 5. header */
	if (c->fix_in_use) {
		c->hdr.in_use = htole32(c->new_in_use);
		hdr_dirty = true;
	}
	if (c->fix_flags) {
		c->hdr.flags = htole32(c->flags & ~PRL_FLAG_EMPTY);
		hdr_dirty = true;
	}
	if (c->fix_doff) {
		c->hdr.data_off = htole32((uint32_t)c->D);
		hdr_dirty = true;
	}
	if (c->ext_drop && !c->ext_keep) {
		c->hdr.ext_off = 0;
		hdr_dirty = true;
	}
	if (hdr_dirty) {
		r = prl_pwrite_full(c->fd, c->hraw, PRL_HEADER_SIZE, 0);
		if (r)
			return prl_errf(err, r, "cannot write the header: %s",
					strerror(-r));
		r = sync_fd(c, "writing the header", err);
		if (r)
			return r;
	}

	/* 6. tail */
	if (c->truncate_tail && !c->blk) {
		r = prl_fd_size(c->fd, &cur);
		if (!r && cur > alloc * SECT && ftruncate(c->fd, (off_t)(alloc * SECT)))
			r = -errno;
		if (r)
			return prl_errf(err, r, "cannot truncate the image: %s",
					strerror(-r));
		r = sync_fd(c, "truncating it", err);
		if (r)
			return r;
	}

	for (k = 0; k < c->rep->nr; k++)
		if (c->rep->problems[k].fix[0])
			c->rep->problems[k].repaired = true;
	return 0;
}

/* The slot of @p's twin in @rep (same kind, entry and sector), or NULL. */
static struct prl_problem *twin(struct prl_check_report *rep,
				const struct prl_problem *p)
{
	size_t i;

	for (i = 0; i < rep->nr; i++)
		if (rep->problems[i].kind == p->kind &&
		    rep->problems[i].entry == p->entry &&
		    rep->problems[i].sector == p->sector)
			return &rep->problems[i];
	return NULL;
}

/* Fold a later pass into the report: what is new, and what was repaired. */
static void merge(struct prl_check_report *rep,
		  const struct prl_check_report *pass)
{
	struct prl_problem *t;
	size_t i;

	for (i = 0; i < pass->nr; i++) {
		const struct prl_problem *p = &pass->problems[i];

		t = twin(rep, p);
		if (!t) {
			rep->nr_by_kind[p->kind]++;
			t = rep_slot(rep);
			if (!t)
				continue;
			*t = *p;
		} else if (p->repaired) {
			t->repaired = true;
			memcpy(t->fix, p->fix, sizeof(t->fix));
		}
	}
}

static int exit_code(const struct ck *c)
{
	return c->corrupt ? 2 : c->leak ? 3 : 0;
}

static void fill_stats(const struct ck *c, struct prl_check_report *rep)
{
	rep->bat_entries = c->nbat;
	rep->allocated = c->allocated;
	rep->cluster_sectors = c->cs;
	rep->file_sectors = c->fsect;
	rep->end_sector = c->end;
	rep->data_off = c->D;
	rep->format = c->fmt;
}

/* Something was found that this repair would change. */
static bool fixable(const struct prl_check_report *rep)
{
	size_t i;

	for (i = 0; i < rep->nr; i++)
		if (rep->problems[i].fix[0])
			return true;
	return false;
}

/*
 * The loop device a regular file backs, if any: a repair under a loop
 * device (maybe under an active dm-parallels table) would race the kernel.
 * Returns true with its name in @dev.
 */
static bool backs_loop(const struct stat *st, char *dev, size_t len)
{
	char p[300], back[4096];
	struct dirent *e;
	struct stat bs;
	bool found = false;
	ssize_t n;
	DIR *dir;
	int fd;

	dir = opendir("/sys/block");
	if (!dir)
		return false;
	while (!found && (e = readdir(dir))) {
		if (strncmp(e->d_name, "loop", 4))
			continue;
		snprintf(p, sizeof(p), "/sys/block/%s/loop/backing_file",
			 e->d_name);
		fd = open(p, O_RDONLY | O_CLOEXEC);
		if (fd < 0)
			continue;
		n = read(fd, back, sizeof(back) - 1);
		close(fd);
		if (n <= 0)
			continue;
		back[n] = 0;
		back[strcspn(back, "\n")] = 0;
		if (stat(back, &bs) || bs.st_dev != st->st_dev ||
		    bs.st_ino != st->st_ino)
			continue;
		snprintf(dev, len, "/dev/%.200s", e->d_name);
		found = true;
	}
	closedir(dir);
	return found;
}

static int open_image(const char *path, bool repair, bool *blk,
		      struct prl_err *err)
{
	char loop[256];
	struct stat st;
	int fd, r;

	fd = prl_open_image_file(path, repair ? O_RDWR : O_RDONLY, &st, err);
	if (fd < 0)
		return fd;
	*blk = S_ISBLK(st.st_mode);
	if (!repair)
		return fd;
	if (*blk) {
		/* Not while a dm table (or a mount) holds it. */
		close(fd);
		fd = prl_open_image_file(path, O_RDWR | O_EXCL, NULL, err);
		if (fd == -EBUSY)
			return prl_errf(err, EBUSY, "%s is in use: %s", path,
					strerror(EBUSY));
		if (fd < 0)
			return fd;
	} else if (backs_loop(&st, loop, sizeof(loop))) {
		close(fd);
		return prl_errf(err, EBUSY,
				"%s is attached to %s (maybe active): deactivate it, or detach it with losetup -d %s, before a repair",
				path, loop, loop);
	}
	/* The lock prldisk takes to write an image (see image.c). */
	if (flock(fd, LOCK_EX | LOCK_NB)) {
		r = errno == EWOULDBLOCK ? EBUSY : errno;
		close(fd);
		return prl_errf(err, r, "%s: image is opened for writing by another process",
				path);
	}
	return fd;
}

int prl_check(const char *path, const struct prl_check_opts *o,
	      struct prl_check_report *rep, struct prl_err *err)
{
	bool repair = o && o->repair, blk = false, last;
	struct prl_check_report pass;
	int fd, r, n;
	struct ck c;

	memset(rep, 0, sizeof(*rep));
	fd = open_image(path, repair, &blk, err);
	if (fd < 0)
		return fd;

	/*
	 * Pass 0 finds (and repairs); each later pass checks the result, and
	 * repairs what the previous repair uncovered.  The last one only
	 * checks: its verdict is what is returned.
	 */
	for (n = 0;; n++) {
		last = !repair || n == PRL_CHECK_PASSES;
		memset(&c, 0, sizeof(c));
		memset(&pass, 0, sizeof(pass));
		c.path = path;
		c.fd = fd;
		c.blk = blk;
		c.repair = !last;
		/* a pass after a repair of corruption does not compact either */
		c.may_compact = c.repair && !blk && (!n || rep->found != 2);
		c.o = o;
		c.rep = n ? &pass : rep;
		r = analyse(&c, err);
		if (!r) {
			r = exit_code(&c);
			fill_stats(&c, rep);
			if (!n)
				rep->found = r;
			if (!last && fixable(c.rep) &&
			    !c.rep->nr_by_kind[PRL_P_HEADER]) {
				int e = do_repair(&c, err);

				if (e)
					r = e;
				else
					rep->repairs++;
			} else {
				last = true;
			}
		}
		if (n)
			merge(rep, &pass);
		prl_check_report_free(&pass);
		ck_free(&c);
		if (r < 0 || last)
			break;
	}
	if (close(fd) && r >= 0 && repair)
		r = prl_errf(err, errno, "cannot close %s: %s", path,
			     strerror(errno));
	return r;
}

/* ---- interrupted operations and their leftovers ------------------------- */

char *prl_delete_marker(const char *xml, const char *guid)
{
	size_t n = strlen(guid);

	/* The GUID without its braces: no shell quoting needed for the name. */
	if (n > 2 && guid[0] == '{' && guid[n - 1] == '}')
		return prl_xasprintf("%s.delete.%.*s", xml, (int)(n - 2), guid + 1);
	return prl_xasprintf("%s.delete.%s", xml, guid);
}

int prl_delete_mark(const char *xml, const char *guid, bool *resume,
		    struct prl_err *err)
{
	char *m = prl_delete_marker(xml, guid), *text;
	struct stat st;
	int r;

	*resume = !prl_folder_lstat(m, &st) && S_ISREG(st.st_mode);
	text = prl_xasprintf("snapshot-delete %s\n", guid);
	r = *resume ? 0 : prl_write_file_atomic(m, text, strlen(text), 0644, err);
	free(text);
	free(m);
	return r;
}

void prl_delete_unmark(const char *xml, const char *guid)
{
	char *m = prl_delete_marker(xml, guid);

	if (!prl_folder_unlink(m))
		prl_fsync_dir_of(m);
	free(m);
}

/* Is @path locked by a running operation (the flock its writer holds)? */
static bool held(const char *path)
{
	int fd = prl_folder_open(path, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY, 0);
	bool busy = false;

	if (fd < 0)
		return false;
	if (flock(fd, LOCK_SH | LOCK_NB))
		busy = errno == EWOULDBLOCK;
	close(fd);
	return busy;
}

int prl_leftovers(const char *file, const char *tag, size_t rest,
		  struct prl_leftover **out, size_t *nr)
{
	/* Beneath a held folder no symlink is followed: not by realpath either. */
	char *real = prl_folder_beneath(file) ? NULL : realpath(file, NULL);
	char *slash, *dir, *base;
	size_t bl, tl = strlen(tag), cap = 0;
	struct dirent *e;
	struct stat st;
	DIR *dp;

	*out = NULL;
	*nr = 0;
	if (!real)
		real = prl_xstrdup(file);	/* a marker's descriptor may be gone */
	slash = strrchr(real, '/');
	dir = slash ? (slash == real ? prl_xstrdup("/") :
		       prl_xasprintf("%.*s", (int)(slash - real), real)) :
		      prl_xstrdup(".");
	base = slash ? slash + 1 : real;
	bl = strlen(base);
	dp = prl_folder_opendir(dir);
	while (dp && (e = readdir(dp))) {
		struct prl_leftover *l;
		char *p;

		if (strncmp(e->d_name, base, bl) || strncmp(e->d_name + bl, tag, tl) ||
		    strlen(e->d_name + bl + tl) != rest)
			continue;
		p = prl_xasprintf("%s/%s", dir, e->d_name);
		if (prl_folder_lstat(p, &st) || !S_ISREG(st.st_mode)) {
			free(p);
			continue;
		}
		if (*nr == cap) {
			cap = cap ? cap * 2 : 4;
			*out = realloc(*out, cap * sizeof(**out));
			if (!*out) {
				fputs("prldisk: out of memory\n", stderr);
				abort();
			}
		}
		l = &(*out)[(*nr)++];
		memset(l, 0, sizeof(*l));
		l->path = p;
		l->bytes = (uint64_t)st.st_size;
		l->busy = held(p);
		snprintf(l->id, sizeof(l->id), "%s", e->d_name + bl + tl);
	}
	if (dp)
		closedir(dp);
	free(dir);
	free(real);
	return 0;
}

void prl_leftovers_free(struct prl_leftover *l, size_t nr)
{
	size_t i;

	for (i = 0; i < nr; i++)
		free(l[i].path);
	free(l);
}
