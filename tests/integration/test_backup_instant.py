# -*- coding: utf-8 -*-
# Copyright: (c) 2026, vmbackup.qemu developers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

"""One instant for all disks, against writers racing the backup's start
(harness/racing.py says what holds one instant and how it is told). An
incremental right after must hold all the rest."""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import os

import pytest

from harness.checks import expected_route
from harness.qemu import DiskSpec
from harness.racing import BLOCK, assert_one_instant, instant_window, race

MIB = 1024 * 1024
DISK_SIZE = 256 * MIB


@pytest.mark.parametrize('round_', range(3))
def test_racing_writers_get_one_instant(make_vm, ansible, workdir, round_):
    vm = make_vm(disks=[DiskSpec('vda', size=DISK_SIZE), DiskSpec('vdb', size=DISK_SIZE)],
                 name='race%d' % round_, test_monitors=3)
    vm.qmp('cont')
    vm.monitor().clear_events()
    repo = os.path.join(workdir, 'repo')
    os.mkdir(repo)
    args = {'socket': vm.socket, 'target_dir': repo, 'fleece_dir': workdir}
    writers, full = race(vm, ['vda', 'vdb'], DISK_SIZE // BLOCK,
                         lambda: ansible.ok('qemu_blockdev_backup', dict(args, level='full')))
    route = expected_route(vm)
    assert full['fleecing_route'] == route
    if route == 'job':
        assert full['pause_seconds'] == 0 and full['cbw_timeout'] is None
    else:
        assert full['pause_seconds'] > 0
    images = dict((item['disk'], item['file']) for item in full['disks'])
    assert_one_instant(images, writers, instant_window(vm, route), route, vm.qemu, workdir)
    # Everything after the instant is in the incremental that follows.
    incremental = ansible.ok('qemu_blockdev_backup', args)
    assert incremental['level'] == 'incremental'
    for item in incremental['disks']:
        identical, output = vm.qemu.compare(item['file'], vm.save_shadow(item['disk'], 'end'), 'qcow2', 'raw')
        assert identical, output
    assert vm.run_state() == 'running'
