// SPDX-License-Identifier: GPL-2.0
/*
 * prldisk activate, deactivate, list and status: a disk's snapshot chain
 * served as chained "parallels" device-mapper tables (DESIGN "Snapshot
 * stacks as chained dm tables", Documentation/prldisk.rst).
 *
 * Every file image goes through a loop device with direct I/O, configured
 * with LO_FLAGS_AUTOCLEAR: a loop device lives only as long as someone holds
 * it open, first this process, then the table over it.  So whatever step a
 * crash interrupts, no loop device is left that is not under a table, and
 * the tables carry the disk's name (<name> for the top, <name>-<guid> for
 * the layers below), which is how deactivate finds what an interrupted
 * activation left behind.  Nothing is written to an image before its
 * writable table exists, except the sparse pre-extension of the top file,
 * which deactivation cuts back.
 *
 * activate, in this order (under the disk's lock):
 *   1. refuse if an image of the chain is attached where it would be
 *      written twice, or if a device of that name (or a leftover layer)
 *      exists;
 *   2. read each header (read-only); an in-use top is refused, or repaired
 *      first with --repair;
 *   3. pre-extend the top file (sparse, never shrinking);
 *   4. attach the loop devices, bottom up (read-only below the top);
 *   5. create the tables, bottom up, the top last;
 *   6. let go of the loop devices (the tables hold them) and print the path.
 * A failure at 3-5 undoes this run's steps.  deactivate:
 *   1. walk the top's table down its lower devices;
 *   2. suspend the top (the target commits and closes in_use), read
 *      image_end_sector, remove the top, truncate the top file to it;
 *   3. remove the layers below, top-down; check the loop devices went;
 *   4. remove leftover <name>-<guid> layers without a top.
 */
#define _GNU_SOURCE
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <json.h>
#include <libdevmapper.h>
#include <libgen.h>
#include <limits.h>
#include <signal.h>
#include <linux/dm-ioctl.h>
#include <linux/loop.h>
#include <openssl/evp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <time.h>
#include <unistd.h>

#include "activate.h"
#include "check.h"
#include "cli.h"
#include "folder.h"

/* Room for "-<guid>" and the UUID prefix inside dm's 128-byte limits. */
#define NAME_MAX_LEN	64

/* ---- libdevmapper plumbing ---------------------------------------------- */

/* libdevmapper's last error line, instead of letting it print its own. */
static char dm_last[512];

static void __attribute__((format(printf, 5, 6)))
dm_log(int level, const char *file, int line, int dm_errno, const char *f, ...)
{
	va_list ap;

	(void)file;
	(void)line;
	(void)dm_errno;
	if ((level & 7) > 3)	/* keep _LOG_FATAL and _LOG_ERR only */
		return;
	va_start(ap, f);
	vsnprintf(dm_last, sizeof(dm_last), f, ap);
	va_end(ap);
}

void dm_setup(void)
{
	dm_log_with_errno_init(dm_log);
}

void fault_point(const char *point)
{
	const char *f = getenv("PRLDISK_FAULT");

	if (!f || strcmp(f, point))
		return;
	fprintf(stderr, "%s: PRLDISK_FAULT: killed after %s\n", prog, point);
	kill(getpid(), SIGKILL);
}

/*
 * The kernel explains a refused table only in its log: read the
 * "device-mapper: table: 253:0: parallels: <why>" line it printed.
 */
int kmsg_open(void)
{
	int fd = open("/dev/kmsg", O_RDONLY | O_NONBLOCK | O_CLOEXEC);

	if (fd >= 0)
		lseek(fd, 0, SEEK_END);
	return fd;
}

void kmsg_reason(int fd, char *out, size_t len)
{
	static const char tag[] = "device-mapper: table: ";
	char rec[2048];
	ssize_t n;

	out[0] = 0;
	if (fd < 0)
		return;
	for (;;) {
		char *msg, *p, *q;

		n = read(fd, rec, sizeof(rec) - 1);
		if (n < 0 && errno == EPIPE)	/* records overwritten */
			continue;
		if (n <= 0)
			break;
		rec[n] = 0;
		msg = strchr(rec, ';');
		if (!msg)
			continue;
		msg++;
		msg[strcspn(msg, "\n")] = 0;
		p = strstr(msg, tag);
		if (!p)
			continue;
		p += sizeof(tag) - 1;
		q = strchr(p, ' ');	/* drop the "253:0: " */
		if (q && isdigit((unsigned char)*p) && q[-1] == ':')
			p = q + 1;
		snprintf(out, len, "%s", p);
	}
	close(fd);
}

int dm_err(struct prl_err *err, struct dm_task *dmt, const char *what,
		  const char *name)
{
	int e = dmt ? dm_task_get_errno(dmt) : 0;
	char obj[DM_NAME_LEN + 16];

	snprintf(obj, sizeof(obj), name ? "dm device %s" : "dm devices", name);
	if (e)
		return prl_errf(err, e, "cannot %s %s: %s", what, obj, strerror(e));
	/* No errno: libdevmapper could not talk to the kernel at all. */
	return prl_errf(err, EIO, "cannot %s %s: device-mapper is not available (is dm-mod loaded?)%s%s",
			what, obj, dm_last[0] ? ": " : "", dm_last);
}

struct dm_task *dm_task_named(int type, const char *name)
{
	struct dm_task *dmt;

	dm_last[0] = 0;
	dmt = dm_task_create(type);
	if (dmt && !dm_task_set_name(dmt, name)) {
		dm_task_destroy(dmt);
		return NULL;
	}
	return dmt;
}

/*
 * Create @name with one target.  Layers below the top are @hidden from
 * udev's disk rules: they hold older copies of the top's file system, whose
 * UUID and label must not point at them.
 */
int dm_create(const char *name, const char *uuid, uint64_t len,
		     const char *type, const char *params, bool ro, bool hidden,
		     dev_t *dev, struct prl_err *err)
{
	uint16_t flags = hidden ? DM_UDEV_DISABLE_DISK_RULES_FLAG |
			 DM_UDEV_DISABLE_OTHER_RULES_FLAG : 0;
	struct dm_task *dmt = dm_task_named(DM_DEVICE_CREATE, name);
	struct dm_info info;
	uint32_t cookie = 0;
	char why[512];
	int kfd, r = 0, e;

	if (!dmt || (uuid && !dm_task_set_uuid(dmt, uuid)) ||
	    !dm_task_add_target(dmt, 0, len, type, params) ||
	    (ro && !dm_task_set_ro(dmt))) {
		r = dm_err(err, dmt, "prepare", name);
		goto out;
	}
	if (!dm_task_set_cookie(dmt, &cookie, flags)) {
		r = dm_err(err, dmt, "prepare", name);
		goto out;
	}
	kfd = kmsg_open();
	if (!dm_task_run(dmt)) {
		e = dm_task_get_errno(dmt);
		kmsg_reason(kfd, why, sizeof(why));
		r = prl_errf(err, e ? e : EIO, "cannot create dm device %s (%s %s): %s",
			     name, type, params, why[0] ? why :
			     e ? strerror(e) : dm_last);
	} else {
		if (kfd >= 0)
			close(kfd);
		if (!dm_task_get_info(dmt, &info) || !info.exists)
			r = dm_err(err, dmt, "look up", name);
		else
			*dev = makedev(info.major, info.minor);
	}
	/* Waits for udev, or makes /dev/mapper/<name> itself without it. */
	dm_udev_wait(cookie);
out:
	if (dmt)
		dm_task_destroy(dmt);
	return r;
}

/* Simple named operations: remove (retried while udev probes), suspend, resume. */
int dm_simple(int type, const char *name, struct prl_err *err)
{
	struct dm_task *dmt = dm_task_named(type, name);
	const char *what = type == DM_DEVICE_REMOVE ? "remove" :
			   type == DM_DEVICE_SUSPEND ? "suspend" : "resume";
	uint32_t cookie = 0;
	bool wait = false;
	int r = 0;

	if (!dmt)
		return dm_err(err, NULL, what, name);
	if (type == DM_DEVICE_REMOVE)
		dm_task_retry_remove(dmt);
	if (type != DM_DEVICE_SUSPEND) {
		if (!dm_task_set_cookie(dmt, &cookie, 0)) {
			r = dm_err(err, dmt, what, name);
			goto out;
		}
		wait = true;
	}
	if (!dm_task_run(dmt)) {
		if (type == DM_DEVICE_REMOVE && dm_task_get_errno(dmt) == ENXIO)
			r = 0;	/* gone already */
		else
			r = dm_err(err, dmt, what, name);
	}
	if (wait)
		dm_udev_wait(cookie);
out:
	dm_task_destroy(dmt);
	return r;
}


static int parse_devno(const char *s, dev_t *dev)
{
	unsigned int ma, mi;
	char c;

	if (sscanf(s, "%u:%u%c", &ma, &mi, &c) != 2)
		return -EINVAL;
	*dev = makedev(ma, mi);
	return 0;
}

static void parse_table(struct dmdev *o, const char *type, const char *params)
{
	char a[64], b[64];
	int end = 0;

	snprintf(o->target, sizeof(o->target), "%s", type);
	if (!strcmp(type, "parallels") &&
	    sscanf(params, "%63s %63s%n", a, b, &end) == 2 && !parse_devno(a, &o->image) &&
	    (!strcmp(b, "-") || !parse_devno(b, &o->lower))) {
		o->parallels = true;
		if (!strcmp(b, "-"))
			o->lower = 0;
		/* The opt args, so a reload can keep them. */
		snprintf(o->opts, sizeof(o->opts), "%s", params + end + strspn(params + end, " "));
	} else if (!strcmp(type, "linear") && sscanf(params, "%63s", a) == 1 &&
		   !parse_devno(a, &o->image)) {
		o->linear = true;
	}
}

static void parse_status(struct dmdev *o, const char *params)
{
	uint64_t nospc = 0;
	int n;

	n = sscanf(params, "%" SCNu64 "/%" SCNu64 " %" SCNu64 " %" SCNu64
		   " %15s %47s %" SCNu64 " %47s", &o->alloc, &o->total,
		   &o->cluster_sectors, &o->end, o->state, o->cbt, &nospc,
		   o->error);
	if (n >= 5) {
		o->have_status = true;
		o->nospc = n >= 7 ? nospc : 0;
	}
	if (n < 8)
		strcpy(o->error, "-");
}

/* One task of @type on @name (or, with @name NULL, on device @dev). */
static struct dm_task *dm_ask(int type, const char *name, dev_t dev)
{
	struct dm_task *dmt;

