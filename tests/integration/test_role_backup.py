# -*- coding: utf-8 -*-
# Copyright: (c) 2026, vmbackup.qemu developers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

"""The backup and restore roles, run by ansible-playbook as fleets run them."""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import json
import os
import re
import signal
import time

import pytest

from harness.qemu import DiskSpec

# QEMU-independent or covered at both ends: not on the middle QEMU (Makefile).
pytestmark = pytest.mark.ends_of_matrix

MIB = 1024 * 1024

BACKUP_PLAY = '''
- hosts: localhost
  gather_facts: false
  roles:
    - role: vmbackup.qemu.backup
'''

RESTORE_PLAY = '''
- hosts: localhost
  gather_facts: false
  roles:
    - role: vmbackup.qemu.restore
'''


def chains_of(repo, vm_name):
    root = os.path.join(repo, vm_name)
    return sorted(d for d in os.listdir(root) if not d.startswith('.') and os.path.isdir(os.path.join(root, d)))


def test_rotation_retention_and_restore_of_two_vms(make_vm, ansible, workdir):
    vms = [make_vm(disks=[DiskSpec('vda'), DiskSpec('vdb')], name='web%d' % i) for i in (1, 2)]
    repo = os.path.join(workdir, 'repo')
    os.mkdir(repo)
    variables = {'qemu_backup_target_dir': repo, 'qemu_backup_full_every': 2, 'qemu_backup_keep_chains': 1,
                 'qemu_backup_fleece_dir': workdir, 'qemu_backup_poll_interval': 1,
                 'qemu_backup_vms': [{'name': vm.name, 'socket': vm.socket} for vm in vms]}
    levels = []
    for round_ in range(5):
        for index, vm in enumerate(vms):
            vm.write('vda', round_ * 2 * MIB, MIB, 0x10 + round_ * 2 + index)
            vm.write('vdb', (40 - round_) * MIB, 65536, 0x40 + round_)
        rc, output, stats = ansible.playbook(BACKUP_PLAY, variables)
        assert rc == 0, output
        summary = stats['qemu_backup']['localhost']
        assert sorted(r['vm'] for r in summary) == ['web1', 'web2'] and all(r['ok'] for r in summary)
        levels.append(summary[0]['level'])
    assert levels == ['full', 'incremental', 'full', 'incremental', 'full']
    for vm in vms:
        assert len(chains_of(repo, vm.name)) == 1, chains_of(repo, vm.name)
        dest = os.path.join(workdir, 'restored-' + vm.name)
        # web1: only vdb (one module call for the chosen disks); web2: every disk.
        disks = ['vdb'] if vm is vms[0] else []
        rc, output, stats = ansible.playbook(RESTORE_PLAY, {'qemu_restore_target_dir': repo, 'qemu_restore_disks': disks,
                                                            'qemu_restore_vm': vm.name, 'qemu_restore_dest': dest})
        assert rc == 0, output
        assert sorted(os.listdir(dest)) == [d + '.qcow2' for d in disks or ('vda', 'vdb')]
        assert [d['disk'] for d in stats['qemu_restore']['localhost']['disks']] == (disks or ['vda', 'vdb'])
        for disk in disks or ('vda', 'vdb'):
            identical, text = vm.qemu.compare(os.path.join(dest, disk + '.qcow2'), vm.shadow(disk), 'qcow2', 'raw')
            assert identical, text


def test_dead_vm_does_not_stop_the_others(make_vm, ansible, workdir):
    good = [make_vm(disks=[DiskSpec('vda')], name=name) for name in ('good1', 'good2')]
    dead = make_vm(disks=[DiskSpec('vda')], name='dead')
    dead.kill()
    repo = os.path.join(workdir, 'repo')
    os.mkdir(repo)
    targets = [{'name': vm.name, 'socket': vm.socket} for vm in (good[0], dead, good[1])]
    rc, output, stats = ansible.playbook(BACKUP_PLAY, {'qemu_backup_target_dir': repo, 'qemu_backup_vms': targets,
                                                       'qemu_backup_fleece_dir': workdir,
                                                       'qemu_backup_poll_interval': 1})
    assert rc != 0
    assert 'backup failed for 1 VM(s): dead (nothing is listening on QMP socket %s' % dead.socket in output, output
    summary = dict((r['vm'], r) for r in stats['qemu_backup']['localhost'])
    assert summary['good1']['ok'] and summary['good2']['ok'] and not summary['dead']['ok']
    for vm in good:
        assert len(chains_of(repo, vm.name)) == 1


