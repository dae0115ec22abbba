# -*- coding: utf-8 -*-
# Copyright: (c) 2026, vmbackup.qemu developers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

"""Encryption at rest (qcow2 with QEMU's LUKS) against a real QEMU: an
encrypted chain restores to what the guest had at each instant, holds none of
the guest's plaintext, and its passphrase shows up nowhere; a wrong or
missing key is refused clearly, and a chain is encrypted as a whole."""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import json
import os

import pytest

from harness.checks import backup_args, guest_content, refused, repository_files

MIB = 1024 * 1024
LUKS_MAGIC = b'LUKS\xba\xbe'


def key_file(workdir, name, passphrase):
    path = os.path.join(workdir, name)
    with open(path, 'w') as handle:
        handle.write(passphrase + '\n')     # one trailing newline is not part of it
    os.chmod(path, 0o600)
    return path


def files_holding(paths, needle):
    """The files among ``paths`` whose bytes contain ``needle``."""
    found = []
    for path in paths:
        with open(path, 'rb') as handle:
            if needle in handle.read():
                found.append(path)
    return found


def command_lines_holding(text):
    """Pids of the processes whose argument list contains ``text``."""
    found = []
    for pid in os.listdir('/proc'):
        try:
            with open('/proc/%s/cmdline' % pid, 'rb') as handle:
                if text.encode('utf-8') in handle.read():
                    found.append(pid)
        except (IOError, OSError):
            continue    # gone meanwhile, or not a process
    return found


def restore_raw(ansible, repo, vm, backup_id, dest, **key):
    args = dict({'target_dir': repo, 'vm_name': vm.name, 'backup_id': backup_id, 'dest': dest, 'format': 'raw'},
                **key)
    return ansible.ok('qemu_backup_restore', args)


def test_encrypted_chain_restores_exactly_and_keeps_its_secrets(vm, ansible, repo, workdir):
    passphrase = 'vmb-test-passphrase-%s' % os.urandom(6).hex()
    key = key_file(workdir, 'key', passphrase)
    patterns = (0xa5, 0x5b, 0xc3)       # one distinctive pattern per point
    points = []
    for index, pattern in enumerate(patterns):
        vm.write('vda', index * 8 * MIB, 8 * MIB, pattern)
        vm.write('vdb', index * MIB, MIB, pattern)
        # The full slow enough to look at every process while it runs.
        proc = ansible.spawn('qemu_blockdev_backup', backup_args(vm, repo, encryption_key_file=key, digests=True,
                                                                 speed=4 * MIB if index == 0 else 0))
        if index == 0:
            vm.wait_for_job(timeout=120)
            assert command_lines_holding(passphrase) == [], 'the passphrase is in a process argument list'
        result = ansible.collect(proc)
        assert not result['failed'], result['msg']
        assert result['encrypted'] is True
        assert result['level'] == ('full' if index == 0 else 'incremental'), result['reason']
        points.append((result, guest_content(vm, 'p%d' % index)))
        assert passphrase not in json.dumps(result) and passphrase not in result['_output']
    assert vm.leftovers() == [], 'an encrypted run left something in QEMU'
    out = os.path.join(workdir, 'out')
    os.mkdir(out)
    for result, shadows in points:
        restored = restore_raw(ansible, repo, vm, result['backup_id'], os.path.join(out, result['backup_id']),
                               encryption_key_file=key)
        assert restored['encrypted'] is True and restored['verified'] is True
        assert passphrase not in json.dumps(restored)
        for item in restored['disks']:
            assert vm.qemu.info(item['dest'])['format'] == 'raw'
            identical, output = vm.qemu.compare(item['dest'], shadows[item['disk']], 'raw', 'raw')
            assert identical, 'encrypted backup %s of %s: %s' % (result['backup_id'], item['disk'], output)
    files = repository_files(repo)
    images = [f for f in files if f.endswith('.qcow2')]
    assert len(images) == 6
    for image in images:
        info = vm.qemu.info(image)
        assert info['format'] == 'qcow2' and info['encrypted'] is True
        assert info['format-specific']['data']['encrypt']['format'] == 'luks'
    assert files_holding(images, LUKS_MAGIC) == images
    for pattern in patterns:
        needle = bytes([pattern]) * 4096
        # The check can fail: the guest's own disk holds the pattern in clear.
        assert files_holding([vm.image('vda')], needle), 'the control image lacks pattern %#x' % pattern
        assert files_holding(files, needle) == [], 'plaintext %#x found in the repository' % pattern
    assert files_holding(files, passphrase.encode('utf-8')) == []
    assert passphrase not in vm.log()
    manifest = json.load(open([f for f in files if f.endswith('.json')][0]))
    assert manifest['encryption']['format'] == 'luks' and 'digest' in manifest['encryption']['fingerprint']
    # Listed and verified, digests included, without the key.
    info = ansible.ok('qemu_backup_info', {'target_dir': repo, 'verify': True})
    assert info['problems'] == []
    backups = info['chains'][0]['backups']
    assert [b['encrypted'] for b in backups] == [True] * 3 and all(b['restorable'] for b in backups)
    assert [b['content'] for b in backups] == ['verified'] * 3


