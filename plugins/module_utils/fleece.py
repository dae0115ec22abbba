# -*- coding: utf-8 -*-
# Copyright: (c) 2026, vmbackup.qemu developers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

"""The point-in-time view of a VM's disks: image fleecing.

For each disk a copy-before-write (cbw) filter is put into the device's write
path, with a fleece image on fast local storage as its target, and a
snapshot-access node on top of the filter. Reading the snapshot-access node
gives the disk as it was when the filter entered the write path; the guest
only waits for the copy of old data into the fleece image, never for the
backup target.

Sequence and why each step is where it is (QEMU 7.1+; see docs/design.md).
The instant is taken by one of two routes (fleece_route):

The filter route (explicit copy-before-write nodes):

1. fleece images are created with exactly the disk's virtual size (a smaller
   cbw target aborts QEMU on the first write past its end), then the fleece
   and cbw nodes are added. A new cbw node has no parent yet: nothing changes.
2. The vCPUs are stopped if the VM runs and more than one disk is switched
   (the switch below is per device, so without a pause each disk would get
   its own instant). A VM that is not running is left as it is.
3. ``before_switch`` transaction: bitmaps that record writes *after* the
   instant are created before the filters enter: a write that lands in both
   the snapshot and the new bitmap is harmless, a write in neither is lost.
4. ``qom-set <qdev> drive <cbw>`` for every disk: the instant.
5. ``at_instant`` transaction: what must take effect no earlier than the
   instant (copies of what changed before it). The vCPUs run again,
   whatever failed.

The job route (QEMU 10.1+, taken where the filter route would pause):

1. fleece images and nodes as above.
2. One transaction: ``before_switch``, per disk a ``sync: none``
   blockdev-backup job into the fleece node whose filter (``filter-node-name``,
   ``on-cbw-error: break-snapshot``) QEMU puts above the disk's node, and
   ``at_instant``. QEMU drains all I/O before a transaction: one instant for
   every disk and every action, no pause.

Then, for both: snapshot-access nodes on the filters, and the
``after_switch`` transaction: frozen copies of the bitmaps that say what
changed *before* the instant. Taken after it they are a superset, which only
copies a little more.

cbw is created with ``on-cbw-error: break-snapshot`` and ``cbw-timeout`` (45 s,
or less where QEMU cannot store that: quirks.cbw_timeout): when the fleece
image fails or stalls longer, the snapshot breaks (the backup fails with
"Permission denied" on reads) and the guest's write goes on. A fleecing
job's filter breaks the snapshot on a failure too, but has no timeout: a
fleece image that stalls stalls the guest's writes with it.

Teardown reverses it: snapshot-access nodes (a cbw node with another parent
keeps WRITE unshared, so the device cannot be switched back before; a
fleecing job ended before them leaves them on the live disk), then the
fleecing jobs (their filters go with them) or the devices back to their
original node (the cbw's ``file`` child) and the cbw nodes, then fleece
nodes and fleece files. Every step tolerates "already gone" and a failed step
does not stop the rest; what a killed run left is leftovers.py's."""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import os
import time

from ansible_collections.vmbackup.qemu.plugins.module_utils.errors import DiskSelectionError, VMBackupError
from ansible_collections.vmbackup.qemu.plugins.module_utils.names import fleece_file, fleece_job, is_ours, node_name
from ansible_collections.vmbackup.qemu.plugins.module_utils.qmp import ignore_missing
from ansible_collections.vmbackup.qemu.plugins.module_utils.quirks import cbw_timeout

# What a QEMU needs for this view (schema.FEATURES names): asked before any
# change, by the real run and check mode alike.
FLEECE_FEATURES = ('copy_before_write', 'snapshot_access', 'cbw_on_cbw_error')

# The two ways of taking the instant (docs/design.md, "Two routes to the instant").
FILTER_ROUTE = 'filter'   # explicit copy-before-write nodes, switched in with qom-set
JOB_ROUTE = 'job'         # a sync: none job per disk, its filter added in one transaction


def can_fleece(features):
    return all(features.has(name) for name in FLEECE_FEATURES)


def refuse_foreign_filters(vm, disks):
    """Fail before any change if a disk's device writes through a node that
    QEMU does not report (the implicit filter of another tool's block job,
    a mirror say): a filter switched in at the device would take the guest's
    writes around it, and that job would miss them."""
    parents = vm.parent_nodes(vm.named_nodes())
    for disk in disks:
        # Ours are a killed run's, which its cleanup removes first.
        above = sorted(name for name in parents.get(disk.root_node, []) if not is_ours(name))
        if above:
            raise DiskSelectionError(
                'disk %s writes through node %s, which another block job put above it (a mirror or a commit): '
                'a point-in-time view would take the guest\'s writes around that job. Run this when the job has '
                'ended' % (disk.name, ', '.join(above)),
                disk=disk.name, nodes=above)


