// SPDX-License-Identifier: GPL-2.0
/* Error messages, whole-buffer I/O and atomic file replacement. */
#define _GNU_SOURCE
#include "util.h"
#include "folder.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <linux/fs.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

int prl_errf(struct prl_err *err, int errnum, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(err->msg, sizeof(err->msg), fmt, ap);
	va_end(ap);
	return errnum > 0 ? -errnum : errnum ? errnum : -EINVAL;
}

int prl_pread_full(int fd, void *buf, size_t len, uint64_t off)
{
	char *p = buf;

	while (len) {
		ssize_t n = pread(fd, p, len, (off_t)off);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		if (n == 0)
			return -EIO;	/* past the end of the file */
		p += n;
		off += (uint64_t)n;
		len -= (size_t)n;
	}
	return 0;
}

int prl_pwrite_full(int fd, const void *buf, size_t len, uint64_t off)
{
	const char *p = buf;

	while (len) {
		ssize_t n = pwrite(fd, p, len, (off_t)off);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		if (n == 0)
			return -EIO;
		p += n;
		off += (uint64_t)n;
		len -= (size_t)n;
	}
	return 0;
}

const char *prl_file_type(mode_t mode)
{
	switch (mode & S_IFMT) {
	case S_IFREG:
		return "regular file";
	case S_IFBLK:
		return "block device";
	case S_IFIFO:
		return "FIFO";
	case S_IFSOCK:
		return "socket";
	case S_IFCHR:
		return "character device";
	case S_IFDIR:
		return "folder";
	case S_IFLNK:
		return "symbolic link";
	}
	return "special file";
}

static bool image_type(mode_t mode)
{
	return S_ISREG(mode) || S_ISBLK(mode);
}

int prl_open_image_file(const char *path, int flags, struct stat *st,
			struct prl_err *err)
{
	struct stat before, after;
	int fd, fl;

	/*
	 * Not even opened: opening a device node can have effects of its own.
	 * Beneath a disk folder a symlink is refused; elsewhere it is followed.
	 */
	if (prl_folder_lstat(path, &before))
		return prl_errf(err, errno, "cannot open %s: %s", path,
				strerror(errno));
	if (!image_type(before.st_mode))
		return prl_errf(err, EINVAL,
				"%s is a %s, not a regular file or block device: not an image",
				path, prl_file_type(before.st_mode));
	fd = prl_folder_open(path, flags | O_NONBLOCK | O_NOCTTY, 0);
	if (fd < 0)
		return prl_errf(err, errno, "cannot open %s: %s", path,
				strerror(errno));
	if (fstat(fd, &after)) {
		int e = errno;

		close(fd);
		return prl_errf(err, e, "%s: %s", path, strerror(e));
	}
	if (!image_type(after.st_mode) || after.st_dev != before.st_dev ||
	    after.st_ino != before.st_ino) {
		close(fd);
		return prl_errf(err, EAGAIN,
				"%s changed while it was opened (now a %s): not an image",
				path, prl_file_type(after.st_mode));
	}
	fl = fcntl(fd, F_GETFL);
	if (fl < 0 || fcntl(fd, F_SETFL, fl & ~O_NONBLOCK)) {
		int e = errno;

		close(fd);
		return prl_errf(err, e, "%s: %s", path, strerror(e));
	}
	if (st)
		*st = after;
	return fd;
}

int prl_fd_size(int fd, uint64_t *bytes)
{
	struct stat st;

	if (fstat(fd, &st))
		return -errno;
	if (S_ISBLK(st.st_mode))
		return ioctl(fd, BLKGETSIZE64, bytes) ? -errno : 0;
	if (!S_ISREG(st.st_mode))
		return -EINVAL;
	*bytes = (uint64_t)st.st_size;
	return 0;
}

int prl_fsync_dir_of(const char *path)
{
	return prl_folder_fsync_dir(path) ? -errno : 0;
}

int prl_write_file_atomic(const char *path, const void *data, size_t len,
			  mode_t mode, struct prl_err *err)
{
	char *tmp = prl_xasprintf("%s.tmp.XXXXXX", path);
	struct stat st;
	bool had = !prl_folder_lstat(path, &st) && S_ISREG(st.st_mode);
	int fd, r;

	if (had)
		mode = st.st_mode & 07777;
	fd = prl_folder_mkstemp(tmp);
	if (fd < 0) {
		r = prl_errf(err, errno, "cannot create a temporary file next to %s: %s",
			     path, strerror(errno));
		free(tmp);
		return r;
	}
	r = prl_pwrite_full(fd, data, len, 0);
	/* The owner (root rewriting a user's disk) and mode stay as they were. */
	if (!r && had && fchown(fd, st.st_uid, st.st_gid) && errno != EPERM)
		r = -errno;
	if (!r && fchmod(fd, mode))
		r = -errno;
	if (!r && fsync(fd))
		r = -errno;
	if (close(fd) && !r)
		r = -errno;
	if (!r && prl_folder_rename(tmp, path))
		r = -errno;
	if (r) {
		prl_folder_unlink(tmp);
		r = prl_errf(err, r, "cannot write %s: %s", path, strerror(-r));
	} else {
		r = prl_fsync_dir_of(path);
		if (r)
			r = prl_errf(err, r, "cannot sync the folder of %s: %s",
				     path, strerror(-r));
	}
	free(tmp);
	return r;
}

static void prl_oom(void)
{
	fputs("prldisk: out of memory\n", stderr);
	abort();
}

void *prl_xmalloc(size_t n)
{
	void *p = malloc(n ? n : 1);

	if (!p)
		prl_oom();
	return p;
}

void *prl_xcalloc(size_t n, size_t size)
{
	void *p = calloc(n ? n : 1, size ? size : 1);

	if (!p)
		prl_oom();
	return p;
}

char *prl_xstrdup(const char *s)
{
	char *p = strdup(s);

	if (!p)
		prl_oom();
	return p;
}

char *prl_xasprintf(const char *fmt, ...)
{
	va_list ap;
	char *s;
	int n;

	va_start(ap, fmt);
	n = vasprintf(&s, fmt, ap);
	va_end(ap);
	if (n < 0)
		prl_oom();
	return s;
}
