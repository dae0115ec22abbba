# -*- coding: utf-8 -*-
# Copyright: (c) 2026, vmbackup.qemu developers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

"""Bugs of particular QEMU releases that the QMP schema cannot show.

What a QEMU can do is read from its schema (schema.py). A bug leaves the
schema as it was, so here, and only here, the version string decides; each
entry names the upstream fix."""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

# Seconds a copy-before-write may take before the snapshot is broken rather
# than the guest write: under the 60 s after which guests give up on a disk.
CBW_TIMEOUT_WANTED = 45

# QEMU 7.1 to 9.0 keep cbw-timeout as a 32-bit count of nanoseconds: anything
# above 4 s wraps (45 s becomes 2.05 s, 5 s becomes 0.71 s). Fixed by
# "block/copy-before-write: use uint64_t for timeout in nanoseconds" (Fiona
# Ebner, commit 10b1e09ed3c4, first released in QEMU 9.1.0). The schema
# still says uint32 seconds on both sides of the fix: only the version can
# tell. A stable release that took the fix gets the short timeout too, which
# is safe, only less patient.
CBW_TIMEOUT_FIXED_IN = (9, 1)
CBW_TIMEOUT_LARGEST_SAFE = 4    # 4e9 ns < 2**32 ns


def _release(version):
    return (version['major'], version['minor'])


def cbw_timeout(version):
    """The cbw-timeout, in seconds, to give a QEMU of ``version`` (as
    VM.version reports it): the one wanted, or the longest it stores."""
    if _release(version) >= CBW_TIMEOUT_FIXED_IN:
        return CBW_TIMEOUT_WANTED
    return CBW_TIMEOUT_LARGEST_SAFE


# QEMU before 8.0: hbitmap_status() says "not copied yet" for a range that
# begins with clusters copy-before-write has already saved and goes on past
# them, so a snapshot-access read of such a range is served from the live
# disk, with what the guest wrote after the instant: a fleecing backup holds
# a few of the guest's newer blocks (seen on 7.2 with a slow target, where
# the job reads while the guest writes). Fixed by "hbitmap: fix
# hbitmap_status() return value for first dirty bit case" (Andrey
# Zhadchenko, commit a4d5224c2cb6, first released in QEMU 8.0.0; Debian 12's
# 7.2 does not carry it). The schema cannot tell. A job whose requests are one
# cluster long never reads such a range: 64 KiB is the cluster of the job
# (our qcow2 targets) and of the copy-before-write filter (a raw fleece
# image gets block-copy's default).
HBITMAP_STATUS_FIXED_IN = (8, 0)
FLEECE_SAFE_READ_CHUNK = 65536


def fleece_read_chunk(version):
    """The longest request a backup job may make of a fleecing view on a QEMU
    of ``version``, or None where any length reads the instant."""
    if _release(version) >= HBITMAP_STATUS_FIXED_IN:
        return None
    return FLEECE_SAFE_READ_CHUNK
