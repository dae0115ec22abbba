# -*- coding: utf-8 -*-
# Copyright: (c) 2026, vmbackup.qemu developers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

"""qemu_img runs qemu-img through the bound module's get_bin_path and
run_command, with the umask given (never the process's own)."""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import os

import pytest

from ansible_collections.vmbackup.qemu.plugins.module_utils import qemu_img
from ansible_collections.vmbackup.qemu.plugins.module_utils.errors import QemuImgError


class FakeModule(object):
    def __init__(self, path='/opt/qemu/bin/qemu-img', answer=(0, '', '')):
        self.path = path
        self.answer = answer
        self.calls = []

    def get_bin_path(self, name):
        return self.path if name == 'qemu-img' else None

    def run_command(self, args, umask=None):
        self.calls.append((args, umask))
        return self.answer


def test_create_runs_the_binary_found_with_a_private_umask(tmp_path):
    module = FakeModule()
    qemu_img.bind(module)
    before = os.umask(0o022)
    os.umask(before)
    qemu_img.create_qcow2(str(tmp_path / 'a.qcow2'), 1024, backing='parent.qcow2')
    args, umask = module.calls[0]
    assert args == ['/opt/qemu/bin/qemu-img', 'create', '-q', '-f', 'qcow2', '-o', 'cluster_size=65536',
                    '-b', 'parent.qcow2', '-F', 'qcow2', '-u', str(tmp_path / 'a.qcow2'), '1024']
    assert umask == 0o077
    assert os.umask(before) == before     # the process's umask was never touched


def test_a_missing_binary_names_the_package():
    qemu_img.bind(FakeModule(path=None))
    with pytest.raises(QemuImgError) as info:
        qemu_img.info('/x.qcow2')
    assert 'qemu-utils' in info.value.msg


def test_a_failure_reports_stderr_and_check_keeps_its_code():
    qemu_img.bind(FakeModule(answer=(1, '', 'Could not open /x: No such file')))
    with pytest.raises(QemuImgError) as info:
        qemu_img.info('/x')
    assert info.value.msg == 'qemu-img info failed: Could not open /x: No such file'
    qemu_img.bind(FakeModule(answer=(3, '5 leaked clusters were found', '')))
    assert qemu_img.check('/x') == (3, '5 leaked clusters were found')


def test_info_parses_stdout_only():
    qemu_img.bind(FakeModule(answer=(0, '{"virtual-size": 4096}', 'a warning on stderr')))
    assert qemu_img.info('/x') == {'virtual-size': 4096}
