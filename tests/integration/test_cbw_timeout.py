# -*- coding: utf-8 -*-
# Copyright: (c) 2026, vmbackup.qemu developers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

"""The cbw-timeout in force is the one asked for, or where QEMU cannot store
it (before 9.1: 32-bit nanoseconds, 45 s wraps to 2.05 s) the longest it
can: a guest write whose copy-before-write waits about 3 s leaves the
fleecing backup whole on every QEMU; one that waits longer than the timeout
breaks the backup, cleanly, and never the guest."""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import time

import pytest

from ansible_collections.vmbackup.qemu.plugins.module_utils import quirks

from harness.checks import assert_restores_to, backup_args, guest_content
from harness.qemu import DiskSpec

# The timeout's quirk turns at 9.1: 7.2 and 11.1 stand on either side of it,
# and 10.0 on the same side as 11.1 (each of its tests stalls a guest write
# for up to 46 s there).
pytestmark = pytest.mark.ends_of_matrix

MIB = 1024 * 1024
CLUSTER = 65536
TAIL = 32 * MIB
WRAPPED_45_S = 2.05


def read_rate_for_stall(seconds):
    """A throttle rate at which, once one 64 KiB read has filled the leaky
    bucket, the next read waits ``seconds``: (64 KiB - rate/10) / rate."""
    return int(CLUSTER / (seconds + 0.1))


def stalled_guest_write(make_vm, ansible, repo, stall):
    """Start a fleecing backup, pause its job, and let the guest overwrite
    data the job has not copied yet while reads of the disk wait ``stall``
    seconds. Returns the VM, the backup's result, what the guest had at the
    instant and how long the guest write took."""
    vm = make_vm(disks=[DiskSpec('vda', throttle=True)])
    vm.qmp('cont')
    vm.write('vda', 0, 4 * MIB, 0x61)
    vm.write('vda', TAIL, CLUSTER, 0x62)
    proc = ansible.spawn('qemu_blockdev_backup', backup_args(vm, repo, level='full', speed=MIB))
    job = vm.wait_for_job()['id']
    # A paused backup job stops reading: only the guest's I/O meets the throttle.
    vm.qmp('block-job-pause', device=job)
    vm.wait_for_job(job, statuses=('paused',))
    at_instant = guest_content(vm, 'instant', disks=('vda',))
    vm.qmp('qom-set', path='tg0', property='limits', value={'bps-read': read_rate_for_stall(stall)})
    vm.guest_io('vda', 'read 0 %d' % CLUSTER)
    started = time.monotonic()
    # Copy-before-write must read the old data first, through the throttle.
    # Issued as a guest issues it: the monitor, and the module, go on meanwhile.
    vm.start_write('vda', TAIL, 4096, 0x63)()
    waited = time.monotonic() - started
    vm.qmp('qom-set', path='tg0', property='limits', value={'bps-read': 0})
    vm.qmp('block-job-set-speed', device=job, speed=0)
    vm.qmp('block-job-resume', device=job)
    return vm, ansible.collect(proc), at_instant, waited


def timeout_in_force(vm):
    return quirks.cbw_timeout(vm.qmp('query-version')['qemu'])


def test_copy_before_write_slower_than_a_wrapped_timeout_keeps_the_backup(make_vm, ansible, repo):
    vm, result, at_instant, waited = stalled_guest_write(make_vm, ansible, repo, stall=2.95)
    assert not result['failed'], '%s (the guest write waited %.2f s)' % (result['msg'], waited)
    assert WRAPPED_45_S + 0.3 < waited < timeout_in_force(vm), \
        'the copy-before-write took %.2f s: the test did not stall it as meant' % waited
    assert result['fleecing'] is True and result['cbw_timeout'] == timeout_in_force(vm)
    assert_restores_to(vm, result, at_instant)
    assert vm.leftovers() == []


def test_copy_before_write_past_the_timeout_breaks_the_backup_not_the_guest(make_vm, ansible, repo):
    probe = make_vm(disks=[], name='probe')
    timeout = timeout_in_force(probe)
    probe.kill()
    vm, result, _at_instant, waited = stalled_guest_write(make_vm, ansible, repo, stall=timeout + 1)
    assert timeout - 0.5 < waited < timeout + 0.5, 'the guest write waited %.2f s' % waited
    assert result['failed']
    assert 'Permission denied' in result['msg'] and 'cbw_timeout of %d s' % timeout in result['msg'], result['msg']
    assert 'Cleaning up also failed' not in result['msg'], result['msg']
    # The guest's write went through, nothing of the run is left, and the next backup is whole.
    vm.assert_disk_matches_shadow('vda')
    assert vm.leftovers() == [] and vm.run_state() == 'running'
    again = ansible.ok('qemu_blockdev_backup', backup_args(vm, repo))
    assert again['level'] == 'full'
    assert_restores_to(vm, again, guest_content(vm, 'after', disks=('vda',)))
