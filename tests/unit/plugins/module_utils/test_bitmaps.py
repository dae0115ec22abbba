# -*- coding: utf-8 -*-
# Copyright: (c) 2026, vmbackup.qemu developers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import pytest

from ansible_collections.vmbackup.qemu.plugins.module_utils.bitmaps import (
    plan_bitmaps,
    validate_bitmap_request,
)
from ansible_collections.vmbackup.qemu.plugins.module_utils.errors import BitmapStateError
from ansible_collections.vmbackup.qemu.plugins.module_utils.vm import Bitmap


class FakeDisk(object):
    def __init__(self, name, bitmaps=()):
        self.name = name
        self.node = 'fmt-' + name
        self.bitmaps = [Bitmap(self.node, b) for b in bitmaps]

    def bitmap(self, name):
        return next((b for b in self.bitmaps if b.name == name), None)


def info(name='b', count=0, granularity=65536, recording=True, busy=False, persistent=True,
         inconsistent=False):
    data = dict(name=name, count=count, granularity=granularity, recording=recording, busy=busy,
                persistent=persistent)
    if inconsistent:
        data['inconsistent'] = True
    return data


def test_present_adds_only_where_missing():
    plan = plan_bitmaps([FakeDisk('vda', [info()]), FakeDisk('vdb')], 'b', 'present')
    assert plan.actions == [('block-dirty-bitmap-add',
                             {'node': 'fmt-vdb', 'name': 'b', 'persistent': True, 'disabled': False})]
    assert plan.changes == [{'disk': 'vdb', 'change': 'added'}]
    assert plan.diff()['before']['bitmaps']['vdb'] is None
    assert [b['disk'] for b in plan.predicted_bitmaps()] == ['vda', 'vdb']


def test_present_is_idempotent():
    plan = plan_bitmaps([FakeDisk('vda', [info(count=12345)])], 'b', 'present')
    assert not plan.changed and plan.transactions() == []


def test_granularity_is_passed_when_given():
    plan = plan_bitmaps([FakeDisk('vda')], 'b', 'present', granularity=4096, enabled=False,
                        persistent=False)
    assert plan.actions[0][1] == {'node': 'fmt-vda', 'name': 'b', 'persistent': False,
                                  'disabled': True, 'granularity': 4096}


def test_absent_removes_and_refuses_busy():
    plan = plan_bitmaps([FakeDisk('vda', [info()]), FakeDisk('vdb')], 'b', 'absent')
    assert plan.actions == [('block-dirty-bitmap-remove', {'node': 'fmt-vda', 'name': 'b'})]
    assert plan.predicted_bitmaps() == []
    with pytest.raises(BitmapStateError) as err:
        plan_bitmaps([FakeDisk('vda', [info(busy=True)])], 'b', 'absent')
    assert 'busy' in err.value.msg


def test_cleared_only_when_dirty():
    assert not plan_bitmaps([FakeDisk('vda', [info(count=0)])], 'b', 'cleared').changed
    plan = plan_bitmaps([FakeDisk('vda', [info(count=65536)])], 'b', 'cleared')
    assert plan.actions == [('block-dirty-bitmap-clear', {'node': 'fmt-vda', 'name': 'b'})]
    assert plan.after['vda']['count'] == 0
    plan = plan_bitmaps([FakeDisk('vda')], 'b', 'cleared')
    assert plan.actions[0][0] == 'block-dirty-bitmap-add'


def test_enable_disable():
    plan = plan_bitmaps([FakeDisk('vda', [info(recording=False)])], 'b', 'present')
    assert plan.actions == [('block-dirty-bitmap-enable', {'node': 'fmt-vda', 'name': 'b'})]
    plan = plan_bitmaps([FakeDisk('vda', [info()])], 'b', 'present', enabled=False)
    assert plan.actions == [('block-dirty-bitmap-disable', {'node': 'fmt-vda', 'name': 'b'})]
    with pytest.raises(BitmapStateError):
        plan_bitmaps([FakeDisk('vda', [info(busy=True)])], 'b', 'present', enabled=False)


@pytest.mark.parametrize('existing, kwargs, words', [
    (info(inconsistent=True), {}, 'inconsistent'),
    (info(persistent=False), {}, 'not persistent, persistent was asked'),
    (info(granularity=65536), {'granularity': 512}, 'granularity is 65536, 512 was asked'),
])
def test_mismatch_needs_recreate(existing, kwargs, words):
    with pytest.raises(BitmapStateError) as err:
        plan_bitmaps([FakeDisk('vda', [existing])], 'b', 'present', **kwargs)
    assert words in err.value.msg and 'recreate: true' in err.value.msg
    plan = plan_bitmaps([FakeDisk('vda', [existing])], 'b', 'present', recreate=True, **kwargs)
    assert plan.removals == [('block-dirty-bitmap-remove', {'node': 'fmt-vda', 'name': 'b'})]
    assert plan.actions[0][0] == 'block-dirty-bitmap-add'
    assert plan.transactions() == [plan.removals, plan.actions]


@pytest.mark.parametrize('name, granularity, persistent, problem', [
    ('', None, True, 'empty'),
    ('x' * 1024, None, True, 'at most 1023 bytes'),
    ('x' * 1024, None, False, None),
    ('b', 1000, True, 'power of two'),
    ('b', 256, True, 'power of two'),
    ('b', 512, True, None),
])
def test_validate_bitmap_request(name, granularity, persistent, problem):
    found = validate_bitmap_request(name, granularity, persistent)
    if problem is None:
        assert found is None
    else:
        assert problem in found
