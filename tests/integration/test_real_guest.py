# -*- coding: utf-8 -*-
# Copyright: (c) 2026, vmbackup.qemu developers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

"""What users trust about a real guest, proven on one: a tiny Linux built
from Debian 12's packages (harness/guest.py) with the real qemu-ga, rewriting
files on an ext4 disk and recording their checksums while it is backed up.

A backup with the filesystems frozen restores to a filesystem that needs no
journal replay, passes e2fsck, and holds every file as its manifest says; the
guest is thawed and writes on, also when the backup fails after the freeze;
without a running agent, ``auto`` goes on crash-consistent and ``required``
refuses; and a restored point boots."""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import os
import time

import pytest

from harness.checks import backup_args, repository_files, small_filesystem
from harness.guest import agent_command, fsck, manifest_problems, needs_recovery, restored_tree
from harness.qemu import DiskSpec

# QEMU-independent or covered at both ends: not on the middle QEMU (Makefile).
pytestmark = pytest.mark.ends_of_matrix

MIB = 1024 * 1024


def wait_for_more_writes(vm, more=50, timeout=120):
    """The guest's writer goes on: ``more`` files after the current count."""
    target = vm.guest_writes() + more
    deadline = time.monotonic() + timeout
    while vm.guest_writes() < target:
        assert time.monotonic() < deadline, 'the guest stopped writing at %d' % vm.guest_writes()
        time.sleep(0.2)


def assert_consistent(vm, image, label):
    """The ext4 filesystem in backup ``image`` is consistent as it stands and
    holds the guest's files as its manifest vouches for them."""
    raw, tree = restored_tree(vm.qemu, image, vm.workdir, label)
    assert not needs_recovery(raw), '%s needs a journal replay: it was not frozen' % label
    clean, output = fsck(raw)
    assert clean, output
    problems, lines = manifest_problems(tree)
    assert problems == [] and lines >= 50, (problems, lines)
    return raw


def frozen_args(vm, repo, **extra):
    return backup_args(vm, repo, guest_agent_socket=vm.agent_socket, **extra)


def test_frozen_backups_restore_to_clean_filesystems_whose_files_match(make_guest_vm, ansible, repo):
    vm = make_guest_vm()
    full = ansible.ok('qemu_blockdev_backup', frozen_args(vm, repo, freeze='required'))
    assert full['frozen']['frozen'] is True and full['frozen']['filesystems'] == 1
    wait_for_more_writes(vm)                  # thawed
    incremental = ansible.ok('qemu_blockdev_backup', frozen_args(vm, repo, freeze='required'))
    assert incremental['level'] == 'incremental' and incremental['frozen']['frozen'] is True
    wait_for_more_writes(vm)
    for result in (full, incremental):
        assert_consistent(vm, result['disks'][0]['file'], result['level'])


def test_a_backup_failing_after_the_freeze_thaws_the_guest(make_guest_vm, ansible, workdir):
    vm = make_guest_vm()
    with small_filesystem(os.path.join(workdir, 'small'), '1m') as small:
        failure = ansible.failed('qemu_blockdev_backup', frozen_args(vm, small, freeze='required'))
        assert 'No space left on device' in failure['msg'], failure['msg']
        assert repository_files(small) == []
    assert agent_command(vm.agent_socket, {'execute': 'guest-fsfreeze-status'})['return'] == 'thawed'
    wait_for_more_writes(vm)
    assert vm.leftovers() == [] and vm.run_state() == 'running'


def test_without_a_running_agent_auto_goes_on_and_required_refuses(make_guest_vm, ansible, repo):
    vm = make_guest_vm(agent_running=False)
    result = ansible.ok('qemu_blockdev_backup', frozen_args(vm, repo, freeze='auto', timeout=3))
    assert result['frozen']['frozen'] is False and 'crash-consistent' in result['_output']
    before = repository_files(repo)
    failure = ansible.failed('qemu_blockdev_backup', frozen_args(vm, repo, freeze='required', timeout=3))
    assert vm.agent_socket in failure['msg'] and 'required' in failure['msg'], failure['msg']
    assert repository_files(repo) == before and vm.leftovers() == []
    wait_for_more_writes(vm)


def test_a_restored_point_boots(make_guest_vm, make_vm, ansible, repo, workdir):
    vm = make_guest_vm()
    backup = ansible.ok('qemu_blockdev_backup', frozen_args(vm, repo, freeze='required'))
    restored = ansible.ok('qemu_backup_restore', {'target_dir': repo, 'vm_name': vm.qemu_name, 'disk': 'vda',
                                                  'dest': os.path.join(workdir, 'restored.qcow2')})
    assert_consistent(vm, restored['dest'], 'restored')
    vm.kill()
    # A throwaway overlay: the restored image itself stays as restored.
    booted = make_vm(disks=[DiskSpec('vda', size=64 * MIB)], name='restored', start=False,
                     guest=vm.guest)
    os.unlink(booted.image('vda'))
    vm.qemu.run_img('create', '-q', '-f', 'qcow2', '-b', restored['dest'], '-F', 'qcow2', booted.image('vda'))
    booted.start()
    booted.qmp('cont')
    booted.wait_console(lambda line: line == 'guest: data mounted')
    booted.wait_console(lambda line: line == 'guest: ready')
    assert agent_command(booted.agent_socket, {'execute': 'guest-ping'}) == {'return': {}}
    assert not [line for line in booted.console_lines() if 'recovery' in line.lower()], booted.console_lines()
    assert backup['frozen']['frozen'] is True
