# -*- coding: utf-8 -*-
# Copyright: (c) 2026, vmbackup.qemu developers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import base64
import json

import pytest

from ansible.errors import AnsibleFilterError

from ansible_collections.vmbackup.qemu.plugins.filter.backup_role import (
    FilterModule,
    backup_owners,
    backup_progress_file,
    backup_results,
    backup_summary,
    backups_gone,
    lost_backups,
    vms_from_sockets,
)
from ansible_collections.vmbackup.qemu.plugins.module_utils.repository import PROGRESS_FILE


def status(name, **result):
    """An async_status result as the backup role registers it."""
    result['__qemu_backup_job'] = {'__qemu_backup_vm': {'name': name, 'socket': '/run/qemu/%s.qmp' % name}}
    return result


def test_every_filter_is_exported():
    assert sorted(FilterModule().filters()) == ['backup_owners', 'backup_progress_file', 'backup_results',
                                                'backup_summary', 'backups_gone', 'lost_backups', 'vms_from_sockets']


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


def slurped(text, **loop_items):
    """A slurp result (with the role's loop items) of a file holding ``text``; None: unreadable."""
    result = dict(loop_items)
    if text is None:
        result['msg'] = 'file not found'
    else:
        result['content'] = base64.b64encode(text.encode()).decode()
    return result


JOB = {'ansible_job_id': 'j1.42', 'results_file': '/root/.ansible_async/j1.42',
       '__qemu_backup_vm': {'name': 'web1', 'socket': '/run/qemu/web1.qmp'}}
OWNER = {'job': JOB, 'vm': 'web1', 'pid': 4242, 'pid_start': '777', 'started': 1000.0}


def proc_stat(pid, comm, start):
    """/proc/PID/stat text; ``comm`` may hold spaces and parentheses."""
    return '%d (%s) S 1 %d %d 0 -1 4194560 %s %s' % (pid, comm, pid, pid, ' '.join(['0'] * 12), start) + ' 0' * 30


def test_backup_owners_reads_the_process_each_progress_file_names():
    reads = [
        slurped(json.dumps({'phase': 'starting', 'pid': 4242, 'pid_start': '777', 'started': 1000.0}),
                __qemu_backup_job=JOB),
        slurped(json.dumps({'level': 'full', 'percent': 5.0}), __qemu_backup_job=JOB),    # an older release's
        slurped('{"pid": 1', __qemu_backup_job=JOB),                                        # caught mid-write
        slurped(None, __qemu_backup_job=JOB),                                               # not written yet
    ]
    assert backup_owners(reads) == [OWNER]


def test_backups_gone_are_those_whose_pid_is_free_or_belongs_to_a_later_process():
    alive = slurped(proc_stat(4242, 'python3 (x) y', '777'), __qemu_backup_owner=OWNER)
    reused = slurped(proc_stat(4242, 'bash', '9999'), __qemu_backup_owner=dict(OWNER, vm='reused'))
    vanished = slurped(None, __qemu_backup_owner=dict(OWNER, vm='vanished'))
    assert [o['vm'] for o in backups_gone([alive, reused, vanished])] == ['reused', 'vanished']


def test_lost_backups_only_where_this_run_wrote_the_progress_file():
    def stat(owner, **fields):
        return {'__qemu_backup_owner': owner, 'stat': fields}
    lost = lost_backups([
        stat(OWNER, exists=True, mtime=999.5),                          # job file older: this run's process died
        stat(dict(OWNER, vm='stale', started=900.0), exists=True, mtime=999.5),   # an earlier run's file
        stat(dict(OWNER, vm='ended', started=1000.0), exists=True, mtime=1005.0),  # the job wrote its end since
        stat(dict(OWNER, vm='cleaned'), exists=False),
    ])
    assert [entry['vm'] for entry in lost] == ['web1']
    assert lost[0]['ansible_job_id'] == 'j1.42'
    assert 'its process (pid 4242) is gone' in lost[0]['msg'] and 'next backup of web1' in lost[0]['msg']


def test_backup_results_fail_a_lost_backup_with_its_message():
    running = status('web1', started=True, finished=False)
    running['__qemu_backup_job']['ansible_job_id'] = 'j1.42'
    other = status('web2', level='full', backup_id='b2', chain='c2', disks=[])
    results = backup_results([running, other], lost=[{'ansible_job_id': 'j1.42', 'vm': 'web1', 'msg': 'gone'}])
    assert [(r['vm'], r['ok'], r['msg']) for r in results] == [('web1', False, 'gone'), ('web2', True, '')]
