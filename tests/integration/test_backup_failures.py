# -*- coding: utf-8 -*-
# Copyright: (c) 2026, vmbackup.qemu developers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

"""qemu_blockdev_backup when things go wrong: the run fails clearly, the VM
goes on, nothing is left behind, and the next backup holds every change."""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import os
import stat
import time

import pytest

from harness.checks import (
    assert_restores_to,
    backup_args,
    expected_route,
    guest_content,
    repository_files,
    small_filesystem,
)
from harness.fake_qga import FakeGuestAgent
from harness.names import FLEECE_SUFFIX, is_fleece_job
from harness.slowfs import SlowShare

MIB = 1024 * 1024


def test_full_target_filesystem_fails_the_backup_not_the_vm(vm, ansible, repo, workdir):
    vm.qmp('cont')
    ansible.ok('qemu_blockdev_backup', backup_args(vm, repo))
    vm.write('vda', 0, 16 * MIB, 0x31)
    vm.write('vdb', 0, 16 * MIB, 0x32)
    with small_filesystem(os.path.join(workdir, 'small'), '4m') as small:
        failure = ansible.failed('qemu_blockdev_backup', backup_args(vm, small))
        assert 'No space left on device' in failure['msg']
        assert 'Nothing of this run was kept' in failure['msg']
        assert repository_files(small) == []
    assert vm.run_state() == 'running'
    assert vm.leftovers() == []
    vm.write('vda', 32 * MIB, MIB, 0x33)
    result = ansible.ok('qemu_blockdev_backup', backup_args(vm, repo))
    assert result['level'] == 'incremental'
    assert_restores_to(vm, result, guest_content(vm, 'after'))


@pytest.mark.parametrize('running', [False, True], ids=['prelaunch', 'running'])
def test_failing_fleece_store_fails_the_backup_never_the_guest(vm, ansible, repo, workdir, running):
    """A VM in prelaunch is never paused and gets explicit filters; a running
    one with two disks, on QEMU 10.1+, fleecing jobs (no pause, no
    cbw-timeout), whose filters must break the snapshot too, never the
    guest's write."""
    if running:
        vm.qmp('cont')
    vm.write('vda', 0, 16 * MIB, 0x41)
    ansible.ok('qemu_blockdev_backup', backup_args(vm, repo))
    vm.monitor().clear_events()
    with small_filesystem(os.path.join(workdir, 'fleece'), '1m') as fleece_dir:
        args = backup_args(vm, repo, fleece_dir=fleece_dir, level='full', speed=MIB)
        proc = ansible.spawn('qemu_blockdev_backup', args)
        vm.wait_for_job()
        # Overwriting 8 MiB the backup has not copied yet needs 8 MiB of old
        # data in the 1 MiB fleece store: the snapshot breaks, the writes succeed.
        vm.write('vda', 0, 8 * MIB, 0x42)
        failure = ansible.collect(proc)
    assert failure['failed'] and 'fleece' in failure['msg'] and 'Permission denied' in failure['msg'], \
        failure['msg']
    vm.assert_disk_matches_shadow('vda')     # every guest write landed
    events = vm.monitor().get_events(wait=False)
    took_jobs = any(e['event'] == 'JOB_STATUS_CHANGE' and is_fleece_job(e['data']['id']) for e in events)
    paused = any(e['event'] == 'STOP' for e in events)
    route = expected_route(vm) if running else 'filter'
    assert (took_jobs, paused) == ((True, False) if route == 'job' else (False, running)), events
    assert vm.leftovers() == [] and vm.run_state() == ('running' if running else 'prelaunch')
    result = ansible.ok('qemu_blockdev_backup', backup_args(vm, repo))
    assert result['level'] == 'incremental'
    assert_restores_to(vm, result, guest_content(vm, 'after'))


def test_run_killed_mid_backup_is_cleaned_and_loses_nothing(vm, ansible, repo):
    vm.qmp('cont')
    ansible.ok('qemu_blockdev_backup', backup_args(vm, repo))
    vm.write('vda', 0, 8 * MIB, 0x51)
    vm.write('vdb', 4 * MIB, 8 * MIB, 0x52)
    proc = ansible.spawn('qemu_blockdev_backup', backup_args(vm, repo, speed=MIB))
    vm.wait_for_job()
    ansible.kill_module(proc, 'qemu_blockdev_backup')
    left = vm.leftovers()
    assert any(item.startswith('job ') for item in left) and any('behind a filter' in i for i in left), left
    assert vm.run_state() == 'running'
    vm.write('vda', 20 * MIB, MIB, 0x53)
    result = ansible.ok('qemu_blockdev_backup', backup_args(vm, repo))
    assert result['cleaned'], 'nothing was cleaned'
    assert result['level'] == 'incremental'
    assert_restores_to(vm, result, guest_content(vm, 'after'))
    assert vm.leftovers() == []
    names = [os.path.basename(f) for f in repository_files(repo)]
    assert not [n for n in names if n.endswith('.partial')], names