	if (name)
		return dm_task_named(type, name);
	dm_last[0] = 0;
	dmt = dm_task_create(type);
	if (dmt && (!dm_task_set_major(dmt, major(dev)) ||
		    !dm_task_set_minor(dmt, minor(dev)))) {
		dm_task_destroy(dmt);
		return NULL;
	}
	return dmt;
}

/* Fill @o (o->exists false: there is no such device). */
int dm_query(const char *name, dev_t dev, struct dmdev *o,
		    struct prl_err *err)
{
	uint64_t start, length;
	char *type = NULL, *params = NULL;
	struct dm_task *dmt;
	struct dm_info info;
	void *next;
	int r = 0;

	memset(o, 0, sizeof(*o));
	dmt = dm_ask(DM_DEVICE_TABLE, name, dev);
	if (!dmt || !dm_task_run(dmt)) {
		if (dmt && dm_task_get_errno(dmt) == ENXIO)
			goto out;	/* no such device */
		r = dm_err(err, dmt, "query", name ? name : "?");
		goto out;
	}
	if (!dm_task_get_info(dmt, &info) || !info.exists)
		goto out;
	o->exists = true;
	snprintf(o->name, sizeof(o->name), "%s", dm_task_get_name(dmt));
	snprintf(o->uuid, sizeof(o->uuid), "%s", dm_task_get_uuid(dmt) ?: "");
	o->dev = makedev(info.major, info.minor);
	o->ro = info.read_only;
	o->suspended = info.suspended;
	o->open_count = info.open_count;
	next = dm_get_next_target(dmt, NULL, &start, &length, &type, &params);
	if (!next && type && params && start == 0) {
		o->len = length;
		parse_table(o, type, params);
	}
	dm_task_destroy(dmt);
	dmt = NULL;
	if (!o->parallels)
		goto out;
	dmt = dm_ask(DM_DEVICE_STATUS, o->name, 0);
	if (dmt && dm_task_run(dmt)) {
		type = NULL;
		params = NULL;
		dm_get_next_target(dmt, NULL, &start, &length, &type, &params);
		if (type && params && !strcmp(type, "parallels"))
			parse_status(o, params);
	}
out:
	if (dmt)
		dm_task_destroy(dmt);
	return r;
}

/* Every dm device's name; *names is malloc'ed, each entry too. */
int dm_names(char ***names, size_t *nr, struct prl_err *err)
{
	struct dm_task *dmt;
	struct dm_names *nm;
	size_t n = 0, cap = 16;
	char **v;
	int r = 0;

	*names = NULL;
	*nr = 0;
	dm_last[0] = 0;
	dmt = dm_task_create(DM_DEVICE_LIST);
	if (!dmt || !dm_task_run(dmt)) {
		r = dm_err(err, dmt, "list", NULL);
		goto out;
	}
	v = prl_xcalloc(cap, sizeof(*v));
	nm = dm_task_get_names(dmt);
	while (nm && nm->dev) {
		if (n == cap) {
			cap *= 2;
			v = realloc(v, cap * sizeof(*v));
			if (!v)
				abort();
		}
		v[n++] = prl_xstrdup(nm->name);
		if (!nm->next)
			break;
		nm = (struct dm_names *)((char *)nm + nm->next);
	}
	*names = v;
	*nr = n;
out:
	if (dmt)
		dm_task_destroy(dmt);
	return r;
}

void free_names(char **names, size_t nr)
{
	size_t i;

	for (i = 0; i < nr; i++)
		free(names[i]);
	free(names);
}

/* ---- names -------------------------------------------------------------- */

static bool name_char(char c)
{
	return isalnum((unsigned char)c) || c == '.' || c == '_' || c == '-';
}

/* What dm (and /dev/mapper) take without mangling, and room for layers. */
bool prl_valid_name(const char *n)
{
	size_t i, len = strlen(n);

	if (!len || len > NAME_MAX_LEN || !strcmp(n, ".") || !strcmp(n, "..") ||
	    n[0] == '-' || !strcmp(n, "control"))
		return false;
	for (i = 0; i < len; i++)
		if (!name_char(n[i]))
			return false;
	return true;
}

/* @s made into a valid dm name. */
static char *dm_name_of(const char *s)
{
	char *n = prl_xstrdup(s);
	size_t i;

	if (strlen(n) > NAME_MAX_LEN)
		n[NAME_MAX_LEN] = 0;
	for (i = 0; n[i]; i++)
		if (!name_char(n[i]))
			n[i] = '_';
	if (n[0] == '-')
		n[0] = '_';
	if (!prl_valid_name(n)) {
		free(n);
		n = prl_xstrdup("prldisk");
	}
	return n;
}

/* The default name of prldisk before disk identities: the folder's name. */
static char *legacy_name(const struct prl_desc *d)
{
	const char *b = strrchr(d->dir, '/');

	return dm_name_of(b && b[1] ? b + 1 : d->dir);
}

/*
 * The descriptor folder's name; a folder named *.hdd has the same name in
 * every container or VM (Virtuozzo's /vz/private/<ID>/root.hdd, Parallels'
 * <VM>.pvm/harddisk.hdd), so it is "<parent folder>-<folder>".  Stable
 * across boots; pick_name() makes it unique among the devices there are.
 */
static char *default_name(const struct prl_desc *d)
{
	const char *b = strrchr(d->dir, '/'), *p;
	char *s, *r;
	size_t n;

	b = b && b[1] ? b + 1 : d->dir;
	n = strlen(b);
	if (b == d->dir || n < 4 || strcasecmp(b + n - 4, ".hdd"))
		return dm_name_of(b);
	for (p = b - 1; p > d->dir && p[-1] != '/'; p--)
		;
	if (p == b - 1)		/* the folder is at / */
		return dm_name_of(b);
	s = prl_xasprintf("%.*s-%s", (int)(b - 1 - p), p, b);
	r = dm_name_of(s);
	free(s);
	return r;
}

/* The disk's identity: hex digits of the SHA-256 of its descriptor's real path. */
static void disk_id(const struct prl_desc *d, char id[DISK_ID_LEN + 1])
{
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int n = 0, i;

	/* d->path is absolute with symlinks resolved (prl_desc_load). */
	if (!EVP_Digest(d->path, strlen(d->path), md, &n, EVP_sha256(), NULL) ||
	    n * 2 < DISK_ID_LEN)
		abort();	/* only out of memory */
	for (i = 0; i < DISK_ID_LEN / 2; i++)
		snprintf(id + 2 * i, 3, "%02x", md[i]);
}

static bool is_bare_guid(const char *s)
{
	int i;

	for (i = 0; i < GUID_BARE_LEN; i++) {
		if (i == 8 || i == 13 || i == 18 || i == 23) {
			if (s[i] != '-')
				return false;
		} else if (!isxdigit((unsigned char)s[i])) {
			return false;
		}
	}
	return s[GUID_BARE_LEN] == 0 || s[GUID_BARE_LEN] == '-';
}

/* "<name>-<guid without braces>": a layer below the top of disk <name>. */
void layer_name(char *out, size_t len, const char *name, const char *guid)
{
	snprintf(out, len, "%s-%.*s", name, GUID_BARE_LEN, guid + 1);
}

static bool is_layer_of(const char *dmname, const char *name)
{
	size_t n = strlen(name);

	return strlen(dmname) == n + 1 + GUID_BARE_LEN &&
	       !strncmp(dmname, name, n) && dmname[n] == '-' &&
	       is_bare_guid(dmname + n + 1);
}

void uuid_disk_id(const char *uuid, char id[DISK_ID_LEN + 1])
{
	const char *u = uuid + strlen(UUID_PREFIX), *h = u + GUID_BARE_LEN + 1;
	int i;

	id[0] = 0;
	if (strncmp(uuid, UUID_PREFIX, strlen(UUID_PREFIX)) ||
	    strlen(u) < GUID_BARE_LEN + 1 + DISK_ID_LEN + 1 || !is_bare_guid(u) ||
	    u[GUID_BARE_LEN] != '-' || h[DISK_ID_LEN] != ':')
		return;
	for (i = 0; i < DISK_ID_LEN; i++)
		if (!isxdigit((unsigned char)h[i]))
			return;
	snprintf(id, DISK_ID_LEN + 1, "%.*s", DISK_ID_LEN, h);
}

/* The UUID of the table of image @guid of disk @id ("": none) named @name. */
void dm_uuid(char *out, size_t len, const char *guid, const char *id,
	     const char *name)
{
	if (id[0])
		snprintf(out, len, UUID_PREFIX "%.*s-%s:%.64s", GUID_BARE_LEN,
			 guid + 1, id, name);
	else
		snprintf(out, len, UUID_PREFIX "%.*s-%.64s", GUID_BARE_LEN,
			 guid + 1, name);
}

/* The GUID a dm device of ours carries in its UUID, or "". */
static void guid_of(const struct dmdev *o, char out[PRL_GUID_LEN + 1])
{
	const char *u = o->uuid + strlen(UUID_PREFIX);
	size_t n;

	out[0] = 0;
	if (!strncmp(o->uuid, UUID_PREFIX, strlen(UUID_PREFIX)) && is_bare_guid(u)) {
		snprintf(out, PRL_GUID_LEN + 1, "{%.*s}", GUID_BARE_LEN, u);
		return;
	}
	n = strlen(o->name);
	if (n > GUID_BARE_LEN + 1 && o->name[n - GUID_BARE_LEN - 1] == '-' &&
	    is_bare_guid(o->name + n - GUID_BARE_LEN))
		snprintf(out, PRL_GUID_LEN + 1, "{%s}", o->name + n - GUID_BARE_LEN);
}

/* ---- block devices and loop devices, through sysfs ---------------------- */

/* Copy what fits (kernel names and paths fit; a cut one matches nothing). */
static void scopy(char *dst, size_t len, const char *src)
{
	size_t n = strnlen(src, len - 1);

	memcpy(dst, src, n);
	dst[n] = 0;
}

static int sysfs_read(const char *path, char *buf, size_t len)
{
	ssize_t n;
	int fd = open(path, O_RDONLY | O_CLOEXEC);

	if (fd < 0)
		return -errno;
	n = read(fd, buf, len - 1);
	close(fd);
	if (n < 0)
		return -EIO;
	buf[n] = 0;
	buf[strcspn(buf, "\n")] = 0;
	return 0;
}

static int blk_attr(dev_t dev, const char *attr, char *buf, size_t len)
{
	char p[128];

	snprintf(p, sizeof(p), "/sys/dev/block/%u:%u/%s", major(dev), minor(dev),
		 attr);
	return sysfs_read(p, buf, len);
}

