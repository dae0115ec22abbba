# -*- coding: utf-8 -*-
# Copyright: (c) 2026, vmbackup.qemu developers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

"""One run per QEMU process: a second run through another QMP socket, into
the same or another repository, waits or fails naming the holder, and never
touches the first run's jobs and filters; a killed holder blocks no one."""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import os

import pytest

from harness.checks import assert_restores_to, backup_args, guest_content

# QEMU-independent or covered at both ends: not on the middle QEMU (Makefile).
pytestmark = pytest.mark.ends_of_matrix

MIB = 1024 * 1024


@pytest.fixture
def two_socket_vm(make_vm):
    """A running VM with a second QMP socket for the collection (a management
    tool's and a backup tool's, as users have them)."""
    vm = make_vm(test_monitors=2)
    vm.qmp('cont')
    return vm


def start_slow_backup(ansible, vm, repo):
    """A backup through the VM's first socket that runs for about 11 s
    (`speed` limits the whole 64 MiB disk, not just its data)."""
    proc = ansible.spawn('qemu_blockdev_backup', backup_args(vm, repo, speed=6 * MIB))
    vm.wait_for_job()
    return proc


def assert_busy(failure, vm):
    msg = failure['msg']
    assert 'busy' in msg and 'qemu_blockdev_backup' in msg and vm.socket in msg, msg
    assert 'lock_timeout' in msg, msg


@pytest.mark.parametrize('round_number', range(3))
def test_second_run_through_another_socket_waits_or_fails_naming_the_holder(
        two_socket_vm, ansible, workdir, round_number):
    vm = two_socket_vm
    other_socket = vm.test_sockets[1]
    repo_a, repo_b = os.path.join(workdir, 'repo-a'), os.path.join(workdir, 'repo-b')
    os.mkdir(repo_a)
    os.mkdir(repo_b)
    vm.write('vda', 0, 8 * MIB, 0x11 + round_number)
    vm.write('vdb', MIB, 4 * MIB, 0x21 + round_number)
    first = start_slow_backup(ansible, vm, repo_a)
    at_instant = guest_content(vm, 'instant')
    vm.write('vda', 2 * MIB, 2 * MIB, 0x31 + round_number)   # after the instant

    for repo in (repo_a, repo_b):
        args = backup_args(vm, repo, socket=other_socket, lock_timeout=1)
        assert_busy(ansible.failed('qemu_blockdev_backup', args), vm)
    bitmap = {'socket': other_socket, 'name': 'manual', 'lock_timeout': 0}
    assert_busy(ansible.failed('qemu_bitmap', bitmap), vm)
    waiting = ansible.spawn('qemu_blockdev_backup', backup_args(vm, repo_b, socket=other_socket,
                                                                lock_timeout=120))

    result = ansible.collect(first)
    assert not result['failed'], result['msg']
    assert_restores_to(vm, result, at_instant)
    second = ansible.collect(waiting)
    assert not second['failed'], second['msg']
    assert second['cleaned'] == [], 'the second run tore down something: %s' % second['cleaned']
    assert_restores_to(vm, second, guest_content(vm, 'after'))
    assert vm.running() and vm.run_state() == 'running'
    assert vm.leftovers() == []
    assert 'manual' not in vm.bitmaps('vda'), 'qemu_bitmap changed the VM while it was held'


def test_killed_holder_does_not_block_the_next_run(two_socket_vm, ansible, repo):
    vm = two_socket_vm
    vm.write('vda', 0, 8 * MIB, 0x41)
    proc = start_slow_backup(ansible, vm, repo)
    ansible.kill_module(proc, 'qemu_blockdev_backup')
    vm.write('vdb', 0, MIB, 0x42)
    result = ansible.ok('qemu_blockdev_backup', backup_args(vm, repo, socket=vm.test_sockets[1],
                                                            lock_timeout=0))
    assert result['cleaned'], 'the killed run left nothing to clean'
    assert_restores_to(vm, result, guest_content(vm, 'after'))
    assert vm.leftovers() == []


def test_check_mode_waits_for_the_holder_too(two_socket_vm, ansible, repo):
    vm = two_socket_vm
    vm.write('vda', 0, 8 * MIB, 0x51)
    proc = start_slow_backup(ansible, vm, repo)
    args = backup_args(vm, repo, socket=vm.test_sockets[1], lock_timeout=0)
    assert_busy(ansible.failed('qemu_blockdev_backup', args, check=True), vm)
    assert not ansible.collect(proc)['failed']


def test_two_qemus_with_one_name_are_two_vms(make_vm, ansible, workdir):
    """The lock is the QEMU process's, not the name's: a backup of one VM
    does not hold another that has the same -name."""
    first_vm, second_vm = make_vm(name='vm1', start=False), make_vm(name='vm2', start=False)
    repos = []
    for vm, pattern, size in ((first_vm, 0x61, 24 * MIB), (second_vm, 0x62, 8 * MIB)):
        vm.qemu_name = 'twin'
        vm.start()
        vm.qmp('cont')
        vm.write('vda', 0, size, pattern)
        repos.append(os.path.join(workdir, 'repo-' + vm.name))
        os.mkdir(repos[-1])
    slow = start_slow_backup(ansible, first_vm, repos[0])
    at_instant = guest_content(first_vm, 'instant')
    result = ansible.ok('qemu_blockdev_backup', backup_args(second_vm, repos[1], lock_timeout=0))
    assert_restores_to(second_vm, result, guest_content(second_vm, 'after'))
    assert slow.poll() is None, 'the first backup ended before the second ran: the test proves nothing'
    first = ansible.collect(slow)
    assert not first['failed'], first['msg']
    assert_restores_to(first_vm, first, at_instant)
