// SPDX-License-Identifier: GPL-2.0
/*
 * prldisk: Parallels / Virtuozzo ("ploop") disks on Linux.
 *
 * Offline commands work on a DiskDescriptor.xml (or the folder holding it)
 * or on a single image file.  Each changes images first and the descriptor
 * last (atomically), and removes files only after that, so a crash at any
 * point leaves a disk that opens with every snapshot's data.  See
 * Documentation/prldisk.rst.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <json.h>
#include <stdio.h>
#include <stdlib.h>
#include <spawn.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "activate.h"
#include "bitmap.h"
#include "check.h"
#include "cli.h"
#include "folder.h"

extern char **environ;

#define PRLDISK_VERSION "0.4"

const char *prog = "prldisk";
struct prl_cli cli = { .fmt = PRL_V2, .cluster = 2048, .cluster_arg = "1M" };

static void usage_line(FILE *f)
{
	fprintf(f,
		"usage: prldisk <command> [options] ...\n"
		"  create DIR --size SIZE [--cluster-size SIZE] [--image-format v1|v2] [--plain]\n"
		"  info XML|IMAGE [--json]\n"
		"  check [--repair] XML|IMAGE [--json]\n"
		"  snapshot XML [--json]\n"
		"  snapshot-delete XML GUID\n"
		"  switch XML GUID\n"
		"  resize XML|IMAGE --size SIZE\n"
		"  convert XML|IMAGE --image-format v1|v2\n"
		"  activate XML [--name NAME] [--snapshot GUID] [--read-only] [--repair] [--cbt]\n"
		"  deactivate NAME|XML\n"
		"  list [--json]\n"
		"  status NAME|XML [--json]\n"
		"  bitmap list|show|diff|clear XML|IMAGE [--json]\n"
		"  bitmap export XML|IMAGE --qcow2 FILE\n"
		"  tab activate|deactivate|list [NAME...] [--tab FILE] (default /etc/prldisktab)\n"
		"XML is a DiskDescriptor.xml or the folder that holds it.  Common options:\n"
		"  --json  machine-readable output   --allow-external-paths  trust absolute\n"
		"  or escaping File paths in the descriptor.  See prldisk(8).\n");
}

int die_usage(const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "%s: ", prog);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	usage_line(stderr);
	return EX_USAGE;
}

int fail_err(const struct prl_err *err)
{
	fprintf(stderr, "%s: %s\n", prog, err->msg);
	return EX_FAIL;
}

/* ---- arguments ---------------------------------------------------------- */

/* "64M", "10G", "4096" (bytes), "8s" (sectors): a size in sectors. */
static int parse_size(const char *s, uint64_t *sectors, const char *what)
{
	static const char units[] = "KMGTP";
	unsigned long long v;
	const char *u;
	char *end;
	int shift = 0;

	errno = 0;
	if (*s < '0' || *s > '9')
		goto bad;
	v = strtoull(s, &end, 10);
	if (errno)
		goto bad;
	if (*end == 's' && !end[1]) {
		*sectors = v;
		return v ? 0 : -EINVAL;
	}
	if (*end) {
		u = strchr(units, *end & ~0x20);
		if (!u || (end[1] && strcmp(end + 1, "iB") && strcmp(end + 1, "B")))
			goto bad;
		shift = 10 * (int)(u - units + 1);
	}
	if (v > (UINT64_MAX >> shift))
		goto bad;
	v <<= shift;
	if (!v || v % 512) {
		fprintf(stderr, "%s: %s must be a non-zero multiple of 512 bytes: %s\n",
			prog, what, s);
		return -EINVAL;
	}
	*sectors = v / 512;
	return 0;
bad:
	fprintf(stderr, "%s: bad %s '%s' (use e.g. 64M, 10G, 4096 or 8s)\n",
		prog, what, s);
	return -EINVAL;
}

static int parse_format(const char *s, enum prl_format_version *fmt)
{
	if (!strcmp(s, "v1") || !strcmp(s, "1")) {
		*fmt = PRL_V1;
		return 0;
	}
	if (!strcmp(s, "v2") || !strcmp(s, "2")) {
		*fmt = PRL_V2;
		return 0;
	}
	fprintf(stderr, "%s: --image-format must be v1 (WithoutFreeSpace) or v2 (WithouFreSpacExt), not '%s'\n",
		prog, s);
	return -EINVAL;
}

/* A human size: "64 MiB". */
static const char *hsize(uint64_t bytes, char *buf, size_t len)
{
	static const char *const u[] = { "B", "KiB", "MiB", "GiB", "TiB", "PiB" };
	unsigned int i = 0;
	double v = (double)bytes;

	while (v >= 1024 && i < 5 && (bytes % 1024 == 0 || v >= 10240)) {
		v /= 1024;
		bytes /= 1024;
		i++;
	}
	if (v == (double)(uint64_t)v)
		snprintf(buf, len, "%" PRIu64 " %s", (uint64_t)v, u[i]);
	else
		snprintf(buf, len, "%.1f %s", v, u[i]);
	return buf;
}

/*
 * What the user named: a descriptor (the file, or a folder holding one), or
 * else an image file (NULL).  Symlinks are resolved here, once: the lock is
 * taken beside the real descriptor, and what is read is read from there.
 */
char *descriptor_path(const char *arg)
{
	struct stat st;
	size_t n = strlen(arg);
	char *xml, *real;

	if (!stat(arg, &st) && S_ISDIR(st.st_mode))
		xml = prl_xasprintf("%s/%s", arg, PRL_DESC_NAME);
	else if (n >= 4 && !strcasecmp(arg + n - 4, ".xml"))
		xml = prl_xstrdup(arg);
	else
		return NULL;
	real = prl_desc_real_path(xml);
	free(xml);
	return real;
}

int load_desc(const char *path, struct prl_desc **d)
{
	struct prl_err err;

	if (prl_desc_load(path, cli.external ? PRL_DESC_ALLOW_EXTERNAL : 0, d, &err))
		return fail_err(&err);
	return EX_OK;
}

/* ---- progress ----------------------------------------------------------- */

struct progress {
	const char *what;
	int last;
};

/* A line that rewrites itself, only when someone is watching. */
static void progress_cb(void *ctx, uint64_t done, uint64_t total)
{
	struct progress *p = ctx;
	int pct = total ? (int)(done * 100 / total) : 100;

	if (!isatty(STDOUT_FILENO) || cli.json || pct == p->last)
		return;
	p->last = pct;
	printf("\r%s: %3d%%", p->what, pct);
	if (done >= total)
		printf("\r\033[K");
	fflush(stdout);
}

/* ---- JSON --------------------------------------------------------------- */

void json_print(json_object *o)
{
	puts(json_object_to_json_string_ext(o, JSON_C_TO_STRING_PRETTY |
					    JSON_C_TO_STRING_NOSLASHESCAPE));
	json_object_put(o);
}

static void jadd(json_object *o, const char *k, json_object *v)
{
	json_object_object_add(o, k, v);
}

static json_object *jstr(const char *s)
{
	return s ? json_object_new_string(s) : json_object_new_null();
}

static json_object *ju64(uint64_t v)
{
	return json_object_new_uint64(v);
}

/* ---- info --------------------------------------------------------------- */

static const char *in_use_name(uint32_t v, char *buf, size_t len)
{
	char st[PRL_STAMP_LEN];
	int text;

	switch (v) {
	case PRL_IN_USE_CLOSED:
		return "closed";
	case PRL_IN_USE_CLOSED_OLD:
		return "closed (old style, 0)";
	case PRL_IN_USE_OPEN:
		return "in use (open, or not closed cleanly)";
	}
	/* Parallels Desktop writes "pd17", "pd22": closed, taken like 0. */
	text = prl_in_use_stamp(v, st);
	snprintf(buf, len, "closed (foreign creator stamp %s%s%s, taken as old style)",
		 text ? "'" : "", st, text ? "'" : "");
	return buf;
}

/* The format extension, as the (read-only) check found it. */
static bool ext_report(const char *path, struct prl_check_report *rep)
{
	struct prl_check_opts o = { .repair = false };
	struct prl_err err;

	memset(rep, 0, sizeof(*rep));
	return prl_check(path, &o, rep, &err) >= 0 && rep->ext_present;
}

static const char *feature_name(const struct prl_feature_info *f)
{
	return f->magic == PRL_EXT_DIRTY_BITMAP ? "dirty bitmap" : "unknown";
}

static void uuid_text(const uint8_t id[16], char out[37])
{
	static const char hex[] = "0123456789abcdef";
	int i, j = 0;

	for (i = 0; i < 16; i++) {
		if (i == 4 || i == 6 || i == 8 || i == 10)
			out[j++] = '-';
		out[j++] = hex[id[i] >> 4];
		out[j++] = hex[id[i] & 15];
	}
	out[j] = 0;
}

