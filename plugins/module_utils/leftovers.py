# -*- coding: utf-8 -*-
# Copyright: (c) 2026, vmbackup.qemu developers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

"""What a killed run of ours left in a QEMU and in fleece_dir, or what makes
up a qemu_fleece view, found by our names (names.py) and removed in the only
order QEMU allows."""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import os
import time

from ansible_collections.vmbackup.qemu.plugins.module_utils.errors import QMPTimeoutError
from ansible_collections.vmbackup.qemu.plugins.module_utils.names import (
    FLEECE_SUFFIX,
    fleece_prefix,
    is_fleece_job,
    is_ours,
    is_view_name,
    view_fleece_prefix,
)
from ansible_collections.vmbackup.qemu.plugins.module_utils.qmp import ignore_missing

EXPORT_GONE_TIMEOUT = 10.0


def remove_exports(vm, mine):
    """Delete the NBD exports whose id ``mine`` accepts and wait until QEMU
    has let go of them (a node an export still holds cannot be deleted).
    Returns what was removed, in words."""
    if not vm.features.has('block_export_add'):
        return []
    qmp = vm.qmp
    doomed = [e['id'] for e in qmp.execute('query-block-exports') if mine(e.get('id'))]
    for export in doomed:
        ignore_missing(qmp.execute, 'block-export-del', {'id': export, 'mode': 'hard'})
    deadline = time.monotonic() + EXPORT_GONE_TIMEOUT
    while any(mine(e.get('id')) for e in qmp.execute('query-block-exports')):
        if time.monotonic() > deadline:
            raise QMPTimeoutError('QEMU did not let go of NBD export(s) %s within %g s (a client still reading?): '
                                  'run again' % (', '.join(doomed), EXPORT_GONE_TIMEOUT))
        qmp.wait_event(('BLOCK_EXPORT_DELETED',), 0.2)
    return ['export %s' % export for export in doomed]


def _remove_secrets(vm, mine):
    """Our secret objects (an encrypted backup's passphrase), once no node
    names them any more; returns what was removed, in words."""
    if not vm.features.has('luks_targets'):
        return []
    removed = []
    for child in vm.qmp.execute('qom-list', {'path': '/objects'}):
        if mine(child['name']) and child.get('type') == 'child<secret>':
            if ignore_missing(vm.qmp.execute, 'object-del', {'id': child['name']}):
                removed.append('secret object %s' % child['name'])
    return removed


def remove_leftovers(vm, fleece_dir=None, job_timeout=60, views=False):
    """Remove every job, export, node and fleece file a killed run of ours
    left; with ``views``, instead, everything of a qemu_fleece view.

    Only call it with the VM's lock held (vmlock): then no live run of ours
    owns anything in this QEMU, and every ``vmb-`` thing is a dead run's,
    but for a view, which lives between runs and is only removed as asked.

    Returns a list of what was removed, in words."""
    removed = []
    qmp = vm.qmp

    def mine(name):
        return is_ours(name) and is_view_name(name) == views

    jobs = [job_id for job_id in qmp.query_jobs() if mine(job_id)]
    # Fleecing jobs last: their filters hold the views the other jobs and the exports read.
    ended = qmp.end_jobs([j for j in jobs if not is_fleece_job(j)], timeout=job_timeout)
    removed += ['job %s' % job_id for job_id in ended]
    removed += remove_exports(vm, mine)
    nodes = vm.named_nodes()
    ours = [name for name in nodes if mine(name)]

    def delete(names):
        for name in names:
            if ignore_missing(qmp.execute, 'blockdev-del', {'node-name': name}):
                removed.append('node %s' % name)

    # Order: readers of the filters, then the filters (after switching the
    # devices back to the node below them), then fleece images and targets.
    delete([n for n in ours if nodes[n].get('drv') == 'snapshot-access'])
    ended = qmp.end_jobs([j for j in jobs if is_fleece_job(j)], timeout=job_timeout)
    if ended:
        # Each took its filter out of the write path and the graph.
        removed += ['job %s' % job_id for job_id in ended]
        nodes = vm.named_nodes()
        ours = [name for name in nodes if mine(name)]
    for info in qmp.execute('query-block'):
        root = (info.get('inserted') or {}).get('node-name')
        if mine(root) and info.get('qdev'):
            original = vm.child_node(nodes, root, 'file')
            vm.switch_drive(info['qdev'], original)
            removed.append('device %s switched back to %s' % (info['qdev'], original))
    delete([n for n in ours if nodes[n].get('drv') == 'copy-before-write'])
    remaining = [n for n in ours if nodes[n].get('drv') not in ('snapshot-access', 'copy-before-write')]
    # Format nodes before the protocol nodes they sit on.
    delete([n for n in remaining if nodes[n].get('drv') != 'file'])
    delete([n for n in remaining if nodes[n].get('drv') == 'file'])
    removed += _remove_secrets(vm, mine)
    for name in ours:
        filename = nodes[name].get('file', '')
        if filename.endswith(FLEECE_SUFFIX) and os.path.exists(filename):
            os.unlink(filename)
            removed.append('file %s' % filename)
    if fleece_dir and os.path.isdir(fleece_dir):
        for entry in os.listdir(fleece_dir):
            # Only this VM's: other VMs' backups may be using the same fleece_dir right now.
            this_vm = entry.startswith(fleece_prefix(vm.qmp.socket_path)) and entry.endswith(FLEECE_SUFFIX)
            if this_vm and entry.startswith(view_fleece_prefix(vm.qmp.socket_path)) == views:
                os.unlink(os.path.join(fleece_dir, entry))
                removed.append('file %s' % os.path.join(fleece_dir, entry))
    return removed
