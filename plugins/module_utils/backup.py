# -*- coding: utf-8 -*-
# Copyright: (c) 2026, vmbackup.qemu developers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

"""The backup engine: push backups of a running VM into a repository.

Bitmaps (named in names.py, per repository, so two repositories never share one):
an "i" bitmap per backup, an "f" bitmap per chain, a frozen "t" copy per run.

At the instant of a backup a new "i" bitmap starts recording, and the bitmap
that says what the backup must copy ("i" of the parent for an incremental,
"f" of the chain for a differential) is copied into a frozen "t" bitmap. The
old bitmaps keep recording until the backup is published, so a failure at any
point loses nothing: the new bitmaps are removed and the old ones still hold
every write since the last good backup. After the manifest is written, the
old "i" bitmap is removed (or, after a full, every older bitmap of this
repository). A run killed between the two leaves an old bitmap that the next
run removes as stale."""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import os
import time

from ansible_collections.vmbackup.qemu.plugins.module_utils import qemu_img
from ansible_collections.vmbackup.qemu.plugins.module_utils.encryption import (
    ENCRYPTION_FORMAT,
    KEY_OPTIONS,
    chain_key_problem,
    new_encryption,
    passphrase_from,
)
from ansible_collections.vmbackup.qemu.plugins.module_utils.errors import (
    BackupError,
    GuestAgentError,
    GuestAgentUnavailable,
    QMPDisconnectedError,
    VMBackupError,
)
from ansible_collections.vmbackup.qemu.plugins.module_utils.fleece import (
    FILTER_ROUTE,
    FLEECE_FEATURES,
    FleeceView,
    broken_snapshot_hint,
    can_fleece,
    fleece_route,
    refuse_foreign_filters,
)
from ansible_collections.vmbackup.qemu.plugins.module_utils.leftovers import remove_leftovers
from ansible_collections.vmbackup.qemu.plugins.module_utils.guest_agent import GuestAgent
from ansible_collections.vmbackup.qemu.plugins.module_utils.names import (
    bitmap_prefix,
    frozen_bitmap,
    full_bitmap,
    inc_bitmap,
    node_name,
    push_job,
    secret_object,
)
from ansible_collections.vmbackup.qemu.plugins.module_utils.qmp import (
    JOB_CONCLUDED,
    JOB_ENDED_STATES,
    JOB_PENDING,
    JOB_SETTLED_STATES,
    ignore_missing,
    qemu_is_gone,
)
from ansible_collections.vmbackup.qemu.plugins.module_utils.quirks import cbw_timeout, fleece_read_chunk
from ansible_collections.vmbackup.qemu.plugins.module_utils.repository import (
    FORMAT_VERSION,
    VMRepository,
    digest_all,
    new_backup_id,
)
from ansible_collections.vmbackup.qemu.plugins.module_utils.view import refuse_beside_a_view
from ansible_collections.vmbackup.qemu.plugins.module_utils.vm import VMRun
from ansible_collections.vmbackup.qemu.plugins.module_utils.vmlock import this_process

LEVELS = ('full', 'incremental', 'differential', 'copy', 'auto')
BITMAP_GRANULARITY = 65536
# Parallel copies of one backup job (QEMU's default: 64). Each copy to a slow
# target (an NFS share) holds a thread of the I/O pool that the guest's own
# disk I/O shares; 64 of them starve the guest (p99 of its writes 50-100x
# longer). 8 keep the guest at its usual latency and the job at the target's
# speed (bench/guest_latency.py).
BACKUP_MAX_WORKERS = 8
# Run states in which QEMU is handing the VM over; a backup must not start.
REFUSED_RUN_STATES = ('inmigrate', 'postmigrate', 'finish-migrate', 'save-vm', 'restore-vm')


def base_chain(repo):
    """The chain new incrementals build on: the newest that is not a copy."""
    chains = [c for c in repo.chains() if c.full is not None]
    return chains[-1] if chains else None


def job_perf(vm, fleecing):
    """The x-perf of a backup job: fewer parallel copies than QEMU's 64
    (BACKUP_MAX_WORKERS), and from a fleecing view of a QEMU whose snapshot
    reads can return data written after the instant, requests of one cluster
    (quirks.fleece_read_chunk)."""
    perf = {}
    if vm.features.has('backup_max_workers'):
        perf['max-workers'] = BACKUP_MAX_WORKERS
    chunk = fleece_read_chunk(vm.version) if fleecing else None
    if chunk:
        perf['max-chunk'] = chunk
    return perf