static json_object *ext_json(const char *path)
{
	struct prl_check_report rep;
	json_object *o, *fa;
	size_t i;

	if (!ext_report(path, &rep)) {
		prl_check_report_free(&rep);
		return json_object_new_null();
	}
	o = json_object_new_object();
	fa = json_object_new_array();
	jadd(o, "valid", json_object_new_boolean(rep.ext_valid));
	for (i = 0; i < rep.nr_features; i++) {
		const struct prl_feature_info *f = &rep.features[i];
		json_object *j = json_object_new_object();
		char id[37], magic[19];

		snprintf(magic, sizeof(magic), "0x%016" PRIx64, f->magic);
		jadd(j, "magic", jstr(magic));
		jadd(j, "type", jstr(feature_name(f)));
		jadd(j, "necessary", json_object_new_boolean(f->flags & PRL_EXT_FLAG_NECESSARY));
		jadd(j, "transit", json_object_new_boolean(f->flags & PRL_EXT_FLAG_TRANSIT));
		jadd(j, "data_size", ju64(f->data_size));
		if (f->bitmap) {
			uuid_text(f->bm_id, id);
			jadd(j, "id", jstr(id));
			jadd(j, "size", ju64(f->bm_size * 512));
			jadd(j, "granularity", ju64((uint64_t)f->bm_granularity * 512));
			jadd(j, "l1_size", ju64(f->bm_l1_size));
		}
		json_object_array_add(fa, j);
	}
	jadd(o, "features", fa);
	prl_check_report_free(&rep);
	return o;
}

static void ext_text(const char *path, uint64_t ext_off, const char *indent)
{
	struct prl_check_report rep;
	char a[32], id[37];
	size_t i;

	printf("%sformat extension: at sector %" PRIu64, indent, ext_off);
	if (!ext_report(path, &rep)) {
		printf(" (not readable)\n");
		prl_check_report_free(&rep);
		return;
	}
	printf(", %s\n", rep.ext_valid ? "MD5 valid" :
	       "damaged (see prldisk check)");
	for (i = 0; i < rep.nr_features; i++) {
		const struct prl_feature_info *f = &rep.features[i];

		printf("%s  feature %zu: %s (0x%016" PRIx64 ")%s%s, %u bytes\n",
		       indent, i, feature_name(f), f->magic,
		       f->flags & PRL_EXT_FLAG_NECESSARY ? ", necessary" : "",
		       f->flags & PRL_EXT_FLAG_TRANSIT ? ", transit" : "",
		       f->data_size);
		if (!f->bitmap)
			continue;
		uuid_text(f->bm_id, id);
		printf("%s    bitmap %s: granularity %s, covers %" PRIu64 " sectors, %u L1 entries\n",
		       indent, id, hsize((uint64_t)f->bm_granularity * 512, a, sizeof(a)),
		       f->bm_size, f->bm_l1_size);
	}
	prl_check_report_free(&rep);
}

static json_object *image_json(const struct prl_image *img)
{
	const struct prl_geom *g = &img->geom;
	json_object *o = json_object_new_object();

	jadd(o, "path", jstr(img->path));
	jadd(o, "format", jstr(g->fmt == PRL_V1 ? "v1" : "v2"));
	jadd(o, "magic", jstr(g->fmt == PRL_V1 ? PRL_MAGIC_V1 : PRL_MAGIC_V2));
	jadd(o, "virtual_size", ju64(g->nb_sectors * 512));
	jadd(o, "cluster_size", ju64((uint64_t)g->cluster_sectors * 512));
	jadd(o, "bat_entries", ju64(g->bat_entries));
	jadd(o, "allocated_clusters", ju64(img->allocated));
	jadd(o, "data_offset", ju64(g->data_off * 512));
	jadd(o, "image_end", ju64(img->end * 512));
	jadd(o, "file_size", ju64(img->file_sectors * 512));
	jadd(o, "in_use", json_object_new_boolean(g->in_use == PRL_IN_USE_OPEN));
	if (prl_in_use_foreign(g->in_use)) {
		char st[PRL_STAMP_LEN];

		prl_in_use_stamp(g->in_use, st);
		jadd(o, "foreign_stamp", jstr(st));
	} else {
		jadd(o, "foreign_stamp", json_object_new_null());
	}
	jadd(o, "empty_flag", json_object_new_boolean(g->flags & PRL_FLAG_EMPTY));
	jadd(o, "format_extension_offset", g->ext_off ? ju64(g->ext_off * 512) :
		 json_object_new_null());
	jadd(o, "format_extension", g->ext_off ? ext_json(img->path) :
		 json_object_new_null());
	return o;
}

static void image_text(const struct prl_image *img, const char *indent)
{
	const struct prl_geom *g = &img->geom;
	char a[32], b[32], iu[80];
	uint64_t cb = (uint64_t)g->cluster_sectors * 512;

	printf("%simage:          %s\n", indent, img->path);
	printf("%sformat:         %s (%s)\n", indent,
	       g->fmt == PRL_V1 ? "v1" : "v2",
	       g->fmt == PRL_V1 ? PRL_MAGIC_V1 : PRL_MAGIC_V2);
	printf("%svirtual size:   %s (%" PRIu64 " sectors)\n", indent,
	       hsize(g->nb_sectors * 512, a, sizeof(a)), (uint64_t)g->nb_sectors);
	printf("%scluster size:   %s (%u sectors)\n", indent,
	       hsize(cb, a, sizeof(a)), g->cluster_sectors);
	printf("%sallocated:      %u of %u clusters (%s of %s)\n", indent,
	       img->allocated, g->bat_entries,
	       hsize(img->allocated * cb, a, sizeof(a)),
	       hsize((uint64_t)g->bat_entries * cb, b, sizeof(b)));
	printf("%sdata offset:    sector %" PRIu64 "\n", indent, (uint64_t)g->data_off);
	printf("%simage end:      sector %" PRIu64 " (file: %" PRIu64 " sectors)\n",
	       indent, img->end, img->file_sectors);
	printf("%sin use:         %s\n", indent, in_use_name(g->in_use, iu, sizeof(iu)));
	printf("%sempty flag:     %s\n", indent,
	       g->flags & PRL_FLAG_EMPTY ? "set" : "clear");
	if (g->ext_off)
		ext_text(img->path, g->ext_off, indent);
	else
		printf("%sformat extension: none\n", indent);
}

static int info_image(const char *path)
{
	struct prl_image *img;
	struct prl_err err;

	if (prl_image_open(path, 0, &img, &err))
		return fail_err(&err);
	if (cli.json)
		json_print(image_json(img));
	else
		image_text(img, "");
	prl_image_close(img, &err);
	return EX_OK;
}

static const char *type_name(enum prl_image_type t)
{
	return t == PRL_IMAGE_PLAIN ? "Plain" : "Compressed";
}

/* Children of @parent, in descriptor order, drawn below it. */
static void draw_tree(const struct prl_desc *d, const char *parent,
		      const char *prefix)
{
	size_t i, left = prl_desc_nr_children(d, parent);

	for (i = 0; i < d->nr_shots && left; i++) {
		const struct prl_desc_shot *s = &d->shots[i];
		const struct prl_desc_image *im;
		char *sub;

		if (strcmp(s->parent, parent))
			continue;
		left--;
		im = prl_desc_image(d, s->guid);
		printf("%s%s %s  %s%s\n", prefix, left ? "├─" : "└─", s->guid,
		       im ? im->file : "?", strcmp(s->guid, d->top) ? "" : "  [top]");
		sub = prl_xasprintf("%s%s", prefix, left ? "│  " : "   ");
		draw_tree(d, s->guid, sub);
		free(sub);
	}
}

static int info_desc(const char *path)
{
	json_object *jd = NULL, *jimgs = NULL;
	struct prl_desc *d;
	char a[32];
	size_t i;
	int rc;

	rc = load_desc(path, &d);
	if (rc)
		return rc;
	if (cli.json) {
		jd = json_object_new_object();
		jimgs = json_object_new_array();
		jadd(jd, "descriptor", jstr(d->path));
		jadd(jd, "root_element", jstr(d->root_name));
		jadd(jd, "virtual_size", ju64(d->disk_size * 512));
		jadd(jd, "cylinders", ju64(d->cylinders));
		jadd(jd, "heads", ju64(d->heads));
		jadd(jd, "sectors", ju64(d->sectors));
		jadd(jd, "cluster_size", ju64((uint64_t)d->blocksize * 512));
		/* The descriptor's sector sizes, null where it has none. */
		jadd(jd, "logical_sector_size", d->logical_sector_size ?
		     ju64(d->logical_sector_size) : NULL);
		jadd(jd, "physical_sector_size", d->physical_sector_size ?
		     ju64(d->physical_sector_size) : NULL);
		jadd(jd, "top", jstr(d->top));
	} else {
		printf("disk:           %s\n", d->path);
		printf("virtual size:   %s (%" PRIu64 " sectors)\n",
		       hsize(d->disk_size * 512, a, sizeof(a)), d->disk_size);
		printf("geometry:       %u cylinders, %u heads, %u sectors\n",
		       d->cylinders, d->heads, d->sectors);
		printf("cluster size:   %s (%u sectors)\n",
		       hsize((uint64_t)d->blocksize * 512, a, sizeof(a)), d->blocksize);
		if (d->logical_sector_size && d->physical_sector_size)
			printf("sector size:    %u logical, %u physical\n",
			       d->logical_sector_size, d->physical_sector_size);
		else if (d->logical_sector_size || d->physical_sector_size)
			printf("sector size:    %u %s\n",
			       d->logical_sector_size ?: d->physical_sector_size,
			       d->logical_sector_size ? "logical" : "physical");
		printf("top:            %s\n", d->top);
		printf("snapshots:\n");
		draw_tree(d, PRL_GUID_NULL, "  ");
	}
	for (i = 0; i < d->nr_images; i++) {
		const struct prl_desc_image *im = &d->images[i];
		const struct prl_desc_shot *s = prl_desc_shot(d, im->guid);
		struct prl_image *img = NULL;
		struct prl_err err = { "" };
		json_object *j = NULL;

		if (im->type == PRL_IMAGE_COMPRESSED &&
		    prl_image_open(im->path, 0, &img, &err))
			rc = EX_FAIL;
		if (cli.json) {
			j = json_object_new_object();
			jadd(j, "guid", jstr(im->guid));
			jadd(j, "parent", jstr(s ? s->parent : NULL));
			jadd(j, "type", jstr(type_name(im->type)));
			jadd(j, "file", jstr(im->file));
			jadd(j, "top", json_object_new_boolean(!strcmp(im->guid, d->top)));
			if (img)
				jadd(j, "image", image_json(img));
			else if (err.msg[0])
				jadd(j, "error", jstr(err.msg));
			json_object_array_add(jimgs, j);
		} else {
			printf("\n%s (%s%s)\n", im->guid, type_name(im->type),
			       strcmp(im->guid, d->top) ? "" : ", top");
			if (img)
				image_text(img, "  ");
			else if (err.msg[0])
				printf("  error:          %s\n", err.msg);
			else
				printf("  file:           %s\n", im->path);
		}
		if (img)
			prl_image_close(img, &err);
	}
	if (cli.json) {
		jadd(jd, "images", jimgs);
		json_print(jd);
	}
	prl_desc_free(d);
	return rc;
}