/* The kernel's name of @dev ("loop3", "dm-2", "sdb1"), or "". */
static void blk_kname(dev_t dev, char *out, size_t len)
{
	char p[64], link[PATH_MAX];
	ssize_t n;

	out[0] = 0;
	snprintf(p, sizeof(p), "/sys/dev/block/%u:%u", major(dev), minor(dev));
	n = readlink(p, link, sizeof(link) - 1);
	if (n <= 0)
		return;
	link[n] = 0;
	scopy(out, len, strrchr(link, '/') ? strrchr(link, '/') + 1 : link);
}

/* Open /dev/<kname>, making the node first where there is no devtmpfs. */
int open_dev(dev_t dev, int flags)
{
	char kn[64], p[80];
	int fd;

	blk_kname(dev, kn, sizeof(kn));
	if (!kn[0]) {
		errno = ENODEV;
		return -1;
	}
	snprintf(p, sizeof(p), "/dev/%s", kn);
	fd = open(p, flags | O_CLOEXEC);
	if (fd < 0 && errno == ENOENT &&
	    (!mknod(p, S_IFBLK | 0600, dev) || errno == EEXIST))
		fd = open(p, flags | O_CLOEXEC);
	return fd;
}

/* A loop device's backing file (its path as the kernel has it), or -errno. */
int loop_backing(dev_t dev, char *buf, size_t len)
{
	return blk_attr(dev, "loop/backing_file", buf, len);
}

static bool blk_ro(dev_t dev)
{
	char v[8];

	return !blk_attr(dev, "ro", v, sizeof(v)) && v[0] == '1';
}

/* The topmost dm device stacked on @dev (through holders/), or "". */
static void top_holder(dev_t dev, char *out, size_t len)
{
	char dir[128], p[192], hn[64], v[32];
	int depth;

	out[0] = 0;
	snprintf(dir, sizeof(dir), "/sys/dev/block/%u:%u", major(dev), minor(dev));
	/* A stack higher than a chain may be is a loop, not a disk. */
	for (depth = 0; depth < (int)PRL_MAX_CHAIN; depth++) {
		struct dirent *e;
		DIR *h;

		snprintf(p, sizeof(p), "%s/holders", dir);
		h = opendir(p);
		if (!h)
			return;
		hn[0] = 0;
		while ((e = readdir(h)))
			if (e->d_name[0] != '.') {
				scopy(hn, sizeof(hn), e->d_name);
				break;
			}
		closedir(h);
		if (!hn[0])
			return;
		snprintf(p, sizeof(p), "/sys/block/%s/dm/name", hn);
		if (sysfs_read(p, v, sizeof(v)) && sysfs_read(p, out, len))
			snprintf(out, len, "%s", hn);
		else
			sysfs_read(p, out, len);
		snprintf(dir, sizeof(dir), "/sys/block/%s", hn);
	}
}

int attachments(const char *path, struct attach *a, size_t max)
{
	char back[PATH_MAX], kn[64];
	struct stat st, bs;
	struct dirent *e;
	size_t n = 0;
	DIR *dir;

	if (prl_folder_lstat(path, &st))
		return 0;
	if (S_ISBLK(st.st_mode)) {
		top_holder(st.st_rdev, a[0].holder, sizeof(a[0].holder));
		if (!a[0].holder[0])
			return 0;
		blk_kname(st.st_rdev, kn, sizeof(kn));
		snprintf(a[0].dev, sizeof(a[0].dev), "/dev/%.20s", kn);
		a[0].rw = !blk_ro(st.st_rdev);	/* approximation: the device */
		return 1;
	}
	dir = opendir("/sys/block");
	if (!dir)
		return 0;
	while ((e = readdir(dir)) && n < max) {
		char p[300], v[32];
		dev_t dev;

		if (strncmp(e->d_name, "loop", 4))
			continue;
		snprintf(p, sizeof(p), "/sys/block/%s/loop/backing_file", e->d_name);
		if (sysfs_read(p, back, sizeof(back)) || stat(back, &bs) ||
		    bs.st_dev != st.st_dev || bs.st_ino != st.st_ino)
			continue;
		snprintf(p, sizeof(p), "/sys/block/%s/dev", e->d_name);
		if (sysfs_read(p, v, sizeof(v)) || parse_devno(v, &dev))
			continue;
		snprintf(a[n].dev, sizeof(a[n].dev), "/dev/%.24s", e->d_name);
		a[n].rw = !blk_ro(dev);
		top_holder(dev, a[n].holder, sizeof(a[n].holder));
		n++;
	}
	closedir(dir);
	return (int)n;
}

static int busy_err(struct prl_err *err, const char *disk, const char *file,
		    const struct attach *a)
{
	if (a->holder[0] && !strcmp(a->dev, file))
		return prl_errf(err, EBUSY,
				"%s is active: %s is used by dm device %s: run prldisk deactivate %s first",
				disk, file, a->holder, a->holder);
	if (a->holder[0])
		return prl_errf(err, EBUSY,
				"%s is active: %s is used by dm device %s (through %s): run prldisk deactivate %s first",
				disk, file, a->holder, a->dev, a->holder);
	return prl_errf(err, EBUSY,
			"%s is in use: %s is attached to %s (losetup -d %s frees it)",
			disk, file, a->dev, a->dev);
}

int prl_disk_busy(const struct prl_desc *d, struct prl_err *err)
{
	struct attach a[MAX_ATTACH];
	size_t i;

	for (i = 0; i < d->nr_images; i++) {
		memset(a, 0, sizeof(a));
		if (attachments(d->images[i].path, a, MAX_ATTACH) > 0)
			return busy_err(err, d->path, d->images[i].path, &a[0]);
	}
	return 0;
}

int prl_image_busy(const char *path, struct prl_err *err)
{
	struct attach a[MAX_ATTACH];

	memset(a, 0, sizeof(a));
	if (attachments(path, a, MAX_ATTACH) <= 0)
		return 0;
	if (a[0].holder[0])
		return prl_errf(err, EBUSY,
				"%s is an image of active dm device %s (attached %s through %s): an active disk's images are not changed; run prldisk deactivate %s first (a top is resized online through its DiskDescriptor.xml)",
				path, a[0].holder, a[0].rw ? "read-write" : "read-only",
				a[0].dev, a[0].holder);
	return prl_errf(err, EBUSY, "%s is attached to %s: not changed while attached (losetup -d %s frees it)",
			path, a[0].dev, a[0].dev);
}

int prl_disk_lock(const struct prl_desc *d, struct prl_err *err)
{
	return prl_lock_path(d->path, err);
}

int prl_lock_path(const char *xml, struct prl_err *err)
{
	char *p = prl_xasprintf("%s.lck", xml);
	struct stat st;
	int fd, e;

	/* O_NONBLOCK: a FIFO put there must not make us wait. */
	fd = open(p, O_RDWR | O_CREAT | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY |
		  O_CLOEXEC, 0644);
	if (fd < 0 && (errno == EROFS || errno == EACCES)) {
		e = errno;
		fd = open(p, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY |
			  O_CLOEXEC);
		if (fd < 0 && errno == ENOENT)
			errno = e;
	}
	if (fd < 0) {
		e = errno;
		prl_errf(err, e, "cannot open the lock file %s: %s", p, strerror(e));
		free(p);
		return -e;
	}
	if (fstat(fd, &st) || !S_ISREG(st.st_mode)) {
		close(fd);
		prl_errf(err, EINVAL,
			 "the lock file %s is not a regular file: remove it, then try again",
			 p);
		free(p);
		return -EINVAL;
	}
	if (flock(fd, LOCK_EX | LOCK_NB)) {
		e = errno;
		close(fd);
		if (e == EWOULDBLOCK)
			prl_errf(err, EBUSY,
				 "%s is locked: another prldisk is working on this disk (activate, deactivate or a change); try again when it is done",
				 p);
		else
			prl_errf(err, e, "cannot lock %s: %s", p, strerror(e));
		free(p);
		return e == EWOULDBLOCK ? -EBUSY : -e;
	}
	free(p);
	return fd;
}

void prl_disk_unlock(int fd)
{
	if (fd >= 0)
		close(fd);	/* drops the flock */
}

/* ---- loop devices ------------------------------------------------------- */

static int open_loop_nr(long nr, int flags)
{
	char p[32], a[64], v[32];
	dev_t dev;
	int fd;

	snprintf(p, sizeof(p), "/dev/loop%ld", nr);
	fd = open(p, flags | O_CLOEXEC);
	if (fd >= 0 || errno != ENOENT)
		return fd;
	/* No devtmpfs: make the node from the kernel's numbers. */
	snprintf(a, sizeof(a), "/sys/block/loop%ld/dev", nr);
	if (sysfs_read(a, v, sizeof(v)) || parse_devno(v, &dev)) {
		errno = ENOENT;
		return -1;
	}
	if (mknod(p, S_IFBLK | 0600, dev) && errno != EEXIST)
		return -1;
	return open(p, flags | O_CLOEXEC);
}

/*
 * Attach @path to a free loop device: autoclear (it goes away with its last
 * opener), read-only if @ro, direct I/O where the file system can do it
 * (the kernel silently keeps buffered I/O otherwise; some refuse the flag,
 * then it is set up buffered).  The loop stays held by l->fd.
 */
int loop_attach(const char *path, bool ro, struct loopdev *l,
		       struct prl_err *err)
{
	struct loop_info64 info;
	struct loop_config cfg;
	struct stat st;
	int ctl = -1, file, fd = -1, tries, r = 0, e;
	long nr;

	l->fd = -1;
	file = prl_open_image_file(path, ro ? O_RDONLY : O_RDWR, NULL, err);
	if (file < 0)
		return file;
	ctl = open("/dev/loop-control", O_RDWR | O_CLOEXEC);
	if (ctl < 0) {
		r = prl_errf(err, errno, "cannot open /dev/loop-control: %s (is the loop module loaded?)",
			     strerror(errno));
		goto out;
	}
	for (tries = 0;; tries++) {
		nr = ioctl(ctl, LOOP_CTL_GET_FREE);
		if (nr < 0) {
			r = prl_errf(err, errno, "no free loop device for %s: %s",
				     path, strerror(errno));
			goto out;
		}
		fd = open_loop_nr(nr, ro ? O_RDONLY : O_RDWR);
		if (fd < 0) {
			r = prl_errf(err, errno, "cannot open /dev/loop%ld: %s", nr,
				     strerror(errno));
			goto out;
		}
		memset(&cfg, 0, sizeof(cfg));
		cfg.fd = (__u32)file;
		cfg.info.lo_flags = LO_FLAGS_AUTOCLEAR | LO_FLAGS_DIRECT_IO |
				    (ro ? LO_FLAGS_READ_ONLY : 0);
		snprintf((char *)cfg.info.lo_file_name, LO_NAME_SIZE, "%s", path);
		if (!ioctl(fd, LOOP_CONFIGURE, &cfg))
			break;
		if (errno == EINVAL) {
			cfg.info.lo_flags &= ~LO_FLAGS_DIRECT_IO;
			if (!ioctl(fd, LOOP_CONFIGURE, &cfg))
				break;
		}
		e = errno;
		close(fd);
		fd = -1;
		/* Another process took it between GET_FREE and CONFIGURE. */
		if (e == EBUSY && tries < 100)
			continue;
		r = prl_errf(err, e, "cannot set up /dev/loop%ld over %s: %s", nr,
			     path, strerror(e));
		goto out;
	}
	if (fstat(fd, &st)) {
		r = prl_errf(err, errno, "/dev/loop%ld: %s", nr, strerror(errno));
		close(fd);	/* autoclear detaches it */
		goto out;
	}
	l->fd = fd;
	l->dev = st.st_rdev;
	l->dio = !ioctl(fd, LOOP_GET_STATUS64, &info) &&
		 (info.lo_flags & LO_FLAGS_DIRECT_IO);
out:
	if (ctl >= 0)
		close(ctl);
	close(file);
	return r;
}