def needed_features(level, fleecing, encrypted=False):
    """What the run's options need of QEMU: [(schema.FEATURES name, the
    option that needs it)], checked before anything changes."""
    needs = [('blockdev_backup', 'a push backup'), ('jobs', 'a push backup')]
    if encrypted:
        needs.append(('luks_targets', KEY_OPTIONS))
    if level != 'copy':
        needs.append(('bitmap_transactions', 'level: %s (dirty bitmaps taken at the instant of the backup)'
                      % level))
    if fleecing:
        needs += [(name, 'fleecing: true') for name in FLEECE_FEATURES]
    return needs


def chain_problem(chain, disks, level, passphrase=None):
    """Why ``level`` cannot build on ``chain`` for ``disks``, encrypted with
    ``passphrase`` (None: not encrypted); None if it can."""
    if chain is None:
        return 'the repository has no full backup of this VM yet'
    problem = chain_key_problem(chain.id, chain.full.encryption, passphrase)
    if problem:
        return problem
    last = chain.last if level == 'incremental' else chain.full
    names = sorted(d.name for d in disks)
    if sorted(last.disks) != names:
        return 'the disks changed since backup %s (it has %s, now %s)' % (
            last.id, ', '.join(sorted(last.disks)), ', '.join(names))
    for backup in chain.backups:
        for disk_name in backup.disks:
            if not os.path.isfile(backup.image(disk_name)):
                return 'chain %s is missing its file %s' % (chain.id, backup.image(disk_name))
    key = 'bitmap' if level == 'incremental' else 'full_bitmap'
    for disk in disks:
        record = last.disks[disk.name]
        if record['virtual_size'] != disk.virtual_size:
            return 'disk %s was resized since backup %s (%d -> %d bytes)' % (
                disk.name, last.id, record['virtual_size'], disk.virtual_size)
        bitmap = disk.bitmap(record[key])
        if bitmap is None:
            return ('the dirty bitmap %s on disk %s that tracks changes since backup %s is missing '
                    '(QEMU was restarted without it, or it was removed)' % (record[key], disk.name, last.id))
        if bitmap.inconsistent:
            return ('the dirty bitmap %s on disk %s is inconsistent: QEMU was stopped without saving it'
                    % (bitmap.name, disk.name))
        if not bitmap.recording:
            return 'the dirty bitmap %s on disk %s was disabled' % (bitmap.name, disk.name)
        if bitmap.busy:
            return 'the dirty bitmap %s on disk %s is in use by another job' % (bitmap.name, disk.name)
    return None


def parent_backup(chain, level):
    """The backup an incremental or differential builds on (None otherwise)."""
    if level == 'incremental':
        return chain.last
    if level == 'differential':
        return chain.full
    return None


class RunState(object):
    """What one backup run has made so far: the steps of BackupRun._take
    fill it in, and its one rollback undoes what it holds."""

    def __init__(self, repo, disks, level, chain, passphrase=None):
        self.repo = repo
        self.disks = disks
        self.level = level
        self.chain = chain
        self.parent = parent_backup(chain, level)
        self.backup_id = new_backup_id()
        self.chain_id = chain.id if chain is not None else self.backup_id
        self.frozen = frozen_bitmap(repo.repository_id, self.backup_id)
        self.started = time.time()
        self.images = []          # files this run may have written (partial, then final)
        self.targets = {}         # disk name -> our target node, until removed
        self.new_bitmaps = []     # (node, name) added at the instant
        self.source_bitmaps = {}  # disk name -> (node, bitmap) an incremental copies
        self.jobs = {}            # job id -> disk, until dismissed
        self.view = None          # the FleeceView, until torn down
        self.passphrase = passphrase
        # The manifest's record: a new chain (or copy) gets a new salt.
        self.encryption = None if passphrase is None else (
            self.parent.encryption if self.parent is not None else new_encryption(passphrase))
        self.secret = None        # our secret object in QEMU, until deleted


