// SPDX-License-Identifier: GPL-2.0
/*
 * prldisk snapshot of an active disk: the new top is put under the live
 * /dev/mapper/<name> by reloading its table, so whoever has the device
 * open (a mounted file system) keeps it and sees no error; the old top
 * goes on as the read-only layer <name>-<old guid> below the new one.
 * Only a disk that prldisk activated read-write is snapshotted this way;
 * a read-only activation, or images attached by something else, are
 * refused.  Documentation/prldisk.rst, "Online snapshots".
 *
 * In this order, under the disk's lock, each step safe to crash after
 * (prldisk deactivate then activate recovers the disk, see below):
 *   a. create the new delta (the disk's virtual size), fsync it and its
 *      folder; pre-extend it (sparse), attach a rw direct-I/O loop to it;
 *   b. suspend <name> (flush, file systems frozen): the target commits
 *      the old top's BAT (and dirty bitmap) and closes its in_use flag;
 *      the bitmap is copied into the new delta, which goes on tracking;
 *   c. create the read-only layer <name>-<old guid> over the old top's
 *      loop device (from <name>'s table), on the old top's lower device;
 *   d. load <name>'s inactive table: parallels <new loop> <the layer>,
 *      with the old table's opt args;
 *   e. save the descriptor (new image, Shot with the old top as parent,
 *      TopGUID the new one): before any write can reach the new image, so
 *      no write ever lands in an image the descriptor does not call top;
 *   f. resume <name>: the old rw table goes, the new one is live;
 *   g. cut the old top file to its image end (it was pre-extended as a
 *      top; nothing writes it now) and let go of the new loop device (the
 *      table holds it).
 * A failure before f undoes a-e: the inactive table cleared, the layer
 * removed, <name> resumed on its old table, the new loop detached, the new
 * file removed, the descriptor put back.  A crash leaves at worst a
 * suspended <name>: deactivate removes it, the layer (a leftover) and, by
 * autoclear, the loop devices; before e the descriptor still names the
 * old top (the new file is an unused orphan), from e on the new one,
 * which is empty, over the old top with every write that was flushed.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/loop.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <time.h>
#include <unistd.h>

#include "activate.h"
#include "bitmap.h"
#include "cli.h"
#include "folder.h"

/*
 * The rw prldisk table whose image is a loop over @path, in @top: 1 found,
 * 0 none, -errno (message set) for one that cannot be snapshotted online.
 */
static int find_top(const char *path, struct dmdev *top, struct prl_err *err)
{
	struct stat st;
	char **names;
	size_t i, k, nr;
	struct dmdev *v;
	int found = -1, r;

	if (prl_folder_lstat(path, &st))
		return prl_errf(err, errno, "%s: %s", path, strerror(errno));
	if (!S_ISREG(st.st_mode))
		return prl_errf(err, EOPNOTSUPP,
				"the top image %s is not a file: a disk is changed online only with a file top; deactivate the disk and change it offline",
				path);
	r = dm_names(&names, &nr, err);
	if (r)
		return r;
	v = prl_xcalloc(nr ? nr : 1, sizeof(*v));
	for (i = 0; i < nr; i++) {
		dev_t fdev;
		ino_t ino;

		if (dm_query(names[i], 0, &v[i], err))
			v[i].exists = false;
		if (!v[i].exists || !ours(&v[i]) || !v[i].image ||
		    (!v[i].parallels && !v[i].linear) ||
		    loop_ident(v[i].image, &fdev, &ino) ||
		    fdev != st.st_dev || ino != st.st_ino)
			continue;
		if (found < 0 || !v[i].ro)
			found = (int)i;
	}
	r = 0;
	if (found >= 0) {
		struct dmdev *o = &v[found];

		for (k = 0; k < nr; k++)
			if (v[k].exists && v[k].parallels && v[k].lower == o->dev)
				break;
		if (o->linear)
			r = prl_errf(err, EOPNOTSUPP,
				     "%s is active as %s with a Plain (raw) top: it is changed offline: prldisk deactivate %s first",
				     path, o->name, o->name);
		else if (o->ro)
			r = prl_errf(err, EROFS,
				     "the disk is active read-only as %s: it is changed online only when active read-write (prldisk deactivate %s, then change it offline or activate it read-write)",
				     o->name, o->name);
		else if (k < nr)
			r = prl_errf(err, EBUSY,
				     "%s, the top of the disk, is under dm device %s: not a prldisk activation that can be changed online",
				     o->name, v[k].name);
		else if (o->suspended)
			r = prl_errf(err, EBUSY,
				     "%s is suspended (left so by an interrupted snapshot or deactivate?): prldisk deactivate %s, then activate it again",
				     o->name, o->name);
		else if (!o->have_status || strcmp(o->state, "rw"))
			r = prl_errf(err, EIO,
				     "%s is in state %s: not changed online; prldisk deactivate %s, then prldisk check --repair",
				     o->name, o->have_status ? o->state : "unknown", o->name);
		else if (strlen(o->opts) + 1 >= sizeof(o->opts))
			r = prl_errf(err, E2BIG, "%s: its table has too many options to reload",
				     o->name);
		else {
			*top = *o;
			r = 1;
		}
	}
	free(v);
	free_names(names, nr);
	return r;
}

