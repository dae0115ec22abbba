# -*- coding: utf-8 -*-
# Copyright: (c) 2026, vmbackup.qemu developers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

"""Checks the backup tests share: a backup is proven by reading it back
through its chain and comparing it with what the guest had at its instant."""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import os

from harness.names import Features, QMPSchema


def backup_args(vm, repo, **extra):
    """qemu_blockdev_backup arguments for ``vm`` into ``repo``."""
    args = {'socket': vm.socket, 'target_dir': repo, 'fleece_dir': vm.workdir}
    args.update(extra)
    return args


def guest_content(vm, label, disks=('vda', 'vdb')):
    """Copies of what the guest has written to ``disks`` until now."""
    return dict((disk, vm.save_shadow(disk, label)) for disk in disks)


def assert_restores_to(vm, result, shadows):
    """Every disk of backup ``result``, read through its chain, equals ``shadows[disk]``."""
    assert sorted(d['disk'] for d in result['disks']) == sorted(shadows)
    for item in result['disks']:
        identical, output = vm.qemu.compare(item['file'], shadows[item['disk']], 'qcow2', 'raw')
        assert identical, 'backup %s of %s differs from the guest at its instant: %s' % (
            result['backup_id'], item['disk'], output)


def repository_files(path):
    """Files below ``path`` other than the repository's identity and lock."""
    found = []
    for root, _dirs, files in os.walk(path):
        found += [os.path.join(root, f) for f in files if f not in ('repository.json', '.lock')]
    return sorted(found)


def expected_route(vm):
    """The fleecing route the QEMU's schema allows for a running VM with
    several disks: 'job' where blockdev-backup takes on-cbw-error (10.1+)."""
    features = Features(QMPSchema(vm.qmp('query-qmp-schema')))
    return 'job' if features.has('backup_on_cbw_error') else 'filter'
