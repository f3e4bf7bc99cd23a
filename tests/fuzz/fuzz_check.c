// SPDX-License-Identifier: GPL-2.0
/*
 * libFuzzer target for prldisk check and repair (userspace/check.c): the
 * input is an image file.  Check it; repair a copy; the repaired copy must
 * then check as clean or leaking only (never corrupt), unless its header
 * was unusable to begin with, and a second repair must change nothing.
 * Repair grows a file that ends inside its BAT to the data area; inputs
 * whose header asks for a BAT over MAX_BAT_BYTES are only checked, so one
 * input of a few bytes cannot make a run write and rescan a gigabyte.
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "check.h"
#include "util.h"

#define MAX_BAT_BYTES (4u << 20)

static int image_fd(const uint8_t *data, size_t size, char *path, size_t len)
{
	int fd = memfd_create("fuzz-image", MFD_CLOEXEC);

	if (fd < 0 || prl_pwrite_full(fd, data, size, 0))
		abort();
	snprintf(path, len, "/proc/self/fd/%d", fd);
	return fd;
}

/* bat_entries, as the header at offset 32 holds it, in bytes */
static uint64_t bat_bytes(const uint8_t *data, size_t size)
{
	if (size < 36)
		return 0;
	return 4ull * (data[32] | data[33] << 8 | data[34] << 16 |
		       (uint32_t)data[35] << 24);
}

static int run(const char *path, bool repair, struct prl_check_report *rep)
{
	struct prl_check_opts o = { .repair = repair };
	struct prl_err err;

	memset(rep, 0, sizeof(*rep));
	return prl_check(path, &o, rep, &err);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct prl_check_report rep;
	char path[64];
	int fd, r, r2;
	bool header;

	fd = image_fd(data, size, path, sizeof(path));
	r = run(path, false, &rep);
	header = rep.nr_by_kind[PRL_P_HEADER] != 0;
	prl_check_report_free(&rep);
	if (r < 0 || header || r == 0 || bat_bytes(data, size) > MAX_BAT_BYTES) {
		close(fd);
		return 0;
	}
	r = run(path, true, &rep);
	prl_check_report_free(&rep);
	if (r == 2) {
		fprintf(stderr, "repair left a corrupt image\n");
		abort();
	}
	r2 = run(path, false, &rep);
	prl_check_report_free(&rep);
	if (r >= 0 && r2 != r) {
		fprintf(stderr, "repair said %d, a check after it %d\n", r, r2);
		abort();
	}
	close(fd);
	return 0;
}
