# -*- coding: utf-8 -*-
# Copyright: (c) 2026, vmbackup.qemu developers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

"""qemu_blockdev_backup against a real QEMU: every backup is read back through
its chain and compared with what the guest had written at its instant."""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import json
import os
import stat
import threading

from harness.checks import assert_restores_to, backup_args, guest_content
from harness.qemu import DiskSpec

MIB = 1024 * 1024


def backup(ansible, vm, repo, **args):
    return ansible.ok('qemu_blockdev_backup', backup_args(vm, repo, **args))


def test_full_then_incrementals_and_differential_restore_exactly(vm, ansible, repo):
    vm.write('vda', 0, 4 * MIB, 0x11)
    vm.write('vdb', 8 * MIB, 2 * MIB, 0x12)
    full = backup(ansible, vm, repo)
    assert full['level'] == 'full' and 'no full backup' in full['reason']
    points = [(full, guest_content(vm, 'p0'))]
    for round_ in range(1, 4):
        vm.write('vda', round_ * MIB, 65536, 0x20 + round_)
        vm.write('vdb', (10 + round_) * MIB, 4096, 0x30 + round_)
        vm.write_zeroes('vda', 0, 65536 * round_)          # zeroes must mask older data
        result = backup(ansible, vm, repo)
        assert result['level'] == 'incremental' and result['parent'] == points[-1][0]['backup_id']
        assert result['chain'] == full['backup_id']
        points.append((result, guest_content(vm, 'p%d' % round_)))
    vm.write('vdb', 20 * MIB, MIB, 0x40)
    diff = backup(ansible, vm, repo, level='differential')
    assert diff['parent'] == full['backup_id']
    points.append((diff, guest_content(vm, 'pdiff')))
    vm.write('vda', 30 * MIB, MIB, 0x50)
    after_diff = backup(ansible, vm, repo)
    assert after_diff['parent'] == diff['backup_id']
    points.append((after_diff, guest_content(vm, 'pafter')))
    for result, shadows in points:
        assert_restores_to(vm, result, shadows)
    # A differential needs only the full: its backing file is the full's image.
    for item in diff['disks']:
        info = vm.qemu.info(item['file'])
        assert info['backing-filename'] == os.path.basename(
            [d for d in full['disks'] if d['disk'] == item['disk']][0]['file'])
    # The incrementals copied only what changed.
    assert points[1][0]['disks'][1]['bytes_written'] == 65536


def test_backup_holds_the_instant_while_the_guest_writes_during_it(vm, ansible, repo):
    vm.write('vda', 0, 8 * MIB, 0x61)
    vm.write('vdb', 0, 8 * MIB, 0x62)
    before = guest_content(vm, 'before')
    writer_error = []

    def write_during_backup():
        try:
            vm.wait_for_job(timeout=60)
            for disk in ('vda', 'vdb'):
                vm.write(disk, 0, 8 * MIB, 0x71)           # overwrite what is being copied
                vm.write(disk, 40 * MIB, MIB, 0x72)
        except Exception as exc:  # pylint: disable=broad-except
            writer_error.append(exc)

    writer = threading.Thread(target=write_during_backup)
    writer.start()
    result = backup(ansible, vm, repo, speed=4 * MIB)   # slow enough to write during it
    writer.join()
    assert not writer_error, writer_error
    assert_restores_to(vm, result, before)
    after = guest_content(vm, 'after')
    incremental = backup(ansible, vm, repo)
    assert incremental['level'] == 'incremental'
    assert_restores_to(vm, incremental, after)
    assert vm.leftovers() == []


def test_without_fleecing(vm, ansible, repo):
    vm.write('vda', 0, MIB, 0x13)
    full = backup(ansible, vm, repo, fleecing=False)
    assert full['fleecing'] is False
    first = guest_content(vm, 'a')
    vm.write('vdb', 3 * MIB, MIB, 0x14)
    inc = backup(ansible, vm, repo, fleecing=False)
    assert_restores_to(vm, full, first)
    assert_restores_to(vm, inc, guest_content(vm, 'b'))
    assert vm.leftovers() == []


def test_repository_layout_and_permissions(vm, ansible, repo):
    full = backup(ansible, vm, repo)
    vm_dir = os.path.join(repo, vm.name)
    chain_dir = os.path.join(vm_dir, full['chain'])
    assert stat.S_IMODE(os.stat(vm_dir).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(chain_dir).st_mode) == 0o700
    manifest_path = os.path.join(chain_dir, full['backup_id'] + '.json')
    with open(manifest_path) as handle:
        manifest = json.load(handle)
    assert manifest['level'] == 'full' and manifest['vm'] == vm.name
    assert sorted(d['disk'] for d in manifest['disks']) == ['vda', 'vdb']
    for entry in os.listdir(chain_dir):
        assert stat.S_IMODE(os.stat(os.path.join(chain_dir, entry)).st_mode) == 0o600, entry
    vm.write('vda', 0, 65536, 0x15)
    inc = backup(ansible, vm, repo)
    info = vm.qemu.info(inc['disks'][0]['file'])
    assert info['backing-filename'] == os.path.basename(full['disks'][0]['file'])  # relative


