# -*- coding: utf-8 -*-
# Copyright: (c) 2026, vmbackup.qemu developers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

"""Point-in-time restores from a repository. The repository is only read."""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import os

from ansible_collections.vmbackup.qemu.plugins.module_utils import qemu_img
from ansible_collections.vmbackup.qemu.plugins.module_utils.catalog import ancestry, newest, open_vm, record_problems
from ansible_collections.vmbackup.qemu.plugins.module_utils.encryption import passphrase_from, restore_key_problem
from ansible_collections.vmbackup.qemu.plugins.module_utils.errors import QemuImgError, RestoreError, VMBackupError
from ansible_collections.vmbackup.qemu.plugins.module_utils.paths import fsync_directory, is_inside
from ansible_collections.vmbackup.qemu.plugins.module_utils.repository import digest_all, digest_differs, has_digest


def find_backup(repo, backup_id=None):
    """(chain, backup) for ``backup_id``, or the newest backup."""
    chains = repo.chains()
    if backup_id is None:
        backup = newest([b for chain in chains for b in chain.backups])
        if backup is None:
            raise RestoreError('the repository holds no complete backup of %s' % repo.vm_name)
        backup_id = backup.id
    for chain in chains:
        backup = chain.backup(backup_id)
        if backup is not None:
            return chain, backup
    known = [b.id for c in chains for b in c.backups]
    raise RestoreError('%s has no backup %s; its backups are: %s' % (
        repo.vm_name, backup_id, ', '.join(known) or 'none'), backups=known)


def check_chain(chain, backup, disk, force=False, warn=None, secret=None):
    """The images a restore of ``disk`` reads, full first; each must be whole
    (an encrypted one is opened with ``secret``, its passphrase) and match
    its digest (unless ``force``: then ``warn``). They are checked several
    at a time, all before anything is written; the first missing or damaged
    image, full first, is the one reported."""
    links = ancestry(chain, backup)
    _check_records(chain, backup, disk, links)
    files = [link.image(disk) for link in links]
    present = [path for path in files if os.path.isfile(path)]
    checks = qemu_img.check_all(present, secret=secret)
    for link, path in zip(links, files):
        if path not in checks:
            raise RestoreError('cannot restore %s of backup %s: the chain is broken, %s (backup %s) is '
                               'missing' % (disk, backup.id, path, link.id), missing=path)
        code, output = checks[path]
        if code not in (qemu_img.CHECK_OK, qemu_img.CHECK_LEAKS):
            raise RestoreError('cannot restore %s of backup %s: %s (backup %s) is damaged: %s' % (
                disk, backup.id, path, link.id, ' '.join(output.split())[:300]), damaged=path)
    _check_digests(backup, disk, links, force, warn)
    size = qemu_img.info(files[-1]).get('virtual-size')
    if size != backup.disks[disk].get('virtual_size'):
        raise RestoreError('cannot restore %s of backup %s: %s has %s bytes, its manifest says %s' % (
            disk, backup.id, files[-1], size, backup.disks[disk].get('virtual_size')), damaged=files[-1])
    return files


def _check_records(chain, backup, disk, links):
    """Refuse when a manifest of the chain disagrees with the chain."""
    for link in links:
        problems = record_problems(chain, link)
        if problems:
            raise RestoreError('cannot restore %s of backup %s: the manifest of backup %s (%s) disagrees with its '
                               'chain: %s; qemu_backup_info with verify=true lists every problem' % (
                                   disk, backup.id, link.id, link.manifest_path, '; '.join(problems)),
                               manifest=link.manifest_path)


