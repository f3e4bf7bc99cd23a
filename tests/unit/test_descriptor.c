// SPDX-License-Identifier: GPL-2.0
/*
 * Unit tests of userspace/descriptor.c: DiskDescriptor.xml as ploop 1.15
 * writes it, every refusal with the words of its message, the path rules
 * on a real folder (symlinks included), and edits that survive a save and
 * a reload with the elements we do not know kept as they were.
 */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <sys/stat.h>
#include <unistd.h>
#include <cmocka.h>

#include "descriptor.h"

/* ploop init -s 64M -f ploop1 -t none root.hds, written by Debian's ploop 1.15 */
static const char PLOOP_INIT[] =
	"<?xml version=\"1.0\"?>\n"
	"<Parallels_disk_image>\n"
	"  <Disk_Parameters>\n"
	"    <Disk_size>131072</Disk_size>\n"
	"    <Cylinders>256</Cylinders>\n"
	"    <Heads>16</Heads>\n"
	"    <Sectors>32</Sectors>\n"
	"    <Padding>0</Padding>\n"
	"  </Disk_Parameters>\n"
	"  <StorageData>\n"
	"    <Storage>\n"
	"      <Start>0</Start>\n"
	"      <End>131072</End>\n"
	"      <Blocksize>2048</Blocksize>\n"
	"      <Image>\n"
	"        <GUID>{5fbaabe3-6958-40ff-92a7-860e329aab41}</GUID>\n"
	"        <Type>Compressed</Type>\n"
	"        <File>root.hds</File>\n"
	"      </Image>\n"
	"    </Storage>\n"
	"  </StorageData>\n"
	"  <Snapshots>\n"
	"    <TopGUID>{5fbaabe3-6958-40ff-92a7-860e329aab41}</TopGUID>\n"
	"    <Shot>\n"
	"      <GUID>{5fbaabe3-6958-40ff-92a7-860e329aab41}</GUID>\n"
	"      <ParentGUID>{00000000-0000-0000-0000-000000000000}</ParentGUID>\n"
	"    </Shot>\n"
	"  </Snapshots>\n"
	"</Parallels_disk_image>\n";

/* then ploop snapshot, twice, written by Debian's ploop 1.15 */
static const char PLOOP_CHAIN[] =
	"<?xml version=\"1.0\"?>\n"
	"<Parallels_disk_image>\n"
	"  <Disk_Parameters>\n"
	"    <Disk_size>131072</Disk_size>\n"
	"    <Cylinders>256</Cylinders>\n"
	"    <Heads>16</Heads>\n"
	"    <Sectors>32</Sectors>\n"
	"    <Padding>0</Padding>\n"
	"  </Disk_Parameters>\n"
	"  <StorageData>\n"
	"    <Storage>\n"
	"      <Start>0</Start>\n"
	"      <End>131072</End>\n"
	"      <Blocksize>2048</Blocksize>\n"
	"      <Image>\n"
	"        <GUID>{f9f878c0-e78a-46b9-8d72-ee9a3bed0e5e}</GUID>\n"
	"        <Type>Compressed</Type>\n"
	"        <File>root.hds</File>\n"
	"      </Image>\n"
	"      <Image>\n"
	"        <GUID>{cfcfea16-db09-47b4-8d6a-480a4b5ddf66}</GUID>\n"
	"        <Type>Compressed</Type>\n"
	"        <File>root.hds.{ac8f3f64-9798-4cbe-aec3-744ef7153d67}</File>\n"
	"      </Image>\n"
	"      <Image>\n"
	"        <GUID>{5fbaabe3-6958-40ff-92a7-860e329aab41}</GUID>\n"
	"        <Type>Compressed</Type>\n"
	"        <File>root.hds.{c2055584-ae86-4c17-b7fb-f54ee025d771}</File>\n"
	"      </Image>\n"
	"    </Storage>\n"
	"  </StorageData>\n"
	"  <Snapshots>\n"
	"    <TopGUID>{5fbaabe3-6958-40ff-92a7-860e329aab41}</TopGUID>\n"
	"    <Shot>\n"
	"      <GUID>{f9f878c0-e78a-46b9-8d72-ee9a3bed0e5e}</GUID>\n"
	"      <ParentGUID>{00000000-0000-0000-0000-000000000000}</ParentGUID>\n"
	"    </Shot>\n"
	"    <Shot>\n"
	"      <GUID>{cfcfea16-db09-47b4-8d6a-480a4b5ddf66}</GUID>\n"
	"      <ParentGUID>{f9f878c0-e78a-46b9-8d72-ee9a3bed0e5e}</ParentGUID>\n"
	"    </Shot>\n"
	"    <Shot>\n"
	"      <GUID>{5fbaabe3-6958-40ff-92a7-860e329aab41}</GUID>\n"
	"      <ParentGUID>{cfcfea16-db09-47b4-8d6a-480a4b5ddf66}</ParentGUID>\n"
	"    </Shot>\n"
	"  </Snapshots>\n"
	"</Parallels_disk_image>\n";

/* then ploop snapshot-switch to the root, written by Debian's ploop 1.15 */
static const char PLOOP_TREE[] =
	"<?xml version=\"1.0\"?>\n"
	"<Parallels_disk_image>\n"
	"  <Disk_Parameters>\n"
	"    <Disk_size>131072</Disk_size>\n"
	"    <Cylinders>256</Cylinders>\n"
	"    <Heads>16</Heads>\n"
	"    <Sectors>32</Sectors>\n"
	"    <Padding>0</Padding>\n"
	"  </Disk_Parameters>\n"
	"  <StorageData>\n"
	"    <Storage>\n"
	"      <Start>0</Start>\n"
	"      <End>131072</End>\n"
	"      <Blocksize>2048</Blocksize>\n"
	"      <Image>\n"
	"        <GUID>{f9f878c0-e78a-46b9-8d72-ee9a3bed0e5e}</GUID>\n"
	"        <Type>Compressed</Type>\n"
	"        <File>root.hds</File>\n"
	"      </Image>\n"
	"      <Image>\n"
	"        <GUID>{cfcfea16-db09-47b4-8d6a-480a4b5ddf66}</GUID>\n"
	"        <Type>Compressed</Type>\n"
	"        <File>root.hds.{ac8f3f64-9798-4cbe-aec3-744ef7153d67}</File>\n"
	"      </Image>\n"
	"      <Image>\n"
	"        <GUID>{5fbaabe3-6958-40ff-92a7-860e329aab41}</GUID>\n"
	"        <Type>Compressed</Type>\n"
	"        <File>root.hds.{7adbba72-d0b2-443d-939d-bdfb7c2bb4a5}</File>\n"
	"      </Image>\n"
	"    </Storage>\n"
	"  </StorageData>\n"
	"  <Snapshots>\n"
	"    <TopGUID>{5fbaabe3-6958-40ff-92a7-860e329aab41}</TopGUID>\n"
	"    <Shot>\n"
	"      <GUID>{f9f878c0-e78a-46b9-8d72-ee9a3bed0e5e}</GUID>\n"
	"      <ParentGUID>{00000000-0000-0000-0000-000000000000}</ParentGUID>\n"
	"    </Shot>\n"
	"    <Shot>\n"
	"      <GUID>{cfcfea16-db09-47b4-8d6a-480a4b5ddf66}</GUID>\n"
	"      <ParentGUID>{f9f878c0-e78a-46b9-8d72-ee9a3bed0e5e}</ParentGUID>\n"
	"    </Shot>\n"
	"    <Shot>\n"
	"      <GUID>{5fbaabe3-6958-40ff-92a7-860e329aab41}</GUID>\n"
	"      <ParentGUID>{f9f878c0-e78a-46b9-8d72-ee9a3bed0e5e}</ParentGUID>\n"
	"    </Shot>\n"
	"  </Snapshots>\n"
	"</Parallels_disk_image>\n";

/* ploop init -s 64M -f raw -t none root.hdd, written by Debian's ploop 1.15 */
static const char PLOOP_RAW[] =
	"<?xml version=\"1.0\"?>\n"
	"<Parallels_disk_image>\n"
	"  <Disk_Parameters>\n"
	"    <Disk_size>131072</Disk_size>\n"
	"    <Cylinders>256</Cylinders>\n"
	"    <Heads>16</Heads>\n"
	"    <Sectors>32</Sectors>\n"
	"    <Padding>0</Padding>\n"
	"  </Disk_Parameters>\n"
	"  <StorageData>\n"
	"    <Storage>\n"
	"      <Start>0</Start>\n"
	"      <End>131072</End>\n"
	"      <Blocksize>2048</Blocksize>\n"
	"      <Image>\n"
	"        <GUID>{5fbaabe3-6958-40ff-92a7-860e329aab41}</GUID>\n"
	"        <Type>Plain</Type>\n"
	"        <File>root.hdd</File>\n"
	"      </Image>\n"
	"    </Storage>\n"
	"  </StorageData>\n"
	"  <Snapshots>\n"
	"    <TopGUID>{5fbaabe3-6958-40ff-92a7-860e329aab41}</TopGUID>\n"
	"    <Shot>\n"
	"      <GUID>{5fbaabe3-6958-40ff-92a7-860e329aab41}</GUID>\n"
	"      <ParentGUID>{00000000-0000-0000-0000-000000000000}</ParentGUID>\n"
	"    </Shot>\n"
	"  </Snapshots>\n"
	"</Parallels_disk_image>\n";

