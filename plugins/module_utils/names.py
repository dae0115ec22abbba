# -*- coding: utf-8 -*-
# Copyright: (c) 2026, vmbackup.qemu developers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

"""The names the collection gives what it makes in QEMU and beside it: block
nodes and jobs (``vmb-``), dirty bitmaps (``vmbackup-``) and fleece files.
Cleanup tells our leftovers from anything else by these names alone, so they
live here only; the test bed imports them too.

Bitmaps (per repository, so two repositories never share one):

    vmbackup-<repo>-i-<backup id>   changes since that backup (persistent)
    vmbackup-<repo>-f-<chain id>    changes since the chain's full (persistent)
    vmbackup-<repo>-t-<backup id>   frozen copy used by one run (transient)"""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import hashlib
import os

# Every node, job and export the collection creates starts with this.
NODE_PREFIX = 'vmb-'
FLEECE_SUFFIX = '.fleece.raw'
BITMAP_PREFIX = 'vmbackup-'


def node_name(run_id, role, index):
    """Names stay within QEMU's 31 characters: 'vmb-' + 6 + '-' + role + index
    (a view's run id is 'view')."""
    return '%s%s-%s%d' % (NODE_PREFIX, run_id, role, index)


def is_ours(name):
    return bool(name) and name.startswith(NODE_PREFIX)


def role_of(name):
    """The role part of one of our names ('push' of 'vmb-1a2b3c-push0'), or None."""
    if not is_ours(name):
        return None
    return name[len(NODE_PREFIX):].partition('-')[2].rstrip('0123456789') or None


# Jobs: a push job copies a disk (or its point-in-time view) into a backup
# image; a fleecing job (sync: none) holds a view with its filter, and
# cleanup ends it after the view's readers.
PUSH_JOB_ROLE = 'push'
FLEECE_JOB_ROLE = 'flc'


def push_job(run_id, index):
    return node_name(run_id, PUSH_JOB_ROLE, index)


def fleece_job(run_id, index):
    return node_name(run_id, FLEECE_JOB_ROLE, index)


def is_fleece_job(name):
    return role_of(name) == FLEECE_JOB_ROLE


# The secret object (an encrypted backup's passphrase in QEMU), one per run:
# removed with the run's target nodes, or by the next run's cleanup.
SECRET_ROLE = 'sec'


def secret_object(run_id):
    return node_name(run_id, SECRET_ROLE, 0)


# A point-in-time view that outlives a module run (qemu_fleece) has one
# fixed run id, so that its nodes, jobs, exports and fleece files are told
# from a killed backup run's debris by their names alone.
VIEW_RUN_ID = 'view'
# Per disk of a view, for the moment between the instant and the view's
# bitmap copy: the user's bitmap frozen on the disk's node.
VIEW_FROZEN_BITMAP = 'vmb-view-frozen'


def is_view_name(name):
    """Whether ``name`` (node, job or export id) belongs to a qemu_fleece view."""
    return is_ours(name) and name[len(NODE_PREFIX):].partition('-')[0] == VIEW_RUN_ID


def view_export(index):
    return node_name(VIEW_RUN_ID, 'exp', index)


def fleece_owner(socket_path):
    """A short key of the VM (its QMP socket), so that runs for several VMs can
    share one fleece_dir and each cleans only its own VM's leftovers."""
    path = os.path.realpath(socket_path)
    return hashlib.sha256(path.encode('utf-8')).hexdigest()[:8]


def fleece_prefix(socket_path):
    return '%s%s-' % (NODE_PREFIX, fleece_owner(socket_path))


def fleece_file(fleece_dir, socket_path, run_id, index):
    return os.path.join(fleece_dir, '%s%s-%d%s' % (fleece_prefix(socket_path), run_id, index, FLEECE_SUFFIX))


def bitmap_prefix(repository_id):
    return '%s%s-' % (BITMAP_PREFIX, repository_id[:8])


def inc_bitmap(repository_id, backup_id):
    return '%si-%s' % (bitmap_prefix(repository_id), backup_id)


def full_bitmap(repository_id, chain_id):
    return '%sf-%s' % (bitmap_prefix(repository_id), chain_id)


def frozen_bitmap(repository_id, backup_id):
    return '%st-%s' % (bitmap_prefix(repository_id), backup_id)


def view_fleece_prefix(socket_path):
    """The start of the names of a view's fleece files (a subset of fleece_prefix)."""
    return '%s%s-' % (fleece_prefix(socket_path), VIEW_RUN_ID)


def view_record(directory, socket_path):
    """Where qemu_fleece keeps what a view of the VM behind ``socket_path`` was made with."""
    return os.path.join(directory, 'view-%s.json' % fleece_owner(socket_path))
