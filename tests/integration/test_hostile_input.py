# -*- coding: utf-8 -*-
# Copyright: (c) 2026, vmbackup.qemu developers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

"""Hostile input, module by module, against a real QEMU: names with '/',
'..' or a newline, empty strings, a restore into the repository, relative
paths, zero and negative numbers. Each is refused with a clean `msg`, and
nothing is written anywhere: not in the repository, not beside it, not in
QEMU and not in QEMU's working directory."""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import os

import pytest

from harness.checks import backup_args, refused, state

# QEMU-independent or covered at both ends: not on the middle QEMU (Makefile).
pytestmark = pytest.mark.ends_of_matrix

HOSTILE_NAMES = ['a/b', '../escape', '..', '.', '.hidden', 'web1\n', 'a\nb', 'sp ace', '']


@pytest.fixture
def backed_up(vm, ansible, repo, workdir):
    """``repo`` with one full backup of ``vm``; returns the backup's result."""
    vm.write('vda', 0, 1024 * 1024, 0x5a)
    return ansible.ok('qemu_blockdev_backup', backup_args(vm, repo, fleece_dir=workdir))


def test_qemu_blockdev_backup_refuses_hostile_names_and_numbers(vm, ansible, repo, workdir, backed_up):
    for name in HOSTILE_NAMES:
        failure = refused(ansible, workdir, vm, 'qemu_blockdev_backup', backup_args(vm, repo, vm_name=name),
                          'vm_name')
        assert ('must not be empty' if name == '' else 'letters, digits, dots, dashes and underscores') \
            in failure['msg']
    for disk in ('../vda', 'vda\n', ''):
        refused(ansible, workdir, vm, 'qemu_blockdev_backup', backup_args(vm, repo, disks=[disk]), 'disk')
    for value in (0, -1):
        failure = refused(ansible, workdir, vm, 'qemu_blockdev_backup', backup_args(vm, repo, job_timeout=value),
                          'job_timeout must be a positive number')
        assert 'got %d' % value in failure['msg']
    for option in ('target_dir', 'fleece_dir', 'guest_agent_socket'):
        refused(ansible, workdir, vm, 'qemu_blockdev_backup', backup_args(vm, repo, **{option: ''}),
                '%s must not be empty' % option)
    # Articles and full stops.
    empty = os.path.join(workdir, 'empty-repo')
    os.mkdir(empty)
    failure = ansible.failed('qemu_blockdev_backup', backup_args(vm, empty, level='incremental'))
    assert 'cannot take an incremental backup' in failure['msg'], failure['msg']
    vm.write('vda', 0, 4 * 1024 * 1024, 0x5c)
    failure = ansible.failed('qemu_blockdev_backup', backup_args(vm, repo, speed=1, job_timeout=1))
    assert 'did not finish within 1 s' in failure['msg'], failure['msg']
    assert '. Nothing of this run was kept' in failure['msg'] and '.. ' not in failure['msg'], failure['msg']
    assert vm.leftovers() == []
    # After all that, a good run still takes an incremental on the chain.
    vm.write('vdb', 0, 65536, 0x5b)
    again = ansible.ok('qemu_blockdev_backup', backup_args(vm, repo))
    assert again['level'] == 'incremental' and again['parent'] == backed_up['backup_id']


def test_directories_that_are_files_are_named_as_such(vm, ansible, repo, workdir, backed_up):
    plain = os.path.join(workdir, 'plain-file')
    with open(plain, 'w') as handle:
        handle.write('not a directory\n')
    for args in (backup_args(vm, plain), backup_args(vm, repo, fleece_dir=plain)):
        failure = refused(ansible, workdir, vm, 'qemu_blockdev_backup', args, 'is not a directory')
        assert plain in failure['msg'] and 'does not exist' not in failure['msg']
    failure = refused(ansible, workdir, vm, 'qemu_backup_info', {'target_dir': plain}, 'is not a directory')
    assert failure['msg'].startswith('target_dir %s' % plain)
    failure = refused(ansible, workdir, vm, 'qemu_backup_restore', {
        'target_dir': plain, 'vm_name': vm.name, 'disk': 'vda', 'dest': os.path.join(workdir, 'x.qcow2')},
        'is not a directory')
    assert failure['msg'].startswith('target_dir %s' % plain)


