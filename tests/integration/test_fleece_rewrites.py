# -*- coding: utf-8 -*-
# Copyright: (c) 2026, vmbackup.qemu developers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

"""A fleecing backup holds the disk as it was at its instant, while the guest
rewrites data the job has not copied yet, all over the disk, as fast as it
can: every rewrite begins after the instant, so the backup must equal the
disk before the first of them. Where QEMU has discard-source (9.1+), the
job drops what it copied from the fleece image as it goes, and the rewrites
of those areas then bypass copy-before-write: the backup must still hold the
instant."""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import random

import pytest

from harness.checks import assert_restores_to, backup_args, guest_content
from harness.qemu import DiskSpec

MIB = 1024 * 1024
BLOCK = 4096
DATA = 32 * MIB


@pytest.mark.parametrize('round_', range(2))
def test_rewrites_of_written_data_stay_out_of_the_backup(make_vm, ansible, repo, round_):
    vm = make_vm(disks=[DiskSpec('vda')])
    vm.qmp('cont')
    vm.write('vda', 0, DATA, 0x41)
    at_instant = guest_content(vm, 'instant', disks=('vda',))
    proc = ansible.spawn('qemu_blockdev_backup', backup_args(vm, repo, level='full', speed=8 * MIB))
    vm.wait_for_job()     # the job starts after the instant
    rng = random.Random(round_)
    rewrites = 0
    while proc.poll() is None:
        length = rng.choice((512, 4096, 65536, 262144, 1536))
        vm.write("vda", rng.randrange((DATA - length) // 512) * 512, length, 0x50 + rewrites % 100)
        rewrites += 1
    result = ansible.collect(proc)
    assert not result['failed'], result['msg']
    assert rewrites > 200, 'only %d rewrites raced the backup' % rewrites
    assert result['discard_source'] is (vm.qemu.version >= (9, 1)), result
    assert_restores_to(vm, result, at_instant)
    vm.assert_disk_matches_shadow('vda')
