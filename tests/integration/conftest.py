# -*- coding: utf-8 -*-
# Copyright: (c) 2026, vmbackup.qemu developers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

"""Fixtures of the real-QEMU test bed. Every VM a test starts is stopped and
every file removed when the test ends, passed or failed."""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import os
import shutil
import tempfile

import pytest

from harness import guest
from harness.ansible import AnsibleRunner
from harness.qemu import DiskSpec, QemuInstall, TestVM

MIB = 1024 * 1024


@pytest.fixture(scope='session')
def qemu():
    return QemuInstall()


def pytest_configure(config):
    config.addinivalue_line(
        'markers', 'ends_of_matrix: run on the oldest and the newest QEMU only (make integration-10.0 leaves '
        'it out): the test does not depend on the QEMU, or what it does depend on both ends cover')


def pytest_report_header(config):  # pylint: disable=unused-argument
    install = QemuInstall()
    return 'QEMU under test: %s (%s)' % (install.version_string, install.system)


@pytest.fixture
def workdir():
    # UNIX socket paths must stay under 108 bytes: keep the directory short.
    path = tempfile.mkdtemp(prefix='vb-', dir='/tmp')
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def make_vm(qemu, workdir):
    """Factory: make_vm(disks=[DiskSpec(...)], name=..., start=True)."""
    started = []

    def factory(disks=None, name='vm1', start=True, test_monitors=1, **guest_options):
        if disks is None:
            disks = [DiskSpec('vda'), DiskSpec('vdb')]
        vm = TestVM(qemu, workdir, disks, name=name, test_monitors=test_monitors, **guest_options)
        started.append(vm)
        if start:
            vm.start()
        return vm

    yield factory
    for vm in started:
        vm.kill()


@pytest.fixture
def vm(make_vm):
    """A running VM with two 64 MiB qcow2 virtio-blk disks, vda and vdb."""
    return make_vm()


@pytest.fixture
def repo(workdir):
    """An empty backup repository directory."""
    path = os.path.join(workdir, 'repo')
    os.mkdir(path)
    return path


@pytest.fixture
def ansible(workdir, qemu):
    return AnsibleRunner(workdir, env=qemu.env())


@pytest.fixture
def history(vm, ansible, workdir):
    """A repository with full, incremental, incremental, differential,
    incremental of vm; each with the guest's content at its instant:
    [(backup id, level, {disk: copy of the guest's disk})]."""
    repo = os.path.join(workdir, 'repo')
    os.mkdir(repo)
    points = []
    plan = [('auto', [('vda', 0, 4 * MIB, 0x11), ('vdb', 8 * MIB, 2 * MIB, 0x12)]),
            ('auto', [('vda', MIB, 65536, 0x13), ('vdb', 0, MIB, 0x14)]),
            ('auto', [('vda', 20 * MIB, MIB, 0x15)]),
            ('differential', [('vdb', 30 * MIB, MIB, 0x16)]),
            ('auto', [('vda', 0, 65536, 0x17)])]
    for index, (level, writes) in enumerate(plan):
        for disk, offset, length, pattern in writes:
            vm.write(disk, offset, length, pattern)
        vm.write_zeroes('vdb', 8 * MIB, 65536 * (index + 1))
        result = ansible.ok('qemu_blockdev_backup', {'socket': vm.socket, 'target_dir': repo,
                                                     'fleece_dir': workdir, 'level': level,
                                                     'digests': True})
        points.append((result['backup_id'], result['level'],
                       dict((d, vm.save_shadow(d, 'p%d' % index)) for d in ('vda', 'vdb'))))
    return repo, points


@pytest.fixture(scope='session')
def guest_image():
    """The real guest's kernel and initrd (harness/guest.py), built once and cached."""
    return guest.build()


@pytest.fixture
def make_guest_vm(make_vm, guest_image):
    """Factory: a running real guest with an ext4 data disk vda, its writer
    already at work; make_guest_vm(agent_running=False) starts no qemu-ga."""
    def factory(name='guest', agent_running=True, disks=None):
        vm = make_vm(disks=disks or [DiskSpec('vda', size=64 * 1024 * 1024, ext4=True)], name=name,
                     guest=guest_image, agent_running=agent_running)
        vm.qmp('cont')
        vm.wait_console(lambda line: line == 'guest: ready')
        vm.wait_console(lambda line: line == 'guest: wrote 50')
        return vm
    return factory