def _check_digests(backup, disk, links, force, warn):
    """Refuse (or with ``force``, warn about) the first image of the chain,
    full first, whose bytes differ from the digest its backup recorded.
    Images from before digests are not checked."""
    digested = [(link, link.image(disk)) for link in links if has_digest(link.disks[disk])]
    try:
        digests = digest_all([path for _link, path in digested])
    except (IOError, OSError) as exc:
        raise RestoreError('cannot restore %s of backup %s: reading the chain to check its digests failed: %s'
                           % (disk, backup.id, exc))
    for link, path in digested:
        if not digest_differs(link.disks[disk], digests[path]):
            continue
        text = ('%s (backup %s) differs from the digest recorded when it was written (bit rot, or the file was '
                'changed): the restore of %s of backup %s would be wrong' % (path, link.id, disk, backup.id))
        if not force:
            raise RestoreError('cannot restore: %s; restore an earlier point (qemu_backup_info with verify=true '
                               'says which are restorable), or set force: true to restore it anyway' % text,
                               damaged=path)
        if warn is not None:
            warn('force: restoring despite a digest mismatch: %s' % text)


class DiskRestore(object):
    """One disk of one backup into one destination file."""

    def __init__(self, chain, backup, disk, dest, dest_format, force=False, warn=None, secret=None,
                 encrypt_dest=False):
        self.backup = backup
        self.disk = disk
        self.dest = dest
        self.format = dest_format
        self.secret = secret      # the passphrase: of an encrypted chain, or for an encrypted dest
        self.encrypt_dest = encrypt_dest
        source_secret = secret if backup.encryption is not None else None
        self.files = check_chain(chain, backup, disk, force, warn, source_secret)
        self.source = self.files[-1]
        self.source_layers = len(self.files) if source_secret is not None else 0

    def same_as_source(self, path):
        """Whether the image ``path`` (in the asked format) holds this point."""
        return qemu_img.compare(path, self.source, self.format, 'qcow2', secret=self.secret,
                                second_layers=self.source_layers, first_encrypted=self.encrypt_dest)

    def already_there(self):
        """True when ``dest`` holds exactly this point, in the asked format
        and encrypted as asked."""
        if not os.path.exists(self.dest):
            return False
        dest_info = qemu_img.info(self.dest)
        if dest_info.get('format') != self.format:
            return False
        if bool(qemu_img.encryption_format(dest_info)) != self.encrypt_dest:
            return False
        try:
            return self.same_as_source(self.dest)
        except QemuImgError:
            if self.encrypt_dest:
                return False        # encrypted with another key: not this point as asked
            raise

    def write(self, verify):
        """Convert into a temporary file beside ``dest`` (on disk when qemu-img
        exits), verify, then rename and make the name durable: ``dest`` is
        never half-written, not even after a host crash, and a failure leaves
        nothing behind."""
        directory = os.path.dirname(os.path.abspath(self.dest))
        tmp = os.path.join(directory, '.%s.%d.partial' % (os.path.basename(self.dest), os.getpid()))
        try:
            qemu_img.convert(self.source, tmp, self.format, secret=self.secret, layers=self.source_layers,
                             encrypt_dest=self.encrypt_dest)
            if verify and not self.same_as_source(tmp):
                raise RestoreError('restored %s differs from backup %s: the restore was discarded' % (
                    self.disk, self.backup.id))
            os.rename(tmp, self.dest)
            fsync_directory(directory)
        except VMBackupError as exc:
            exc.msg = 'restoring %s of backup %s to %s failed: %s; nothing was left behind' % (
                self.disk, self.backup.id, self.dest, exc.msg)
            raise
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)


def refuse_inside_repository(dest, target_dir):
    """The repository is only read: no restore writes into it, through a
    symlink or otherwise."""
    if is_inside(dest, target_dir):
        real = os.path.realpath(dest)
        raise RestoreError('dest %s%s is inside the repository %s: the repository is only read; restore to '
                           'a path outside target_dir' % (dest, ' (%s)' % real if real != dest else '',
                                                          target_dir), dest=dest)