void loop_release(struct loopdev *l)
{
	if (l->fd >= 0)
		close(l->fd);
	l->fd = -1;
}

/*
 * After its table is gone, an autoclear loop device detaches by itself;
 * one still bound to the same file (someone else had it open, or it was
 * made without autoclear) is detached here.
 */
static void loop_settle(dev_t dev, dev_t fdev, ino_t ino)
{
	struct loop_info64 info;
	char back[PATH_MAX], h[DM_NAME_LEN];
	int i, fd;

	for (i = 0; i < 40; i++) {
		if (loop_backing(dev, back, sizeof(back)))
			return;		/* unbound */
		top_holder(dev, h, sizeof(h));
		if (h[0])
			return;		/* taken again, by someone else */
		nanosleep(&(struct timespec){ .tv_nsec = 25000000 }, NULL);
	}
	fd = open_dev(dev, O_RDONLY);
	if (fd < 0)
		return;
	if (!ioctl(fd, LOOP_GET_STATUS64, &info) &&
	    (info.lo_flags & LO_FLAGS_AUTOCLEAR) &&
	    info.lo_device == (__u64)fdev && info.lo_inode == (__u64)ino &&
	    ioctl(fd, LOOP_CLR_FD) && errno != ENXIO)
		fprintf(stderr, "%s: warning: cannot detach %s: %s\n", prog, back,
			strerror(errno));
	close(fd);
}

/*
 * The backing file's identity, for loop_settle() and the truncation, of a
 * loop device such as activate makes (autoclear); -1 for any other, e.g. a
 * loop device the user set up and named as a block-device image: that one
 * is neither detached nor has its file truncated.
 */
int loop_ident(dev_t dev, dev_t *fdev, ino_t *ino)
{
	struct loop_info64 info;
	int fd = open_dev(dev, O_RDONLY), r = -1;

	if (fd < 0)
		return -1;
	if (!ioctl(fd, LOOP_GET_STATUS64, &info) &&
	    (info.lo_flags & LO_FLAGS_AUTOCLEAR)) {
		*fdev = (dev_t)info.lo_device;
		*ino = (ino_t)info.lo_inode;
		r = 0;
	}
	close(fd);
	return r;
}

/* ---- owned devices ------------------------------------------------------ */

/* Whether the table @o serves an image of @d: the same file or device. */
static bool serves_disk(const struct dmdev *o, const struct prl_desc *d)
{
	bool loop;
	struct stat st;
	dev_t fdev = 0;
	ino_t ino = 0;
	size_t i;

	if (!o->image)
		return false;
	loop = !loop_ident(o->image, &fdev, &ino);
	for (i = 0; i < d->nr_images; i++) {
		if (prl_folder_lstat(d->images[i].path, &st))
			continue;
		if (loop ? S_ISREG(st.st_mode) && st.st_dev == fdev && st.st_ino == ino :
			   S_ISBLK(st.st_mode) && st.st_rdev == o->image)
			return true;
	}
	return false;
}

enum { OWN_NOT_PRLDISK = -1, OWN_OTHER, OWN_MINE };

/*
 * Whose device @o is: disk @d's (identity @id) when its UUID carries @id,
 * or, made by a prldisk before identities, when it serves an image of @d;
 * another disk's; or not made by prldisk at all.
 */
static int owner(const struct dmdev *o, const struct prl_desc *d, const char *id)
{
	char oid[DISK_ID_LEN + 1];

	if (strncmp(o->uuid, UUID_PREFIX, strlen(UUID_PREFIX)))
		return OWN_NOT_PRLDISK;
	uuid_disk_id(o->uuid, oid);
	if (oid[0])
		return strcmp(oid, id) ? OWN_OTHER : OWN_MINE;
	return serves_disk(o, d) ? OWN_MINE : OWN_OTHER;
}

/*
 * The devices of disk @d that no other device has below it: its tops (and
 * a layer an interrupted command left without one).  *tops is malloc'ed.
 */
static int owned_tops(const struct prl_desc *d, const char *id, char ***tops,
		      size_t *n, struct prl_err *err)
{
	struct dmdev *v;
	char **names;
	size_t nr, i, k;
	int r;

	*tops = NULL;
	*n = 0;
	r = dm_names(&names, &nr, err);
	if (r)
		return r;
	v = prl_xcalloc(nr ? nr : 1, sizeof(*v));
	for (i = 0; i < nr; i++)
		if (dm_query(names[i], 0, &v[i], err))
			v[i].exists = false;
	*tops = prl_xcalloc(nr ? nr : 1, sizeof(**tops));
	for (i = 0; i < nr; i++) {
		if (!v[i].exists || owner(&v[i], d, id) != OWN_MINE)
			continue;
		for (k = 0; k < nr; k++)
			if (v[k].exists && v[k].parallels && v[k].lower == v[i].dev)
				break;
		if (k == nr)
			(*tops)[(*n)++] = prl_xstrdup(v[i].name);
	}
	free(v);
	free_names(names, nr);
	return 0;
}

/*
 * The default @name, unless a device of another disk (or one prldisk did
 * not make) has it, or a layer name of it: then "<name>-<8 digits of the
 * disk's identity>", which is this disk's alone.
 */
static char *pick_name(const struct prl_desc *d, const char *id, char *name)
{
	struct prl_err e;
	bool taken = false;
	char **names;
	size_t nr, i;
	char *alt;

	if (dm_names(&names, &nr, &e))
		return name;	/* activation will say what is wrong */
	for (i = 0; i < nr && !taken; i++) {
		struct dmdev o;

		if ((strcmp(names[i], name) && !is_layer_of(names[i], name)) ||
		    dm_query(names[i], 0, &o, &e))
			continue;
		/* One over this disk's own image is its leftover: check_free says so. */
		taken = o.exists && owner(&o, d, id) != OWN_MINE &&
			!serves_disk(&o, d);
	}
	free_names(names, nr);
	if (!taken)
		return name;
	alt = prl_xasprintf("%.*s-%.8s", NAME_MAX_LEN - 9, name, id);
	free(name);
	return alt;
}

/* ---- activate ----------------------------------------------------------- */

struct layer {
	const struct prl_desc_image *im;
	bool plain;		/* raw root: no table unless it is the top */
	bool top;
	bool ro;
	bool blkdev;
	uint64_t img_sectors;	/* header nb_sectors, or a raw file's size */
	uint64_t len;		/* table length */
	uint64_t grow_bytes;	/* size the file may reach */
	uint32_t in_use;
	struct loopdev loop;	/* fd -1: none held */
	dev_t dev;		/* what the table serves: loop or block device */
	char dm_name[DM_NAME_LEN];
	dev_t dm_dev;
	bool created;
};

struct act {
	const struct prl_desc *d;
	const char *name;
	char id[DISK_ID_LEN + 1];	/* the disk's identity, in the UUIDs */
	struct layer *L;	/* bottom (root) first */
	size_t n;
	bool extended;		/* the top file was pre-extended by us */
	off_t orig_size;
};

/* Largest size the image can reach: every BAT entry allocated. */
uint64_t max_sectors(const struct prl_image *img)
{
	const struct prl_geom *g = &img->geom;
	uint64_t cs = g->cluster_sectors;
	uint64_t a = g->data_off + ((uint64_t)g->bat_entries + !!g->ext_off) * cs;
	uint64_t b = img->end + (uint64_t)(g->bat_entries - img->allocated) * cs;
	uint64_t lim = (uint64_t)UINT32_MAX * g->off_mult + cs;
	/* And a dirty bitmap of 4 KiB granules with its extension cluster. */
	uint64_t bm = (prl_bitmap_l1_size(g->nb_sectors, 8, cs << PRL_SECTOR_SHIFT) + 1) * cs;

	a = (a > b ? a : b) + bm;
	return a < lim ? a : lim;
}

static int probe_layer(struct layer *l, struct prl_err *err)
{
	struct prl_image *img;
	struct stat st;
	uint64_t bytes;
	int fd, r;

	if (prl_folder_lstat(l->im->path, &st))
		return prl_errf(err, errno, "image %s of %s: %s", l->im->path,
				l->im->guid, strerror(errno));
	if (!S_ISREG(st.st_mode) && !S_ISBLK(st.st_mode))
		return prl_errf(err, EINVAL,
				"%s is a %s, not a regular file or block device: not an image",
				l->im->path, prl_file_type(st.st_mode));
	l->blkdev = S_ISBLK(st.st_mode);
	if (l->plain) {
		fd = prl_open_image_file(l->im->path, O_RDONLY, NULL, err);
		if (fd < 0)
			return fd;
		r = prl_fd_size(fd, &bytes);
		close(fd);
		if (r)
			return prl_errf(err, -r, "%s: cannot get its size", l->im->path);
		l->img_sectors = bytes >> PRL_SECTOR_SHIFT;
		if (!l->img_sectors)
			return prl_errf(err, EINVAL, "Plain image %s is empty", l->im->path);
		return 0;
	}
	r = prl_image_open(l->im->path, 0, &img, err);
	if (r)
		return r;
	l->img_sectors = img->geom.nb_sectors;
	l->in_use = img->geom.in_use;
	l->grow_bytes = max_sectors(img) << PRL_SECTOR_SHIFT;
	prl_image_close(img, &(struct prl_err){ "" });
	return 0;
}

static int repair_image(struct layer *l, struct prl_err *err)
{
	struct prl_check_opts o = { .repair = true };
	struct prl_check_report rep;
	size_t i;
	int r;

	r = prl_check(l->im->path, &o, &rep, err);
	if (r < 0)
		return r;
	for (i = 0; i < rep.nr; i++)
		if (rep.problems[i].repaired)
			fprintf(stderr, "%s: %s: repaired: %s\n", prog, l->im->path,
				rep.problems[i].fix[0] ? rep.problems[i].fix :
				rep.problems[i].msg);
	prl_check_report_free(&rep);
	if (r == EX_CORRUPT)
		return prl_errf(err, EIO, "%s is still damaged after the repair: see prldisk check %s",
				l->im->path, l->im->path);
	return probe_layer(l, err);
}