def fleece_route(features, disk_count, run_state):
    """How to take the instant of a view of ``disk_count`` disks of a VM in
    ``run_state``. The explicit filters have a cbw-timeout, but are switched
    in one device at a time, so a running VM with several disks is paused
    around the switches. Where blockdev-backup takes on-cbw-error (QEMU
    10.1), a fleecing job's filter can break the snapshot instead of the
    guest's write too, and all the filters enter in one transaction: that
    route is taken where the other would pause the VM. It has no
    cbw-timeout."""
    if disk_count > 1 and run_state == 'running' and features.has('backup_on_cbw_error'):
        return JOB_ROUTE
    return FILTER_ROUTE


class VMPause(object):
    """Stops the vCPUs of a running VM for as short as possible.

    Only a VM in state 'running' is stopped (a VM in prelaunch or paused
    stays so), and it is always resumed, whatever failed in between."""

    def __init__(self, vm, wanted):
        self.vm = vm
        self.wanted = wanted
        self.paused = False
        self.seconds = 0.0

    def __enter__(self):
        if self.wanted and self.vm.status()['status'] == 'running':
            self._start = time.monotonic()
            self.vm.qmp.execute('stop')
            self.paused = True
        return self

    def __exit__(self, exc_type, exc_value, tb):
        if self.paused:
            self.vm.qmp.execute('cont')
            self.seconds = time.monotonic() - self._start
        return False