static int cmd_info(int argc, char **argv)
{
	char *xml;
	int rc;

	if (argc != 1)
		return die_usage("info takes one XML or IMAGE");
	xml = descriptor_path(argv[0]);
	rc = xml ? info_desc(xml) : info_image(argv[0]);
	free(xml);
	return rc;
}

/* ---- check -------------------------------------------------------------- */

static const char *verdict_name(int rc)
{
	return rc == EX_OK ? "clean" : rc == EX_LEAKS ? "leaks only" :
	       rc == EX_CORRUPT ? "corrupt" : "error";
}

static int worse(int a, int b)
{
	/* corrupt beats leaks beats clean; errors beat everything */
	static const int rank[] = { [EX_OK] = 0, [EX_LEAKS] = 1, [EX_CORRUPT] = 2,
				    [EX_FAIL] = 3 };

	return rank[a] >= rank[b] ? a : b;
}

/* One image: print (or collect in @jarr) its problems; the exit code. */
static int check_one(const char *path, bool repair, const char *label,
		     bool left_open, json_object *jarr)
{
	struct prl_check_opts o = { .repair = repair, .left_open = left_open };
	struct prl_check_report rep = { 0 };
	struct progress p = { .what = path, .last = -1 };
	struct prl_err err = { "" };
	json_object *j = NULL, *jp = NULL;
	size_t i;
	int rc;

	o.progress = progress_cb;
	o.ctx = &p;
	rc = prl_check(path, &o, &rep, &err);
	if (cli.json) {
		j = json_object_new_object();
		jadd(j, "image", jstr(path));
		if (label)
			jadd(j, "guid", jstr(label));
		jp = json_object_new_array();
	}
	if (rc < 0) {
		if (cli.json) {
			jadd(j, "error", jstr(err.msg));
			json_object_put(jp);
			json_object_array_add(jarr, j);
		} else {
			fprintf(stderr, "%s: %s\n", prog, err.msg);
		}
		prl_check_report_free(&rep);
		return EX_FAIL;
	}
	for (i = 0; i < rep.nr; i++) {
		const struct prl_problem *pr = &rep.problems[i];

		if (cli.json) {
			json_object *x = json_object_new_object();

			jadd(x, "kind", jstr(prl_problem_name(pr->kind)));
			jadd(x, "severity", jstr(prl_severity_name(pr->sev)));
			jadd(x, "entry", pr->entry >= 0 ?
			     json_object_new_int64(pr->entry) : json_object_new_null());
			jadd(x, "sector", ju64(pr->sector));
			jadd(x, "message", jstr(pr->msg));
			jadd(x, "repaired", json_object_new_boolean(pr->repaired));
			if (pr->repaired)
				jadd(x, "fix", jstr(pr->fix));
			json_object_array_add(jp, x);
			continue;
		}
		printf("%s: %s: %s%s%s\n", path, prl_severity_name(pr->sev), pr->msg,
		       pr->repaired ? "; repaired: " : "", pr->repaired ? pr->fix : "");
	}
	if (cli.json) {
		jadd(j, "problems", jp);
		jadd(j, "not_listed", ju64(rep.nr_unlisted));
		jadd(j, "result", jstr(verdict_name(rc)));
		if (repair) {
			jadd(j, "found", jstr(verdict_name(rep.found)));
			jadd(j, "repairs", ju64(rep.repairs));
		}
		jadd(j, "allocated_clusters", ju64(rep.allocated));
		jadd(j, "bat_entries", ju64(rep.bat_entries));
		json_object_array_add(jarr, j);
	} else {
		if (rep.nr_unlisted)
			printf("%s: %zu more problems not listed\n", path,
			       (size_t)rep.nr_unlisted);
		printf("%s: %s%s (%u of %u clusters allocated)\n", path,
		       repair && rep.found != rc ? "after repair: " : "",
		       verdict_name(rc), rep.allocated, rep.bat_entries);
	}
	prl_check_report_free(&rep);
	return rc;
}

/* ---- interrupted operations (check) --------------------------------------- */

static json_object *jinterrupted, *jleftovers;

/* A snapshot-delete of @guid is marked as begun and not finished. */
static bool delete_pending(const struct prl_desc *d, const char *guid)
{
	char *m = prl_delete_marker(d->path, guid);
	struct stat st;
	bool r = !prl_folder_lstat(m, &st) && S_ISREG(st.st_mode);

	free(m);
	return r;
}

/* @guid's parent is being deleted: the delete left it open, not damage. */
static bool child_of_interrupted(const struct prl_desc *d, const char *guid)
{
	const struct prl_desc_shot *s = prl_desc_shot(d, guid);

	return s && strcmp(s->parent, PRL_GUID_NULL) && delete_pending(d, s->parent);
}

/*
 * Files an interrupted @what left beside @file (named "<file>@tag..."):
 * named, and removed by a repair unless an operation running now holds
 * them.  Leaks only: they are not part of the disk.
 */
/* Is @path one of @d's images (a layer may be named like a leftover)? */
static bool names_image(const struct prl_desc *d, const char *path)
{
	struct stat a, b;
	size_t i;

	if (!d || prl_folder_lstat(path, &a))
		return false;
	for (i = 0; i < d->nr_images; i++)
		if (!prl_folder_lstat(d->images[i].path, &b) &&
		    a.st_dev == b.st_dev && a.st_ino == b.st_ino)
			return true;
	return false;
}

static int check_leftovers(const struct prl_desc *d, const char *file,
			   const char *tag, const char *what, bool repair)
{
	struct prl_leftover *l;
	size_t i, nr;
	int rc = EX_OK;

	prl_leftovers(file, tag, 6, &l, &nr);
	for (i = 0; i < nr; i++) {
		bool removed = false;

		if (names_image(d, l[i].path))
			continue;

		if (!l[i].busy && repair) {
			removed = !prl_folder_unlink(l[i].path);
			if (removed)
				prl_fsync_dir_of(l[i].path);
		}
		if (!l[i].busy && !removed)
			rc = EX_LEAKS;
		if (cli.json) {
			json_object *x = json_object_new_object();

			jadd(x, "file", jstr(l[i].path));
			jadd(x, "left_by", jstr(what));
			jadd(x, "bytes", ju64(l[i].bytes));
			jadd(x, "in_use", json_object_new_boolean(l[i].busy));
			jadd(x, "removed", json_object_new_boolean(removed));
			json_object_array_add(jleftovers, x);
		} else if (l[i].busy) {
			printf("%s: being written by a prldisk %s running now\n",
			       l[i].path, what);
		} else {
			printf("%s: leak: leftover of an interrupted prldisk %s (%" PRIu64 " bytes), not part of the disk; %s\n",
			       l[i].path, what, l[i].bytes,
			       removed ? "repaired: removed" : "prldisk check --repair removes it");
		}
	}
	prl_leftovers_free(l, nr);
	return rc;
}

/* snapshot-delete markers: a delete to finish, or (its GUID gone) a leftover. */
static int check_deletes(const struct prl_desc *d, bool repair)
{
	struct prl_leftover *l;
	size_t i, nr;
	int rc = EX_OK;

	prl_leftovers(d->path, ".delete.", GUID_BARE_LEN, &l, &nr);
	for (i = 0; i < nr; i++) {
		char guid[PRL_GUID_LEN + 1];
		bool removed = false, pending;

		snprintf(guid, sizeof(guid), "{%.36s}", l[i].id);
		pending = !prl_guid_parse(guid, guid) && prl_desc_shot(d, guid);
		if (!pending && repair) {
			removed = !prl_folder_unlink(l[i].path);
			if (removed)
				prl_fsync_dir_of(l[i].path);
		}
		if (!removed)
			rc = EX_LEAKS;
		if (cli.json) {
			json_object *x = json_object_new_object();

			jadd(x, "operation", jstr("snapshot-delete"));
			jadd(x, "guid", jstr(guid));
			jadd(x, "marker", jstr(l[i].path));
			jadd(x, "pending", json_object_new_boolean(pending));
			if (pending) {
				char *cmd = prl_xasprintf("prldisk snapshot-delete %s %s",
							  d->path, guid);

				jadd(x, "command", jstr(cmd));
				free(cmd);
			}
			jadd(x, "removed", json_object_new_boolean(removed));
			json_object_array_add(jinterrupted, x);
		} else if (pending) {
			printf("%s: snapshot-delete of %s was interrupted: its children hold part of its clusters, nothing is lost; finish it with: prldisk snapshot-delete %s %s\n",
			       d->path, guid, d->path, guid);
		} else {
			printf("%s: leak: marker of a snapshot-delete of %s that finished (the snapshot is gone); %s\n",
			       l[i].path, guid, removed ? "repaired: removed" :
			       "prldisk check --repair removes it");
		}
	}
	prl_leftovers_free(l, nr);
	return rc;
}