/* In-use images: refused for writing, repaired with --repair, else a warning. */
static int check_in_use(struct act *a, struct prl_err *err)
{
	size_t i;
	int r;

	for (i = 0; i < a->n; i++) {
		struct layer *l = &a->L[i];

		if (l->plain || l->in_use != PRL_IN_USE_OPEN)
			continue;
		if (cli.repair) {
			r = repair_image(l, err);
			if (r)
				return r;
		} else if (!l->ro) {
			return prl_errf(err, EBUSY,
					"image %s was not closed cleanly (in use): run prldisk check --repair %s, or activate with --repair",
					l->im->path, a->d->path);
		} else {
			fprintf(stderr, "%s: warning: image %s was not closed cleanly; it is served read-only (state needs_check); prldisk check --repair %s fixes it\n",
				prog, l->im->path, a->d->path);
		}
	}
	return 0;
}

/* Step 1: nothing of this disk may be written twice, no name taken. */
static int check_free(struct act *a, struct prl_err *err)
{
	struct attach at[MAX_ATTACH];
	char **names;
	size_t i, nr;
	int k, n, r;

	for (i = 0; i < a->n; i++) {
		const struct layer *l = &a->L[i];

		memset(at, 0, sizeof(at));
		n = attachments(l->im->path, at, MAX_ATTACH);
		for (k = 0; k < n; k++)
			if (!l->ro || at[k].rw)
				return busy_err(err, a->d->path, l->im->path, &at[k]);
	}
	r = dm_names(&names, &nr, err);
	if (r)
		return r;
	for (i = 0; i < nr && !r; i++) {
		if (!strcmp(names[i], a->name))
			r = prl_errf(err, EEXIST,
				     "a dm device named %s exists already (prldisk status %s); choose another --name",
				     a->name, a->name);
		else if (is_layer_of(names[i], a->name))
			r = prl_errf(err, EEXIST,
				     "dm device %s is left from an interrupted activation: run prldisk deactivate %s first",
				     names[i], a->name);
	}
	free_names(names, nr);
	return r;
}

static int pre_extend(struct act *a, struct layer *l, struct prl_err *err)
{
	struct stat st;
	int fd, r = 0;

	if (l->ro || l->plain || l->blkdev)
		return 0;
	fd = prl_open_image_file(l->im->path, O_WRONLY, NULL, err);
	if (fd < 0)
		return fd;
	if (fstat(fd, &st)) {
		r = prl_errf(err, errno, "%s: %s", l->im->path, strerror(errno));
	} else if ((uint64_t)st.st_size < l->grow_bytes) {
		if (ftruncate(fd, (off_t)l->grow_bytes)) {
			r = prl_errf(err, errno,
				     "cannot extend %s to %" PRIu64 " bytes (the room it may grow to): %s",
				     l->im->path, l->grow_bytes, strerror(errno));
		} else {
			a->extended = true;
			a->orig_size = st.st_size;
		}
	}
	close(fd);
	return r;
}

unsigned int sector_args(uint32_t logical, uint32_t physical, const char *opts,
			 char *out, size_t len)
{
	unsigned int n = 0;
	const char *s;
	size_t k;

	if (opts) {
		/* The live table's own: the layers agree with what it runs. */
		logical = physical = 0;
		for (s = opts; *s; s += k) {
			s += strspn(s, " ");
			k = strcspn(s, " ");
			if (!strncmp(s, "logical_block_size:", 19))
				logical = (uint32_t)strtoul(s + 19, NULL, 10);
			else if (!strncmp(s, "physical_block_size:", 20))
				physical = (uint32_t)strtoul(s + 20, NULL, 10);
		}
	}
	out[0] = '\0';
	if (logical) {
		snprintf(out, len, "logical_block_size:%u", logical);
		n++;
	}
	if (physical) {
		k = strlen(out);
		snprintf(out + k, len - k, "%sphysical_block_size:%u",
			 n ? " " : "", physical);
		n++;
	}
	return n;
}

/* The devices a layer's table names: its image and what lies below it. */
static void layer_table(const struct act *a, size_t i, char *type, size_t tlen,
			char *params, size_t plen)
{
	const struct layer *l = &a->L[i];
	const struct layer *b = i ? &a->L[i - 1] : NULL;
	char lower[32] = "-", ss[64];
	bool cbt = l->top && !l->ro && cli.cbt;
	unsigned int n;

	if (l->plain) {
		snprintf(type, tlen, "linear");
		snprintf(params, plen, "%u:%u 0", major(l->dev), minor(l->dev));
		return;
	}
	if (b)
		snprintf(lower, sizeof(lower), "%u:%u",
			 major(b->plain ? b->dev : b->dm_dev),
			 minor(b->plain ? b->dev : b->dm_dev));
	snprintf(type, tlen, "parallels");
	/* Every layer gets the disk's sector sizes: the top also takes the
	 * larger ones of the layer below, and a layer may become a top. */
	n = sector_args(a->d->logical_sector_size, a->d->physical_sector_size,
			NULL, ss, sizeof(ss));
	/* --cbt: the top tracks changes (its own bitmap goes on anyway). */
	if (n + cbt)
		snprintf(params, plen, "%u:%u %s %u%s%s%s", major(l->dev),
			 minor(l->dev), lower, n + cbt, cbt ? " cbt" : "",
			 n ? " " : "", ss);
	else
		snprintf(params, plen, "%u:%u %s", major(l->dev), minor(l->dev),
			 lower);
}

static void undo(struct act *a)
{
	struct prl_err e;
	size_t i;

	for (i = a->n; i-- > 0;) {
		struct layer *l = &a->L[i];

		if (l->created && dm_simple(DM_DEVICE_REMOVE, l->dm_name, &e))
			fprintf(stderr, "%s: %s; prldisk deactivate %s removes it\n",
				prog, e.msg, a->name);
		l->created = false;
	}
	for (i = 0; i < a->n; i++)
		loop_release(&a->L[i].loop);
	if (a->extended &&
	    prl_folder_truncate(a->L[a->n - 1].im->path, (off_t)a->orig_size))
		fprintf(stderr, "%s: warning: cannot cut %s back: %s\n", prog,
			a->L[a->n - 1].im->path, strerror(errno));
	a->extended = false;
}

/* Steps 3-5; on failure, this run's steps are undone. */
static int setup(struct act *a, struct prl_err *err)
{
	char type[16], params[160], uuid[DM_UUID_LEN];
	size_t i;
	int r;

	r = pre_extend(a, &a->L[a->n - 1], err);
	if (!r)
		fault_point("activate:extend");
	for (i = 0; i < a->n && !r; i++) {
		struct layer *l = &a->L[i];
		struct stat st;

		if (l->blkdev) {
			if (prl_folder_lstat(l->im->path, &st))
				r = prl_errf(err, errno, "%s: %s", l->im->path,
					     strerror(errno));
			else
				l->dev = st.st_rdev;
		} else {
			r = loop_attach(l->im->path, l->ro, &l->loop, err);
			l->dev = l->loop.dev;
		}
	}
	if (!r)
		fault_point("activate:loops");
	for (i = 0; i < a->n && !r; i++) {
		struct layer *l = &a->L[i];

		if (l->plain && !l->top)
			continue;
		if (l->top)
			fault_point("activate:layer");	/* the layers below exist */
		layer_table(a, i, type, sizeof(type), params, sizeof(params));
		dm_uuid(uuid, sizeof(uuid), l->im->guid, a->id, a->name);
		r = dm_create(l->dm_name, uuid, l->len, type, params, l->ro, !l->top,
			      &l->dm_dev, err);
		l->created = !r;
	}
	if (r)
		undo(a);
	else
		fault_point("activate:top");
	return r;
}

static json_object *status_json(const char *name, struct prl_err *err);

static int build_layers(struct act *a, const char *guid, struct prl_err *err)
{
	const struct prl_desc_image **chain;
	bool ro_all = cli.read_only || strcmp(guid, a->d->top);
	size_t i, n;
	int r;

	r = prl_desc_chain(a->d, guid, &chain, &n, err);
	if (r)
		return r;
	a->n = n;
	a->L = prl_xcalloc(n, sizeof(*a->L));
	for (i = 0; i < n; i++) {
		struct layer *l = &a->L[i];

		l->im = chain[n - 1 - i];
		l->plain = l->im->type == PRL_IMAGE_PLAIN;
		l->top = i == n - 1;
		l->ro = !l->top || ro_all;
		l->loop.fd = -1;
		if (l->top)
			snprintf(l->dm_name, sizeof(l->dm_name), "%s", a->name);
		else
			layer_name(l->dm_name, sizeof(l->dm_name), a->name, l->im->guid);
	}
	free(chain);
	return 0;
}

static int set_lengths(struct act *a, struct prl_err *err)
{
	size_t i;

	for (i = 0; i < a->n; i++) {
		struct layer *l = &a->L[i];

		l->len = l->img_sectors;
		if (l->top && a->d->disk_size < l->len)
			l->len = a->d->disk_size;
		if (!l->len)
			return prl_errf(err, EINVAL, "image %s has no sectors", l->im->path);
	}
	return 0;
}

static int activate(struct act *a, const char *guid, struct prl_err *err)
{
	size_t i;
	int r;

	r = build_layers(a, guid, err);
	if (!r)
		r = check_free(a, err);
	for (i = 0; i < a->n && !r; i++)
		r = probe_layer(&a->L[i], err);
	if (!r)
		r = check_in_use(a, err);
	if (!r)
		r = set_lengths(a, err);
	if (!r)
		r = setup(a, err);
	if (r)
		return r;
	/* Step 6: the tables hold the loop devices now. */
	for (i = 0; i < a->n; i++)
		loop_release(&a->L[i].loop);
	return 0;
}