/* ploop init -s 1G -f ploop1 -t none root.hds, written by Debian's ploop 1.15 */
static const char PLOOP_1G[] =
	"<?xml version=\"1.0\"?>\n"
	"<Parallels_disk_image>\n"
	"  <Disk_Parameters>\n"
	"    <Disk_size>2097152</Disk_size>\n"
	"    <Cylinders>2080</Cylinders>\n"
	"    <Heads>16</Heads>\n"
	"    <Sectors>63</Sectors>\n"
	"    <Padding>0</Padding>\n"
	"  </Disk_Parameters>\n"
	"  <StorageData>\n"
	"    <Storage>\n"
	"      <Start>0</Start>\n"
	"      <End>2097152</End>\n"
	"      <Blocksize>2048</Blocksize>\n"
	"      <Image>\n"
	"        <GUID>{5fbaabe3-6958-40ff-92a7-860e329aab41}</GUID>\n"
	"        <Type>Compressed</Type>\n"
	"        <File>root.hds</File>\n"
	"      </Image>\n"
	"    </Storage>\n"
	"  </StorageData>\n"
	"  <Snapshots>\n"
	"    <TopGUID>{5fbaabe3-6958-40ff-92a7-860e329aab41}</TopGUID>\n"
	"    <Shot>\n"
	"      <GUID>{5fbaabe3-6958-40ff-92a7-860e329aab41}</GUID>\n"
	"      <ParentGUID>{00000000-0000-0000-0000-000000000000}</ParentGUID>\n"
	"    </Shot>\n"
	"  </Snapshots>\n"
	"</Parallels_disk_image>\n";

/* ---- hand-written documents ------------------------------------------ */

#define GN	PRL_GUID_NULL
#define GT	PRL_GUID_TOP
#define GA	"{aaaaaaaa-0000-4000-8000-000000000001}"
#define GB	"{bbbbbbbb-0000-4000-8000-000000000002}"
#define GC	"{cccccccc-0000-4000-8000-000000000003}"

#define PARAMS(size, c, h, s, pad) "<Disk_Parameters><Disk_size>" size	\
	"</Disk_size><Cylinders>" c "</Cylinders><Heads>" h "</Heads>"	\
	"<Sectors>" s "</Sectors><Padding>" pad "</Padding></Disk_Parameters>"
#define P64		PARAMS("131072", "256", "16", "32", "0")
#define STOR(start, end, bs, imgs) "<StorageData><Storage><Start>" start \
	"</Start><End>" end "</End><Blocksize>" bs "</Blocksize>" imgs	\
	"</Storage></StorageData>"
#define S64(imgs)	STOR("0", "131072", "2048", imgs)
#define IMG(g, f)	"<Image><GUID>" g "</GUID><Type>Compressed</Type><File>" \
	f "</File></Image>"
#define RAW(g, f)	"<Image><GUID>" g "</GUID><Type>Plain</Type><File>" \
	f "</File></Image>"
#define SHOT(g, p)	"<Shot><GUID>" g "</GUID><ParentGUID>" p	\
	"</ParentGUID></Shot>"
#define SNAPS(x)	"<Snapshots>" x "</Snapshots>"
#define TOPG(g)		"<TopGUID>" g "</TopGUID>"
#define DOC(body)	"<?xml version=\"1.0\"?>\n<Parallels_disk_image>\n" \
	body "\n</Parallels_disk_image>\n"
/* The smallest good one, and one with a chain GA <- GT. */
#define ONE_IMG		S64(IMG(GT, "root.hds"))
#define ONE_SNAP	SNAPS(SHOT(GT, GN))
#define ONE		DOC(P64 ONE_IMG ONE_SNAP)
#define TWO		DOC(P64 S64(IMG(GA, "a.hds") IMG(GT, "t.hds"))	\
			    SNAPS(SHOT(GA, GN) SHOT(GT, GA)))

/* ---- a folder per test ----------------------------------------------- */

static char base[64];		/* mkdtemp: holds dir/ and "outside" files */
static char dir[PATH_MAX];	/* the descriptor's folder, realpath'ed */
static char xml[PATH_MAX];	/* dir/DiskDescriptor.xml */
static struct prl_err err;

static int rm_one(const char *p, const struct stat *st, int flag,
		  struct FTW *f)
{
	(void)st;
	(void)flag;
	(void)f;
	return remove(p);
}

static int setup(void **state)
{
	char d[PATH_MAX];

	(void)state;
	strcpy(base, "/tmp/prl-desc-test.XXXXXX");
	if (!mkdtemp(base))
		return -1;
	snprintf(d, sizeof(d), "%s/d", base);
	if (mkdir(d, 0755) || !realpath(d, dir))
		return -1;
	if (snprintf(xml, sizeof(xml), "%s/" PRL_DESC_NAME, dir) >=
	    (int)sizeof(xml))
		return -1;
	memset(&err, 0, sizeof(err));
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	return nftw(base, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

/* @name relative to the folder (or to base/ if it starts with "../"). */
static const char *at(const char *name)
{
	static char buf[4][PATH_MAX];
	static int i;

	i = (i + 1) % 4;
	if (snprintf(buf[i], PATH_MAX, "%s/%s", dir, name) >= PATH_MAX)
		fail_msg("path too long");
	return buf[i];
}

static void put_n(const char *path, const char *s, size_t n)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);

	assert_true(fd >= 0);
	assert_int_equal(write(fd, s, n), (ssize_t)n);
	close(fd);
}

static void put(const char *path, const char *s)
{
	put_n(path, s, strlen(s));
}

static char *slurp(const char *path)
{
	FILE *f = fopen(path, "r");
	char *s = calloc(1, 1 << 20);
	size_t n;

	assert_non_null(f);
	n = fread(s, 1, (1 << 20) - 1, f);
	s[n] = '\0';
	fclose(f);
	return s;
}

static int load(const char *doc, unsigned int flags, struct prl_desc **d)
{
	put(xml, doc);
	return prl_desc_load(xml, flags, d, &err);
}

static struct prl_desc *ok(const char *doc, unsigned int flags)
{
	struct prl_desc *d = NULL;

	if (load(doc, flags, &d))
		fail_msg("refused: %s", err.msg);
	return d;
}

/* The refusal must carry @what, name the file, and be one line. */
static void check_msg(const char *what)
{
	if (!strstr(err.msg, what))
		fail_msg("expected \"%s\" in: %s", what, err.msg);
	if (strchr(err.msg, '\n'))
		fail_msg("message has a newline: %s", err.msg);
}

static void refused(const char *doc, unsigned int flags, const char *what)
{
	struct prl_desc *d = NULL;

	memset(&err, 0, sizeof(err));
	if (!load(doc, flags, &d)) {
		prl_desc_free(d);
		fail_msg("accepted, expected \"%s\"", what);
	}
	assert_null(d);
	check_msg(what);
	check_msg(PRL_DESC_NAME);
}

/* ---- ploop's own descriptors ----------------------------------------- */

static void t_ploop_init(void **state)
{
	struct prl_desc *d;

	(void)state;
	put(at("root.hds"), "");
	d = ok(PLOOP_INIT, 0);
	assert_string_equal(d->path, xml);
	assert_string_equal(d->dir, dir);
	assert_string_equal(d->root_name, "Parallels_disk_image");
	assert_int_equal(d->disk_size, 131072);
	assert_int_equal(d->cylinders, 256);
	assert_int_equal(d->heads, 16);
	assert_int_equal(d->sectors, 32);
	assert_int_equal(d->blocksize, 2048);
	assert_int_equal(d->nr_images, 1);
	assert_int_equal(d->nr_shots, 1);
	assert_string_equal(d->top, GT);
	assert_string_equal(d->images[0].guid, GT);
	assert_int_equal(d->images[0].type, PRL_IMAGE_COMPRESSED);
	assert_string_equal(d->images[0].file, "root.hds");
	assert_string_equal(d->images[0].path, at("root.hds"));
	assert_string_equal(d->shots[0].parent, GN);
	assert_true(d->shots[0].parent_idx == SIZE_MAX);
	assert_ptr_equal(prl_desc_image(d, GT), &d->images[0]);
	assert_ptr_equal(prl_desc_shot(d, GT), &d->shots[0]);
	assert_null(prl_desc_image(d, GA));
	assert_int_equal(prl_desc_nr_children(d, GT), 0);
	prl_desc_free(d);
}

