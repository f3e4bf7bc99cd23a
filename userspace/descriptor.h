/* SPDX-License-Identifier: GPL-2.0 */
/*
 * DiskDescriptor.xml (Documentation: ../shared/specs/prl-xml.txt): the
 * disk's parameters, its images and the snapshot tree over them.
 *
 * The file is untrusted input.  prl_desc_load() parses it with libxml2
 * (no network, no entity expansion, no DTD loading), checks every rule of
 * the spec and refuses what it cannot serve with one clear message.  The
 * parsed document is kept, so elements this code does not know survive a
 * prl_desc_save(), which replaces the file atomically.
 */
#ifndef PRL_DESCRIPTOR_H
#define PRL_DESCRIPTOR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "util.h"

/* "{xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx}", lower case. */
#define PRL_GUID_LEN		38
#define PRL_GUID_NULL		"{00000000-0000-0000-0000-000000000000}"
#define PRL_GUID_TOP		"{5fbaabe3-6958-40ff-92a7-860e329aab41}"
#define PRL_GUID_BACKUP		"{704718e1-2314-44c8-9087-d78ed36b0f4e}"

#define PRL_DESC_NAME		"DiskDescriptor.xml"

enum prl_image_type {
	PRL_IMAGE_PLAIN,	/* "Plain": a raw file, only as the root */
	PRL_IMAGE_COMPRESSED,	/* "Compressed": a Parallels expandable image */
};

struct prl_desc_image {
	char guid[PRL_GUID_LEN + 1];
	enum prl_image_type type;
	char *file;		/* as written in the XML */
	char *path;		/* absolute: the descriptor's folder + file */
	void *node;		/* its <Image> element (xmlNodePtr) */
	size_t shot;		/* index of its Shot in prl_desc.shots */
};

struct prl_desc_shot {
	char guid[PRL_GUID_LEN + 1];
	char parent[PRL_GUID_LEN + 1];	/* PRL_GUID_NULL for the root */
	void *node;		/* its <Shot> element */
	size_t image;		/* index of its Image in prl_desc.images */
	size_t parent_idx;	/* index of the parent in shots, SIZE_MAX: root */
};

struct prl_desc {
	char *path;		/* absolute path of the XML file */
	char *dir;		/* its folder */
	char *root_name;	/* "Parallels_disk_image" or "Virtuozzo_disk_image" */
	uint64_t disk_size;	/* sectors (Disk_size) */
	uint32_t cylinders, heads, sectors;
	uint32_t blocksize;	/* Storage Blocksize: cluster size in sectors */
	/* Parallels Desktop's LogicSectorSize / PhysicalSectorSize, in bytes
	 * (512..4096, a power of two), 0 where the element is absent. */
	uint32_t logical_sector_size, physical_sector_size;
	size_t nr_images;
	struct prl_desc_image *images;
	size_t nr_shots;
	struct prl_desc_shot *shots;
	char top[PRL_GUID_LEN + 1];	/* GUID of the top (active) image */
	void *doc;		/* the parsed document (xmlDocPtr) */
	unsigned int flags;	/* prl_desc_load() flags, kept for the edits */
	bool held;		/* @dir is held (folder.h) until prl_desc_free() */
};

/* prl_desc_load() flags */
#define PRL_DESC_ALLOW_EXTERNAL	0x1	/* absolute / escaping File paths */

/*
 * Limits, each refused with a message before it costs time or memory.
 * Real descriptors are a few KiB (ploop's: about 250 bytes per image, no
 * attributes); a chain of PRL_MAX_CHAIN images is about 250 KiB.
 *
 * PRL_MAX_CHAIN is the one chain depth used everywhere: a descriptor
 * whose chain from any image down to the root is longer does not load,
 * and activate, deactivate and status stop walking dm tables there.
 */
#define PRL_DESC_MAX_BYTES	(1u << 20)	/* file size */
#define PRL_DESC_MAX_ELEMENTS	65536u		/* bounded by the count of '<' */
#define PRL_DESC_MAX_ATTRS	1024u		/* in all, bounded by the count of '=' */
#define PRL_DESC_MAX_FILE_DEPTH	64u		/* components of a <File> */
#define PRL_MAX_CHAIN		1024u		/* images in one chain */

