#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0
"""Helpers for tests/bench/b-fio.sh.

  fio-summary.py metric FIO.json   print "<iops> <MiB/s> <ios>" of the job
                                   (its write side if it wrote, else read)
  fio-summary.py table RESULTS     print the results table

RESULTS has one line per fio run: "<workload> <target> <rep> <iops> <MiB/s>",
target "linear" or "parallels".  A workload "<name>@<base>" is compared with
the dm-linear runs of workload <base> (the same baseline for two cluster
sizes).  Each side is the median over the repeats; the ratio is
median(parallels) / median(dm-linear).
"""
import json
import statistics
import sys

# key, label, unit shown
WORKLOADS = [
    ("randread", "4k randread qd16, allocated", "iops"),
    ("randwrite", "4k randwrite qd16, allocated", "iops"),
    ("seqalloc", "1M seq write qd8, allocating (1M cl.)", "mibps"),
    ("randalloc", "4k randwrite qd16 fsync=32, allocating (1M cl.)", "iops"),
    ("randalloc64k@randalloc",
     "4k randwrite qd16 fsync=32, allocating (64k cl.)", "iops"),
]


def metric(path):
    with open(path) as f:
        job = json.load(f)["jobs"][0]
    side = job["write"] if job["write"]["io_bytes"] else job["read"]
    print("%.1f %.2f %d" % (side["iops"], side["bw"] / 1024.0,
                            side["total_ios"]))


def table(path):
    runs = {}
    with open(path) as f:
        for line in f:
            w = line.split()
            if len(w) != 5:
                continue
            wl, target, _rep, iops, mibps = w
            runs.setdefault((wl, target), []).append(
                {"iops": float(iops), "mibps": float(mibps)})
    fmt = "%-50s %14s %14s %7s  %s"
    print(fmt % ("workload", "dm-linear", "parallels", "ratio",
                 "per-run ratios"))
    for key, label, unit in WORKLOADS:
        name, _, base = key.partition("@")
        lin = runs.get((base or name, "linear"), [])
        prl = runs.get((name, "parallels"), [])
        if not lin or not prl:
            print(fmt % (label, "-", "-", "-", "not run"))
            continue
        lv = [r[unit] for r in lin]
        pv = [r[unit] for r in prl]
        lm, pm = statistics.median(lv), statistics.median(pv)
        u = " IOPS" if unit == "iops" else " MiB/s"
        per = " ".join("%.2f" % (p / l) if l else "-" for l, p in zip(lv, pv))
        print(fmt % (label, "%.0f%s" % (lm, u) if unit == "iops" else
                     "%.1f%s" % (lm, u),
                     "%.0f%s" % (pm, u) if unit == "iops" else
                     "%.1f%s" % (pm, u),
                     "%.2fx" % (pm / lm) if lm else "-", per))


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] not in ("metric", "table"):
        sys.exit(__doc__)
    {"metric": metric, "table": table}[sys.argv[1]](sys.argv[2])