def test_qemu_gone_mid_backup(vm, ansible, repo):
    ansible.ok('qemu_blockdev_backup', backup_args(vm, repo))
    vm.write('vda', 0, 8 * MIB, 0x61)
    vm.guest_io('vda', 'flush')      # what the guest wrote is on disk before QEMU dies
    proc = ansible.spawn('qemu_blockdev_backup', backup_args(vm, repo, speed=MIB))
    vm.wait_for_job()
    vm.kill()
    failure = ansible.collect(proc)
    assert failure['failed'] and 'QEMU exited' in failure['msg']
    assert not [f for f in repository_files(repo) if f.endswith('.partial')]
    # The failing run removed its fleece images itself: a VM that never
    # comes back must not leave disk-sized files in fleece_dir.
    assert not [f for f in os.listdir(vm.workdir) if f.endswith(FLEECE_SUFFIX)]
    vm.start()
    result = ansible.ok('qemu_blockdev_backup', backup_args(vm, repo))
    assert result['level'] == 'full'
    assert_restores_to(vm, result, guest_content(vm, 'after'))


def test_job_timeout_cancels_cleanly(vm, ansible, repo):
    vm.write('vda', 0, 8 * MIB, 0x71)
    failure = ansible.failed('qemu_blockdev_backup', backup_args(vm, repo, speed=256 * 1024, job_timeout=2))
    assert 'did not finish within 2 s' in failure['msg']
    assert vm.leftovers() == [] and repository_files(repo) == []
    assert ansible.ok('qemu_blockdev_backup', backup_args(vm, repo))['level'] == 'full'


def test_guest_agent_freeze_and_thaw(vm, ansible, repo, workdir):
    agent = FakeGuestAgent(os.path.join(workdir, 'qga.sock')).start()
    try:
        result = ansible.ok('qemu_blockdev_backup', backup_args(vm, repo, guest_agent_socket=agent.socket_path))
        assert result['frozen']['frozen'] is True
        assert [c for c in agent.commands if 'fsfreeze' in c] == ['guest-fsfreeze-freeze', 'guest-fsfreeze-thaw']
        assert agent.frozen is False

        agent.mode = 'freeze-fails'
        result = ansible.ok('qemu_blockdev_backup', backup_args(vm, repo, guest_agent_socket=agent.socket_path))
        assert result['frozen']['frozen'] is False and 'without freezing' in result['_output']
        assert agent.frozen is False

        agent.mode = 'silent'
        args = backup_args(vm, repo, guest_agent_socket=agent.socket_path, timeout=2)
        result = ansible.ok('qemu_blockdev_backup', args)
        assert result['frozen']['frozen'] is False and 'crash-consistent' in result['_output']
        before = repository_files(repo)
        args = backup_args(vm, repo, guest_agent_socket=agent.socket_path, freeze='required', timeout=2)
        failure = ansible.failed('qemu_blockdev_backup', args)
        assert agent.socket_path in failure['msg'] and 'required' in failure['msg']
        assert repository_files(repo) == before
        assert vm.leftovers() == []
    finally:
        agent.stop()
    failure = ansible.failed('qemu_blockdev_backup', backup_args(vm, repo, freeze='required'))
    assert 'guest_agent_socket' in failure['msg']


def test_shared_fleece_dir_each_vm_cleans_only_its_own(make_vm, ansible, workdir):
    shared = os.path.join(workdir, 'fleece')
    os.mkdir(shared)
    first = make_vm(name='first')
    second = make_vm(name='second')
    repo = os.path.join(workdir, 'repo')
    os.mkdir(repo)
    second.write('vda', 0, 8 * MIB, 0x81)
    proc = ansible.spawn('qemu_blockdev_backup', backup_args(second, repo, fleece_dir=shared, speed=MIB))
    second.wait_for_job()
    ansible.kill_module(proc, 'qemu_blockdev_backup')
    left = sorted(os.listdir(shared))
    assert left, 'the killed run left no fleece file to protect'
    # Another VM's run, sharing the fleece directory, must not touch them
    # (they could be in use by a live backup of that VM).
    ansible.ok('qemu_blockdev_backup', backup_args(first, repo, fleece_dir=shared))
    assert sorted(os.listdir(shared)) == left
    result = ansible.ok('qemu_blockdev_backup', backup_args(second, repo, fleece_dir=shared))
    assert os.listdir(shared) == [] and result['cleaned']
    assert_restores_to(second, result, guest_content(second, 'now'))


