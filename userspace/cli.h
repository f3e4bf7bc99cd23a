/* SPDX-License-Identifier: GPL-2.0 */
/*
 * What prldisk's commands share: the parsed command line and the helpers
 * for messages, descriptors and JSON output (prldisk.c).
 */
#ifndef PRL_CLI_H
#define PRL_CLI_H

#include <json.h>
#include <stdbool.h>
#include <stdint.h>

#include "descriptor.h"
#include "image.h"

/* Exit codes: 0 ok (check: clean), 1 error, 2 corrupt, 3 leaks only, 64 usage. */
enum { EX_OK = 0, EX_FAIL = 1, EX_CORRUPT = 2, EX_LEAKS = 3, EX_USAGE = 64 };

struct prl_cli {
	bool json;		/* --json */
	bool external;		/* --allow-external-paths */
	bool repair;		/* --repair */
	bool plain;		/* --plain */
	bool read_only;		/* --read-only */
	bool fmt_set;
	enum prl_format_version fmt;	/* --image-format */
	uint64_t size;		/* --size, sectors (0: not given) */
	uint64_t cluster;	/* --cluster-size, sectors */
	const char *cluster_arg;	/* --cluster-size as given */
	const char *name;	/* --name */
	const char *snapshot;	/* --snapshot GUID */
	bool cbt;		/* --cbt */
	const char *qcow2;	/* --qcow2 FILE */
	const char *tab;	/* --tab FILE */
};

extern struct prl_cli cli;
extern const char *prog;

/* "prldisk: <message>" and the usage on stderr; returns EX_USAGE. */
int die_usage(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* "prldisk: <err->msg>" on stderr; returns EX_FAIL. */
int fail_err(const struct prl_err *err);
/* The descriptor the user named (a .xml file or a folder), or NULL. */
char *descriptor_path(const char *arg);
/* prl_desc_load() with --allow-external-paths; EX_OK or EX_FAIL (printed). */
int load_desc(const char *path, struct prl_desc **d);
/* Print @o pretty and drop it. */
void json_print(json_object *o);

/*
 * prldisk.c: a new empty delta image at @path, @d's size and cluster size,
 * owned like @d's top.
 */
int prl_create_delta(const struct prl_desc *d, const char *path,
		     struct prl_err *err);

/* activate.c */
int cmd_activate(int argc, char **argv);
int cmd_deactivate(int argc, char **argv);
int cmd_list(int argc, char **argv);
int cmd_status(int argc, char **argv);
/* tab.c */
int cmd_tab(int argc, char **argv);
/*
 * -EBUSY (with a message naming the dm device, or the loop device) if any
 * image of @d is attached: a loop device over the file, or a dm device on
 * a block-device image.  Offline commands that change a disk refuse then.
 */
int prl_disk_busy(const struct prl_desc *d, struct prl_err *err);
/* The same for one image file or device, named by itself (resize, convert). */
int prl_image_busy(const char *path, struct prl_err *err);
/*
 * Take the disk's lock (flock LOCK_EX|LOCK_NB on DiskDescriptor.xml.lck
 * beside the descriptor) for the rest of the command: returns the fd, or
 * -EBUSY when another prldisk holds it (message set), -EROFS for a
 * read-only folder without a lock file, another -errno otherwise.
 * prl_disk_unlock() (or exit) drops it.
 */
int prl_disk_lock(const struct prl_desc *d, struct prl_err *err);
/* The same, for the descriptor at @xml, before it is loaded. */
int prl_lock_path(const char *xml, struct prl_err *err);
void prl_disk_unlock(int fd);

/* online.c */
/*
 * 1 if @d is active read-write through prldisk activate (its top can be
 * snapshotted online), 0 if not, -errno with a message for an active disk
 * that cannot be (read-only, Plain or block-device top, suspended...).
 */
int prl_active_rw(const struct prl_desc *d, struct prl_err *err);
/*
 * The snapshot of an active disk: @d already has @snap as the old top's
 * GUID; a new top @newtop in @file (in @d's folder) is created, put live
 * under the disk's device and saved in @d.  With the disk's lock held.
 */
int prl_snapshot_online(struct prl_desc *d, const char *file, const char *snap,
			const char *newtop, struct prl_err *err);
/*
 * Grow an active disk to @size sectors (not below its size): its top under
 * the suspended device, then the device and the descriptor.
 */
int prl_resize_online(struct prl_desc *d, uint64_t size, struct prl_err *err);
/*
 * Delete snapshot @guid of an active disk: only the one right under the
 * top, whose clusters the top takes while the device is suspended.
 */
int prl_snapshot_delete_online(struct prl_desc *d, const char *guid,
			       prl_progress_fn progress, void *ctx,
			       struct prl_err *err);

#endif /* PRL_CLI_H */
