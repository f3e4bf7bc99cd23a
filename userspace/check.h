/* SPDX-License-Identifier: GPL-2.0 */
/*
 * prldisk check: find every inconsistency of an image file, and with
 * repair, fix what can be fixed without losing data.
 *
 * Unlike prl_image_open(), which refuses a bad image at the first problem,
 * the check reads the header and BAT leniently and reports all it finds.
 */
#ifndef PRL_CHECK_H
#define PRL_CHECK_H

#include <stdbool.h>
#include <stdint.h>

#include "util.h"

enum prl_problem_kind {
	PRL_P_HEADER,		/* header unusable (magic, sizes): nothing else checked */
	PRL_P_IN_USE,		/* in_use set: not closed cleanly */
	PRL_P_DATA_OFF,		/* data_off wrong (inside the BAT, unaligned, ...) */
	PRL_P_EMPTY_FLAG,	/* Empty flag set with data (a clear flag is never wrong) */
	PRL_P_BAT_OUTSIDE,	/* entry past the end of the file */
	PRL_P_BAT_META,		/* entry into the header / BAT / extension */
	PRL_P_BAT_UNALIGNED,	/* entry off the cluster grid */
	PRL_P_BAT_DUP,		/* two entries share a cluster */
	PRL_P_ORPHAN,		/* a cluster inside the file no entry uses */
	PRL_P_TAIL,		/* file longer than the last used cluster */
	PRL_P_SHORT,		/* file ends inside the metadata or a cluster */
	PRL_P_EXT,		/* format extension: MD5, magic or layout wrong */
	PRL_P_NR_KINDS		/* (added) number of kinds, not a kind */
};

enum prl_severity {
	PRL_SEV_CORRUPT,	/* exit 2 */
	PRL_SEV_LEAK,		/* exit 3: space lost, no data at risk */
	PRL_SEV_WARN,		/* exit 0: harmless to every reader (Empty flag) */
};

struct prl_problem {
	enum prl_problem_kind kind;
	enum prl_severity sev;
	int64_t entry;		/* BAT index, or -1 */
	uint64_t sector;	/* file sector concerned, or 0 */
	char msg[256];		/* one line for the user */
	bool repaired;		/* set by a repair that fixed it */
	char fix[256];		/* what the repair did, if it did */
};

struct prl_check_report {
	size_t nr;
	struct prl_problem *problems;	/* malloc'ed array of nr */
	uint32_t bat_entries, allocated, cluster_sectors;
	uint64_t file_sectors, end_sector;

	/* Added (all additive): */
	uint64_t data_off;	/* data area start the check judged by, sectors */
	int format;		/* 1 WithoutFreeSpace, 2 WithouFreSpacExt, 0 unknown */
	int found;		/* exit code of what was found before any repair */
	unsigned int repairs;	/* repair passes that wrote something */
	/* Problems of each kind, listed or not (a list is capped). */
	uint64_t nr_by_kind[PRL_P_NR_KINDS];
	uint64_t nr_unlisted;	/* found beyond PRL_CHECK_MAX_LISTED */

	/* The format extension as found (for prldisk info). */
	bool ext_present;	/* ext_off is set */
	bool ext_valid;		/* magic and MD5 right */
	size_t nr_features;	/* listed in features[], the end marker not counted */
	struct prl_feature_info {
		uint64_t magic, flags;
		uint32_t data_size;
		bool bitmap;		/* a dirty bitmap: the fields below */
		uint64_t bm_size;	/* sectors */
		uint32_t bm_granularity;	/* sectors per bit */
		uint32_t bm_l1_size;
		uint8_t bm_id[16];
	} features[16];
};

/* At most this many problems are listed in prl_check_report.problems. */
#define PRL_CHECK_MAX_LISTED	10000

struct prl_check_opts {
	bool repair;
	/*
	 * The image was left open by an interrupted prldisk operation that
	 * is to be rerun (a snapshot-delete whose marker is there): in_use
	 * is then no sign of damage, only of the unfinished operation, and
	 * is reported as a leak (the repair still closes it).
	 */
	bool left_open;
	/* Called now and then on long runs (NULL: quiet). */
	void (*progress)(void *ctx, uint64_t done, uint64_t total);
	void *ctx;
};

/*
 * Check (and with o->repair, repair) the image at @path.  Returns the exit
 * code prldisk uses: 0 clean, 2 corrupt, 3 leaks only (after a repair: of
 * what is left), or a negative errno with @err set when the file could not
 * be read at all.  Repairs: in_use cleared, Empty flag set right, entries
 * out of the file / into metadata / off the grid dropped (the user is told
 * which virtual clusters now read from below), a duplicate entry given a
 * copy of the shared cluster (both keep reading what they read now),
 * data_off corrected, a file that ends inside a cluster or the BAT
 * extended with zeros, a bad format extension dropped, the tail truncated.
 * Orphans are compacted (the last clusters moved into them) only when the
 * image had nothing corrupt; in a damaged image they are kept, since one
 * may hold the real data of a dropped entry (a later repair of the
 * repaired image compacts them).  An unknown NECESSARY extension feature
 * means nothing is written at all.  Block devices: checked and repaired,
 * but never extended or truncated, and room after the image is no tail.
 * A repair of a file image that could need more than the free space of
 * its file system (shared clusters each get a copy) writes nothing and
 * returns -ENOSPC with the amount in the message.
 * The report lists problems of every pass, each with repaired / fix.
 */
int prl_check(const char *path, const struct prl_check_opts *o,
	      struct prl_check_report *rep, struct prl_err *err);

void prl_check_report_free(struct prl_check_report *rep);

/* Short stable names for --json: "in_use", "bat_duplicate", ... */
const char *prl_problem_name(enum prl_problem_kind kind);
/* "corrupt" or "leak". */
const char *prl_severity_name(enum prl_severity sev);

/*
 * Interrupted operations (Documentation/prldisk.rst, "Interrupted
 * operations").  snapshot-delete writes a marker beside the descriptor,
 * "<descriptor>.delete.<GUID without braces>", before it changes any
 * image, and removes it when done: a marker whose GUID is still a
 * snapshot is a delete to rerun (its children may be left open, with part
 * of the snapshot's clusters committed); one whose GUID is gone is a
 * leftover.  mark: create it (durably), or find it there: *@resume.
 */
char *prl_delete_marker(const char *xml, const char *guid);
int prl_delete_mark(const char *xml, const char *guid, bool *resume,
		    struct prl_err *err);
void prl_delete_unmark(const char *xml, const char *guid);

/*
 * Files beside @file (symlinks resolved) named "<its name><@tag>" and
 * @rest more characters: convert's "<image>.convert.XXXXXX", the
 * descriptor's "<xml>.tmp.XXXXXX", delete markers.  busy: an operation
 * running now holds its lock.
 */
struct prl_leftover {
	char *path;
	uint64_t bytes;
	bool busy;
	char id[64];	/* the @rest characters */
};

int prl_leftovers(const char *file, const char *tag, size_t rest,
		  struct prl_leftover **out, size_t *nr);
void prl_leftovers_free(struct prl_leftover *l, size_t nr);

#endif /* PRL_CHECK_H */
