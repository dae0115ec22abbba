# -*- coding: utf-8 -*-
# Copyright: (c) 2026, vmbackup.qemu developers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

"""qemu_backup_restore and qemu_backup_info on chains made by a real QEMU
while its guest wrote: each point restores to exactly what the guest had."""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import json
import os
import subprocess

import pytest

from harness.checks import tree_digest

# QEMU-independent or covered at both ends: not on the middle QEMU (Makefile).
pytestmark = pytest.mark.ends_of_matrix

MIB = 1024 * 1024


def test_every_point_restores_exactly_in_both_formats(vm, ansible, workdir, history):
    repo, points = history
    levels = [level for _id, level, _s in points]
    assert levels == ['full', 'incremental', 'incremental', 'differential', 'incremental']
    before = tree_digest(repo)
    out = os.path.join(workdir, 'out')
    os.mkdir(out)
    for index, (backup_id, _level, shadows) in enumerate(points):
        for fmt in ('qcow2', 'raw'):
            dest = os.path.join(out, '%s-vda.%s' % (backup_id, fmt))
            args = {'target_dir': repo, 'vm_name': vm.name, 'disk': 'vda', 'backup_id': backup_id,
                    'dest': dest, 'format': fmt}
            # check -> real -> again -> check again, on the first and last points
            run = ansible.converge if index in (0, len(points) - 1) else ansible.ok
            result = run('qemu_backup_restore', args, diff=False)
            assert result['verified'] is True and result['backup_id'] == backup_id
            assert vm.qemu.info(dest)['format'] == fmt
            identical, output = vm.qemu.compare(dest, shadows['vda'], fmt, 'raw')
            assert identical, '%s as %s: %s' % (backup_id, fmt, output)
        # Every disk at once, into a directory.
        directory = os.path.join(out, backup_id)
        result = ansible.ok('qemu_backup_restore', {'target_dir': repo, 'vm_name': vm.name,
                                                    'backup_id': backup_id, 'dest': directory, 'format': 'raw'})
        assert sorted(d['disk'] for d in result['disks']) == ['vda', 'vdb']
        for disk in ('vda', 'vdb'):
            identical, output = vm.qemu.compare(os.path.join(directory, disk + '.raw'), shadows[disk], 'raw', 'raw')
            assert identical, output
    diff_id = points[3][0]
    restored = ansible.ok('qemu_backup_restore', {'target_dir': repo, 'vm_name': vm.name, 'disk': 'vdb',
                                                  'backup_id': diff_id, 'dest': os.path.join(out, 'd.qcow2')})
    assert len(restored['chain']) == 2     # a differential needs only the full
    newest = ansible.ok('qemu_backup_restore', {'target_dir': repo, 'vm_name': vm.name, 'disk': 'vdb',
                                                'dest': os.path.join(out, 'newest.qcow2')})
    assert newest['backup_id'] == points[-1][0]
    info = ansible.ok('qemu_backup_info', {'target_dir': repo, 'verify': True})
    assert info['problems'] == [] and info['newest'] == {vm.name: points[-1][0]}
    assert [b['id'] for b in info['chains'][0]['backups']] == [p[0] for p in points]
    assert all(b['restorable'] for b in info['chains'][0]['backups'])
    assert tree_digest(repo) == before, 'restore or info changed the repository'
    # Sparse where the data is zero: the raw image takes far less than its size.
    assert os.stat(os.path.join(out, points[0][0] + '-vda.raw')).st_blocks * 512 < 16 * MIB


