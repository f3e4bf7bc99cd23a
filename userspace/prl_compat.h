/* SPDX-License-Identifier: GPL-2.0 */
/*
 * What the kernel's headers give kernel/prl_format.[ch] and userspace lacks.
 * The userspace build force-includes this file (-include).
 */
#ifndef PRL_COMPAT_H
#define PRL_COMPAT_H

#ifndef __packed
#define __packed __attribute__((packed))
#endif
#ifndef BIT
#define BIT(nr) (1UL << (nr))
#endif
#ifndef BIT_ULL
#define BIT_ULL(nr) (1ULL << (nr))
#endif

#endif /* PRL_COMPAT_H */