int prl_active_rw(const struct prl_desc *d, struct prl_err *err)
{
	const struct prl_desc_image *im = prl_desc_image(d, d->top);
	struct attach at[MAX_ATTACH];
	struct dmdev top;
	int r;

	if (!im)
		return prl_errf(err, EINVAL, "%s: no top image", d->path);
	if (im->type == PRL_IMAGE_PLAIN)
		return prl_errf(err, EOPNOTSUPP,
				"%s is active and its top is Plain (raw): prldisk deactivate it, then change it offline",
				d->path);
	dm_setup();
	r = find_top(im->path, &top, err);
	if (r <= 0)
		return r;
	/* The loop of the top may be ours alone: nobody else writes it. */
	memset(at, 0, sizeof(at));
	if (attachments(im->path, at, MAX_ATTACH) != 1)
		return prl_errf(err, EBUSY,
				"%s is attached more than once (%s, %s): not changed online",
				im->path, at[0].dev, at[1].dev);
	return 1;
}

/* Load @params into @name's inactive slot (step d). */
static int dm_reload(const char *name, uint64_t len, const char *params,
		     struct prl_err *err)
{
	struct dm_task *dmt = dm_task_named(DM_DEVICE_RELOAD, name);
	char why[512];
	int kfd, r = 0, e;

	if (!dmt || !dm_task_add_target(dmt, 0, len, "parallels", params)) {
		r = dm_err(err, dmt, "prepare", name);
		goto out;
	}
	kfd = kmsg_open();
	if (!dm_task_run(dmt)) {
		e = dm_task_get_errno(dmt);
		kmsg_reason(kfd, why, sizeof(why));
		r = prl_errf(err, e ? e : EIO, "cannot load the new table of %s (parallels %s): %s",
			     name, params, why[0] ? why : e ? strerror(e) : "device-mapper failed");
	} else if (kfd >= 0) {
		close(kfd);
	}
out:
	if (dmt)
		dm_task_destroy(dmt);
	return r;
}

/* Drop @name's inactive table (undo of step d). */
static int dm_clear(const char *name, struct prl_err *err)
{
	struct dm_task *dmt = dm_task_named(DM_DEVICE_CLEAR, name);
	int r = 0;

	if (!dmt || !dm_task_run(dmt))
		r = dm_err(err, dmt, "clear the inactive table of", name);
	if (dmt)
		dm_task_destroy(dmt);
	return r;
}

/* Step a's pre-extension: the room the new top may grow to. */
static int extend_new(const char *path, struct prl_err *err)
{
	struct prl_image *img;
	uint64_t bytes;
	int r;

	r = prl_image_open(path, 0, &img, err);
	if (r)
		return r;
	bytes = max_sectors(img) << PRL_SECTOR_SHIFT;
	prl_image_close(img, &(struct prl_err){ "" });
	if (prl_folder_truncate(path, (off_t)bytes))
		return prl_errf(err, errno,
				"cannot extend %s to %" PRIu64 " bytes (the room it may grow to): %s",
				path, bytes, strerror(errno));
	return 0;
}