/* The descriptor's own rules were checked by loading it; these are the files'. */
static int check_desc_images(const struct prl_desc *d, bool repair,
			     json_object *jarr)
{
	int rc = EX_OK;
	size_t i;

	for (i = 0; i < d->nr_images; i++) {
		const struct prl_desc_image *im = &d->images[i];
		struct prl_image *img;
		struct prl_err err;
		struct stat st;

		if (prl_folder_lstat(im->path, &st)) {
			fprintf(stderr, "%s: image %s: %s: %s\n", prog, im->guid,
				im->path, strerror(errno));
			rc = worse(rc, EX_CORRUPT);
			continue;
		}
		if (im->type == PRL_IMAGE_PLAIN) {
			if ((uint64_t)st.st_size / 512 < d->disk_size && !cli.json)
				printf("%s: Plain root shorter than the disk: the rest reads as zeros\n",
				       im->path);
			continue;
		}
		rc = worse(rc, check_one(im->path, repair, im->guid,
					 child_of_interrupted(d, im->guid), jarr));
		rc = worse(rc, check_leftovers(d, im->path, ".convert.", "convert", repair));
		/* The image's own size and cluster size against the descriptor. */
		if (prl_image_open(im->path, 0, &img, &err))
			continue;
		if (img->geom.cluster_sectors != d->blocksize) {
			fprintf(stderr, "%s: %s: cluster size %u sectors, but the descriptor's Blocksize is %u\n",
				prog, im->path, img->geom.cluster_sectors, d->blocksize);
			rc = worse(rc, EX_CORRUPT);
		}
		if (!strcmp(im->guid, d->top) && img->geom.nb_sectors < d->disk_size) {
			fprintf(stderr, "%s: %s: the top image covers %" PRIu64 " sectors, the disk is %" PRIu64 "\n",
				prog, im->path, (uint64_t)img->geom.nb_sectors, d->disk_size);
			rc = worse(rc, EX_CORRUPT);
		}
		prl_image_close(img, &err);
	}
	return rc;
}

/*
 * Load the descriptor at @xml for an offline change: with the disk's lock
 * held (taken first, so the descriptor read is the one changed) until the
 * command exits, and none of its images attached (an active disk is
 * changed online or not at all).  EX_OK, or EX_FAIL with the reason printed.
 */
static int load_desc_for_change(const char *xml, struct prl_desc **d,
				bool *online)
{
	struct prl_err err, e2;
	int fd, rc, r;

	fd = prl_lock_path(xml, &err);
	if (fd < 0)
		return fail_err(&err);
	rc = load_desc(xml, d);
	if (!rc && prl_disk_busy(*d, &err)) {
		/* Active read-write through prldisk: the caller goes online. */
		r = online ? prl_active_rw(*d, &e2) : 0;
		if (r == 1) {
			*online = true;
			return EX_OK;
		}
		prl_desc_free(*d);
		*d = NULL;
		rc = fail_err(r < 0 ? &e2 : &err);
	}
	if (rc)
		prl_disk_unlock(fd);
	return rc;	/* on success the lock stays held: exit drops it */
}

/*
 * A descriptor that does not load, beside a DiskDescriptor.xml.Backup
 * that does: say how to restore it (not done by --repair: which of the
 * two is right is the admin's call when the descriptor is there at all).
 */
static void backup_hint(const char *xml)
{
	char *bak = prl_desc_backup_path(xml);
	struct prl_desc *b;
	struct prl_err e;

	if (!prl_desc_load(bak, cli.external ? PRL_DESC_ALLOW_EXTERNAL : 0, &b, &e)) {
		fprintf(stderr, "%s: %s is sound: restore the descriptor from it with: cp -p '%s' '%s'\n",
			prog, bak, bak, xml);
		prl_desc_free(b);
	}
	free(bak);
}

/*
 * The backup, where there is one, is the descriptor byte for byte; one
 * that differs (a save cut between the two, or an older tool) is
 * rewritten by --repair from the descriptor, which was loaded and checked.
 */
static int check_backup(const struct prl_desc *d, bool repair)
{
	char *bak = prl_desc_backup_path(d->path), *a, *b;
	size_t la = 0, lb = 0;
	struct prl_err err;
	struct stat st;
	int rc = EX_OK;

	if (prl_folder_lstat(bak, &st) || !S_ISREG(st.st_mode)) {
		free(bak);
		return EX_OK;
	}
	a = prl_folder_read(d->path, PRL_DESC_MAX_BYTES, &la);
	b = prl_folder_read(bak, PRL_DESC_MAX_BYTES, &lb);
	if (a && (!b || la != lb || memcmp(a, b, la))) {
		if (!repair) {
			rc = EX_LEAKS;
			if (!cli.json)
				printf("%s: differs from the descriptor: prldisk check --repair copies the descriptor over it\n",
				       bak);
		} else if (prl_write_file_atomic(bak, a, la, 0644, &err)) {
			rc = fail_err(&err);
		} else if (!cli.json) {
			printf("%s: differed from the descriptor: repaired: rewritten from it\n",
			       bak);
		}
	}
	free(a);
	free(b);
	free(bak);
	return rc;
}

/*
 * check [--repair] of every image of the descriptor at @xml.  A repair
 * holds the disk's lock and refuses an active disk; a check of one notes
 * that what the kernel is writing may look inconsistent.
 */
static int check_desc(const char *xml, bool repair, json_object *jarr)
{
	struct prl_desc *d;
	struct prl_err err;
	int fd = -1, rc;
	char *bak;

	if (repair) {
		fd = prl_lock_path(xml, &err);
		if (fd < 0)
			return fail_err(&err);
	}
	if (load_desc(xml, &d)) {
		rc = EX_CORRUPT;	/* a descriptor that does not load: corrupt */
		backup_hint(xml);
		goto out;
	}
	if (prl_disk_busy(d, &err)) {
		if (repair) {
			rc = fail_err(&err);
			goto free;
		}
		fprintf(stderr, "%s: note: %s; images the kernel is writing may look inconsistent\n",
			prog, err.msg);
	}
	rc = check_desc_images(d, repair, jarr);
	rc = worse(rc, check_deletes(d, repair));
	rc = worse(rc, check_leftovers(d, d->path, ".tmp.", "descriptor save", repair));
	bak = prl_desc_backup_path(d->path);
	rc = worse(rc, check_leftovers(d, bak, ".tmp.", "descriptor save", repair));
	free(bak);
	rc = worse(rc, check_backup(d, repair));
free:
	prl_desc_free(d);
out:
	prl_disk_unlock(fd);
	return rc;
}

static int cmd_check(int argc, char **argv, bool repair)
{
	json_object *jarr = cli.json ? json_object_new_array() : NULL;
	char *xml;
	int rc;

	if (argc != 1)
		return die_usage("check takes one XML or IMAGE");
	if (cli.json) {
		jinterrupted = json_object_new_array();
		jleftovers = json_object_new_array();
	}
	xml = descriptor_path(argv[0]);
	if (xml)
		rc = check_desc(xml, repair, jarr);
	else
		rc = worse(check_one(argv[0], repair, NULL, false, jarr),
			   check_leftovers(NULL, argv[0], ".convert.", "convert", repair));
	free(xml);
	if (cli.json) {
		json_object *o = json_object_new_object();

		jadd(o, "images", jarr);
		jadd(o, "interrupted", jinterrupted);
		jadd(o, "leftovers", jleftovers);
		jinterrupted = jleftovers = NULL;
		jadd(o, "result", jstr(verdict_name(rc)));
		jadd(o, "exit_code", json_object_new_int(rc));
		json_print(o);
	}
	return rc;
}

/* ---- create ------------------------------------------------------------- */

/* A file name for a new image next to the others: root.hds.{uuid}. */
static char *new_image_file(const struct prl_desc *d, const char *base)
{
	char g[PRL_GUID_LEN + 1];
	char *file, *path;
	struct stat st;

	for (;;) {
		prl_guid_new(g);
		file = prl_xasprintf("%s.%s", base, g);
		path = prl_xasprintf("%s/%s", d->dir, file);
		if (prl_folder_lstat(path, &st) && errno == ENOENT) {
			free(path);
			return file;
		}
		free(path);
		free(file);
	}
}

