# -*- coding: utf-8 -*-
# Copyright: (c) 2026, vmbackup.qemu developers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

"""Dirty bitmaps as a declarative resource: compare what a VM has with what
is wanted, and derive from that one comparison the QMP transaction, whether
anything changes, the predicted result for check mode and the diff."""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

from ansible_collections.vmbackup.qemu.plugins.module_utils.errors import BitmapStateError

# qcow2 stores bitmap names of at most 1023 bytes.
MAX_PERSISTENT_NAME_BYTES = 1023


def validate_bitmap_request(name, granularity, persistent):
    """Return an error message for a request QEMU would refuse, or None."""
    if not name:
        return 'name must not be empty'
    if persistent and len(name.encode('utf-8')) > MAX_PERSISTENT_NAME_BYTES:
        return 'name is %d bytes long; a persistent bitmap name must be at most %d bytes' % (
            len(name.encode('utf-8')), MAX_PERSISTENT_NAME_BYTES)
    if granularity is not None:
        if granularity < 512 or granularity & (granularity - 1):
            return ('granularity must be a power of two of at least 512 bytes, got %d'
                    % granularity)
    return None


class BitmapPlan(object):
    """The difference between the bitmaps a VM has and the ones wanted."""

    def __init__(self):
        # QEMU applies a transaction's removals only at commit, so a bitmap
        # cannot be removed and added again under its name in one transaction:
        # recreated bitmaps are removed in a transaction of their own first.
        self.removals = []       # (transaction action type, data), run first
        self.actions = []        # (transaction action type, data)
        self.changes = []        # {disk, change} in words, for results
        self.before = {}         # disk name -> bitmap dict or None
        self.after = {}          # disk name -> bitmap dict or None (predicted)

    @property
    def changed(self):
        return bool(self.removals or self.actions)

    def transactions(self):
        return [actions for actions in (self.removals, self.actions) if actions]

    def diff(self):
        return {'before': {'bitmaps': self.before}, 'after': {'bitmaps': self.after}}

    def predicted_bitmaps(self):
        """The SPEC's `bitmaps` list as it will be after the plan ran."""
        return [dict(bitmap, disk=disk) for disk, bitmap in self.after.items() if bitmap]


def _mismatches(current, persistent, granularity):
    found = []
    if current.inconsistent:
        found.append('it is inconsistent (QEMU stopped without saving it), so it no longer '
                     'tracks every write and can only be removed')
    if current.persistent != persistent:
        found.append('it is %spersistent, %spersistent was asked' % (
            '' if current.persistent else 'not ', '' if persistent else 'not '))
    if granularity is not None and current.granularity != granularity:
        found.append('its granularity is %d, %d was asked' % (current.granularity, granularity))
    return found


def _refuse_if_busy(disk, current, what):
    if current is not None and current.busy:
        raise BitmapStateError(
            'bitmap %s on disk %s is busy (a running block job or an NBD export uses it), so it '
            'cannot be %s now: wait for the job to end or cancel it, then run again'
            % (current.name, disk.name, what), disk=disk.name, bitmap=current.name)


def plan_bitmaps(disks, name, state, persistent=True, granularity=None, enabled=True,
                 recreate=False):
    """Work out what must change so that bitmap ``name`` is in ``state`` on ``disks``.

    Raises BitmapStateError when the wish cannot be met without losing
    tracked writes and ``recreate`` is false, or when a busy bitmap would
    have to change."""
    plan = BitmapPlan()
    for disk in disks:
        current = disk.bitmap(name)
        before = current.as_dict() if current else None
        plan.before[disk.name] = before
        node = disk.node
        if state == 'absent':
            if current is None:
                plan.after[disk.name] = None
                continue
            _refuse_if_busy(disk, current, 'removed')
            plan.actions.append(('block-dirty-bitmap-remove', {'node': node, 'name': name}))
            plan.changes.append({'disk': disk.name, 'change': 'removed'})
            plan.after[disk.name] = None
            continue

        new_bitmap = {'name': name, 'node': node, 'count': 0, 'granularity': granularity,
                      'recording': enabled, 'busy': False, 'persistent': persistent,
                      'inconsistent': False}
        add = ('block-dirty-bitmap-add', dict(
            [('node', node), ('name', name), ('persistent', persistent),
             ('disabled', not enabled)]
            + ([('granularity', granularity)] if granularity is not None else [])))

        if current is None:
            plan.actions.append(add)
            plan.changes.append({'disk': disk.name, 'change': 'added'})
            plan.after[disk.name] = new_bitmap
            continue

        mismatches = _mismatches(current, persistent, granularity)
        if mismatches:
            if not recreate:
                raise BitmapStateError(
                    'bitmap %s on disk %s does not match: %s. Set recreate: true to replace it '
                    'with a new, empty bitmap (the writes it tracked are forgotten, so the next '
                    'backup that relies on it must be a full one)'
                    % (name, disk.name, '; '.join(mismatches)), disk=disk.name, bitmap=name)
            _refuse_if_busy(disk, current, 'recreated')
            plan.removals.append(('block-dirty-bitmap-remove', {'node': node, 'name': name}))
            plan.actions.append(add)
            plan.changes.append({'disk': disk.name, 'change': 'recreated: ' + '; '.join(mismatches)})
            plan.after[disk.name] = new_bitmap
            continue

        after = dict(before)
        if current.recording != enabled:
            _refuse_if_busy(disk, current, 'enabled' if enabled else 'disabled')
            plan.actions.append(('block-dirty-bitmap-enable' if enabled else 'block-dirty-bitmap-disable',
                                 {'node': node, 'name': name}))
            plan.changes.append({'disk': disk.name, 'change': 'enabled' if enabled else 'disabled'})
            after['recording'] = enabled
        if state == 'cleared' and current.count:
            _refuse_if_busy(disk, current, 'cleared')
            plan.actions.append(('block-dirty-bitmap-clear', {'node': node, 'name': name}))
            plan.changes.append({'disk': disk.name, 'change': 'cleared'})
            after['count'] = 0
        plan.after[disk.name] = after
    return plan