def test_a_target_device_failing_with_io_errors_fails_the_backup_not_the_vm(vm, ansible, repo, workdir):
    vm.qmp('cont')
    ansible.ok('qemu_blockdev_backup', backup_args(vm, repo))
    vm.write('vda', 0, 16 * MIB, 0x91)
    vm.write('vdb', 0, 16 * MIB, 0x92)
    share = os.path.join(workdir, 'dying')
    # Room for the images' metadata, then every write fails with EIO.
    with SlowShare(os.path.join(workdir, 'dying-backing'), share, 1 << 30, fail_after=2 * MIB):
        failure = ansible.failed('qemu_blockdev_backup', backup_args(vm, share))
        assert 'Input/output error' in failure['msg'] and share in failure['msg'], failure['msg']
        assert 'Nothing of this run was kept' in failure['msg']
        assert repository_files(share) == []
    assert vm.leftovers() == [] and vm.run_state() == 'running'
    vm.assert_disk_matches_shadow('vda')
    result = ansible.ok('qemu_blockdev_backup', backup_args(vm, repo))
    assert result['level'] == 'incremental'
    assert_restores_to(vm, result, guest_content(vm, 'after'))


def test_another_tools_block_job_on_the_disk_is_left_unharmed(vm, ansible, repo, workdir):
    """A mirror of vda that another tool runs: its filter sits above the
    disk's node, where QEMU does not report it. A fleecing backup is refused
    before anything changes (a filter switched in at the device would take
    the guest's writes around the mirror; QEMU itself refuses a backup job
    on a mirrored node); the mirror misses nothing."""
    vm.qmp('cont')
    vm.write('vda', 0, 8 * MIB, 0xa1)
    mirror = os.path.join(workdir, 'mirror.qcow2')
    vm.qemu.create_image(mirror, vm.disks['vda'].size)
    vm.qmp('blockdev-add', **{'driver': 'qcow2', 'node-name': 'other-mirror',
                              'file': {'driver': 'file', 'filename': mirror}})
    vm.qmp('blockdev-mirror', **{'job-id': 'other-tool', 'device': 'fmt-vda', 'target': 'other-mirror',
                                 'sync': 'full'})
    vm.wait_for_job('other-tool', statuses=('ready',))
    refused = ansible.failed('qemu_blockdev_backup', backup_args(vm, repo))
    assert 'vda' in refused['msg'] and 'another block job' in refused['msg'], refused['msg']
    assert repository_files(repo) == [] and [n for n in vm.leftovers() if not n.startswith('job other-tool')] == []
    predicted = ansible.failed('qemu_blockdev_backup', backup_args(vm, repo), check=True)
    assert predicted['msg'] == refused['msg']
    # The other tool's job goes on, and still mirrors what the guest writes.
    assert [j['status'] for j in vm.qmp('query-jobs') if j['id'] == 'other-tool'] == ['ready']
    vm.write('vda', 12 * MIB, MIB, 0xa2)
    vm.qmp('job-complete', id='other-tool')
    deadline = time.monotonic() + 60
    while [j for j in vm.qmp('query-jobs') if j['id'] == 'other-tool']:
        assert time.monotonic() < deadline, 'the mirror did not complete'
        time.sleep(0.05)
    identical, output = vm.qemu.compare(mirror, vm.shadow('vda'), 'qcow2', 'raw', force_share=True)
    assert identical, output


def test_repository_files_are_private_whatever_the_umask(vm, ansible, repo, workdir):
    vm.write('vda', 0, MIB, 0xb1)
    old = os.umask(0)
    try:
        result = ansible.ok('qemu_blockdev_backup', backup_args(vm, repo))
        restored = ansible.ok('qemu_backup_restore', {'target_dir': repo, 'vm_name': vm.qemu_name, 'disk': 'vda',
                                                      'dest': os.path.join(workdir, 'restored.qcow2')})
    finally:
        os.umask(old)
    modes = {}
    for root, dirs, files in os.walk(repo):
        for name in dirs + files:
            path = os.path.join(root, name)
            modes[os.path.relpath(path, repo)] = stat.S_IMODE(os.lstat(path).st_mode)
    assert modes and all(mode & 0o077 == 0 for mode in modes.values()), modes
    assert stat.S_IMODE(os.stat(restored['dest']).st_mode) & 0o077 == 0
    assert result['disks']
