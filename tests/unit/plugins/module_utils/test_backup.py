# -*- coding: utf-8 -*-
# Copyright: (c) 2026, vmbackup.qemu developers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

"""The backup engine's pure decisions: which level, on which chain, and what
QEMU must be able to do before anything changes."""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import os

import pytest

from ansible_collections.vmbackup.qemu.plugins.module_utils.backup import (
    BackupRun,
    chain_problem,
    needed_features,
)
from ansible_collections.vmbackup.qemu.plugins.module_utils.errors import BackupError, FeatureMissingError
from ansible_collections.vmbackup.qemu.plugins.module_utils.repository import Backup, Chain, VMRepository
from ansible_collections.vmbackup.qemu.plugins.module_utils.schema import Features, QMPSchema
from ansible_collections.vmbackup.qemu.plugins.module_utils.vm import Bitmap

GIB = 1 << 30

# A QEMU of before 6.2 in the schema's shape: blockdev-backup, jobs and bitmap
# transactions, but no copy-before-write or snapshot-access driver.
BITMAP_ACTIONS = ['block-dirty-bitmap-%s' % a for a in ('add', 'remove', 'clear', 'enable', 'disable', 'merge')]
SCHEMA_WITHOUT_CBW = [
    {'name': 'blockdev-add', 'meta-type': 'command', 'arg-type': '1', 'ret-type': '0'},
    {'name': '1', 'meta-type': 'object', 'tag': 'driver', 'members': [{'name': 'driver', 'type': 'str'}],
     'variants': [{'case': 'qcow2', 'type': '0'}, {'case': 'raw', 'type': '0'}]},
    {'name': 'blockdev-backup', 'meta-type': 'command', 'arg-type': '0', 'ret-type': '0'},
    {'name': 'query-jobs', 'meta-type': 'command', 'arg-type': '0', 'ret-type': '0'},
    {'name': 'job-finalize', 'meta-type': 'command', 'arg-type': '0', 'ret-type': '0'},
    {'name': 'transaction', 'meta-type': 'command', 'arg-type': '2', 'ret-type': '0'},
    {'name': '2', 'meta-type': 'object', 'members': [{'name': 'actions', 'type': '[3]'}]},
    {'name': '[3]', 'meta-type': 'array', 'element-type': '3'},
    {'name': '3', 'meta-type': 'object', 'tag': 'type', 'members': [{'name': 'type', 'type': 'str'}],
     'variants': [{'case': a, 'type': '0'} for a in BITMAP_ACTIONS]},
    {'name': '0', 'meta-type': 'object', 'members': []},
]


class FakeDisk(object):
    def __init__(self, name, virtual_size=GIB, bitmaps=()):
        self.name = name
        self.node = 'fmt-' + name
        self.qdev = '/machine/peripheral/%s/virtio-backend' % name
        self.virtual_size = virtual_size
        self.allocated_size = virtual_size // 2
        self.bitmaps = [Bitmap(self.node, b) for b in bitmaps]

    def bitmap(self, name):
        return next((b for b in self.bitmaps if b.name == name), None)


def recording(name, **flags):
    info = dict(name=name, count=65536, granularity=65536, recording=True, busy=False, persistent=True)
    info.update(flags)
    return info


def make_chain(tmp_path, disk_names=('vda',), size=GIB, backups=2):
    """A chain of a full and ``backups - 1`` incrementals, with its image files."""
    made = []
    for number in range(backups):
        backup_id = 'b%d' % number
        disks = []
        for disk in disk_names:
            image = '%s-%s.qcow2' % (backup_id, disk)
            (tmp_path / image).write_bytes(b'')
            disks.append({'disk': disk, 'file': image, 'virtual_size': size,
                          'bitmap': 'i-' + backup_id, 'full_bitmap': 'f-b0'})
        made.append(Backup(str(tmp_path), {'id': backup_id, 'chain': 'b0', 'time': number,
                                           'level': 'full' if number == 0 else 'incremental',
                                           'parent': 'b%d' % (number - 1) if number else None,
                                           'disks': disks}))
    return Chain('b0', str(tmp_path), made)


def test_needed_features_follow_the_options():
    assert [need[0] for need in needed_features('copy', False)] == ['blockdev_backup', 'jobs']
    assert 'bitmap_transactions' in dict(needed_features('auto', False))
    fleecing = dict(needed_features('full', True))
    assert fleecing['copy_before_write'] == 'fleecing: true'
    assert set(['snapshot_access', 'cbw_on_cbw_error']) <= set(fleecing)


def test_chain_problem_accepts_a_healthy_chain(tmp_path):
    chain = make_chain(tmp_path)
    disk = FakeDisk('vda', bitmaps=[recording('i-b1'), recording('f-b0')])
    assert chain_problem(chain, [disk], 'incremental') is None
    assert chain_problem(chain, [disk], 'differential') is None


@pytest.mark.parametrize('change, expected', [
    (lambda chain, disks: None, 'has no full backup'),
    (lambda chain, disks: disks.append(FakeDisk('vdb')), 'the disks changed since backup b1'),
    (lambda chain, disks: os.unlink(chain.backups[0].image('vda')), 'is missing its file'),
    (lambda chain, disks: setattr(disks[0], 'virtual_size', 2 * GIB), 'was resized since backup b1'),
    (lambda chain, disks: disks[0].bitmaps.pop(0), 'i-b1 on disk vda that tracks changes since backup b1'),
    (lambda chain, disks: setattr(disks[0].bitmaps[0], 'inconsistent', True), 'is inconsistent'),
    (lambda chain, disks: setattr(disks[0].bitmaps[0], 'recording', False), 'was disabled'),
    (lambda chain, disks: setattr(disks[0].bitmaps[0], 'busy', True), 'in use by another job'),
])
def test_chain_problem_names_each_reason(tmp_path, change, expected):
    chain = make_chain(tmp_path)
    disks = [FakeDisk('vda', bitmaps=[recording('i-b1'), recording('f-b0')])]
    change(chain, disks)
    problem = chain_problem(None if 'no full' in expected else chain, disks, 'incremental')
    assert expected in problem