def test_dest_handling_and_errors(vm, ansible, workdir, history):
    repo, points = history
    dest = os.path.join(workdir, 'vda.qcow2')
    args = {'target_dir': repo, 'vm_name': vm.name, 'disk': 'vda', 'dest': dest, 'backup_id': points[0][0]}
    assert ansible.ok('qemu_backup_restore', args)['changed'] is True
    other = dict(args, backup_id=points[1][0])
    failure = ansible.failed('qemu_backup_restore', other)
    assert dest in failure['msg'] and 'force' in failure['msg']
    check = ansible.ok('qemu_backup_restore', dict(other, force=True), check=True)
    assert check['changed'] is True
    assert vm.qemu.compare(dest, points[0][2]['vda'], 'qcow2', 'raw')[0]   # check mode wrote nothing
    ansible.converge('qemu_backup_restore', dict(other, force=True), diff=False)
    assert vm.qemu.compare(dest, points[1][2]['vda'], 'qcow2', 'raw')[0]

    failure = ansible.failed('qemu_backup_restore', dict(args, vm_name='nosuchvm'))
    assert 'nosuchvm' in failure['msg'] and vm.name in failure['msg']
    failure = ansible.failed('qemu_backup_restore', dict(args, disk='vdz'))
    assert 'vdz' in failure['msg'] and 'vda, vdb' in failure['msg']
    failure = ansible.failed('qemu_backup_restore', dict(args, backup_id='20000101T000000Z-0000'))
    assert '20000101T000000Z-0000' in failure['msg'] and points[0][0] in failure['msg']
    failure = ansible.failed('qemu_backup_info', {'target_dir': repo, 'vm_name': 'nosuchvm'})
    assert vm.name in failure['msg']
    failure = ansible.failed('qemu_backup_info', {'target_dir': os.path.join(workdir, 'nothere')})
    assert 'does not exist' in failure['msg']


def test_full_destination_filesystem_leaves_nothing(vm, ansible, workdir, history):
    if os.geteuid() != 0:
        pytest.skip('mounting a small tmpfs needs root')
    repo, points = history
    small = os.path.join(workdir, 'small')
    os.mkdir(small)
    subprocess.run(['mount', '-t', 'tmpfs', '-o', 'size=2m', 'tmpfs', small], check=True)
    try:
        failure = ansible.failed('qemu_backup_restore', {
            'target_dir': repo, 'vm_name': vm.name, 'disk': 'vda', 'dest': os.path.join(small, 'vda.raw'),
            'format': 'raw', 'backup_id': points[0][0]})
        assert 'No space left' in failure['msg'] and 'nothing was left behind' in failure['msg']
        assert os.listdir(small) == []
    finally:
        subprocess.run(['umount', '-l', small], check=False)