static int create_plain(const char *path, uint64_t sectors, struct prl_err *err)
{
	int fd = prl_folder_open(path, O_WRONLY | O_CREAT | O_EXCL, 0600);
	int r = 0;

	if (fd < 0)
		return prl_errf(err, errno, "cannot create %s: %s", path, strerror(errno));
	if (ftruncate(fd, (off_t)(sectors * 512)) || fsync(fd))
		r = prl_errf(err, errno, "cannot size %s: %s", path, strerror(errno));
	close(fd);
	if (r)
		prl_folder_unlink(path);
	return r ? r : prl_fsync_dir_of(path);
}

static int cmd_create(int argc, char **argv, uint64_t size, uint64_t cluster,
		      enum prl_format_version fmt, bool plain)
{
	struct prl_create_opts o = { .size = size, .cluster_sectors = (uint32_t)cluster,
				     .fmt = fmt };
	const char *dir, *file;
	struct prl_desc *d;
	struct prl_err err;
	char *xml, *img;
	int r;

	if (argc != 1)
		return die_usage("create takes one folder");
	if (!size)
		return die_usage("create needs --size");
	if (!prl_cluster_size_ok(cluster))
		return die_usage("--cluster-size %s: ploop and QEMU both accept only powers of two from 32K to 64M",
				 cli.cluster_arg);
	dir = argv[0];
	if (mkdir(dir, 0755) && errno != EEXIST) {
		fprintf(stderr, "%s: cannot create %s: %s\n", prog, dir, strerror(errno));
		return EX_FAIL;
	}
	xml = prl_xasprintf("%s/%s", dir, PRL_DESC_NAME);
	if (!access(xml, F_OK)) {
		fprintf(stderr, "%s: %s exists already: not overwriting a disk\n", prog, xml);
		free(xml);
		return EX_FAIL;
	}
	file = plain ? "root.raw" : "root.hds";
	img = prl_xasprintf("%s/%s", dir, file);
	r = plain ? create_plain(img, size, &err) : prl_image_create(img, &o, &err);
	if (r) {
		free(img);
		free(xml);
		return fail_err(&err);
	}
	/* The image exists before the descriptor that names it. */
	d = prl_desc_new(xml, size, (uint32_t)cluster);
	if (!d) {
		prl_folder_unlink(img);
		free(img);
		free(xml);
		fprintf(stderr, "%s: a disk of %" PRIu64 " sectors cannot be described\n",
			prog, size);
		return EX_FAIL;
	}
	if (prl_desc_add(d, PRL_GUID_TOP, plain ? PRL_IMAGE_PLAIN : PRL_IMAGE_COMPRESSED,
			 file, PRL_GUID_NULL, &err) ||
	    prl_desc_set_top(d, PRL_GUID_TOP, &err) || prl_desc_save(d, &err)) {
		prl_folder_unlink(img);
		r = fail_err(&err);
	} else if (cli.json) {
		json_object *o2 = json_object_new_object();

		jadd(o2, "descriptor", jstr(d->path));
		jadd(o2, "image", jstr(img));
		jadd(o2, "guid", jstr(PRL_GUID_TOP));
		json_print(o2);
	} else {
		printf("%s\n", d->path);
	}
	prl_desc_free(d);
	free(img);
	free(xml);
	return r ? EX_FAIL : EX_OK;
}

/* ---- snapshots ---------------------------------------------------------- */

static const struct prl_desc_image *top_image(const struct prl_desc *d)
{
	return prl_desc_image(d, d->top);
}

/*
 * New deltas are named after the root image, as ploop does: root.hds.{uuid}.
 * The root may itself be such a delta (snapshot-delete of the old root
 * makes its child the root): its GUID suffixes are dropped, or a daily
 * rotation would grow every name by one GUID until it hits NAME_MAX.
 */
static char *delta_base(const struct prl_desc *d)
{
	char g[PRL_GUID_LEN + 1], *base, *dot;
	size_t i;

	for (i = 0; i < d->nr_shots; i++) {
		const struct prl_desc_image *im;

		if (strcmp(d->shots[i].parent, PRL_GUID_NULL))
			continue;
		im = prl_desc_image(d, d->shots[i].guid);
		if (im && im->type == PRL_IMAGE_COMPRESSED && !strchr(im->file, '/'))
			break;
	}
	base = prl_xstrdup(i < d->nr_shots ?
			   prl_desc_image(d, d->shots[i].guid)->file : "root.hds");
	while ((dot = strrchr(base, '.')) && dot != base &&
	       !prl_guid_parse(dot + 1, g))
		*dot = '\0';
	return base;
}

/*
 * The cluster size of every expandable image of @d's chain from @guid
 * down must be the descriptor's Blocksize, and that a size prldisk makes
 * images with: a new layer on the chain gets it.
 */
static int check_blocksize(const struct prl_desc *d, const char *guid,
			   struct prl_err *err)
{
	const struct prl_desc_image **chain;
	struct prl_image *img;
	size_t i, n;
	int r;

	r = prl_desc_chain(d, guid, &chain, &n, err);
	for (i = 0; i < n && !r; i++) {
		if (chain[i]->type != PRL_IMAGE_COMPRESSED)
			continue;
		r = prl_image_open(chain[i]->path, 0, &img, err);
		if (r)
			break;
		if (img->geom.cluster_sectors != d->blocksize)
			r = prl_errf(err, EINVAL,
				     "%s: cluster size %u sectors, but the descriptor's Blocksize is %u: a new layer would not match the chain; correct <Blocksize> in %s",
				     chain[i]->path, img->geom.cluster_sectors,
				     d->blocksize, d->path);
		prl_image_close(img, &(struct prl_err){ "" });
	}
	free(chain);
	if (!r && !prl_cluster_size_ok(d->blocksize))
		r = prl_errf(err, EINVAL,
			     "%s: Blocksize %u sectors: prldisk makes new layers only with cluster sizes ploop and QEMU both accept, powers of two from 32K to 64M",
			     d->path, d->blocksize);
	return r;
}

/*
 * An offline snapshot freezes the top as it is: one that was not closed
 * cleanly (a crash while it was active, a killed writer) would become a
 * read-only layer with whatever its table lacks; repair it first.
 */
static int check_top_closed(const struct prl_desc *d, struct prl_err *err)
{
	const struct prl_desc_image *top = prl_desc_image(d, d->top);
	struct prl_image *img;
	int r;

	if (!top || top->type != PRL_IMAGE_COMPRESSED)
		return 0;
	r = prl_image_open(top->path, 0, &img, err);
	if (r)
		return r;
	if (img->geom.in_use == PRL_IN_USE_OPEN)
		r = prl_errf(err, EBUSY,
			     "%s: the top image was not closed cleanly (in_use is set): run prldisk check --repair %s first, then snapshot",
			     top->path, d->path);
	prl_image_close(img, &(struct prl_err){ "" });
	return r;
}

/*
 * A new empty image: @d's size and cluster size, and the owner, group and
 * mode of the top it goes on (root making a snapshot of a user's disk
 * leaves the disk the user's).
 */
int prl_create_delta(const struct prl_desc *d, const char *path,
			struct prl_err *err)
{
	struct prl_create_opts o = { .size = d->disk_size,
				     .cluster_sectors = d->blocksize, .fmt = PRL_V2 };
	const struct prl_desc_image *top = prl_desc_image(d, d->top);
	struct stat st;

	if (top && !prl_folder_lstat(top->path, &st) && S_ISREG(st.st_mode))
		o.like = &st;
	if (!prl_cluster_size_ok(d->blocksize))
		return prl_errf(err, EINVAL,
				"%s: Blocksize %u sectors: prldisk makes new layers only with cluster sizes ploop and QEMU both accept, powers of two from 32K to 64M",
				d->path, d->blocksize);
	return prl_image_create(path, &o, err);
}

/*
 * snapshot: the top becomes a read-only snapshot, a new empty image the top.
 * Like ploop, the top keeps the well-known top GUID when it has it: the old
 * top image is given the new snapshot GUID.
 */
static int cmd_snapshot(int argc, char **argv)
{
	char snap[PRL_GUID_LEN + 1], newtop[PRL_GUID_LEN + 1];
	struct prl_desc *d;
	struct prl_err err;
	char *xml, *file, *path, *base;
	bool online = false;
	int rc;

	if (argc != 1)
		return die_usage("snapshot takes one XML");
	xml = descriptor_path(argv[0]);
	if (!xml)
		return die_usage("snapshot needs a DiskDescriptor.xml (or its folder)");
	rc = load_desc_for_change(xml, &d, &online);
	free(xml);
	if (rc)
		return rc;
	if (check_blocksize(d, d->top, &err) ||
	    (!online && check_top_closed(d, &err))) {
		prl_desc_free(d);
		return fail_err(&err);
	}
	base = delta_base(d);
	file = new_image_file(d, base);
	free(base);
	path = prl_xasprintf("%s/%s", d->dir, file);
	prl_guid_new(snap);
	if (!strcmp(d->top, PRL_GUID_TOP)) {
		strcpy(newtop, PRL_GUID_TOP);
		rc = prl_desc_rename(d, PRL_GUID_TOP, snap, &err);
	} else {
		prl_guid_new(newtop);
		strcpy(snap, d->top);
		rc = 0;
	}
	if (!rc && online) {
		rc = prl_snapshot_online(d, file, snap, newtop, &err);
	} else if (!rc) {
		const struct prl_desc_image *old = prl_desc_image(d, snap);

		rc = prl_create_delta(d, path, &err);
		/* The old top's dirty bitmap goes on in the new one. */
		if (!rc && prl_bitmap_carry(old, path, &err) < 0) {
			rc = -EIO;
			prl_folder_unlink(path);	/* a new delta nothing names */
		}
		if (!rc) {
			rc = prl_desc_add(d, newtop, PRL_IMAGE_COMPRESSED, file, snap, &err);
			if (!rc)
				rc = prl_desc_set_top(d, newtop, &err);
			if (!rc)
				rc = prl_desc_save(d, &err);
			if (rc)
				prl_folder_unlink(path);
		}
	}
	if (rc) {
		rc = fail_err(&err);
	} else if (cli.json) {
		json_object *o = json_object_new_object();

		jadd(o, "snapshot", jstr(snap));
		jadd(o, "top", jstr(newtop));
		jadd(o, "image", jstr(path));
		json_print(o);
	} else {
		printf("snapshot %s; new top %s in %s\n", snap, newtop, file);
	}
	free(path);
	free(file);
	prl_desc_free(d);
	return rc;
}