static void t_ploop_chain(void **state)
{
	const struct prl_desc_image **c;
	struct prl_desc *d;
	size_t n;

	(void)state;
	put(at("root.hds"), "");
	put(at("root.hds.{ac8f3f64-9798-4cbe-aec3-744ef7153d67}"), "");
	d = ok(PLOOP_CHAIN, 0);
	assert_int_equal(d->nr_images, 3);
	assert_int_equal(prl_desc_chain(d, d->top, &c, &n, &err), 0);
	assert_int_equal(n, 3);
	assert_string_equal(c[0]->guid, GT);
	assert_string_equal(c[0]->file,
			    "root.hds.{c2055584-ae86-4c17-b7fb-f54ee025d771}");
	assert_string_equal(c[1]->guid, "{cfcfea16-db09-47b4-8d6a-480a4b5ddf66}");
	assert_string_equal(c[2]->guid, "{f9f878c0-e78a-46b9-8d72-ee9a3bed0e5e}");
	assert_string_equal(c[2]->file, "root.hds");
	free(c);
	/* upper case and no braces work for look-ups */
	assert_int_equal(prl_desc_chain(d, "CFCFEA16-DB09-47B4-8D6A-480A4B5DDF66",
					&c, &n, &err), 0);
	assert_int_equal(n, 2);
	free(c);
	assert_int_equal(prl_desc_nr_children(d, "{f9f878c0-e78a-46b9-8d72-ee9a3bed0e5e}"), 1);
	assert_int_equal(prl_desc_chain(d, GA, &c, &n, &err), -ENOENT);
	assert_null(c);
	check_msg("no image " GA);
	prl_desc_free(d);
}

static void t_ploop_tree(void **state)
{
	const char *root = "{f9f878c0-e78a-46b9-8d72-ee9a3bed0e5e}";
	const char *side = "{cfcfea16-db09-47b4-8d6a-480a4b5ddf66}";
	const struct prl_desc_image **c;
	struct prl_desc *d;
	size_t n;

	(void)state;
	d = ok(PLOOP_TREE, 0);
	assert_int_equal(prl_desc_nr_children(d, root), 2);
	assert_int_equal(prl_desc_chain(d, GT, &c, &n, &err), 0);
	assert_int_equal(n, 2);
	assert_string_equal(c[1]->guid, root);
	free(c);
	assert_int_equal(prl_desc_chain(d, side, &c, &n, &err), 0);
	assert_int_equal(n, 2);
	assert_string_equal(c[0]->guid, side);
	assert_string_equal(c[1]->guid, root);
	free(c);
	prl_desc_free(d);
}

static void t_ploop_raw(void **state)
{
	struct prl_desc *d;

	(void)state;
	d = ok(PLOOP_RAW, 0);
	assert_int_equal(d->images[0].type, PRL_IMAGE_PLAIN);
	assert_string_equal(d->images[0].file, "root.hdd");
	prl_desc_free(d);
}

/* ploop rounds cylinders down: 2080*16*63 = 2096640 < 2097152. */
static void t_ploop_1g_geometry(void **state)
{
	struct prl_desc *d;

	(void)state;
	d = ok(PLOOP_1G, 0);
	assert_int_equal(d->disk_size, 2097152);
	assert_int_equal(d->cylinders, 2080);
	assert_int_equal(d->sectors, 63);
	prl_desc_free(d);
}

static void t_virtuozzo_root(void **state)
{
	struct prl_desc *d;

	(void)state;
	d = ok("<Virtuozzo_disk_image Version=\"1.0\">" P64 ONE_IMG ONE_SNAP
	       "</Virtuozzo_disk_image>", 0);
	assert_string_equal(d->root_name, "Virtuozzo_disk_image");
	prl_desc_free(d);
	refused("<Parallels_disk_imagex>" P64 ONE_IMG ONE_SNAP
		"</Parallels_disk_imagex>", 0,
		"root element <Parallels_disk_imagex> is neither");
}

static void t_version(void **state)
{
	(void)state;
	prl_desc_free(ok(ONE, 0));
	prl_desc_free(ok("<Parallels_disk_image Version=\"1.0\">" P64 ONE_IMG
			 ONE_SNAP "</Parallels_disk_image>", 0));
	refused("<Parallels_disk_image Version=\"2.0\">" P64 ONE_IMG ONE_SNAP
		"</Parallels_disk_image>", 0, "Version '2.0' is not supported");
}

static void t_top_predefined(void **state)
{
	struct prl_desc *d;

	(void)state;
	d = ok(TWO, 0);		/* no TopGUID */
	assert_string_equal(d->top, GT);
	assert_int_equal(prl_desc_nr_children(d, GA), 1);
	prl_desc_free(d);
}

/* With a TopGUID, the predefined GUID is just another image. */
static void t_top_guid(void **state)
{
	const struct prl_desc_image **c;
	struct prl_desc *d;
	size_t n;

	(void)state;
	d = ok(DOC(P64 S64(IMG(GA, "a") IMG(GT, "t") IMG(GB, "b"))
		   SNAPS(TOPG(GB) SHOT(GA, GN) SHOT(GT, GA) SHOT(GB, GT))), 0);
	assert_string_equal(d->top, GB);
	assert_int_equal(prl_desc_chain(d, d->top, &c, &n, &err), 0);
	assert_int_equal(n, 3);
	assert_string_equal(c[0]->guid, GB);
	assert_string_equal(c[1]->guid, GT);
	assert_string_equal(c[2]->guid, GA);
	free(c);
	prl_desc_free(d);
	/* BackupID may be an ordinary snapshot, never the top */
	prl_desc_free(ok(DOC(P64 S64(IMG(PRL_GUID_BACKUP, "b") IMG(GT, "t"))
			     SNAPS(SHOT(PRL_GUID_BACKUP, GN)
				   SHOT(GT, PRL_GUID_BACKUP))), 0));
	refused(DOC(P64 S64(IMG(PRL_GUID_BACKUP, "b") IMG(GT, "t"))
		    SNAPS(TOPG(PRL_GUID_BACKUP) SHOT(PRL_GUID_BACKUP, GN)
			  SHOT(GT, PRL_GUID_BACKUP))), 0,
		"the top image cannot be BackupID");
	refused(DOC(P64 S64(IMG(GA, "a")) SNAPS(TOPG(GB) SHOT(GA, GN))), 0,
		"TopGUID " GB " names no Shot");
	refused(DOC(P64 S64(IMG(GA, "a")) SNAPS(SHOT(GA, GN))), 0,
		"no TopGUID and no Shot with the predefined top GUID");
}

/* Upper case GUIDs, blanks around values, CDATA and comments in values. */
static void t_lenient_text(void **state)
{
	struct prl_desc *d;

	(void)state;
	d = ok(DOC(PARAMS(" 131072\n", "\t256 ", "16", "32", "0")
		   S64("<Image><GUID> {AAAAAAAA-0000-4000-8000-000000000001}\n"
		       "</GUID><Type>Compressed</Type><File><![CDATA[a&b.hds]]>"
		       "<!-- c --></File></Image>" IMG(GT, "t"))
		   SNAPS(SHOT("{AAAAAAAA-0000-4000-8000-000000000001}", GN)
			 SHOT(GT, " {aaaaaaaa-0000-4000-8000-000000000001} "))),
	       0);
	assert_int_equal(d->disk_size, 131072);
	assert_string_equal(d->images[0].guid, GA);
	assert_string_equal(d->images[0].file, "a&b.hds");
	assert_int_equal(d->shots[1].parent_idx, 0);
	prl_desc_free(d);
}

/* ---- the snapshot tree ----------------------------------------------- */

static void t_tree_errors(void **state)
{
	(void)state;
	refused(DOC(P64 S64(IMG(GA, "a") IMG(GB, "b") IMG(GC, "c") IMG(GT, "t"))
		    SNAPS(SHOT(GA, GN) SHOT(GB, GC) SHOT(GC, GB) SHOT(GT, GA))),
		0, "is in a cycle of ParentGUIDs");
	refused(DOC(P64 S64(IMG(GA, "a") IMG(GT, "t"))
		    SNAPS(SHOT(GA, GN) SHOT(GT, GT))), 0, "is its own parent");
	refused(DOC(P64 S64(IMG(GA, "a") IMG(GT, "t"))
		    SNAPS(SHOT(GA, GN) SHOT(GT, GN))), 0,
		"two root Shots, " GA " and " GT);
	refused(DOC(P64 S64(IMG(GA, "a") IMG(GT, "t"))
		    SNAPS(SHOT(GA, GT) SHOT(GT, GA))), 0, "no root Shot");
	refused(DOC(P64 S64(IMG(GA, "a") IMG(GT, "t"))
		    SNAPS(SHOT(GA, GN) SHOT(GT, GB))), 0,
		"Shot " GT ": ParentGUID " GB " names no Shot");
	refused(DOC(P64 S64(IMG(GT, "t")) SNAPS(SHOT(GA, GN) SHOT(GT, GA))), 0,
		"Shot " GA " has no Image");
	refused(DOC(P64 S64(IMG(GA, "a") IMG(GT, "t")) SNAPS(SHOT(GT, GN))), 0,
		"Image " GA " has no Shot");
	refused(DOC(P64 S64(IMG(GA, "a") IMG(GA, "b") IMG(GT, "t"))
		    SNAPS(SHOT(GA, GN) SHOT(GT, GA))), 0, "two Images have GUID " GA);
	refused(DOC(P64 S64(IMG(GA, "a") IMG(GT, "t"))
		    SNAPS(SHOT(GA, GN) SHOT(GT, GA) SHOT(GT, GA))), 0,
		"two Shots have GUID " GT);
	refused(DOC(P64 S64(IMG(GA, "a") RAW(GT, "t"))
		    SNAPS(SHOT(GA, GN) SHOT(GT, GA))), 0,
		"Image " GT " is Plain but not the root");
	refused(DOC(P64 S64(IMG(GN, "a") IMG(GT, "t"))
		    SNAPS(SHOT(GN, GN) SHOT(GT, GN))), 0, "is the null GUID");
}

