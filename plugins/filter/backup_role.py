# -*- coding: utf-8 -*-
# Copyright: (c) 2026, vmbackup.qemu developers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

"""Data shaping for the backup role: VMs found by glob, per-VM results, the
progress file's path, backups whose process was killed, and the summary table. Each filter is documented in the
YAML file of its own name beside this one."""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import base64
import json
import os

from ansible.errors import AnsibleFilterError
from ansible.module_utils.common.text.converters import to_text

from ansible_collections.vmbackup.qemu.plugins.module_utils.repository import progress_file
from ansible_collections.vmbackup.qemu.plugins.module_utils.vmlock import start_in_stat

MIB = 1024.0 * 1024.0
SUMMARY_COLUMNS = ('VM', 'RESULT', 'BACKUP', 'CHAIN', 'MiB', 'SECONDS', 'NOTES')


def vms_from_sockets(found):
    """``find`` results (or paths) of QMP sockets -> [{name, socket}], by path."""
    paths = []
    for entry in found or []:
        path = entry.get('path') if isinstance(entry, dict) else entry
        if not path:
            raise AnsibleFilterError('vms_from_sockets: %r is neither a path nor a find result with a path' % (entry,))
        paths.append(to_text(path))
    return [{'name': os.path.splitext(os.path.basename(path))[0], 'socket': path} for path in sorted(paths)]


def _vm_of(status):
    """The qemu_backup_vms item an async_status result belongs to."""
    return status.get('__qemu_backup_job', {}).get('__qemu_backup_vm', {})


def _verify_errors(verified, name):
    """The problems of severity error that qemu_backup_info verify found for ``name``."""
    errors = []
    for check in verified or []:
        if check.get('__qemu_backup_done', {}).get('vm') != name:
            continue
        errors.extend(p for p in check.get('problems') or [] if p.get('severity') == 'error')
    return errors


def backup_result(status, verified=None, lost=None):
    """One VM's result from its async_status result, the role's verify runs
    and the backups found lost with their process."""
    vm = _vm_of(status)
    name = status.get('vm') or vm.get('name') or vm.get('socket')
    job_id = status.get('__qemu_backup_job', {}).get('ansible_job_id')
    lost_msg = dict((entry['ansible_job_id'], entry['msg']) for entry in lost or []).get(job_id)
    failed = bool(status.get('failed')) or lost_msg is not None
    errors = [] if failed else _verify_errors(verified, name)
    return {
        'vm': name, 'socket': vm.get('socket'),
        'ok': not failed and not errors,
        # A backup was published: what the role reports as changed.
        'changed': not failed and status.get('backup_id') is not None,
        'msg': lost_msg or status.get('msg', '') if failed else '; '.join(p.get('problem', '') for p in errors),
        'level': status.get('level'), 'reason': status.get('reason'),
        'backup_id': status.get('backup_id'), 'chain': status.get('chain'),
        'bytes': sum(d.get('bytes_written') or 0 for d in status.get('disks') or []),
        'duration': status.get('duration'), 'pruned': status.get('pruned') or [],
        'skipped_disks': status.get('skipped_disks') or [],
    }


def backup_results(statuses, verified=None, lost=None):
    """A list of async_status results (with their loop items) -> per-VM results."""
    if not isinstance(statuses, list):
        raise AnsibleFilterError('backup_results: expected the list of async_status results, got %s'
                                 % type(statuses).__name__)
    return [backup_result(status, verified, lost) for status in statuses]


def _decoded(read):
    """The text of a slurp result, or None if the file could not be read."""
    if 'content' not in read:
        return None
    try:
        return base64.b64decode(read['content']).decode('utf-8', 'replace')
    except (TypeError, ValueError):
        return None


