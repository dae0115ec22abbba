# -*- coding: utf-8 -*-
# Copyright: (c) 2026, vmbackup.qemu developers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

"""The backup repository on disk.

    TARGET_DIR/VM/repository.json       {format, id, vm, created}
    TARGET_DIR/VM/.lock                 one backup run per VM repository at a time
    TARGET_DIR/VM/.progress.json        the running backup: its process and progress
    TARGET_DIR/VM/CHAIN/                a chain: its full and what builds on it
    TARGET_DIR/VM/CHAIN/ID.DISK.qcow2   one image per disk; an incremental's backing
                                        file is its parent's image, by relative path
    TARGET_DIR/VM/CHAIN/ID.json         the manifest, written last: a backup exists
                                        once its manifest does; each disk's record
                                        holds the SHA-256 of its image file
                                        ("digest": {"algorithm", "value"}), so that
                                        bit rot anywhere in the file is caught
    TARGET_DIR/VM/CHAIN/.ID.DISK.qcow2.partial   an image being written

Directories are 0700 and files 0600: backups hold whole disks."""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import binascii
import errno
import fcntl
import json
import os
import re
import hashlib
import shutil
import time
from concurrent.futures import ThreadPoolExecutor

from ansible_collections.vmbackup.qemu.plugins.module_utils.errors import RepositoryError
from ansible_collections.vmbackup.qemu.plugins.module_utils.paths import directory_problem, fsync_directory, vm_name_problem

FORMAT_VERSION = 1
INFO_FILE = 'repository.json'
PROGRESS_FILE = '.progress.json'
MANIFEST_SUFFIX = '.json'
PARTIAL_SUFFIX = '.partial'
_SAFE_NAME = re.compile(r'[^A-Za-z0-9._-]')
_BACKUP_ID = re.compile(r'^\d{8}T\d{6}Z-[0-9a-f]{4}$')
DIGEST_ALGORITHM = 'sha256'
# Files hashed at a time: hashlib releases the GIL, so threads use the cores.
DIGEST_JOBS = 4
_DIGEST_CHUNK = 1024 * 1024
TARGET_DIR_MISSING_HINT = ('create it, or mount the backup storage there (it is not created, so that a '
                           'missing mount is not silently filled on the local disk)')


def safe_component(name):
    """A disk or VM name made safe for a file name (e.g. '#block123' -> '_block123')."""
    return _SAFE_NAME.sub('_', name)


def new_backup_id(now=None):
    stamp = time.strftime('%Y%m%dT%H%M%SZ', time.gmtime(now if now is not None else time.time()))
    return '%s-%s' % (stamp, binascii.hexlify(os.urandom(2)).decode('ascii'))


def is_repository(path):
    """True when ``path`` is a VM's repository (it has its identity file)."""
    return os.path.isfile(os.path.join(path, INFO_FILE))


def progress_file(target_dir, vm_name):
    """Where a running backup of ``vm_name`` reports its progress (JSON)."""
    return os.path.join(target_dir, vm_name, PROGRESS_FILE)


def is_manifest(entry):
    return entry.endswith(MANIFEST_SUFFIX) and not entry.startswith('.')


def read_manifest(path):
    """The manifest at ``path`` as a Backup; RepositoryError if it cannot be read."""
    try:
        with open(path) as handle:
            return Backup(os.path.dirname(path), json.load(handle))
    except (IOError, ValueError, KeyError, TypeError) as exc:
        raise RepositoryError('manifest %s cannot be read (%s)' % (path, exc), path=path, cause=str(exc))


def file_digest(path):
    """The manifest's digest record of the file at ``path``: its bytes on
    disk, metadata included, so that any flipped bit is caught."""
    digest = hashlib.new(DIGEST_ALGORITHM)
    buffer = bytearray(_DIGEST_CHUNK)
    view = memoryview(buffer)
    with open(path, 'rb', buffering=0) as handle:
        while True:
            count = handle.readinto(buffer)
            if not count:
                break
            digest.update(view[:count])
    return {'algorithm': DIGEST_ALGORITHM, 'value': digest.hexdigest()}


