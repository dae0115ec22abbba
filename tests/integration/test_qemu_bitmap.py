# -*- coding: utf-8 -*-
# Copyright: (c) 2026, vmbackup.qemu developers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

"""qemu_bitmap against a real QEMU, run through ansible as users run it."""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import os
import subprocess

from harness.qemu import DiskSpec

MIB = 1024 * 1024


def by_disk(result):
    return dict((b['disk'], b) for b in result['bitmaps'])


def test_present_converges_on_every_disk(vm, ansible):
    args = {'socket': vm.socket, 'name': 'nightly'}
    result = ansible.converge('qemu_bitmap', args)
    assert result['changed'] is True
    assert sorted(c['disk'] for c in result['changes']) == ['vda', 'vdb']
    assert set(by_disk(result)) == {'vda', 'vdb'}
    for disk in ('vda', 'vdb'):
        bitmap = vm.bitmaps(disk)['nightly']
        assert bitmap['persistent'] is True and bitmap['recording'] is True
        assert by_disk(result)[disk]['node'] == vm.format_node(disk)
        assert by_disk(result)[disk]['granularity'] == bitmap['granularity']


def test_check_mode_creates_nothing(vm, ansible):
    result = ansible.ok('qemu_bitmap', {'socket': vm.socket, 'name': 'nightly'}, check=True, diff=True)
    assert result['changed'] is True
    assert result['diff']['before']['bitmaps'] == {'vda': None, 'vdb': None}
    assert result['diff']['after']['bitmaps']['vda']['name'] == 'nightly'
    assert vm.bitmaps('vda') == {} and vm.bitmaps('vdb') == {}


def test_bitmap_tracks_guest_writes(vm, ansible):
    ansible.ok('qemu_bitmap', {'socket': vm.socket, 'name': 'b', 'granularity': 65536})
    vm.write('vda', 1 * MIB, 65536, 0x41)
    vm.write('vda', 3 * MIB + 512, 512, 0x42)   # dirties one 64 KiB chunk
    result = ansible.ok('qemu_bitmap', {'socket': vm.socket, 'name': 'b'})
    assert result['changed'] is False
    assert by_disk(result)['vda']['count'] == 2 * 65536
    assert by_disk(result)['vdb']['count'] == 0


def test_absent_on_one_disk_leaves_the_others(vm, ansible):
    ansible.ok('qemu_bitmap', {'socket': vm.socket, 'name': 'b'})
    result = ansible.converge('qemu_bitmap', {'socket': vm.socket, 'name': 'b', 'disks': ['vdb'],
                                              'state': 'absent'})
    assert result['changes'] == [{'disk': 'vdb', 'change': 'removed'}]
    assert result['bitmaps'] == []
    assert 'b' in vm.bitmaps('vda') and 'b' not in vm.bitmaps('vdb')


def test_cleared_empties_once(vm, ansible):
    ansible.ok('qemu_bitmap', {'socket': vm.socket, 'name': 'b'})
    vm.write('vda', 0, 65536, 0x11)
    assert vm.bitmaps('vda')['b']['count'] == 65536
    result = ansible.converge('qemu_bitmap', {'socket': vm.socket, 'name': 'b', 'state': 'cleared'})
    assert result['changes'] == [{'disk': 'vda', 'change': 'cleared'}]
    assert vm.bitmaps('vda')['b']['count'] == 0
    vm.write('vda', 2 * MIB, 65536, 0x12)
    assert vm.bitmaps('vda')['b']['count'] == 65536  # records again after the clear


def test_disable_and_enable(vm, ansible):
    ansible.ok('qemu_bitmap', {'socket': vm.socket, 'name': 'b'})
    ansible.converge('qemu_bitmap', {'socket': vm.socket, 'name': 'b', 'enabled': False})
    vm.write('vda', 0, 65536, 0x13)
    assert vm.bitmaps('vda')['b']['recording'] is False
    assert vm.bitmaps('vda')['b']['count'] == 0
    ansible.converge('qemu_bitmap', {'socket': vm.socket, 'name': 'b', 'enabled': True})
    assert vm.bitmaps('vda')['b']['recording'] is True


def test_persistent_bitmap_survives_restart(vm, ansible):
    ansible.ok('qemu_bitmap', {'socket': vm.socket, 'name': 'keep'})
    ansible.ok('qemu_bitmap', {'socket': vm.socket, 'name': 'transient', 'persistent': False})
    vm.write('vdb', 5 * MIB, 131072, 0x21)
    assert vm.quit() == 0
    vm.start()
    bitmaps = vm.bitmaps('vdb')
    assert 'transient' not in bitmaps
    assert bitmaps['keep']['count'] == 131072
    assert bitmaps['keep']['persistent'] is True
    assert 'inconsistent' not in bitmaps['keep']
    result = ansible.ok('qemu_bitmap', {'socket': vm.socket, 'name': 'keep'})
    assert result['changed'] is False
    vm.assert_disk_matches_shadow('vdb')


def test_killed_qemu_leaves_inconsistent_bitmap_that_needs_recreate(vm, ansible):
    ansible.ok('qemu_bitmap', {'socket': vm.socket, 'name': 'keep'})
    assert vm.quit() == 0     # written to the image once
    vm.start()
    vm.write('vda', 0, 65536, 0x31)
    vm.kill()
    vm.start()
    assert vm.bitmaps('vda')['keep'].get('inconsistent') is True
    failure = ansible.failed('qemu_bitmap', {'socket': vm.socket, 'name': 'keep'})
    assert 'inconsistent' in failure['msg'] and 'recreate' in failure['msg']
    result = ansible.ok('qemu_bitmap', {'socket': vm.socket, 'name': 'keep', 'recreate': True})
    assert result['changed'] is True
    assert 'inconsistent' not in vm.bitmaps('vda')['keep']
    assert ansible.ok('qemu_bitmap', {'socket': vm.socket, 'name': 'keep'})['changed'] is False