/* ---- structure and values -------------------------------------------- */

static void t_split_storage(void **state)
{
	(void)state;
	refused(DOC(P64 "<StorageData><Storage><Start>0</Start><End>65536</End>"
		    "<Blocksize>2048</Blocksize>" IMG(GT, "a") "</Storage>"
		    "<Storage><Start>65536</Start><End>131072</End><Blocksize>"
		    "2048</Blocksize>" IMG(GA, "b") "</Storage></StorageData>"
		    SNAPS(SHOT(GT, GN))), 0,
		"2 <Storage> elements: split images are not supported");
	refused(DOC(P64 STOR("1", "131072", "2048", IMG(GT, "a")) ONE_SNAP), 0,
		"<Start> is 1, not 0: split images are not supported");
	refused(DOC(P64 STOR("0", "65536", "2048", IMG(GT, "a")) ONE_SNAP), 0,
		"<End> 65536 is not Disk_size 131072");
	refused(DOC(P64 STOR("0", "131072", "0", IMG(GT, "a")) ONE_SNAP), 0,
		"<Blocksize> is 0");
	refused(DOC(P64 "<StorageData></StorageData>" ONE_SNAP), 0,
		"<StorageData> has no <Storage>");
	refused(DOC(P64 S64("") ONE_SNAP), 0, "<Storage> has no <Image>");
}

static void t_numbers(void **state)
{
	(void)state;
	refused(DOC(PARAMS("99999999999999999999", "256", "16", "32", "0")
		    ONE_IMG ONE_SNAP), 0,
		"<Disk_size> 99999999999999999999: number too large");
	refused(DOC(PARAMS("131072", "256", "4294967296", "32", "0")
		    ONE_IMG ONE_SNAP), 0, "<Heads> 4294967296: number too large");
	refused(DOC(P64 STOR("0", "131072", "4294967296", IMG(GT, "a"))
		    ONE_SNAP), 0, "<Blocksize> 4294967296: number too large");
	refused(DOC(PARAMS("0x20000", "256", "16", "32", "0") ONE_IMG ONE_SNAP),
		0, "<Disk_size> '0x20000' is not a decimal number");
	refused(DOC(PARAMS("131072", "-256", "16", "32", "0") ONE_IMG ONE_SNAP),
		0, "<Cylinders> '-256' is not a decimal number");
	refused(DOC(PARAMS("131072", "+256", "16", "32", "0") ONE_IMG ONE_SNAP),
		0, "<Cylinders> '+256' is not a decimal number");
	refused(DOC(PARAMS("131072", "256", "16 1", "32", "0") ONE_IMG ONE_SNAP),
		0, "<Heads> '16 1' is not a decimal number");
	refused(DOC(PARAMS("131072", "256", "16", "32k", "0") ONE_IMG ONE_SNAP),
		0, "<Sectors> '32k' is not a decimal number");
	refused(DOC(PARAMS("131072", "256", "16", "", "0") ONE_IMG ONE_SNAP),
		0, "<Sectors> '' is not a decimal number");
	refused(DOC(PARAMS("0", "0", "16", "32", "0")
		    STOR("0", "0", "2048", IMG(GT, "a")) ONE_SNAP), 0,
		"<Disk_size> is 0");
}

static void t_geometry(void **state)
{
	(void)state;
	refused(DOC(PARAMS("131072", "255", "16", "32", "0") ONE_IMG ONE_SNAP),
		0, "Cylinders*Heads*Sectors = 255*16*32 does not match Disk_size "
		"131072");
	refused(DOC(PARAMS("131072", "257", "16", "32", "0") ONE_IMG ONE_SNAP),
		0, "does not match Disk_size");
	refused(DOC(PARAMS("131072", "256", "0", "32", "0") ONE_IMG ONE_SNAP),
		0, "does not match Disk_size");
	/* 2^96 does not wrap around to anything */
	refused(DOC(PARAMS("18446744073709551615", "4294967295", "4294967295",
			   "4294967295", "0")
		    STOR("0", "18446744073709551615", "2048", IMG(GT, "a"))
		    ONE_SNAP), 0, "does not match Disk_size");
	refused(DOC(PARAMS("131072", "256", "16", "32", "1") ONE_IMG ONE_SNAP),
		0, "<Padding> is 1: only 0 is supported");
}

static void t_elements(void **state)
{
	(void)state;
	refused(DOC(ONE_IMG ONE_SNAP), 0,
		"<Parallels_disk_image> has no <Disk_Parameters>");
	refused(DOC(P64 ONE_IMG), 0, "<Parallels_disk_image> has no <Snapshots>");
	refused(DOC(P64 P64 ONE_IMG ONE_SNAP), 0,
		"<Parallels_disk_image> has more than one <Disk_Parameters>");
	refused(DOC("<Disk_Parameters><Disk_size>131072</Disk_size><Disk_size>1"
		    "</Disk_size><Cylinders>256</Cylinders><Heads>16</Heads>"
		    "<Sectors>32</Sectors><Padding>0</Padding></Disk_Parameters>"
		    ONE_IMG ONE_SNAP), 0, "more than one <Disk_size>");
	refused(DOC("<Disk_Parameters><Disk_size>131072</Disk_size><Cylinders>"
		    "256</Cylinders><Heads>16</Heads><Sectors>32</Sectors>"
		    "</Disk_Parameters>" ONE_IMG ONE_SNAP), 0,
		"<Disk_Parameters> has no <Padding>");
	refused(DOC(P64 S64("<Image><GUID>" GT "</GUID><Type>Compressed</Type>"
			    "</Image>") ONE_SNAP), 0,
		"Image " GT ": <Image> has no <File>");
	refused(DOC(P64 S64("<Image><GUID>" GT "</GUID><Type>Expanded</Type>"
			    "<File>a</File></Image>") ONE_SNAP), 0,
		"<Type> 'Expanded' is neither Plain nor Compressed");
	refused(DOC(P64 S64("<Image><GUID>" GT "</GUID><Type>Compressed</Type>"
			    "<File>a<b/></File></Image>") ONE_SNAP), 0,
		"<File> holds <b>: it must hold text only");
	refused(DOC(P64 S64(IMG("{5fbaabe3-6958-40ff-92a7-860e329aab4}", "a"))
		    ONE_SNAP), 0,
		"<GUID> '{5fbaabe3-6958-40ff-92a7-860e329aab4}' is not a GUID");
	refused(DOC(P64 S64(IMG("5fbaabe3-6958-40ff-92a7-860e329aab41", "a"))
		    ONE_SNAP), 0, "is not a GUID");
	refused(DOC(P64 S64(IMG("{5fbaabe3-6958-40ff-92a7-860e329aab4g}", "a"))
		    ONE_SNAP), 0, "is not a GUID");
	refused(DOC(P64 ONE_IMG SNAPS(SHOT(GT, "none"))), 0,
		"<ParentGUID> 'none' is not a GUID");
	/* a control character from the file does not break the line */
	refused(DOC(P64 ONE_IMG SNAPS(SHOT(GT, "x\ny"))), 0, "'x\\x0ay'");
}

/* Parallels Desktop's sector sizes, optional, inside Disk_Parameters. */
#define PSS(logic, phys) "<Disk_Parameters><Disk_size>131072</Disk_size>"	\
	"<Cylinders>256</Cylinders><PhysicalSectorSize>" phys		\
	"</PhysicalSectorSize><LogicSectorSize>" logic "</LogicSectorSize>"	\
	"<Heads>16</Heads><Sectors>32</Sectors><Padding>0</Padding>"	\
	"</Disk_Parameters>"

static void t_sector_sizes(void **state)
{
	struct prl_desc *d;

	(void)state;
	put(at("root.hds"), "");
	d = ok(DOC(PSS("512", "4096") ONE_IMG ONE_SNAP), 0);
	assert_int_equal(d->logical_sector_size, 512);
	assert_int_equal(d->physical_sector_size, 4096);
	/* kept through an edit */
	assert_int_equal(prl_desc_set_size(d, 262144, &err), 0);
	assert_int_equal(d->logical_sector_size, 512);
	assert_int_equal(d->physical_sector_size, 4096);
	prl_desc_free(d);
	d = ok(DOC(PSS("4096", "4096") ONE_IMG ONE_SNAP), 0);
	assert_int_equal(d->logical_sector_size, 4096);
	/* a 4096-byte sector disk grows by whole sectors */
	assert_true(prl_desc_set_size(d, 262143, &err) < 0);
	check_msg("is not a whole number of its 4096-byte sectors");
	assert_int_equal(d->disk_size, 131072);
	prl_desc_free(d);
	d = ok(ONE, 0);
	assert_int_equal(d->logical_sector_size, 0);
	assert_int_equal(d->physical_sector_size, 0);
	prl_desc_free(d);
}

