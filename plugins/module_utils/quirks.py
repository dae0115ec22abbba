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