def digest_all(paths, jobs=DIGEST_JOBS, digest=file_digest):
    """``{path: digest(path)}`` of every path, ``jobs`` at a time."""
    if not paths:
        return {}
    with ThreadPoolExecutor(max_workers=max(1, min(jobs, len(paths)))) as pool:
        return dict(zip(paths, pool.map(digest, paths)))


def has_digest(record):
    """True when the disk ``record`` has a digest this version can check (a
    backup from before digests has none: its content is unverifiable)."""
    expected = record.get('digest')
    return isinstance(expected, dict) and expected.get('algorithm') == DIGEST_ALGORITHM and 'value' in expected


def digest_differs(record, actual):
    """True when the digest ``actual`` of a file is not the one its disk
    ``record`` holds (call only when has_digest(record))."""
    return actual['value'] != record['digest']['value']


def write_json_atomically(path, data):
    """Write ``data`` to ``path`` so that readers see the old file or the whole new one."""
    tmp = '%s.%d.tmp' % (path, os.getpid())
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, 'w') as handle:
            json.dump(data, handle, indent=2, sort_keys=True)
            handle.write('\n')
            handle.flush()
            os.fsync(handle.fileno())
        os.rename(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    fsync_directory(os.path.dirname(path))


class Backup(object):
    """One completed backup, as its manifest describes it."""

    def __init__(self, chain_dir, manifest):
        self.chain_dir = chain_dir
        self.manifest = manifest
        self.id = manifest['id']
        self.level = manifest['level']
        self.time = manifest['time']
        self.parent = manifest.get('parent')
        self.chain = manifest['chain']
        self.disks = dict((d['disk'], d) for d in manifest['disks'])

    def image(self, disk):
        return os.path.join(self.chain_dir, self.disks[disk]['file'])

    @property
    def encryption(self):
        """{format, fingerprint} of an encrypted backup; None if it is not
        (manifests written before encryption existed have no such key)."""
        return self.manifest.get('encryption')

    @property
    def manifest_path(self):
        return os.path.join(self.chain_dir, self.id + MANIFEST_SUFFIX)


class Chain(object):
    """A full backup and the backups that build on it, oldest first."""

    def __init__(self, chain_id, path, backups):
        self.id = chain_id
        self.path = path
        self.backups = sorted(backups, key=lambda b: (b.time, b.id))

    @property
    def last(self):
        return self.backups[-1] if self.backups else None

    @property
    def full(self):
        return self.backups[0] if self.backups and self.backups[0].level == 'full' else None

    def backup(self, backup_id):
        for backup in self.backups:
            if backup.id == backup_id:
                return backup
        return None


class ChainDir(object):
    """A chain directory as found on disk: the backups whose manifests
    read, the manifests that do not, and the files they name."""

    def __init__(self, chain_id, path):
        self.id = chain_id
        self.path = path
        self.entries = sorted(os.listdir(path))
        self.backups, self.unreadable = [], []
        for entry in self.entries:
            if is_manifest(entry):
                try:
                    self.backups.append(read_manifest(os.path.join(path, entry)))
                except RepositoryError as exc:
                    if os.path.exists(os.path.join(path, entry)):
                        self.unreadable.append((entry, exc.details['cause']))
                    # else removed since the listing (a prune running now): not there

    def named(self):
        """The entries a manifest accounts for: the manifests, readable or
        not, the images of those that read, and every file of the backup of
        one that does not (it might be a newer format's)."""
        named = set(e for e in self.entries if is_manifest(e))
        for backup in self.backups:
            named.update(d['file'] for d in backup.manifest['disks'])
        for entry, _cause in self.unreadable:
            prefix = entry[:-len(MANIFEST_SUFFIX)] + '.'
            named.update(e for e in self.entries if e.startswith(prefix))
        return named


class VMRepository(object):
    """The part of a repository that holds one VM's backups."""

    def __init__(self, target_dir, vm_name):
        problem = vm_name_problem(vm_name)
        if problem:
            raise RepositoryError(problem)
        self.target_dir = target_dir
        self.vm_name = vm_name
        self.root = os.path.join(target_dir, vm_name)
        self._lock_fd = None
        self._progress_owner = {}
        self._info = None
        self._scan = None      # {chain id: ChainDir}, read once until this run changes it

    # -- identity and locking ---------------------------------------------------

    @property
    def info_path(self):
        return os.path.join(self.root, INFO_FILE)

    def exists(self):
        return os.path.exists(self.info_path)

    def info(self):
        if self._info is None and self.exists():
            try:
                with open(self.info_path) as handle:
                    self._info = json.load(handle)
            except (IOError, ValueError) as exc:
                raise RepositoryError('cannot read %s (%s): the repository is damaged; move it '
                                      'aside to start a new one' % (self.info_path, exc))
            if self._info.get('format') != FORMAT_VERSION:
                raise RepositoryError('%s has format %r, this collection writes format %d: use a '
                                      'matching version of vmbackup.qemu' % (
                                          self.info_path, self._info.get('format'), FORMAT_VERSION))
        return self._info

    @property
    def repository_id(self):
        info = self.info()
        return info['id'] if info else None

    def ensure(self):
        """Create the VM's directory and identity if they do not exist yet."""
        problem = directory_problem('target_dir', self.target_dir, TARGET_DIR_MISSING_HINT)
        if problem:
            raise RepositoryError(problem)
        if not os.path.isdir(self.root):
            os.mkdir(self.root, 0o700)
        if not self.exists():
            write_json_atomically(self.info_path, {
                'format': FORMAT_VERSION,
                'id': binascii.hexlify(os.urandom(8)).decode('ascii'),
                'vm': self.vm_name,
                'created': time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime()),
            })
            self._info = None
        return self.info()

    def lock(self):
        """Take the repository's lock for this process (released by unlock/exit)."""
        path = os.path.join(self.root, '.lock')
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except (IOError, OSError) as exc:
            os.close(fd)
            if exc.errno in (errno.EAGAIN, errno.EACCES):
                raise RepositoryError('another backup of VM %s into %s is running: wait for it to '
                                      'end' % (self.vm_name, self.target_dir))
            raise
        self._lock_fd = fd

    def unlock(self):
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    # -- chains -------------------------------------------------------------

    def chain_dirs(self):
        """Every chain directory as read from disk: {chain id: ChainDir}. The
        manifests are read once; what this object changes reads them again."""
        if self._scan is None:
            self._scan = {}
            if os.path.isdir(self.root):
                for name in sorted(os.listdir(self.root)):
                    path = os.path.join(self.root, name)
                    if not name.startswith('.') and os.path.isdir(path):
                        try:
                            self._scan[name] = ChainDir(name, path)
                        except (IOError, OSError) as exc:
                            # Removed since the listing: a backup running now cleaned it up
                            # (an empty chain directory) or pruned it.
                            if exc.errno != errno.ENOENT:
                                raise
        return self._scan

    def _changed(self):
        self._scan = None

    def chains(self):
        """Every chain with at least one complete backup, oldest first. A
        manifest that cannot be read is not a base for new backups
        (qemu_backup_info's verify reports it)."""
        chains = [Chain(d.id, d.path, d.backups) for d in self.chain_dirs().values() if d.backups]
        return sorted(chains, key=lambda c: (c.backups[0].time, c.id))

    def latest_chain(self):
        chains = self.chains()
        return chains[-1] if chains else None

    def chain_dir(self, chain_id, create=False):
        path = os.path.join(self.root, chain_id)
        if create and not os.path.isdir(path):
            os.mkdir(path, 0o700)
        return path

    @staticmethod
    def image_name(backup_id, disk):
        return '%s.%s.qcow2' % (backup_id, safe_component(disk))

    def partial_image(self, chain_id, backup_id, disk):
        return os.path.join(self.chain_dir(chain_id), '.' + self.image_name(backup_id, disk) + PARTIAL_SUFFIX)

    def final_image(self, chain_id, backup_id, disk):
        return os.path.join(self.chain_dir(chain_id), self.image_name(backup_id, disk))

    def publish(self, manifest):
        """Make a backup visible: partial images get their final names, then
        the manifest is written. Until the manifest exists, nothing trusts them."""
        self._changed()
        chain_dir = self.chain_dir(manifest['chain'])
        for disk in manifest['disks']:
            partial = self.partial_image(manifest['chain'], manifest['id'], disk['disk'])
            final = os.path.join(chain_dir, disk['file'])
            with open(partial, 'rb') as handle:
                os.fsync(handle.fileno())
            os.rename(partial, final)
        fsync_directory(chain_dir)
        write_json_atomically(os.path.join(chain_dir, manifest['id'] + MANIFEST_SUFFIX), manifest)

    def prune(self, keep, in_use):
        """Remove the oldest chains so that ``keep`` chains with a full backup
        remain. Whole chains only, never ``in_use``; copies are not counted.

        A chain is first renamed to a hidden name, so that a prune cut short
        never leaves a chain that looks whole but lacks its middle."""
        chains = [c for c in self.chains() if c.full is not None]
        doomed = [c for c in chains[:max(len(chains) - keep, 0)] if c.id != in_use]
        self._changed()
        for chain in doomed:
            hidden = os.path.join(self.root, '.%s.deleting' % chain.id)
            os.rename(chain.path, hidden)
            shutil.rmtree(hidden)
        return [c.id for c in doomed]

    @property
    def progress_path(self):
        return progress_file(self.target_dir, self.vm_name)

    def start_progress(self, owner):
        """Open the progress file with ``owner`` (the writing process: pid,
        pid_start, started), repeated in every later report: a watcher (the
        backup role) tells a killed run from a slow one by it."""
        self._progress_owner = dict(owner)
        self.write_progress({'phase': 'starting'})

    def write_progress(self, data):
        """Best effort: a progress report must never fail a backup (the
        target may be full; the job's own error says so)."""
        try:
            write_json_atomically(self.progress_path, dict(self._progress_owner, **data))
        except (IOError, OSError):
            pass

    def clear_progress(self):
        if os.path.exists(self.progress_path):
            os.unlink(self.progress_path)

    def remove_unpublished(self):
        """Delete what runs that did not finish left: partial and temporary
        files, images no manifest names, chain directories left empty, a
        prune cut short. Returns the paths removed."""
        removed = []
        if not os.path.isdir(self.root):
            return removed
        for name in os.listdir(self.root):
            path = os.path.join(self.root, name)
            if name.startswith('.') and name.endswith('.deleting') and os.path.isdir(path):
                shutil.rmtree(path)      # a prune that was cut short
                removed.append(path)
        for chain_dir in self.chain_dirs().values():
            named = chain_dir.named()
            for entry in chain_dir.entries:
                full = os.path.join(chain_dir.path, entry)
                if is_unpublished(entry, named) and os.path.isfile(full):
                    os.unlink(full)
                    removed.append(full)
            if not os.listdir(chain_dir.path):
                os.rmdir(chain_dir.path)
                removed.append(chain_dir.path)
        self._changed()
        return removed


def is_unpublished(entry, named):
    """True for a file of ours in a chain directory that no manifest
    accounts for: partial, temporary, or an image of a backup never published."""
    return entry.endswith(PARTIAL_SUFFIX) or entry.endswith('.tmp') or (
        entry.endswith('.qcow2') and bool(_BACKUP_ID.match(entry.split('.', 1)[0])) and entry not in named)