def backup_owners(progress_reads):
    """Slurped progress files of running backups -> the process each names:
    [{job, vm, pid, pid_start, started}] (job: the async job started)."""
    owners = []
    for read in progress_reads or []:
        try:
            record = json.loads(_decoded(read) or 'null')
        except ValueError:
            continue            # caught mid-write: the next round reads it
        if not isinstance(record, dict) or not isinstance(record.get('pid'), int) \
                or not isinstance(record.get('started'), (int, float)):
            continue
        job = read.get('__qemu_backup_job', {})
        owners.append({'job': job, 'vm': job.get('__qemu_backup_vm', {}).get('name'), 'pid': record['pid'],
                       'pid_start': record.get('pid_start'), 'started': record['started']})
    return owners


def backups_gone(proc_reads):
    """Slurped /proc/PID/stat of backup owners -> the owners whose process
    is gone: no such pid, or another process (started later) under it."""
    gone = []
    for read in proc_reads or []:
        owner = read.get('__qemu_backup_owner')
        stat = _decoded(read)
        if not owner:
            continue
        if stat is not None:
            if owner.get('pid_start') is None or start_in_stat(stat) == owner['pid_start']:
                continue
        gone.append(owner)
    return gone


def lost_backups(job_file_stats):
    """``stat`` results of the async job files of backups whose process is
    gone -> the backups lost with it: [{ansible_job_id, vm, msg}].

    Only where the progress file was written after the job file: an older
    one was left by an earlier run that was killed, and this run's module
    may not have written its own yet. A job file written after the progress
    file holds the job's end (the module finished meanwhile)."""
    lost = []
    for result in job_file_stats or []:
        owner = result.get('__qemu_backup_owner') or {}
        stat = result.get('stat') or {}
        if not stat.get('exists') or owner.get('started', 0) < stat.get('mtime', 0):
            continue
        name = owner.get('vm') or _vm_of({'__qemu_backup_job': owner.get('job', {})}).get('socket')
        lost.append({
            'ansible_job_id': owner['job'].get('ansible_job_id'), 'vm': name,
            'msg': 'the backup of VM %s ended without a result: its process (pid %s) is gone, killed from '
                   'outside (a kill, the OOM killer or a crash). Nothing of it was published; the next '
                   'backup of %s removes what it left' % (name, owner.get('pid'), name),
        })
    return lost


def _summary_row(result):
    if not result.get('ok'):
        return [result['vm'], 'FAILED', '-', '-', '-', '-', result.get('msg') or '']
    notes = []
    if result.get('pruned'):
        notes.append('pruned ' + ' '.join(result['pruned']))
    if result.get('skipped_disks'):
        notes.append('skipped ' + ' '.join(d.get('disk', '?') if isinstance(d, dict) else d
                                           for d in result['skipped_disks']))
    duration = result.get('duration')
    return [result['vm'], result.get('level') or '-', result.get('backup_id') or '-', result.get('chain') or '-',
            '%.1f' % (result.get('bytes', 0) / MIB), '-' if duration is None else '%s' % duration,
            ', '.join(notes)]


def backup_summary(results):
    """Per-VM results -> lines of a table with a header, one line per VM."""
    rows = [list(SUMMARY_COLUMNS)] + [_summary_row(result) for result in results or []]
    widths = [max(len(to_text(row[column])) for row in rows) for column in range(len(SUMMARY_COLUMNS) - 1)]
    return [('  '.join(to_text(cell).ljust(width) for cell, width in zip(row, widths)) + '  ' + to_text(row[-1])).rstrip()
            for row in rows]


def backup_progress_file(target_dir, vm_name):
    """Where the running backup of ``vm_name`` under ``target_dir`` reports its progress."""
    return progress_file(to_text(target_dir), to_text(vm_name))


class FilterModule(object):
    def filters(self):
        return {
            'vms_from_sockets': vms_from_sockets,
            'backup_results': backup_results,
            'backup_summary': backup_summary,
            'backup_progress_file': backup_progress_file,
            'backup_owners': backup_owners,
            'backups_gone': backups_gone,
            'lost_backups': lost_backups,
        }
