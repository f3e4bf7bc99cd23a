// SPDX-License-Identifier: GPL-2.0
/*
 * Unit tests of kernel/prl_format.c, the header and BAT validation that
 * dm-parallels.ko trusts.  Each rule is tested on a crafted image: the
 * return code, the reason given and, for BAT errors, the entries named.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <endian.h>
#include <errno.h>
#include <cmocka.h>

#include "prl_format.h"

/* An image in memory: header + BAT + data area, dev_sectors long. */
struct img {
	union {
		struct prl_header h;
		unsigned char raw[1 << 20];
	};
	__u64 dev_sectors;
	struct prl_geom g;
	const char *why;
};

static struct img im;

static __le32 *bat(void)
{
	return (__le32 *)(im.raw + PRL_HEADER_SIZE);
}

/* v2: 8 clusters of 8 sectors, data_off one cluster in, room for 8 clusters. */
static void mk_v2(void)
{
	memset(&im, 0, sizeof(im));
	memcpy(im.h.magic, PRL_MAGIC_V2, PRL_MAGIC_LEN);
	im.h.version = htole32(2);
	im.h.tracks = htole32(8);
	im.h.bat_entries = htole32(8);
	im.h.nb_sectors = htole64(60);		/* not a cluster multiple */
	im.h.data_off = htole32(8);
	im.h.in_use = htole32(PRL_IN_USE_CLOSED);
	im.dev_sectors = 8 + 8 * 8;
}

/* v1 (ploop): BAT in sectors, data_off 0 = after the BAT, 4 KiB clusters. */
static void mk_v1(void)
{
	mk_v2();
	memcpy(im.h.magic, PRL_MAGIC_V1, PRL_MAGIC_LEN);
	im.h.data_off = 0;			/* = 1 sector (64 + 32 bytes) */
}

static int parse(void)
{
	im.why = NULL;
	return prl_parse_header(&im.h, im.dev_sectors, &im.g, &im.why);
}

static void expect_refused(const char *why)
{
	assert_int_equal(parse(), -EINVAL);
	assert_non_null(im.why);
	assert_string_equal(im.why, why);
}

static int check(struct prl_bat_err *err, __u64 *end)
{
	__u64 scratch[16];

	assert_int_equal(parse(), 0);
	assert_true(prl_count_allocated(&im.g, bat()) + 1 <= 16);
	memset(err, 0, sizeof(*err));
	return prl_check_bat(&im.g, bat(), im.dev_sectors, scratch, end, err,
			     &im.why);
}

static void test_v2_valid(void **state)
{
	struct prl_bat_err err;
	__u64 end;

	(void)state;
	mk_v2();
	bat()[0] = htole32(1);			/* clusters, so sector 8 */
	bat()[3] = htole32(5);
	assert_int_equal(check(&err, &end), 0);
	assert_int_equal(im.g.fmt, PRL_V2);
	assert_int_equal(im.g.cluster_sectors, 8);
	assert_int_equal(im.g.off_mult, 8);
	assert_int_equal(im.g.data_off, 8);
	assert_int_equal(im.g.nb_sectors, 60);
	assert_int_equal(prl_count_allocated(&im.g, bat()), 2);
	assert_int_equal(prl_entry_sector(&im.g, 5), 40);
	assert_int_equal(end, 48);		/* after cluster at 40 */
}

static void test_v1_valid(void **state)
{
	struct prl_bat_err err;
	__u64 end;

	(void)state;
	mk_v1();
	bat()[2] = htole32(1 + 8 * 3);		/* sectors, on the grid at 1 */
	assert_int_equal(check(&err, &end), 0);
	assert_int_equal(im.g.fmt, PRL_V1);
	assert_int_equal(im.g.off_mult, 1);
	assert_int_equal(im.g.data_off, 1);	/* computed */
	assert_int_equal(end, 1 + 8 * 4);
}

static void test_empty_end_is_data_off(void **state)
{
	struct prl_bat_err err;
	__u64 end;

	(void)state;
	mk_v2();
	assert_int_equal(check(&err, &end), 0);
	assert_int_equal(end, 8);
}

static void test_in_use_values(void **state)
{
	(void)state;
	mk_v2();
	im.h.in_use = 0;
	assert_int_equal(parse(), 0);
	im.h.in_use = htole32(PRL_IN_USE_OPEN);
	assert_int_equal(parse(), 0);
	assert_int_equal(im.g.in_use, PRL_IN_USE_OPEN);
}

/*
 * Values the spec does not list: Parallels Desktop writes a creator stamp
 * ("pd17", "pd22" in ASCII).  Accepted, kept as they are for the caller.
 */