static void t_sector_sizes_refused(void **state)
{
	(void)state;
	refused(DOC(PSS("1000", "4096") ONE_IMG ONE_SNAP), 0,
		"line 3: <LogicSectorSize> is 1000: it must be 512, 1024, 2048 or 4096");
	refused(DOC(PSS("512", "8192") ONE_IMG ONE_SNAP), 0,
		"<PhysicalSectorSize> is 8192: it must be 512, 1024, 2048 or 4096");
	refused(DOC(PSS("256", "4096") ONE_IMG ONE_SNAP), 0,
		"<LogicSectorSize> is 256");
	refused(DOC(PSS("0", "4096") ONE_IMG ONE_SNAP), 0,
		"<LogicSectorSize> is 0");
	refused(DOC(PSS("512", "4k") ONE_IMG ONE_SNAP), 0,
		"<PhysicalSectorSize> '4k' is not a decimal number");
	refused(DOC(PSS("4096", "512") ONE_IMG ONE_SNAP), 0,
		"<PhysicalSectorSize> 512 is smaller than <LogicSectorSize> 4096");
	/* 4096-byte sectors: the disk is whole sectors */
	refused(DOC("<Disk_Parameters><Disk_size>131071</Disk_size>"
		    "<Cylinders>130</Cylinders><LogicSectorSize>4096"
		    "</LogicSectorSize><Heads>16</Heads><Sectors>63</Sectors>"
		    "<Padding>0</Padding></Disk_Parameters>"
		    STOR("0", "131071", "2048", IMG(GT, "root.hds")) ONE_SNAP), 0,
		"<Disk_size> 131071 is not a whole number of 4096-byte sectors (LogicSectorSize)");
}

/* ---- File paths ------------------------------------------------------ */

static char outside[PATH_MAX];

static void mk_outside(void)
{
	snprintf(outside, sizeof(outside), "%s/outside.hds", base);
	put(outside, "");
}

static void path_refused(const char *file, const char *what)
{
	char doc[4096];
	struct prl_desc *d;

	snprintf(doc, sizeof(doc), DOC(P64 S64(IMG(GT, "%s")) ONE_SNAP), file);
	refused(doc, 0, what);
	check_msg("--allow-external-paths");
	/* the flag lets it through, with the path as the kernel sees it */
	d = ok(doc, PRL_DESC_ALLOW_EXTERNAL);
	assert_string_equal(d->images[0].file, file);
	prl_desc_free(d);
}

/* A symlink beneath the folder: refused, --allow-external-paths or not. */
static void link_refused(const char *file)
{
	char doc[4096];

	snprintf(doc, sizeof(doc), DOC(P64 S64(IMG(GT, "%s")) ONE_SNAP), file);
	refused(doc, 0, "symbolic link");
	refused(doc, PRL_DESC_ALLOW_EXTERNAL, "symbolic link");
}

static void t_path_escape(void **state)
{
	char doc[4096];
	struct prl_desc *d;

	(void)state;
	mk_outside();
	path_refused("../outside.hds", "File '../outside.hds' leaves the folder");
	path_refused("a/../../outside.hds", "leaves the folder");
	path_refused("/etc/passwd", "File '/etc/passwd' is an absolute path");
	d = ok(DOC(P64 S64(IMG(GT, "/etc/passwd")) ONE_SNAP),
	       PRL_DESC_ALLOW_EXTERNAL);
	assert_string_equal(d->images[0].path, "/etc/passwd");
	prl_desc_free(d);
	d = ok(DOC(P64 S64(IMG(GT, "../outside.hds")) ONE_SNAP),
	       PRL_DESC_ALLOW_EXTERNAL);
	assert_string_equal(d->images[0].path, at("../outside.hds"));
	prl_desc_free(d);
	/* inside, lexically, are fine; "./" and "//" are tidied up */
	d = ok(DOC(P64 S64(IMG(GT, "./sub//x/../root.hds")) ONE_SNAP), 0);
	assert_string_equal(d->images[0].path, at("sub/x/../root.hds"));
	prl_desc_free(d);
	snprintf(doc, sizeof(doc), DOC(P64 S64(IMG(GT, "%s")) ONE_SNAP), ".");
	refused(doc, 0, "File '.' names the folder itself");
	refused(DOC(P64 S64(IMG(GT, "sub/..")) ONE_SNAP), 0,
		"names the folder itself");
	refused(DOC(P64 S64(IMG(GT, " ")) ONE_SNAP), 0, "<File> is empty");
}

static void t_path_symlink(void **state)
{
	struct prl_desc *d;
	char target[PATH_MAX];

	(void)state;
	mk_outside();
	/*
	 * No symlink at all beneath the folder: every later use resolves
	 * from the folder's handle without following one (folder.h).
	 */
	assert_int_equal(symlink(outside, at("root.hds")), 0);
	link_refused("root.hds");
	/* a chain of two */
	assert_int_equal(symlink("root.hds", at("link2.hds")), 0);
	link_refused("link2.hds");
	/* a folder on the way; the image does not exist yet */
	assert_int_equal(symlink(base, at("sub")), 0);
	link_refused("sub/new.hds");
	/* "sub/.." is base/.. for the kernel: refused, not taken lexically */
	link_refused("sub/../d/root.hds");
	/* dangling: creating the file would land anywhere */
	snprintf(target, sizeof(target), "%s/nowhere/x", base);
	assert_int_equal(symlink(target, at("dangling.hds")), 0);
	link_refused("dangling.hds");
	/* one that stays inside too: it could be swapped later */
	put(at("real.hds"), "");
	assert_int_equal(symlink("real.hds", at("in.hds")), 0);
	link_refused("in.hds");
	d = ok(DOC(P64 S64(IMG(GT, "real.hds")) ONE_SNAP), 0);
	assert_string_equal(d->images[0].path, at("real.hds"));
	prl_desc_free(d);
	/* missing images are fine too: they are not opened here */
	prl_desc_free(ok(DOC(P64 S64(IMG(GT, "later/x.hds")) ONE_SNAP), 0));
}

/* Two layers on one file, or a layer on one of the descriptor's files. */
#define SAME(fa, ft)	DOC(P64 S64(IMG(GA, fa) IMG(GT, ft))		\
			    SNAPS(SHOT(GA, GN) SHOT(GT, GA)))

static void t_path_same_file(void **state)
{
	struct prl_desc *d;

	(void)state;
	/* by name, whether the file exists or not */
	refused(SAME("a.hds", "a.hds"), 0, "name the same file");
	refused(SAME("a.hds", "./a.hds"), 0, "name the same file");
	refused(SAME("a.hds", "sub/../a.hds"), 0, "name the same file");
	put(at("a.hds"), "");
	refused(SAME("a.hds", ".//a.hds"), 0, "name the same file");
	/* another name for it: a symlink, a hard link */
	assert_int_equal(symlink("a.hds", at("s.hds")), 0);
	refused(SAME("a.hds", "s.hds"), 0, "symbolic link");
	assert_int_equal(link(at("a.hds"), at("h.hds")), 0);
	refused(SAME("h.hds", "a.hds"), 0, "are the same file");
	/* the descriptor's own files */
	refused(SAME("a.hds", PRL_DESC_NAME), 0, "the descriptor itself");
	refused(SAME("x/../" PRL_DESC_NAME, "a.hds"), 0, "reserved");
	refused(SAME("a.hds", PRL_DESC_NAME ".lck"), 0, "lock file");
	refused(SAME("a.hds", PRL_DESC_NAME ".tmp"), 0, "reserved");
	refused(SAME("a.hds", PRL_DESC_NAME ".tmp.AbC123"), 0, "reserved");
	refused(SAME("a.hds", PRL_DESC_NAME ".bak"), 0, "reserved");
	/* ... also under another name, and with --allow-external-paths */
	put(xml, SAME("a.hds", "b.hds"));
	assert_int_equal(link(xml, at("desc.hds")), 0);
	refused(SAME("a.hds", "desc.hds"), 0, "the descriptor itself");
	refused(SAME("a.hds", "desc.hds"), PRL_DESC_ALLOW_EXTERNAL, "reserved");
	refused(SAME("a.hds", "../d/a.hds"), PRL_DESC_ALLOW_EXTERNAL,
		"name the same file");
	/* names that merely start alike are fine */
	d = ok(SAME("a.hds", PRL_DESC_NAME ".hds"), 0);
	prl_desc_free(d);
	d = ok(SAME("a.hds", "a.hds.{5fbaabe3-6958-40ff-92a7-860e329aab41}"), 0);
	prl_desc_free(d);
}

/* ---- limits ----------------------------------------------------------- */

/* A growing document, in a malloc'ed buffer. */
struct sb {
	char *s;
	size_t len;
};