int cmd_activate(int argc, char **argv)
{
	char guid[PRL_GUID_LEN + 1];
	struct act a = { 0 };
	struct prl_desc *d;
	struct prl_err err;
	char *xml, *name;
	int rc, lock;
	bool ro;

	if (argc != 1)
		return die_usage("activate takes one XML");
	if (cli.name && !prl_valid_name(cli.name))
		return die_usage("--name '%s': a device name is 1 to %d of A-Z a-z 0-9 . _ - and does not start with -",
				 cli.name, NAME_MAX_LEN);
	if (cli.snapshot && prl_guid_parse(cli.snapshot, guid))
		return die_usage("--snapshot '%s' is not a GUID like {12345678-9abc-def1-2345-6789abcdef12}",
				 cli.snapshot);
	xml = descriptor_path(argv[0]);
	if (!xml)
		return die_usage("activate needs a DiskDescriptor.xml (or its folder)");
	/* Locked before it is read: no change is half done in what we use. */
	lock = prl_lock_path(xml, &err);
	if (lock < 0 && lock != -EROFS) {
		free(xml);
		return fail_err(&err);
	}
	rc = load_desc(xml, &d);
	free(xml);
	if (rc) {
		prl_disk_unlock(lock);
		return rc;
	}
	dm_setup();
	if (!cli.snapshot)
		snprintf(guid, sizeof(guid), "%s", d->top);
	disk_id(d, a.id);
	name = cli.name ? prl_xstrdup(cli.name) : pick_name(d, a.id, default_name(d));
	ro = cli.read_only || strcmp(guid, d->top);
	if (!prl_desc_image(d, guid)) {
		fprintf(stderr, "%s: no snapshot %s in %s\n", prog, guid, d->path);
		rc = EX_FAIL;
		goto out;
	}
	/* A read-only folder cannot be changed by anyone: no lock needed. */
	if (lock == -EROFS && !ro) {
		rc = fail_err(&err);
		goto out;
	}
	a.d = d;
	a.name = name;
	if (activate(&a, guid, &err)) {
		rc = fail_err(&err);
	} else if (cli.json) {
		json_object *o = status_json(name, &err);

		if (o)
			json_print(o);
		else
			rc = fail_err(&err);
	} else {
		printf("/dev/mapper/%s\n", name);
	}
	free(a.L);
out:
	prl_disk_unlock(lock);
	free(name);
	prl_desc_free(d);
	dm_lib_release();
	return rc;
}

/* ---- the chain of an active disk ----------------------------------------- */

struct chain {
	struct dmdev *dm;	/* top first */
	size_t n;
	dev_t raw;		/* the loop of a Plain root below, or 0 */
};

bool ours(const struct dmdev *o)
{
	return o->parallels ||
	       !strncmp(o->uuid, UUID_PREFIX, strlen(UUID_PREFIX));
}

static void chain_free(struct chain *c)
{
	free(c->dm);
	c->dm = NULL;
	c->n = 0;
}

/* From @top down its lower devices; a lower device that is not dm ends it. */
static int chain_walk(const struct dmdev *top, struct chain *c, struct prl_err *err)
{
	size_t cap = 4;
	int r;

	c->dm = prl_xcalloc(cap, sizeof(*c->dm));
	c->dm[0] = *top;
	c->n = 1;
	c->raw = 0;
	while (c->dm[c->n - 1].parallels && c->dm[c->n - 1].lower) {
		dev_t low = c->dm[c->n - 1].lower;

		if (!dm_is_dm_major(major(low))) {
			c->raw = low;
			break;
		}
		/* The chain limit of descriptors (descriptor.h): a loop. */
		if (c->n >= PRL_MAX_CHAIN)
			return prl_errf(err, ELOOP,
					"%s: the chain of tables is longer than %u, the most a disk may have",
					top->name, PRL_MAX_CHAIN);
		if (c->n == cap) {
			cap *= 2;
			c->dm = realloc(c->dm, cap * sizeof(*c->dm));
			if (!c->dm)
				abort();
		}
		r = dm_query(NULL, low, &c->dm[c->n], err);
		if (r)
			return r;
		if (!c->dm[c->n].exists)
			break;
		c->n++;
	}
	return 0;
}

/* ---- deactivate --------------------------------------------------------- */

/*
 * The top file, opened before its table goes, for the truncation after:
 * the loop device tells which file it serves (device and inode).
 */
