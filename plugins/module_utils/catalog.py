# -*- coding: utf-8 -*-
# Copyright: (c) 2026, vmbackup.qemu developers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

"""What a repository holds, and whether it can be trusted: read-only."""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import os

from ansible_collections.vmbackup.qemu.plugins.module_utils import qemu_img
from ansible_collections.vmbackup.qemu.plugins.module_utils.paths import directory_problem
from ansible_collections.vmbackup.qemu.plugins.module_utils.errors import RepositoryError
from ansible_collections.vmbackup.qemu.plugins.module_utils.repository import (
    VMRepository,
    digest_all,
    digest_differs,
    file_digest,
    has_digest,
    is_repository,
)


def list_vms(target_dir):
    problem = directory_problem('target_dir', target_dir, 'check the path, or mount the backup storage')
    if problem:
        raise RepositoryError(problem)
    return sorted(name for name in os.listdir(target_dir)
                  if is_repository(os.path.join(target_dir, name)))


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


def dependents(chain, backup):
    """The ids of the backups whose restore reads ``backup``: itself and
    the rest of its line (a differential on the full does not read an
    incremental beside it)."""
    found = []
    for other in chain.backups:
        try:
            if backup in ancestry(chain, other):
                found.append(other.id)
        except RepositoryError:
            continue
    return found


def readable_digest(path):
    """The digest record of ``path``, or None if it cannot be read (gone,
    or unreadable: the other checks name it)."""
    try:
        return file_digest(path)
    except (IOError, OSError):
        return None


def record_problems(chain, backup):
    """What in ``backup``'s manifest disagrees with its chain: where it says
    it lies, its parent, its disks and their sizes against its parent's."""
    problems = []
    manifest = backup.manifest
    if manifest.get('chain') != chain.id:
        problems.append('manifest says chain %s but lies in %s' % (manifest.get('chain'), chain.id))
    parent = chain.backup(backup.parent) if backup.parent else None
    if backup.level in ('full', 'copy') and backup.parent:
        problems.append('a %s backup names a parent (%s)' % (backup.level, backup.parent))
    if backup.level in ('incremental', 'differential'):
        if parent is None:
            problems.append('its parent %s is missing from the chain' % backup.parent)
        elif sorted(parent.disks) != sorted(backup.disks):
            problems.append('its disks (%s) differ from its parent\'s (%s)' % (
                ', '.join(sorted(backup.disks)), ', '.join(sorted(parent.disks))))
        else:
            problems += ['disk %s has %s bytes, %s in its parent' % (
                disk, record.get('virtual_size'), parent.disks[disk].get('virtual_size'))
                for disk, record in sorted(backup.disks.items())
                if record.get('virtual_size') != parent.disks[disk].get('virtual_size')]
    return problems