class BackupRun(VMRun):
    """One run of qemu_blockdev_backup."""

    def __init__(self, vm, params, warn=None, check_mode=False):
        super(BackupRun, self).__init__(vm, params, warn, check_mode)
        self.run_id = os.urandom(3).hex()
        self.fleecing = None         # decided once per run by _fleecing_wanted
        self.passphrase = None       # read once per run by run()
        self.result = {'changed': False, 'skipped_disks': [], 'cleaned': [], 'cbw_timeout': None,
                       'fleecing_route': None}

    @property
    def discard_source(self):
        """Whether the push jobs discard what they copied from the fleece image."""
        return bool(self.fleecing) and self.vm.features.has('backup_discard_source')

    # -- planning -------------------------------------------------------------

    def select(self):
        disks, skipped = self.vm.select_disks(self.params.get('disks'), self.params.get('exclude_disks'))
        if not disks:
            raise BackupError('the VM has no disk to back up (%s)' % (
                '; '.join('%(disk)s: %(reason)s' % s for s in skipped) or 'no disks'))
        return disks, skipped

    def decide_level(self, repo, disks):
        asked = self.params.get('level') or 'auto'
        if asked in ('full', 'copy'):
            return asked, 'asked for', None
        chain = base_chain(repo) if repo.exists() else None
        if asked == 'auto':
            problem = chain_problem(chain, disks, 'incremental', self.passphrase)
            if problem:
                return 'full', 'a new full backup, because ' + problem, None
            full_every = self.params.get('full_every') or 0
            if full_every and len(chain.backups) >= full_every:
                return 'full', 'a new full backup, because chain %s has %d backups (full_every: %d)' % (
                    chain.id, len(chain.backups), full_every), None
            return 'incremental', 'incremental on chain %s' % chain.id, chain
        problem = chain_problem(chain, disks, asked, self.passphrase)
        if problem:
            raise BackupError('cannot take %s %s backup: %s. Take a full backup (level: full or auto)'
                              % ('an' if asked[0] in 'aeiou' else 'a', asked, problem))
        return asked, 'asked for', chain

    def estimate(self, level, chain, disks):
        """Bytes the backup would copy: from the bitmaps for incrementals."""
        total = 0
        for disk in disks:
            if level in ('full', 'copy'):
                total += disk.allocated_size or disk.virtual_size or 0
            else:
                last = chain.last if level == 'incremental' else chain.full
                key = 'bitmap' if level == 'incremental' else 'full_bitmap'
                total += disk.bitmap(last.disks[disk.name][key]).count
        return total

    # -- the run --------------------------------------------------------------

    def run(self):
        vm, params = self.vm, self.params
        vm_name = params.get('vm_name') or vm.name()
        if not vm_name:
            raise BackupError('the VM has no -name: set vm_name to name its directory in the repository')
        repo = VMRepository(params['target_dir'], vm_name)
        status = vm.status()['status']
        if status in REFUSED_RUN_STATES:
            raise BackupError('the VM is in state %s (migrating or saving): back it up before or after'
                              % status)
        disks, skipped = self.select()
        self.result['skipped_disks'] = skipped
        self.fleecing = fleecing = self._fleecing_wanted()
        self.passphrase = passphrase_from(params)
        self.result.update(discard_source=self.discard_source, encrypted=self.passphrase is not None)
        # Before anything changes, and in check mode alike ('copy' is the
        # only level without bitmaps, and it is never decided, only asked).
        for feature, option in needed_features(params.get('level') or 'auto', fleecing, self.passphrase is not None):
            vm.features.require(feature, option)
        refuse_beside_a_view(vm, 'a backup')   # its cleanup would take the view for debris
        if fleecing:
            refuse_foreign_filters(vm, disks)
        if self.check_mode:
            level, reason, chain = self.decide_level(repo, disks)
            route = self._route(disks, status)
            self.result.update(changed=True, level=level, reason=reason, vm=vm_name, fleecing=fleecing,
                               fleecing_route=route,
                               cbw_timeout=cbw_timeout(vm.version) if route == FILTER_ROUTE else None,
                               bytes_estimated=self.estimate(level, chain, disks),
                               disks=[{'disk': d.name, 'node': d.node} for d in disks])
            return self.result
        try:
            repo.ensure()
            repo.lock()
        except (IOError, OSError) as exc:
            raise BackupError('cannot use the repository %s: %s' % (repo.root, exc))
        try:
            self.result['cleaned'] = remove_leftovers(vm, params.get('fleece_dir')) + repo.remove_unpublished()
            disks, self.result['skipped_disks'] = self.select()  # again: cleaning may have switched devices back
            if self.fleecing:
                refuse_foreign_filters(vm, disks)
            level, reason, chain = self.decide_level(repo, disks)
            self.result.update(vm=vm_name, level=level, reason=reason)
            # From here on the run changes the repository; a refusal above leaves it untouched.
            repo.start_progress(dict(this_process(), started=time.time()))
            self._remove_stale_bitmaps(repo, disks)
            self._take(repo, disks, level, chain)
            if params.get('keep_chains'):
                self.result['pruned'] = repo.prune(params['keep_chains'], self.result['chain'])
        finally:
            repo.clear_progress()
            repo.unlock()
        return self.result

    def _remove_stale_bitmaps(self, repo, disks):
        """Remove bitmaps of this repository that no published backup relies on.

        The newest chain's bitmaps stay even before a new full: if the full
        fails, that chain goes on."""
        prefix = bitmap_prefix(repo.repository_id)
        keep = set()
        base = base_chain(repo)
        if base is not None:
            for record in base.last.disks.values():
                keep.update([record.get('bitmap'), record.get('full_bitmap')])
        actions = []
        for disk in disks:
            for bitmap in disk.bitmaps:
                if bitmap.name.startswith(prefix) and (bitmap.name not in keep or bitmap.inconsistent) \
                        and not bitmap.busy:
                    actions.append(('block-dirty-bitmap-remove', {'node': disk.node, 'name': bitmap.name}))
                    self.result['cleaned'].append('bitmap %s on %s' % (bitmap.name, disk.name))
        self.vm.qmp.transaction(actions)

    def _take(self, repo, disks, level, chain):
        """Take the backup as named steps over one RunState; any failure
        goes through the one rollback, which reads that state."""
        state = RunState(repo, disks, level, chain, self.passphrase)
        self.result.update(changed=True, backup_id=state.backup_id, chain=state.chain_id,
                           fleecing=self.fleecing, parent=state.parent.id if state.parent else None)
        try:
            self._prepare_targets(state)
            sources = self._take_instant(state, self._bitmap_actions(state))
            self.result['disks'] = self._copy(state, sources)
            self._teardown(state)
            self._publish(state)
        except BaseException as exc:
            error = self._rollback(state, exc)
            if error is exc:
                raise
            raise error from exc
        for info in self.result['disks']:
            info['image_size'] = os.stat(info['file']).st_blocks * 512
        self._retire_bitmaps(state)
        self.result['duration'] = round(time.time() - state.started, 3)
        return self.result

    def _prepare_targets(self, state):
        """An empty qcow2 image per disk (backed by the parent's image) and
        our node over it, for the push jobs to write into. Encrypted, QEMU
        gets the passphrase over QMP as a secret object the nodes name."""
        state.repo.chain_dir(state.chain_id, create=True)
        target = {'driver': 'qcow2', 'backing': None}
        if state.passphrase is not None:
            secret = secret_object(self.run_id)
            self.vm.qmp.execute('object-add', {'qom-type': 'secret', 'id': secret, 'data': state.passphrase})
            state.secret = secret
            target['encrypt'] = {'format': ENCRYPTION_FORMAT, 'key-secret': secret}
        for index, disk in enumerate(state.disks):
            partial = state.repo.partial_image(state.chain_id, state.backup_id, disk.name)
            backing = os.path.basename(state.parent.image(disk.name)) if state.parent else None
            state.images.append(partial)
            qemu_img.create_qcow2(partial, disk.virtual_size, backing, secret=state.passphrase)
            node = node_name(self.run_id, 'tgt', index)
            self.vm.qmp.execute('blockdev-add', dict(target, **{
                'node-name': node, 'file': {'driver': 'file', 'filename': partial}}))
            state.targets[disk.name] = node

    def _bitmap_actions(self, state):
        """The bitmaps that start recording at the instant (an "i" bitmap,
        and an "f" bitmap after a full); notes the bitmap each incremental or
        differential copies from."""
        repo_id, level = state.repo.repository_id, state.level
        actions = []
        for disk in state.disks:
            if level == 'copy':
                continue
            names = [inc_bitmap(repo_id, state.backup_id)]
            if level == 'full':
                names.append(full_bitmap(repo_id, state.backup_id))
            for name in names:
                actions.append(('block-dirty-bitmap-add', {
                    'node': disk.node, 'name': name, 'granularity': BITMAP_GRANULARITY,
                    'persistent': disk.persistent_bitmap_problem() is None}))
                state.new_bitmaps.append((disk.node, name))
            if state.parent is not None:
                key = 'bitmap' if level == 'incremental' else 'full_bitmap'
                state.source_bitmaps[disk.name] = (disk.node, state.parent.disks[disk.name][key])
        return actions

    def _frozen_copies(self, state, sources):
        """Frozen copies, on ``sources``, of what changed before the instant."""
        actions = []
        for disk in state.disks:
            if disk.name not in state.source_bitmaps:
                continue
            node, name = state.source_bitmaps[disk.name]
            actions.append(('block-dirty-bitmap-add', {
                'node': sources[disk.name], 'name': state.frozen, 'disabled': True,
                'persistent': False, 'granularity': BITMAP_GRANULARITY}))
            actions.append(('block-dirty-bitmap-merge', {
                'node': sources[disk.name], 'target': state.frozen,
                'bitmaps': [{'node': node, 'name': name}]}))
        return actions

    def _backup_actions(self, state, sources):
        """A push job per disk, from ``sources`` into the target nodes."""
        actions = []
        perf = job_perf(self.vm, self.fleecing)
        for index, disk in enumerate(state.disks):
            job = push_job(self.run_id, index)
            data = {'job-id': job, 'device': sources[disk.name], 'target': state.targets[disk.name],
                    'sync': 'full', 'auto-finalize': False, 'auto-dismiss': False}
            if disk.name in state.source_bitmaps:
                data.update({'sync': 'bitmap', 'bitmap': state.frozen, 'bitmap-mode': 'never'})
            if self.params.get('speed'):
                data['speed'] = self.params['speed']
            if self.params.get('compress'):
                data['compress'] = True
            if perf:
                data['x-perf'] = perf
            if self.discard_source:
                # What the job copied out of the snapshot is dropped from the
                # fleece image, and later guest writes there need no copy.
                data['discard-source'] = True
            actions.append(('blockdev-backup', data))
            state.jobs[job] = disk
        return actions

    def _take_instant(self, state, bitmap_actions):
        """The instant of the backup, with the guest's filesystems frozen
        around it: the new bitmaps, the frozen copies and, without fleecing,
        the push jobs, all in one transaction. Returns the nodes the jobs
        read from (None once the jobs are started)."""
        with GuestFreeze(self.params, self.warn) as freeze:
            if self.fleecing:
                route = self._route(state.disks, self.vm.status()['status'])
                state.view = FleeceView(self.vm, state.disks, self.run_id, self.params['fleece_dir'], route)
                self.result.update(cbw_timeout=state.view.cbw_timeout, fleecing_route=route)
                snaps = state.view.create(bitmap_actions, after_switch=lambda nodes: self._frozen_copies(state, nodes))
                self.result['pause_seconds'] = round(state.view.pause_seconds, 4)
            else:
                sources = dict((d.name, d.node) for d in state.disks)
                self.vm.qmp.transaction(bitmap_actions + self._frozen_copies(state, sources)
                                        + self._backup_actions(state, sources))
                self.result['pause_seconds'] = 0.0
                snaps = None
        self.result['frozen'] = freeze.report()
        return snaps

    def _copy(self, state, sources):
        """Start the push jobs from the fleecing view (without fleecing they
        started at the instant), then wait for them; the per-disk report."""
        if sources is not None:
            self.vm.qmp.transaction(self._backup_actions(state, sources))
        report = self._wait(state)
        state.jobs = {}
        return report

    def _teardown(self, state):
        """Remove the fleecing view and our target nodes: the images are complete."""
        if state.view is not None:
            state.view.teardown()
            state.view = None
        for disk_name in list(state.targets):
            self.vm.qmp.execute('blockdev-del', {'node-name': state.targets.pop(disk_name)})
        if state.secret is not None:
            self.vm.qmp.execute('object-del', {'id': state.secret})
            state.secret = None

    def _publish(self, state):
        """Write the manifest that makes the backup visible to restores."""
        manifest = self._manifest(state, self._digests(state))
        state.images += [state.repo.final_image(state.chain_id, state.backup_id, d.name) for d in state.disks]
        try:
            state.repo.publish(manifest)
        except (IOError, OSError) as exc:
            raise BackupError('writing the backup into %s failed: %s' % (state.repo.root, exc))

    def _digests(self, state):
        """{disk name: digest record} of the images just written, read back
        right after the jobs, while their data is still in the page cache;
        the disks in parallel. Empty with digests off (the default)."""
        if not self.params.get('digests'):
            return {}
        started = time.time()
        partials = dict((d.name, state.repo.partial_image(state.chain_id, state.backup_id, d.name))
                        for d in state.disks)
        try:
            found = digest_all(sorted(partials.values()))
        except (IOError, OSError) as exc:
            raise BackupError('reading back the images in %s to digest them failed: %s' % (state.repo.root, exc))
        self.result['digest_seconds'] = round(time.time() - started, 3)
        return dict((name, found[path]) for name, path in partials.items())

    def _manifest(self, state, digests):
        repo_id, level = state.repo.repository_id, state.level
        full = (full_bitmap(repo_id, state.chain_id) if level in ('incremental', 'differential')
                else full_bitmap(repo_id, state.backup_id) if level == 'full' else None)
        records = []
        for disk, info in zip(state.disks, self.result['disks']):
            info['file'] = state.repo.final_image(state.chain_id, state.backup_id, disk.name)
            records.append({
                'disk': disk.name, 'node': disk.node, 'file': os.path.basename(info['file']),
                'virtual_size': disk.virtual_size, 'bytes_written': info['bytes_written'],
                'duration': info['duration'], 'granularity': BITMAP_GRANULARITY,
                'bitmap': inc_bitmap(repo_id, state.backup_id) if level != 'copy' else None,
                'full_bitmap': full, 'persistent_bitmap': disk.persistent_bitmap_problem() is None,
            })
            if disk.name in digests:
                records[-1]['digest'] = digests[disk.name]
                info['digest'] = digests[disk.name]['value']
        return {
            'format': FORMAT_VERSION, 'id': state.backup_id, 'chain': state.chain_id, 'level': level,
            'parent': state.parent.id if state.parent else None, 'time': state.started,
            'time_iso': time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime(state.started)),
            'vm': state.repo.vm_name, 'repository': repo_id, 'qemu': self.vm.version,
            'fleecing': self.fleecing, 'fleecing_route': self.result['fleecing_route'], 'frozen': self.result['frozen'],
            'pause_seconds': self.result.get('pause_seconds', 0.0), 'disks': records,
            'encryption': state.encryption,
        }

    def _route(self, disks, run_state):
        """How the fleecing view takes its instant (None without fleecing)."""
        return fleece_route(self.vm.features, len(disks), run_state) if self.fleecing else None

    def _fleecing_wanted(self):
        wanted = self.params.get('fleecing')
        able = can_fleece(self.vm.features)
        if wanted is None:
            if not able:
                self.warn('this QEMU cannot fleece (it needs copy-before-write with on-cbw-error, QEMU '
                          '7.1+): backing up without fleecing, so a slow target slows guest writes')
            return able
        return wanted

    def _wait(self, state):
        """Wait for the push jobs, finalize them together, report per disk.

        Progress goes to the repository's .progress.json for whoever watches
        (the backup role prints it while it waits)."""
        qmp, jobs = self.vm.qmp, state.jobs
        started = time.time()
        done_at = {}

        def note(states):
            for job_id, job in states.items():
                if job['status'] in (JOB_PENDING, JOB_CONCLUDED) and job_id not in done_at:
                    done_at[job_id] = time.time()
            done = sum(j.get('current-progress', 0) for j in states.values())
            total = sum(j.get('total-progress', 0) for j in states.values())
            state.repo.write_progress({
                'backup_id': state.backup_id, 'level': state.level, 'bytes_done': done, 'bytes_total': total,
                'percent': round(100.0 * done / total, 1) if total else 0.0,
                'seconds': round(time.time() - started, 1),
            })

        def failed(states):
            return any(j['status'] in JOB_ENDED_STATES or j.get('error') for j in states.values())

        states = qmp.wait_jobs(jobs, settled_states=JOB_SETTLED_STATES,
                               timeout=self.params.get('job_timeout'), progress=note, stop_when=failed)
        errors = ['%s: %s' % (jobs[j].name, s.get('error') or 'the job vanished')
                  for j, s in states.items() if s['status'] != JOB_PENDING]
        if errors:
            raise BackupError('the backup job failed for %s' % '; '.join(errors), job_errors=errors)
        for job_id in jobs:
            qmp.execute('job-finalize', {'id': job_id})
        states = qmp.wait_jobs(jobs, settled_states=JOB_ENDED_STATES, timeout=60)
        errors = ['%s: %s' % (jobs[j].name, s.get('error')) for j, s in states.items() if s.get('error')]
        if errors:
            raise BackupError('the backup job failed for %s' % '; '.join(errors), job_errors=errors)
        report = []
        for job_id, disk in jobs.items():
            qmp.execute('job-dismiss', {'id': job_id})
            report.append({'disk': disk.name, 'node': disk.node,
                           'bytes_written': states[job_id].get('total-progress', 0),
                           'duration': round(done_at.get(job_id, time.time()) - started, 3)})
        return report

    def _rollback(self, state, exc):
        """Undo a failed run, from what ``state`` says it made, so that
        nothing of it is trusted or left behind; the error to raise.

        The old bitmaps recorded every write throughout, so removing the new
        ones is all it takes for the next backup to include everything."""
        problems = []

        def attempt(what, call, *args):
            try:
                call(*args)
            except Exception as err:  # pylint: disable=broad-except
                problems.append('%s: %s' % (what, err))

        qmp = self.vm.qmp
        if not isinstance(exc, QMPDisconnectedError):
            if state.jobs:
                attempt('end the jobs', qmp.end_jobs, list(state.jobs))
            if state.view is not None:
                attempt('fleecing teardown', state.view.teardown)
            for target in state.targets.values():
                attempt('remove ' + target, ignore_missing, qmp.execute, 'blockdev-del', {'node-name': target})
            if state.secret is not None:
                attempt('remove ' + state.secret, ignore_missing, qmp.execute, 'object-del', {'id': state.secret})
            # Without fleecing the frozen copies sit on the disks' nodes; with
            # it they went with the snapshot nodes.
            actions = [('block-dirty-bitmap-remove', {'node': node, 'name': name})
                       for node, name in state.new_bitmaps + [(d.node, state.frozen) for d in state.disks]]
            attempt('remove the new bitmaps', self._remove_bitmaps_present, actions)
        elif state.view is not None and qemu_is_gone(qmp.socket_path):
            # Disk-sized files that no later run for this socket may come to remove.
            attempt('remove the fleece images', state.view.remove_files)
        for path in state.images:
            if os.path.exists(path):
                attempt('remove ' + path, os.unlink, path)
        try:
            os.rmdir(state.repo.chain_dir(state.chain_id))   # only if this run made it and it is empty
        except OSError:
            pass
        return self._failure(exc, state.parent, problems)

    def _failure(self, exc, parent, problems):
        """The error to raise for ``exc``: a new BackupError whose message
        also says what was undone (``exc`` itself when it is not ours)."""
        if isinstance(exc, EnvironmentError):
            # A full or unwritable fleece_dir or target is a clean failure too.
            exc = BackupError(str(exc))
        if not isinstance(exc, VMBackupError):
            return exc
        parts = [exc.msg]
        hint = self._job_error_hint(exc)
        if hint:
            parts.append(' (%s)' % hint)
        if not ''.join(parts).endswith('.'):
            parts.append('.')
        parts.append(' Nothing of this run was kept; the next backup includes every change since %s.' % (
            'backup %s' % parent.id if parent else 'the last good backup'))
        if problems:
            parts.append(' Cleaning up also failed (%s); the next run cleans up.' % '; '.join(problems))
        return BackupError(''.join(parts), **exc.details)

    def _job_error_hint(self, exc):
        """What a backup job's error means, and where to look (None for other errors)."""
        if not exc.details.get('job_errors'):
            return None
        # Only a job's error can mean a broken fleecing view.
        hint = broken_snapshot_hint(exc.msg, self.params.get('fleece_dir'), self.result.get('cbw_timeout')) \
            if self.fleecing else None
        return hint or ('the backup jobs read the VM\'s disks and write into %s: check that storage, its free '
                        'space and its health' % self.params.get('target_dir'))

    def _remove_bitmaps_present(self, actions):
        """Remove the bitmaps in ``actions`` that exist (one transaction)."""
        existing = set()
        for node in self.vm.named_nodes().values():
            for bitmap in node.get('dirty-bitmaps', []):
                existing.add((node['node-name'], bitmap.get('name')))
        self.vm.qmp.transaction([a for a in actions if (a[1]['node'], a[1]['name']) in existing])

    def _retire_bitmaps(self, state):
        """After the manifest is written: drop the bitmaps the new backup replaced.

        After a full: every older bitmap of this repository. After an
        incremental or differential: the "i" bitmap of the backup before it
        (the new "i" bitmap took over). Always: the frozen copy."""
        repo_id, level = state.repo.repository_id, state.level
        new = set([inc_bitmap(repo_id, state.backup_id), full_bitmap(repo_id, state.backup_id)])
        prefix = bitmap_prefix(repo_id)
        names = set(d.name for d in state.disks)
        actions = []
        for disk in self.vm.disks():
            if disk.name not in names:
                continue
            retired = set([state.frozen])
            if level in ('incremental', 'differential'):
                retired.add(state.chain.last.disks[disk.name]['bitmap'])
            for bitmap in disk.bitmaps:
                stale = bitmap.name in retired or (
                    level == 'full' and bitmap.name.startswith(prefix) and bitmap.name not in new)
                if stale and not bitmap.busy:
                    actions.append(('block-dirty-bitmap-remove', {'node': disk.node, 'name': bitmap.name}))
        try:
            self.vm.qmp.transaction(actions)
        except VMBackupError as exc:
            self.warn('the backup is complete, but old bitmaps could not be removed (%s); the next run '
                      'removes them' % exc.msg)


