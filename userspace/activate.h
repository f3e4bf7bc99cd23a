/* SPDX-License-Identifier: GPL-2.0 */
/*
 * The parts of activate.c that online.c builds on: dm devices through
 * libdevmapper, loop devices, and the top file's truncation.  Each is
 * described where it is defined.
 */
#ifndef PRL_ACTIVATE_H
#define PRL_ACTIVATE_H

#include <libdevmapper.h>
#include <linux/dm-ioctl.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/stat.h>
#include <sys/types.h>

#include "image.h"
#include "util.h"

/*
 * dm UUIDs of our tables: PRLDISK-<guid without braces>-<disk id>:<name>,
 * the disk id being DISK_ID_LEN hex digits of the SHA-256 of the
 * descriptor's real path: which disk a device belongs to.  Versions before
 * it wrote PRLDISK-<guid>-<name> (no ':' can be in a name): no identity.
 */
#define UUID_PREFIX	"PRLDISK-"
#define GUID_BARE_LEN	36
#define DISK_ID_LEN	16

/* What we know of one dm device: its info, its only target, its status. */
struct dmdev {
	bool exists;
	char name[DM_NAME_LEN];
	char uuid[DM_UUID_LEN];
	dev_t dev;
	bool ro, suspended;
	int open_count;
	bool parallels, linear;	/* its single target */
	char target[32];
	uint64_t len;
	dev_t image;		/* parallels: image_dev; linear: the device */
	dev_t lower;		/* parallels: lower_dev, 0 for "-" */
	char opts[256];		/* parallels: "<#opt_args> <opt_arg>...", or "" */
	bool have_status;
	uint64_t alloc, total, cluster_sectors, end, nospc;
	char state[16];
	char cbt[48];		/* "-" or "<dirty>/<total>" granules */
	char error[48];		/* "-" or what failed: "commit:-5" */
};

/* Where an image file or device is in use: a loop over it, or a holder. */
struct attach {
	char dev[32];		/* /dev/loopN, or the image's block device */
	bool rw;		/* could be written through it */
	char holder[DM_NAME_LEN];	/* topmost dm device over it, or "" */
};

#define MAX_ATTACH	8

struct loopdev {
	int fd;			/* our hold on it: closing it may detach it */
	dev_t dev;
	bool dio;
};

void dm_setup(void);
int kmsg_open(void);
void kmsg_reason(int fd, char *out, size_t len);
int dm_err(struct prl_err *err, struct dm_task *dmt, const char *what,
	   const char *name);
struct dm_task *dm_task_named(int type, const char *name);
int dm_create(const char *name, const char *uuid, uint64_t len,
	      const char *type, const char *params, bool ro, bool hidden,
	      dev_t *dev, struct prl_err *err);
int dm_simple(int type, const char *name, struct prl_err *err);
int dm_query(const char *name, dev_t dev, struct dmdev *o, struct prl_err *err);
int dm_names(char ***names, size_t *nr, struct prl_err *err);
void free_names(char **names, size_t nr);
bool ours(const struct dmdev *o);
void layer_name(char *out, size_t len, const char *name, const char *guid);
/* "" when @uuid carries no disk identity (not ours, or an older prldisk's). */
void uuid_disk_id(const char *uuid, char id[DISK_ID_LEN + 1]);
void dm_uuid(char *out, size_t len, const char *guid, const char *id,
	     const char *name);
/* A dm name prldisk accepts: 1 to 64 of A-Z a-z 0-9 . _ -, not leading -. */
bool prl_valid_name(const char *n);

/* Open the block device @dev through /dev (making the node if need be). */
int open_dev(dev_t dev, int flags);
int attachments(const char *path, struct attach *a, size_t max);
int loop_backing(dev_t dev, char *buf, size_t len);
int loop_attach(const char *path, bool ro, struct loopdev *l,
		struct prl_err *err);
void loop_release(struct loopdev *l);
int loop_ident(dev_t dev, dev_t *fdev, ino_t *ino);

uint64_t max_sectors(const struct prl_image *img);
int open_top_file(dev_t loop, struct stat *st);
void cut_top(int fd, const struct stat *st, uint64_t end);

/*
 * PRLDISK_FAULT=<point>: SIGKILL ourselves right after step <point>, for
 * the crash tests (Documentation/prldisk.rst, ENVIRONMENT).
 */
void fault_point(const char *point);

/*
 * The table's opt args for a disk's sector sizes ("logical_block_size:512
 * physical_block_size:4096", "" for none) into @out; returns their count.
 * From the descriptor's values (0: absent), or the ones in @opts, a live
 * table's "<#opt_args> <opt_arg>...", when @opts is not NULL.
 */
unsigned int sector_args(uint32_t logical, uint32_t physical, const char *opts,
			 char *out, size_t len);

#endif /* PRL_ACTIVATE_H */