def refuse_unencryptable_dest(dest_format, encrypt_dest, passphrase):
    """``encrypt`` needs a qcow2 dest and a key to encrypt it with."""
    if not encrypt_dest:
        return
    if dest_format != 'qcow2':
        raise RestoreError('encrypt: true needs format: qcow2 (a %s image cannot hold LUKS encryption)' % dest_format)
    if passphrase is None:
        raise RestoreError('encrypt: true needs a key: give encryption_key_file or encryption_passphrase (an '
                           'encrypted chain\'s key; the restored images are encrypted with it)')


def _unknown_disks(backup, disks):
    unknown = [disk for disk in disks if disk not in backup.disks]
    if unknown:
        raise RestoreError('backup %s has no disk %s; its disks are: %s' % (
            backup.id, ', '.join(unknown), ', '.join(sorted(backup.disks))), disks=sorted(backup.disks))


def restore_plan(params, backup):
    """[(disk, image file to write)]: O(disk) into the file dest; else every
    disk (or those of O(disks)) into the directory dest as DISK.FORMAT."""
    if params.get('disk'):
        _unknown_disks(backup, [params['disk']])
        directory = os.path.dirname(os.path.abspath(params['dest']))
        if not os.path.isdir(directory):
            raise RestoreError('the directory of dest (%s) does not exist: create it first' % directory)
        if os.path.isdir(params['dest']):
            raise RestoreError('dest %s is a directory: with disk set, dest is the image file to write'
                               % params['dest'])
        return [(params['disk'], params['dest'])]
    if os.path.exists(params['dest']) and not os.path.isdir(params['dest']):
        raise RestoreError('dest %s is a file: without disk, the disks are restored into dest as a '
                           'directory' % params['dest'])
    disks = params.get('disks') or sorted(backup.disks)
    _unknown_disks(backup, disks)
    return [(disk, os.path.join(params['dest'], '%s.%s' % (disk, params['format']))) for disk in disks]


def restore(params, check_mode, warn=None):
    """The work of qemu_backup_restore; returns its result."""
    refuse_inside_repository(params['dest'], params['target_dir'])
    repo = open_vm(params['target_dir'], params['vm_name'])
    chain, backup = find_backup(repo, params.get('backup_id'))
    passphrase = passphrase_from(params)
    problem = restore_key_problem(backup.id, backup.encryption, passphrase)
    if problem:
        raise RestoreError(problem, encrypted=True)
    encrypt_dest = bool(params.get('encrypt'))
    refuse_unencryptable_dest(params['format'], encrypt_dest, passphrase)
    secret = passphrase if backup.encryption is not None or encrypt_dest else None
    fmt = params['format']
    plan = restore_plan(params, backup)
    for _disk, dest in plan:
        refuse_inside_repository(dest, params['target_dir'])
    restores = [DiskRestore(chain, backup, disk, dest, fmt, params.get('force'), warn, secret, encrypt_dest)
                for disk, dest in plan]
    todo = []
    for item in restores:
        if item.already_there():
            continue
        if os.path.exists(item.dest) and not params.get('force'):
            raise RestoreError('%s exists and does not hold disk %s of backup %s as %s: set force: true to '
                               'replace it' % (item.dest, item.disk, backup.id, fmt), dest=item.dest)
        todo.append(item)
    if todo and not check_mode:
        if not params.get('disk') and not os.path.isdir(params['dest']):
            os.mkdir(params['dest'], 0o700)
        for item in todo:
            item.write(params.get('verify'))
    return {
        'changed': bool(todo),
        'backup_id': backup.id,
        'level': backup.level,
        'dest': params['dest'],
        'format': fmt,
        'verified': bool(params.get('verify')) and not check_mode,
        'encrypted': backup.encryption is not None,
        'dest_encrypted': encrypt_dest,
        'disks': [{
            'disk': item.disk, 'dest': item.dest, 'chain': item.files,
            'changed': item in todo, 'virtual_size': backup.disks[item.disk].get('virtual_size'),
        } for item in restores],
        'chain': restores[0].files if params.get('disk') else None,
    }
