// SPDX-License-Identifier: GPL-2.0
/*
 * libFuzzer target for kernel/prl_format.c: the input is an image file.
 * Whatever the bytes, validation must not crash, and what it accepts must
 * keep the promises the kernel relies on (abort() otherwise).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <endian.h>

#include "prl_format.h"

/* The format extension at ext_off, as the kernel's CBT loads it. */
static void check_ext(const uint8_t *data, size_t size, const struct prl_geom *g,
		      const __le32 *bat, __u32 n)
{
	size_t off = g->ext_off * PRL_SECTOR_SIZE;
	size_t len = (size_t)g->cluster_sectors * PRL_SECTOR_SIZE;
	struct prl_ext_info info;
	const char *why = NULL;
	__u64 *scratch, end, s;
	const __le64 *l1;
	__u32 i;

	if (off >= size)
		return;
	if (len > size - off)
		len = size - off;
	if (prl_parse_ext(data + off, (__u32)len, g, &info, &why)) {
		if (!why)
			abort();
		return;
	}
	if (!info.nr_bitmaps)
		return;
	if (info.bitmap.l1_pos + 8ULL * info.bitmap.l1_size > len ||
	    info.bitmap.l1_pos % 8)
		abort();
	l1 = (const __le64 *)(data + off + info.bitmap.l1_pos);
	scratch = malloc(((size_t)n + 1 + info.bitmap.l1_size) * sizeof(*scratch));
	if (!scratch)
		return;
	if (!prl_check_l1(g, bat, l1, info.bitmap.l1_size, size / PRL_SECTOR_SIZE,
			  scratch, &end, &why)) {
		for (i = 0; i < info.bitmap.l1_size; i++) {
			memcpy(&s, &l1[i], sizeof(s));
			s = le64toh(s);
			if (s > 1 && (s < g->data_off || s + g->cluster_sectors > end))
				abort();
		}
	}
	free(scratch);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	__u64 dev_sectors = size / PRL_SECTOR_SIZE, end, *scratch;
	struct prl_header hdr;
	struct prl_bat_err err;
	struct prl_geom g;
	const char *why = NULL;
	__le32 *bat;
	__u32 n, i;
	int r;

	if (size < sizeof(hdr))
		return 0;
	memcpy(&hdr, data, sizeof(hdr));
	if (prl_parse_header(&hdr, dev_sectors, &g, &why)) {
		if (!why)
			abort();
		return 0;
	}
	if (g.meta_bytes > dev_sectors * PRL_SECTOR_SIZE ||
	    g.data_off > dev_sectors || !g.cluster_sectors ||
	    g.nb_sectors > (__u64)g.bat_entries * g.cluster_sectors)
		abort();

	bat = malloc((size_t)g.bat_entries * 4 + 4);
	if (!bat)
		return 0;
	memcpy(bat, data + PRL_HEADER_SIZE, (size_t)g.bat_entries * 4);
	n = prl_count_allocated(&g, bat);
	scratch = malloc(((size_t)n + 1) * sizeof(*scratch));
	r = scratch ? prl_check_bat(&g, bat, dev_sectors, scratch, &end, &err,
				    &why) : -1;
	if (!r) {
		/* Every mapped cluster lies whole in the data area. */
		for (i = 0; i < g.bat_entries; i++) {
			__u64 s = prl_entry_sector(&g, le32toh(bat[i]));

			if (!bat[i])
				continue;
			if (s < g.data_off || s + g.cluster_sectors > dev_sectors ||
			    (s - g.data_off) % g.cluster_sectors ||
			    s + g.cluster_sectors > end)
				abort();
		}
		if (end > dev_sectors || end < g.data_off)
			abort();
		if (g.ext_off)
			check_ext(data, size, &g, bat, n);
	}
	free(scratch);
	free(bat);
	return 0;
}