static void test_in_use_stamps(void **state)
{
	static const struct {
		const char raw[4];
		__u32 val;
		const char *says;
		int text;
	} st[] = {
		{ "pd17", 0x37316470, "pd17", 1 },
		{ "pd22", 0x32326470, "pd22", 1 },
		{ "\x78\x56\x34\x12", 0x12345678, "0x12345678", 0 },
		{ "pd1\x80", 0x80316470, "0x80316470", 0 },
		{ "p'17", 0x37312770, "0x37312770", 0 },
	};
	static const __u32 spec[] = {
		PRL_IN_USE_CLOSED_OLD, PRL_IN_USE_OPEN, PRL_IN_USE_CLOSED,
	};
	char buf[PRL_STAMP_LEN];
	size_t i;

	(void)state;
	for (i = 0; i < sizeof(st) / sizeof(st[0]); i++) {
		mk_v1();
		memcpy(&im.h.in_use, st[i].raw, 4);
		assert_int_equal(parse(), 0);
		assert_int_equal(im.g.in_use, st[i].val);
		assert_true(prl_in_use_foreign(im.g.in_use));
		memset(buf, 'X', sizeof(buf));
		assert_int_equal(prl_in_use_stamp(im.g.in_use, buf), st[i].text);
		assert_string_equal(buf, st[i].says);
		/* the same in a v2 image */
		mk_v2();
		memcpy(&im.h.in_use, st[i].raw, 4);
		assert_int_equal(parse(), 0);
		assert_int_equal(im.g.in_use, st[i].val);
	}
	/* the spec's values are no stamps, and parse as before */
	for (i = 0; i < sizeof(spec) / sizeof(spec[0]); i++) {
		mk_v2();
		im.h.in_use = htole32(spec[i]);
		assert_int_equal(parse(), 0);
		assert_int_equal(im.g.in_use, spec[i]);
		assert_false(prl_in_use_foreign(spec[i]));
	}
}

static void test_bad_magic_version(void **state)
{
	(void)state;
	mk_v2();
	im.h.magic[3] = 'x';
	expect_refused("Bad magic: not a Parallels expandable image");
	mk_v2();
	im.h.version = htole32(1);
	expect_refused("Unsupported header version (must be 2)");
}

static void test_cluster_size(void **state)
{
	(void)state;
	mk_v2();
	im.h.tracks = 0;
	expect_refused("Cluster size is zero");
	mk_v2();
	im.h.tracks = htole32(PRL_MAX_CLUSTER_SECTORS + 1);
	expect_refused("Cluster size too large (maximum 1 GiB)");
	mk_v1();
	im.h.tracks = htole32(PRL_MAX_CLUSTER_SECTORS);
	im.h.nb_sectors = htole64(1);
	assert_int_equal(parse(), 0);
}

static void test_bat_size(void **state)
{
	(void)state;
	mk_v2();
	im.h.bat_entries = htole32(PRL_MAX_BAT_ENTRIES + 1);
	expect_refused("BAT too large (more than 2^28 entries)");
	mk_v2();
	im.h.bat_entries = htole32(0xffffffff);
	expect_refused("BAT too large (more than 2^28 entries)");
	mk_v2();
	im.h.bat_entries = htole32(200);	/* 864 bytes: 2 sectors */
	im.h.data_off = htole32(8);
	im.dev_sectors = 1;
	expect_refused("Image truncated: BAT extends past the end of the image");
}

static void test_nb_sectors(void **state)
{
	(void)state;
	mk_v2();
	im.h.nb_sectors = 0;
	expect_refused("Virtual size is zero");
	mk_v2();
	im.h.nb_sectors = htole64(8 * 8 + 1);
	expect_refused("Virtual size exceeds what the BAT covers");
	mk_v2();
	im.h.nb_sectors = htole64(8 * 8);
	assert_int_equal(parse(), 0);
	mk_v1();
	im.h.nb_sectors = htole64(60 | (1ULL << 32));
	expect_refused("WithoutFreeSpace header with a size above 32 bits");
	mk_v2();	/* v2 may use all 64 bits (here: beyond coverage) */
	im.h.nb_sectors = htole64(60 | (1ULL << 32));
	expect_refused("Virtual size exceeds what the BAT covers");
}

