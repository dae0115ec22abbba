# -*- coding: utf-8 -*-
# Copyright: (c) 2026, vmbackup.qemu developers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import pytest

from ansible.errors import AnsibleFilterError

from ansible_collections.vmbackup.qemu.plugins.filter.backup_role import (
    FilterModule,
    backup_progress_file,
    backup_results,
    backup_summary,
    vms_from_sockets,
)
from ansible_collections.vmbackup.qemu.plugins.module_utils.repository import PROGRESS_FILE


def status(name, **result):
    """An async_status result as the backup role registers it."""
    result['__qemu_backup_job'] = {'__qemu_backup_vm': {'name': name, 'socket': '/run/qemu/%s.qmp' % name}}
    return result


def test_every_filter_is_exported():
    assert sorted(FilterModule().filters()) == ['backup_progress_file', 'backup_results', 'backup_summary',
                                                'vms_from_sockets']


def test_vms_from_sockets_names_each_vm_after_its_socket_sorted_by_path():
    found = [{'path': '/run/qemu/web2.qmp'}, {'path': '/run/qemu/db.main.qmp'}, '/run/qemu/web1.qmp']
    assert vms_from_sockets(found) == [
        {'name': 'db.main', 'socket': '/run/qemu/db.main.qmp'},
        {'name': 'web1', 'socket': '/run/qemu/web1.qmp'},
        {'name': 'web2', 'socket': '/run/qemu/web2.qmp'},
    ]
    assert vms_from_sockets([]) == [] and vms_from_sockets(None) == []


def test_vms_from_sockets_refuses_an_entry_without_a_path():
    with pytest.raises(AnsibleFilterError, match='neither a path'):
        vms_from_sockets([{'mode': '0755'}])


def test_backup_results_of_a_success_a_failure_and_a_verify_error():
    statuses = [
        status('web1', vm='web1', level='full', reason='no chain', backup_id='b1', chain='c1', duration=1.5,
               disks=[{'disk': 'vda', 'bytes_written': 1048576}, {'disk': 'vdb', 'bytes_written': 1048576}],
               pruned=['c0'], skipped_disks=[{'disk': 'cd0', 'reason': 'read-only'}]),
        status('dead', failed=True, msg='nothing is listening on QMP socket /run/qemu/dead.qmp'),
        status('web2', vm='web2', level='incremental', backup_id='b2', chain='c2', disks=[{'disk': 'vda'}]),
    ]
    verified = [{'__qemu_backup_done': {'vm': 'web2'},
                 'problems': [{'severity': 'warning', 'problem': 'orphan'}, {'severity': 'error', 'problem': 'bad'}]},
                {'__qemu_backup_done': {'vm': 'web1'}, 'problems': []}]
    web1, dead, web2 = backup_results(statuses, verified)
    assert web1 == {'vm': 'web1', 'socket': '/run/qemu/web1.qmp', 'ok': True, 'changed': True, 'msg': '',
                    'level': 'full', 'reason': 'no chain', 'backup_id': 'b1', 'chain': 'c1', 'bytes': 2097152,
                    'duration': 1.5, 'pruned': ['c0'], 'skipped_disks': [{'disk': 'cd0', 'reason': 'read-only'}]}
    assert dead['vm'] == 'dead' and not dead['ok'] and not dead['changed'] and dead['msg'].startswith('nothing')
    assert dead['backup_id'] is None and dead['bytes'] == 0 and dead['pruned'] == []
    # Taken (changed) but its chain has an error: not ok, and says why.
    assert web2['changed'] and not web2['ok'] and web2['msg'] == 'bad' and web2['bytes'] == 0


def test_backup_results_refuses_what_is_not_a_list():
    with pytest.raises(AnsibleFilterError, match='expected the list'):
        backup_results({'results': []})


def test_backup_summary_is_a_table_with_a_line_per_vm():
    results = backup_results([
        status('web1', vm='web1', level='full', backup_id='20261205T0610', chain='20261205T0610', duration=2.25,
               disks=[{'bytes_written': 3 * 1048576}], pruned=['old']),
        status('dead', failed=True, msg='no socket'),
    ])
    header, web1, dead = backup_summary(results)
    assert header.split() == ['VM', 'RESULT', 'BACKUP', 'CHAIN', 'MiB', 'SECONDS', 'NOTES']
    assert web1.split() == ['web1', 'full', '20261205T0610', '20261205T0610', '3.0', '2.25', 'pruned', 'old']
    assert dead.split() == ['dead', 'FAILED', '-', '-', '-', '-', 'no', 'socket']
    # Columns line up: each column starts at the same place on every line.
    assert header.index('RESULT') == web1.index('full') == dead.index('FAILED')
    assert header.index('NOTES') == web1.index('pruned') == dead.index('no socket')
    assert backup_summary([]) == ['VM  RESULT  BACKUP  CHAIN  MiB  SECONDS  NOTES']


def test_backup_progress_file_is_the_repository_s():
    assert backup_progress_file('/srv/backup', 'web1') == '/srv/backup/web1/' + PROGRESS_FILE