static void sbf(struct sb *b, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

static void sbf(struct sb *b, const char *fmt, ...)
{
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(NULL, 0, fmt, ap);
	va_end(ap);
	b->s = realloc(b->s, b->len + (size_t)n + 1);
	assert_non_null(b->s);
	va_start(ap, fmt);
	vsnprintf(b->s + b->len, (size_t)n + 1, fmt, ap);
	va_end(ap);
	b->len += (size_t)n;
}

#define CG	"{%08zx-0000-4000-8000-000000000000}"

/* A chain of @n images, the top (GT) last; @root_attrs on the root element. */
static char *chain_doc(size_t n, const char *root_attrs, const char *extra)
{
	struct sb b = { 0 };
	size_t i;

	sbf(&b, "<?xml version=\"1.0\"?>\n<Parallels_disk_image%s>" P64
	    "<StorageData><Storage><Start>0</Start><End>131072</End>"
	    "<Blocksize>2048</Blocksize>", root_attrs);
	for (i = 1; i < n; i++)
		sbf(&b, IMG(CG, "f%zu"), i, i);
	sbf(&b, IMG(GT, "top") "</Storage></StorageData><Snapshots>");
	for (i = 1; i < n; i++) {
		if (i == 1)
			sbf(&b, SHOT(CG, GN), i);
		else
			sbf(&b, SHOT(CG, CG), i, i - 1);
	}
	if (n == 1)
		sbf(&b, SHOT(GT, GN));
	else
		sbf(&b, SHOT(GT, CG), n - 1);
	sbf(&b, "</Snapshots>%s</Parallels_disk_image>\n", extra);
	return b.s;
}

static void t_limits(void **state)
{
	struct sb attrs = { 0 }, elems = { 0 }, path = { 0 };
	char *doc, d2[8192];
	size_t i;

	(void)state;
	/* the chain limit: PRL_MAX_CHAIN images load, one more does not */
	doc = chain_doc(PRL_MAX_CHAIN, "", "");
	prl_desc_free(ok(doc, 0));
	free(doc);
	doc = chain_doc(PRL_MAX_CHAIN + 1, "", "");
	refused(doc, 0, "images deep: at most 1024 are supported");
	free(doc);
	/*
	 * attributes and elements, bounded before libxml2 parses by counting
	 * '=' and '<': a hundred attributes load, more than the limit do not
	 */
	for (i = 0; i < 100; i++)
		sbf(&attrs, " a%zu=\"\"", i);
	doc = chain_doc(2, attrs.s, "");
	prl_desc_free(ok(doc, 0));
	free(doc);
	for (; i <= PRL_DESC_MAX_ATTRS; i++)
		sbf(&attrs, " a%zu=\"\"", i);
	doc = chain_doc(2, attrs.s, "");
	refused(doc, 0, "more than 1024 attributes");
	free(doc);
	for (i = 0; i <= PRL_DESC_MAX_ELEMENTS; i++)
		sbf(&elems, "<x></x>");
	doc = chain_doc(1, "", elems.s);
	refused(doc, 0, "more than 65536 elements");
	free(doc);
	/* File: PATH_MAX, NAME_MAX, components */
	for (i = 0; i < PRL_DESC_MAX_FILE_DEPTH - 1; i++)
		sbf(&path, "d/");
	sbf(&path, "x");
	snprintf(d2, sizeof(d2), DOC(P64 S64(IMG(GT, "%s")) ONE_SNAP), path.s);
	prl_desc_free(ok(d2, 0));
	snprintf(d2, sizeof(d2), DOC(P64 S64(IMG(GT, "d/%s")) ONE_SNAP), path.s);
	refused(d2, 0, "has 65 path components: at most 64");
	snprintf(d2, sizeof(d2), DOC(P64 S64(IMG(GT, "%0256d")) ONE_SNAP), 0);
	refused(d2, 0, "a component of 256 bytes: at most 255 (NAME_MAX)");
	snprintf(d2, sizeof(d2), DOC(P64 S64(IMG(GT, "%04096d")) ONE_SNAP), 0);
	refused(d2, 0, "is 4096 bytes long: at most 4095 (PATH_MAX - 1)");
	/* a newline would split every message naming the file (fuzz_folder) */
	refused(DOC(P64 S64(IMG(GT, "root.hds.{4&#10;6}")) ONE_SNAP), 0,
		"File 'root.hds.{4\\x0a6}' has a control character");
	refused(DOC(P64 S64(IMG(GT, "a\tb")) ONE_SNAP), 0, "has a control character");
	free(attrs.s);
	free(elems.s);
	free(path.s);
}

/* ---- not XML, or XML with tricks ------------------------------------- */

/* Run @doc through the loader with stderr caught: libxml2 must be quiet. */
static void quiet_refused(const char *doc, const char *what)
{
	char tmp[PATH_MAX];
	struct stat st;
	int fd, saved;

	snprintf(tmp, sizeof(tmp), "%s/stderr", base);
	fd = open(tmp, O_RDWR | O_CREAT | O_TRUNC, 0600);
	assert_true(fd >= 0);
	fflush(stderr);
	saved = dup(2);
	dup2(fd, 2);
	refused(doc, 0, what);
	fflush(stderr);
	dup2(saved, 2);
	close(saved);
	assert_int_equal(fstat(fd, &st), 0);
	close(fd);
	if (st.st_size)
		fail_msg("%lld bytes on stderr", (long long)st.st_size);
}

static void t_doctype(void **state)
{
	(void)state;
	quiet_refused("<?xml version=\"1.0\"?>\n<!DOCTYPE Parallels_disk_image>\n"
		      "<Parallels_disk_image/>\n", "line 2: <!DOCTYPE> refused");
	quiet_refused("<?xml version=\"1.0\"?>\n<!DOCTYPE lolz [\n"
		      " <!ENTITY lol \"lol\">\n"
		      " <!ENTITY lol1 \"&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;\">\n"
		      " <!ENTITY lol2 \"&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;\">\n"
		      " <!ENTITY lol3 \"&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;\">\n"
		      " <!ENTITY lol4 \"&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;\">\n"
		      "]>\n<Parallels_disk_image>&lol4;</Parallels_disk_image>\n",
		      "<!DOCTYPE> refused");
	quiet_refused("<?xml version=\"1.0\"?>\n<!DOCTYPE x [\n"
		      " <!ENTITY e SYSTEM \"file:///etc/passwd\">]>\n"
		      DOC(P64 S64(IMG(GT, "&e;")) ONE_SNAP), "<!DOCTYPE> refused");
	assert_null(strstr(err.msg, "root:"));
	quiet_refused("<!DOCTYPE x [<!ENTITY % p SYSTEM \"http://127.0.0.1:1/x\">"
		      " %p;]><Parallels_disk_image/>", "<!DOCTYPE> refused");
	quiet_refused("<!DOCTYPE x SYSTEM \"/etc/passwd\"><Parallels_disk_image/>",
		      "<!DOCTYPE> refused");
	/* without a DTD an entity is undefined: an XML error, not expanded */
	quiet_refused(DOC(P64 S64(IMG(GT, "&e;")) ONE_SNAP),
		      "not well-formed XML: Entity 'e' not defined");
}

static void t_not_xml(void **state)
{
	char *big;
	size_t n = PRL_DESC_MAX_BYTES + 1;

	(void)state;
	quiet_refused("this is not XML\n", "line 1: not well-formed XML");
	quiet_refused("<?xml version=\"1.0\"?>\n<Parallels_disk_image>\n"
		      "<Disk_Parameters>\n</Parallels_disk_image>\n",
		      "line 4: not well-formed XML: Opening and ending tag mismatch");
	quiet_refused(ONE "<trailing/>", "not well-formed XML");
	refused("", 0, PRL_DESC_NAME " is empty");
	/* just too big: a valid document padded with a comment */
	big = malloc(n + 1);
	memset(big, ' ', n);
	memcpy(big, ONE, strlen(ONE));
	memcpy(big + strlen(ONE), "<!--", 4);
	memcpy(big + n - 3, "-->", 3);
	big[n] = '\0';
	refused(big, 0, "is larger than 1 MiB");
	/* just small enough is fine */
	memcpy(big + n - 4, "--> ", 4);
	big[n - 1] = '\0';
	prl_desc_free(ok(big, 0));
	free(big);
}

static void t_files(void **state)
{
	struct prl_desc *d = NULL;

	(void)state;
	assert_int_equal(prl_desc_load(dir, 0, &d, &err), -EINVAL);
	check_msg("is not a regular file");
	assert_int_equal(prl_desc_load(at("missing.xml"), 0, &d, &err), -ENOENT);
	check_msg("cannot open");
	assert_int_equal(mkfifo(at("fifo.xml"), 0600), 0);
	assert_int_equal(prl_desc_load(at("fifo.xml"), 0, &d, &err), -EINVAL);
	check_msg("is not a regular file");
	/* a symlinked descriptor: its images are next to the real file */
	put(xml, ONE);
	assert_int_equal(symlink(xml, at("../link.xml")), 0);
	assert_int_equal(prl_desc_load(at("../link.xml"), 0, &d, &err), 0);
	assert_string_equal(d->path, xml);
	assert_string_equal(d->images[0].path, at("root.hds"));
	prl_desc_free(d);
	/* from memory, for a folder that does not exist */
	assert_int_equal(prl_desc_parse_memory(ONE, strlen(ONE),
					       "/nonexistent/x/DiskDescriptor.xml",
					       0, &d, &err), 0);
	assert_string_equal(d->images[0].path, "/nonexistent/x/root.hds");
	prl_desc_free(d);
}

/* ---- edits ----------------------------------------------------------- */

/* ploop's chain with things of its own that we must keep. */
#define UNKNOWN_DOC							\
	"<?xml version=\"1.0\"?>\n"					\
	"<!-- keep me -->\n"						\
	"<Parallels_disk_image foo=\"bar\">\n"				\
	"  <Disk_Parameters>\n"						\
	"    <Disk_size>131072</Disk_size>\n"				\
	"    <Cylinders>256</Cylinders>\n"				\
	"    <Heads>16</Heads>\n"					\
	"    <Sectors>32</Sectors>\n"					\
	"    <Padding>0</Padding>\n"					\
	"    <Encryption><KeyId>k&amp;1</KeyId></Encryption>\n"		\
	"  </Disk_Parameters>\n"					\
	"  <StorageData>\n"						\
	"    <Storage>\n"						\
	"      <Start>0</Start>\n"					\
	"      <End>131072</End>\n"					\
	"      <Blocksize>2048</Blocksize>\n"				\
	"      <Preallocated>0</Preallocated>\n"			\
	"      <Image>\n"						\
	"        <GUID>" GA "</GUID>\n"					\
	"        <Type>Compressed</Type>\n"				\
	"        <File>root.hds</File>\n"				\
	"        <Note lang=\"en\">x &lt; y</Note>\n"			\
	"      </Image>\n"						\
	"      <Image>\n"						\
	"        <GUID>" GT "</GUID>\n"					\
	"        <Type>Compressed</Type>\n"				\
	"        <File>root.hds.1</File>\n"				\
	"      </Image>\n"						\
	"    </Storage>\n"						\
	"  </StorageData>\n"						\
	"  <Snapshots>\n"						\
	"    <Shot>\n"							\
	"      <GUID>" GA "</GUID>\n"					\
	"      <ParentGUID>" GN "</ParentGUID>\n"			\
	"      <Info><![CDATA[<raw>]]></Info>\n"			\
	"    </Shot>\n"							\
	"    <Shot>\n"							\
	"      <GUID>" GT "</GUID>\n"					\
	"      <ParentGUID>" GA "</ParentGUID>\n"			\
	"    </Shot>\n"							\
	"  </Snapshots>\n"						\
	"  <Miscellaneous><Foo a=\"1\">x &amp; y</Foo></Miscellaneous>\n" \
	"</Parallels_disk_image>\n"

static const char *const kept[] = {
	"<!-- keep me -->",
	"<Parallels_disk_image foo=\"bar\">",
	"<Encryption>\n      <KeyId>k&amp;1</KeyId>\n    </Encryption>",
	"<Preallocated>0</Preallocated>",
	"<Note lang=\"en\">x &lt; y</Note>",
	"<Info><![CDATA[<raw>]]></Info>",
	"<Miscellaneous>\n    <Foo a=\"1\">x &amp; y</Foo>\n  </Miscellaneous>",
};

static void assert_only_files(const char *const *names, size_t n)
{
	struct dirent *e;
	size_t seen = 0, i;
	DIR *dp = opendir(dir);

	assert_non_null(dp);
	while ((e = readdir(dp))) {
		if (e->d_name[0] == '.')
			continue;
		for (i = 0; i < n && strcmp(names[i], e->d_name); i++)
			;
		if (i == n)
			fail_msg("unexpected file %s", e->d_name);
		seen++;
	}
	closedir(dp);
	assert_int_equal(seen, n);
}

static void t_roundtrip(void **state)
{
	static const char *const files[] = { PRL_DESC_NAME };
	const struct prl_desc_image **c;
	struct prl_desc *d;
	struct stat st1, st2;
	char *s;
	size_t i, n;

	(void)state;
	d = ok(UNKNOWN_DOC, 0);
	assert_int_equal(stat(xml, &st1), 0);
	assert_int_equal(prl_desc_add(d, GB, PRL_IMAGE_COMPRESSED, "root.hds." GB,
				      GT, &err), 0);
	assert_int_equal(prl_desc_set_top(d, GB, &err), 0);
	assert_int_equal(prl_desc_set_size(d, 262144, &err), 0);
	assert_int_equal(prl_desc_add(d, GC, PRL_IMAGE_COMPRESSED, "c&<.hds", GA,
				      &err), 0);
	assert_int_equal(prl_desc_set_parent(d, GC, GT, &err), 0);
	assert_int_equal(prl_desc_nr_children(d, GT), 2);
	assert_int_equal(prl_desc_remove(d, GC, &err), 0);
	assert_null(prl_desc_image(d, GC));
	assert_int_equal(prl_desc_save(d, &err), 0);
	prl_desc_free(d);

	/* replaced, not rewritten in place, and no temporary file is left */
	assert_int_equal(stat(xml, &st2), 0);
	assert_true(st1.st_ino != st2.st_ino);
	assert_only_files(files, 1);

	s = slurp(xml);
	for (i = 0; i < sizeof(kept) / sizeof(kept[0]); i++)
		if (!strstr(s, kept[i]))
			fail_msg("lost \"%s\" in:\n%s", kept[i], s);
	/* TopGUID first in Snapshots, as ploop reads it */
	assert_non_null(strstr(s, "<Snapshots>\n    <TopGUID>" GB "</TopGUID>\n"
			       "    <Shot>"));
	assert_non_null(strstr(s, "<Cylinders>512</Cylinders>"));
	assert_non_null(strstr(s, "<End>262144</End>"));
	assert_null(strstr(s, "c&amp;"));
	free(s);

	assert_int_equal(prl_desc_load(xml, 0, &d, &err), 0);
	assert_string_equal(d->top, GB);
	assert_int_equal(d->disk_size, 262144);
	assert_int_equal((uint64_t)d->cylinders * d->heads * d->sectors, 262144);
	assert_int_equal(prl_desc_chain(d, d->top, &c, &n, &err), 0);
	assert_int_equal(n, 3);
	assert_string_equal(c[0]->file, "root.hds." GB);
	assert_string_equal(c[1]->guid, GT);
	assert_string_equal(c[2]->guid, GA);
	free(c);
	prl_desc_free(d);
}

/* Each refused edit names the reason and leaves the descriptor as it was. */
static void t_edit_errors(void **state)
{
	struct prl_desc *d;
	char *before, *after;
	size_t n1, n2;

	(void)state;
	d = ok(TWO, 0);
	assert_int_equal(prl_desc_format(d, &before, &n1, &err), 0);

#define EDIT_FAILS(call, what) do {					\
		assert_true((call) < 0);				\
		check_msg(what);					\
	} while (0)
	EDIT_FAILS(prl_desc_add(d, "nope", PRL_IMAGE_COMPRESSED, "x", GT, &err),
		   "new image 'nope' is not a GUID");
	EDIT_FAILS(prl_desc_add(d, GA, PRL_IMAGE_COMPRESSED, "x", GT, &err),
		   "GUID " GA " is already in use");
	EDIT_FAILS(prl_desc_add(d, GB, PRL_IMAGE_COMPRESSED, "x", GC, &err),
		   "parent " GC " names no Shot");
	EDIT_FAILS(prl_desc_add(d, GB, PRL_IMAGE_COMPRESSED, "x", GN, &err),
		   "cannot be a second root");
	EDIT_FAILS(prl_desc_add(d, GB, PRL_IMAGE_PLAIN, "x", GT, &err),
		   "only the root may be a raw image");
	EDIT_FAILS(prl_desc_add(d, GB, PRL_IMAGE_COMPRESSED, "../x", GT, &err),
		   "must name a file inside the folder");
	EDIT_FAILS(prl_desc_add(d, GB, PRL_IMAGE_COMPRESSED, "/x", GT, &err),
		   "must name a file inside the folder");
	EDIT_FAILS(prl_desc_add(d, GN, PRL_IMAGE_COMPRESSED, "x", GT, &err),
		   "null GUID");
	EDIT_FAILS(prl_desc_remove(d, GA, &err), "is the parent of 1 snapshot");
	EDIT_FAILS(prl_desc_remove(d, GT, &err), "is the top image");
	EDIT_FAILS(prl_desc_remove(d, GC, &err), "no image " GC);
	EDIT_FAILS(prl_desc_set_parent(d, GA, GT, &err), "would be a cycle");
	EDIT_FAILS(prl_desc_set_parent(d, GT, GT, &err), "its own parent");
	EDIT_FAILS(prl_desc_set_parent(d, GT, GN, &err), "second root");
	EDIT_FAILS(prl_desc_set_parent(d, GT, GC, &err), "names no Shot");
	EDIT_FAILS(prl_desc_set_top(d, GC, &err), "no image " GC);
	EDIT_FAILS(prl_desc_set_top(d, PRL_GUID_BACKUP, &err), "BackupID");
	EDIT_FAILS(prl_desc_set_size(d, 0, &err), "not possible");
#undef EDIT_FAILS

	assert_int_equal(prl_desc_format(d, &after, &n2, &err), 0);
	assert_int_equal(n1, n2);
	assert_memory_equal(before, after, n1);
	assert_int_equal(d->nr_images, 2);
	free(before);
	free(after);
	prl_desc_free(d);
}