def test_differential_uses_the_full_bitmap(tmp_path):
    chain = make_chain(tmp_path)
    disk = FakeDisk('vda', bitmaps=[recording('i-b1')])
    assert chain_problem(chain, [disk], 'incremental') is None
    assert 'f-b0' in chain_problem(chain, [disk], 'differential')


class FakeRepo(object):
    def __init__(self, chain):
        self.chain = chain

    def exists(self):
        return self.chain is not None

    def chains(self):
        return [self.chain] if self.chain else []


def decide(params, chain, disks):
    return BackupRun(vm=None, params=params).decide_level(FakeRepo(chain), disks)


def test_auto_goes_on_the_chain_and_starts_a_new_one_when_it_must(tmp_path):
    chain = make_chain(tmp_path, backups=3)
    healthy = [FakeDisk('vda', bitmaps=[recording('i-b2'), recording('f-b0')])]
    level, reason, base = decide({'level': 'auto'}, chain, healthy)
    assert (level, base) == ('incremental', chain) and 'chain b0' in reason
    level, reason, base = decide({'level': 'auto', 'full_every': 3}, chain, healthy)
    assert (level, base) == ('full', None) and 'full_every: 3' in reason
    level, reason, base = decide({'level': 'auto'}, chain, [FakeDisk('vda')])
    assert level == 'full' and 'i-b2' in reason and 'is missing' in reason
    assert decide({'level': 'auto'}, None, healthy)[0] == 'full'


def test_an_explicit_level_that_cannot_be_taken_is_refused(tmp_path):
    chain = make_chain(tmp_path)
    with pytest.raises(BackupError, match='cannot take an incremental backup: .*Take a full backup'):
        decide({'level': 'incremental'}, chain, [FakeDisk('vda')])
    assert decide({'level': 'copy'}, None, [FakeDisk('vda')])[:2] == ('copy', 'asked for')


class RecordingQMP(object):
    """Fails the test on any QMP command: the refusal must come first."""

    socket_path = '/run/qemu/old.qmp'

    def __init__(self):
        self.calls = []

    def execute(self, command, arguments=None):
        self.calls.append(command)
        raise AssertionError('%s sent before the feature check' % command)

    def transaction(self, actions):
        self.execute('transaction', actions)

    def query_jobs(self):
        return {}


class OldQEMU(object):
    """A running VM whose QEMU has no copy-before-write (as the schema says)."""

    version = {'major': 6, 'minor': 1, 'micro': 0}

    def __init__(self):
        self.qmp = RecordingQMP()
        self.features = Features(QMPSchema(SCHEMA_WITHOUT_CBW))

    def name(self):
        return 'old'

    def status(self):
        return {'status': 'running'}

    def named_nodes(self):
        return {}

    def select_disks(self, names, exclude):
        return [FakeDisk('vda')], []


def test_fleecing_true_is_refused_before_anything_changes_in_check_mode_too(tmp_path):
    params = {'target_dir': str(tmp_path), 'fleece_dir': str(tmp_path), 'level': 'auto', 'fleecing': True}
    messages = []
    for check_mode in (True, False):
        vm = OldQEMU()
        with pytest.raises(FeatureMissingError) as refused:
            BackupRun(vm, params, check_mode=check_mode).run()
        messages.append(refused.value.msg)
        assert vm.qmp.calls == []
        assert not os.path.exists(VMRepository(str(tmp_path), 'old').root)
    assert messages[0] == messages[1]
    assert messages[0].startswith('fleecing: true needs the copy-before-write block driver')


def test_fleecing_left_to_auto_falls_back_with_a_warning(tmp_path):
    params = {'target_dir': str(tmp_path), 'fleece_dir': str(tmp_path), 'level': 'auto', 'fleecing': None}
    warnings = []
    result = BackupRun(OldQEMU(), params, warn=warnings.append, check_mode=True).run()
    assert result['fleecing'] is False and result['level'] == 'full'
    assert len(warnings) == 1 and 'cannot fleece' in warnings[0]


def test_a_failure_is_wrapped_not_mutated():
    run = BackupRun(vm=None, params={'fleece_dir': '/var/tmp'})
    run.fleecing = True
    run.result['cbw_timeout'] = 45
    original = BackupError('the backup job failed for vda: Permission denied', job_errors=['vda'])
    parent = type('Parent', (), {'id': 'b1'})()
    error = run._failure(original, parent, ['remove vmb-x-tgt0: busy'])
    assert original.msg == 'the backup job failed for vda: Permission denied'
    assert error is not original and error.details == {'job_errors': ['vda']}
    assert 'fleece image in /var/tmp' in error.msg and 'cbw_timeout of 45 s' in error.msg
    assert 'since backup b1.' in error.msg and 'Cleaning up also failed (remove vmb-x-tgt0: busy)' in error.msg
    run.fleecing = False
    assert 'fleece image' not in run._failure(original, None, []).msg
    assert run._failure(KeyboardInterrupt(), None, []).__class__ is KeyboardInterrupt
    assert 'No space left' in run._failure(OSError(28, 'No space left on device'), None, []).msg