static void test_data_off(void **state)
{
	(void)state;
	mk_v2();
	im.h.data_off = 0;
	expect_refused("data_off is zero in a WithouFreSpacExt image");
	mk_v2();
	im.h.data_off = htole32(12);
	expect_refused("data_off is not a multiple of the cluster size");
	mk_v1();
	im.h.bat_entries = htole32(200);	/* BAT ends in sector 2 */
	im.h.nb_sectors = htole64(8);
	im.h.data_off = htole32(1);
	expect_refused("data_off points inside the header or BAT");
	mk_v2();
	im.h.data_off = htole32(80);
	expect_refused("data_off is beyond the end of the image");
	mk_v1();
	im.h.data_off = htole32(3);		/* any sector for v1 */
	assert_int_equal(parse(), 0);
	assert_int_equal(im.g.data_off, 3);
}

static void test_ext_off(void **state)
{
	struct prl_bat_err err;
	__u64 end;

	(void)state;
	mk_v2();
	im.h.ext_off = htole64(4);
	expect_refused("ext_off does not point at a valid cluster");
	mk_v2();
	im.h.ext_off = htole64(8 * 9);
	expect_refused("ext_off does not point at a valid cluster");
	mk_v2();
	im.h.ext_off = htole64(8 * 7);
	bat()[0] = htole32(1);
	assert_int_equal(check(&err, &end), 0);
	assert_int_equal(end, 64);		/* the extension is the last */
	bat()[1] = htole32(7);
	assert_int_equal(check(&err, &end), -EINVAL);
	assert_string_equal(im.why,
			    "BAT entry points at the format extension cluster");
	assert_int_equal(err.entry, 1);
	assert_int_equal(err.other, PRL_ENTRY_EXT);
	assert_int_equal(err.value, 56);
}

static void expect_bat_error(__u32 entry, __u64 value, const char *why)
{
	struct prl_bat_err err;
	__u64 end;

	assert_int_equal(check(&err, &end), -EINVAL);
	assert_string_equal(im.why, why);
	assert_int_equal(err.entry, entry);
	assert_int_equal(err.value, value);
}

static void test_bat_entries(void **state)
{
	(void)state;
	mk_v2();
	bat()[2] = htole32(9);			/* cluster 9 ends at 80 > 72 */
	expect_bat_error(2, 72, "BAT entry points past the end of the image");
	mk_v2();
	im.dev_sectors = 8 + 8 * 8 - 1;		/* last cluster cut short */
	bat()[4] = htole32(8);
	expect_bat_error(4, 64, "BAT entry points past the end of the image");
	mk_v2();
	bat()[5] = htole32(0x80000000);		/* overflow guard */
	expect_bat_error(5, 0x80000000ULL * 8,
			 "BAT entry points past the end of the image");
	mk_v1();
	bat()[1] = htole32(0);
	bat()[3] = htole32(0x1);		/* sector 1 = data_off: fine */
	bat()[6] = htole32(0x0);
	{
		struct prl_bat_err err;
		__u64 end;

		assert_int_equal(check(&err, &end), 0);
	}
	mk_v1();
	im.h.data_off = htole32(8);
	bat()[3] = htole32(2);			/* into header/BAT */
	expect_bat_error(3, 2, "BAT entry points into the header or BAT");
	mk_v1();
	bat()[7] = htole32(5);			/* off the grid that starts at 1 */
	expect_bat_error(7, 5, "BAT entry is not on a cluster boundary");
}

static void test_duplicates(void **state)
{
	struct prl_bat_err err;
	__u64 end;

	(void)state;
	mk_v2();
	bat()[1] = htole32(3);
	bat()[2] = htole32(2);
	bat()[6] = htole32(3);
	assert_int_equal(check(&err, &end), -EINVAL);
	assert_string_equal(im.why, "Two BAT entries point at the same cluster");
	assert_int_equal(err.entry, 1);
	assert_int_equal(err.other, 6);
	assert_int_equal(err.value, 24);
	mk_v1();				/* v1: same cluster, in sectors */
	bat()[0] = htole32(9);
	bat()[7] = htole32(9);
	assert_int_equal(check(&err, &end), -EINVAL);
	assert_int_equal(err.entry, 0);
	assert_int_equal(err.other, 7);

	/* No scratch: each entry alone, the same end, duplicates not seen. */
	mk_v2();
	bat()[1] = htole32(3);
	bat()[6] = htole32(3);
	bat()[2] = htole32(5);
	assert_int_equal(parse(), 0);
	assert_int_equal(prl_check_bat(&im.g, bat(), im.dev_sectors, NULL, &end,
				       &err, &im.why), 0);
	assert_int_equal(end, 6 * im.g.cluster_sectors);	/* entry 5, in clusters */
	bat()[2] = htole32(1000000);
	assert_int_equal(prl_check_bat(&im.g, bat(), im.dev_sectors, NULL, &end,
				       &err, &im.why), -EINVAL);
	assert_int_equal(err.entry, 2);
}