class FleeceView(object):
    """The frozen view of ``disks`` (vm.Disk objects), one instant for all,
    taken by ``route`` (fleece_route)."""

    def __init__(self, vm, disks, run_id, fleece_dir, route=FILTER_ROUTE):
        self.vm = vm
        self.disks = list(disks)
        self.run_id = run_id
        self.fleece_dir = fleece_dir
        self.route = route
        self.snapshot_nodes = {}     # disk name -> snapshot-access node
        self.pause_seconds = 0.0
        self.paused = False
        self._cbw = {}               # disk name -> (cbw node, original root node, qdev)
        self._fleece = {}            # disk name -> (fleece node, file)
        self._switched = set()       # disks whose device writes through our explicit cbw
        self._jobs = []              # the job route's fleecing jobs, until ended
        self.cbw_timeout = cbw_timeout(vm.version) if route == FILTER_ROUTE else None

    def fleece_file(self, index):
        return fleece_file(self.fleece_dir, self.vm.qmp.socket_path, self.run_id, index)

    def create(self, before_switch=(), at_instant=(), after_switch=lambda snapshot_nodes: ()):
        """Build the view. ``before_switch`` and ``at_instant`` are lists of
        transaction actions: the first must take effect no later than the
        instant (bitmaps that record what comes after it), the second no
        earlier (copies of what came before it); on the job route both go
        into the instant's own transaction. ``after_switch`` gets {disk:
        snapshot node} and returns actions for once those nodes exist."""
        # The caller checked FLEECE_FEATURES (and the route's) before it changed anything.
        if not os.path.isdir(self.fleece_dir):
            raise VMBackupError('fleece_dir %s does not exist: create it on fast local storage, '
                                'or set fleecing: false' % self.fleece_dir)
        for index, disk in enumerate(self.disks):
            self._add_fleece(index, disk)
        if self.route == JOB_ROUTE:
            self._instant_by_jobs(list(before_switch), list(at_instant))
        else:
            self._instant_by_filters(list(before_switch), list(at_instant))
        for index, disk in enumerate(self.disks):
            snap = node_name(self.run_id, 'snap', index)
            self.vm.qmp.execute('blockdev-add', {'driver': 'snapshot-access', 'node-name': snap,
                                                 'file': self._cbw[disk.name][0], 'discard': 'unmap'})
            self.snapshot_nodes[disk.name] = snap
        self.vm.qmp.transaction(list(after_switch(dict(self.snapshot_nodes))))
        return dict(self.snapshot_nodes)

    def _instant_by_jobs(self, before_switch, at_instant):
        """One transaction: ``before_switch``, a ``sync: none`` job per disk
        whose filter enters the write path, and ``at_instant``. QEMU drains
        all I/O before a transaction, so it is one instant for every disk and
        every action, with no pause."""
        actions = []
        for index, disk in enumerate(self.disks):
            job, cbw = fleece_job(self.run_id, index), node_name(self.run_id, 'cbw', index)
            actions.append(('blockdev-backup', {
                'job-id': job, 'device': disk.root_node, 'target': self._fleece[disk.name][0], 'sync': 'none',
                'filter-node-name': cbw, 'on-cbw-error': 'break-snapshot', 'auto-dismiss': False}))
            self._cbw[disk.name] = (cbw, disk.root_node, disk.qdev)
        self.vm.qmp.transaction(before_switch + actions + at_instant)
        self._jobs = [action[1]['job-id'] for action in actions]

    def _instant_by_filters(self, before_switch, at_instant):
        """Explicit copy-before-write filters switched in device by device,
        with the vCPUs stopped around the switches when they are more than
        one; ``at_instant`` right after the last switch, still paused (a
        stopped VM has drained its I/O, so it is the instant for its
        guest)."""
        for index, disk in enumerate(self.disks):
            self._add_filter(index, disk)
        with VMPause(self.vm, wanted=len(self.disks) > 1) as pause:
            self.vm.qmp.transaction(before_switch)
            for disk in self.disks:
                cbw, _original, qdev = self._cbw[disk.name]
                # cbw is new and has no parent: the device cannot be on it already.
                self.vm.qmp.execute('qom-set', {'path': qdev, 'property': 'drive', 'value': cbw})
                self._switched.add(disk.name)
            self.vm.qmp.transaction(at_instant)
        self.paused = pause.paused
        self.pause_seconds = pause.seconds

    def _add_fleece(self, index, disk):
        if not disk.qdev:
            raise VMBackupError('disk %s is not attached to a guest device, so it cannot be fleeced; '
                                'exclude it' % disk.name)
        path = self.fleece_file(index)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.ftruncate(fd, disk.virtual_size)
        finally:
            os.close(fd)
        fleece = node_name(self.run_id, 'fl', index)
        self._fleece[disk.name] = (fleece, path)
        self.vm.qmp.execute('blockdev-add', {
            'driver': 'raw', 'node-name': fleece, 'discard': 'unmap',
            'file': {'driver': 'file', 'filename': path, 'discard': 'unmap'}})
        size = self.vm.named_nodes()[fleece]['image']['virtual-size']
        if size != disk.virtual_size:
            # A smaller cbw target makes QEMU abort on the first write past its end.
            raise VMBackupError('fleece image %s has %d bytes, disk %s has %d: refusing to fleece'
                                % (path, size, disk.name, disk.virtual_size))

    def _add_filter(self, index, disk):
        """An explicit cbw node over the disk; it has no parent yet."""
        cbw = node_name(self.run_id, 'cbw', index)
        self.vm.qmp.execute('blockdev-add', {
            'driver': 'copy-before-write', 'node-name': cbw, 'file': disk.root_node,
            'target': self._fleece[disk.name][0], 'on-cbw-error': 'break-snapshot',
            'cbw-timeout': self.cbw_timeout})
        self._cbw[disk.name] = (cbw, disk.root_node, disk.qdev)

    def teardown(self):
        """Remove everything create() made, in the only order QEMU allows:
        snapshot-access nodes first (a fleecing job ended before them leaves
        them reading the live disk; an explicit filter with another parent
        keeps WRITE unshared, so its device cannot be switched back)."""
        errors = []
        for snap in list(self.snapshot_nodes.values()):
            self._step(errors, ignore_missing, self.vm.qmp.execute, 'blockdev-del', {'node-name': snap})
        self.snapshot_nodes = {}
        if self._jobs:
            # The job's filter leaves the write path with the job.
            self._step(errors, self.vm.qmp.end_jobs, self._jobs)
            self._jobs = []
        for disk_name, (cbw, original, qdev) in list(self._cbw.items()):
            if disk_name in self._switched:
                self._step(errors, self.vm.switch_drive, qdev, original)
            if self.route == FILTER_ROUTE:
                self._step(errors, ignore_missing, self.vm.qmp.execute, 'blockdev-del', {'node-name': cbw})
        self._cbw = {}
        self._switched = set()
        for fleece, path in list(self._fleece.values()):
            self._step(errors, ignore_missing, self.vm.qmp.execute, 'blockdev-del', {'node-name': fleece})
            self._step(errors, remove_file, path)
        self._fleece = {}
        if errors:
            raise VMBackupError('could not remove every fleecing node: %s; run again to clean up'
                                % '; '.join(errors))

    def remove_files(self):
        """Remove the fleece images only: for when QEMU is gone, and its nodes with it."""
        for _fleece, path in self._fleece.values():
            remove_file(path)
        self._fleece = {}

    @staticmethod
    def _step(errors, call, *args):
        try:
            call(*args)
        except VMBackupError as exc:
            errors.append(exc.msg)
        except OSError as exc:
            errors.append(str(exc))


def remove_file(path):
    if os.path.exists(path):
        os.unlink(path)


# How a broken snapshot shows: on-cbw-error: break-snapshot makes every later
# read of the snapshot-access node fail with EACCES, which the backup job
# reports as its error.
BROKEN_SNAPSHOT_ERROR = 'Permission denied'


def broken_snapshot_hint(job_error, fleece_dir, timeout):
    """What a backup job's error means when it read a broken fleecing view
    (None when it does not look like one). ``timeout`` is the view's
    cbw_timeout (None on the job route, which has none)."""
    if BROKEN_SNAPSHOT_ERROR not in job_error:
        return None
    why = 'failed or filled up'
    if timeout is not None:
        why = 'failed, filled up or took longer than the cbw_timeout of %s s to take a guest write\'s old data' % timeout
    return ('with fleecing, this means the fleece image in %s %s: copy-before-write broke the snapshot so '
            'that the guest could go on writing; free space in fleece_dir, or put it on faster storage'
            % (fleece_dir, why))