static int open_rw(const char *path, struct prl_image **img, struct prl_err *err)
{
	return prl_image_open(path, PRL_OPEN_RW, img, err);
}

/*
 * snapshot-delete GUID: the snapshot's data moves into each child (what a
 * child lacks, it now holds itself), the children hang from the snapshot's
 * parent, and only then is the file removed.  Every view stays the same.
 */
static int cmd_snapshot_delete(int argc, char **argv)
{
	const struct prl_desc_image *victim;
	const struct prl_desc_shot *vs;
	struct prl_image *from = NULL;
	char guid[PRL_GUID_LEN + 1];
	struct prl_desc *d;
	struct prl_err err;
	char *xml, *vpath = NULL;
	bool online = false, resume = false, marked = false;
	size_t i;
	int rc;

	if (argc != 2)
		return die_usage("snapshot-delete takes an XML and a GUID");
	if (prl_guid_parse(argv[1], guid))
		return die_usage("'%s' is not a GUID like {12345678-9abc-def1-2345-6789abcdef12}", argv[1]);
	xml = descriptor_path(argv[0]);
	if (!xml)
		return die_usage("snapshot-delete needs a DiskDescriptor.xml (or its folder)");
	rc = load_desc_for_change(xml, &d, &online);
	free(xml);
	if (rc)
		return rc;
	victim = prl_desc_image(d, guid);
	vs = prl_desc_shot(d, guid);
	if (!victim || !vs) {
		fprintf(stderr, "%s: no snapshot %s in %s\n", prog, guid, d->path);
		rc = EX_FAIL;
		goto out;
	}
	if (!strcmp(guid, d->top)) {
		fprintf(stderr, "%s: %s is the top (the live image), not a snapshot: use switch to leave it\n",
			prog, guid);
		rc = EX_FAIL;
		goto out;
	}
	if (victim->type == PRL_IMAGE_PLAIN && prl_desc_nr_children(d, guid)) {
		fprintf(stderr, "%s: %s is a Plain root with snapshots on it; it cannot be deleted\n",
			prog, guid);
		rc = EX_FAIL;
		goto out;
	}
	if (!strcmp(vs->parent, PRL_GUID_NULL) && prl_desc_nr_children(d, guid) > 1) {
		fprintf(stderr, "%s: %s is the root of %zu branches: deleting it would leave several roots\n",
			prog, guid, prl_desc_nr_children(d, guid));
		rc = EX_FAIL;
		goto out;
	}
	/*
	 * The marker says, until the end, that this delete is under way: a
	 * run killed midway is told from damage by check, and rerun, goes on
	 * where it was (each child's committed clusters are not copied again).
	 */
	if (prl_delete_mark(d->path, guid, &resume, &err)) {
		rc = fail_err(&err);
		goto out;
	}
	marked = !resume;
	if (online) {
		struct progress p = { .last = -1, .what = d->path };

		vpath = prl_xstrdup(victim->path);
		rc = prl_snapshot_delete_online(d, guid, progress_cb, &p, &err);
		if (rc)
			rc = fail_err(&err);
		else
			prl_delete_unmark(d->path, guid);
		goto deleted;
	}
	vpath = prl_xstrdup(victim->path);
	if (victim->type == PRL_IMAGE_COMPRESSED &&
	    prl_image_open(vpath, 0, &from, &err)) {
		rc = fail_err(&err);
		goto out;
	}
	/* 1. Each child takes the clusters it read from the victim. */
	for (i = 0; i < d->nr_shots && from; i++) {
		const struct prl_desc_image *ci;
		struct prl_image *child;
		struct progress p = { .last = -1 };

		if (strcmp(d->shots[i].parent, guid))
			continue;
		ci = prl_desc_image(d, d->shots[i].guid);
		p.what = ci->path;
		/* A child our killed run left open is ours to take over. */
		if (prl_image_open(ci->path, PRL_OPEN_RW | (resume ? PRL_OPEN_IGNORE_IN_USE : 0),
				   &child, &err)) {
			rc = fail_err(&err);
			goto out;
		}
		rc = prl_image_fill(child, from, progress_cb, &p, &err);
		/* What the killed run copied but never committed is cut off. */
		if (!rc && resume)
			rc = prl_image_truncate(child, &err);
		if (prl_image_close(child, rc ? &(struct prl_err){ "" } : &err) && !rc)
			rc = -EIO;
		if (rc) {
			rc = fail_err(&err);
			goto out;
		}
	}
	/* 2. The descriptor no longer names it; 3. then the file goes. */
	if (prl_desc_delete(d, guid, &err) || prl_desc_save(d, &err)) {
		rc = fail_err(&err);
		goto out;
	}
	if (prl_folder_unlink(vpath))
		fprintf(stderr, "%s: warning: could not remove %s: %s\n", prog, vpath,
			strerror(errno));
	prl_delete_unmark(d->path, guid);
	rc = EX_OK;
deleted:
	if (!rc && !cli.json)
		printf("deleted snapshot %s (%s)%s\n", guid, vpath, online ? " online" : "");
out:
	if (from)
		prl_image_close(from, &err);
	/*
	 * A delete that failed, rather than was killed, closed what it opened:
	 * what it copied is the snapshot's own data, and nothing is left to
	 * finish, so a marker this run made would only make check say there
	 * is (a delete refused online before it began, say).
	 */
	if (rc && marked)
		prl_delete_unmark(d->path, guid);
	free(vpath);
	prl_desc_free(d);
	return rc;
}

/*
 * switch GUID: like ploop snapshot-switch, the disk goes back to snapshot
 * GUID: a new empty top on it, and the old top (the changes made since) is
 * dropped.
 */
static int cmd_switch(int argc, char **argv)
{
	const struct prl_desc_image *top, *to;
	char guid[PRL_GUID_LEN + 1], newtop[PRL_GUID_LEN + 1];
	struct prl_desc *d;
	struct prl_err err;
	char *xml, *file = NULL, *path = NULL, *oldpath = NULL, *base;
	int rc;

	if (argc != 2)
		return die_usage("switch takes an XML and a GUID");
	if (prl_guid_parse(argv[1], guid))
		return die_usage("'%s' is not a GUID", argv[1]);
	xml = descriptor_path(argv[0]);
	if (!xml)
		return die_usage("switch needs a DiskDescriptor.xml (or its folder)");
	rc = load_desc_for_change(xml, &d, NULL);
	free(xml);
	if (rc)
		return rc;
	to = prl_desc_image(d, guid);
	top = top_image(d);
	if (!to) {
		fprintf(stderr, "%s: no snapshot %s in %s\n", prog, guid, d->path);
		rc = EX_FAIL;
		goto out;
	}
	if (to == top) {
		fprintf(stderr, "%s: %s is the top already\n", prog, guid);
		rc = EX_FAIL;
		goto out;
	}
	if (top->type == PRL_IMAGE_PLAIN) {
		fprintf(stderr, "%s: the top is a Plain image: nothing to switch from\n", prog);
		rc = EX_FAIL;
		goto out;
	}
	if (check_blocksize(d, guid, &err)) {
		rc = fail_err(&err);
		goto out;
	}
	oldpath = prl_xstrdup(top->path);
	base = delta_base(d);
	file = new_image_file(d, base);
	free(base);
	path = prl_xasprintf("%s/%s", d->dir, file);
	strcpy(newtop, d->top);
	/*
	 * New top image, then the descriptor (the top, GUID kept, now hangs
	 * from @guid and names the new file), then the old top's file.
	 */
	rc = prl_create_delta(d, path, &err);
	if (!rc) {
		rc = prl_desc_set_parent(d, newtop, guid, &err);
		if (!rc)
			rc = prl_desc_set_file(d, newtop, file, &err);
		if (!rc)
			rc = prl_desc_save(d, &err);
		if (rc)
			prl_folder_unlink(path);
	}
	if (rc) {
		rc = fail_err(&err);
		goto out;
	}
	if (prl_folder_unlink(oldpath))
		fprintf(stderr, "%s: warning: could not remove the old top %s: %s\n",
			prog, oldpath, strerror(errno));
	if (!cli.json)
		printf("switched to %s; new top %s in %s (old top %s removed)\n",
		       guid, newtop, file, oldpath);
	rc = EX_OK;
out:
	free(oldpath);
	free(path);
	free(file);
	prl_desc_free(d);
	return rc;
}