def test_damaged_chains_are_reported_and_refused_precisely(vm, ansible, workdir, history):
    repo, points = history
    chain_dir = os.path.join(repo, vm.name, points[0][0])
    missing = os.path.join(chain_dir, '%s.vda.qcow2' % points[1][0])    # a middle incremental
    os.unlink(missing)
    damaged = os.path.join(chain_dir, '%s.vdb.qcow2' % points[2][0])
    behind = os.path.join(chain_dir, '%s.vda.qcow2' % points[2][0])     # damaged, after the missing one
    for path in (damaged, behind):
        with open(path, 'r+b') as handle:       # wreck the refcount table
            handle.seek(65536)
            handle.write(b'\xff' * 65536)
    with open(os.path.join(chain_dir, '.%s.vda.qcow2.partial' % points[4][0]), 'w') as handle:
        handle.write('left by a killed run')
    before = tree_digest(repo)
    info = ansible.ok('qemu_backup_info', {'target_dir': repo, 'vm_name': vm.name, 'verify': True})
    problems = dict(((p['file'], p['problem'].split(':')[0]) for p in info['problems']))
    assert problems.get(missing) == 'image is missing', info['problems']
    assert problems.get(damaged) == 'image is damaged', info['problems']
    assert problems.get(behind) == 'image is damaged', info['problems']
    assert any(p['severity'] == 'warning' and 'orphan' in p['problem'] for p in info['problems'])
    restorable = dict((b['id'], b['restorable']) for b in info['chains'][0]['backups'])
    # The last incremental builds on the differential, not on the damaged ones.
    assert restorable == {points[0][0]: True, points[1][0]: False, points[2][0]: False,
                          points[3][0]: True, points[4][0]: True}
    assert info['newest'][vm.name] == points[4][0]
    out = os.path.join(workdir, 'out')
    os.mkdir(out)
    failure = ansible.failed('qemu_backup_restore', {'target_dir': repo, 'vm_name': vm.name, 'disk': 'vda',
                                                     'backup_id': points[2][0], 'dest': os.path.join(out, 'a')})
    # The images are checked several at a time: the first problem, full first, is the one reported.
    assert missing in failure['msg'] and 'missing' in failure['msg'] and behind not in failure['msg']
    failure = ansible.failed('qemu_backup_restore', {'target_dir': repo, 'vm_name': vm.name, 'disk': 'vdb',
                                                     'backup_id': points[2][0], 'dest': os.path.join(out, 'b')})
    assert damaged in failure['msg'] and 'damaged' in failure['msg']
    assert os.listdir(out) == []
    for index in (0, 3, 4):      # the points before the damage, and those beside it
        backup_id, _level, shadows = points[index]
        for disk in ('vda', 'vdb'):
            dest = os.path.join(out, '%s-%s.raw' % (backup_id, disk))
            ansible.ok('qemu_backup_restore', {'target_dir': repo, 'vm_name': vm.name, 'disk': disk,
                                               'backup_id': backup_id, 'dest': dest, 'format': 'raw'})
            assert vm.qemu.compare(dest, shadows[disk], 'raw', 'raw')[0]
    assert tree_digest(repo) == before


@pytest.mark.parametrize('edit', ['wrong_size', 'missing_disk', 'no_such_parent'])
def test_a_manifest_edited_by_hand_is_named_and_refused(vm, ansible, workdir, history, edit):
    """The second backup's manifest, edited: a disk's size that is not its
    image's, a disk gone from it, a parent that does not exist."""
    repo, points = history
    chain_dir = os.path.join(repo, vm.name, points[0][0])
    manifest = os.path.join(chain_dir, points[1][0] + '.json')
    with open(manifest) as handle:
        data = json.load(handle)
    if edit == 'wrong_size':
        data['disks'][0]['virtual_size'] += 65536
    elif edit == 'missing_disk':
        data['disks'] = [d for d in data['disks'] if d['disk'] != 'vda']
    else:
        data['parent'] = '20200101T000000Z-dead'
    with open(manifest, 'w') as handle:
        json.dump(data, handle)
    before = tree_digest(repo)
    info = ansible.ok('qemu_backup_info', {'target_dir': repo, 'vm_name': vm.name, 'verify': True})
    named = [p for p in info['problems']
             if p['severity'] == 'error' and p['backup'] == points[1][0] and p['file'] and p['file'].startswith(chain_dir)]
    assert named, info['problems']
    restorable = dict((b['id'], b['restorable']) for b in info['chains'][0]['backups'])
    assert restorable[points[0][0]] is True and restorable[points[1][0]] is False, restorable
    out = os.path.join(workdir, 'out')
    os.mkdir(out)
    failure = ansible.failed('qemu_backup_restore', {'target_dir': repo, 'vm_name': vm.name, 'disk': 'vdb',
                                                     'backup_id': points[1][0], 'dest': os.path.join(out, 'x')})
    assert points[1][0] in failure['msg'], failure['msg']
    assert os.listdir(out) == []
    dest = os.path.join(out, 'first.raw')
    ansible.ok('qemu_backup_restore', {'target_dir': repo, 'vm_name': vm.name, 'disk': 'vdb',
                                       'backup_id': points[0][0], 'dest': dest, 'format': 'raw'})
    assert vm.qemu.compare(dest, points[0][2]['vdb'], 'raw', 'raw')[0]
    assert tree_digest(repo) == before