/* ---- format extension ------------------------------------------------ */

/* An extension cluster (4 KiB, as mk_v2's clusters) being built. */
static unsigned char ext[4096];
static size_t ext_pos;

static void ext_begin(void)
{
	memset(ext, 0, sizeof(ext));
	ext_pos = sizeof(struct prl_ext_header);
}

static void ext_feature(__u64 magic, __u64 flags, const void *data, __u32 len)
{
	struct prl_ext_feature fh = {
		.magic = htole64(magic), .flags = htole64(flags),
		.data_size = htole32(len),
	};

	memcpy(ext + ext_pos, &fh, sizeof(fh));
	memcpy(ext + ext_pos + sizeof(fh), data, len);
	ext_pos += sizeof(fh) + ((len + 7) & ~7U);
}

/* A bitmap feature for mk_v2's disk: 60 sectors at @gran, one L1 entry. */
static void ext_bitmap(__u64 size, __u32 gran, __u32 l1_size, __u64 l1)
{
	unsigned char d[sizeof(struct prl_ext_dirty_bitmap) + 4 * 8] = { 0 };
	struct prl_ext_dirty_bitmap bm = {
		.size = htole64(size), .granularity = htole32(gran),
		.l1_size = htole32(l1_size),
	};
	__le64 e = htole64(l1);

	memset(bm.id, 0xab, sizeof(bm.id));
	memcpy(d, &bm, sizeof(bm));
	memcpy(d + sizeof(bm), &e, sizeof(e));
	ext_feature(PRL_EXT_DIRTY_BITMAP, 0, d, sizeof(bm) + 8 * l1_size);
}

static void test_ext_features(void **state)
{
	struct prl_ext_info info;
	const char *why = NULL;
	unsigned char copy[512];
	int i;

	(void)state;
	mk_v2();
	assert_int_equal(parse(), 0);
	assert_int_equal(prl_bitmap_l1_size(60, 8, 4096), 1);
	assert_int_equal(prl_bitmap_l1_size(4096ULL * 8 + 1, 1, 4096), 2);

	ext_begin();
	ext_bitmap(60, 8, 1, 40);
	ext_feature(0x1234, PRL_EXT_FLAG_TRANSIT, "abc", 3);
	ext_feature(0x5678, 0, "x", 1);
	ext_bitmap(61, 8, 1, 48);		/* another disk's size: dropped */
	assert_int_equal(prl_parse_ext(ext, sizeof(ext), &im.g, &info, &why), 0);
	assert_int_equal(info.nr_bitmaps, 1);
	assert_int_equal(info.bitmap.granularity, 8);
	assert_int_equal(info.bitmap.l1_size, 1);
	assert_int_equal(info.bitmap.l1_pos, 24 + 24 + 32);
	assert_int_equal(info.nr_transit, 1);
	assert_int_equal(info.transit_bytes, 24 + 8);
	memset(copy, 0xee, sizeof(copy));
	prl_ext_copy_transit(ext, sizeof(ext), copy);
	assert_memory_equal(copy, ext + 24 + 24 + 40, 24 + 8);
	assert_int_equal(copy[24 + 8], 0xee);
	assert_int_equal(info.nr_dropped, 2);
	assert_int_equal(info.necessary, 0);

	/* Any number of TRANSIT features is kept, not just the first few. */
	ext_begin();
	for (i = 0; i < 12; i++)
		ext_feature(0x1000 + i, PRL_EXT_FLAG_TRANSIT, "abcdefgh", i % 9);
	assert_int_equal(prl_parse_ext(ext, sizeof(ext), &im.g, &info, &why), 0);
	assert_int_equal(info.nr_transit, 12);
	assert_int_equal(info.nr_dropped, 0);
	assert_true(info.transit_bytes <= sizeof(copy));
	prl_ext_copy_transit(ext, sizeof(ext), copy);
	assert_memory_equal(copy, ext + 24, info.transit_bytes);

	ext_begin();
	ext_feature(0x9999, PRL_EXT_FLAG_NECESSARY, "", 0);
	assert_int_equal(prl_parse_ext(ext, sizeof(ext), &im.g, &info, &why), 0);
	assert_int_equal(info.necessary, 1);

	ext_begin();
	ext_bitmap(60, 3, 1, 40);		/* granularity not a power of 2 */
	ext_bitmap(60, 8, 2, 40);		/* L1 of the wrong size */
	assert_int_equal(prl_parse_ext(ext, sizeof(ext), &im.g, &info, &why), 0);
	assert_int_equal(info.nr_bitmaps, 0);
	assert_int_equal(info.nr_dropped, 2);
}