/* ---- resize and convert ------------------------------------------------- */

static int grow_image(const char *path, uint64_t size, struct prl_err *err)
{
	struct prl_image *img;
	int r;

	r = open_rw(path, &img, err);
	if (r)
		return r;
	if (size < img->geom.nb_sectors) {
		prl_image_close(img, err);
		return prl_errf(err, EINVAL, "%s: shrinking is not supported (%" PRIu64
				" sectors now, %" PRIu64 " asked)", path,
				(uint64_t)img->geom.nb_sectors, size);
	}
	r = prl_image_grow(img, size, err);
	if (r) {
		struct prl_err e2;

		prl_image_close(img, &e2);
		return r;
	}
	return prl_image_close(img, err);
}

/* Only the top grows: the layers below read as zeros past their end. */
static int cmd_resize(int argc, char **argv, uint64_t size)
{
	const struct prl_desc_image *top;
	struct prl_desc *d;
	struct prl_err err;
	bool online = false;
	char *xml;
	int rc;

	if (argc != 1 || !size)
		return die_usage("resize takes one XML or IMAGE and --size");
	xml = descriptor_path(argv[0]);
	if (!xml)
		return prl_image_busy(argv[0], &err) ||
		       grow_image(argv[0], size, &err) ? fail_err(&err) : EX_OK;
	rc = load_desc_for_change(xml, &d, &online);
	free(xml);
	if (rc)
		return rc;
	top = top_image(d);
	if (size < d->disk_size) {
		fprintf(stderr, "%s: shrinking is not supported (%" PRIu64 " sectors now)\n",
			prog, d->disk_size);
		rc = EX_FAIL;
	} else if (top->type == PRL_IMAGE_PLAIN) {
		fprintf(stderr, "%s: the top is a Plain image: take a snapshot first, then resize\n",
			prog);
		rc = EX_FAIL;
	} else if (online) {
		if (prl_resize_online(d, size, &err))
			rc = fail_err(&err);
	} else if (grow_image(top->path, size, &err) ||
		   prl_desc_set_size(d, size, &err) || prl_desc_save(d, &err)) {
		rc = fail_err(&err);
	}
	prl_desc_free(d);
	return rc;
}

static int convert_image(const char *path, enum prl_format_version fmt,
			 struct prl_err *err)
{
	struct prl_image *img;
	int r;

	r = open_rw(path, &img, err);
	if (r)
		return r;
	if (img->geom.fmt != fmt)
		r = prl_image_convert(img, fmt, err);
	if (r) {
		struct prl_err e2;

		prl_image_close(img, &e2);
		return r;
	}
	return prl_image_close(img, err);
}

static int cmd_convert(int argc, char **argv, enum prl_format_version fmt,
		       bool fmt_set)
{
	struct prl_desc *d;
	struct prl_err err;
	char *xml;
	size_t i;
	int rc;

	if (argc != 1 || !fmt_set)
		return die_usage("convert takes one XML or IMAGE and --image-format");
	xml = descriptor_path(argv[0]);
	if (!xml)
		return prl_image_busy(argv[0], &err) ||
		       convert_image(argv[0], fmt, &err) ? fail_err(&err) : EX_OK;
	rc = load_desc_for_change(xml, &d, NULL);
	free(xml);
	if (rc)
		return rc;
	for (i = 0; i < d->nr_images && !rc; i++)
		if (d->images[i].type == PRL_IMAGE_COMPRESSED &&
		    convert_image(d->images[i].path, fmt, &err))
			rc = fail_err(&err);
	prl_desc_free(d);
	return rc;
}

/* ---- bitmap ------------------------------------------------------------- */

/* Why a bitmap is not to be trusted, or NULL. */
static const char *distrust(const struct prl_dirty_bitmap *bm)
{
	if (bm->trusted)
		return NULL;
	return bm->in_use == PRL_IN_USE_OPEN ?
	       "the image is open, or was not closed cleanly" :
	       "the image was last closed by software that does not keep bitmaps";
}

/* Calls @fn for each run of changed granules, as bytes of the disk. */
static void each_range(const struct prl_dirty_bitmap *bm,
		       void (*fn)(void *, uint64_t, uint64_t), void *ctx)
{
	uint64_t n = 0, start, end, disk = bm->nb_sectors * 512;

	while (n < bm->nr_bits) {
		if (!prl_bitmap_test(bm, n)) {
			n++;
			continue;
		}
		for (start = n; n < bm->nr_bits && prl_bitmap_test(bm, n); n++)
			;
		start *= (uint64_t)bm->granularity * 512;
		end = n * (uint64_t)bm->granularity * 512;
		fn(ctx, start, (end < disk ? end : disk) - start);
	}
}

static void range_json(void *ctx, uint64_t off, uint64_t len)
{
	json_object *r = json_object_new_object();

	jadd(r, "offset", ju64(off));
	jadd(r, "length", ju64(len));
	json_object_array_add(ctx, r);
}

static void range_text(void *ctx, uint64_t off, uint64_t len)
{
	char a[32], b[32];

	(void)ctx;
	printf("  %s +%s\t(bytes %" PRIu64 " +%" PRIu64 ")\n", hsize(off, a, sizeof(a)),
	       hsize(len, b, sizeof(b)), off, len);
}

static void range_plain(void *ctx, uint64_t off, uint64_t len)
{
	(void)ctx;
	printf("%" PRIu64 " %" PRIu64 "\n", off, len);
}

static json_object *bitmap_json(const char *path, const struct prl_dirty_bitmap *bm,
				bool ranges)
{
	json_object *j = json_object_new_object(), *r;

	jadd(j, "image", jstr(path));
	jadd(j, "id", jstr(bm->id_text));
	jadd(j, "granularity", ju64((uint64_t)bm->granularity * 512));
	jadd(j, "granules", ju64(bm->nr_bits));
	jadd(j, "changed", ju64(prl_bitmap_weight(bm)));
	jadd(j, "trusted", json_object_new_boolean(bm->trusted));
	jadd(j, "why_not_trusted", jstr(distrust(bm)));
	if (ranges) {
		r = json_object_new_array();
		each_range(bm, range_json, r);
		jadd(j, "ranges", r);
	}
	return j;
}

static void bitmap_text(const char *path, const struct prl_dirty_bitmap *bm)
{
	char g[32];

	printf("%s: bitmap %s, %s granules, %" PRIu64 " of %" PRIu64 " changed, %s%s\n",
	       path, bm->id_text, hsize((uint64_t)bm->granularity * 512, g, sizeof(g)),
	       prl_bitmap_weight(bm), bm->nr_bits,
	       bm->trusted ? "trusted" : "NOT trustworthy: ",
	       bm->trusted ? "" : distrust(bm));
}

/* Run a program and wait for it: 0 if it exited 0. */
static int run(char *const argv[])
{
	int st;
	pid_t pid;

	if (posix_spawnp(&pid, argv[0], NULL, NULL, argv, environ))
		return -1;
	if (waitpid(pid, &st, 0) < 0 || !WIFEXITED(st) || WEXITSTATUS(st))
		return -1;
	return 0;
}

/*
 * A file name as qemu-img must be given it: one that starts with '-'
 * would be an option, one like "nbd:x" or "json:{...}" a protocol.  A
 * path starting with '/' or "./" is always a plain file (malloc'ed).
 */
static char *qemu_file(const char *name)
{
	return name[0] == '/' ? prl_xstrdup(name) : prl_xasprintf("./%s", name);
}

/*
 * QEMU copies the bitmap into a new qcow2 of the disk's size.  Every file
 * name goes through qemu_file() and comes after "--".
 */
static int export_qcow2(const char *img, const struct prl_dirty_bitmap *bm,
			const char *out)
{
	char size[32], gran[32];
	char *qout = qemu_file(out), *qimg = qemu_file(img);
	char *create[] = { "qemu-img", "create", "-q", "-f", "qcow2", "--", qout,
			   size, NULL };
	char *add[] = { "qemu-img", "bitmap", "--add", "-g", gran, "--", qout,
			(char *)bm->id_text, NULL };
	char *merge[] = { "qemu-img", "bitmap", "--merge", (char *)bm->id_text,
			  "-b", qimg, "-F", "parallels", "--", qout,
			  (char *)bm->id_text, NULL };
	int rc = EX_OK;

	if (!access(out, F_OK)) {
		fprintf(stderr, "%s: %s exists: not overwritten\n", prog, out);
		rc = EX_FAIL;
		goto out;
	}
	snprintf(size, sizeof(size), "%" PRIu64, bm->nb_sectors * 512);
	snprintf(gran, sizeof(gran), "%" PRIu64, (uint64_t)bm->granularity * 512);
	if (run(create) || run(add) || run(merge)) {
		fprintf(stderr, "%s: qemu-img could not export the bitmap to %s (is qemu-utils installed?)\n",
			prog, out);
		prl_folder_unlink(out);
		rc = EX_FAIL;
		goto out;
	}
	if (!cli.json)
		printf("exported bitmap %s to %s\n", bm->id_text, out);
out:
	free(qout);
	free(qimg);
	return rc;
}

/*
 * bitmap list|show|diff|clear|export XML|IMAGE: the dirty bitmap of the
 * disk's top image (list: of every image), or of IMAGE.
 */
