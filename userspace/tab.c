// SPDX-License-Identifier: GPL-2.0
/*
 * prldisk tab activate|deactivate|list [NAME...]: the disks of
 * /etc/prldisktab (or --tab FILE), for boot-time activation by
 * prldisk.service and the initramfs hook.  One disk a line, like crypttab:
 *
 *	# name	descriptor (or its folder)	options
 *	ct101	/vz/private/101/root.hdd	cbt
 *
 * Options, comma-separated ("-" or "defaults" for none): ro, cbt, repair,
 * external (--allow-external-paths), noauto (only when named), initramfs
 * (activated by the initramfs, left alone here unless named) and
 * source=DEVICE (for the initramfs: the file system holding the disk).
 * Documentation/prldisk.rst, BOOT-TIME ACTIVATION.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "activate.h"
#include "cli.h"

#define PRLDISKTAB	"/etc/prldisktab"

struct tab_entry {
	char *name, *xml;
	bool ro, cbt, repair, external, noauto, initramfs;
	unsigned int line;
};

struct tab {
	struct tab_entry *e;
	size_t n;
};

static void tab_free(struct tab *t)
{
	size_t i;

	for (i = 0; i < t->n; i++) {
		free(t->e[i].name);
		free(t->e[i].xml);
	}
	free(t->e);
}

static int parse_options(struct tab_entry *e, char *opts, const char *file)
{
	char *save = NULL, *o;

	if (!strcmp(opts, "-") || !strcmp(opts, "defaults"))
		return 0;
	for (o = strtok_r(opts, ",", &save); o; o = strtok_r(NULL, ",", &save)) {
		if (!strcmp(o, "ro"))
			e->ro = true;
		else if (!strcmp(o, "cbt"))
			e->cbt = true;
		else if (!strcmp(o, "repair"))
			e->repair = true;
		else if (!strcmp(o, "external"))
			e->external = true;
		else if (!strcmp(o, "noauto"))
			e->noauto = true;
		else if (!strcmp(o, "initramfs"))
			e->initramfs = true;
		else if (!strncmp(o, "source=", 7) && o[7])
			;	/* the initramfs's: where the descriptor lives */
		else {
			fprintf(stderr, "%s: %s:%u: unknown option '%s' (known: ro, cbt, repair, external, noauto, initramfs, source=DEVICE)\n",
				prog, file, e->line, o);
			return -1;
		}
	}
	return 0;
}

/* Read @file whole; a line that is not right stops it all (say which). */
static int tab_load(const char *file, struct tab *t)
{
	char *line = NULL, *save, *f[4];
	size_t cap = 0;
	unsigned int nr = 0;
	FILE *fp;
	int rc = 0, k;

	memset(t, 0, sizeof(*t));
	fp = fopen(file, "re");
	if (!fp) {
		fprintf(stderr, "%s: cannot read %s: %s\n", prog, file, strerror(errno));
		return EX_FAIL;
	}
	while (!rc && getline(&line, &cap, fp) >= 0) {
		struct tab_entry e = { .line = ++nr };

		line[strcspn(line, "#\n")] = 0;
		save = NULL;
		for (k = 0; k < 4; k++)
			f[k] = strtok_r(k ? NULL : line, " \t", &save);
		if (!f[0])
			continue;
		if (!f[1] || f[3]) {
			fprintf(stderr, "%s: %s:%u: want NAME DESCRIPTOR [OPTIONS]\n",
				prog, file, nr);
			rc = EX_FAIL;
		} else if (!prl_valid_name(f[0])) {
			fprintf(stderr, "%s: %s:%u: '%s' is not a valid device name\n",
				prog, file, nr, f[0]);
			rc = EX_FAIL;
		} else if (f[1][0] != '/') {
			fprintf(stderr, "%s: %s:%u: '%s': the descriptor path must be absolute\n",
				prog, file, nr, f[1]);
			rc = EX_FAIL;
		} else if (f[2] && parse_options(&e, f[2], file)) {
			rc = EX_FAIL;
		} else {
			e.name = prl_xstrdup(f[0]);
			e.xml = prl_xstrdup(f[1]);
			t->e = realloc(t->e, (t->n + 1) * sizeof(*t->e));
			if (!t->e)
				abort();
			t->e[t->n++] = e;
		}
	}
	free(line);
	fclose(fp);
	if (rc)
		tab_free(t);
	return rc;
}