/* Re-hang a branch of a tree and check the chains. */
static void t_set_parent_tree(void **state)
{
	const struct prl_desc_image **c;
	struct prl_desc *d;
	size_t n;

	(void)state;
	d = ok(DOC(P64 S64(IMG(GA, "a") IMG(GB, "b") IMG(GC, "c") IMG(GT, "t"))
		   SNAPS(SHOT(GA, GN) SHOT(GB, GA) SHOT(GC, GB) SHOT(GT, GA))), 0);
	assert_int_equal(prl_desc_set_parent(d, GT, GC, &err), 0);
	assert_int_equal(prl_desc_chain(d, GT, &c, &n, &err), 0);
	assert_int_equal(n, 4);
	assert_string_equal(c[1]->guid, GC);
	assert_string_equal(c[2]->guid, GB);
	free(c);
	assert_int_equal(prl_desc_set_parent(d, GC, GA, &err), 0);
	assert_int_equal(prl_desc_nr_children(d, GA), 2);
	assert_int_equal(prl_desc_chain(d, GT, &c, &n, &err), 0);
	assert_int_equal(n, 3);
	free(c);
	/* the old parent GB is a leaf now and may go */
	assert_int_equal(prl_desc_remove(d, GB, &err), 0);
	assert_int_equal(d->nr_images, 3);
	assert_int_equal(d->nr_shots, 3);
	prl_desc_free(d);
}

