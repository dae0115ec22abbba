# -*- coding: utf-8 -*-
# Copyright: (c) 2026, vmbackup.qemu developers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

"""Digests catch bit rot that qemu-img check cannot see: one flipped byte
inside a data cluster of a backup made by a real QEMU."""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import json
import os

import pytest

from harness.checks import assert_restores_to, backup_args, guest_content, tree_digest

MIB = 1024 * 1024


def data_offset(vm, image):
    """The file offset of a data cluster that ``image`` itself holds (not its backing)."""
    extents = json.loads(vm.qemu.run_img('map', '--output=json', '-f', 'qcow2', image).stdout)
    for extent in extents:
        if extent.get('depth') == 0 and extent.get('data') and 'offset' in extent:
            return extent['offset']
    raise AssertionError('no data cluster in %s: %s' % (image, extents))


def flip_byte(path, offset):
    with open(path, 'r+b') as handle:
        handle.seek(offset)
        byte = handle.read(1)
        handle.seek(offset)
        handle.write(bytes([byte[0] ^ 0xff]))


def restore_args(repo, vm, backup_id, dest, disk='vda'):
    return {'target_dir': repo, 'vm_name': vm.name, 'disk': disk, 'backup_id': backup_id, 'dest': dest,
            'format': 'raw'}


def test_a_flipped_byte_is_named_and_its_dependents_refused(vm, ansible, workdir, history):
    repo, points = history
    ids = [p[0] for p in points]
    chain_dir = os.path.join(repo, vm.name, ids[0])
    middle = os.path.join(chain_dir, '%s.vda.qcow2' % ids[1])      # the first incremental
    flip_byte(middle, data_offset(vm, middle))
    assert vm.qemu.run_img('check', middle, check=False).returncode == 0, 'the flip must be in data, not metadata'
    before = tree_digest(repo)

    info = ansible.ok('qemu_backup_info', {'target_dir': repo, 'vm_name': vm.name, 'verify': True})
    errors = [p for p in info['problems'] if p['severity'] == 'error']
    assert [p['file'] for p in errors] == [middle], info['problems']
    assert 'differs from its digest' in errors[0]['problem'] and ids[1] in errors[0]['problem']
    assert ids[2] in errors[0]['problem'] and ids[3] not in errors[0]['problem']
    backups = dict((b['id'], b) for b in info['chains'][0]['backups'])
    # The differential builds on the full, and the last incremental on it: both are intact.
    assert dict((i, backups[i]['restorable']) for i in ids) == dict(zip(ids, [True, False, False, True, True]))
    assert [backups[i]['content'] for i in ids] == ['verified', 'damaged', 'damaged', 'verified', 'verified']

    out = os.path.join(workdir, 'out')
    os.mkdir(out)
    failure = ansible.failed('qemu_backup_restore', restore_args(repo, vm, ids[2], os.path.join(out, 'a.raw')))
    assert middle in failure['msg'] and 'force' in failure['msg'], failure['msg']
    assert os.listdir(out) == []
    for index in (0, 3, 4):
        dest = os.path.join(out, '%s.raw' % ids[index])
        ansible.ok('qemu_backup_restore', restore_args(repo, vm, ids[index], dest))
        assert vm.qemu.compare(dest, points[index][2]['vda'], 'raw', 'raw')[0]
    forced = ansible.ok('qemu_backup_restore', dict(restore_args(repo, vm, ids[2], os.path.join(out, 'f.raw')),
                                                    force=True))
    assert 'digest mismatch' in forced['_output'] and ids[1] in forced['_output'], forced['_output']
    assert tree_digest(repo) == before, 'verify or restore changed the repository'