def test_a_wrong_or_missing_key_is_refused_and_a_chain_keeps_one_key(vm, ansible, repo, workdir):
    key = key_file(workdir, 'key', 'the right passphrase')
    other = key_file(workdir, 'other', 'another passphrase')
    vm.write('vda', 0, MIB, 0x31)
    full = ansible.ok('qemu_blockdev_backup', backup_args(vm, repo, encryption_key_file=key))
    dest = os.path.join(workdir, 'vda.raw')
    restore = {'target_dir': repo, 'vm_name': vm.name, 'disk': 'vda', 'dest': dest, 'format': 'raw'}
    failure = refused(ansible, workdir, vm, 'qemu_backup_restore', dict(restore, encryption_key_file=other),
                      'wrong key')
    assert full['backup_id'] in failure['msg']
    refused(ansible, workdir, vm, 'qemu_backup_restore', restore, 'is encrypted: give its key')
    refused(ansible, workdir, vm, 'qemu_backup_restore', dict(restore, encryption_passphrase='the wrong one'),
            'wrong key')
    empty = key_file(workdir, 'empty', '')
    refused(ansible, workdir, vm, 'qemu_blockdev_backup', backup_args(vm, repo, encryption_key_file=empty),
            'is empty')
    # Another key, or none, cannot join the encrypted chain; check mode says so too.
    for args in (dict(encryption_key_file=other), {}):
        for check in (False, True):
            failure = refused(ansible, workdir, vm, 'qemu_blockdev_backup',
                              backup_args(vm, repo, level='incremental', **args), 'cannot take an incremental',
                              check=check)
            assert ('another key' if args else 'no key was given') in failure['msg']
    vm.write('vda', MIB, MIB, 0x32)
    other_full = ansible.ok('qemu_blockdev_backup', backup_args(vm, repo, encryption_key_file=other))
    assert other_full['level'] == 'full' and 'another key' in other_full['reason']
    assert ansible.ok('qemu_blockdev_backup', backup_args(vm, repo, encryption_key_file=other))['level'] == \
        'incremental'
    plain = ansible.ok('qemu_blockdev_backup', backup_args(vm, repo))
    assert plain['level'] == 'full' and plain['encrypted'] is False and 'no key was given' in plain['reason']
    failure = refused(ansible, workdir, vm, 'qemu_blockdev_backup',
                      backup_args(vm, repo, level='incremental', encryption_key_file=key), 'is not encrypted')
    # The passphrase given inline (no_log) works like the file, and a restore
    # of the first chain with its key still gives what the guest had.
    inline = ansible.ok('qemu_blockdev_backup', backup_args(vm, repo, encryption_passphrase='the right passphrase'))
    assert inline['level'] == 'full' and inline['encrypted'] is True
    restored = ansible.ok('qemu_backup_restore', dict(restore, backup_id=full['backup_id'],
                                                      encryption_passphrase='the right passphrase'))
    assert restored['encrypted'] is True
    assert vm.leftovers() == []


