# -*- coding: utf-8 -*-
# Copyright: (c) 2026, vmbackup.qemu developers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

"""Feature detection from ``query-qmp-schema``.

Type names in QAPI introspection are opaque numbers, so every question starts
at a command (or event) name and follows ``arg-type``/``ret-type``, object
members, union variants, arrays and alternates from there. Later modules ask
``features.has('snapshot_access')`` instead of comparing version strings."""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

from ansible_collections.vmbackup.qemu.plugins.module_utils.errors import FeatureMissingError


class QMPSchema(object):
    """Navigable view of the list ``query-qmp-schema`` returns."""

    def __init__(self, entries):
        self._by_name = dict((entry['name'], entry) for entry in entries)

    def entry(self, name):
        return self._by_name.get(name)

    def has_command(self, name):
        entry = self.entry(name)
        return entry is not None and entry.get('meta-type') == 'command'

    def has_event(self, name):
        entry = self.entry(name)
        return entry is not None and entry.get('meta-type') == 'event'

    def _unwrap(self, type_name):
        """Follow arrays and alternates to the object types they hold."""
        entry = self.entry(type_name)
        if entry is None:
            return []
        meta = entry.get('meta-type')
        if meta == 'array':
            return self._unwrap(entry['element-type'])
        if meta == 'alternate':
            found = []
            for member in entry.get('members', []):
                found.extend(self._unwrap(member['type']))
            return found
        if meta == 'object':
            return [entry]
        return []

    def member_type(self, type_name, member, case=None):
        """Type name of ``member`` of object ``type_name``.

        ``case`` selects a union variant by its tag value (a blockdev driver,
        a transaction action type); the base members are searched too."""
        for entry in self._unwrap(type_name):
            variant_types = []
            if case is not None:
                variant_types = [v['type'] for v in entry.get('variants', []) if v['case'] == case]
                if not variant_types:
                    continue
            for candidate in [entry] + [self.entry(t) for t in variant_types]:
                for item in (candidate or {}).get('members', []):
                    if item['name'] == member:
                        return item['type']
        return None

    def has_path(self, type_name, *path):
        """True when the dotted ``path`` of members exists below ``type_name``.

        A path element ``('case', value)`` selects a union variant for the next
        member."""
        current = type_name
        case = None
        for element in path:
            if isinstance(element, tuple):
                case = element[1]
                if not any(v['case'] == case
                           for entry in self._unwrap(current)
                           for v in entry.get('variants', [])):
                    return False
                continue
            current = self.member_type(current, element, case=case)
            case = None
            if current is None:
                return False
        return True

    def command_arg(self, command, *path):
        entry = self.entry(command)
        if entry is None or entry.get('meta-type') != 'command':
            return False
        return self.has_path(entry['arg-type'], *path)

    def command_ret(self, command, *path):
        entry = self.entry(command)
        if entry is None or entry.get('meta-type') != 'command':
            return False
        return self.has_path(entry['ret-type'], *path)

    def enum_values(self, type_name):
        entry = self.entry(type_name)
        if entry is None or entry.get('meta-type') != 'enum':
            return []
        members = entry.get('members')
        if members:
            return [m['name'] for m in members]
        return list(entry.get('values', []))  # before 6.2 only 'values' existed

    def union_cases(self, type_name):
        return [v['case'] for entry in self._unwrap(type_name) for v in entry.get('variants', [])]

    def blockdev_drivers(self):
        entry = self.entry('blockdev-add')
        return set(self.union_cases(entry['arg-type'])) if entry else set()

    def transaction_actions(self):
        entry = self.entry('transaction')
        actions_type = self.member_type(entry['arg-type'], 'actions') if entry else None
        return set(self.union_cases(actions_type)) if actions_type else set()


# What the collection asks of a QEMU: name -> (description, probe). Only
# probes something consults live here; a new option adds the one it needs.
FEATURES = {
    'copy_before_write': ("the copy-before-write block driver (QEMU 6.2)",
                          lambda s: 'copy-before-write' in s.blockdev_drivers()),
    'cbw_on_cbw_error': ("copy-before-write on-cbw-error and cbw-timeout (QEMU 7.1)",
                         lambda s: s.command_arg('blockdev-add', ('case', 'copy-before-write'), 'on-cbw-error')),
    'snapshot_access': ("the snapshot-access block driver (QEMU 7.0)",
                        lambda s: 'snapshot-access' in s.blockdev_drivers()),
    'blockdev_backup': ("blockdev-backup (QEMU 2.3)",
                        lambda s: s.has_command('blockdev-backup')),
    'backup_discard_source': ("blockdev-backup discard-source (QEMU 9.1)",
                              lambda s: s.command_arg('blockdev-backup', 'discard-source')),
    'backup_on_cbw_error': ("blockdev-backup on-cbw-error (QEMU 10.1)",
                            lambda s: s.command_arg('blockdev-backup', 'on-cbw-error')),
    'backup_max_workers': ("blockdev-backup x-perf.max-workers (QEMU 6.0)",
                           lambda s: s.command_arg('blockdev-backup', 'x-perf', 'max-workers')),
    'bitmap_transactions': ("dirty bitmap add/remove/clear/enable/disable/merge in transactions (QEMU 4.2)",
                            lambda s: set(['block-dirty-bitmap-add', 'block-dirty-bitmap-remove',
                                           'block-dirty-bitmap-clear', 'block-dirty-bitmap-enable',
                                           'block-dirty-bitmap-disable', 'block-dirty-bitmap-merge'])
                            <= s.transaction_actions()),
    'block_export_add': ("block-export-add (QEMU 5.2)",
                         lambda s: s.has_command('block-export-add')),
    'block_graph_debug': ("x-debug-query-block-graph (QEMU 4.0)",
                          lambda s: s.has_command('x-debug-query-block-graph')),
    'luks_targets': ("LUKS-encrypted qcow2 nodes (blockdev-add encrypt.format luks) opened with a secret object "
                     "added over QMP (object-add qom-type secret, data)",
                     lambda s: s.command_arg('blockdev-add', ('case', 'qcow2'), 'encrypt', ('case', 'luks'),
                                             'key-secret')
                     and s.command_arg('object-add', ('case', 'secret'), 'data')
                     and s.has_command('object-del') and s.has_command('qom-list')),
    'jobs': ("the job-* commands and query-jobs (QEMU 3.0)",
             lambda s: s.has_command('query-jobs') and s.has_command('job-finalize')),
}


class Features(object):
    """Answers "can this QEMU do X" for the names in FEATURES."""

    def __init__(self, schema):
        self.schema = schema
        self._cache = {}

    def has(self, name):
        if name not in self._cache:
            self._cache[name] = bool(FEATURES[name][1](self.schema))
        return self._cache[name]

    def require(self, name, purpose, version=None):
        """Raise FeatureMissingError naming what is missing and why it is needed."""
        if not self.has(name):
            raise FeatureMissingError(
                '%s needs %s, which the QEMU at the other end of the socket%s lacks: run a newer '
                'QEMU or choose options that do not need it' % (
                    purpose, FEATURES[name][0], ' (%s)' % version if version else ''),
                missing_feature=name)