def test_backups_without_digests_are_unverifiable_not_broken(vm, ansible, workdir, history):
    """A manifest from before digests, as the last backup's would read."""
    repo, points = history
    ids = [p[0] for p in points]
    manifest = os.path.join(repo, vm.name, ids[0], ids[4] + '.json')
    with open(manifest) as handle:
        data = json.load(handle)
    assert all(d['digest']['algorithm'] == 'sha256' for d in data['disks'])
    for record in data['disks']:
        del record['digest']
    with open(manifest, 'w') as handle:
        json.dump(data, handle)
    info = ansible.ok('qemu_backup_info', {'target_dir': repo, 'vm_name': vm.name, 'verify': True})
    assert [p['severity'] for p in info['problems']] == ['warning', 'warning'], info['problems']
    assert all('no digest' in p['problem'] and p['backup'] == ids[4] for p in info['problems'])
    backups = dict((b['id'], b) for b in info['chains'][0]['backups'])
    assert backups[ids[4]]['restorable'] is True and backups[ids[4]]['content'] == 'unverifiable'
    assert backups[ids[3]]['content'] == 'verified'
    dest = os.path.join(workdir, 'last.raw')
    ansible.ok('qemu_backup_restore', restore_args(repo, vm, ids[4], dest))
    assert vm.qemu.compare(dest, points[4][2]['vda'], 'raw', 'raw')[0]
    # digests is off by default (bench/digest_cost.py): such a backup is unverifiable too.
    vm.write('vda', 0, 65536, 0x18)
    default = ansible.ok('qemu_blockdev_backup', backup_args(vm, repo))
    assert 'digest_seconds' not in default and not [d for d in default['disks'] if 'digest' in d], default
    info = ansible.ok('qemu_backup_info', {'target_dir': repo, 'vm_name': vm.name, 'verify': True})
    assert [p['backup'] for p in info['problems'] if p['severity'] == 'error'] == [], info['problems']
    backups = dict((b['id'], b) for b in info['chains'][0]['backups'])
    assert backups[default['backup_id']]['content'] == 'unverifiable'
    assert backups[default['backup_id']]['restorable'] is True


@pytest.mark.ends_of_matrix     # verify reads files only: QEMU-independent, proven at both ends
@pytest.mark.parametrize('level, speed', [('incremental', 512 * 1024), ('full', 4 * MIB)])
def test_verify_while_a_backup_writes_neither_blocks_it_nor_calls_it_broken(vm, ansible, repo, level, speed):
    """A slow backup (an incremental into the chain, or the full of a new
    chain, whose directory holds only partial images yet) is under way while
    verify reads the repository. It runs about 16 s: an incremental copies
    the 8 MiB written, a full the whole 64 MiB disks (the rate counts their
    unallocated areas too)."""
    vm.qmp('cont')
    first = ansible.ok('qemu_blockdev_backup', backup_args(vm, repo, level='full', digests=True))
    vm.write('vda', 0, 8 * MIB, 0x21)
    vm.write('vdb', 4 * MIB, 8 * MIB, 0x22)
    proc = ansible.spawn('qemu_blockdev_backup',
                         backup_args(vm, repo, level=level, speed=speed, digests=True))
    vm.wait_for_job()
    at_instant = guest_content(vm, 'instant')
    info = ansible.ok('qemu_backup_info', {'target_dir': repo, 'vm_name': vm.name, 'verify': True})
    assert proc.poll() is None, 'the backup ended before verify did: the test proves nothing'
    assert [p for p in info['problems'] if p['severity'] == 'error'] == [], info['problems']
    partials = [p['file'] for p in info['problems'] if (p['file'] or '').endswith('.partial')]
    assert partials, 'verify did not see the running backup\'s images: %s' % info['problems']
    assert [b['id'] for c in info['chains'] for b in c['backups']] == [first['backup_id']]
    assert info['chains'][0]['backups'][0]['content'] == 'verified'

    result = ansible.collect(proc)
    assert not result['failed'], result['msg']
    assert result['level'] == level
    assert_restores_to(vm, result, at_instant)
    after = ansible.ok('qemu_backup_info', {'target_dir': repo, 'vm_name': vm.name, 'verify': True})
    assert after['problems'] == [], after['problems']
    assert [b['content'] for c in after['chains'] for b in c['backups']] == ['verified', 'verified']
