# -*- coding: utf-8 -*-
# Copyright: (c) 2026, vmbackup.qemu developers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import os

import pytest

from ansible_collections.vmbackup.qemu.plugins.module_utils.errors import RestoreError
from ansible_collections.vmbackup.qemu.plugins.module_utils.restore import restore_plan


class Backup(object):
    id = 'b1'
    disks = {'vda': {}, 'vdb': {}, 'vdc': {}}


def params(dest, **kwargs):
    return dict(dest=str(dest), format=kwargs.pop('format', 'qcow2'), **kwargs)


def test_every_disk_into_the_directory(tmp_path):
    assert restore_plan(params(tmp_path), Backup()) == [
        (disk, os.path.join(str(tmp_path), disk + '.qcow2')) for disk in ('vda', 'vdb', 'vdc')]
    assert restore_plan(params(tmp_path, disks=[]), Backup()) == restore_plan(params(tmp_path), Backup())


def test_chosen_disks_into_the_directory_in_the_order_given(tmp_path):
    assert restore_plan(params(tmp_path, disks=['vdc', 'vda'], format='raw'), Backup()) == [
        ('vdc', os.path.join(str(tmp_path), 'vdc.raw')), ('vda', os.path.join(str(tmp_path), 'vda.raw'))]


def test_one_disk_into_a_file(tmp_path):
    dest = tmp_path / 'root.img'
    assert restore_plan(params(dest, disk='vdb'), Backup()) == [('vdb', str(dest))]


@pytest.mark.parametrize('extra, message', [
    ({'disks': ['vda', 'nope']}, 'backup b1 has no disk nope; its disks are: vda, vdb, vdc'),
    ({'disk': 'nope'}, 'backup b1 has no disk nope'),
])
def test_a_disk_the_backup_lacks_is_refused_naming_the_disks_it_has(tmp_path, extra, message):
    with pytest.raises(RestoreError) as info:
        restore_plan(params(tmp_path / 'x', **extra), Backup())
    assert message in info.value.msg


def test_dest_of_the_wrong_kind_is_refused(tmp_path):
    image = tmp_path / 'image'
    image.write_text(u'')
    with pytest.raises(RestoreError, match='is a file'):
        restore_plan(params(image, disks=['vda']), Backup())
    with pytest.raises(RestoreError, match='is a directory'):
        restore_plan(params(tmp_path, disk='vda'), Backup())