int prl_snapshot_online(struct prl_desc *d, const char *file, const char *snap,
			const char *newtop, struct prl_err *err)
{
	const struct prl_desc_image *old = prl_desc_image(d, snap);
	char lname[DM_NAME_LEN], uuid[DM_UUID_LEN], params[384], lower[32] = "-";
	char ss[64];
	unsigned int nss;
	char tid[DISK_ID_LEN + 1];
	char *path = prl_xasprintf("%s/%s", d->dir, file), *orig;
	bool suspended = false, layer = false, loaded = false, saved = false;
	struct loopdev nl = { .fd = -1 };
	struct dmdev top, now;
	struct prl_err e2;
	struct stat st;
	size_t olen = 0;
	dev_t ldev;
	int r, tfd;

	/* The whole descriptor, to put it back on failure. */
	orig = prl_folder_read(d->path, (16 << 20) - 1, &olen);
	if (!orig) {
		r = prl_errf(err, errno ? errno : EIO, "cannot read %s", d->path);
		goto out_free;
	}
	r = old ? find_top(old->path, &top, err) :
		  prl_errf(err, EINVAL, "%s: no image %s", d->path, snap);
	if (!r)
		r = prl_errf(err, ENOENT, "%s is no longer active", d->path);
	if (r < 0)
		goto out_free;
	layer_name(lname, sizeof(lname), top.name, snap);
	if (!dm_query(lname, 0, &now, &e2) && now.exists) {
		r = prl_errf(err, EEXIST,
			     "dm device %s exists already (left from an interrupted activation?): prldisk deactivate %s and activate it again",
			     lname, top.name);
		goto out_free;
	}

	/* a. The new delta, durable, pre-extended, on its own loop device. */
	r = prl_create_delta(d, path, err);
	if (r)
		goto out_free;
	r = extend_new(path, err);
	if (!r)
		r = loop_attach(path, false, &nl, err);
	if (r)
		goto undo;
	fault_point("snapshot:file");

	/* b. Flush suspend: the old top is committed and closed. */
	r = dm_simple(DM_DEVICE_SUSPEND, top.name, err);
	if (r)
		goto undo;
	suspended = true;
	fault_point("snapshot:suspend");
	if (dm_query(top.name, 0, &now, err) || !now.have_status ||
	    strcmp(now.state, "rw")) {
		r = prl_errf(err, EIO,
			     "%s could not commit its image at suspend (state %s): no snapshot; see the kernel log",
			     top.name, now.have_status ? now.state : "unknown");
		goto undo;
	}
	/* b2. The bitmap the suspend stored in the old top goes on in the new. */
	r = prl_bitmap_carry(old, path, err);
	if (r < 0)
		goto undo;
	fault_point("snapshot:bitmap");

	/* c. The old top, read-only, on what was below it. */
	if (top.lower)
		snprintf(lower, sizeof(lower), "%u:%u", major(top.lower), minor(top.lower));
	/* With the top's sector sizes: the layer agrees with the device. */
	nss = sector_args(0, 0, top.opts, ss, sizeof(ss));
	if (nss)
		snprintf(params, sizeof(params), "%u:%u %s %u %s", major(top.image),
			 minor(top.image), lower, nss, ss);
	else
		snprintf(params, sizeof(params), "%u:%u %s", major(top.image),
			 minor(top.image), lower);
	uuid_disk_id(top.uuid, tid);	/* the layer is the same disk's */
	dm_uuid(uuid, sizeof(uuid), snap, tid, top.name);
	/* The top keeps its UUID; when it carries this GUID, the layer has none. */
	r = dm_create(lname, strcmp(uuid, top.uuid) ? uuid : NULL, top.len,
		      "parallels", params, true, true, &ldev, err);
	if (r)
		goto undo;
	layer = true;
	fault_point("snapshot:layer");

	/* d. The new top over it, with the old table's options. */
	snprintf(params, sizeof(params), "%u:%u %u:%u%s%s", major(nl.dev),
		 minor(nl.dev), major(ldev), minor(ldev), top.opts[0] ? " " : "",
		 top.opts);
	r = dm_reload(top.name, top.len, params, err);
	if (r)
		goto undo;
	loaded = true;
	fault_point("snapshot:load");

	/* e. The descriptor names the new top before it can be written. */
	r = prl_desc_add(d, newtop, PRL_IMAGE_COMPRESSED, file, snap, err);
	if (!r)
		r = prl_desc_set_top(d, newtop, err);
	if (!r)
		r = prl_desc_save(d, err);
	if (r)
		goto undo;
	saved = true;
	fault_point("snapshot:descriptor");

	/* f. Live. */
	r = dm_simple(DM_DEVICE_RESUME, top.name, err);
	if (r)
		goto undo;
	fault_point("snapshot:resume");

	/* g. The old top is read-only now: cut its pre-extension. */
	tfd = open_top_file(top.image, &st);
	if (tfd >= 0) {
		if (!dm_query(lname, 0, &now, &e2) && now.have_status)
			cut_top(tfd, &st, now.end);
		close(tfd);
	}
	fault_point("snapshot:truncate");
	loop_release(&nl);
	goto out_free;

undo:
	if (loaded && !dm_clear(top.name, &e2))
		loaded = false;
	if (layer && !loaded && !dm_simple(DM_DEVICE_REMOVE, lname, &e2))
		layer = false;
	if (suspended && !dm_simple(DM_DEVICE_RESUME, top.name, &e2))
		suspended = false;
	loop_release(&nl);
	if (saved && prl_write_file_atomic(d->path, orig, olen, 0644, &e2))
		fprintf(stderr, "%s: %s; the descriptor names %s, which holds no data: prldisk deactivate %s, then switch back\n",
			prog, e2.msg, path, top.name);
	else
		prl_folder_unlink(path);
	if (loaded || layer || suspended)
		fprintf(stderr, "%s: could not undo everything (%s): prldisk deactivate %s, then activate it again\n",
			prog, e2.msg, top.name);
out_free:
	free(orig);
	free(path);
	dm_lib_release();
	return r;
}

