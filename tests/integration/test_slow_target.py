# -*- coding: utf-8 -*-
# Copyright: (c) 2026, vmbackup.qemu developers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

"""A fleecing backup to a slow share (a FUSE folder limited to 8 MiB/s, whose
writes block QEMU's I/O threads as NFS does) while the guest writes all over
its data:

* the backup holds the disk as it was at the instant (on QEMU before 8.0 the
  job read some of the guest's newer blocks through the view: quirks.py);
* the guest's writes take about as long as with no backup running. The bound
  is coarse (p99 under 5x the baseline's) so that a busy machine does not
  fail it; with QEMU's 64 parallel copies p99 was 50-100x.
  bench/guest_latency.py measures it with medians and spread."""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import os
import random
import time

from harness.checks import assert_restores_to, backup_args, guest_content
from harness.qemu import DiskSpec
from harness.slowfs import SlowShare

MIB = 1024 * 1024
DATA = 128 * MIB         # 16 s at the share's rate
SHARE_RATE = 8 * MIB


def timed_writes(vm, rng, until=None, count=None):
    """Seconds each 4 KiB guest write over the written data took, sorted."""
    took = []
    while (count is None or len(took) < count) and not (until and until()):
        start = time.monotonic()
        vm.write('vda', rng.randrange(DATA // 4096) * 4096, 4096, 0x60 + len(took) % 64)
        took.append(time.monotonic() - start)
    return sorted(took)


def p99(samples):
    return samples[int(0.99 * (len(samples) - 1))]


def test_guest_writes_neither_wait_for_a_slow_target_nor_reach_the_backup(make_vm, ansible, workdir):
    vm = make_vm(disks=[DiskSpec('vda', size=256 * MIB)])
    vm.qmp('cont')
    for offset in range(0, DATA, 16 * MIB):
        vm.write('vda', offset, 16 * MIB, 0x51)
    rng = random.Random(7)
    baseline = timed_writes(vm, rng, count=300)
    share = os.path.join(workdir, 'share')
    with SlowShare(os.path.join(workdir, 'share-backing'), share, SHARE_RATE):
        at_instant = guest_content(vm, 'instant', disks=('vda',))
        started = time.monotonic()
        proc = ansible.spawn('qemu_blockdev_backup', backup_args(vm, share, level='full', fleecing=True))
        vm.wait_for_job()
        during = timed_writes(vm, rng, until=lambda: proc.poll() is not None)
        result = ansible.collect(proc)
        took = time.monotonic() - started
        assert not result['failed'], result['msg']
        assert_restores_to(vm, result, at_instant)
    assert len(during) > 500, 'only %d guest writes raced the backup' % len(during)
    assert took < 4 * DATA / SHARE_RATE, 'the backup took %.1f s: slower than the share allows' % took
    assert p99(during) < 5 * max(p99(baseline), 0.002), (
        'guest writes during the backup: p99 %.1f ms over %d writes, baseline p99 %.1f ms'
        % (p99(during) * 1000, len(during), p99(baseline) * 1000))