class GuestFreeze(object):
    """Holds the guest's filesystems frozen through its agent, and always thaws."""

    def __init__(self, params, warn):
        self.socket = params.get('guest_agent_socket')
        self.mode = params.get('freeze') or 'auto'
        self.timeout = min(float(params.get('timeout') or 10), 10.0)
        self.warn = warn
        self.agent = None
        self.frozen = 0
        self.reason = None
        self.seconds = 0.0

    def __enter__(self):
        if self.mode == 'off':
            self.reason = 'freeze is off'
            return self
        if not self.socket:
            if self.mode == 'required':
                raise BackupError('freeze: required needs guest_agent_socket')
            self.reason = 'no guest_agent_socket given'
            return self
        try:
            self.agent = GuestAgent(self.socket, self.timeout).connect()
            self._start = time.monotonic()
            self.frozen = self.agent.freeze()
        except GuestAgentError as exc:
            self._thaw_quietly()
            # A wrong path (not a socket, a QMP socket) is a mistake to report;
            # an agent that is not running or cannot freeze is what `auto` tolerates.
            tolerable = isinstance(exc, GuestAgentUnavailable) or exc.command == 'guest-fsfreeze-freeze'
            if self.mode == 'required' or not tolerable:
                raise BackupError('cannot freeze the guest\'s filesystems (freeze: required): %s' % exc.msg)
            self.reason = 'guest agent: %s' % exc.msg
            self.warn('backing up without freezing the guest\'s filesystems (crash-consistent): %s' % exc.msg)
        return self

    def _thaw_quietly(self):
        if self.agent is not None:
            try:
                self.agent.thaw()
            except Exception:  # pylint: disable=broad-except
                pass  # it was not frozen, or the agent is gone; reported by the caller
            self.agent.close()
            self.agent = None

    def __exit__(self, exc_type, exc_value, tb):
        if self.agent is not None:
            try:
                self.agent.thaw()
                self.seconds = time.monotonic() - self._start
            except VMBackupError as exc:
                self.warn('thawing the guest\'s filesystems failed: %s; check the guest' % exc.msg)
            finally:
                self.agent.close()
                self.agent = None
        return False

    def report(self):
        return {'frozen': bool(self.frozen), 'filesystems': self.frozen,
                'seconds': round(self.seconds, 4), 'reason': self.reason}