def test_qemu_backup_restore_refuses_hostile_names(vm, ansible, repo, workdir, backed_up):
    out = os.path.join(workdir, 'out')
    os.mkdir(out)
    dest = os.path.join(out, 'vda.qcow2')
    for name in HOSTILE_NAMES:
        failure = refused(ansible, workdir, vm, 'qemu_backup_restore',
                          {'target_dir': repo, 'vm_name': name, 'disk': 'vda', 'dest': dest}, 'vm_name')
        assert ('must not be empty' if name == '' else 'letters, digits, dots, dashes and underscores') \
            in failure['msg']
    for disk in ('../vda', 'vda/..', 'vda\n'):
        refused(ansible, workdir, vm, 'qemu_backup_restore',
                {'target_dir': repo, 'vm_name': vm.name, 'disk': disk, 'dest': dest}, 'has no disk')
    refused(ansible, workdir, vm, 'qemu_backup_restore',
            {'target_dir': repo, 'vm_name': vm.name, 'disk': '', 'dest': dest}, 'disk must not be empty')
    for backup_id in ('../' + backed_up['backup_id'], backed_up['backup_id'] + '\n', ''):
        refused(ansible, workdir, vm, 'qemu_backup_restore',
                {'target_dir': repo, 'vm_name': vm.name, 'backup_id': backup_id, 'dest': dest}, 'has no backup')
    refused(ansible, workdir, vm, 'qemu_backup_restore',
            {'target_dir': repo, 'vm_name': vm.name, 'disk': 'vda', 'dest': ''}, 'dest must not be empty')


def test_qemu_backup_restore_never_writes_into_the_repository(vm, ansible, repo, workdir, backed_up):
    chain_dir = os.path.dirname(backed_up['disks'][0]['file'])
    image = backed_up['disks'][0]['file']
    outside = os.path.join(workdir, 'outside')
    os.mkdir(outside)
    to_chain = os.path.join(outside, 'to-chain')          # a directory link into the repository
    os.symlink(chain_dir, to_chain)
    to_image = os.path.join(outside, 'to-image.qcow2')    # a file link to a backup image
    os.symlink(image, to_image)
    to_repo = os.path.join(outside, 'to-repo')
    os.symlink(repo, to_repo)
    one = {'target_dir': repo, 'vm_name': vm.name, 'disk': 'vda'}
    every = {'target_dir': repo, 'vm_name': vm.name}
    cases = [
        dict(every, dest=repo), dict(every, dest=repo + '/'), dict(every, dest=os.path.join(repo, vm.name)),
        dict(every, dest=os.path.join(repo, 'new-dir')), dict(every, dest=chain_dir), dict(every, dest=to_chain),
        dict(every, dest=to_repo), dict(every, dest=os.path.join(outside, 'x', '..', '..', 'repo', 'r')),
        dict(one, dest=os.path.join(chain_dir, 'restored.qcow2')), dict(one, dest=image, force=True),
        dict(one, dest=os.path.join(to_chain, 'restored.qcow2')), dict(one, dest=to_image, force=True),
        dict(one, dest=os.path.join(to_repo, 'restored.raw'), format='raw'),
        dict(one, dest=os.path.join(repo, vm.name, 'repository.json'), force=True),
    ]
    os.mkdir(os.path.join(outside, 'x'))
    for args in cases:
        for check in (True, False):
            failure = refused(ansible, workdir, vm, 'qemu_backup_restore', args, 'is inside the repository',
                              check=check)
            assert args['dest'] in failure['msg'] and repo in failure['msg']
    # A target_dir given through a symlink, a dest given plainly: still inside.
    refused(ansible, workdir, vm, 'qemu_backup_restore',
            dict(one, target_dir=to_repo, dest=os.path.join(chain_dir, 'r.qcow2')), 'is inside the repository')
    # Relative, from inside the chain directory: still inside.
    refused(ansible, workdir, vm, 'qemu_backup_restore', dict(one, dest='restored.qcow2'),
            'is inside the repository', cwd=chain_dir)
    # Beside the repository (a name that only starts like it) is fine.
    beside = repo + '-restored.qcow2'
    result = ansible.ok('qemu_backup_restore', dict(one, dest=beside))
    assert result['changed'] and os.path.isfile(beside)