/* ---- online resize and snapshot-delete ---------------------------------- */

/*
 * Both change the top's file under its suspended table, then load a new
 * table whose constructor reads the file afresh.  Once the file has been
 * touched the old (suspended) table must never run again: its BAT and its
 * image end in memory are stale, and its first write after a resume would
 * put back its old header.  So an undo after that point reloads the old
 * table line instead of resuming the old instance (put_back()).
 */
struct online {
	struct prl_desc *d;
	struct dmdev top;
	char old_params[384];
	bool suspended, changed, loaded;
};

static void table_params(char *out, size_t len, dev_t image, dev_t lower,
			 const char *opts)
{
	char low[32] = "-";

	if (lower)
		snprintf(low, sizeof(low), "%u:%u", major(lower), minor(lower));
	snprintf(out, len, "%u:%u %s%s%s", major(image), minor(image), low,
		 opts[0] ? " " : "", opts);
}

static bool has_ext(const char *path)
{
	struct prl_image *img;
	bool ext;

	if (prl_image_open(path, PRL_OPEN_IGNORE_IN_USE, &img, &(struct prl_err){ "" }))
		return false;	/* the change itself will say what is wrong */
	ext = img->geom.ext_off != 0;
	prl_image_close(img, &(struct prl_err){ "" });
	return ext;
}

static int online_suspend(struct online *o, const char *what,
			  struct prl_err *err);

/* Find the disk's rw top and suspend it: the target commits and closes. */
static int online_begin(struct online *o, const char *what,
			struct prl_err *err)
{
	const struct prl_desc_image *im = prl_desc_image(o->d, o->d->top);
	int r;

	r = im ? find_top(im->path, &o->top, err) :
		 prl_errf(err, EINVAL, "%s: no top image", o->d->path);
	if (!r)
		r = prl_errf(err, ENOENT, "%s is no longer active", o->d->path);
	if (r < 0)
		return r;
	/* prldisk rewrites clusters it cannot account for in a dirty bitmap. */
	if ((o->top.have_status && strcmp(o->top.cbt, "-")) || has_ext(im->path))
		return prl_errf(err, EOPNOTSUPP,
				"%s has a dirty bitmap, which a %s would leave stale: stop tracking (dmsetup message %s 0 cbt stop), deactivate, then %s offline",
				o->d->path, what, o->top.name, what);
	table_params(o->old_params, sizeof(o->old_params), o->top.image,
		     o->top.lower, o->top.opts);
	return online_suspend(o, what, err);
}

