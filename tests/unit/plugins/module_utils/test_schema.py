# -*- coding: utf-8 -*-
# Copyright: (c) 2026, vmbackup.qemu developers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import pytest

from ansible_collections.vmbackup.qemu.plugins.module_utils.errors import FeatureMissingError
from ansible_collections.vmbackup.qemu.plugins.module_utils.schema import Features, QMPSchema

# A miniature introspection result in QEMU's shape: opaque type names,
# a flat union for blockdev-add, arrays and an alternate.
SCHEMA = [
    {'name': 'blockdev-add', 'meta-type': 'command', 'arg-type': '1', 'ret-type': '0'},
    {'name': '1', 'meta-type': 'object', 'tag': 'driver',
     'members': [{'name': 'driver', 'type': '2'}, {'name': 'node-name', 'type': 'str'}],
     'variants': [{'case': 'qcow2', 'type': '3'}, {'case': 'copy-before-write', 'type': '4'}]},
    {'name': '2', 'meta-type': 'enum', 'members': [{'name': 'qcow2'}, {'name': 'copy-before-write'}]},
    {'name': '3', 'meta-type': 'object', 'members': [{'name': 'file', 'type': 'str'}]},
    {'name': '4', 'meta-type': 'object',
     'members': [{'name': 'file', 'type': 'str'}, {'name': 'on-cbw-error', 'type': 'str'}]},
    {'name': 'blockdev-backup', 'meta-type': 'command', 'arg-type': '5', 'ret-type': '0'},
    {'name': '5', 'meta-type': 'object',
     'members': [{'name': 'device', 'type': 'str'}, {'name': 'x-perf', 'type': '6'},
                 {'name': 'filter-node-name', 'type': 'str'}]},
    {'name': '6', 'meta-type': 'object', 'members': [{'name': 'max-workers', 'type': 'int'}]},
    {'name': 'block-export-add', 'meta-type': 'command', 'arg-type': '7', 'ret-type': '0'},
    {'name': '7', 'meta-type': 'object', 'tag': 'type', 'members': [{'name': 'type', 'type': 'str'}],
     'variants': [{'case': 'nbd', 'type': '8'}]},
    {'name': '8', 'meta-type': 'object', 'members': [{'name': 'bitmaps', 'type': '[9]'}]},
    {'name': '[9]', 'meta-type': 'array', 'element-type': '9'},
    {'name': '9', 'meta-type': 'alternate', 'members': [{'type': 'str'}, {'type': '10'}]},
    {'name': '10', 'meta-type': 'object', 'members': [{'name': 'node', 'type': 'str'},
                                                      {'name': 'name', 'type': 'str'}]},
    {'name': 'query-named-block-nodes', 'meta-type': 'command', 'arg-type': '0', 'ret-type': '[11]'},
    {'name': '[11]', 'meta-type': 'array', 'element-type': '11'},
    {'name': '11', 'meta-type': 'object', 'members': [{'name': 'node-name', 'type': 'str'}]},
    {'name': '0', 'meta-type': 'object', 'members': []},
    {'name': 'old-enum', 'meta-type': 'enum', 'values': ['a', 'b']},
    {'name': 'JOB_STATUS_CHANGE', 'meta-type': 'event', 'arg-type': '0'},
]


@pytest.fixture
def schema():
    return QMPSchema(SCHEMA)


def test_commands_and_events(schema):
    assert schema.has_command('blockdev-add')
    assert not schema.has_command('blockdev-replace')
    assert not schema.has_command('JOB_STATUS_CHANGE')
    assert schema.has_event('JOB_STATUS_CHANGE')


def test_union_variants_and_nested_members(schema):
    assert schema.blockdev_drivers() == {'qcow2', 'copy-before-write'}
    assert schema.command_arg('blockdev-add', ('case', 'copy-before-write'), 'on-cbw-error')
    assert not schema.command_arg('blockdev-add', ('case', 'qcow2'), 'on-cbw-error')
    assert not schema.command_arg('blockdev-add', ('case', 'no-such-driver'), 'file')
    assert schema.command_arg('blockdev-add', ('case', 'qcow2'), 'node-name')   # base member
    assert schema.command_arg('blockdev-backup', 'x-perf', 'max-workers')
    assert not schema.command_arg('blockdev-backup', 'x-perf', 'min-cluster-size')
    assert not schema.command_arg('no-such-command', 'x')


def test_arrays_alternates_and_return_types(schema):
    assert schema.command_arg('block-export-add', ('case', 'nbd'), 'bitmaps', 'node')
    assert schema.command_ret('query-named-block-nodes', 'node-name')
    assert not schema.command_ret('query-named-block-nodes', 'children')


def test_enum_values_old_and_new_style(schema):
    assert schema.enum_values('2') == ['qcow2', 'copy-before-write']
    assert schema.enum_values('old-enum') == ['a', 'b']


def test_features(schema):
    features = Features(schema)
    assert features.has('copy_before_write')
    assert features.has('cbw_on_cbw_error')
    assert features.has('block_export_add')
    assert not features.has('snapshot_access')
    assert features.has('backup_max_workers')
    with pytest.raises(FeatureMissingError) as info:
        features.require('snapshot_access', 'fleecing')
    assert 'fleecing needs the snapshot-access block driver' in info.value.msg