static void test_ext_layout(void **state)
{
	struct prl_ext_info info;
	struct prl_ext_feature fh = { .magic = htole64(0x1234),
				      .data_size = htole32(5000) };
	const char *why = NULL;

	(void)state;
	mk_v2();
	assert_int_equal(parse(), 0);
	/* Features all the way to the end, no end marker. */
	ext_begin();
	while (ext_pos + 24 + 8 <= sizeof(ext))
		ext_feature(0x1234, 0, "12345678", 8);
	assert_int_equal(prl_parse_ext(ext, sizeof(ext), &im.g, &info, &why),
			 -EINVAL);
	assert_string_equal(why, "Format extension has no end of features");
	/* A feature longer than the cluster. */
	ext_begin();
	memcpy(ext + ext_pos, &fh, sizeof(fh));
	assert_int_equal(prl_parse_ext(ext, sizeof(ext), &im.g, &info, &why),
			 -EINVAL);
	assert_string_equal(why, "Format extension feature overruns its cluster");
	/* The same with a data_size that wraps when padded. */
	fh.data_size = htole32(0xfffffffd);
	memcpy(ext + ext_pos, &fh, sizeof(fh));
	assert_int_equal(prl_parse_ext(ext, sizeof(ext), &im.g, &info, &why),
			 -EINVAL);
}

static void test_check_l1(void **state)
{
	__u64 scratch[16], end = 0;
	__le64 l1[3];
	const char *why = NULL;

	(void)state;
	mk_v2();
	bat()[0] = htole32(2);			/* data cluster at sector 16 */
	im.h.ext_off = htole64(24);
	assert_int_equal(parse(), 0);
	l1[0] = htole64(32);
	l1[1] = htole64(1);			/* all set: no cluster */
	l1[2] = htole64(0);
	assert_int_equal(prl_check_l1(&im.g, bat(), l1, 3, im.dev_sectors,
				      scratch, &end, &why), 0);
	assert_int_equal(end, 40);
	/* Into a BAT entry's cluster, ext_off's, each other's, the header. */
	l1[1] = htole64(16);
	assert_int_equal(prl_check_l1(&im.g, bat(), l1, 3, im.dev_sectors,
				      scratch, &end, &why), -EINVAL);
	assert_string_equal(why, "Dirty bitmap shares a cluster with other data");
	l1[1] = htole64(24);
	assert_int_equal(prl_check_l1(&im.g, bat(), l1, 3, im.dev_sectors,
				      scratch, &end, &why), -EINVAL);
	l1[1] = htole64(32);
	assert_int_equal(prl_check_l1(&im.g, bat(), l1, 3, im.dev_sectors,
				      scratch, &end, &why), -EINVAL);
	l1[1] = htole64(4);
	assert_int_equal(prl_check_l1(&im.g, bat(), l1, 3, im.dev_sectors,
				      scratch, &end, &why), -EINVAL);
	assert_string_equal(why, "Dirty bitmap points outside the data area");
	/* Off the grid, past the end, absurdly far. */
	l1[1] = htole64(44);
	assert_int_equal(prl_check_l1(&im.g, bat(), l1, 3, im.dev_sectors,
				      scratch, &end, &why), -EINVAL);
	l1[1] = htole64(im.dev_sectors);
	assert_int_equal(prl_check_l1(&im.g, bat(), l1, 3, im.dev_sectors,
				      scratch, &end, &why), -EINVAL);
	l1[1] = htole64(~0ULL);
	assert_int_equal(prl_check_l1(&im.g, bat(), l1, 3, im.dev_sectors,
				      scratch, &end, &why), -EINVAL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_v2_valid),
		cmocka_unit_test(test_v1_valid),
		cmocka_unit_test(test_empty_end_is_data_off),
		cmocka_unit_test(test_in_use_values),
		cmocka_unit_test(test_in_use_stamps),
		cmocka_unit_test(test_bad_magic_version),
		cmocka_unit_test(test_cluster_size),
		cmocka_unit_test(test_bat_size),
		cmocka_unit_test(test_nb_sectors),
		cmocka_unit_test(test_data_off),
		cmocka_unit_test(test_ext_off),
		cmocka_unit_test(test_bat_entries),
		cmocka_unit_test(test_duplicates),
		cmocka_unit_test(test_ext_features),
		cmocka_unit_test(test_ext_layout),
		cmocka_unit_test(test_check_l1),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
