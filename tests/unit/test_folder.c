// SPDX-License-Identifier: GPL-2.0
/*
 * Unit tests of userspace/folder.c: files beneath a held disk folder are
 * reached from its handle with no symlink followed, by openat2() and by the
 * O_NOFOLLOW walk kept for kernels without it; paths elsewhere are used as
 * named.
 */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <errno.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <cmocka.h>

#include "folder.h"
#include "util.h"

static char base[64], dir[96], out[96];

static const char *at(const char *where, const char *name)
{
	static char p[4][256];
	static int k;

	k = (k + 1) % 4;
	snprintf(p[k], sizeof(p[k]), "%s/%s", where, name);
	return p[k];
}

static void put(const char *path)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);

	assert_true(fd >= 0);
	assert_int_equal(write(fd, "x", 1), 1);
	close(fd);
}

static int setup(void **state)
{
	struct prl_err err;

	(void)state;
	snprintf(base, sizeof(base), "/tmp/prl-folder-test.XXXXXX");
	if (!mkdtemp(base))
		return -1;
	snprintf(dir, sizeof(dir), "%s/d", base);
	snprintf(out, sizeof(out), "%s/out", base);
	if (mkdir(dir, 0755) || mkdir(out, 0755) ||
	    mkdir(at(dir, "sub"), 0755))
		return -1;
	put(at(dir, "sub/img"));
	put(at(out, "img"));
	if (symlink(out, at(dir, "link")) || symlink("sub/img", at(dir, "ln")))
		return -1;
	return prl_folder_hold(dir, &err);
}

static int teardown(void **state)
{
	char cmd[128];

	(void)state;
	prl_folder_release(dir);
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", base);
	return system(cmd) ? -1 : 0;
}

/* The same cases by openat2() and by the walk. */
static void cases(void)
{
	struct stat st;
	char tmpl[256];
	int fd;

	/* beneath, plain and with "." and ".." taken lexically */
	assert_true(prl_folder_beneath(at(dir, "sub/img")));
	fd = prl_folder_open(at(dir, "sub/img"), O_RDONLY, 0);
	assert_true(fd >= 0);
	close(fd);
	fd = prl_folder_open(at(dir, "./sub/../sub//img"), O_RDONLY, 0);
	assert_true(fd >= 0);
	close(fd);
	assert_int_equal(prl_folder_lstat(at(dir, "sub/img"), &st), 0);
	assert_true(S_ISREG(st.st_mode));
	/* a symlink on the way, or as the file itself: ELOOP / seen as one */
	assert_int_equal(prl_folder_open(at(dir, "link/img"), O_RDONLY, 0), -1);
	assert_int_equal(errno, ELOOP);
	assert_int_equal(prl_folder_unlink(at(dir, "link/img")), -1);
	assert_int_equal(errno, ELOOP);
	assert_int_equal(access(at(out, "img"), F_OK), 0);
	assert_int_equal(prl_folder_open(at(dir, "ln"), O_RDONLY, 0), -1);
	assert_int_equal(errno, ELOOP);
	assert_int_equal(prl_folder_lstat(at(dir, "ln"), &st), 0);
	assert_true(S_ISLNK(st.st_mode));
	/* ".." above the folder is not beneath it: used as named */
	fd = prl_folder_open(at(dir, "../out/img"), O_RDONLY, 0);
	assert_true(fd >= 0);
	close(fd);
	/* create, rename, unlink beneath */
	snprintf(tmpl, sizeof(tmpl), "%s", at(dir, "sub/t.XXXXXX"));
	fd = prl_folder_mkstemp(tmpl);
	assert_true(fd >= 0);
	close(fd);
	assert_int_equal(prl_folder_rename(tmpl, at(dir, "sub/renamed")), 0);
	assert_int_equal(prl_folder_fsync_dir(at(dir, "sub/renamed")), 0);
	assert_int_equal(prl_folder_unlink(at(dir, "sub/renamed")), 0);
	assert_int_equal(access(at(dir, "sub/renamed"), F_OK), -1);
	/* beneath by another spelling, and a path of no held folder */
	assert_false(prl_folder_beneath(at(out, "img")));
	assert_int_equal(prl_folder_lstat(at(base, "d/link/img"), &st), -1);
	assert_int_equal(errno, ELOOP);
}

static void t_openat2(void **state)
{
	(void)state;
	prl_folder_no_openat2 = false;
	cases();
}

static void t_walk(void **state)
{
	(void)state;
	prl_folder_no_openat2 = true;
	cases();
	prl_folder_no_openat2 = false;
}

/* Holds nest; the deepest held folder is the one a path is resolved in. */
static void t_nesting(void **state)
{
	struct prl_err err;
	int fd;

	(void)state;
	assert_int_equal(prl_folder_hold(dir, &err), 0);
	prl_folder_release(dir);
	assert_true(prl_folder_beneath(at(dir, "sub/img")));
	assert_int_equal(prl_folder_hold(at(dir, "sub"), &err), 0);
	fd = prl_folder_open(at(dir, "sub/img"), O_RDONLY, 0);
	assert_true(fd >= 0);
	close(fd);
	prl_folder_release(at(dir, "sub"));
	/* a symlink is not held: O_NOFOLLOW | O_DIRECTORY says ENOTDIR */
	assert_int_equal(prl_folder_hold(at(dir, "link"), &err), -ENOTDIR);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(t_openat2),
		cmocka_unit_test(t_walk),
		cmocka_unit_test(t_nesting),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
