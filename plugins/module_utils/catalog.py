# -*- coding: utf-8 -*-
# Copyright: (c) 2026, vmbackup.qemu developers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

"""What a repository holds, and whether it can be trusted: read-only."""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import json
import os

from ansible_collections.vmbackup.qemu.plugins.module_utils import qemu_img
from ansible_collections.vmbackup.qemu.plugins.module_utils.paths import directory_problem
from ansible_collections.vmbackup.qemu.plugins.module_utils.errors import RepositoryError
from ansible_collections.vmbackup.qemu.plugins.module_utils.repository import MANIFEST_SUFFIX, VMRepository


def list_vms(target_dir):
    problem = directory_problem('target_dir', target_dir, 'check the path, or mount the backup storage')
    if problem:
        raise RepositoryError(problem)
    return sorted(name for name in os.listdir(target_dir)
                  if os.path.isfile(os.path.join(target_dir, name, 'repository.json')))


def open_vm(target_dir, vm_name):
    """The repository of ``vm_name``; a clear error lists the VMs that exist."""
    vms = list_vms(target_dir)
    if vm_name not in vms:
        raise RepositoryError('%s holds no backups of a VM named %s; it has: %s' % (
            target_dir, vm_name, ', '.join(vms) or 'none'), vms=vms)
    return VMRepository(target_dir, vm_name)


def ancestry(chain, backup):
    """The backups a restore of ``backup`` reads, full first."""
    by_id = dict((b.id, b) for b in chain.backups)
    line = [backup]
    while line[-1].parent:
        parent = by_id.get(line[-1].parent)
        if parent is None:
            raise RepositoryError('backup %s builds on %s, whose manifest is missing from chain %s: the chain '
                                  'is broken at that point' % (line[-1].id, line[-1].parent, chain.path))
        line.append(parent)
    return list(reversed(line))


def describe(repo):
    """The SPEC's `chains` items for one VM."""
    chains = []
    for chain in repo.chains():
        chains.append({
            'vm': repo.vm_name,
            'id': chain.id,
            'backups': [{
                'id': b.id, 'level': b.level, 'time': b.manifest.get('time_iso'),
                'parent': b.parent,
                'disks': [{'disk': d['disk'], 'file': b.image(d['disk']),
                           'size': _size(b.image(d['disk'])), 'virtual_size': d.get('virtual_size')}
                          for d in b.manifest['disks']],
            } for b in chain.backups],
        })
    return chains


def _size(path):
    try:
        return os.stat(path).st_size
    except OSError:
        return None


def newest(repo):
    backups = [b for chain in repo.chains() for b in chain.backups]
    return max(backups, key=lambda b: (b.time, b.id)) if backups else None


class Verifier(object):
    """Checks every image and every chain of one VM; collects findings."""

    def __init__(self, repo, deep=True):
        self.repo = repo
        self.deep = deep
        self.problems = []
        self.bad_images = set()

    def problem(self, text, chain=None, backup=None, disk=None, path=None, severity='error'):
        self.problems.append({'vm': self.repo.vm_name, 'chain': chain, 'backup': backup, 'disk': disk,
                              'file': path, 'severity': severity, 'problem': text})

    def run(self):
        for name in sorted(os.listdir(self.repo.root)):
            path = os.path.join(self.repo.root, name)
            if os.path.isdir(path) and not name.startswith('.'):
                self._chain_dir(name, path)
        return self.problems

    def _chain_dir(self, chain_id, path):
        named = set()
        manifests = {}
        for entry in sorted(os.listdir(path)):
            if entry.endswith(MANIFEST_SUFFIX) and not entry.startswith('.'):
                try:
                    with open(os.path.join(path, entry)) as handle:
                        manifest = json.load(handle)
                    manifests[manifest['id']] = manifest
                    named.add(entry)
                    named.update(d['file'] for d in manifest['disks'])
                except (IOError, ValueError, KeyError, TypeError) as exc:
                    self.problem('manifest cannot be read (%s)' % exc, chain=chain_id,
                                 path=os.path.join(path, entry))
                    named.add(entry)
        for entry in sorted(os.listdir(path)):
            if entry not in named:
                self.problem('orphan file: no manifest names it (left by an interrupted backup; the next '
                             'backup removes it)', chain=chain_id, path=os.path.join(path, entry),
                             severity='warning')
        chain = [c for c in self.repo.chains() if c.id == chain_id]
        if not chain:
            return
        chain = chain[0]
        for backup in chain.backups:
            self._backup(chain, backup)

    def _backup(self, chain, backup):
        manifest = backup.manifest
        if manifest.get('chain') != chain.id:
            self.problem('manifest says chain %s but lies in %s' % (manifest.get('chain'), chain.id),
                         chain=chain.id, backup=backup.id)
        parent = chain.backup(backup.parent) if backup.parent else None
        if backup.level in ('full', 'copy') and backup.parent:
            self.problem('a %s backup names a parent (%s)' % (backup.level, backup.parent),
                         chain=chain.id, backup=backup.id)
        if backup.level in ('incremental', 'differential'):
            if parent is None:
                self.problem('its parent %s is missing from the chain' % backup.parent, chain=chain.id,
                             backup=backup.id)
            elif sorted(parent.disks) != sorted(backup.disks):
                self.problem('its disks (%s) differ from its parent\'s (%s)' % (
                    ', '.join(sorted(backup.disks)), ', '.join(sorted(parent.disks))),
                    chain=chain.id, backup=backup.id)
        for disk, record in sorted(backup.disks.items()):
            self._image(chain, backup, disk, record, parent)

    def _image(self, chain, backup, disk, record, parent):
        path = backup.image(disk)
        where = dict(chain=chain.id, backup=backup.id, disk=disk, path=path)
        if not os.path.isfile(path):
            self.problem('image is missing', **where)
            self.bad_images.add(path)
            return
        code, output = qemu_img.check(path)
        if code == qemu_img.CHECK_LEAKS:
            self.problem('qemu-img check found leaked clusters (wasted space, data intact)',
                         severity='warning', **where)
        elif code != qemu_img.CHECK_OK:
            self.problem('image is damaged: qemu-img check: %s' % ' '.join(output.split())[:300], **where)
            self.bad_images.add(path)
            return
        try:
            info = qemu_img.info(path)
        except qemu_img.QemuImgError as exc:
            self.problem('image cannot be read: %s' % exc.msg, **where)
            self.bad_images.add(path)
            return
        if info.get('virtual-size') != record.get('virtual_size'):
            self.problem('virtual size %s differs from the manifest\'s %s' % (
                info.get('virtual-size'), record.get('virtual_size')), **where)
        expected = os.path.basename(parent.image(disk)) if parent is not None and disk in parent.disks else None
        actual = info.get('backing-filename')
        if actual != expected:
            self.problem('backing file is %s, the manifest says %s' % (actual or 'none', expected or 'none'),
                         **where)
            self.bad_images.add(path)

    def restorable(self, chain, backup):
        try:
            line = ancestry(chain, backup)
        except RepositoryError:
            return False
        return not any(b.image(d) in self.bad_images for b in line for d in b.disks)