static int cmd_bitmap(int argc, char **argv)
{
	struct prl_dirty_bitmap bm;
	struct prl_desc *d = NULL;
	struct prl_err err;
	json_object *arr = NULL;
	const char *sub;
	char *xml, *path;
	size_t i;
	int rc = EX_OK, r;

	if (argc != 2)
		return die_usage("bitmap takes list|show|diff|clear|export and an XML or IMAGE");
	sub = argv[0];
	if (strcmp(sub, "list") && strcmp(sub, "show") && strcmp(sub, "diff") &&
	    strcmp(sub, "clear") && strcmp(sub, "export"))
		return die_usage("unknown bitmap command '%s'", sub);
	if (!strcmp(sub, "export") && !cli.qcow2)
		return die_usage("bitmap export needs --qcow2 FILE");
	xml = descriptor_path(argv[1]);
	if (xml) {
		rc = !strcmp(sub, "clear") ? load_desc_for_change(xml, &d, NULL) :
					     load_desc(xml, &d);
		free(xml);
		if (rc)
			return rc;
		path = prl_xstrdup(top_image(d)->path);
	} else {
		path = prl_xstrdup(argv[1]);
	}

	if (!strcmp(sub, "list")) {
		arr = json_object_new_array();
		for (i = 0; i < (d ? d->nr_images : 1); i++) {
			const char *p = d ? d->images[i].path : path;

			if (d && d->images[i].type != PRL_IMAGE_COMPRESSED)
				continue;
			r = prl_bitmap_load(p, &bm, &err);
			if (r < 0) {
				fprintf(stderr, "%s: %s\n", prog, err.msg);
				rc = EX_FAIL;
			} else if (!r && !cli.json) {
				printf("%s: no dirty bitmap\n", p);
			} else if (r && cli.json) {
				json_object_array_add(arr, bitmap_json(p, &bm, false));
			} else if (r) {
				bitmap_text(p, &bm);
			}
			if (r > 0)
				prl_bitmap_free(&bm);
		}
		if (cli.json)
			json_print(arr);
		else
			json_object_put(arr);
		goto out;
	}
	if (!strcmp(sub, "clear")) {
		struct attach at[MAX_ATTACH];

		if (!d && attachments(path, at, MAX_ATTACH)) {
			fprintf(stderr, "%s: %s is in use (%s): deactivate it, or send the target the cbt clear message\n",
				prog, path, at[0].dev);
			rc = EX_FAIL;
		} else if (prl_bitmap_clear(path, &err)) {
			rc = fail_err(&err);
		} else if (cli.json) {
			json_object *o = json_object_new_object();

			jadd(o, "cleared", jstr(path));
			json_print(o);
		} else {
			printf("cleared the dirty bitmap of %s\n", path);
		}
		goto out;
	}
	r = prl_bitmap_load(path, &bm, &err);
	if (r < 0) {
		rc = fail_err(&err);
		goto out;
	}
	if (!r) {
		fprintf(stderr, "%s: %s has no dirty bitmap%s\n", prog, path,
			!strcmp(sub, "diff") ? ": every block must be backed up" : "");
		rc = EX_FAIL;
		goto out;
	}
	if (!strcmp(sub, "show")) {
		if (cli.json) {
			json_print(bitmap_json(path, &bm, true));
		} else {
			bitmap_text(path, &bm);
			each_range(&bm, range_text, NULL);
		}
	} else if (!strcmp(sub, "diff")) {
		/* What a backup must copy: everything, unless the bitmap is trusted. */
		if (!bm.trusted) {
			fprintf(stderr, "%s: %s: the bitmap is not trustworthy (%s): the whole disk\n",
				prog, path, distrust(&bm));
			memset(bm.bits, 0xff, (bm.nr_bits + 7) / 8);
		}
		if (cli.json) {
			arr = json_object_new_array();
			each_range(&bm, range_json, arr);
			json_print(arr);
		} else {
			each_range(&bm, range_plain, NULL);
		}
	} else if (!bm.trusted) {
		fprintf(stderr, "%s: %s: the bitmap is not trustworthy (%s): nothing exported; take a full backup\n",
			prog, path, distrust(&bm));
		rc = EX_FAIL;
	} else {
		rc = export_qcow2(path, &bm, cli.qcow2);
	}
	prl_bitmap_free(&bm);
out:
	free(path);
	prl_desc_free(d);
	return rc;
}

/* ---- main --------------------------------------------------------------- */

enum {
	OPT_JSON = 256, OPT_EXTERNAL, OPT_REPAIR, OPT_SIZE, OPT_CLUSTER,
	OPT_FORMAT, OPT_PLAIN, OPT_GROW, OPT_NAME, OPT_SNAPSHOT, OPT_READ_ONLY,
	OPT_CBT, OPT_QCOW2, OPT_TAB,
};

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "json", no_argument, NULL, OPT_JSON },
		{ "allow-external-paths", no_argument, NULL, OPT_EXTERNAL },
		{ "repair", no_argument, NULL, OPT_REPAIR },
		{ "size", required_argument, NULL, OPT_SIZE },
		{ "cluster-size", required_argument, NULL, OPT_CLUSTER },
		{ "image-format", required_argument, NULL, OPT_FORMAT },
		{ "plain", no_argument, NULL, OPT_PLAIN },
		{ "grow", no_argument, NULL, OPT_GROW },
		{ "name", required_argument, NULL, OPT_NAME },
		{ "snapshot", required_argument, NULL, OPT_SNAPSHOT },
		{ "read-only", no_argument, NULL, OPT_READ_ONLY },
		{ "cbt", no_argument, NULL, OPT_CBT },
		{ "qcow2", required_argument, NULL, OPT_QCOW2 },
		{ "tab", required_argument, NULL, OPT_TAB },
		{ "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, 'V' },
		{ NULL, 0, NULL, 0 }
	};
	const char *cmd;
	int c;

	if (argc < 2)
		return die_usage("no command given");
	cmd = argv[1];
	if (!strcmp(cmd, "--help") || !strcmp(cmd, "-h") || !strcmp(cmd, "help")) {
		usage_line(stdout);
		return EX_OK;
	}
	if (!strcmp(cmd, "--version") || !strcmp(cmd, "-V")) {
		printf("prldisk %s\n", PRLDISK_VERSION);
		return EX_OK;
	}
	argv++;
	argc--;
	while ((c = getopt_long(argc, argv, "hV", opts, NULL)) != -1) {
		switch (c) {
		case OPT_JSON:
			cli.json = true;
			break;
		case OPT_EXTERNAL:
			cli.external = true;
			break;
		case OPT_REPAIR:
			cli.repair = true;
			break;
		case OPT_SIZE:
			if (parse_size(optarg, &cli.size, "--size"))
				return EX_USAGE;
			break;
		case OPT_CLUSTER:
			if (parse_size(optarg, &cli.cluster, "--cluster-size"))
				return EX_USAGE;
			cli.cluster_arg = optarg;
			break;
		case OPT_FORMAT:
			if (parse_format(optarg, &cli.fmt))
				return EX_USAGE;
			cli.fmt_set = true;
			break;
		case OPT_PLAIN:
			cli.plain = true;
			break;
		case OPT_NAME:
			cli.name = optarg;
			break;
		case OPT_SNAPSHOT:
			cli.snapshot = optarg;
			break;
		case OPT_READ_ONLY:
			cli.read_only = true;
			break;
		case OPT_CBT:
			cli.cbt = true;
			break;
		case OPT_QCOW2:
			cli.qcow2 = optarg;
			break;
		case OPT_TAB:
			cli.tab = realpath(optarg, NULL);
			if (!cli.tab)
				return die_usage("--tab %s: %s", optarg, strerror(errno));
			break;
		case OPT_GROW:
			break;	/* growing is the only resize there is */
		case 'h':
			usage_line(stdout);
			return EX_OK;
		case 'V':
			printf("prldisk %s\n", PRLDISK_VERSION);
			return EX_OK;
		default:
			usage_line(stderr);
			return EX_USAGE;
		}
	}
	argc -= optind;
	argv += optind;

	if (!strcmp(cmd, "create"))
		return cmd_create(argc, argv, cli.size, cli.cluster, cli.fmt, cli.plain);
	if (!strcmp(cmd, "info"))
		return cmd_info(argc, argv);
	if (!strcmp(cmd, "check"))
		return cmd_check(argc, argv, cli.repair);
	if (!strcmp(cmd, "snapshot"))
		return cmd_snapshot(argc, argv);
	if (!strcmp(cmd, "snapshot-delete"))
		return cmd_snapshot_delete(argc, argv);
	if (!strcmp(cmd, "switch"))
		return cmd_switch(argc, argv);
	if (!strcmp(cmd, "resize"))
		return cmd_resize(argc, argv, cli.size);
	if (!strcmp(cmd, "convert"))
		return cmd_convert(argc, argv, cli.fmt, cli.fmt_set);
	if (!strcmp(cmd, "activate"))
		return cmd_activate(argc, argv);
	if (!strcmp(cmd, "deactivate"))
		return cmd_deactivate(argc, argv);
	if (!strcmp(cmd, "list"))
		return cmd_list(argc, argv);
	if (!strcmp(cmd, "status"))
		return cmd_status(argc, argv);
	if (!strcmp(cmd, "bitmap"))
		return cmd_bitmap(argc, argv);
	if (!strcmp(cmd, "tab"))
		return cmd_tab(argc, argv);
	return die_usage("unknown command '%s'", cmd);
}
