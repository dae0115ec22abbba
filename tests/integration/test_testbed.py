# -*- coding: utf-8 -*-
# Copyright: (c) 2026, vmbackup.qemu developers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

"""The test bed itself: guest writes reach the disk and the shadow agrees."""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import pytest

from harness.qemu import DiskSpec


def test_guest_writes_land_on_disk_and_shadow(vm):
    vm.write('vda', 0, 65536, 0xaa)
    vm.write('vdb', 1 << 20, 4096, 0x5c)
    vm.write_zeroes('vda', 32768, 4096)
    vm.assert_disk_matches_shadow('vda')
    vm.assert_disk_matches_shadow('vdb')


def test_shadow_comparison_can_fail(vm):
    vm.write('vda', 0, 4096, 0x11)
    with open(vm.shadow('vda'), 'r+b') as shadow:
        shadow.write(b'\x22')
    with pytest.raises(AssertionError):
        vm.assert_disk_matches_shadow('vda')


def test_failed_guest_write_is_reported(vm):
    with pytest.raises(AssertionError):
        vm.guest_io('vda', 'write -P 0x1 %d 4096' % (1 << 40))


def test_restart_keeps_data(make_vm):
    vm = make_vm(disks=[DiskSpec('vda', attach='drive'), DiskSpec('vdb', throttle=True),
                        DiskSpec('vdc', attach='anon')])
    for index, disk in enumerate(('vda', 'vdb', 'vdc')):
        vm.write(disk, index * 65536, 65536, 0x30 + index)
    assert vm.quit() == 0
    vm.start()
    for disk in ('vda', 'vdb', 'vdc'):
        vm.assert_disk_matches_shadow(disk)
    assert vm.qmp('query-status')['status'] == 'prelaunch'
