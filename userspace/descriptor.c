// SPDX-License-Identifier: GPL-2.0
/*
 * DiskDescriptor.xml: parse and check it (it is untrusted input), edit the
 * kept document, write it back atomically.  The rules are in descriptor.h;
 * the format is ../shared/specs/prl-xml.txt plus what ploop 1.15 writes.
 *
 * The parsed xmlDoc is the truth: edits change a copy of it, and the
 * arrays of struct prl_desc are extracted again from that copy with the
 * same checks as a load, so a descriptor in memory is always one that
 * prl_desc_load() would accept, and elements we do not know are kept.
 */
#define _GNU_SOURCE
#include "descriptor.h"
#include "folder.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <libgen.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <libxml/SAX2.h>
#include <libxml/parser.h>
#include <libxml/xmlsave.h>
#include <libxml/tree.h>
#include <libxml/xmlerror.h>
#include <uuid/uuid.h>

#define ROOT_PRL	"Parallels_disk_image"
#define ROOT_VZ		"Virtuozzo_disk_image"
#define EXTERNAL_HINT	"; pass --allow-external-paths if you trust this descriptor"

/*
 * No DTD is loaded or applied (no NOENT, DTDLOAD, DTDATTR): a DOCTYPE is
 * refused anyway, see on_doctype().  Blanks are kept, so that what we do
 * not edit is written back byte for byte (see indent()); BIG_LINES keeps
 * line numbers right past 65535 for the messages.
 */
#define XML_OPTIONS	(XML_PARSE_NONET | XML_PARSE_BIG_LINES)

/* libxml2 2.12 made the structured error handler take a const error */
#if LIBXML_VERSION >= 21200
#define XML_ERR_CONST const
#else
#define XML_ERR_CONST
#endif

static void *xml_ok(void *p)
{
	if (!p) {
		fputs("prldisk: out of memory (libxml2)\n", stderr);
		abort();
	}
	return p;
}

/* ---- messages ------------------------------------------------------- */

#define QLEN	96

/*
 * @s made fit for a one-line message: control characters escaped, cut to
 * QLEN bytes (on a UTF-8 character boundary).  Values come from the file.
 */
static const char *q(char *buf, const void *str)
{
	const unsigned char *s = str;
	size_t i = 0;

	for (; *s && i < QLEN - 9; s++) {
		if (*s < 0x20 || *s == 0x7f)
			i += (size_t)snprintf(buf + i, QLEN - i, "\\x%02x", *s);
		else
			buf[i++] = (char)*s;
	}
	if (*s) {
		if ((*s & 0xc0) == 0x80) {
			while (i && ((unsigned char)buf[i - 1] & 0xc0) == 0x80)
				i--;
			if (i && (unsigned char)buf[i - 1] >= 0xc0)
				i--;
		}
		memcpy(buf + i, "...", 3);
		i += 3;
	}
	buf[i] = '\0';
	return buf;
}

/* What one extraction of the document needs. */
struct ld {
	struct prl_desc *d;	/* gets the parsed fields */
	const char *name;	/* the file, for messages */
	struct prl_err *err;
	unsigned int flags;
	bool allow_empty;	/* no images yet: a new descriptor */
	char where[64];		/* "Image {...}: " while inside one */
	xmlNodePtr top_node;	/* TopGUID, if any */
};