int open_top_file(dev_t loop, struct stat *st)
{
	char back[PATH_MAX];
	dev_t fdev;
	ino_t ino;
	int fd;

	if (loop_backing(loop, back, sizeof(back)) || loop_ident(loop, &fdev, &ino))
		return -1;
	fd = open(back, O_WRONLY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	if (fstat(fd, st) || !S_ISREG(st->st_mode) || st->st_dev != fdev ||
	    st->st_ino != ino) {
		close(fd);
		return -1;
	}
	return fd;
}

/*
 * Remove <name>-<guid> layers that have no top over them (crash leftovers);
 * given the disk @d, only its own.
 */
static int remove_strays(const char *name, const struct prl_desc *d,
			 const char *id, int *removed, struct prl_err *err)
{
	bool progress = true;
	char **names;
	size_t i, nr;
	int r;

	*removed = 0;
	while (progress) {
		progress = false;
		r = dm_names(&names, &nr, err);
		if (r)
			return r;
		for (i = 0; i < nr && !r; i++) {
			struct dmdev o;
			dev_t fdev = 0;
			ino_t ino = 0;
			bool loop;

			if (!is_layer_of(names[i], name))
				continue;
			r = dm_query(names[i], 0, &o, err);
			if (r || !o.exists || !ours(&o) || o.open_count)
				continue;
			/* A layer under an online snapshot's top may have no UUID. */
			if (d && owner(&o, d, id) != OWN_MINE &&
			    (o.uuid[0] || !serves_disk(&o, d)))
				continue;
			loop = o.image && !loop_ident(o.image, &fdev, &ino);
			r = dm_simple(DM_DEVICE_REMOVE, o.name, err);
			if (r)
				break;
			if (loop)
				loop_settle(o.image, fdev, ino);
			if (o.lower && !dm_is_dm_major(major(o.lower)) &&
			    !loop_ident(o.lower, &fdev, &ino))
				loop_settle(o.lower, fdev, ino);
			fprintf(stderr, "%s: removed %s, left from an interrupted activation\n",
				prog, o.name);
			(*removed)++;
			progress = true;
		}
		free_names(names, nr);
		if (r)
			return r;
	}
	return 0;
}

/*
 * A pre-extension left by an interrupted activation (or online snapshot,
 * on what is a lower layer now) is cut back to the image end, if the image
 * was closed cleanly (an in-use one is for check --repair) and no one has
 * it attached.
 */
static void cut_tail(const char *path)
{
	struct attach at[MAX_ATTACH];
	struct prl_image *img;
	struct prl_err e;
	uint64_t end = 0;
	bool cut = false;

	if (attachments(path, at, MAX_ATTACH) > 0 ||
	    prl_image_open(path, 0, &img, &e))
		return;
	if (!img->blkdev && img->geom.in_use != PRL_IN_USE_OPEN &&
	    img->file_sectors > img->end) {
		cut = true;
		end = img->end;
	}
	prl_image_close(img, &e);
	if (!cut)
		return;
	if (prl_folder_truncate(path, (off_t)(end << PRL_SECTOR_SHIFT)))
		fprintf(stderr, "%s: warning: cannot truncate %s: %s\n", prog,
			path, strerror(errno));
	else
		fprintf(stderr, "%s: cut %s back to its image end (%" PRIu64
			" bytes), left longer by an interrupted activation\n",
			prog, path, end << PRL_SECTOR_SHIFT);
}

/* Nothing active: every image of the disk, cut back if it was left longer. */
static void recover_tail(const struct prl_desc *d)
{
	size_t i;

	for (i = 0; i < d->nr_images; i++)
		if (d->images[i].type != PRL_IMAGE_PLAIN)
			cut_tail(d->images[i].path);
}

/* Without an XML: lock the descriptor next to the top image, if there is one. */
static int lock_by_file(dev_t image)
{
	char back[PATH_MAX], *dir, *xml;
	struct prl_desc *d;
	struct prl_err e;
	int fd = -1;

	if (loop_backing(image, back, sizeof(back)))
		return -1;
	dir = dirname(back);
	xml = prl_xasprintf("%s/%s", dir, PRL_DESC_NAME);
	if (!access(xml, F_OK) &&
	    !prl_desc_load(xml, PRL_DESC_ALLOW_EXTERNAL, &d, &e)) {
		fd = prl_disk_lock(d, &e);
		if (fd == -EBUSY) {
			fprintf(stderr, "%s: %s\n", prog, e.msg);
			fd = -2;
		}
		prl_desc_free(d);
	}
	free(xml);
	return fd;
}

/*
 * Truncate the top file to @end, the target's image_end_sector, but never
 * below what the BAT on disk uses (the image as it is now, read back):
 * the on-disk metadata is what the next open trusts.
 */
void cut_top(int fd, const struct stat *st, uint64_t end)
{
	struct prl_image *img;
	struct prl_err e;
	char p[64];

	snprintf(p, sizeof(p), "/proc/self/fd/%d", fd);
	if (prl_image_open(p, 0, &img, &e)) {
		fprintf(stderr, "%s: warning: top image not truncated: %s\n", prog, e.msg);
		return;
	}
	if (img->end > end)
		end = img->end;
	prl_image_close(img, &e);
	if ((uint64_t)st->st_size <= (end << PRL_SECTOR_SHIFT))
		return;
	if (ftruncate(fd, (off_t)(end << PRL_SECTOR_SHIFT)) || fsync(fd))
		fprintf(stderr, "%s: warning: cannot truncate the top image: %s\n",
			prog, strerror(errno));
}

/* Remove the top, truncate its file, then the layers below, top-down. */
static int take_down(struct chain *c, struct prl_err *err)
{
	struct dmdev *top = &c->dm[0];
	bool rw = top->parallels && !top->ro;
	uint64_t end = 0;
	struct dmdev now;
	struct stat st;
	bool end_ok = false;
	int tfd = -1, r;
	size_t i;
	struct { dev_t dev, fdev; ino_t ino; bool ok; char *file; } *loops;

	loops = prl_xcalloc(c->n + 1, sizeof(*loops));
	for (i = 0; i < c->n; i++) {
		char back[PATH_MAX];

		loops[i].dev = c->dm[i].image;
		loops[i].ok = c->dm[i].image &&
			      !loop_ident(c->dm[i].image, &loops[i].fdev, &loops[i].ino);
		/* A layer below may still be pre-extended (an interrupted snapshot). */
		if (i && loops[i].ok && c->dm[i].parallels &&
		    !loop_backing(c->dm[i].image, back, sizeof(back)))
			loops[i].file = prl_xstrdup(back);
	}
	loops[c->n].dev = c->raw;
	loops[c->n].ok = c->raw && !loop_ident(c->raw, &loops[c->n].fdev,
					       &loops[c->n].ino);
	if (rw) {
		tfd = open_top_file(top->image, &st);
		/* The target commits and closes in_use at postsuspend. */
		r = dm_simple(DM_DEVICE_SUSPEND, top->name, err);
		if (r)
			goto out;
		fault_point("deactivate:suspend");
		if (!dm_query(top->name, 0, &now, err) && now.have_status) {
			end = now.end;
			end_ok = !strcmp(now.state, "rw");
			if (!end_ok)
				fprintf(stderr, "%s: warning: %s is in state %s: its file is not truncated; run prldisk check --repair\n",
					prog, top->name, now.state);
		}
	}
	r = dm_simple(DM_DEVICE_REMOVE, top->name, err);
	if (r) {
		struct prl_err e2;

		if (rw)
			dm_simple(DM_DEVICE_RESUME, top->name, &e2);
		goto out;
	}
	fault_point("deactivate:top");
	if (tfd >= 0 && end_ok)
		cut_top(tfd, &st, end);
	fault_point("deactivate:truncate");
	for (i = 1; i < c->n && !r; i++)
		r = dm_simple(DM_DEVICE_REMOVE, c->dm[i].name, err);
	for (i = 0; i <= c->n; i++)
		if (loops[i].ok)
			loop_settle(loops[i].dev, loops[i].fdev, loops[i].ino);
	for (i = 1; i < c->n && !r; i++)
		if (loops[i].file)
			cut_tail(loops[i].file);
out:
	if (tfd >= 0)
		close(tfd);
	for (i = 0; i < c->n; i++)
		free(loops[i].file);
	free(loops);
	return r;
}

static int deactivate(const char *name, const struct prl_desc *d,
		      const char *id, int *lock, struct prl_err *err)
{
	struct dmdev top;
	struct chain c = { 0 };
	int r, strays;

	r = dm_query(name, 0, &top, err);
	if (r)
		return r;
	if (top.exists) {
		if (!ours(&top))
			return prl_errf(err, EINVAL,
					"dm device %s is not a parallels disk (its table is %s): not touching it",
					name, top.target[0] ? top.target : "not one target");
		if (top.open_count)
			return prl_errf(err, EBUSY,
					"%s is in use (open %d times: mounted, or under another device): close it first",
					name, top.open_count);
		if (*lock == -1 && top.image)
			*lock = lock_by_file(top.image);
		if (*lock == -2)
			return prl_errf(err, EBUSY, "%s: the disk is locked", name);
		/* A layer an interrupted snapshot-delete left holds ours below. */
		r = remove_strays(name, d, id, &strays, err);
		if (!r)
			r = chain_walk(&top, &c, err);
		if (!r)
			r = take_down(&c, err);
		chain_free(&c);
		if (r)
			return r;
	}
	r = remove_strays(name, d, id, &strays, err);
	if (r)
		return r;
	if (!top.exists && d)
		recover_tail(d);
	if (!top.exists && !strays)
		printf("%s is not active\n", name);
	return 0;
}

/*
 * Why the device @name, which is not disk @d's, is left alone: an error
 * for one prldisk did not make (the user may have meant it), else 0.
 */
static int not_mine(const char *name, const struct prl_desc *d, const char *id,
		    struct prl_err *err)
{
	struct dmdev o;
	int r;

	r = dm_query(name, 0, &o, err);
	if (r || !o.exists)
		return r;
	switch (owner(&o, d, id)) {
	case OWN_NOT_PRLDISK:
		return prl_errf(err, EEXIST,
				"dm device %s was not made by prldisk for %s (its UUID is '%s'): not touching it; prldisk deactivate %s (the name alone) or dmsetup remove %s removes it",
				name, d->path, o.uuid, name, name);
	case OWN_OTHER:
		if (cli.name)
			return prl_errf(err, EEXIST,
					"dm device %s is another disk's, not %s's: not touching it",
					name, d->path);
		fprintf(stderr, "%s: note: dm device %s is another disk's; left as it is\n",
			prog, name);
		return 0;
	}
	return 0;
}

/*
 * deactivate XML: the disk's own devices, found by identity (or --name,
 * if it is one of them); none of another disk's.
 */
static int deactivate_disk(const struct prl_desc *d, int *lock,
			   struct prl_err *err)
{
	char id[DISK_ID_LEN + 1], *cand[2], **tops;
	size_t i, n;
	int r, strays;

	disk_id(d, id);
	if (cli.name) {
		r = not_mine(cli.name, d, id, err);
		return r ? r : deactivate(cli.name, d, id, lock, err);
	}
	r = owned_tops(d, id, &tops, &n, err);
	for (i = 0; i < n && !r; i++)
		r = deactivate(tops[i], d, id, lock, err);
	for (i = 0; i < n; i++)
		free(tops[i]);
	free(tops);
	if (r || n)
		return r;
	/* Not active: say why a device of its name is not it; leftovers. */
	cand[0] = default_name(d);
	cand[1] = legacy_name(d);
	for (i = 0; i < 2 && !r; i++) {
		r = not_mine(cand[i], d, id, err);
		if (!r && (!i || strcmp(cand[0], cand[1])))
			r = remove_strays(cand[i], d, id, &strays, err);
	}
	free(cand[0]);
	free(cand[1]);
	if (r)
		return r;
	recover_tail(d);
	printf("%s is not active\n", d->path);
	return 0;
}

int cmd_deactivate(int argc, char **argv)
{
	struct prl_desc *d = NULL;
	struct prl_err err;
	char *xml;
	int rc, lock = -1;

	if (argc != 1)
		return die_usage("deactivate takes one NAME or XML");
	if (cli.name && !prl_valid_name(cli.name))
		return die_usage("--name '%s' is not a valid device name", cli.name);
	xml = descriptor_path(argv[0]);
	if (xml) {
		/* Locked before it is read, as for activate. */
		lock = prl_lock_path(xml, &err);
		if (lock < 0 && lock != -EROFS) {
			free(xml);
			return fail_err(&err);
		}
		rc = load_desc(xml, &d);
		free(xml);
		if (rc) {
			prl_disk_unlock(lock);
			return rc;
		}
		if (lock == -EROFS)
			lock = -1;	/* a read-only folder: nothing to lock */
	} else if (!prl_valid_name(argv[0])) {
		return die_usage("'%s' is neither a device name nor a DiskDescriptor.xml",
				 argv[0]);
	}
	dm_setup();
	if (d)
		rc = deactivate_disk(d, &lock, &err) ? fail_err(&err) : EX_OK;
	else
		rc = deactivate(argv[0], NULL, NULL, &lock, &err) ?
		     fail_err(&err) : EX_OK;
	prl_disk_unlock(lock);
	prl_desc_free(d);
	dm_lib_release();
	return rc;
}

/* ---- status and list ---------------------------------------------------- */

/* What serves a layer: its device node, and the file behind a loop. */
struct devinfo {
	char node[48];
	bool loop, dio;
	char file[PATH_MAX];
};

static void describe(dev_t dev, struct devinfo *o)
{
	char kn[32], v[8];

	memset(o, 0, sizeof(*o));
	blk_kname(dev, kn, sizeof(kn));
	snprintf(o->node, sizeof(o->node), "/dev/%s", kn[0] ? kn : "?");
	if (!loop_backing(dev, o->file, sizeof(o->file))) {
		o->loop = true;
		o->dio = !blk_attr(dev, "loop/dio", v, sizeof(v)) && v[0] == '1';
	}
}

/* GUIDs by file, from the descriptor next to the top image, if any. */
struct desc_map {
	struct prl_desc *d;
};

static void desc_map_load(struct desc_map *m, const char *file)
{
	char *copy = prl_xstrdup(file), *xml;
	struct prl_err e;

	m->d = NULL;
	xml = prl_xasprintf("%s/%s", dirname(copy), PRL_DESC_NAME);
	if (!access(xml, F_OK))
		prl_desc_load(xml, PRL_DESC_ALLOW_EXTERNAL, &m->d, &e);
	free(xml);
	free(copy);
}

static const char *desc_map_guid(const struct desc_map *m, const char *file)
{
	struct stat a, b;
	size_t i;

	if (!m->d || prl_folder_lstat(file, &a))
		return NULL;
	for (i = 0; i < m->d->nr_images; i++)
		if (!prl_folder_lstat(m->d->images[i].path, &b) &&
		    a.st_dev == b.st_dev &&
		    a.st_ino == b.st_ino)
			return m->d->images[i].guid;
	return NULL;
}

static json_object *jstr(const char *s)
{
	return s && *s ? json_object_new_string(s) : json_object_new_null();
}

static void jadd(json_object *o, const char *k, json_object *v)
{
	json_object_object_add(o, k, v);
}

static const char *devno(dev_t d, char *buf, size_t len)
{
	snprintf(buf, len, "%u:%u", major(d), minor(d));
	return buf;
}

static json_object *layer_json(const struct dmdev *o, const struct desc_map *m)
{
	json_object *j = json_object_new_object();
	char g[PRL_GUID_LEN + 1], b[32], node[DM_NAME_LEN + 16];
	const char *mg;
	struct devinfo di;

	describe(o->image, &di);
	guid_of(o, g);
	mg = di.loop ? desc_map_guid(m, di.file) : NULL;
	snprintf(node, sizeof(node), "/dev/mapper/%s", o->name);
	jadd(j, "name", jstr(o->name));
	jadd(j, "device", jstr(node));
	jadd(j, "devno", jstr(devno(o->dev, b, sizeof(b))));
	jadd(j, "type", jstr(o->linear ? "plain" : "expandable"));
	jadd(j, "target", jstr(o->target));
	jadd(j, "guid", jstr(mg ? mg : g));
	jadd(j, "read_only", json_object_new_boolean(o->ro));
	jadd(j, "sectors", json_object_new_uint64(o->len));
	jadd(j, "image_device", jstr(di.node));
	jadd(j, "image_file", jstr(di.loop ? di.file : NULL));
	jadd(j, "direct_io", di.loop ? json_object_new_boolean(di.dio) :
	     json_object_new_null());
	if (o->have_status) {
		jadd(j, "allocated_clusters", json_object_new_uint64(o->alloc));
		jadd(j, "total_clusters", json_object_new_uint64(o->total));
		jadd(j, "cluster_size", json_object_new_uint64(o->cluster_sectors << 9));
		jadd(j, "image_end_sector", json_object_new_uint64(o->end));
		jadd(j, "state", jstr(o->state));
		jadd(j, "nospc_writes", json_object_new_uint64(o->nospc));
		jadd(j, "cbt", strcmp(o->cbt, "-") ? jstr(o->cbt) : json_object_new_null());
		jadd(j, "error", strcmp(o->error, "-") ? jstr(o->error) : json_object_new_null());
	} else {
		jadd(j, "state", jstr(o->ro ? "ro" : "rw"));
	}
	jadd(j, "suspended", json_object_new_boolean(o->suspended));
	return j;
}

static json_object *raw_json(dev_t raw, const struct desc_map *m)
{
	json_object *j = json_object_new_object();
	struct devinfo di;
	const char *g;
	char b[32];

	describe(raw, &di);
	g = di.loop ? desc_map_guid(m, di.file) : NULL;
	jadd(j, "name", json_object_new_null());
	jadd(j, "device", jstr(di.node));
	jadd(j, "devno", jstr(devno(raw, b, sizeof(b))));
	jadd(j, "type", jstr("plain"));
	jadd(j, "target", json_object_new_null());
	jadd(j, "guid", jstr(g));
	jadd(j, "read_only", json_object_new_boolean(blk_ro(raw)));
	jadd(j, "image_device", jstr(di.node));
	jadd(j, "image_file", jstr(di.loop ? di.file : NULL));
	jadd(j, "direct_io", di.loop ? json_object_new_boolean(di.dio) :
	     json_object_new_null());
	jadd(j, "state", jstr("ro"));
	return j;
}

/* A top whose name is <disk>-<guid> while <disk> is not active. */
static bool leftover(const struct dmdev *o, char **names, size_t nr)
{
	size_t n = strlen(o->name), i;

	if (n <= GUID_BARE_LEN + 1 || o->name[n - GUID_BARE_LEN - 1] != '-' ||
	    !is_bare_guid(o->name + n - GUID_BARE_LEN))
		return false;
	for (i = 0; i < nr; i++)
		if (strlen(names[i]) == n - GUID_BARE_LEN - 1 &&
		    !strncmp(names[i], o->name, n - GUID_BARE_LEN - 1))
			return false;
	return true;
}

static json_object *chain_json(const struct chain *c, bool left)
{
	json_object *j = json_object_new_object(), *arr = json_object_new_array();
	struct devinfo di;
	struct desc_map m = { NULL };
	char node[DM_NAME_LEN + 16], b[32];
	size_t i;

	describe(c->dm[0].image, &di);
	if (di.loop)
		desc_map_load(&m, di.file);
	for (i = 0; i < c->n; i++)
		json_object_array_add(arr, layer_json(&c->dm[i], &m));
	if (c->raw)
		json_object_array_add(arr, raw_json(c->raw, &m));
	snprintf(node, sizeof(node), "/dev/mapper/%s", c->dm[0].name);
	jadd(j, "name", jstr(c->dm[0].name));
	jadd(j, "device", jstr(node));
	jadd(j, "devno", jstr(devno(c->dm[0].dev, b, sizeof(b))));
	jadd(j, "read_only", json_object_new_boolean(c->dm[0].ro));
	jadd(j, "size", json_object_new_uint64(c->dm[0].len << 9));
	jadd(j, "state", jstr(c->dm[0].have_status ? c->dm[0].state :
			      c->dm[0].ro ? "ro" : "rw"));
	jadd(j, "descriptor", jstr(m.d ? m.d->path : NULL));
	jadd(j, "open_count", json_object_new_int(c->dm[0].open_count));
	jadd(j, "leftover", json_object_new_boolean(left));
	jadd(j, "layers", arr);
	prl_desc_free(m.d);
	return j;
}

static json_object *status_json(const char *name, struct prl_err *err)
{
	struct chain c = { 0 };
	struct dmdev top;
	json_object *o = NULL;

	if (dm_query(name, 0, &top, err))
		return NULL;
	if (!top.exists || !ours(&top)) {
		prl_errf(err, ENOENT, top.exists ?
			 "dm device %s is not a parallels disk" : "%s is not active",
			 name);
		return NULL;
	}
	if (!chain_walk(&top, &c, err))
		o = chain_json(&c, false);
	chain_free(&c);
	return o;
}

static void hbytes(uint64_t b, char *buf, size_t len)
{
	static const char *const u[] = { "B", "KiB", "MiB", "GiB", "TiB" };
	unsigned int i = 0;

	while (b >= 1024 && !(b % 1024) && i < 4) {
		b /= 1024;
		i++;
	}
	snprintf(buf, len, "%" PRIu64 " %s", b, u[i]);
}

static const char *js(json_object *o, const char *k)
{
	json_object *v;

	if (!json_object_object_get_ex(o, k, &v) || json_object_is_type(v, json_type_null))
		return NULL;
	return json_object_get_string(v);
}

static uint64_t ju(json_object *o, const char *k)
{
	json_object *v;

	return json_object_object_get_ex(o, k, &v) ? json_object_get_uint64(v) : 0;
}

/* The text form of status, from the JSON object (one source of truth). */
static void status_text(json_object *o)
{
	json_object *arr, *l;
	char a[32];
	size_t i, n;

	json_object_object_get_ex(o, "layers", &arr);
	n = json_object_array_length(arr);
	hbytes(ju(o, "size"), a, sizeof(a));
	printf("%s: %s (%s), %s, %s, %zu layer%s\n", js(o, "name"), js(o, "device"),
	       js(o, "devno"), a, js(o, "state"), n, n == 1 ? "" : "s");
	if (js(o, "descriptor"))
		printf("  descriptor: %s\n", js(o, "descriptor"));
	for (i = 0; i < n; i++) {
		const char *g, *f;

		l = json_object_array_get_idx(arr, i);
		g = js(l, "guid");
		f = js(l, "image_file");
		printf("  %zu %s %s %s\n", i, i == 0 ? "top " : i == n - 1 ? "root" : "    ",
		       js(l, "name") ? js(l, "name") : "(raw root)", g ? g : "");
		printf("      image:  %s%s%s%s\n", f ? f : js(l, "image_device"),
		       f ? " on " : "", f ? js(l, "image_device") : "",
		       f ? (json_object_get_boolean(json_object_object_get(l, "direct_io")) ?
			    " (direct I/O)" : " (buffered)") : "");
		if (js(l, "target") && !strcmp(js(l, "target"), "parallels")) {
			hbytes(ju(l, "cluster_size"), a, sizeof(a));
			printf("      state:  %s, %" PRIu64 "/%" PRIu64
			       " clusters of %s allocated, image end sector %" PRIu64 "%s\n",
			       js(l, "state"), ju(l, "allocated_clusters"),
			       ju(l, "total_clusters"), a, ju(l, "image_end_sector"),
			       ju(l, "nospc_writes") ? ", writes refused for want of space" : "");
			if (js(l, "error"))
				printf("      error:  %s failed (see the kernel log); writes fail until the table is reloaded\n",
				       js(l, "error"));
			if (js(l, "cbt"))
				printf("      cbt:    %s granules changed\n", js(l, "cbt"));
		} else {
			printf("      state:  %s, raw\n", js(l, "state"));
		}
	}
}

/* status XML: the disk's own device, found by identity. */
static json_object *status_disk(const struct prl_desc *d, struct prl_err *err)
{
	char id[DISK_ID_LEN + 1], **tops;
	json_object *o = NULL;
	size_t i, n;

	disk_id(d, id);
	if (owned_tops(d, id, &tops, &n, err))
		return NULL;
	if (!n)
		prl_errf(err, ENOENT, "%s is not active", d->path);
	else if (n > 1)
		prl_errf(err, EEXIST,
			 "%s is active as %zu devices (%s, %s%s): prldisk status NAME shows one",
			 d->path, n, tops[0], tops[1], n > 2 ? ", ..." : "");
	else
		o = status_json(tops[0], err);
	for (i = 0; i < n; i++)
		free(tops[i]);
	free(tops);
	return o;
}

int cmd_status(int argc, char **argv)
{
	struct prl_desc *d = NULL;
	struct prl_err err;
	json_object *o;
	char *xml;
	int rc;

	if (argc != 1)
		return die_usage("status takes one NAME or XML");
	xml = descriptor_path(argv[0]);
	/* A folder without a descriptor may still be a device name. */
	if (xml && access(xml, F_OK) && prl_valid_name(argv[0])) {
		free(xml);
		xml = NULL;
	}
	if (!xml && !prl_valid_name(argv[0]))
		return die_usage("'%s' is neither a device name nor a DiskDescriptor.xml",
				 argv[0]);
	if (xml) {
		rc = load_desc(xml, &d);
		free(xml);
		if (rc)
			return rc;
	}
	dm_setup();
	o = d ? status_disk(d, &err) : status_json(argv[0], &err);
	dm_lib_release();
	prl_desc_free(d);
	if (!o)
		return fail_err(&err);
	if (cli.json) {
		json_print(o);
	} else {
		status_text(o);
		json_object_put(o);
	}
	return EX_OK;
}

int cmd_list(int argc, char **argv)
{
	json_object *all = json_object_new_array(), *res;
	struct prl_err err;
	struct dmdev *v;
	char **names;
	size_t nr, i, k;
	int rc = EX_OK;

	(void)argv;
	if (argc)
		return die_usage("list takes no arguments");
	dm_setup();
	if (dm_names(&names, &nr, &err)) {
		json_object_put(all);
		dm_lib_release();
		return fail_err(&err);
	}
	v = prl_xcalloc(nr ? nr : 1, sizeof(*v));
	for (i = 0; i < nr; i++)
		if (dm_query(names[i], 0, &v[i], &err))
			v[i].exists = false;
	/* A disk is an active device of ours that no other one of ours is on. */
	for (i = 0; i < nr; i++) {
		struct chain c = { 0 };
		bool below = false;

		if (!v[i].exists || !ours(&v[i]))
			continue;
		for (k = 0; k < nr && !below; k++)
			below = v[k].exists && v[k].parallels && v[k].lower == v[i].dev;
		if (below)
			continue;
		if (!chain_walk(&v[i], &c, &err))
			json_object_array_add(all, chain_json(&c, leftover(&v[i], names, nr)));
		chain_free(&c);
	}
	free(v);
	free_names(names, nr);
	dm_lib_release();
	if (cli.json) {
		res = json_object_new_object();
		jadd(res, "disks", all);
		json_print(res);
		return rc;
	}
	if (!json_object_array_length(all))
		printf("no active disks\n");
	else
		printf("%-24s %-6s %-3s %-11s %s\n", "NAME", "MODE", "LAY", "STATE", "TOP IMAGE");
	for (i = 0; i < json_object_array_length(all); i++) {
		json_object *o = json_object_array_get_idx(all, i), *arr, *t;

		json_object_object_get_ex(o, "layers", &arr);
		t = json_object_array_get_idx(arr, 0);
		printf("%-24s %-6s %-3zu %-11s %s%s\n", js(o, "name"),
		       json_object_get_boolean(json_object_object_get(o, "read_only")) ?
		       "ro" : "rw", json_object_array_length(arr), js(o, "state"),
		       js(t, "image_file") ? js(t, "image_file") : js(t, "image_device"),
		       json_object_get_boolean(json_object_object_get(o, "leftover")) ?
		       "  (left from an interrupted activation: prldisk deactivate it)" : "");
	}
	json_object_put(all);
	return rc;
}
