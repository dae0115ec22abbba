# -*- coding: utf-8 -*-
# Copyright: (c) 2026, vmbackup.qemu developers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import pytest

from ansible_collections.vmbackup.qemu.plugins.module_utils.errors import DiskSelectionError
from ansible_collections.vmbackup.qemu.plugins.module_utils.vm import Disk, device_id_from_qdev


@pytest.mark.parametrize('qdev, expected', [
    ('/machine/peripheral/vda/virtio-backend', 'vda'),
    ('sda', 'sda'),
    ('/machine/peripheral-anon/device[0]/virtio-backend', None),
    ('/machine/unattached/device[18]', None),
    ('', None),
    (None, None),
])
def test_device_id_from_qdev(qdev, expected):
    assert device_id_from_qdev(qdev) == expected


def node(name, drv, bitmaps=(), fmt_specific=None):
    image = {'virtual-size': 1 << 26, 'cluster-size': 65536, 'filename': '/x/' + name}
    if fmt_specific:
        image['format-specific'] = fmt_specific
    return {'node-name': name, 'drv': drv, 'image': image, 'dirty-bitmaps': list(bitmaps)}


NODES = dict((n['node-name'], n) for n in [
    node('thr', 'throttle'),
    node('cbw', 'copy-before-write'),
    node('fmt', 'qcow2',
         [{'name': 'b', 'count': 4096, 'granularity': 65536, 'recording': True, 'busy': False,
           'persistent': True},
          # An anonymous successor bitmap: QEMU's own, not a user's.
          {'count': 0, 'granularity': 65536, 'recording': True, 'busy': False, 'persistent': False}],
         {'type': 'qcow2', 'data': {'compat': '1.1'}}),
    node('old', 'qcow2', fmt_specific={'type': 'qcow2', 'data': {'compat': '0.10'}}),
    node('rawfmt', 'raw'),
])
CHILDREN = {('thr', 'file'): 'cbw', ('cbw', 'file'): 'fmt'}


def disk(root, qdev='/machine/peripheral/vda/virtio-backend', device='', ro=False):
    info = {'device': device, 'qdev': qdev, 'removable': False,
            'inserted': {'node-name': root, 'ro': ro}}
    return Disk(info, NODES, lambda parent, role: CHILDREN.get((parent, role)))


def test_format_node_found_below_filters():
    d = disk('thr')
    assert d.node == 'fmt' and d.filters == ['thr', 'cbw']
    assert d.name == 'vda'
    assert [b.name for b in d.bitmaps] == ['b']
    assert d.bitmap('b').count == 4096 and d.bitmap('b').inconsistent is False
    assert d.unusable_reason(need_persistent_bitmaps=True) is None


def test_names_fall_back_to_drive_id_then_node():
    assert disk('fmt', qdev='/machine/peripheral-anon/device[0]/virtio-backend', device='drive0').name == 'drive0'
    anon = disk('fmt', qdev='/machine/peripheral-anon/device[0]/virtio-backend')
    assert anon.name == 'fmt' and anon.aliases == ['fmt']


def test_unusable_disks_say_why():
    assert 'raw' in disk('rawfmt').unusable_reason(need_persistent_bitmaps=True)
    assert disk('rawfmt').unusable_reason() is None
    assert 'compat=0.10' in disk('old').unusable_reason(need_persistent_bitmaps=True)
    assert 'read-only' in disk('fmt', ro=True).unusable_reason()
    empty = Disk({'device': '', 'qdev': 'cd0', 'removable': True}, NODES, None)
    assert empty.name == 'cd0' and 'no medium' in empty.unusable_reason()


class CannedVM(object):
    """select_disks over a fixed list of disks."""

    def __init__(self, disks):
        self._disks = disks

    def disks(self):
        return self._disks


def select(disks, *args, **kwargs):
    from ansible_collections.vmbackup.qemu.plugins.module_utils.vm import VM
    return VM.select_disks(CannedVM(disks), *args, **kwargs)


def test_select_every_disk_skips_and_reports():
    good = disk('fmt')
    raw = disk('rawfmt', qdev='/machine/peripheral/vdb/virtio-backend')
    selected, skipped = select([good, raw], need_persistent_bitmaps=True)
    assert selected == [good]
    assert skipped == [{'disk': 'vdb', 'reason': raw.unusable_reason(True)}]
    selected, skipped = select([good, raw], exclude=['vdb'])
    assert selected == [good] and skipped == [{'disk': 'vdb', 'reason': 'excluded'}]


def test_select_named_disks_is_strict():
    good = disk('fmt')
    raw = disk('rawfmt', qdev='/machine/peripheral/vdb/virtio-backend')
    assert select([good, raw], ['fmt', 'vda'])[0] == [good]   # two aliases, one disk
    with pytest.raises(DiskSelectionError) as info:
        select([good, raw], ['vdb'], need_persistent_bitmaps=True)
    assert 'vdb' in info.value.msg and 'raw' in info.value.msg
    with pytest.raises(DiskSelectionError) as info:
        select([good, raw], ['nosuch'])
    assert 'vda, vdb' in info.value.msg