static int ld_err(struct ld *l, xmlNodePtr n, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static int ld_err(struct ld *l, xmlNodePtr n, const char *fmt, ...)
{
	char msg[768];
	long line = n ? xmlGetLineNo(n) : -1;
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (line > 0)
		return prl_errf(l->err, EINVAL, "%s line %ld: %s%s", l->name,
				line, l->where, msg);
	return prl_errf(l->err, EINVAL, "%s: %s%s", l->name, l->where, msg);
}

/* ---- elements and values -------------------------------------------- */

static bool is_elem(xmlNodePtr n, const char *name)
{
	return n->type == XML_ELEMENT_NODE && !xmlStrcmp(n->name, BAD_CAST name);
}

static xmlNodePtr find(xmlNodePtr p, const char *name)
{
	xmlNodePtr c;

	for (c = p ? p->children : NULL; c; c = c->next)
		if (is_elem(c, name))
			return c;
	return NULL;
}

static size_t count(xmlNodePtr p, const char *name)
{
	xmlNodePtr c;
	size_t n = 0;

	for (c = p->children; c; c = c->next)
		n += is_elem(c, name);
	return n;
}

/* The only child element @name of @p; missing is an error unless @opt. */
static int child(struct ld *l, xmlNodePtr p, const char *name, bool opt,
		 xmlNodePtr *out)
{
	xmlNodePtr c, found = NULL;

	for (c = p->children; c; c = c->next) {
		if (!is_elem(c, name))
			continue;
		if (found)
			return ld_err(l, c, "<%s> has more than one <%s>",
				      (const char *)p->name, name);
		found = c;
	}
	*out = found;
	if (!found && !opt)
		return ld_err(l, p, "<%s> has no <%s>", (const char *)p->name,
			      name);
	return 0;
}

static bool xml_space(char c)
{
	return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

/* The text of leaf element @n, XML whitespace trimmed, malloc'ed. */
static int leaf_text(struct ld *l, xmlNodePtr n, char **out)
{
	char qb[QLEN];
	xmlNodePtr c;
	xmlChar *x;
	char *s, *e;

	for (c = n->children; c; c = c->next) {
		if (c->type == XML_TEXT_NODE || c->type == XML_CDATA_SECTION_NODE ||
		    c->type == XML_COMMENT_NODE || c->type == XML_PI_NODE)
			continue;
		return ld_err(l, c, "<%s> holds <%s>: it must hold text only",
			      (const char *)n->name, q(qb, c->name ? c->name : BAD_CAST "?"));
	}
	x = xmlNodeGetContent(n);
	s = (char *)(x ? x : BAD_CAST "");
	while (xml_space(*s))
		s++;
	e = s + strlen(s);
	while (e > s && xml_space(e[-1]))
		e--;
	*out = strndup(s, (size_t)(e - s));
	xmlFree(x);
	if (!*out)
		xml_ok(NULL);
	return 0;
}

/* Strict decimal: digits only; -EINVAL not a number, -ERANGE above @max. */
static int parse_dec(const char *s, uint64_t max, uint64_t *v)
{
	const char *p;
	uint64_t x = 0;

	if (!*s)
		return -EINVAL;
	for (p = s; *p; p++)
		if (*p < '0' || *p > '9')
			return -EINVAL;
	for (p = s; *p; p++) {
		unsigned int digit = (unsigned int)(*p - '0');

		if (x > (max - digit) / 10)
			return -ERANGE;
		x = x * 10 + digit;
	}
	*v = x;
	return 0;
}

static int leaf_num(struct ld *l, xmlNodePtr p, const char *name,
		    uint64_t max, uint64_t *v, xmlNodePtr *np)
{
	char qb[QLEN], *s;
	xmlNodePtr n;
	int r;

	r = child(l, p, name, false, &n);
	if (r)
		return r;
	if (np)
		*np = n;
	r = leaf_text(l, n, &s);
	if (r)
		return r;
	r = parse_dec(s, max, v);
	if (r == -EINVAL)
		r = ld_err(l, n, "<%s> '%s' is not a decimal number", name, q(qb, s));
	else if (r == -ERANGE)
		r = ld_err(l, n, "<%s> %s: number too large (at most %" PRIu64 ")",
			   name, q(qb, s), max);
	free(s);
	return r;
}

static int leaf_u32(struct ld *l, xmlNodePtr p, const char *name,
		    uint32_t *v)
{
	uint64_t x;
	int r = leaf_num(l, p, name, UINT32_MAX, &x, NULL);

	*v = (uint32_t)x;
	return r;
}

/* A GUID in braces, stored lower case.  *@np: the element (NULL: none). */
static int leaf_guid(struct ld *l, xmlNodePtr p, const char *name, bool opt,
		     char out[PRL_GUID_LEN + 1], xmlNodePtr *np)
{
	char qb[QLEN], *s;
	xmlNodePtr n;
	int r;

	r = child(l, p, name, opt, &n);
	if (np)
		*np = n;
	if (r || !n)
		return r;
	r = leaf_text(l, n, &s);
	if (r)
		return r;
	if (s[0] != '{' || prl_guid_parse(s, out))
		r = ld_err(l, n,
			   "<%s> '%s' is not a GUID like {01234567-89ab-cdef-0123-456789abcdef}",
			   name, q(qb, s));
	else if (!strcmp(out, PRL_GUID_NULL))
		r = ld_err(l, n, "<%s> is the null GUID, which means \"no parent\"",
			   name);
	free(s);
	return r;
}

/* ---- File paths ----------------------------------------------------- */

/*
 * @dir + "/" + @file without empty and "." components.  ".." is kept: it
 * is taken lexically beneath the folder (folder.c), by the kernel outside.
 */
static char *join(const char *dir, const char *file)
{
	size_t n = strlen(dir);
	char *out = prl_xmalloc(n + strlen(file) + 2), *o;
	const char *s = file, *e;

	memcpy(out, dir, n);
	o = out + n;
	if (file[0] == '/')
		o = out;	/* absolute: the folder does not count */
	while (*s) {
		while (*s == '/')
			s++;
		e = strchrnul(s, '/');
		if (e > s && !(e - s == 1 && *s == '.')) {
			if (o == out || o[-1] != '/')
				*o++ = '/';
			memcpy(o, s, (size_t)(e - s));
			o += e - s;
		}
		s = e;
	}
	if (o == out)
		*o++ = '/';
	*o = '\0';
	return out;
}

/*
 * How deep below the folder @file ends, counting ".." as up; *@escapes
 * if it climbs above the folder on the way.
 */
static long depth_of(const char *file, bool *escapes)
{
	const char *s = file, *e;
	long depth = 0;

	*escapes = false;
	while (*s) {
		while (*s == '/')
			s++;
		e = strchrnul(s, '/');
		if (e - s == 2 && s[0] == '.' && s[1] == '.') {
			if (--depth < 0)
				*escapes = true;
		} else if (e > s && !(e - s == 1 && *s == '.')) {
			depth++;
		}
		s = e;
	}
	return depth;
}

/*
 * No symlink on the way to a file in the folder: every prefix of @file as
 * written ("sub" of "sub/../x" too, which the kernel would follow before
 * taking "..") that exists is not a symlink.  That is what the folder
 * handle enforces on every later use (folder.h), so a descriptor that
 * would fail there is refused at load, with its line.
 */
static int check_symlinks(struct ld *l, xmlNodePtr n, const char *file,
			  const char *path)
{
	size_t dlen = strlen(l->d->dir) + 1;
	char q1[QLEN], *p, *e;
	struct stat st;
	int r = 0, err = 0;

	if (!l->d->held)
		return 0;	/* parsed from memory: nothing to walk */
	p = prl_xstrdup(path);
	for (e = p + dlen; !err; e++) {
		char c;

		e = strchrnul(e, '/');
		c = *e;
		*e = '\0';
		if (prl_folder_lstat(p, &st))
			err = errno;
		else if (S_ISLNK(st.st_mode))
			err = ELOOP;
		*e = c;
		if (!c)
			break;
	}
	free(p);
	if (err == ELOOP)
		r = ld_err(l, n,
			   "File '%s' is or goes through a symbolic link: a disk folder's files are reached without following links; name the real file (with --allow-external-paths, by an absolute path if it is outside)",
			   q(q1, file));
	else if (err && err != ENOENT)	/* missing: it will be made inside */
		r = ld_err(l, n, "cannot reach File '%s' in %s: %s",
			   q(q1, file), l->d->dir, strerror(err));
	return r;
}

/*
 * A path the kernel could not take, or one deep enough to cost a
 * realpath() per component (check_symlinks()), or one with a control
 * character (a newline would split every message naming it), is refused
 * before use.
 */
static int check_file_size(struct ld *l, xmlNodePtr n, const char *file)
{
	size_t len = strlen(file), comps = 0;
	const char *s = file, *e;
	char qb[QLEN];

	if (len >= PATH_MAX)
		return ld_err(l, n, "File '%s' is %zu bytes long: at most %d (PATH_MAX - 1) are supported",
			      q(qb, file), len, PATH_MAX - 1);
	/* Every message names the file on one line: no control characters. */
	for (e = file; *e; e++)
		if ((unsigned char)*e < 0x20 || *e == 0x7f)
			return ld_err(l, n, "File '%s' has a control character: rename the image and its <File>",
				      q(qb, file));
	while (*s) {
		while (*s == '/')
			s++;
		e = strchrnul(s, '/');
		if (e - s > NAME_MAX)
			return ld_err(l, n, "File '%s' has a component of %td bytes: at most %d (NAME_MAX) are supported",
				      q(qb, file), e - s, NAME_MAX);
		comps += e > s;
		s = e;
	}
	if (comps > PRL_DESC_MAX_FILE_DEPTH)
		return ld_err(l, n, "File '%s' has %zu path components: at most %u are supported",
			      q(qb, file), comps, PRL_DESC_MAX_FILE_DEPTH);
	return 0;
}

static int check_file(struct ld *l, xmlNodePtr n, struct prl_desc_image *img)
{
	bool external = l->flags & PRL_DESC_ALLOW_EXTERNAL, escapes;
	const char *file = img->file;
	char qb[QLEN];
	long depth;
	int r;

	if (!*file)
		return ld_err(l, n, "<File> is empty");
	r = check_file_size(l, n, file);
	if (r)
		return r;
	if (file[0] == '/') {
		if (!external)
			return ld_err(l, n, "File '%s' is an absolute path"
				      EXTERNAL_HINT, q(qb, file));
		img->path = join("/", file);
		return 0;
	}
	depth = depth_of(file, &escapes);
	if (escapes && !external)
		return ld_err(l, n, "File '%s' leaves the folder of the descriptor"
			      EXTERNAL_HINT, q(qb, file));
	if (depth <= 0 && !escapes)
		return ld_err(l, n, "File '%s' names the folder itself, not a file",
			      q(qb, file));
	img->path = join(l->d->dir, file);
	if (strlen(img->path) >= PATH_MAX)
		return ld_err(l, n, "File '%s' makes a path of %zu bytes in %s: at most %d (PATH_MAX - 1) are supported",
			      q(qb, file), strlen(img->path), l->d->dir, PATH_MAX - 1);
	if (escapes)
		return 0;	/* external: used as named */
	return check_symlinks(l, n, file, img->path);
}

/* ---- the document, part by part ------------------------------------- */

/*
 * The spec's rule (the product is Disk_size) or ploop's: cylinders are
 * Disk_size / (heads * sectors) rounded down.
 */
static bool chs_ok(uint64_t size, uint32_t c, uint32_t h, uint32_t s)
{
	uint64_t hs = (uint64_t)h * s, chs;

	if (!hs || __builtin_mul_overflow(hs, (uint64_t)c, &chs))
		return false;
	return chs == size || (chs < size && size - chs < hs);
}

/* A sector size the kernel can give a block device. */
static bool sector_size_ok(uint64_t bs)
{
	return bs >= 512 && bs <= 4096 && !(bs & (bs - 1));
}

/* Optional <@name> of @p, in bytes (0: absent). */
static int sector_size(struct ld *l, xmlNodePtr p, const char *name,
		       uint32_t *v, xmlNodePtr *np)
{
	xmlNodePtr n;
	uint64_t x;
	int r;

	*v = 0;
	r = child(l, p, name, true, &n);
	*np = n;
	if (r || !n)
		return r;
	r = leaf_num(l, p, name, UINT64_MAX, &x, NULL);
	if (r)
		return r;
	if (!sector_size_ok(x))
		return ld_err(l, n, "<%s> is %" PRIu64 ": it must be 512, 1024, 2048 or 4096",
			      name, x);
	*v = (uint32_t)x;
	return 0;
}

/* The sector sizes Parallels Desktop writes: the device's, at activation. */
static int parse_sector_sizes(struct ld *l, xmlNodePtr p, xmlNodePtr size)
{
	struct prl_desc *d = l->d;
	xmlNodePtr ln, pn;
	int r;

	r = sector_size(l, p, "LogicSectorSize", &d->logical_sector_size, &ln);
	if (!r)
		r = sector_size(l, p, "PhysicalSectorSize",
				&d->physical_sector_size, &pn);
	if (r)
		return r;
	if (d->physical_sector_size &&
	    d->physical_sector_size < d->logical_sector_size)
		return ld_err(l, pn, "<PhysicalSectorSize> %" PRIu32
			      " is smaller than <LogicSectorSize> %" PRIu32,
			      d->physical_sector_size, d->logical_sector_size);
	if (d->logical_sector_size &&
	    d->disk_size % (d->logical_sector_size / 512))
		return ld_err(l, size, "<Disk_size> %" PRIu64
			      " is not a whole number of %" PRIu32
			      "-byte sectors (LogicSectorSize)",
			      d->disk_size, d->logical_sector_size);
	return 0;
}

static int parse_params(struct ld *l, xmlNodePtr root)
{
	struct prl_desc *d = l->d;
	xmlNodePtr p, pad, size;
	uint64_t padding;
	int r;

	r = child(l, root, "Disk_Parameters", false, &p);
	if (!r)
		r = leaf_num(l, p, "Disk_size", UINT64_MAX, &d->disk_size, &size);
	if (!r)
		r = leaf_u32(l, p, "Cylinders", &d->cylinders);
	if (!r)
		r = leaf_u32(l, p, "Heads", &d->heads);
	if (!r)
		r = leaf_u32(l, p, "Sectors", &d->sectors);
	if (!r)
		r = leaf_num(l, p, "Padding", UINT64_MAX, &padding, &pad);
	if (r)
		return r;
	if (!d->disk_size)
		return ld_err(l, p, "<Disk_size> is 0");
	if (padding)
		return ld_err(l, pad,
			      "<Padding> is %" PRIu64 ": only 0 is supported (padded Parallels disks are not)",
			      padding);
	if (!chs_ok(d->disk_size, d->cylinders, d->heads, d->sectors))
		return ld_err(l, p, "Cylinders*Heads*Sectors = %" PRIu32 "*%" PRIu32
			      "*%" PRIu32 " does not match Disk_size %" PRIu64
			      " (it must equal it, or round it down to whole cylinders)",
			      d->cylinders, d->heads, d->sectors, d->disk_size);
	return parse_sector_sizes(l, p, size);
}

static int parse_image(struct ld *l, xmlNodePtr n, struct prl_desc_image *img)
{
	char qb[QLEN], *type;
	xmlNodePtr t, f;
	int r;

	img->node = n;
	img->shot = SIZE_MAX;
	r = leaf_guid(l, n, "GUID", false, img->guid, NULL);
	if (r)
		return r;
	snprintf(l->where, sizeof(l->where), "Image %s: ", img->guid);
	r = child(l, n, "Type", false, &t);
	if (!r)
		r = leaf_text(l, t, &type);
	if (r)
		return r;
	if (!strcmp(type, "Plain"))
		img->type = PRL_IMAGE_PLAIN;
	else if (!strcmp(type, "Compressed"))
		img->type = PRL_IMAGE_COMPRESSED;
	else
		r = ld_err(l, t, "<Type> '%s' is neither Plain nor Compressed",
			   q(qb, type));
	free(type);
	if (!r)
		r = child(l, n, "File", false, &f);
	if (!r)
		r = leaf_text(l, f, &img->file);
	if (!r)
		r = check_file(l, f, img);
	if (!r)
		l->where[0] = '\0';
	return r;
}

static int parse_storage(struct ld *l, xmlNodePtr root)
{
	struct prl_desc *d = l->d;
	xmlNodePtr sd, st, n, c;
	uint64_t start, end;
	size_t nr;
	int r;

	r = child(l, root, "StorageData", false, &sd);
	if (r)
		return r;
	nr = count(sd, "Storage");
	if (nr > 1)
		return ld_err(l, sd,
			      "<StorageData> has %zu <Storage> elements: split images are not supported",
			      nr);
	r = child(l, sd, "Storage", false, &st);
	if (!r)
		r = leaf_num(l, st, "Start", UINT64_MAX, &start, &n);
	if (!r && start)
		r = ld_err(l, n,
			   "<Start> is %" PRIu64 ", not 0: split images are not supported", start);
	if (!r)
		r = leaf_num(l, st, "End", UINT64_MAX, &end, &n);
	if (!r && end != d->disk_size)
		r = ld_err(l, n, "<End> %" PRIu64 " is not Disk_size %" PRIu64
			   ": split images are not supported", end, d->disk_size);
	if (!r)
		r = leaf_u32(l, st, "Blocksize", &d->blocksize);
	if (!r && !d->blocksize)
		r = ld_err(l, st, "<Blocksize> is 0");
	if (r)
		return r;

	nr = count(st, "Image");
	if (!nr && !l->allow_empty)
		return ld_err(l, st, "<Storage> has no <Image>");
	d->images = prl_xcalloc(nr, sizeof(*d->images));
	for (c = st->children; c; c = c->next) {
		if (!is_elem(c, "Image"))
			continue;
		r = parse_image(l, c, &d->images[d->nr_images++]);
		if (r)
			return r;
	}
	return 0;
}

static int parse_shot(struct ld *l, xmlNodePtr n, struct prl_desc_shot *s)
{
	xmlNodePtr p;
	char qb[QLEN], *txt;
	int r;

	s->node = n;
	s->image = SIZE_MAX;
	s->parent_idx = SIZE_MAX;
	r = leaf_guid(l, n, "GUID", false, s->guid, NULL);
	if (r)
		return r;
	snprintf(l->where, sizeof(l->where), "Shot %s: ", s->guid);
	/* The null GUID is a valid ParentGUID (the root), unlike elsewhere. */
	r = child(l, n, "ParentGUID", false, &p);
	if (!r)
		r = leaf_text(l, p, &txt);
	if (r)
		return r;
	if (txt[0] != '{' || prl_guid_parse(txt, s->parent))
		r = ld_err(l, p,
			   "<ParentGUID> '%s' is not a GUID like {01234567-89ab-cdef-0123-456789abcdef}",
			   q(qb, txt));
	free(txt);
	if (!r)
		l->where[0] = '\0';
	return r;
}

static int parse_snapshots(struct ld *l, xmlNodePtr root)
{
	struct prl_desc *d = l->d;
	xmlNodePtr sn, c;
	int r;

	r = child(l, root, "Snapshots", false, &sn);
	if (!r)
		r = leaf_guid(l, sn, "TopGUID", true, d->top, &l->top_node);
	if (r)
		return r;
	if (!l->top_node)
		strcpy(d->top, PRL_GUID_TOP);
	d->shots = prl_xcalloc(count(sn, "Shot"), sizeof(*d->shots));
	for (c = sn->children; c; c = c->next) {
		if (!is_elem(c, "Shot"))
			continue;
		r = parse_shot(l, c, &d->shots[d->nr_shots++]);
		if (r)
			return r;
	}
	return 0;
}

/* ---- the snapshot tree ---------------------------------------------- */

struct gref {
	const char *guid;
	size_t i;
};

static int gref_cmp(const void *a, const void *b)
{
	const struct gref *x = a, *y = b;
	int c = strcmp(x->guid, y->guid);

	return c ? c : (x->i > y->i) - (x->i < y->i);
}

/* Sorted index of @n GUIDs at @stride bytes apart; a duplicate -> *@dup. */
static struct gref *gindex(const char *base, size_t stride, size_t n,
			   size_t *dup)
{
	struct gref *x = prl_xcalloc(n, sizeof(*x));
	size_t i;

	for (i = 0; i < n; i++)
		x[i] = (struct gref){ base + i * stride, i };
	qsort(x, n, sizeof(*x), gref_cmp);
	*dup = SIZE_MAX;
	for (i = 1; i < n && *dup == SIZE_MAX; i++)
		if (!strcmp(x[i - 1].guid, x[i].guid))
			*dup = x[i].i;	/* the later one in the file */
	return x;
}

static size_t gfind(const struct gref *x, size_t n, const char *guid)
{
	size_t lo = 0, hi = n;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		int c = strcmp(x[mid].guid, guid);

		if (!c)
			return x[mid].i;
		if (c < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	return SIZE_MAX;
}

/* Every Shot must reach the root: walk up, remembering what was checked. */
static int check_cycles(struct ld *l)
{
	struct prl_desc *d = l->d;
	unsigned char *state = prl_xcalloc(d->nr_shots, 1);	/* 1 on the walk, 2 good */
	size_t i, j;
	int r = 0;

	for (i = 0; i < d->nr_shots && !r; i++) {
		for (j = i; j != SIZE_MAX && !state[j]; j = d->shots[j].parent_idx)
			state[j] = 1;
		if (j != SIZE_MAX && state[j] == 1) {
			r = ld_err(l, d->shots[j].node,
				   "Shot %s is in a cycle of ParentGUIDs: it never reaches the root",
				   d->shots[j].guid);
			break;
		}
		for (j = i; j != SIZE_MAX && state[j] == 1; j = d->shots[j].parent_idx)
			state[j] = 2;
	}
	free(state);
	return r;
}

/*
 * No chain (from any Shot down to the root) longer than PRL_MAX_CHAIN, the
 * limit activate, deactivate and status share.  The tree is acyclic: each
 * Shot's depth is its parent's plus one, each computed once.
 */
static int check_depth(struct ld *l)
{
	struct prl_desc *d = l->d;
	size_t *depth = prl_xcalloc(d->nr_shots, sizeof(*depth));	/* 0: not yet */
	size_t i, j, k, base;
	int r = 0;

	for (i = 0; i < d->nr_shots && !r; i++) {
		/* walk up to a Shot whose depth is known (or past the root) */
		for (j = i; j != SIZE_MAX && !depth[j]; j = d->shots[j].parent_idx)
			;
		base = j == SIZE_MAX ? 0 : depth[j];
		/* count the Shots walked, then number them top down */
		for (k = i, j = 0; k != SIZE_MAX && !depth[k];
		     k = d->shots[k].parent_idx)
			j++;
		for (k = i; k != SIZE_MAX && !depth[k]; k = d->shots[k].parent_idx)
			depth[k] = base + j--;
		if (depth[i] > PRL_MAX_CHAIN)
			r = ld_err(l, d->shots[i].node,
				   "the chain from Shot %s down to the root is %zu images deep: at most %u are supported",
				   d->shots[i].guid, depth[i], PRL_MAX_CHAIN);
	}
	free(depth);
	return r;
}

static int check_links(struct ld *l, const struct gref *ix, const struct gref *sx)
{
	struct prl_desc *d = l->d;
	size_t i, root = SIZE_MAX;
	int r;

	for (i = 0; i < d->nr_shots; i++) {
		struct prl_desc_shot *s = &d->shots[i];

		s->image = gfind(ix, d->nr_images, s->guid);
		if (s->image == SIZE_MAX)
			return ld_err(l, s->node, "Shot %s has no Image in <StorageData>", s->guid);
		d->images[s->image].shot = i;
	}
	for (i = 0; i < d->nr_images; i++)
		if (d->images[i].shot == SIZE_MAX)
			return ld_err(l, d->images[i].node,
				      "Image %s has no Shot in <Snapshots>", d->images[i].guid);
	for (i = 0; i < d->nr_shots; i++) {
		struct prl_desc_shot *s = &d->shots[i];

		if (!strcmp(s->parent, PRL_GUID_NULL)) {
			if (root != SIZE_MAX)
				return ld_err(l, s->node,
					      "two root Shots, %s and %s: only one may have ParentGUID "
					      PRL_GUID_NULL, d->shots[root].guid,
					      s->guid);
			root = i;
			continue;
		}
		if (!strcmp(s->parent, s->guid))
			return ld_err(l, s->node,
				      "Shot %s is its own parent: a cycle of ParentGUIDs", s->guid);
		s->parent_idx = gfind(sx, d->nr_shots, s->parent);
		if (s->parent_idx == SIZE_MAX)
			return ld_err(l, s->node,
				      "Shot %s: ParentGUID %s names no Shot", s->guid, s->parent);
	}
	if (root == SIZE_MAX && d->nr_shots)
		return ld_err(l, NULL, "no root Shot (one with ParentGUID "
			      PRL_GUID_NULL "): the ParentGUIDs form a cycle");
	r = check_cycles(l);
	if (!r)
		r = check_depth(l);
	return r;
}

static int check_tree(struct ld *l)
{
	struct prl_desc *d = l->d;
	struct gref *ix, *sx;
	size_t dup, dup2, i;
	int r = 0;

	ix = gindex(d->images[0].guid, sizeof(*d->images), d->nr_images, &dup);
	sx = gindex(d->shots[0].guid, sizeof(*d->shots), d->nr_shots, &dup2);
	if (dup != SIZE_MAX)
		r = ld_err(l, d->images[dup].node, "two Images have GUID %s",
			   d->images[dup].guid);
	else if (dup2 != SIZE_MAX)
		r = ld_err(l, d->shots[dup2].node, "two Shots have GUID %s",
			   d->shots[dup2].guid);
	else
		r = check_links(l, ix, sx);
	free(ix);
	free(sx);
	if (r)
		return r;

	for (i = 0; i < d->nr_images; i++)
		if (d->images[i].type == PRL_IMAGE_PLAIN &&
		    d->shots[d->images[i].shot].parent_idx != SIZE_MAX)
			return ld_err(l, d->images[i].node,
				      "Image %s is Plain but not the root: only the root may be a raw image",
				      d->images[i].guid);
	if (!d->nr_shots)
		return 0;	/* a new descriptor: nothing can be the top yet */
	if (!strcmp(d->top, PRL_GUID_BACKUP))
		return ld_err(l, l->top_node, "the top image cannot be BackupID "
			      PRL_GUID_BACKUP ": give the top another GUID");
	if (prl_desc_shot(d, d->top))
		return 0;
	if (l->top_node)
		return ld_err(l, l->top_node, "TopGUID %s names no Shot", d->top);
	return ld_err(l, NULL,
		      "no TopGUID and no Shot with the predefined top GUID " PRL_GUID_TOP ": which image is the top?");
}

/* ---- one file per layer -------------------------------------------- */

/*
 * @path made canonical without needing it to exist: the longest existing
 * prefix resolved by realpath(), the rest appended with "." and ".."
 * taken lexically.  Two spellings of one name ("x", "./x", "sub/../x", a
 * symlink to x) give one string.
 */
static char *canon_path(const char *path)
{
	char *p = prl_xstrdup(path), *real = NULL, *rest, *out, *slash;
	size_t cut = strlen(p), n;

	for (;;) {
		real = realpath(p, NULL);
		if (real)
			break;
		slash = strrchr(p, '/');
		if (!slash || slash == p)
			break;
		*slash = '\0';
		cut = (size_t)(slash - p);
	}
	rest = prl_xstrdup(path + cut);
	if (!real)
		real = prl_xstrdup("/");
	/* Append what does not exist, a component at a time. */
	out = prl_xmalloc(strlen(real) + strlen(rest) + 2);
	strcpy(out, real);
	for (char *c = strtok(rest, "/"); c; c = strtok(NULL, "/")) {
		if (!strcmp(c, "."))
			continue;
		n = strlen(out);
		if (!strcmp(c, "..")) {
			slash = strrchr(out, '/');
			if (slash && slash != out)
				*slash = '\0';
			else
				strcpy(out, "/");
			continue;
		}
		if (n > 1)
			out[n++] = '/';
		strcpy(out + n, c);
	}
	free(rest);
	free(real);
	free(p);
	return out;
}

struct fileid {
	char *canon;		/* canon_path() of the image's path */
	bool exists;		/* dev and ino are valid */
	dev_t dev;
	ino_t ino;
	size_t i;		/* index in d->images */
};

static int fid_name_cmp(const void *a, const void *b)
{
	const struct fileid *x = a, *y = b;
	int c = strcmp(x->canon, y->canon);

	return c ? c : (x->i > y->i) - (x->i < y->i);
}

static int fid_ino_cmp(const void *a, const void *b)
{
	const struct fileid *x = a, *y = b;

	if (x->exists != y->exists)
		return x->exists ? -1 : 1;
	if (x->dev != y->dev)
		return x->dev < y->dev ? -1 : 1;
	if (x->ino != y->ino)
		return x->ino < y->ino ? -1 : 1;
	return (x->i > y->i) - (x->i < y->i);
}

/*
 * Names beside the descriptor that are its own: itself, its lock
 * (prldisk's and ploop's), ploop's temporary copy, a backup and Parallels
 * Desktop's DiskDescriptor.xml.Backup.  prldisk's
 * own temporary copies ("<name>.tmp.XXXXXX") are matched by prefix.
 */
static const char *const reserved_suffixes[] = {
	"", ".lck", ".tmp", ".bak", ".Backup",
};

/* Which reserved name @canon is (a description), or NULL. */
static const char *reserved(const char *canon, const char *desc_canon)
{
	size_t n = strlen(desc_canon), i;

	if (strncmp(canon, desc_canon, n))
		return NULL;
	for (i = 0; i < sizeof(reserved_suffixes) / sizeof(*reserved_suffixes); i++)
		if (!strcmp(canon + n, reserved_suffixes[i]))
			break;
	if (i == 0)
		return "the descriptor itself";
	if (i == 1)
		return "the descriptor's lock file";
	if (!strncmp(canon + n, ".delete.", 8))
		return "a snapshot-delete's marker";
	if (i < sizeof(reserved_suffixes) / sizeof(*reserved_suffixes) ||
	    !strncmp(canon + n, ".tmp.", 5))
		return "a temporary or backup copy of the descriptor";
	return NULL;
}

/*
 * Every layer has a file of its own, and none is one of the descriptor's
 * files: two layers on one file would read each other's clusters, and
 * switch or snapshot-delete would remove a file another layer (or the
 * descriptor) lives in.  Names are compared canonical, and files that
 * exist by device and inode (which also catches a hard link).
 */
static int check_files_distinct(struct ld *l)
{
	struct prl_desc *d = l->d;
	struct fileid *f, dx = { 0 }, lk = { 0 };
	char q1[QLEN], *desc_canon, *lock;
	const char *what;
	struct stat st;
	size_t i, n = d->nr_images;
	int r = 0;

	if (!d->path)
		return 0;
	desc_canon = canon_path(d->path);
	lock = prl_xasprintf("%s.lck", desc_canon);
	dx.exists = !stat(desc_canon, &st);
	dx.dev = st.st_dev;
	dx.ino = st.st_ino;
	lk.exists = !stat(lock, &st);
	lk.dev = st.st_dev;
	lk.ino = st.st_ino;
	free(lock);

	f = prl_xcalloc(n, sizeof(*f));
	for (i = 0; i < n; i++) {
		f[i].i = i;
		f[i].canon = canon_path(d->images[i].path);
		f[i].exists = !stat(f[i].canon, &st);
		f[i].dev = st.st_dev;
		f[i].ino = st.st_ino;
	}
	for (i = 0; i < n && !r; i++) {
		const struct prl_desc_image *im = &d->images[f[i].i];

		what = reserved(f[i].canon, desc_canon);
		if (!what && f[i].exists && dx.exists && f[i].dev == dx.dev &&
		    f[i].ino == dx.ino)
			what = "the descriptor itself (another link to it)";
		if (!what && f[i].exists && lk.exists && f[i].dev == lk.dev &&
		    f[i].ino == lk.ino)
			what = "the descriptor's lock file (another link to it)";
		if (what)
			r = ld_err(l, im->node,
				   "Image %s: File '%s' is %s, a reserved name: an image cannot live there",
				   im->guid, q(q1, im->file), what);
	}
	if (!r && n > 1) {
		qsort(f, n, sizeof(*f), fid_name_cmp);
		for (i = 1; i < n && !r; i++)
			if (!strcmp(f[i - 1].canon, f[i].canon))
				r = ld_err(l, d->images[f[i].i].node,
					   "Images %s and %s name the same file %s: each layer needs a file of its own",
					   d->images[f[i - 1].i].guid,
					   d->images[f[i].i].guid, q(q1, f[i].canon));
	}
	if (!r && n > 1) {
		qsort(f, n, sizeof(*f), fid_ino_cmp);
		for (i = 1; i < n && !r && f[i].exists; i++)
			if (f[i - 1].dev == f[i].dev && f[i - 1].ino == f[i].ino)
				r = ld_err(l, d->images[f[i].i].node,
					   "Images %s and %s are the same file (%s is a link to %s): each layer needs a file of its own",
					   d->images[f[i - 1].i].guid,
					   d->images[f[i].i].guid,
					   d->images[f[i].i].file,
					   d->images[f[i - 1].i].file);
	}
	for (i = 0; i < n; i++)
		free(f[i].canon);
	free(f);
	free(desc_canon);
	return r;
}

/* ---- extraction: document -> struct --------------------------------- */

/* The fields extract() fills; the path, dir, doc and flags stay. */
static void free_parsed(struct prl_desc *d)
{
	size_t i;

	for (i = 0; i < d->nr_images; i++) {
		free(d->images[i].file);
		free(d->images[i].path);
	}
	free(d->images);
	free(d->shots);
	free(d->root_name);
	d->images = NULL;
	d->shots = NULL;
	d->root_name = NULL;
	d->nr_images = 0;
	d->nr_shots = 0;
}

static int check_version(struct ld *l, xmlNodePtr root)
{
	xmlChar *v = xmlGetNoNsProp(root, BAD_CAST "Version");
	char qb[QLEN];
	int r = 0;

	if (v && xmlStrcmp(v, BAD_CAST "1.0"))
		r = ld_err(l, root, "Version '%s' is not supported: only 1.0 is",
			   q(qb, v));
	xmlFree(v);
	return r;
}

static int extract(struct ld *l, xmlDocPtr doc)
{
	xmlNodePtr root = xmlDocGetRootElement(doc);
	char qb[QLEN];
	int r;

	if (!root)
		return ld_err(l, NULL, "no root element");
	if (!is_elem(root, ROOT_PRL) && !is_elem(root, ROOT_VZ))
		return ld_err(l, root, "root element <%s> is neither <" ROOT_PRL
			      "> nor <" ROOT_VZ ">: not a DiskDescriptor.xml",
			      q(qb, root->name));
	l->d->root_name = prl_xstrdup((const char *)root->name);
	r = check_version(l, root);
	if (!r)
		r = parse_params(l, root);
	if (!r)
		r = parse_storage(l, root);
	if (!r)
		r = parse_snapshots(l, root);
	if (!r)
		r = check_tree(l);
	if (!r)
		r = check_files_distinct(l);
	return r;
}

/* ---- XML parsing ---------------------------------------------------- */

struct xml_state {
	bool doctype;		/* a DOCTYPE was seen: parsing stopped there */
	bool failed;		/* the first error is below */
	int line;
	char msg[QLEN];
};

/*
 * A DOCTYPE is where every entity trick starts (billion laughs, external
 * entities naming local files or URLs).  The SAX callback runs once the
 * DOCTYPE's name is read, before its internal subset, so stopping here
 * means no declaration is ever parsed, let alone expanded.
 */
static void on_doctype(void *ctx, const xmlChar *name, const xmlChar *eid,
		       const xmlChar *sid)
{
	xmlParserCtxtPtr c = ctx;
	struct xml_state *st = c->_private;

	(void)name;
	(void)eid;
	(void)sid;
	if (!st->doctype) {
		st->doctype = true;
		st->line = xmlSAX2GetLineNumber(ctx);
	}
	xmlStopParser(c);
}

static void keep_error(struct xml_state *st, XML_ERR_CONST xmlError *e)
{
	char *nl;

	if (st->failed || st->doctype || e->level < XML_ERR_ERROR)
		return;
	st->failed = true;
	st->line = e->line;
	q(st->msg, e->message ? e->message : "unknown error");
	/* libxml2 ends its messages with a newline, escaped by q() */
	nl = strstr(st->msg, "\\x0a");
	if (nl && !nl[4])
		*nl = '\0';
}

static void on_ctxt_error(void *ctx, XML_ERR_CONST xmlError *e)
{
	xmlParserCtxtPtr c = ctx;

	keep_error(c->_private, e);
}

static void on_global_error(void *data, XML_ERR_CONST xmlError *e)
{
	keep_error(data, e);
}

/*
 * Errors go to our handlers, never to stderr: those of the parser through
 * its context, the rest (encoding, memory) through the thread's global
 * handler, which is put back afterwards.
 */
static xmlDocPtr xml_parse(const char *buf, size_t len, struct xml_state *st)
{
	xmlStructuredErrorFunc saved = xmlStructuredError;
	void *saved_ctx = xmlStructuredErrorContext;
	xmlParserCtxtPtr c;
	xmlDocPtr doc;

	c = xml_ok(xmlNewParserCtxt());
	c->_private = st;
	c->sax->internalSubset = on_doctype;
	c->sax->serror = on_ctxt_error;
	xmlSetStructuredErrorFunc(st, on_global_error);
	doc = xmlCtxtReadMemory(c, buf, (int)len, NULL, NULL, XML_OPTIONS);
	xmlSetStructuredErrorFunc(saved_ctx, saved);
	xmlFreeParserCtxt(c);
	if (doc && (doc->intSubset || doc->extSubset))
		st->doctype = true;
	if (doc && (st->doctype || st->failed)) {
		xmlFreeDoc(doc);
		doc = NULL;
	}
	return doc;
}

/*
 * Bound the elements and attributes before libxml2 sees the bytes: it
 * checks an element's attributes pairwise (100k of them took 19 s), and
 * every element costs memory.  Every tag starts with '<' and every
 * attribute has its '=': counting those characters bounds both from
 * above without parsing anything (the parser is libxml2's), and a real
 * DiskDescriptor.xml has a few hundred of each at most.
 */
static int prescan(const char *buf, size_t len, const char *name,
		   struct prl_err *err)
{
	size_t tags = 0, eqs = 0, i;

	for (i = 0; i < len; i++) {
		tags += buf[i] == '<';
		eqs += buf[i] == '=';
	}
	/* An element has a start and an end tag, or one empty-element tag. */
	if (tags > 2 * (size_t)PRL_DESC_MAX_ELEMENTS)
		return prl_errf(err, E2BIG,
				"%s has more than %u elements: too many for a DiskDescriptor.xml, refused",
				name, PRL_DESC_MAX_ELEMENTS);
	if (eqs > PRL_DESC_MAX_ATTRS)
		return prl_errf(err, E2BIG,
				"%s has more than %u attributes: too many for a DiskDescriptor.xml, refused",
				name, PRL_DESC_MAX_ATTRS);
	return 0;
}

/* The absolute path of @path; its folder must exist for it to be real. */
char *prl_desc_real_path(const char *path)
{
	char *real = realpath(path, NULL), *a, *b, *dir, *out;

	if (real)
		return real;
	a = prl_xstrdup(path);
	b = prl_xstrdup(path);
	dir = realpath(dirname(a), NULL);
	if (dir) {
		out = prl_xasprintf("%s/%s", strcmp(dir, "/") ? dir : "", basename(b));
	} else if (path[0] == '/') {
		out = join("/", path);
	} else {
		char *cwd = getcwd(NULL, 0);

		out = join(cwd ? cwd : "/", path);
		free(cwd);
	}
	free(dir);
	free(a);
	free(b);
	return out;
}

static char *dir_of(const char *abs)
{
	char *a = prl_xstrdup(abs), *out = prl_xstrdup(dirname(a));

	free(a);
	return out;
}

static int parse_named(const char *buf, size_t len, const char *path,
		       const char *name, unsigned int flags, bool hold,
		       struct prl_desc **out, struct prl_err *err)
{
	struct xml_state st = { 0 };
	struct prl_desc *d;
	struct ld l = { .name = name, .err = err, .flags = flags };
	xmlDocPtr doc;
	int r;

	*out = NULL;
	if (!len)
		return prl_errf(err, EINVAL, "%s is empty: not a DiskDescriptor.xml",
				name);
	if (len > PRL_DESC_MAX_BYTES)
		return prl_errf(err, EFBIG,
				"%s is larger than %u MiB: too big for a DiskDescriptor.xml, refused",
				name,
				PRL_DESC_MAX_BYTES >> 20);
	r = prescan(buf, len, name, err);
	if (r)
		return r;
	doc = xml_parse(buf, len, &st);
	if (!doc && st.doctype)
		return prl_errf(err, EINVAL,
				"%s line %d: <!DOCTYPE> refused: a DiskDescriptor.xml needs no DTD or entities, and they are a known attack (billion laughs, external entities)",
				name, st.line);
	if (!doc && st.failed)
		return prl_errf(err, EINVAL, "%s line %d: not well-formed XML: %s",
				name, st.line, st.msg);
	if (!doc)
		return prl_errf(err, EINVAL, "%s: not XML", name);

	d = prl_xcalloc(1, sizeof(*d));
	d->path = prl_desc_real_path(path);
	d->dir = dir_of(d->path);
	d->doc = doc;
	d->flags = flags;
	d->held = hold && !prl_folder_hold(d->dir, err);
	if (hold && !d->held) {
		prl_desc_free(d);
		return -EIO;
	}
	l.d = d;
	r = extract(&l, doc);
	if (r) {
		prl_desc_free(d);
		return r;
	}
	*out = d;
	return 0;
}

int prl_desc_parse_memory(const char *buf, size_t len, const char *path,
			  unsigned int flags, struct prl_desc **out,
			  struct prl_err *err)
{
	return parse_named(buf, len, path, path, flags, false, out, err);
}

/* Read all of @fd, but no more than the cap (+1 to notice a bigger file). */
static int read_capped(int fd, char *buf, size_t *len)
{
	size_t n = 0;

	while (n < PRL_DESC_MAX_BYTES + 1) {
		ssize_t k = read(fd, buf + n, PRL_DESC_MAX_BYTES + 1 - n);

		if (k < 0 && errno == EINTR)
			continue;
		if (k < 0)
			return -errno;
		if (!k)
			break;
		n += (size_t)k;
	}
	*len = n;
	return 0;
}

int prl_desc_load(const char *path, unsigned int flags, struct prl_desc **out,
		  struct prl_err *err)
{
	char *real = prl_desc_real_path(path), *dir = dir_of(real), *buf = NULL;
	struct stat st;
	size_t len = 0;
	int fd, r;

	*out = NULL;
	/* The folder first: the descriptor is read from its handle too. */
	r = prl_folder_hold(dir, err);
	if (r)
		goto out;
	/* O_NONBLOCK: a FIFO in place of the file must not hang us */
	fd = prl_folder_open(real, O_RDONLY | O_NOCTTY | O_NONBLOCK, 0);
	if (fd < 0) {
		r = prl_errf(err, errno, "cannot open %s: %s", path,
			     strerror(errno));
		goto release;
	}
	if (fstat(fd, &st) || !S_ISREG(st.st_mode)) {
		close(fd);
		r = prl_errf(err, EINVAL, "%s is not a regular file", path);
		goto release;
	}
	if (st.st_size > (off_t)PRL_DESC_MAX_BYTES) {
		close(fd);
		r = prl_errf(err, EFBIG,
			     "%s is larger than %u MiB: too big for a DiskDescriptor.xml, refused",
			     path, PRL_DESC_MAX_BYTES >> 20);
		goto release;
	}
	buf = prl_xmalloc(PRL_DESC_MAX_BYTES + 1);
	r = read_capped(fd, buf, &len);
	close(fd);
	if (r)
		r = prl_errf(err, r, "cannot read %s: %s", path, strerror(-r));
	else
		r = parse_named(buf, len, real, path, flags, true, out, err);
release:
	prl_folder_release(dir);
out:
	free(buf);
	free(dir);
	free(real);
	return r;
}

void prl_desc_free(struct prl_desc *d)
{
	if (!d)
		return;
	free_parsed(d);
	xmlFreeDoc(d->doc);
	if (d->held)
		prl_folder_release(d->dir);
	free(d->path);
	free(d->dir);
	free(d);
}

/* ---- writing -------------------------------------------------------- */

static bool blank(xmlNodePtr n)
{
	return n->type == XML_TEXT_NODE && xmlIsBlankNode(n);
}

/* The document's indentation step: that of the root's first child. */
static const char *indent_step(xmlNodePtr root)
{
	xmlNodePtr c = root ? root->children : NULL;
	const char *t, *nl;

	if (!c || !blank(c) || !c->content)
		return "  ";
	t = (const char *)c->content;
	nl = strrchr(t, '\n');
	return nl ? nl + 1 : t;
}

static void add_blank_before(xmlNodePtr at, const char *step, int depth,
			     xmlNodePtr parent)
{
	size_t k = strlen(step);
	char *s = prl_xmalloc(1 + (size_t)depth * k + 1), *p = s;

	*p++ = '\n';
	for (int i = 0; i < depth; i++, p += k)
		memcpy(p, step, k);
	*p = '\0';
	if (at)
		xml_ok(xmlAddPrevSibling(at, xml_ok(xmlNewDocText(parent->doc, BAD_CAST s))));
	else
		xml_ok(xmlAddChild(parent, xml_ok(xmlNewDocText(parent->doc, BAD_CAST s))));
	free(s);
}

/*
 * Indentation where an edit left none, and only there: an element whose
 * element children have no blanks between them (one we made, or a whole
 * document prl_desc_new() made) gets them at @depth in the document's own
 * step, and an element added among indented siblings gets their blank.
 * What was read is not touched, so unknown elements go back as they came.
 */
static void indent(xmlNodePtr n, const char *step, int depth)
{
	bool elems = false, texts = false;
	xmlNodePtr c, next;

	for (c = n->children; c; c = c->next) {
		elems |= c->type == XML_ELEMENT_NODE;
		texts |= c->type == XML_TEXT_NODE || c->type == XML_CDATA_SECTION_NODE;
	}
	if (!elems)
		return;
	for (c = n->children; c; c = next) {
		next = c->next;
		if (c->type != XML_ELEMENT_NODE)
			continue;
		if (!texts || !c->prev || !blank(c->prev))
			add_blank_before(c, step, depth + 1, n);
		indent(c, step, depth + 1);
	}
	if (!texts)
		add_blank_before(NULL, step, depth, n);
}

/* Unlink and free the element @n with the blank that indents it. */
static void drop_elem(xmlNodePtr n)
{
	xmlNodePtr b = n->prev;

	if (b && blank(b)) {
		xmlUnlinkNode(b);
		xmlFreeNode(b);
	}
	xmlUnlinkNode(n);
	xmlFreeNode(n);
}

int prl_desc_format(const struct prl_desc *d, char **buf, size_t *len,
		    struct prl_err *err)
{
	xmlStructuredErrorFunc saved = xmlStructuredError;
	void *saved_ctx = xmlStructuredErrorContext;
	struct xml_state st = { 0 };
	xmlChar *x = NULL;
	xmlSaveCtxtPtr sc;
	xmlBufferPtr b;
	xmlDocPtr copy;
	xmlNodePtr root;
	int n = 0;

	/* in the document's own encoding (none declared: UTF-8), as read */
	xmlSetStructuredErrorFunc(&st, on_global_error);
	copy = xml_ok(xmlCopyDoc(d->doc, 1));
	root = xmlDocGetRootElement(copy);
	if (root)
		indent(root, indent_step(root), 0);
	/*
	 * An empty element as <Data></Data>, the way Parallels Desktop
	 * writes it (ploop's descriptors have none): both mean the same.
	 */
	b = xml_ok(xmlBufferCreate());
	sc = xmlSaveToBuffer(b, (const char *)copy->encoding, XML_SAVE_NO_EMPTY);
	if (sc) {
		bool ok = xmlSaveDoc(sc, copy) >= 0;

		/* xmlSaveClose() frees the context whatever it returns */
		if (xmlSaveClose(sc) >= 0 && ok) {
			n = xmlBufferLength(b);
			x = n > 0 ? xmlStrndup(xmlBufferContent(b), n) : NULL;
		}
	}
	xmlBufferFree(b);
	xmlFreeDoc(copy);
	xmlSetStructuredErrorFunc(saved_ctx, saved);
	if (!x || n <= 0 || st.failed) {
		xmlFree(x);
		return prl_errf(err, EINVAL, "%s: cannot write the document out: %s",
				d->path, st.failed ? st.msg : "libxml2 failed");
	}
	*buf = prl_xmalloc((size_t)n);
	memcpy(*buf, x, (size_t)n);
	*len = (size_t)n;
	xmlFree(x);
	return 0;
}

char *prl_desc_backup_path(const char *xml)
{
	return prl_xasprintf("%s.Backup", xml);
}

int prl_desc_save(struct prl_desc *d, struct prl_err *err)
{
	struct stat st;
	char *buf, *bak;
	size_t len;
	int r;

	if (!d->nr_images)
		return prl_errf(err, EINVAL,
				"%s: no images: such a descriptor could not be loaded again, not written",
				d->path);
	r = prl_desc_format(d, &buf, &len, err);
	if (r)
		return r;
	/*
	 * Parallels Desktop keeps DiskDescriptor.xml.Backup beside it: where
	 * there is one, it is written first, so that at any instant one of
	 * the two is whole and the backup is never older than a change made.
	 */
	bak = prl_desc_backup_path(d->path);
	if (!prl_folder_lstat(bak, &st) && S_ISREG(st.st_mode))
		r = prl_write_file_atomic(bak, buf, len, 0644, err);
	if (!r)
		r = prl_write_file_atomic(d->path, buf, len, 0644, err);
	free(bak);
	free(buf);
	return r;
}

/* ---- look-ups ------------------------------------------------------- */

static size_t shot_idx(const struct prl_desc *d, const char *guid)
{
	char g[PRL_GUID_LEN + 1];
	size_t i;

	if (!guid || prl_guid_parse(guid, g))
		return SIZE_MAX;
	for (i = 0; i < d->nr_shots; i++)
		if (!strcmp(d->shots[i].guid, g))
			return i;
	return SIZE_MAX;
}

const struct prl_desc_image *prl_desc_image(const struct prl_desc *d,
					    const char *guid)
{
	char g[PRL_GUID_LEN + 1];
	size_t i;

	if (!guid || prl_guid_parse(guid, g))
		return NULL;
	for (i = 0; i < d->nr_images; i++)
		if (!strcmp(d->images[i].guid, g))
			return &d->images[i];
	return NULL;
}

const struct prl_desc_shot *prl_desc_shot(const struct prl_desc *d,
					  const char *guid)
{
	size_t i = shot_idx(d, guid);

	return i == SIZE_MAX ? NULL : &d->shots[i];
}

int prl_desc_chain(const struct prl_desc *d, const char *guid,
		   const struct prl_desc_image ***chain, size_t *len,
		   struct prl_err *err)
{
	size_t i = shot_idx(d, guid), j, n = 0;
	const struct prl_desc_image **c;
	char qb[QLEN];

	*chain = NULL;
	*len = 0;
	if (i == SIZE_MAX)
		return prl_errf(err, ENOENT, "%s: no image %s", d->path,
				q(qb, guid ? guid : "(null)"));
	/* the tree was checked acyclic; the bound is for safety only */
	for (j = i; j != SIZE_MAX && n <= d->nr_shots; j = d->shots[j].parent_idx)
		n++;
	if (n > d->nr_shots)
		return prl_errf(err, ELOOP, "%s: a cycle below %s", d->path,
				d->shots[i].guid);
	c = prl_xcalloc(n, sizeof(*c));
	for (n = 0, j = i; j != SIZE_MAX; j = d->shots[j].parent_idx)
		c[n++] = &d->images[d->shots[j].image];
	*chain = c;
	*len = n;
	return 0;
}

size_t prl_desc_nr_children(const struct prl_desc *d, const char *guid)
{
	char g[PRL_GUID_LEN + 1];
	size_t i, n = 0;

	if (!guid || prl_guid_parse(guid, g))
		return 0;
	for (i = 0; i < d->nr_shots; i++)
		n += !strcmp(d->shots[i].parent, g);
	return n;
}

/* ---- edits ---------------------------------------------------------- */

/*
 * An edit works on a copy of the document (@t, its arrays pointing into
 * the copy); edit_commit() extracts it with the load checks and only then
 * swaps it in, so a failed edit leaves @d as it was.
 */
static int edit_begin(struct prl_desc *d, struct prl_desc *t,
		      struct prl_err *err)
{
	struct ld l = { .name = d->path, .err = err, .flags = d->flags,
			.allow_empty = true };
	int r;

	memset(t, 0, sizeof(*t));
	t->path = d->path;
	t->dir = d->dir;
	t->flags = d->flags;
	t->doc = xml_ok(xmlCopyDoc(d->doc, 1));
	l.d = t;
	r = extract(&l, t->doc);
	if (r) {
		free_parsed(t);
		xmlFreeDoc(t->doc);
	}
	return r;
}

static void edit_abort(struct prl_desc *t)
{
	free_parsed(t);
	xmlFreeDoc(t->doc);
}

static int edit_commit(struct prl_desc *d, struct prl_desc *t,
		       struct prl_err *err)
{
	struct ld l = { .name = d->path, .err = err, .flags = d->flags,
			.allow_empty = true };
	xmlDocPtr old = d->doc;
	int r;

	free_parsed(t);
	l.d = t;
	r = extract(&l, t->doc);
	if (r) {
		edit_abort(t);
		return r;
	}
	free_parsed(d);
	xmlFreeDoc(old);
	d->root_name = t->root_name;
	d->disk_size = t->disk_size;
	d->cylinders = t->cylinders;
	d->heads = t->heads;
	d->sectors = t->sectors;
	d->blocksize = t->blocksize;
	d->logical_sector_size = t->logical_sector_size;
	d->physical_sector_size = t->physical_sector_size;
	d->nr_images = t->nr_images;
	d->images = t->images;
	d->nr_shots = t->nr_shots;
	d->shots = t->shots;
	memcpy(d->top, t->top, sizeof(d->top));
	d->doc = t->doc;
	return 0;
}

/* Replace the content of @n by the text @s (taken as is, not as markup). */
static void set_text(xmlNodePtr n, const char *s)
{
	xmlNodePtr c;

	while ((c = n->children)) {
		xmlUnlinkNode(c);
		xmlFreeNode(c);
	}
	xml_ok(xmlAddChild(n, xml_ok(xmlNewDocText(n->doc, BAD_CAST s))));
}

static void set_num(xmlNodePtr n, uint64_t v)
{
	char s[24];

	snprintf(s, sizeof(s), "%" PRIu64, v);
	set_text(n, s);
}

static xmlNodePtr new_leaf(xmlNodePtr parent, const char *name,
			   const char *content)
{
	/* xmlNewTextChild() takes the content as text: '&' stays '&' */
	return xml_ok(xmlNewTextChild(parent, NULL, BAD_CAST name,
				      BAD_CAST content));
}

static void new_num(xmlNodePtr parent, const char *name, uint64_t v)
{
	char s[24];

	snprintf(s, sizeof(s), "%" PRIu64, v);
	new_leaf(parent, name, s);
}

/* Insert @n after the last @name child of @p, or at the end of @p. */
static void insert_after_last(xmlNodePtr p, const char *name, xmlNodePtr n)
{
	xmlNodePtr c, last = NULL;

	for (c = p->children; c; c = c->next)
		if (is_elem(c, name))
			last = c;
	if (last)
		xml_ok(xmlAddNextSibling(last, n));
	else
		xml_ok(xmlAddChild(p, n));
}

static xmlNodePtr elem_path(xmlDocPtr doc, const char *a, const char *b)
{
	xmlNodePtr n = find(xmlDocGetRootElement(doc), a);

	return b ? find(n, b) : n;
}

/*
 * CHS for @size sectors whose product is @size where some geometry allows
 * it (16 heads and 63, then 32 sectors first, like ploop), else ploop's
 * rounded-down cylinders with 16 heads and 63 sectors.
 */
static int geometry(uint64_t size, uint32_t *c, uint32_t *h, uint32_t *s)
{
	static const uint32_t first[] = { 63, 32 };
	uint32_t hh, ss;
	size_t i;

	for (i = 0; i < 2; i++) {
		hh = 16;
		ss = first[i];
		if (size % (hh * ss) == 0 && size / (hh * ss) <= UINT32_MAX)
			goto found;
	}
	for (hh = 16; hh >= 1; hh--)
		for (ss = 63; ss >= 1; ss--)
			if (size % (hh * ss) == 0 && size / (hh * ss) <= UINT32_MAX)
				goto found;
	hh = 16;
	ss = 63;
	if (size / (hh * ss) > UINT32_MAX)
		return -ERANGE;
found:
	*c = (uint32_t)(size / (hh * ss));
	*h = hh;
	*s = ss;
	return 0;
}

static int edit_guid(struct prl_desc *d, const char *what, const char *guid,
		     char out[PRL_GUID_LEN + 1], struct prl_err *err)
{
	char qb[QLEN];

	if (!guid || prl_guid_parse(guid, out))
		return prl_errf(err, EINVAL, "%s: %s '%s' is not a GUID", d->path,
				what, q(qb, guid ? guid : "(null)"));
	return 0;
}

static int check_new_file(struct prl_desc *d, const char *file,
			  struct prl_err *err)
{
	bool escapes;
	char qb[QLEN];

	if (!file || !*file || file[0] == '/' ||
	    depth_of(file, &escapes) <= 0 || escapes)
		return prl_errf(err, EINVAL,
				"%s: File '%s' must name a file inside the folder %s, relative to it",
				d->path,
				q(qb, file ? file : "(null)"), d->dir);
	return 0;
}

static xmlNodePtr new_image(xmlDocPtr doc, const char *guid,
			    enum prl_image_type type, const char *file)
{
	xmlNodePtr n = xml_ok(xmlNewDocNode(doc, NULL, BAD_CAST "Image", NULL));

	new_leaf(n, "GUID", guid);
	new_leaf(n, "Type", type == PRL_IMAGE_PLAIN ? "Plain" : "Compressed");
	new_leaf(n, "File", file);
	return n;
}

static xmlNodePtr new_shot(xmlDocPtr doc, const char *guid, const char *parent)
{
	xmlNodePtr n = xml_ok(xmlNewDocNode(doc, NULL, BAD_CAST "Shot", NULL));

	new_leaf(n, "GUID", guid);
	new_leaf(n, "ParentGUID", parent);
	return n;
}

int prl_desc_add(struct prl_desc *d, const char *guid, enum prl_image_type type,
		 const char *file, const char *parent, struct prl_err *err)
{
	char g[PRL_GUID_LEN + 1], p[PRL_GUID_LEN + 1];
	struct prl_desc t;
	bool root;
	int r;

	r = edit_guid(d, "new image", guid, g, err);
	if (!r)
		r = edit_guid(d, "parent", parent, p, err);
	if (!r)
		r = check_new_file(d, file, err);
	if (r)
		return r;
	root = !strcmp(p, PRL_GUID_NULL);
	if (!strcmp(g, PRL_GUID_NULL))
		return prl_errf(err, EINVAL, "%s: the null GUID cannot name an image", d->path);
	if (type != PRL_IMAGE_PLAIN && type != PRL_IMAGE_COMPRESSED)
		return prl_errf(err, EINVAL, "%s: unknown image type %d", d->path,
				(int)type);
	if (prl_desc_image(d, g) || prl_desc_shot(d, g))
		return prl_errf(err, EEXIST, "%s: GUID %s is already in use",
				d->path, g);
	if (root && d->nr_shots)
		return prl_errf(err, EINVAL,
				"%s: %s cannot be a second root: %s is the root",
				d->path, g, d->shots[0].guid);
	if (!root && !prl_desc_shot(d, p))
		return prl_errf(err, ENOENT, "%s: parent %s names no Shot",
				d->path, p);
	if (!root && type == PRL_IMAGE_PLAIN)
		return prl_errf(err, EINVAL,
				"%s: %s cannot be Plain: only the root may be a raw image",
				d->path, g);

	r = edit_begin(d, &t, err);
	if (r)
		return r;
	insert_after_last(elem_path(t.doc, "StorageData", "Storage"), "Image",
			  new_image(t.doc, g, type, file));
	insert_after_last(elem_path(t.doc, "Snapshots", NULL), "Shot",
			  new_shot(t.doc, g, p));
	return edit_commit(d, &t, err);
}

/* delete, refused for an image that snapshots hang from. */
int prl_desc_remove(struct prl_desc *d, const char *guid, struct prl_err *err)
{
	char g[PRL_GUID_LEN + 1];
	size_t n;
	int r;

	r = edit_guid(d, "image", guid, g, err);
	if (r)
		return r;
	n = prl_desc_nr_children(d, g);
	if (n && strcmp(g, d->top))
		return prl_errf(err, EBUSY,
				"%s: %s is the parent of %zu snapshot%s: remove or merge %s first",
				d->path, g, n,
				n == 1 ? "" : "s", n == 1 ? "it" : "them");
	return prl_desc_delete(d, g, err);
}

int prl_desc_delete(struct prl_desc *d, const char *guid, struct prl_err *err)
{
	char g[PRL_GUID_LEN + 1];
	struct prl_desc t;
	size_t i, j;
	xmlNodePtr in, sn;
	int r;

	r = edit_guid(d, "image", guid, g, err);
	if (r)
		return r;
	i = shot_idx(d, g);
	if (i == SIZE_MAX)
		return prl_errf(err, ENOENT, "%s: no image %s", d->path, g);
	if (!strcmp(g, d->top))
		return prl_errf(err, EBUSY,
				"%s: %s is the top image: make another image the top before removing it",
				d->path, g);
	r = edit_begin(d, &t, err);
	if (r)
		return r;
	/* The children take the deleted one's parent; the checks judge it. */
	for (j = 0; j < t.nr_shots; j++)
		if (!strcmp(t.shots[j].parent, g))
			set_text(find(t.shots[j].node, "ParentGUID"),
				 t.shots[i].parent);
	in = t.images[t.shots[i].image].node;
	sn = t.shots[i].node;
	drop_elem(in);
	drop_elem(sn);
	return edit_commit(d, &t, err);
}

int prl_desc_set_parent(struct prl_desc *d, const char *guid,
			const char *parent, struct prl_err *err)
{
	char g[PRL_GUID_LEN + 1], p[PRL_GUID_LEN + 1];
	struct prl_desc t;
	size_t i, pi, j, steps;
	int r;

	r = edit_guid(d, "image", guid, g, err);
	if (!r)
		r = edit_guid(d, "parent", parent, p, err);
	if (r)
		return r;
	i = shot_idx(d, g);
	if (i == SIZE_MAX)
		return prl_errf(err, ENOENT, "%s: no image %s", d->path, g);
	if (!strcmp(p, d->shots[i].parent))
		return 0;
	if (!strcmp(p, PRL_GUID_NULL))
		return prl_errf(err, EINVAL, "%s: %s cannot become a second root",
				d->path, g);
	if (!strcmp(p, g))
		return prl_errf(err, EINVAL, "%s: %s cannot be its own parent",
				d->path, g);
	pi = shot_idx(d, p);
	if (pi == SIZE_MAX)
		return prl_errf(err, ENOENT, "%s: parent %s names no Shot",
				d->path, p);
	for (j = pi, steps = 0; j != SIZE_MAX && steps <= d->nr_shots;
	     j = d->shots[j].parent_idx, steps++)
		if (j == i)
			return prl_errf(err, ELOOP,
					"%s: %s is below %s: making it the parent would be a cycle",
					d->path,
					p, g);
	if (d->images[d->shots[i].image].type == PRL_IMAGE_PLAIN)
		return prl_errf(err, EINVAL,
				"%s: %s is Plain: only the root may be a raw image", d->path, g);

	r = edit_begin(d, &t, err);
	if (r)
		return r;
	set_text(find(t.shots[i].node, "ParentGUID"), p);
	return edit_commit(d, &t, err);
}

int prl_desc_set_top(struct prl_desc *d, const char *guid, struct prl_err *err)
{
	char g[PRL_GUID_LEN + 1];
	xmlNodePtr sn, tn;
	struct prl_desc t;
	int r;

	r = edit_guid(d, "top", guid, g, err);
	if (r)
		return r;
	if (!strcmp(g, PRL_GUID_BACKUP))
		return prl_errf(err, EINVAL, "%s: the top image cannot be BackupID "
				PRL_GUID_BACKUP, d->path);
	if (!prl_desc_shot(d, g))
		return prl_errf(err, ENOENT, "%s: no image %s", d->path, g);

	r = edit_begin(d, &t, err);
	if (r)
		return r;
	sn = elem_path(t.doc, "Snapshots", NULL);
	tn = find(sn, "TopGUID");
	if (tn) {
		set_text(tn, g);
	} else {
		/* first, as ploop writes it: it reads Shots up to the end */
		tn = xml_ok(xmlNewDocNode(t.doc, NULL, BAD_CAST "TopGUID", NULL));
		set_text(tn, g);
		if (sn->children)
			xml_ok(xmlAddPrevSibling(sn->children, tn));
		else
			xml_ok(xmlAddChild(sn, tn));
	}
	return edit_commit(d, &t, err);
}

int prl_desc_set_size(struct prl_desc *d, uint64_t disk_size,
		      struct prl_err *err)
{
	xmlNodePtr p;
	struct prl_desc t;
	uint32_t c, h, s;
	int r;

	if (!disk_size || geometry(disk_size, &c, &h, &s))
		return prl_errf(err, EINVAL,
				"%s: a disk of %" PRIu64 " sectors is not possible",
				d->path, disk_size);
	if (d->logical_sector_size && disk_size % (d->logical_sector_size / 512))
		return prl_errf(err, EINVAL,
				"%s: a disk of %" PRIu64 " sectors is not a whole number of its %" PRIu32
				"-byte sectors (LogicSectorSize): choose a multiple of %" PRIu32 " bytes",
				d->path, disk_size, d->logical_sector_size,
				d->logical_sector_size);
	r = edit_begin(d, &t, err);
	if (r)
		return r;
	p = elem_path(t.doc, "Disk_Parameters", NULL);
	set_num(find(p, "Disk_size"), disk_size);
	set_num(find(p, "Cylinders"), c);
	set_num(find(p, "Heads"), h);
	set_num(find(p, "Sectors"), s);
	set_num(find(elem_path(t.doc, "StorageData", "Storage"), "End"),
		disk_size);
	return edit_commit(d, &t, err);
}

int prl_desc_rename(struct prl_desc *d, const char *guid, const char *new_guid,
		    struct prl_err *err)
{
	char g[PRL_GUID_LEN + 1], ng[PRL_GUID_LEN + 1];
	xmlNodePtr sn, tn;
	struct prl_desc t;
	size_t i, k;
	int r;

	r = edit_guid(d, "image", guid, g, err);
	if (!r)
		r = edit_guid(d, "new GUID", new_guid, ng, err);
	if (r)
		return r;
	i = shot_idx(d, g);
	if (i == SIZE_MAX)
		return prl_errf(err, ENOENT, "%s: no image %s", d->path, g);
	if (!strcmp(g, ng))
		return 0;
	if (!strcmp(ng, PRL_GUID_NULL))
		return prl_errf(err, EINVAL, "%s: the null GUID cannot name an image", d->path);
	if (prl_desc_image(d, ng) || prl_desc_shot(d, ng))
		return prl_errf(err, EEXIST, "%s: GUID %s is already in use",
				d->path, ng);
	if (!strcmp(g, d->top) && !strcmp(ng, PRL_GUID_BACKUP))
		return prl_errf(err, EINVAL,
				"%s: %s is the top image, which cannot be BackupID " PRL_GUID_BACKUP,
				d->path, g);

	r = edit_begin(d, &t, err);
	if (r)
		return r;
	set_text(find(t.images[t.shots[i].image].node, "GUID"), ng);
	set_text(find(t.shots[i].node, "GUID"), ng);
	for (k = 0; k < t.nr_shots; k++)
		if (!strcmp(t.shots[k].parent, g))
			set_text(find(t.shots[k].node, "ParentGUID"), ng);
	if (!strcmp(g, t.top)) {
		/* the top stays the top: name it, it is no longer implied */
		sn = elem_path(t.doc, "Snapshots", NULL);
		tn = find(sn, "TopGUID");
		if (!tn) {
			tn = xml_ok(xmlNewDocNode(t.doc, NULL, BAD_CAST "TopGUID",
						  NULL));
			xml_ok(xmlAddPrevSibling(sn->children, tn));
		}
		set_text(tn, ng);
	}
	return edit_commit(d, &t, err);
}

int prl_desc_set_file(struct prl_desc *d, const char *guid, const char *file,
		      struct prl_err *err)
{
	char g[PRL_GUID_LEN + 1];
	struct prl_desc t;
	size_t i;
	int r;

	r = edit_guid(d, "image", guid, g, err);
	if (!r)
		r = check_new_file(d, file, err);
	if (r)
		return r;
	i = shot_idx(d, g);
	if (i == SIZE_MAX)
		return prl_errf(err, ENOENT, "%s: no image %s", d->path, g);

	r = edit_begin(d, &t, err);
	if (r)
		return r;
	set_text(find(t.images[t.shots[i].image].node, "File"), file);
	return edit_commit(d, &t, err);
}

/* ---- a new descriptor ----------------------------------------------- */

/* Element order and content as ploop 1.15 writes after "ploop init". */
static xmlDocPtr new_doc(uint64_t size, uint32_t blocksize, uint32_t c,
			 uint32_t h, uint32_t s)
{
	xmlDocPtr doc = xml_ok(xmlNewDoc(BAD_CAST "1.0"));
	xmlNodePtr root, p, st;

	root = xml_ok(xmlNewDocNode(doc, NULL, BAD_CAST ROOT_PRL, NULL));
	xmlDocSetRootElement(doc, root);
	p = new_leaf(root, "Disk_Parameters", NULL);
	new_num(p, "Disk_size", size);
	new_num(p, "Cylinders", c);
	new_num(p, "Heads", h);
	new_num(p, "Sectors", s);
	new_num(p, "Padding", 0);
	st = new_leaf(new_leaf(root, "StorageData", NULL), "Storage", NULL);
	new_num(st, "Start", 0);
	new_num(st, "End", size);
	new_num(st, "Blocksize", blocksize);
	new_leaf(new_leaf(root, "Snapshots", NULL), "TopGUID", PRL_GUID_TOP);
	return doc;
}

struct prl_desc *prl_desc_new(const char *path, uint64_t disk_size,
			      uint32_t blocksize)
{
	struct prl_desc *d;
	struct prl_err err;
	struct ld l = { .err = &err, .allow_empty = true };
	uint32_t c, h, s;

	if (!disk_size || !blocksize || geometry(disk_size, &c, &h, &s))
		return NULL;
	d = prl_xcalloc(1, sizeof(*d));
	d->path = prl_desc_real_path(path);
	d->dir = dir_of(d->path);
	d->held = !prl_folder_hold(d->dir, &err);
	d->doc = new_doc(disk_size, blocksize, c, h, s);
	l.d = d;
	l.name = d->path;
	if (extract(&l, d->doc)) {
		prl_desc_free(d);	/* cannot happen: we made it */
		return NULL;
	}
	return d;
}

/* ---- GUIDs ---------------------------------------------------------- */

void prl_guid_new(char out[PRL_GUID_LEN + 1])
{
	uuid_t u;

	uuid_generate_random(u);
	out[0] = '{';
	uuid_unparse_lower(u, out + 1);
	out[PRL_GUID_LEN - 1] = '}';
	out[PRL_GUID_LEN] = '\0';
}

/* With or without the braces; the result always has them, lower case. */
int prl_guid_parse(const char *s, char out[PRL_GUID_LEN + 1])
{
	size_t n = strlen(s), i;
	char mid[PRL_GUID_LEN - 1];
	uuid_t u;

	if (n == PRL_GUID_LEN && s[0] == '{' && s[n - 1] == '}')
		s++;
	else if (n != PRL_GUID_LEN - 2)
		return -EINVAL;
	memcpy(mid, s, PRL_GUID_LEN - 2);
	mid[PRL_GUID_LEN - 2] = '\0';
	if (uuid_parse(mid, u))
		return -EINVAL;
	out[0] = '{';
	for (i = 0; i < PRL_GUID_LEN - 2; i++)
		out[i + 1] = (char)tolower((unsigned char)mid[i]);
	out[PRL_GUID_LEN - 1] = '}';
	out[PRL_GUID_LEN] = '\0';
	return 0;
}
