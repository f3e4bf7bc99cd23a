// SPDX-License-Identifier: GPL-2.0
/*
 * libFuzzer target for userspace/descriptor.c: the input is a
 * DiskDescriptor.xml, parsed from memory for a folder that does not exist
 * (so no file is touched).  Whatever the bytes, the parser must not crash
 * or leak, and what it accepts must keep its promises (abort() otherwise):
 * chains end at the one root, and the document written back parses again
 * to the same disk.  A ploop-style snapshot, then undone, runs too.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "descriptor.h"

#define FUZZ_PATH	"/nonexistent-prl-fuzz/d/" PRL_DESC_NAME
#define FUZZ_GUID	"{0f0f0f0f-1234-4321-8888-0123456789ab}"

static void check_chains(const struct prl_desc *d)
{
	const struct prl_desc_image **c;
	struct prl_err err;
	size_t i, k, n;

	for (i = 0; i < d->nr_images; i++) {
		if (prl_desc_chain(d, d->images[i].guid, &c, &n, &err))
			abort();
		if (!n || n > d->nr_shots || c[0] != &d->images[i])
			abort();
		if (prl_desc_shot(d, c[n - 1]->guid)->parent_idx != SIZE_MAX)
			abort();
		for (k = 0; k + 1 < n; k++)	/* only the root may be raw */
			if (c[k]->type != PRL_IMAGE_COMPRESSED)
				abort();
		free(c);
		(void)prl_desc_nr_children(d, d->images[i].guid);
	}
	if (!prl_desc_shot(d, d->top) || !strcmp(d->top, PRL_GUID_BACKUP))
		abort();
}

/* Written back, it must load again as the same disk. */
static void check_roundtrip(const struct prl_desc *d)
{
	struct prl_desc *d2;
	struct prl_err err;
	char *buf;
	size_t len;

	if (prl_desc_format(d, &buf, &len, &err))
		return;		/* e.g. an encoding libxml2 cannot write */
	if (prl_desc_parse_memory(buf, len, FUZZ_PATH, d->flags, &d2, &err))
		abort();
	if (d2->disk_size != d->disk_size || d2->nr_images != d->nr_images ||
	    d2->nr_shots != d->nr_shots || strcmp(d2->top, d->top) ||
	    d2->blocksize != d->blocksize)
		abort();
	prl_desc_free(d2);
	free(buf);
}

/*
 * A snapshot the way ploop takes one (the old top renamed, the new file
 * under the top's GUID), then undone: every step must succeed, except
 * adding the new image where the descriptor refuses it (a layer already
 * in "new.hds", a chain at the depth limit): then nothing may change and
 * the rename must undo.
 */
static void check_edit(struct prl_desc *d)
{
	char top[PRL_GUID_LEN + 1];
	struct prl_err err;
	size_t n = d->nr_images;

	memcpy(top, d->top, sizeof(top));
	if (prl_desc_rename(d, top, FUZZ_GUID, &err))
		return;		/* e.g. that GUID is there already */
	if (strcmp(d->top, FUZZ_GUID))
		abort();
	err.msg[0] = '\0';
	if (prl_desc_add(d, top, PRL_IMAGE_COMPRESSED, "new.hds", FUZZ_GUID,
			 &err)) {
		if (!err.msg[0] || d->nr_images != n ||
		    prl_desc_rename(d, FUZZ_GUID, top, &err) ||
		    strcmp(d->top, top))
			abort();
		check_chains(d);
		return;
	}
	if (prl_desc_set_top(d, top, &err) || d->nr_images != n + 1)
		abort();
	check_chains(d);
	if (prl_desc_set_top(d, FUZZ_GUID, &err) || prl_desc_remove(d, top, &err) ||
	    prl_desc_rename(d, FUZZ_GUID, top, &err) || d->nr_images != n ||
	    strcmp(d->top, top))
		abort();
	check_chains(d);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	/* both path policies, chosen by a bit the XML does not see */
	unsigned int flags = size & 1 ? PRL_DESC_ALLOW_EXTERNAL : 0;
	struct prl_desc *d;
	struct prl_err err;

	err.msg[0] = '\0';
	if (prl_desc_parse_memory((const char *)data, size, FUZZ_PATH, flags,
				  &d, &err)) {
		if (!err.msg[0] || strchr(err.msg, '\n'))
			abort();	/* every refusal says why, on one line */
		return 0;
	}
	check_chains(d);
	check_roundtrip(d);
	check_edit(d);
	prl_desc_free(d);
	return 0;
}
