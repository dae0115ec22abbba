# -*- coding: utf-8 -*-
# Copyright: (c) 2026, vmbackup.qemu developers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

"""A point-in-time view that outlives the module run that made it
(qemu_fleece): the fleecing view of fleece.py, one instant for all its disks,
optionally exported read-only over QEMU's NBD server, with a dirty bitmap
frozen at the same instant for incremental pulls.

What exists is read from QEMU (the view's names, names.VIEW_RUN_ID); what it
was made with, and whether the module started the NBD server, from a small
record on the host (names.view_record), which also tells a view that QEMU
lost in a restart from a live one.

The bitmap is frozen at the instant: on the job route the transaction that
takes the instant copies the user's bitmap into a disabled one on the
disk's node (names.VIEW_FROZEN_BITMAP); on the filter route a transaction
right after the last switch does, while the vCPUs are still stopped. Once
the snapshot-access node exists, that copy moves onto it under the user's
bitmap name, which is how an NBD export offers it
(``qemu:dirty-bitmap:NAME``)."""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import errno
import json
import os
import stat
import time

try:
    from urllib.parse import quote
except ImportError:  # pragma: no cover - Python 2 is not supported by the modules
    from urllib import quote

from ansible_collections.vmbackup.qemu.plugins.module_utils.errors import QMPCommandError, ViewError, VMBackupError
from ansible_collections.vmbackup.qemu.plugins.module_utils.fleece import (
    FLEECE_FEATURES,
    FleeceView,
    fleece_route,
    refuse_foreign_filters,
)
from ansible_collections.vmbackup.qemu.plugins.module_utils.leftovers import remove_exports, remove_leftovers
from ansible_collections.vmbackup.qemu.plugins.module_utils.names import (
    VIEW_FROZEN_BITMAP,
    VIEW_RUN_ID,
    fleece_file,
    is_view_name,
    node_name,
    view_export,
    view_record,
)
from ansible_collections.vmbackup.qemu.plugins.module_utils.qmp import peer_pid
from ansible_collections.vmbackup.qemu.plugins.module_utils.quirks import fleece_read_chunk
from ansible_collections.vmbackup.qemu.plugins.module_utils.vm import VMRun
from ansible_collections.vmbackup.qemu.plugins.module_utils.vmlock import lock_dir, qemu_key

BITMAP_CONTEXT = 'qemu:dirty-bitmap:'


def view_parts(vm):
    """Names of the jobs, exports and nodes of a view that QEMU holds now."""
    parts = [job for job in vm.qmp.query_jobs() if is_view_name(job)]
    if vm.features.has('block_export_add'):
        parts += [e['id'] for e in vm.qmp.execute('query-block-exports') if is_view_name(e.get('id'))]
    return parts + sorted(name for name in vm.named_nodes() if is_view_name(name))


def refuse_beside_a_view(vm, what):
    """Fail before ``what`` changes anything while a view of the VM exists."""
    parts = view_parts(vm)
    if parts:
        raise ViewError('%s is refused while a qemu_fleece view of this VM exists (%s): remove the view with '
                        'vmbackup.qemu.qemu_fleece state=absent first' % (what, ', '.join(parts)),
                        view=parts)


def nbd_uri(export, socket_path):
    return 'nbd+unix:///%s?socket=%s' % (quote(export, safe=''), quote(socket_path, safe='/'))


class ViewRecord(object):
    """What a view of one VM was made with, kept beside the VM locks."""

    def __init__(self, socket_path):
        self.path = view_record(lock_dir(), socket_path)

    def load(self):
        try:
            with open(self.path) as handle:
                return json.load(handle)
        except (IOError, OSError, ValueError):
            return None

    def save(self, record):
        temporary = self.path + '.new'
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, 'w') as handle:
            json.dump(record, handle, sort_keys=True)
            handle.flush()
            os.fsync(handle.fileno())
        os.rename(temporary, self.path)

    def remove(self):
        if os.path.exists(self.path):
            os.unlink(self.path)