@pytest.mark.ends_of_matrix     # qemu-img and Ansible only: QEMU-independent, proven at both ends
def test_a_restore_asked_to_encrypt_stays_encrypted_with_the_key(vm, ansible, repo, workdir):
    passphrase = 'restore passphrase %s' % os.urandom(4).hex()
    key = key_file(workdir, 'key', passphrase)
    vm.write('vda', 2 * MIB, 4 * MIB, 0x6d)
    ansible.ok('qemu_blockdev_backup', backup_args(vm, repo, encryption_key_file=key))
    vm.write('vda', 9 * MIB, MIB, 0x6e)
    backup = ansible.ok('qemu_blockdev_backup', backup_args(vm, repo, encryption_key_file=key))
    shadow = guest_content(vm, 'point')['vda']
    dest = os.path.join(workdir, 'vda.qcow2')
    restore = {'target_dir': repo, 'vm_name': vm.name, 'disk': 'vda', 'dest': dest, 'encrypt': True,
               'encryption_key_file': key}
    refused(ansible, workdir, vm, 'qemu_backup_restore', dict(restore, format='raw'), 'needs format: qcow2')
    refused(ansible, workdir, vm, 'qemu_backup_restore', dict(restore, encryption_key_file=None), 'is encrypted')
    predicted = ansible.ok('qemu_backup_restore', restore, check=True)
    assert predicted['changed'] is True and not os.path.exists(dest)
    restored = ansible.ok('qemu_backup_restore', restore)
    assert restored['changed'] and restored['dest_encrypted'] is True and restored['verified'] is True
    assert restored['backup_id'] == backup['backup_id'] and passphrase not in json.dumps(restored)
    info = vm.qemu.info(dest)
    assert info['encrypted'] is True and info['format-specific']['data']['encrypt']['format'] == 'luks'
    assert oct(os.stat(dest).st_mode & 0o777) == '0o600'
    for pattern in (0x6d, 0x6e):
        assert files_holding([dest], bytes([pattern]) * 4096) == [], 'plaintext %#x in the restored image' % pattern
    # Read back with the key: what the guest had at the instant.
    plain = os.path.join(workdir, 'plain.raw')
    ansible.ok('qemu_backup_restore', dict(restore, encrypt=False, format='raw', dest=plain))
    identical, output = vm.qemu.compare(plain, shadow, 'raw', 'raw')
    assert identical, output
    assert ansible.ok('qemu_backup_restore', restore)['changed'] is False       # idempotent
    # The plain restore is not "already restored" when encryption is asked: force replaces it.
    as_plain = dict(restore, dest=os.path.join(workdir, 'again.qcow2'), encrypt=False)
    ansible.ok('qemu_backup_restore', as_plain)
    refused(ansible, workdir, vm, 'qemu_backup_restore', dict(as_plain, encrypt=True), 'force')
    forced = ansible.ok('qemu_backup_restore', dict(as_plain, encrypt=True, force=True))
    assert forced['changed'] and vm.qemu.info(as_plain['dest'])['encrypted'] is True


def test_a_killed_encrypted_run_leaves_a_secret_the_next_run_removes(vm, ansible, repo, workdir):
    key = key_file(workdir, 'key', 'a passphrase')
    vm.write('vda', 0, 8 * MIB, 0x41)
    proc = ansible.spawn('qemu_blockdev_backup', backup_args(vm, repo, encryption_key_file=key, speed=MIB))
    vm.wait_for_job()
    ansible.kill_module(proc, 'qemu_blockdev_backup')
    assert any(item.startswith('object vmb-') for item in vm.leftovers()), vm.leftovers()
    result = ansible.ok('qemu_blockdev_backup', backup_args(vm, repo, encryption_key_file=key))
    assert any(item.startswith('secret object vmb-') for item in result['cleaned']), result['cleaned']
    assert vm.leftovers() == []


ROLE_PLAY = '''
- hosts: localhost
  gather_facts: false
  roles:
    - role: vmbackup.qemu.%s
'''


@pytest.mark.ends_of_matrix     # qemu-img and Ansible only: QEMU-independent, proven at both ends
def test_the_roles_pass_the_key_file_through(vm, ansible, repo, workdir):
    passphrase = 'role-passphrase-%s' % os.urandom(6).hex()
    key = key_file(workdir, 'key', passphrase)
    vm.write('vda', 0, 2 * MIB, 0x5d)
    rc, output, stats = ansible.playbook(ROLE_PLAY % 'backup', {
        'qemu_backup_target_dir': repo, 'qemu_backup_fleece_dir': workdir, 'qemu_backup_poll_interval': 1,
        'qemu_backup_verify': True, 'qemu_backup_encryption_key_file': key,
        'qemu_backup_vms': [{'name': vm.name, 'socket': vm.socket}]})
    assert rc == 0, output
    assert passphrase not in output
    images = [f for f in repository_files(repo) if f.endswith('.qcow2')]
    assert len(images) == 2 and all(vm.qemu.info(f)['encrypted'] for f in images)
    shadows = guest_content(vm, 'role')
    dest = os.path.join(workdir, 'restored')
    restore = {'qemu_restore_target_dir': repo, 'qemu_restore_vm': vm.name, 'qemu_restore_dest': dest,
               'qemu_restore_format': 'raw'}
    rc, output, _stats = ansible.playbook(ROLE_PLAY % 'restore', restore)
    assert rc != 0 and 'is encrypted: give its key' in output
    rc, output, _stats = ansible.playbook(ROLE_PLAY % 'restore', dict(restore, qemu_restore_encryption_key_file=key))
    assert rc == 0, output
    for disk in ('vda', 'vdb'):
        assert vm.qemu.compare(os.path.join(dest, disk + '.raw'), shadows[disk], 'raw', 'raw')[0]


def test_a_failed_encrypted_run_removes_its_secret_object(vm, ansible, repo, workdir):
    key = key_file(workdir, 'key', 'a passphrase')
    vm.write('vda', 0, 8 * MIB, 0x71)
    failure = ansible.failed('qemu_blockdev_backup', backup_args(vm, repo, encryption_key_file=key,
                                                                 speed=256 * 1024, job_timeout=2))
    assert 'did not finish within 2 s' in failure['msg']
    assert vm.leftovers() == [] and repository_files(repo) == []