/*
 * Parse and check @path.  Refused, each with its own message: not XML, a
 * DTD or entities, an unknown root element, Version other than 1.0 (absent
 * is accepted), Disk_Parameters missing or Heads*Cylinders*Sectors !=
 * Disk_size or Padding != 0, a LogicSectorSize or PhysicalSectorSize
 * (both optional) other than 512, 1024, 2048 or 4096, a physical one
 * smaller than the logical one, a Disk_size that is no whole number of
 * logical sectors, no or more than one Storage (split image),
 * Start != 0 or End != Disk_size, Blocksize 0, an Image without GUID/Type/
 * File or with an unknown Type, a Plain image that is not the root, a
 * duplicate GUID, a File that is absolute or leaves the folder (unless
 * PRL_DESC_ALLOW_EXTERNAL), a Shot without an Image or an Image without a
 * Shot, a ParentGUID that names no Shot, zero or several roots, a cycle, a
 * top GUID that names no Shot or is BackupID, numbers that do not fit, a
 * file over PRL_DESC_MAX_BYTES or with more elements or attributes than
 * the limits above (counted before libxml2 parses it), a File longer than
 * PATH_MAX - 1 (or its path in the folder), with a component over
 * NAME_MAX or more than PRL_DESC_MAX_FILE_DEPTH components, a chain deeper
 * than PRL_MAX_CHAIN, two
 * Images naming one file (the same canonical name, or the same device and
 * inode for files that exist) or a File that is the descriptor itself, its
 * lock (".lck"), a temporary or backup copy (".tmp", ".tmp.*", ".bak") or
 * another link to the descriptor or the lock.
 * Files are not opened here (but the folder is checked for symlinks that
 * lead a File outside it, unless PRL_DESC_ALLOW_EXTERNAL).
 *
 * The geometry rule is the spec's (the product equals Disk_size) or what
 * ploop writes: Cylinders = Disk_size / (Heads * Sectors) rounded down
 * (ploop 1.15 makes 1 GiB 2080*16*63 = 2096640 sectors of 2097152).
 */
int prl_desc_load(const char *path, unsigned int flags, struct prl_desc **out,
		  struct prl_err *err);

/*
 * Parallels Desktop's copy of the descriptor at @xml: "@xml.Backup".  When
 * it exists, prl_desc_save() writes it first, identical to the descriptor.
 */
char *prl_desc_backup_path(const char *xml);

/*
 * @path with symlinks resolved (the file's if it exists, else its
 * folder's), absolute: what prl_desc_load() makes d->path of.  The lock
 * goes beside this path, never beside a symlink to it.
 */
char *prl_desc_real_path(const char *path);

/*
 * prl_desc_load() on @len bytes at @buf, as if they were the content of
 * @path (which need not exist: its folder anchors the relative File
 * names, and prl_desc_save() writes there).  prl_desc_load() is this plus
 * reading the file; the fuzzer calls it directly.
 */
int prl_desc_parse_memory(const char *buf, size_t len, const char *path,
			  unsigned int flags, struct prl_desc **out,
			  struct prl_err *err);

/*
 * A new descriptor for @path (not written until prl_desc_save()): Disk_size
 * @disk_size sectors with a CHS geometry that multiplies to it (16 heads,
 * 63 sectors where the size allows, like ploop), one Storage with
 * Blocksize @blocksize and no images yet.
 */
struct prl_desc *prl_desc_new(const char *path, uint64_t disk_size,
			      uint32_t blocksize);
/* (NULL if @disk_size or @blocksize is 0 or the size has no geometry.) */

/*
 * Write the document back atomically (util.h prl_write_file_atomic()).
 * A descriptor without images is refused: it could not be loaded again.
 */
int prl_desc_save(struct prl_desc *d, struct prl_err *err);

/*
 * The document as prl_desc_save() would write it: *@buf is malloc'ed
 * (free() it), @len bytes, not NUL-terminated.
 */