def test_granularity_mismatch_needs_recreate(vm, ansible):
    ansible.ok('qemu_bitmap', {'socket': vm.socket, 'name': 'b', 'granularity': 65536})
    failure = ansible.failed('qemu_bitmap', {'socket': vm.socket, 'name': 'b', 'granularity': 4096})
    assert 'granularity is 65536, 4096 was asked' in failure['msg']
    assert vm.bitmaps('vda')['b']['granularity'] == 65536
    ansible.converge('qemu_bitmap', {'socket': vm.socket, 'name': 'b', 'granularity': 4096,
                                     'recreate': True})
    assert vm.bitmaps('vda')['b']['granularity'] == 4096


def test_bad_granularity_is_refused_before_qemu(vm, ansible):
    failure = ansible.failed('qemu_bitmap', {'socket': vm.socket, 'name': 'b', 'granularity': 1000})
    assert 'power of two' in failure['msg']


def test_filter_above_format_node_is_seen_through(make_vm, ansible):
    vm = make_vm(disks=[DiskSpec('vda', throttle=True)])
    assert vm.block_info('vda')['inserted']['drv'] == 'throttle'
    result = ansible.ok('qemu_bitmap', {'socket': vm.socket, 'name': 'b'})
    assert by_disk(result)['vda']['node'] == 'fmt-vda'
    vm.write('vda', 0, 65536, 0x51)
    assert vm.bitmaps('vda')['b']['count'] == 65536
    assert vm.quit() == 0
    vm.start()
    assert vm.bitmaps('vda')['b']['count'] == 65536


def test_disk_names_and_skipped_disks(make_vm, ansible):
    vm = make_vm(disks=[DiskSpec('vda'), DiskSpec('legacy', attach='drive'),
                        DiskSpec('anonnode', attach='anon'), DiskSpec('rawdisk', fmt='raw'),
                        DiskSpec('cd0', media=False)])
    result = ansible.ok('qemu_bitmap', {'socket': vm.socket, 'name': 'b'})
    assert sorted(by_disk(result)) == ['anonnode', 'legacy', 'vda']
    skipped = dict((s['disk'], s['reason']) for s in result['skipped_disks'])
    assert sorted(skipped) == ['cd0', 'rawdisk']
    assert 'raw' in skipped['rawdisk'] and 'medium' in skipped['cd0']
    # Every alias of a disk selects it: device id, -drive id, format node-name.
    for alias in ('vda', 'fmt-vda', 'legacy', 'anonnode'):
        named = ansible.ok('qemu_bitmap', {'socket': vm.socket, 'name': 'b', 'disks': [alias]})
        assert named['changed'] is False and len(named['bitmaps']) == 1
    failure = ansible.failed('qemu_bitmap', {'socket': vm.socket, 'name': 'b', 'disks': ['rawdisk']})
    assert 'rawdisk' in failure['msg'] and 'persistent: false' in failure['msg']
    transient = ansible.converge('qemu_bitmap', {'socket': vm.socket, 'name': 't', 'disks': ['rawdisk'],
                                                 'persistent': False})
    assert by_disk(transient)['rawdisk']['persistent'] is False
    failure = ansible.failed('qemu_bitmap', {'socket': vm.socket, 'name': 'b', 'disks': ['nosuch']})
    assert 'nosuch' in failure['msg'] and 'vda' in failure['msg'] and 'legacy' in failure['msg']


def test_busy_bitmap_is_not_touched(vm, ansible, workdir):
    ansible.ok('qemu_bitmap', {'socket': vm.socket, 'name': 'b'})
    vm.write('vda', 0, 4 * MIB, 0x61)
    # A backup job that holds the bitmap, kept running by a 1 byte/s limit.
    target = os.path.join(workdir, 'target.qcow2')
    vm.qemu.create_image(target, 64 * MIB)
    vm.qmp('blockdev-add', **{'driver': 'qcow2', 'node-name': 'tgt',
                              'file': {'driver': 'file', 'filename': target}})
    vm.qmp('blockdev-backup', **{'job-id': 'holder', 'device': 'fmt-vda', 'target': 'tgt',
                                 'sync': 'incremental', 'bitmap': 'b', 'speed': 1})
    assert vm.bitmaps('vda')['b']['busy'] is True
    for args in ({'state': 'absent'}, {'state': 'cleared'}, {'enabled': False}):
        failure = ansible.failed('qemu_bitmap', dict(socket=vm.socket, name='b', **args))
        assert 'busy' in failure['msg'] and 'vda' in failure['msg']
    assert 'b' in vm.bitmaps('vdb')  # nothing changed anywhere: one transaction or none
    # Asking for what already is stays fine while busy.
    assert ansible.ok('qemu_bitmap', {'socket': vm.socket, 'name': 'b'})['changed'] is False
    vm.qmp('job-cancel', id='holder')


def test_action_group_sets_socket_for_every_module(vm, ansible, workdir):
    playbook = os.path.join(workdir, 'group.yml')
    with open(playbook, 'w') as handle:
        handle.write('''
- hosts: localhost
  connection: local
  gather_facts: false
  module_defaults:
    group/vmbackup.qemu.qmp:
      socket: %s
      timeout: 5
  tasks:
    - vmbackup.qemu.qemu_bitmap:
        name: fromgroup
''' % vm.socket)
    proc = subprocess.run([ansible.ansible_playbook, '-i', 'localhost,', playbook], env=ansible.env,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, universal_newlines=True,
                          check=False)
    assert proc.returncode == 0, proc.stdout
    assert 'fromgroup' in vm.bitmaps('vda')
