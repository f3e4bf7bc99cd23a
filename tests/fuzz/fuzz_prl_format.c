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
	}
	free(scratch);
	free(bat);
	return 0;
}