int prl_desc_format(const struct prl_desc *d, char **buf, size_t *len,
		    struct prl_err *err);

void prl_desc_free(struct prl_desc *d);

const struct prl_desc_image *prl_desc_image(const struct prl_desc *d,
					    const char *guid);
const struct prl_desc_shot *prl_desc_shot(const struct prl_desc *d,
					  const char *guid);

/*
 * The chain from @guid down to the root: (*chain)[0] is @guid's image,
 * the last one the root.  *chain is malloc'ed (free() it).
 */
int prl_desc_chain(const struct prl_desc *d, const char *guid,
		   const struct prl_desc_image ***chain, size_t *len,
		   struct prl_err *err);

/* Number of Shots whose parent is @guid. */
size_t prl_desc_nr_children(const struct prl_desc *d, const char *guid);

/*
 * Edits, made to the document and to the arrays above (pointers into the
 * arrays are invalidated).  They check what they can (unknown GUIDs,
 * duplicates) and leave the descriptor unchanged on failure.
 *
 * add: a new Image (with @file relative to the folder) and its Shot with
 * parent @parent (PRL_GUID_NULL for a root).
 * remove: the Image and Shot of @guid (it must have no children).
 * set_parent: re-hang @guid under @parent.
 * set_top: the top image; written as a TopGUID element.
 * set_size: Disk_size, End and the CHS geometry (whole logical sectors).
 */
int prl_desc_add(struct prl_desc *d, const char *guid, enum prl_image_type type,
		 const char *file, const char *parent, struct prl_err *err);
int prl_desc_remove(struct prl_desc *d, const char *guid, struct prl_err *err);
/*
 * delete: the Image and Shot of @guid (not the top), its children re-hung
 * from its parent in the same edit (a deleted root's only child becomes
 * the root; with several children the edit is refused: two roots).
 */
int prl_desc_delete(struct prl_desc *d, const char *guid, struct prl_err *err);
int prl_desc_set_parent(struct prl_desc *d, const char *guid,
			const char *parent, struct prl_err *err);
int prl_desc_set_top(struct prl_desc *d, const char *guid, struct prl_err *err);
int prl_desc_set_size(struct prl_desc *d, uint64_t disk_size,
		      struct prl_err *err);

/*
 * rename: image @guid becomes @new_guid everywhere (its Image and Shot,
 * its children's ParentGUID, TopGUID).  This is how ploop snapshots: the
 * top keeps the predefined GUID PRL_GUID_TOP, so "ploop snapshot" turns
 * the old top into {new} and adds the new file as PRL_GUID_TOP.  ploop
 * 1.15 refuses to snapshot ("Snapshot is in old format") a descriptor
 * whose TopGUID is not PRL_GUID_TOP, so for files ploop must still handle:
 *   prl_guid_new(g); prl_desc_rename(d, PRL_GUID_TOP, g);
 *   prl_desc_add(d, PRL_GUID_TOP, ..., "root.hds.{uuid}", g);
 *   prl_desc_set_top(d, PRL_GUID_TOP);
 */
int prl_desc_rename(struct prl_desc *d, const char *guid, const char *new_guid,
		    struct prl_err *err);

/*
 * set_file: the File of image @guid becomes @file (relative, inside the
 * folder, as for add).  With set_parent this is ploop's snapshot-switch:
 * the top (a leaf) keeps its GUID, gets a fresh file and a new parent:
 *   prl_desc_set_parent(d, d->top, target); prl_desc_set_file(d, d->top, f);
 * (the top itself cannot be removed: a descriptor always has a top).
 */
int prl_desc_set_file(struct prl_desc *d, const char *guid, const char *file,
		      struct prl_err *err);

/* GUIDs: a fresh random one (libuuid); a string checked and lower-cased. */
void prl_guid_new(char out[PRL_GUID_LEN + 1]);
int prl_guid_parse(const char *s, char out[PRL_GUID_LEN + 1]);

#endif /* PRL_DESCRIPTOR_H */