/* Suspend the top: the target commits its BAT and closes the image. */
static int online_suspend(struct online *o, const char *what,
			  struct prl_err *err)
{
	struct dmdev now;
	int r;

	r = dm_simple(DM_DEVICE_SUSPEND, o->top.name, err);
	if (r)
		return r;
	o->suspended = true;
	if (dm_query(o->top.name, 0, &now, err) || !now.have_status ||
	    strcmp(now.state, "rw"))
		return prl_errf(err, EIO,
				"%s could not commit its image at suspend (state %s): no %s; see the kernel log",
				o->top.name, now.have_status ? now.state : "unknown", what);
	return 0;
}

/* Undo what online_begin() and the caller did, as far as it can be. */
static void online_undo(struct online *o)
{
	struct prl_err e2 = { "" };
	bool stuck = false;

	if (o->loaded && dm_clear(o->top.name, &e2))
		stuck = true;
	/* A fresh table over the file as it is now: see above. */
	if (!stuck && o->changed &&
	    dm_reload(o->top.name, o->top.len, o->old_params, &e2))
		stuck = true;
	if (!stuck && o->suspended && dm_simple(DM_DEVICE_RESUME, o->top.name, &e2))
		stuck = true;
	if (stuck)
		fprintf(stderr, "%s: %s is left suspended (%s): prldisk deactivate %s, prldisk check --repair %s, then activate it again\n",
			prog, o->top.name, e2.msg, o->top.name, o->d->path);
}

/* Open the top file for a change; from here on the old table is stale. */
static int open_top_rw(struct online *o, const char *path,
		       struct prl_image **img, struct prl_err *err)
{
	o->changed = true;
	return prl_image_open(path, PRL_OPEN_RW, img, err);
}

static int close_image(struct prl_image *img, int r, struct prl_err *err)
{
	struct prl_err e2;

	if (r) {
		prl_image_close(img, &e2);
		return r;
	}
	return prl_image_close(img, err);
}

/* Make the top's loop device cover @bytes of its file (grown BAT). */
static int extend_loop(dev_t loop, const char *path, uint64_t bytes,
		       struct prl_err *err)
{
	struct stat st;
	int fd, r = 0;

	if (prl_folder_lstat(path, &st))
		return prl_errf(err, errno, "%s: %s", path, strerror(errno));
	if ((uint64_t)st.st_size >= bytes)
		return 0;
	if (prl_folder_truncate(path, (off_t)bytes))
		return prl_errf(err, errno, "cannot extend %s to %" PRIu64 " bytes: %s",
				path, bytes, strerror(errno));
	fd = open_dev(loop, O_RDONLY);
	if (fd < 0 || ioctl(fd, LOOP_SET_CAPACITY, 0))
		r = prl_errf(err, errno, "cannot resize the loop device %u:%u of %s: %s",
			     major(loop), minor(loop), path, strerror(errno));
	if (fd >= 0)
		close(fd);
	return r;
}

int prl_resize_online(struct prl_desc *d, uint64_t size, struct prl_err *err)
{
	const char *path = prl_desc_image(d, d->top)->path;
	struct online o = { .d = d };
	struct prl_image *img;
	uint64_t room;
	int r;

	r = online_begin(&o, "resize", err);
	if (r)
		goto undo;
	fault_point("resize:suspend");
	/* The top's BAT grows (moving the clusters in its way), durably. */
	r = open_top_rw(&o, path, &img, err);
	if (r)
		goto undo;
	r = prl_image_grow(img, size, err);
	room = max_sectors(img) << PRL_SECTOR_SHIFT;
	r = close_image(img, r, err);
	if (r)
		goto undo;
	fault_point("resize:grow");
	r = extend_loop(o.top.image, path, room, err);
	if (r)
		goto undo;
	r = dm_reload(o.top.name, size, o.old_params, err);
	if (r)
		goto undo;
	o.loaded = true;
	fault_point("resize:load");
	/* The image is bigger first: a descriptor never promises more. */
	r = prl_desc_set_size(d, size, err);
	if (!r)
		r = prl_desc_save(d, err);
	if (r)
		goto undo;
	fault_point("resize:descriptor");
	r = dm_simple(DM_DEVICE_RESUME, o.top.name, err);
	if (r) {
		fprintf(stderr, "%s: %s: %s\n", prog, o.top.name, err->msg);
		return prl_errf(err, r, "the image and descriptor of %s are resized but %s did not resume: prldisk deactivate %s, then activate it again",
				d->path, o.top.name, o.top.name);
	}
	fault_point("resize:resume");
	dm_lib_release();
	return 0;
undo:
	online_undo(&o);
	dm_lib_release();
	return r;
}

