# -*- coding: utf-8 -*-
# Copyright: (c) 2026, vmbackup.qemu developers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

"""Checks the backup tests share: a backup is proven by reading it back
through its chain and comparing it with what the guest had at its instant."""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import hashlib
import os
import subprocess
from contextlib import contextmanager

import pytest

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


def tree_digest(path):
    """Every file below ``path`` with its content hash, mode and mtime."""
    found = {}
    for root, _dirs, files in os.walk(path):
        for name in files:
            full = os.path.join(root, name)
            with open(full, 'rb') as handle:
                digest = hashlib.sha256(handle.read()).hexdigest()
            st = os.stat(full)
            found[os.path.relpath(full, path)] = (digest, st.st_mode, st.st_mtime_ns)
    return found


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


@contextmanager
def small_filesystem(path, size):
    """A tmpfs of ``size`` (like '4m') at ``path``, to fill up."""
    if os.geteuid() != 0:
        pytest.skip('mounting a small tmpfs needs root')
    os.mkdir(path)
    subprocess.run(['mount', '-t', 'tmpfs', '-o', 'size=%s,mode=0700' % size, 'tmpfs', path], check=True)
    try:
        yield path
    finally:
        subprocess.run(['umount', '-l', path], check=False)


# Written by the harness itself, not by the modules: ansible's temporary
# directories and the result trees (tree-N) of each run.
HARNESS = ('ansible-local', 'ansible-remote')


def state(workdir, vm):
    """Everything the modules could change: every path below ``workdir``
    (with size, mode and mtime below its top level, where QEMU's own disk
    images and logs are not), QEMU's leftovers and bitmaps, and the names in
    QEMU's working directory."""
    found = {}
    for root, dirs, files in os.walk(workdir):
        rel = os.path.relpath(root, workdir)
        if rel == '.':
            dirs[:] = [d for d in dirs if d not in HARNESS and not d.startswith('tree-')]
        for name in dirs + files:
            path = os.path.join(root, name)
            st = os.lstat(path)
            found[os.path.relpath(path, workdir)] = (
                None if rel == '.' else (st.st_size, st.st_mode, st.st_mtime_ns,
                                         os.readlink(path) if os.path.islink(path) else None))
    qemu_cwd = os.readlink('/proc/%d/cwd' % vm.process.pid)
    return {'files': found, 'qemu': vm.leftovers(), 'qemu_cwd': sorted(os.listdir(qemu_cwd)),
            'bitmaps': dict((d, sorted(vm.bitmaps(d))) for d in ('vda', 'vdb'))}


def refused(ansible, workdir, vm, name, args, expect, **kwargs):
    """Run module ``name``; it must fail cleanly, say ``expect`` and change nothing."""
    before = state(workdir, vm)
    failure = ansible.failed(name, args, **kwargs)
    assert expect in failure['msg'], '%s %r: %s' % (name, args, failure['msg'])
    assert state(workdir, vm) == before, '%s %r changed something' % (name, args)
    return failure