/* prl_desc_new() + the root image is what "ploop init" writes, byte for byte. */
static void t_new_like_ploop(void **state)
{
	struct prl_desc *d;
	char *s;
	size_t n;

	(void)state;
	d = prl_desc_new(xml, 131072, 2048);
	assert_non_null(d);
	assert_string_equal(d->path, xml);
	assert_int_equal(d->nr_images, 0);
	assert_string_equal(d->top, GT);
	assert_int_equal(prl_desc_save(d, &err), -EINVAL);
	check_msg("no images");
	assert_int_equal(prl_desc_add(d, GT, PRL_IMAGE_COMPRESSED, "root.hds", GN,
				      &err), 0);
	assert_int_equal(prl_desc_format(d, &s, &n, &err), 0);
	assert_int_equal(n, strlen(PLOOP_INIT));
	assert_memory_equal(s, PLOOP_INIT, n);
	free(s);
	assert_int_equal(prl_desc_save(d, &err), 0);
	prl_desc_free(d);
	s = slurp(xml);
	assert_string_equal(s, PLOOP_INIT);
	free(s);
	assert_null(prl_desc_new(xml, 0, 2048));
	assert_null(prl_desc_new(xml, 2048, 0));
}

/* The geometry of new sizes is exact where possible, and always loads. */
static void t_new_geometry(void **state)
{
	static const uint64_t sizes[] = {
		1, 2048, 131071, 2097152, 1000000007, (1ULL << 33) + 1,
		(1ULL << 40) + 7, 4194304000ULL,
	};
	struct prl_desc *d, *d2;
	uint64_t chs;
	char *s;
	size_t i, n;

	(void)state;
	for (i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
		d = prl_desc_new(xml, sizes[i], 2048);
		assert_non_null(d);
		assert_int_equal(prl_desc_add(d, GT, PRL_IMAGE_COMPRESSED, "r",
					      GN, &err), 0);
		chs = (uint64_t)d->cylinders * d->heads * d->sectors;
		if (sizes[i] <= UINT32_MAX || sizes[i] % 2 == 0)
			assert_int_equal(chs, sizes[i]);
		assert_true(chs <= sizes[i]);
		assert_int_equal(prl_desc_format(d, &s, &n, &err), 0);
		assert_int_equal(prl_desc_parse_memory(s, n, xml, 0, &d2, &err), 0);
		assert_int_equal(d2->disk_size, sizes[i]);
		free(s);
		prl_desc_free(d2);
		prl_desc_free(d);
	}
}

static void t_guid(void **state)
{
	char g[PRL_GUID_LEN + 1], h[PRL_GUID_LEN + 1];

	(void)state;
	assert_int_equal(prl_guid_parse("{5FBAABE3-6958-40ff-92A7-860E329AAB41}", g), 0);
	assert_string_equal(g, GT);
	assert_int_equal(prl_guid_parse("5fbaabe3-6958-40ff-92a7-860e329aab41", g), 0);
	assert_string_equal(g, GT);
	assert_true(prl_guid_parse("{5fbaabe3-6958-40ff-92a7-860e329aab41", g) < 0);
	assert_true(prl_guid_parse("{5fbaabe3-6958-40ff-92a7-860e329aab41}}", g) < 0);
	assert_true(prl_guid_parse("{5fbaabe3+6958-40ff-92a7-860e329aab41}", g) < 0);
	assert_true(prl_guid_parse("", g) < 0);
	prl_guid_new(g);
	prl_guid_new(h);
	assert_int_equal(strlen(g), PRL_GUID_LEN);
	assert_string_not_equal(g, h);
	assert_int_equal(prl_guid_parse(g, h), 0);
	assert_string_equal(g, h);
}

/* A snapshot the way ploop makes one: the top keeps the predefined GUID. */
static void t_rename_ploop_snapshot(void **state)
{
	const struct prl_desc_image **c;
	struct prl_desc *d;
	char g[PRL_GUID_LEN + 1], *s;
	size_t n;

	(void)state;
	d = ok(PLOOP_INIT, 0);
	prl_guid_new(g);
	assert_int_equal(prl_desc_rename(d, GT, g, &err), 0);
	assert_string_equal(d->top, g);		/* TopGUID followed it */
	assert_int_equal(prl_desc_add(d, GT, PRL_IMAGE_COMPRESSED,
				      "root.hds.{ac8f3f64-9798-4cbe-aec3-744ef7153d67}",
				      g, &err), 0);
	assert_int_equal(prl_desc_set_top(d, GT, &err), 0);
	assert_int_equal(prl_desc_chain(d, d->top, &c, &n, &err), 0);
	assert_int_equal(n, 2);
	assert_string_equal(c[1]->guid, g);
	assert_string_equal(c[1]->file, "root.hds");
	free(c);
	assert_int_equal(prl_desc_format(d, &s, &n, &err), 0);
	assert_non_null(memmem(s, n, "<TopGUID>" GT "</TopGUID>", 48));
	free(s);
	prl_desc_free(d);

	/* without a TopGUID, renaming the implied top writes one */
	d = ok(TWO, 0);
	assert_int_equal(prl_desc_rename(d, GT, GB, &err), 0);
	assert_string_equal(d->top, GB);
	assert_int_equal(prl_desc_rename(d, GA, GC, &err), 0);
	assert_string_equal(d->shots[1].parent, GC);
	assert_true(prl_desc_rename(d, GC, GB, &err) < 0);
	check_msg("GUID " GB " is already in use");
	assert_true(prl_desc_rename(d, GB, PRL_GUID_BACKUP, &err) < 0);
	check_msg("BackupID");
	assert_true(prl_desc_rename(d, GA, GT, &err) < 0);
	check_msg("no image " GA);
	prl_desc_free(d);
}

/* ploop's snapshot-switch: the top gets a new parent and a fresh file. */
static void t_switch(void **state)
{
	const char *root = "{f9f878c0-e78a-46b9-8d72-ee9a3bed0e5e}";
	const struct prl_desc_image **c;
	struct prl_desc *d;
	size_t n;

	(void)state;
	d = ok(PLOOP_CHAIN, 0);
	assert_int_equal(prl_desc_set_parent(d, d->top, root, &err), 0);
	assert_int_equal(prl_desc_set_file(d, d->top, "root.hds.{new}", &err), 0);
	assert_int_equal(prl_desc_chain(d, d->top, &c, &n, &err), 0);
	assert_int_equal(n, 2);
	assert_string_equal(c[0]->file, "root.hds.{new}");
	assert_string_equal(c[0]->path, at("root.hds.{new}"));
	assert_string_equal(c[1]->guid, root);
	free(c);
	assert_int_equal(prl_desc_nr_children(d, root), 2);
	assert_true(prl_desc_set_file(d, d->top, "../x", &err) < 0);
	check_msg("must name a file inside the folder");
	assert_true(prl_desc_set_file(d, GA, "x", &err) < 0);
	check_msg("no image " GA);
	prl_desc_free(d);
}

#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)

int main(void)
{
	const struct CMUnitTest tests[] = {
		T(t_ploop_init),
		T(t_ploop_chain),
		T(t_ploop_tree),
		T(t_ploop_raw),
		T(t_ploop_1g_geometry),
		T(t_virtuozzo_root),
		T(t_version),
		T(t_top_predefined),
		T(t_top_guid),
		T(t_lenient_text),
		T(t_tree_errors),
		T(t_split_storage),
		T(t_numbers),
		T(t_geometry),
		T(t_sector_sizes),
		T(t_sector_sizes_refused),
		T(t_elements),
		T(t_path_escape),
		T(t_path_symlink),
		T(t_path_same_file),
		T(t_limits),
		T(t_doctype),
		T(t_not_xml),
		T(t_files),
		T(t_roundtrip),
		T(t_edit_errors),
		T(t_set_parent_tree),
		T(t_rename_ploop_snapshot),
		T(t_switch),
		T(t_new_like_ploop),
		T(t_new_geometry),
		T(t_guid),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
