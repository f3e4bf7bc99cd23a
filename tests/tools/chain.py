#!/usr/bin/env python3
"""What QEMU sees of a Parallels disk: an independent reading of
DiskDescriptor.xml (ElementTree, not prldisk's parser) turned into QEMU
--image-opts backing chains.

    chain.py opts XML [GUID]      print the --image-opts string of GUID's view
                                  (default: the top) down to the root
    chain.py flat XML OUT [GUID]  write that view as a raw file (qemu-img convert)
    chain.py guids XML            print every GUID, one per line, top first
    chain.py top XML              print the top GUID
"""
import os
import subprocess
import sys
import xml.etree.ElementTree as ET

NULL = '{00000000-0000-0000-0000-000000000000}'
TOP = '{5fbaabe3-6958-40ff-92a7-860e329aab41}'


def load(path):
    root = ET.parse(path).getroot()
    d = os.path.dirname(os.path.abspath(path))
    images = {}
    for im in root.iter('Image'):
        f = im.findtext('File').strip()
        images[im.findtext('GUID').strip().lower()] = (
            im.findtext('Type').strip(), os.path.join(d, f))
    parents = {}
    for s in root.iter('Shot'):
        parents[s.findtext('GUID').strip().lower()] = s.findtext('ParentGUID').strip().lower()
    snaps = root.find('Snapshots')
    top = snaps.findtext('TopGUID') if snaps is not None else None
    top = top.strip().lower() if top else TOP
    size = int(root.find('Disk_Parameters').findtext('Disk_size'))
    return images, parents, top, size


def opts(path, guid=None):
    images, parents, top, _ = load(path)
    g = (guid or top).lower()
    parts, prefix = [], ''
    seen = set()
    while g != NULL:
        if g in seen:
            raise SystemExit('cycle at ' + g)
        seen.add(g)
        typ, f = images[g]
        drv = 'raw' if typ == 'Plain' else 'parallels'
        parts.append('%sdriver=%s,%sfile.filename=%s' % (prefix, drv, prefix, f))
        prefix += 'backing.'
        g = parents[g]
    return ','.join(parts)


def main():
    cmd, xml = sys.argv[1], sys.argv[2]
    if cmd == 'opts':
        print(opts(xml, sys.argv[3] if len(sys.argv) > 3 else None))
    elif cmd == 'flat':
        out = sys.argv[3]
        o = opts(xml, sys.argv[4] if len(sys.argv) > 4 else None)
        _, _, _, size = load(xml)
        subprocess.run(['qemu-img', 'convert', '-U', '--image-opts', o, '-O', 'raw', out],
                       check=True)
        # a lower layer can be shorter than the disk: the view is the disk size
        os.truncate(out, size * 512)
    elif cmd == 'guids':
        images, parents, top, _ = load(xml)
        print(top)
        for g in images:
            if g != top:
                print(g)
    elif cmd == 'top':
        print(load(xml)[2])
    else:
        raise SystemExit(__doc__)


if __name__ == '__main__':
    main()