def test_check_mode_plans_and_writes_nothing(vm, ansible, repo):
    plan = ansible.ok('qemu_blockdev_backup', {'socket': vm.socket, 'target_dir': repo}, check=True)
    assert plan['changed'] is True and plan['level'] == 'full'
    assert os.listdir(repo) == []
    backup(ansible, vm, repo)
    vm.write('vda', 0, 3 * 65536, 0x16)
    vm.write('vdb', 5 * MIB, 65536, 0x17)
    plan = ansible.ok('qemu_blockdev_backup', {'socket': vm.socket, 'target_dir': repo}, check=True)
    assert plan['level'] == 'incremental'
    assert plan['bytes_estimated'] == 4 * 65536
    assert vm.leftovers() == []


def test_run_state_is_kept(vm, ansible, repo):
    assert vm.run_state() == 'prelaunch'
    backup(ansible, vm, repo)
    assert vm.run_state() == 'prelaunch'
    vm.qmp('cont')
    backup(ansible, vm, repo)
    assert vm.run_state() == 'running'
    vm.qmp('stop')
    backup(ansible, vm, repo, level='full')
    assert vm.run_state() == 'paused'


def test_explicit_incremental_without_chain_fails_and_auto_takes_full(vm, ansible, repo):
    failure = ansible.failed('qemu_blockdev_backup', {'socket': vm.socket, 'target_dir': repo,
                                                      'level': 'incremental'})
    assert 'full' in failure['msg'] and 'no full backup' in failure['msg']
    backup(ansible, vm, repo)
    vm.kill()                       # persistent bitmaps come back inconsistent
    vm.start()
    failure = ansible.failed('qemu_blockdev_backup', {'socket': vm.socket, 'target_dir': repo,
                                                      'level': 'incremental'})
    assert 'inconsistent' in failure['msg'] or 'missing' in failure['msg']
    vm.write('vda', 0, MIB, 0x18)
    result = backup(ansible, vm, repo)
    assert result['level'] == 'full' and ('inconsistent' in result['reason'] or 'missing' in result['reason'])
    assert_restores_to(vm, result, guest_content(vm, 'x'))
    vm.write('vdb', 0, MIB, 0x19)
    assert_restores_to(vm, backup(ansible, vm, repo), guest_content(vm, 'y'))


def test_missing_chain_file_or_resized_disk_forces_full(vm, ansible, repo):
    full = backup(ansible, vm, repo)
    os.unlink(full['disks'][1]['file'])
    result = backup(ansible, vm, repo)
    assert result['level'] == 'full' and 'missing its file' in result['reason']
    vm.qmp('block_resize', **{'node-name': 'fmt-vda', 'size': 128 * MIB})
    result = backup(ansible, vm, repo)
    assert result['level'] == 'full' and 'resized' in result['reason']
    vm.write('vda', 100 * MIB, MIB, 0x1a)
    vm.disks['vda'].size = 128 * MIB
    with open(vm.shadow('vda'), 'r+b') as shadow:
        shadow.truncate(128 * MIB)
    vm.write('vda', 100 * MIB, MIB, 0x1a)
    assert_restores_to(vm, backup(ansible, vm, repo), guest_content(vm, 'z'))


def test_two_repositories_do_not_steal_changes(vm, ansible, workdir):
    first, second = os.path.join(workdir, 'r1'), os.path.join(workdir, 'r2')
    os.mkdir(first)
    os.mkdir(second)
    backup(ansible, vm, first)
    vm.write('vda', 0, MIB, 0x21)
    backup(ansible, vm, second)
    vm.write('vdb', 2 * MIB, MIB, 0x22)
    backup(ansible, vm, second)
    vm.write('vda', 4 * MIB, MIB, 0x23)
    result = backup(ansible, vm, first)
    assert result['level'] == 'incremental'
    assert_restores_to(vm, result, guest_content(vm, 'now'))   # holds all three writes
    assert sum(d['bytes_written'] for d in result['disks']) == 3 * MIB


def test_exclude_raw_and_named_disks(make_vm, ansible, repo):
    vm = make_vm(disks=[DiskSpec('vda'), DiskSpec('rawdisk', fmt='raw'), DiskSpec('cd0', media=False)])
    vm.write('rawdisk', 0, MIB, 0x24)
    result = backup(ansible, vm, repo)
    assert sorted(d['disk'] for d in result['disks']) == ['rawdisk', 'vda']
    assert [s['disk'] for s in result['skipped_disks']] == ['cd0']
    vm.write('rawdisk', 2 * MIB, MIB, 0x25)
    inc = backup(ansible, vm, repo)         # raw disks get a bitmap that lasts while QEMU runs
    assert inc['level'] == 'incremental'
    assert_restores_to(vm, inc, guest_content(vm, 'r', disks=('vda', 'rawdisk')))
    only = backup(ansible, vm, repo, exclude_disks=['rawdisk'], level='copy')
    assert [d['disk'] for d in only['disks']] == ['vda']
    failure = ansible.failed('qemu_blockdev_backup', {'socket': vm.socket, 'target_dir': repo,
                                                      'disks': ['nosuch']})
    assert 'nosuch' in failure['msg']


def test_missing_target_dir_is_refused(vm, ansible, workdir):
    missing = os.path.join(workdir, 'not-mounted')
    failure = ansible.failed('qemu_blockdev_backup', {'socket': vm.socket, 'target_dir': missing})
    assert missing in failure['msg'] and 'does not exist' in failure['msg']
    assert vm.leftovers() == []
