// SPDX-License-Identifier: GPL-2.0
/*
 * A disk folder's files, reached from one handle of the folder: see
 * folder.h for why.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <limits.h>
#include <stdio.h>
#include <linux/openat2.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "folder.h"
#include "util.h"

#define MAX_HELD 16

static struct held {
	char *dir;
	size_t len;
	int fd;			/* O_PATH handle of @dir */
	unsigned int refs;
} held[MAX_HELD];

bool prl_folder_no_openat2;

static struct held *find(const char *dir)
{
	for (size_t i = 0; i < MAX_HELD; i++)
		if (held[i].refs && !strcmp(held[i].dir, dir))
			return &held[i];
	return NULL;
}

int prl_folder_hold(const char *dir, struct prl_err *err)
{
	struct held *h = find(dir);
	int fd;

	if (h) {
		h->refs++;
		return 0;
	}
	for (h = held; h < held + MAX_HELD && h->refs; h++)
		;
	if (h == held + MAX_HELD)
		return prl_errf(err, EMFILE,
				"%s: more than %d disk folders open at once", dir,
				MAX_HELD);
	fd = open(dir, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0)
		return prl_errf(err, errno, "cannot open the folder %s: %s", dir,
				strerror(errno));
	h->dir = prl_xstrdup(dir);
	h->len = strlen(dir);
	while (h->len > 1 && dir[h->len - 1] == '/')
		h->len--;
	h->fd = fd;
	h->refs = 1;
	return 0;
}

void prl_folder_release(const char *dir)
{
	struct held *h = find(dir);

	if (!h || --h->refs)
		return;
	close(h->fd);
	free(h->dir);
	memset(h, 0, sizeof(*h));
}

/* The held folder @path lies in (the deepest), and where its rest starts. */
static struct held *holder(const char *path, const char **rest)
{
	struct held *best = NULL;

	for (size_t i = 0; i < MAX_HELD; i++) {
		struct held *h = &held[i];
		bool root = h->len == 1 && h->dir[0] == '/';

		if (!h->refs || strncmp(path, h->dir, h->len) ||
		    (!root && path[h->len] != '/'))
			continue;
		if (!best || h->len > best->len)
			best = h;
	}
	if (best)
		*rest = path + best->len;
	return best;
}

/*
 * @rest without "." and empty components, ".." taken lexically (no symlink
 * will be followed, so that is what the kernel would do too), into @out
 * as "a/b/c".  False if it climbs out of the folder.
 */
static bool normalize(const char *rest, char *out)
{
	size_t n = 0;
	const char *s = rest, *e;

	*out = '\0';
	while (*s) {
		while (*s == '/')
			s++;
		e = strchrnul(s, '/');
		if (e - s == 2 && s[0] == '.' && s[1] == '.') {
			char *slash;

			if (!n)
				return false;
			slash = strrchr(out, '/');
			n = slash ? (size_t)(slash - out) : 0;
			out[n] = '\0';
		} else if (e > s && !(e - s == 1 && *s == '.')) {
			if (n)
				out[n++] = '/';
			memcpy(out + n, s, (size_t)(e - s));
			n += (size_t)(e - s);
			out[n] = '\0';
		}
		s = e;
	}
	return true;
}

static int openat2_dir(int root, const char *rel)
{
	struct open_how how = {
		.flags = O_PATH | O_DIRECTORY | O_CLOEXEC,
		.resolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS |
			   RESOLVE_NO_MAGICLINKS,
	};

	if (prl_folder_no_openat2) {
		errno = ENOSYS;
		return -1;
	}
	return (int)syscall(SYS_openat2, root, *rel ? rel : ".", &how,
			    sizeof(how));
}

/* One component at a time, no symlink followed: for kernels before 5.6. */
static int walk_dir(int root, char *rel)
{
	int fd = openat(root, ".", O_PATH | O_DIRECTORY | O_CLOEXEC), nfd;
	char *c, *save = NULL;
	struct stat st;

	for (c = strtok_r(rel, "/", &save); c && fd >= 0;
	     c = strtok_r(NULL, "/", &save)) {
		nfd = openat(fd, c, O_PATH | O_NOFOLLOW | O_CLOEXEC);
		if (nfd >= 0 && (fstat(nfd, &st) || !S_ISDIR(st.st_mode))) {
			errno = S_ISLNK(st.st_mode) ? ELOOP : ENOTDIR;
			close(nfd);
			nfd = -1;
		}
		close(fd);
		fd = nfd;
	}
	return fd;
}

/*
 * Where @path is: beneath a held folder, *@dfd is a handle of its parent
 * folder (close it with put()) and *@base its last component, in @buf;
 * elsewhere AT_FDCWD and @path itself.  -1 with errno on failure.
 */