def describe(repo):
    """The SPEC's `chains` items for one VM."""
    chains = []
    for chain in repo.chains():
        chains.append({
            'vm': repo.vm_name,
            'id': chain.id,
            'backups': [{
                'id': b.id, 'level': b.level, 'time': b.manifest.get('time_iso'),
                'parent': b.parent, 'encrypted': b.encryption is not None,
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


def newest(backups):
    """The newest of ``backups`` (None if there are none)."""
    return max(backups, key=lambda b: (b.time, b.id)) if backups else None


def inspect(target_dir, vm_name=None, verify=False):
    """What qemu_backup_info returns: the chains of one VM or of all, the
    newest (restorable, when verified) backup of each, and the problems found."""
    if vm_name is not None:
        repos = [open_vm(target_dir, vm_name)]
    else:
        repos = [VMRepository(target_dir, name) for name in list_vms(target_dir)]
    chains, problems, newest_ids = [], [], {}
    for repo in repos:
        described = describe(repo)
        candidates = [b for c in repo.chains() for b in c.backups]
        if verify:
            verifier = Verifier(repo)
            problems += verifier.run()
            ok = dict((b.id, verifier.restorable(c, b)) for c in repo.chains() for b in c.backups)
            content = dict((b.id, verifier.content(c, b)) for c in repo.chains() for b in c.backups)
            for chain in described:
                for backup in chain['backups']:
                    backup.update(restorable=ok[backup['id']], content=content[backup['id']])
            candidates = [b for b in candidates if ok[b.id]]
        best = newest(candidates)
        newest_ids[repo.vm_name] = best.id if best else None
        chains += described
    return dict(changed=False, vms=[r.vm_name for r in repos], chains=chains, newest=newest_ids,
                problems=problems, verified=verify)


class Verifier(object):
    """Checks every image and every chain of one VM; collects findings."""

    def __init__(self, repo, deep=True):
        self.repo = repo
        self.deep = deep
        self.problems = []
        self.bad_images = set()
        self.bad_backups = set()     # ids whose manifest disagrees with its chain
        self.digests = {}            # {image: digest record, or None if unreadable}
        self.rotten = set()          # images whose bytes differ from their digest
        self.undigested = set()      # images of backups from before digests

    def problem(self, text, chain=None, backup=None, disk=None, path=None, severity='error'):
        if severity == 'error' and chain is not None and not os.path.isdir(os.path.join(self.repo.root, chain)):
            # The chain went away while it was read: a backup running now
            # pruned it (keep_chains), which is no damage.
            text, severity = 'the chain was removed while it was verified (pruned by a backup): %s' % text, 'warning'
        self.problems.append({'vm': self.repo.vm_name, 'chain': chain, 'backup': backup, 'disk': disk,
                              'file': path, 'severity': severity, 'problem': text})

    def run(self):
        chains = dict((c.id, c) for c in self.repo.chains())
        # Read every digested image first, several at a time (hashlib runs
        # beside the GIL), then check them one by one.
        self.digests = digest_all(sorted(set(
            b.image(d) for c in chains.values() for b in c.backups for d, record in b.disks.items()
            if has_digest(record) and os.path.isfile(b.image(d)))), digest=readable_digest)
        for chain_dir in self.repo.chain_dirs().values():
            self._chain_dir(chain_dir)
            for backup in chains[chain_dir.id].backups if chain_dir.id in chains else []:
                self._backup(chains[chain_dir.id], backup)
        return self.problems

    def _chain_dir(self, chain_dir):
        for entry, cause in chain_dir.unreadable:
            self.problem('manifest cannot be read (%s)' % cause, chain=chain_dir.id,
                         path=os.path.join(chain_dir.path, entry))
        named = chain_dir.named()
        for entry in chain_dir.entries:
            if entry not in named:
                self.problem('orphan file: no manifest names it (a backup running now is writing it, or an '
                             'interrupted one left it; the next backup removes it)', chain=chain_dir.id,
                             path=os.path.join(chain_dir.path, entry), severity='warning')

    def _backup(self, chain, backup):
        for text in record_problems(chain, backup):
            self.problem(text, chain=chain.id, backup=backup.id, path=backup.manifest_path)
            self.bad_backups.add(backup.id)
        parent = chain.backup(backup.parent) if backup.parent else None
        for disk, record in sorted(backup.disks.items()):
            self._image(chain, backup, disk, record, parent)

    def _image(self, chain, backup, disk, record, parent):
        path = backup.image(disk)
        where = dict(chain=chain.id, backup=backup.id, disk=disk, path=path)
        if not os.path.isfile(path):
            self.problem('image is missing', **where)
            self.bad_images.add(path)
            return
        # qemu-img check must open an encrypted image with its key, which
        # info never has: its header, LUKS header and backing are read below.
        code, output = qemu_img.check(path) if backup.encryption is None else (qemu_img.CHECK_OK, '')
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
        encrypted = qemu_img.encryption_format(info)
        if encrypted != ((backup.encryption or {}).get('format')):
            self.problem('image is %s, the manifest says %s' % (
                'encrypted (%s)' % encrypted if encrypted else 'not encrypted',
                'encrypted' if backup.encryption else 'not encrypted'), **where)
            self.bad_images.add(path)
        if info.get('virtual-size') != record.get('virtual_size'):
            self.problem('virtual size %s differs from the manifest\'s %s' % (
                info.get('virtual-size'), record.get('virtual_size')), **where)
            self.bad_images.add(path)
        expected = os.path.basename(parent.image(disk)) if parent is not None and disk in parent.disks else None
        actual = info.get('backing-filename')
        if actual != expected:
            self.problem('backing file is %s, the manifest says %s' % (actual or 'none', expected or 'none'),
                         **where)
            self.bad_images.add(path)
        self._digest(chain, backup, record, where)

    def _digest(self, chain, backup, record, where):
        """Compare the image's bytes with the digest its backup recorded."""
        path = where['path']
        if not has_digest(record):
            self.undigested.add(path)
            self.problem('no digest recorded (a backup from before digests, or taken with digests off): '
                         'its content cannot be verified', severity='warning', **where)
        elif self.digests.get(path) is None:
            self.problem('image cannot be read to compare it with its digest', **where)
            self.bad_images.add(path)
        elif digest_differs(record, self.digests[path]):
            self.problem('content differs from its digest (bit rot, or the file was changed after the '
                         'backup): backups %s read it and cannot be restored (qemu_backup_restore refuses '
                         'them unless force)' % ', '.join(dependents(chain, backup)), **where)
            self.bad_images.add(path)
            self.rotten.add(path)

    def restorable(self, chain, backup):
        try:
            line = ancestry(chain, backup)
        except RepositoryError:
            return False
        return not any(b.id in self.bad_backups or any(b.image(d) in self.bad_images for d in b.disks)
                       for b in line)

    def content(self, chain, backup):
        """Whether the bytes of every image a restore of ``backup`` reads
        match their digests: 'verified', 'damaged' (one differs), or
        'unverifiable' (one has no digest)."""
        try:
            images = [b.image(d) for b in ancestry(chain, backup) for d in backup.disks if d in b.disks]
        except RepositoryError:
            return 'unverifiable'
        if any(path in self.rotten for path in images):
            return 'damaged'
        if any(path in self.undigested for path in images):
            return 'unverifiable'
        return 'verified'