def test_discovery_by_glob_and_progress(make_vm, ansible, workdir):
    sockets = os.path.join(workdir, 'sockets')
    os.mkdir(sockets)
    vms = []
    for name in ('alpha', 'beta', 'gamma'):
        vm = make_vm(disks=[DiskSpec('vda', size=256 * MIB)], name=name, start=False)
        vm.socket = os.path.join(sockets, name + '.qmp')
        vm.start()
        vm.write('vda', 0, 32 * MIB, 0x55)
        vms.append(vm)
    repo = os.path.join(workdir, 'repo')
    os.mkdir(repo)
    rc, output, stats = ansible.playbook(BACKUP_PLAY, {
        'qemu_backup_target_dir': repo, 'qemu_backup_socket_glob': os.path.join(sockets, '*.qmp'),
        'qemu_backup_fleece_dir': workdir, 'qemu_backup_poll_interval': 1, 'qemu_backup_parallel': 2,
        'qemu_backup_speed': 16 * MIB, 'qemu_backup_verify': True})
    assert rc == 0, output
    assert sorted(r['vm'] for r in stats['qemu_backup']['localhost']) == ['alpha', 'beta', 'gamma']
    assert '% (' in output and 'MiB) after' in output, 'no progress was shown'
    assert re.search(r'localhost +: ok=\d+ +changed=[1-9]', output), 'a run that took backups reported no change'
    assert re.search(r'"VM +RESULT +BACKUP +CHAIN +MiB +SECONDS', output), output
    for name in ('alpha', 'beta', 'gamma'):
        assert re.search(r'"%s +full +\S+ +\S+ +\d+\.\d +[\d.]+' % name, output), output  # its summary line
        assert len(chains_of(repo, name)) == 1


def _async_chain(pid):
    """``pid`` and the async_wrapper processes above it, the outermost first."""
    chain = [pid]
    while True:
        with open('/proc/%d/stat' % chain[0]) as handle:
            parent = int(handle.read().rsplit(')', 1)[1].split()[1])
        with open('/proc/%d/cmdline' % parent, 'rb') as handle:
            if b'async_wrapper' not in handle.read():
                return chain
        chain.insert(0, parent)


def test_backup_killed_with_its_async_wrapper_fails_that_vm_in_bounded_time(make_vm, ansible, workdir):
    victim = make_vm(disks=[DiskSpec('vda', size=512 * MIB)], name='victim')
    other = make_vm(disks=[DiskSpec('vda', size=16 * MIB)], name='other')
    victim.write('vda', 0, 8 * MIB, 0x21)
    repo = os.path.join(workdir, 'repo')
    os.mkdir(repo)
    play = ansible.spawn_playbook(BACKUP_PLAY, {
        'qemu_backup_target_dir': repo, 'qemu_backup_fleece_dir': workdir, 'qemu_backup_poll_interval': 2,
        'qemu_backup_parallel': 2, 'qemu_backup_speed': 4 * MIB,     # the victim's job runs ~2 minutes
        'qemu_backup_vms': [{'name': vm.name, 'socket': vm.socket} for vm in (victim, other)]})
    progress = os.path.join(repo, 'victim', '.progress.json')
    deadline = time.monotonic() + 120
    record = {}
    while 'percent' not in record:
        assert time.monotonic() < deadline and play.poll() is None, 'the victim\'s backup never ran'
        time.sleep(0.2)
        try:
            with open(progress) as handle:
                record = json.load(handle)
        except (IOError, ValueError):
            pass
    chain = _async_chain(record['pid'])
    assert len(chain) == 3, 'expected the module under async_wrapper\'s runner and watcher: %s' % chain
    for pid in chain:          # the watcher first: nobody is left to write the job's result
        os.kill(pid, signal.SIGKILL)
    killed_at = time.monotonic()
    rc, output, stats = ansible.collect_playbook(play, timeout=120)
    assert time.monotonic() - killed_at < 60, 'the play took %.0f s after the kill' % (time.monotonic() - killed_at)
    assert rc != 0, output
    assert ('backup failed for 1 VM(s): victim (the backup of VM victim ended without a result: its process '
            '(pid %d) is gone' % record['pid']) in output, output
    summary = dict((r['vm'], r) for r in stats['qemu_backup']['localhost'])
    assert summary['other']['ok'] and not summary['victim']['ok']
    assert victim.running() and victim.leftovers(), 'the killed backup left nothing for the next run to clean?'
    # The next run cleans what the killed one left and takes the backup.
    result = ansible.ok('qemu_blockdev_backup', {'socket': victim.socket, 'target_dir': repo, 'fleece_dir': workdir})
    assert result['level'] == 'full' and result['cleaned'], result
    assert victim.running() and victim.leftovers() == []