/*
 * The read-only layer right under the top, over @path: its dm device in
 * @layer.  Anything else (another layer, something not ours) is refused.
 */
static int find_parent_layer(const struct online *o, const char *path,
			     struct dmdev *layer, struct prl_err *err)
{
	struct stat st;
	dev_t fdev;
	ino_t ino;

	if (prl_folder_lstat(path, &st))
		return prl_errf(err, errno, "%s: %s", path, strerror(errno));
	if (!o->top.lower || dm_query(NULL, o->top.lower, layer, err) ||
	    !layer->exists || !ours(layer) || !layer->parallels || !layer->ro ||
	    loop_ident(layer->image, &fdev, &ino) || fdev != st.st_dev ||
	    ino != st.st_ino)
		return prl_errf(err, EBUSY,
				"%s is not served by the layer under %s as prldisk activate makes it: deactivate the disk, then delete the snapshot offline",
				path, o->top.name);
	return 0;
}

/* Offline children of the victim (other branches) take what they read from it. */
static int fill_children(struct prl_desc *d, const char *guid,
			 struct prl_image *from, prl_progress_fn progress,
			 void *ctx, struct prl_err *err)
{
	struct attach at[MAX_ATTACH];
	size_t i;
	int r = 0;

	for (i = 0; i < d->nr_shots && !r; i++) {
		const struct prl_desc_image *ci;
		struct prl_image *child;

		if (strcmp(d->shots[i].parent, guid) || !strcmp(d->shots[i].guid, d->top))
			continue;
		ci = prl_desc_image(d, d->shots[i].guid);
		if (attachments(ci->path, at, MAX_ATTACH))
			return prl_errf(err, EBUSY, "%s, a child of the snapshot, is in use (%s)",
					ci->path, at[0].dev);
		r = prl_image_open(ci->path, PRL_OPEN_RW, &child, err);
		if (r)
			return r;
		r = prl_image_fill(child, from, progress, ctx, err);
		r = close_image(child, r, err);
	}
	return r;
}

/* One step of the top's fill: the I/O it freezes is bounded by these. */
#define STEP_BYTES	(64ULL << 20)
#define STEP_MS		500

static uint64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* Fill @img from @from from *@next on for one step: 1 if more is left. */
static int fill_step(struct prl_image *img, struct prl_image *from,
		     uint64_t *next, prl_progress_fn progress, void *ctx,
		     struct prl_err *err)
{
	uint64_t per = STEP_BYTES >> PRL_SECTOR_SHIFT, t0 = now_ms();
	uint64_t n = per / img->geom.cluster_sectors / 8;
	int r;

	/* In slices, so a slow disk also ends the step after STEP_MS. */
	if (!n)
		n = 1;
	do {
		r = prl_image_fill_part(img, from, next, n, progress, ctx, err);
		per -= per > n * img->geom.cluster_sectors ?
		       n * img->geom.cluster_sectors : per;
	} while (r == 1 && per && now_ms() - t0 < STEP_MS);
	return r;
}

int prl_snapshot_delete_online(struct prl_desc *d, const char *guid,
			       prl_progress_fn progress, void *ctx,
			       struct prl_err *err)
{
	const struct prl_desc_shot *ts = prl_desc_shot(d, d->top);
	const struct prl_desc_image *victim = prl_desc_image(d, guid);
	const char *top_path = prl_desc_image(d, d->top)->path;
	struct online o = { .d = d };
	struct prl_image *from = NULL, *img;
	struct attach at[MAX_ATTACH];
	struct dmdev layer;
	char params[384], *vpath;
	uint64_t next = 0, t0;
	bool more;
	int r;

