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

Sequence and why each step is where it is (QEMU 7.1+; see docs/design.md):

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
5. snapshot-access nodes, then the ``after_switch`` transaction: frozen copies
   of the bitmaps that say what changed *before* the instant. Taken after the
   switch they are a superset, which only copies a little more.
6. The vCPUs run again, whatever failed.

cbw is created with ``on-cbw-error: break-snapshot`` and ``cbw-timeout`` (45 s,
or less where QEMU cannot store that: quirks.cbw_timeout): when the fleece
image fails or stalls longer, the snapshot breaks (the backup fails with
"Permission denied" on reads) and the guest's write goes on.

Teardown reverses it: snapshot-access nodes (a cbw node with another parent
keeps WRITE unshared, so the device cannot be switched back before), devices
back to their original node (the cbw's ``file`` child), cbw nodes, fleece
nodes, fleece files. Every step tolerates "already gone" and a failed step
does not stop the rest; what a killed run left is leftovers.py's."""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import os
import time

from ansible_collections.vmbackup.qemu.plugins.module_utils.errors import VMBackupError
from ansible_collections.vmbackup.qemu.plugins.module_utils.names import fleece_file, node_name
from ansible_collections.vmbackup.qemu.plugins.module_utils.qmp import ignore_missing
from ansible_collections.vmbackup.qemu.plugins.module_utils.quirks import cbw_timeout

# What a QEMU needs for this view (schema.FEATURES names): asked before any
# change, by the real run and check mode alike.
FLEECE_FEATURES = ('copy_before_write', 'snapshot_access', 'cbw_on_cbw_error')


def can_fleece(features):
    return all(features.has(name) for name in FLEECE_FEATURES)


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
    """The frozen view of ``disks`` (vm.Disk objects), one instant for all."""

    def __init__(self, vm, disks, run_id, fleece_dir):
        self.vm = vm
        self.disks = list(disks)
        self.run_id = run_id
        self.fleece_dir = fleece_dir
        self.snapshot_nodes = {}     # disk name -> snapshot-access node
        self.pause_seconds = 0.0
        self.paused = False
        self._cbw = {}               # disk name -> (cbw node, original root node, qdev)
        self._fleece = {}            # disk name -> (fleece node, file)
        self._switched = set()       # disks whose device writes through our cbw
        self.cbw_timeout = cbw_timeout(vm.version)

    def fleece_file(self, index):
        return fleece_file(self.fleece_dir, self.vm.qmp.socket_path, self.run_id, index)

    def create(self, before_switch=(), after_switch=lambda snapshot_nodes: ()):
        """Build the view. ``before_switch`` is a list of transaction actions;
        ``after_switch`` gets {disk: snapshot node} and returns actions."""
        vm = self.vm
        # The caller checked FLEECE_FEATURES before it changed anything.
        if not os.path.isdir(self.fleece_dir):
            raise VMBackupError('fleece_dir %s does not exist: create it on fast local storage, '
                                'or set fleecing: false' % self.fleece_dir)
        for index, disk in enumerate(self.disks):
            self._add_fleece(index, disk)
        with VMPause(vm, wanted=len(self.disks) > 1) as pause:
            vm.qmp.transaction(list(before_switch))
            for disk in self.disks:
                cbw, _original, qdev = self._cbw[disk.name]
                # cbw is new and has no parent: the device cannot be on it already.
                vm.qmp.execute('qom-set', {'path': qdev, 'property': 'drive', 'value': cbw})
                self._switched.add(disk.name)
            for index, disk in enumerate(self.disks):
                snap = node_name(self.run_id, 'snap', index)
                vm.qmp.execute('blockdev-add', {'driver': 'snapshot-access', 'node-name': snap,
                                                'file': self._cbw[disk.name][0], 'discard': 'unmap'})
                self.snapshot_nodes[disk.name] = snap
            vm.qmp.transaction(list(after_switch(dict(self.snapshot_nodes))))
        self.paused = pause.paused
        self.pause_seconds = pause.seconds
        return dict(self.snapshot_nodes)

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
        cbw = node_name(self.run_id, 'cbw', index)
        self.vm.qmp.execute('blockdev-add', {
            'driver': 'copy-before-write', 'node-name': cbw, 'file': disk.root_node,
            'target': fleece, 'on-cbw-error': 'break-snapshot', 'cbw-timeout': self.cbw_timeout})
        self._cbw[disk.name] = (cbw, disk.root_node, disk.qdev)

    def teardown(self):
        """Remove everything create() made, in the only order QEMU allows."""
        errors = []
        for snap in list(self.snapshot_nodes.values()):
            self._step(errors, ignore_missing, self.vm.qmp.execute, 'blockdev-del', {'node-name': snap})
        self.snapshot_nodes = {}
        for disk_name, (cbw, original, qdev) in list(self._cbw.items()):
            if disk_name in self._switched:
                self._step(errors, self.vm.switch_drive, qdev, original)
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
    (None when it does not look like one)."""
    if BROKEN_SNAPSHOT_ERROR not in job_error:
        return None
    return ('with fleecing, this means the fleece image in %s failed, filled up or took longer than the '
            'cbw_timeout of %s s to take a guest write\'s old data: copy-before-write broke the snapshot so '
            'that the guest could go on writing; free space in fleece_dir, or put it on faster storage'
            % (fleece_dir, timeout))
