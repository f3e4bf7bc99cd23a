/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Small helpers every part of prldisk uses: error messages that travel up
 * to the command, whole-buffer file I/O and atomic file replacement.
 */
#ifndef PRL_UTIL_H
#define PRL_UTIL_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/stat.h>
#include <sys/types.h>

/*
 * An error for the user: one line saying what is wrong and, where it helps,
 * what to do.  Functions that can fail take a struct prl_err * (never NULL)
 * and return 0 or a negative errno; on failure the message is set.
 */
struct prl_err {
	char msg[1024];
};

/* Set the message (printf style); returns -errnum, for "return prl_errf(...)". */
int prl_errf(struct prl_err *err, int errnum, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/* Read / write exactly @len bytes at @off; short I/O is an error (-EIO). */
int prl_pread_full(int fd, void *buf, size_t len, uint64_t off);
int prl_pwrite_full(int fd, const void *buf, size_t len, uint64_t off);

/*
 * Open the image file @path with @flags (O_RDONLY or O_RDWR, maybe O_EXCL;
 * O_CLOEXEC is added): only a regular file or a block device is opened.
 * Anything else (a FIFO, which would wait for a writer, a socket, a
 * character device, a folder) is refused before it is opened, with a
 * message naming the file, and the open itself is non-blocking so that a
 * FIFO swapped in meanwhile cannot make us wait either (O_NONBLOCK is
 * cleared again before returning).  Returns the fd, with its fstat() in
 * *@st if @st is not NULL, or -errno with @err set ("cannot open PATH:
 * ..." when open() fails, so a caller can tell -EBUSY apart).
 */
int prl_open_image_file(const char *path, int flags, struct stat *st,
			struct prl_err *err);

/* "FIFO", "socket", ... : what @mode is, for messages. */
const char *prl_file_type(mode_t mode);

/* Size of a regular file or a block device, in bytes. */
int prl_fd_size(int fd, uint64_t *bytes);

/* fsync the folder that holds @path (after a rename or create in it). */
int prl_fsync_dir_of(const char *path);

/*
 * Replace @path atomically with @len bytes of @data: write a temporary file
 * in the same folder, fsync it, rename it over @path, fsync the folder.
 * The new file gets @mode (or @path's mode if it exists).
 */
int prl_write_file_atomic(const char *path, const void *data, size_t len,
			  mode_t mode, struct prl_err *err);

/* malloc/calloc/strdup that abort on failure: out of memory is fatal here. */
void *prl_xmalloc(size_t n);
void *prl_xcalloc(size_t n, size_t size);
char *prl_xstrdup(const char *s);
/* asprintf that aborts on failure. */
char *prl_xasprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#endif /* PRL_UTIL_H */