	if (!ts || strcmp(ts->parent, guid))
		return prl_errf(err, EBUSY,
				"the disk is active: only the snapshot right under the top can be deleted online; prldisk deactivate it first");
	if (victim->type == PRL_IMAGE_PLAIN)
		return prl_errf(err, EINVAL, "%s is a Plain root with snapshots on it; it cannot be deleted",
				guid);
	memset(at, 0, sizeof(at));
	if (attachments(victim->path, at, MAX_ATTACH) != 1)
		return prl_errf(err, EBUSY, "%s is attached more than once (%s, %s): not deleted online",
				victim->path, at[0].dev, at[1].dev);
	vpath = prl_xstrdup(victim->path);
	r = prl_image_open(vpath, 0, &from, err);
	if (r)
		goto out;
	r = fill_children(d, guid, from, progress, ctx, err);
	if (r)
		goto out;
	fault_point("delete:children");

	/*
	 * The top is the live writable image: the kernel owns its BAT and
	 * allocates at its end, so nothing may write it while its table
	 * runs.  It takes the snapshot's clusters in short steps instead of
	 * one long suspend: each step suspends (the target commits), fills
	 * at most STEP_BYTES or STEP_MS worth, commits, and resumes on a
	 * fresh table that reads the new BAT; the disk runs between steps.
	 * Every step leaves the top complete over the snapshot, so a crash
	 * anywhere loses nothing, and a rerun goes on from what was filled.
	 */
	r = online_begin(&o, "snapshot-delete", err);
	if (!r)
		r = find_parent_layer(&o, vpath, &layer, err);
	if (r)
		goto undo;
	fault_point("delete:suspend");
	for (;;) {
		t0 = now_ms();
		r = open_top_rw(&o, top_path, &img, err);
		if (r)
			goto undo;
		r = fill_step(img, from, &next, progress, ctx, err);
		more = r == 1;
		r = close_image(img, r < 0 ? r : 0, err);
		if (r)
			goto undo;
		if (!more)
			break;
		/* Run again, on a table that reads the BAT just written. */
		r = dm_reload(o.top.name, o.top.len, o.old_params, err);
		if (r)
			goto undo;
		o.loaded = true;
		r = dm_simple(DM_DEVICE_RESUME, o.top.name, err);
		if (r)
			goto undo;
		o.loaded = o.suspended = o.changed = false;
		fault_point("delete:step");
		/* The disk runs at least as long as the step froze it. */
		t0 = now_ms() - t0;
		nanosleep(&(struct timespec){ .tv_sec = (time_t)(t0 / 1000),
					      .tv_nsec = (long)(t0 % 1000) * 1000000 },
			  NULL);
		r = online_suspend(&o, "snapshot-delete", err);
		if (r)
			goto undo;
	}
	fault_point("delete:fill");
	/* The top now reads alike over the snapshot or over what is below it. */
	table_params(params, sizeof(params), o.top.image, layer.lower, o.top.opts);
	r = dm_reload(o.top.name, o.top.len, params, err);
	if (r)
		goto undo;
	o.loaded = true;
	fault_point("delete:load");
	r = prl_desc_delete(d, guid, err);
	if (!r)
		r = prl_desc_save(d, err);
	if (r)
		goto undo;
	fault_point("delete:descriptor");
	r = dm_simple(DM_DEVICE_RESUME, o.top.name, err);
	if (r) {
		fprintf(stderr, "%s: %s: %s\n", prog, o.top.name, err->msg);
		r = prl_errf(err, r, "snapshot %s is deleted from %s but %s did not resume: prldisk deactivate %s, then activate it again",
			     guid, d->path, o.top.name, o.top.name);
		goto out;
	}
	fault_point("delete:resume");
	/* Nothing reads the layer now: it goes, then its file. */
	if (dm_simple(DM_DEVICE_REMOVE, layer.name, err))
		fprintf(stderr, "%s: warning: %s; prldisk deactivate %s removes it later\n",
			prog, err->msg, o.top.name);
	else if (prl_folder_unlink(vpath))
		fprintf(stderr, "%s: warning: could not remove %s: %s\n", prog, vpath,
			strerror(errno));
	fault_point("delete:remove");
	goto out;
undo:
	online_undo(&o);
out:
	if (from)
		prl_image_close(from, &(struct prl_err){ "" });
	free(vpath);
	dm_lib_release();
	return r;
}