def test_qemu_backup_info_refuses_hostile_names(vm, ansible, repo, workdir, backed_up):
    for name in HOSTILE_NAMES:
        failure = refused(ansible, workdir, vm, 'qemu_backup_info', {'target_dir': repo, 'vm_name': name},
                          'vm_name')
        assert ('must not be empty' if name == '' else 'letters, digits, dots, dashes and underscores') \
            in failure['msg']
    refused(ansible, workdir, vm, 'qemu_backup_info', {'target_dir': ''}, 'target_dir must not be empty')


def test_relative_paths_are_taken_from_the_module_directory(vm, ansible, workdir):
    """A relative target_dir or fleece_dir means the module's working
    directory, never QEMU's (which is elsewhere)."""
    here = os.path.join(workdir, 'here')
    os.makedirs(os.path.join(here, 'repo'))
    os.mkdir(os.path.join(here, 'fleece'))
    qemu_cwd = os.readlink('/proc/%d/cwd' % vm.process.pid)
    assert os.path.realpath(qemu_cwd) != os.path.realpath(here)
    qemu_cwd_before = sorted(os.listdir(qemu_cwd))
    vm.write('vda', 0, 65536, 0x71)
    args = {'socket': vm.socket, 'target_dir': 'repo', 'fleece_dir': 'fleece', 'level': 'full'}
    result = ansible.ok('qemu_blockdev_backup', args, cwd=here)
    for item in result['disks']:
        assert item['file'].startswith(os.path.join(here, 'repo', vm.name) + os.sep), item['file']
        assert os.path.isfile(item['file'])
    assert sorted(os.listdir(qemu_cwd)) == qemu_cwd_before
    assert os.listdir(os.path.join(here, 'fleece')) == []
    # The guest agent socket too: the message names the absolute path.
    before = state(workdir, vm)
    failure = ansible.failed('qemu_blockdev_backup', dict(args, guest_agent_socket='nosuch.qga', freeze='required'),
                             cwd=here)
    assert os.path.join(here, 'nosuch.qga') in failure['msg'] and 'guest agent' in failure['msg']
    # That failure comes after the run began (a chain directory was made
    # and removed again): the same paths remain, QEMU holds nothing of it.
    after = state(workdir, vm)
    assert sorted(after['files']) == sorted(before['files'])
    assert after['qemu'] == before['qemu'] == [] and after['bitmaps'] == before['bitmaps']
    # Info and restore, relative from the same directory.
    info = ansible.ok('qemu_backup_info', {'target_dir': 'repo'}, cwd=here)
    assert info['vms'] == [vm.name]
    restored = ansible.ok('qemu_backup_restore', {'target_dir': 'repo', 'vm_name': vm.name, 'disk': 'vda',
                                                  'dest': 'vda.qcow2'}, cwd=here)
    assert restored['dest'] == os.path.join(here, 'vda.qcow2') and os.path.isfile(restored['dest'])
    assert restored['disks'][0]['dest'] == os.path.join(here, 'vda.qcow2')
    identical, output = vm.qemu.compare(restored['dest'], result['disks'][0]['file'], 'qcow2', 'qcow2')
    assert identical, output
    assert sorted(os.listdir(qemu_cwd)) == qemu_cwd_before