static int resolve(const char *path, int *dfd, const char **base, char *buf,
		   bool *beneath)
{
	const char *rest;
	struct held *h = holder(path, &rest);
	char *slash, *parent;
	int fd, e;

	*beneath = false;
	*dfd = AT_FDCWD;
	*base = path;
	if (h && strlen(rest) >= PATH_MAX) {
		errno = ENAMETOOLONG;	/* never by name instead */
		return -1;
	}
	if (!h || !normalize(rest, buf))
		return 0;
	slash = strrchr(buf, '/');
	if (slash) {
		*slash = '\0';
		*base = slash + 1;
		parent = buf;
	} else {
		*base = *buf ? buf : ".";
		parent = "";
	}
	fd = openat2_dir(h->fd, parent);
	/* No openat2: an old kernel (ENOSYS), or a seccomp filter older than it. */
	if (fd < 0 && (errno == ENOSYS || errno == EPERM)) {
		char *copy = prl_xstrdup(parent);

		fd = walk_dir(h->fd, copy);
		free(copy);
	}
	if (fd < 0) {
		e = errno;
		if (slash)
			*slash = '/';
		errno = e;
		return -1;
	}
	*dfd = fd;
	*beneath = true;
	return 0;
}

static void put(int dfd)
{
	if (dfd >= 0) {
		int e = errno;

		close(dfd);
		errno = e;
	}
}

bool prl_folder_beneath(const char *path)
{
	const char *rest;

	return holder(path, &rest) != NULL;
}

int prl_folder_open(const char *path, int flags, mode_t mode)
{
	char buf[PATH_MAX];
	const char *base;
	bool beneath;
	int dfd, fd;

	if (resolve(path, &dfd, &base, buf, &beneath))
		return -1;
	fd = openat(dfd, base, flags | O_CLOEXEC | (beneath ? O_NOFOLLOW : 0),
		    mode);
	put(dfd);
	return fd;
}

int prl_folder_lstat(const char *path, struct stat *st)
{
	char buf[PATH_MAX];
	const char *base;
	bool beneath;
	int dfd, r;

	if (resolve(path, &dfd, &base, buf, &beneath))
		return -1;
	/* Outside a folder, stat() as before: /dev/disk/by-id is all links. */
	r = fstatat(dfd, base, st, beneath ? AT_SYMLINK_NOFOLLOW : 0);
	put(dfd);
	return r;
}

int prl_folder_unlink(const char *path)
{
	char buf[PATH_MAX];
	const char *base;
	bool beneath;
	int dfd, r;

	if (resolve(path, &dfd, &base, buf, &beneath))
		return -1;
	r = unlinkat(dfd, base, 0);
	put(dfd);
	return r;
}

int prl_folder_rename(const char *from, const char *to)
{
	char b1[PATH_MAX], b2[PATH_MAX];
	const char *n1, *n2;
	bool x1, x2;
	int d1, d2, r;

	if (resolve(from, &d1, &n1, b1, &x1))
		return -1;
	if (resolve(to, &d2, &n2, b2, &x2)) {
		put(d1);
		return -1;
	}
	r = renameat(d1, n1, d2, n2);
	put(d1);
	put(d2);
	return r;
}

int prl_folder_mkstemp(char *tmpl)
{
	static const char set[] =
		"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
	size_t n = strlen(tmpl);
	char buf[PATH_MAX], *x;
	const char *base;
	bool beneath;
	int dfd, fd = -1;

	if (n < 6 || strcmp(tmpl + n - 6, "XXXXXX")) {
		errno = EINVAL;
		return -1;
	}
	x = tmpl + n - 6;
	for (int tries = 0; tries < 100; tries++) {
		unsigned char r[6];

		if (getrandom(r, sizeof(r), 0) != sizeof(r))
			return -1;
		for (int i = 0; i < 6; i++)
			x[i] = set[r[i] % (sizeof(set) - 1)];
		if (resolve(tmpl, &dfd, &base, buf, &beneath))
			return -1;
		fd = openat(dfd, base, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC |
			    O_NOFOLLOW, 0600);
		put(dfd);
		if (fd >= 0 || errno != EEXIST)
			return fd;
	}
	return fd;
}

char *prl_folder_read(const char *path, size_t max, size_t *len)
{
	int fd = prl_folder_open(path, O_RDONLY | O_NONBLOCK | O_NOCTTY, 0);
	struct stat st;
	char *buf = NULL;

	if (fd < 0)
		return NULL;
	if (!fstat(fd, &st) && S_ISREG(st.st_mode) && (size_t)st.st_size <= max) {
		*len = (size_t)st.st_size;
		buf = prl_xmalloc(*len + 1);
		if (prl_pread_full(fd, buf, *len, 0)) {
			free(buf);
			buf = NULL;
		}
	}
	put(fd);
	return buf;
}

int prl_folder_truncate(const char *path, off_t len)
{
	int fd = prl_folder_open(path, O_WRONLY | O_NONBLOCK | O_NOCTTY, 0), r;

	if (fd < 0)
		return -1;
	r = ftruncate(fd, len);
	put(fd);
	return r;
}

DIR *prl_folder_opendir(const char *path)
{
	int fd = prl_folder_open(path, O_RDONLY | O_DIRECTORY, 0);
	DIR *d;

	if (fd < 0)
		return NULL;
	d = fdopendir(fd);
	if (!d)
		put(fd);
	return d;
}

int prl_folder_fsync_dir(const char *path)
{
	char buf[PATH_MAX], *copy;
	const char *base;
	bool beneath;
	int dfd, fd, r;

	if (resolve(path, &dfd, &base, buf, &beneath))
		return -1;
	if (beneath) {
		fd = openat(dfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		put(dfd);
	} else {
		copy = prl_xstrdup(path);
		fd = open(dirname(copy), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		free(copy);
	}
	if (fd < 0)
		return -1;
	r = fsync(fd);
	put(fd);
	return r;
}
