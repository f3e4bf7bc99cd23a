/* SPDX-License-Identifier: GPL-2.0 */
/*
 * A disk folder's files, reached from one handle of the folder.
 *
 * A descriptor's paths are checked when it loads, but a tenant who owns
 * the folder can swap a subfolder for a symlink afterwards; an unlink by
 * name would then act outside the folder.  So while a descriptor is
 * loaded its folder is held open, and every path beneath it is resolved
 * from that handle with no symlink allowed on the way (openat2() with
 * RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS, or a walk with O_NOFOLLOW where
 * the kernel lacks openat2).  Paths outside every held folder (block
 * devices, files named with --external) are used as they are.
 *
 * The functions behave like the system calls they are named after:
 * 0 or a fd on success, -1 with errno set on failure (ELOOP for a symlink
 * on the way).
 */
#ifndef PRL_FOLDER_H
#define PRL_FOLDER_H

#include <dirent.h>
#include <stdbool.h>
#include <sys/stat.h>
#include <sys/types.h>

struct prl_err;

/*
 * Hold the folder @dir (absolute, symlinks resolved) until the matching
 * prl_folder_release(); holds nest.  0 or -errno with @err set.
 */
int prl_folder_hold(const char *dir, struct prl_err *err);
void prl_folder_release(const char *dir);

/* Is @path beneath a held folder (and so resolved from its handle)? */
bool prl_folder_beneath(const char *path);

int prl_folder_open(const char *path, int flags, mode_t mode);
int prl_folder_lstat(const char *path, struct stat *st);
int prl_folder_unlink(const char *path);
int prl_folder_rename(const char *from, const char *to);
/* mkstemp(): @tmpl ends in XXXXXX; the file is created 0600, O_CLOEXEC. */
int prl_folder_mkstemp(char *tmpl);
/* fsync the folder holding @path. */
int prl_folder_fsync_dir(const char *path);
/*
 * The whole regular file at @path, of at most @max bytes, malloc'ed (with
 * room for a NUL) and its length in *@len; NULL if it is not one.
 */
char *prl_folder_read(const char *path, size_t max, size_t *len);
/* truncate(): opened without following a symlink, then ftruncate(). */
int prl_folder_truncate(const char *path, off_t len);
/* opendir() of a folder, beneath a held one from its handle. */
DIR *prl_folder_opendir(const char *path);

/* Tests: pretend the kernel has no openat2, to exercise the walk. */
extern bool prl_folder_no_openat2;

#endif /* PRL_FOLDER_H */