class PullView(VMRun):
    """One run of qemu_fleece on one VM: ``present()`` or ``absent()``."""

    def __init__(self, vm, params, warn=None, check_mode=False):
        super(PullView, self).__init__(vm, params, warn, check_mode)
        self.socket = vm.qmp.socket_path
        self.store = ViewRecord(self.socket)
        self.qemu, self.qemu_pid = qemu_key(self.socket, 5.0)
        self.result = {'changed': False, 'disks': [], 'skipped_disks': [], 'removed': []}

    # -- what is there ------------------------------------------------------

    def _existing(self):
        """The record of this QEMU's view (None if none); a record of a QEMU
        that has exited since is reported and its files are removed."""
        record = self.store.load()
        if record is not None and record.get('qemu') != self.qemu:
            self.result['lost_view'] = ('the view made at %s is gone: QEMU was restarted since'
                                        % record.get('created'))
            self.warn(self.result['lost_view'])
            if not self.check_mode:
                for disk in record.get('disks', []):
                    if disk.get('fleece_image') and os.path.exists(disk['fleece_image']):
                        os.unlink(disk['fleece_image'])
                self.store.remove()
            return None
        return record

    def _wanted(self, disks):
        params = self.params
        return {'disks': sorted(d.name for d in disks), 'fleece_dir': params['fleece_dir'],
                'export': params['export'], 'nbd_socket': params['nbd_socket'] if params['export'] == 'nbd' else None,
                'bitmap': params['bitmap']}

    def _describe(self, disks, options):
        """The view's disks as the module returns them."""
        described = []
        for index, disk in enumerate(disks):
            item = {'disk': disk.name, 'snapshot_node': node_name(VIEW_RUN_ID, 'snap', index),
                    'fleece_image': fleece_file(options['fleece_dir'], self.socket, VIEW_RUN_ID, index),
                    'export': None, 'uri': None, 'bitmap_context': None}
            if options['export'] == 'nbd':
                item.update(export=disk.name, uri=nbd_uri(disk.name, options['nbd_socket']))
                if options['bitmap']:
                    item['bitmap_context'] = BITMAP_CONTEXT + options['bitmap']
            described.append(item)
        return described

    # -- state: present -----------------------------------------------------

    def present(self):
        self._require_features()
        disks, self.result['skipped_disks'] = self._select()
        options = self._wanted(disks)
        record, parts = self._existing(), view_parts(self.vm)
        if record is not None and record.get('complete') and _intact(record, parts):
            if record['options'] != options:
                raise ViewError('a view of this VM already exists, made at %s with %s; it differs from what was '
                                'asked (%s): remove it with state=absent first'
                                % (record['created'], _options_text(record['options']), _options_text(options)),
                                view=record['options'])
            self.result.update(disks=record['disks'], nbd_socket=options['nbd_socket'],
                               fleecing_route=record.get('route'), nbd_server_started=record['started_server'])
            return self.result
        refuse_foreign_filters(self.vm, disks)
        route = fleece_route(self.vm.features, len(disks), self.vm.status()['status'])
        described = self._describe(disks, options)
        self.result.update(changed=True, disks=described, nbd_socket=options['nbd_socket'], fleecing_route=route,
                           diff={'before': {}, 'after': {'options': options, 'disks': described}})
        if self.check_mode:
            return self.result
        if record is not None or parts:
            # A present that died half-way, or a record QEMU no longer backs;
            # then the disks again, their devices back on their own nodes.
            self.result['removed'] = self._remove(record)
            disks = self._select()[0]
        self._build(disks, options, route, described)
        return self.result

    def _require_features(self):
        features = self.vm.features
        for name in FLEECE_FEATURES:
            features.require(name, 'a point-in-time view (qemu_fleece)')
        if self.params['export'] == 'nbd':
            features.require('block_export_add', 'export: nbd')
        if fleece_read_chunk(self.vm.version) is not None:
            raise ViewError(
                'QEMU %s cannot serve a point-in-time view to other readers: before QEMU 8.0 a read of the view '
                'that spans areas the guest has overwritten and areas it has not returns some of the newer data '
                '(fixed upstream by "hbitmap: fix hbitmap_status() return value for first dirty bit case", '
                'a4d5224c2cb6, QEMU 8.0). qemu_blockdev_backup works around it with reads it keeps short, which '
                'NBD clients cannot be made to do. Run QEMU 8.0 or newer for pull backups' % self.vm.version['string'])

    def _select(self):
        disks, skipped = self.vm.select_disks(self.params.get('disks'))
        if not disks:
            raise ViewError('the VM has no disk to make a view of (%s)' % (
                '; '.join('%(disk)s: %(reason)s' % s for s in skipped) or 'no disks'))
        bitmap = self.params.get('bitmap')
        for disk in disks if bitmap else []:
            found = disk.bitmap(bitmap)
            if found is None or found.inconsistent:
                raise ViewError('disk %s has %s dirty bitmap %s: create it with vmbackup.qemu.qemu_bitmap, or leave '
                                'bitmap out' % (disk.name, 'an inconsistent' if found else 'no', bitmap))
        return disks, skipped

    def _build(self, disks, options, route, described):
        record = {'qemu': self.qemu, 'socket': self.socket, 'options': options, 'route': route,
                  'created': time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime()), 'complete': False,
                  'started_server': False, 'disks': described}
        self.store.save(record)   # first, so that whatever happens next can be found and removed
        try:
            view = FleeceView(self.vm, disks, VIEW_RUN_ID, options['fleece_dir'], route)
            self.result.update(cbw_timeout=view.cbw_timeout)
            snaps = view.create(at_instant=self._freeze_bitmaps(disks),
                                after_switch=lambda snaps: self._view_bitmaps(disks, snaps))
            self.result['pause_seconds'] = round(view.pause_seconds, 4)
            if options['export'] == 'nbd':
                record['started_server'] = self._start_server(options['nbd_socket'])
                self.store.save(record)
                self._export(disks, snaps, options['bitmap'])
            record['complete'] = True
            self.store.save(record)
        except BaseException as exc:
            problems = self._undo(record)
            if problems and isinstance(exc, VMBackupError):
                raise ViewError('%s. Removing the half-made view also failed (%s); run state=absent'
                                % (exc.msg, '; '.join(problems)), **exc.details)
            raise
        self.result['nbd_server_started'] = record['started_server']

    def _undo(self, record):
        try:
            self._remove(record)
            return []
        except Exception as exc:  # pylint: disable=broad-except
            return [str(exc)]

    def _freeze_bitmaps(self, disks):
        """At the instant: the user's bitmap copied, disabled, on each disk's node."""
        bitmap = self.params.get('bitmap')
        actions = []
        for disk in disks if bitmap else []:
            actions.append(('block-dirty-bitmap-add', {
                'node': disk.node, 'name': VIEW_FROZEN_BITMAP, 'disabled': True, 'persistent': False,
                'granularity': disk.bitmap(bitmap).granularity}))
            actions.append(('block-dirty-bitmap-merge', {
                'node': disk.node, 'target': VIEW_FROZEN_BITMAP, 'bitmaps': [bitmap]}))
        return actions

    def _view_bitmaps(self, disks, snaps):
        """The frozen copies, moved onto the snapshot-access nodes under the user's name."""
        bitmap = self.params.get('bitmap')
        actions = []
        for disk in disks if bitmap else []:
            actions.append(('block-dirty-bitmap-add', {
                'node': snaps[disk.name], 'name': bitmap, 'disabled': True, 'persistent': False,
                'granularity': disk.bitmap(bitmap).granularity}))
            actions.append(('block-dirty-bitmap-merge', {
                'node': snaps[disk.name], 'target': bitmap,
                'bitmaps': [{'node': disk.node, 'name': VIEW_FROZEN_BITMAP}]}))
            actions.append(('block-dirty-bitmap-remove', {'node': disk.node, 'name': VIEW_FROZEN_BITMAP}))
        return actions

    def _start_server(self, path):
        """Start QEMU's NBD server on ``path`` (True), or find it there already (False)."""
        if os.path.lexists(path):
            if not stat.S_ISSOCK(os.lstat(path).st_mode):
                raise ViewError('nbd_socket %s exists and is not a socket: choose another path' % path)
            try:
                listener = peer_pid(path, 5.0)
            except (IOError, OSError) as exc:
                if exc.errno != errno.ECONNREFUSED:
                    # EAGAIN: a listener too busy to take us. Only nobody
                    # listening makes a socket file QEMU may replace.
                    raise ViewError('cannot tell who listens on nbd_socket %s (%s): choose another path'
                                    % (path, exc.strerror or exc))
                listener = None
            if listener == self.qemu_pid:
                return False
            if listener:
                raise ViewError('nbd_socket %s belongs to another process (pid %d): choose another path'
                                % (path, listener))
        try:
            self.vm.qmp.execute('nbd-server-start', {'addr': {'type': 'unix', 'data': {'path': path}}})
        except QMPCommandError as exc:
            raise ViewError('QEMU could not start its NBD server on %s (%s). If this QEMU already runs one, set '
                            'nbd_socket to the UNIX socket it listens on' % (path, exc.desc))
        os.chmod(path, 0o600)
        return True

    def _export(self, disks, snaps, bitmap):
        for index, disk in enumerate(disks):
            export = {'type': 'nbd', 'id': view_export(index), 'node-name': snaps[disk.name],
                      'name': disk.name, 'writable': False}
            if bitmap:
                export['bitmaps'] = [bitmap]
            self.vm.qmp.execute('block-export-add', export)

    # -- state: absent ------------------------------------------------------

    def absent(self):
        record, parts = self._existing(), view_parts(self.vm)
        frozen = self._frozen_bitmaps()
        if record is None and not parts and not frozen:
            return self.result
        before = {'options': record['options'], 'disks': record['disks']} if record else {'parts': parts}
        self.result.update(changed=True, diff={'before': before, 'after': {}})
        if self.check_mode:
            self.result['removed'] = parts + ['bitmap %s on %s' % (b[1], b[0]) for b in frozen]
            return self.result
        self.result['removed'] = self._remove(record)
        return self.result

    def _frozen_bitmaps(self):
        return [(name, b['name']) for name, node in self.vm.named_nodes().items()
                for b in node.get('dirty-bitmaps', []) if b.get('name') == VIEW_FROZEN_BITMAP]

    def _remove(self, record):
        """Remove everything of the view (also a half-made one) and its record;
        what was removed, in words."""
        removed = remove_exports(self.vm, is_view_name)
        if record is not None and record.get('started_server'):
            removed += self._stop_server(record['options']['nbd_socket'])
        actions = [('block-dirty-bitmap-remove', {'node': node, 'name': name})
                   for node, name in self._frozen_bitmaps()]
        self.vm.qmp.transaction(actions)
        removed += ['bitmap %s on %s' % (a[1]['name'], a[1]['node']) for a in actions]
        fleece_dir = record['options']['fleece_dir'] if record else self.params.get('fleece_dir')
        removed += remove_leftovers(self.vm, fleece_dir, views=True)
        self.store.remove()
        return removed

    def _stop_server(self, path):
        """Stop the NBD server the view started, unless exports of others use it."""
        if self.vm.qmp.execute('query-block-exports'):
            self.warn('the NBD server on %s serves other exports too: it is left running' % path)
            return []
        try:
            self.vm.qmp.execute('nbd-server-stop')
        except QMPCommandError:
            return []   # someone stopped it already
        if os.path.lexists(path) and stat.S_ISSOCK(os.lstat(path).st_mode):
            os.unlink(path)
        return ['NBD server on %s' % path]


def _options_text(options):
    return ', '.join('%s=%s' % (key, options[key]) for key in sorted(options) if options[key] is not None)


def _intact(record, parts):
    """Whether QEMU still holds every snapshot node and export of the view."""
    present = set(parts)
    for index, disk in enumerate(record['disks']):
        if disk['snapshot_node'] not in present:
            return False
        if record['options']['export'] == 'nbd' and view_export(index) not in present:
            return False
    return True