/*
 * Entries the command line names; when it names none, all but the noauto
 * ones and those the initramfs activates (a root file system stays up).
 */
static bool chosen(const struct tab_entry *e, int argc, char **argv)
{
	int i;

	if (!argc)
		return !e->noauto && !e->initramfs;
	for (i = 0; i < argc; i++)
		if (!strcmp(argv[i], e->name))
			return true;
	return false;
}

static bool is_active(const char *name)
{
	struct dmdev o;
	struct prl_err err;

	return !dm_query(name, 0, &o, &err) && o.exists && ours(&o);
}

static int tab_activate(const struct tab_entry *e)
{
	char *argv[] = { e->xml, NULL };

	if (is_active(e->name)) {
		printf("%s is active already\n", e->name);
		return EX_OK;
	}
	cli.name = e->name;
	cli.read_only = e->ro;
	cli.cbt = e->cbt;
	cli.repair = e->repair;
	cli.external = e->external;
	return cmd_activate(1, argv);
}

/* By the descriptor where it is there (the top file is cut), else by name. */
static int tab_deactivate(const struct tab_entry *e)
{
	char *argv[] = { access(e->xml, F_OK) ? e->name : e->xml, NULL };

	cli.name = e->name;
	cli.external = e->external;
	return cmd_deactivate(1, argv);
}

int cmd_tab(int argc, char **argv)
{
	const char *file = cli.tab ? cli.tab : PRLDISKTAB;
	json_object *arr;
	struct tab t;
	int rc, r, i, n;
	size_t k;

	if (argc < 1 || (strcmp(argv[0], "activate") && strcmp(argv[0], "deactivate") &&
			 strcmp(argv[0], "list")))
		return die_usage("tab takes activate, deactivate or list, then NAMEs (default: all)");
	rc = tab_load(file, &t);
	if (rc)
		return rc;
	/* Its paths are absolute; a NAME must not be taken for a folder here. */
	if (chdir("/"))
		return EX_FAIL;
	for (i = 1; i < argc; i++) {
		for (k = 0; k < t.n && strcmp(t.e[k].name, argv[i]); k++)
			;
		if (k == t.n) {
			fprintf(stderr, "%s: %s has no disk %s\n", prog, file, argv[i]);
			rc = EX_FAIL;
		}
	}
	dm_setup();
	if (!strcmp(argv[0], "list")) {
		arr = json_object_new_array();
		for (k = 0; k < t.n; k++) {
			json_object *o = json_object_new_object();

			json_object_object_add(o, "name", json_object_new_string(t.e[k].name));
			json_object_object_add(o, "descriptor", json_object_new_string(t.e[k].xml));
			json_object_object_add(o, "active", json_object_new_boolean(is_active(t.e[k].name)));
			json_object_object_add(o, "auto", json_object_new_boolean(!t.e[k].noauto));
			json_object_object_add(o, "initramfs", json_object_new_boolean(t.e[k].initramfs));
			json_object_array_add(arr, o);
			if (!cli.json)
				printf("%-20s %-8s %s\n", t.e[k].name,
				       is_active(t.e[k].name) ? "active" : "inactive", t.e[k].xml);
		}
		if (cli.json)
			json_print(arr);
		else
			json_object_put(arr);
		goto out;
	}
	/* Activate in the file's order, deactivate in reverse; go on past errors. */
	n = (int)t.n;
	for (i = 0; i < n; i++) {
		const struct tab_entry *e = &t.e[strcmp(argv[0], "activate") ? n - 1 - i : i];

		if (!chosen(e, argc - 1, argv + 1))
			continue;
		r = strcmp(argv[0], "activate") ? tab_deactivate(e) : tab_activate(e);
		if (r) {
			fprintf(stderr, "%s: %s: %s %s failed\n", prog, file, argv[0], e->name);
			rc = EX_FAIL;
		}
	}
out:
	tab_free(&t);
	return rc;
}
