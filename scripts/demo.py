#!/usr/bin/env python
# -*- coding: utf-8 -*-
# Copyright: (c) 2026, vmbackup.qemu developers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

"""`make demo`: the backup role on a throwaway VM, as a fleet runs it.

Starts a running QEMU with two qcow2 disks (no guest OS: the "guest" writes
through its disks with qemu-io over a second monitor), runs the backup role
three times (full, incremental, incremental) with guest writes before each,
restores the newest and the first point with the restore role, checks both
against what the guest had written at those instants, prints the summary and
the repository, and removes everything."""

from __future__ import absolute_import, division, print_function

import os
import shutil
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'tests', 'integration'))

from harness.ansible import AnsibleRunner  # noqa: E402 pylint: disable=wrong-import-position
from harness.qemu import DiskSpec, QemuInstall, TestVM  # noqa: E402 pylint: disable=wrong-import-position

MIB = 1024 * 1024
PLAY = '''
- name: Demo
  hosts: localhost
  gather_facts: false
  roles:
    - role: vmbackup.qemu.%s
'''


def step(text):
    print('\n==> ' + text, flush=True)


def run_role(ansible, role, variables):
    code, output, stats = ansible.playbook(PLAY % role, variables)
    if code != 0:
        print(output)
        raise SystemExit('the %s role failed' % role)
    return stats


def main():
    qemu = QemuInstall()
    workdir = tempfile.mkdtemp(prefix='vb-demo-', dir='/var/tmp')
    vm = TestVM(qemu, workdir, [DiskSpec('vda', size=256 * MIB), DiskSpec('vdb', size=128 * MIB)], name='demo')
    ansible = AnsibleRunner(workdir, env=qemu.env())
    repo = os.path.join(workdir, 'backup')
    os.mkdir(repo, 0o700)
    backup_vars = {'qemu_backup_target_dir': repo, 'qemu_backup_fleece_dir': workdir, 'qemu_backup_poll_interval': 1,
                   'qemu_backup_vms': [{'name': 'demo', 'socket': vm.socket}], 'qemu_backup_verify': True}
    try:
        step('A throwaway VM (%s), running, disks vda (256 MiB) and vdb (128 MiB), QMP at %s'
             % (qemu.version_string, vm.socket))
        vm.start()
        vm.qmp('cont')
        writes = [[('vda', 0, 8 * MIB, 0xa1), ('vda', 200 * MIB, 4 * MIB, 0xa2), ('vdb', 0, 16 * MIB, 0xa3)],
                  [('vda', 4 * MIB, MIB, 0xb1), ('vdb', 64 * MIB, 2 * MIB, 0xb2)],
                  [('vda', 0, 65536, 0xc1), ('vdb', 8 * MIB, MIB, 0xc2)]]
        points = []
        for number, batch in enumerate(writes, 1):
            step('The guest writes %.1f MiB; ansible-playbook with role vmbackup.qemu.backup (run %d of 3)'
                 % (sum(w[2] for w in batch) / float(MIB), number))
            for disk, offset, length, pattern in batch:
                vm.write(disk, offset, length, pattern)
            stats = run_role(ansible, 'backup', backup_vars)
            summary = stats['qemu_backup']['localhost'][0]
            print('    %s backup %s: %.1f MiB copied in %.2f s, chain %s' % (
                summary['level'], summary['backup_id'], summary['bytes'] / float(MIB), summary['duration'],
                summary['chain']))
            print('    why: %s' % summary['reason'])
            points.append((summary['backup_id'], summary['level'],
                           dict((disk, vm.save_shadow(disk, 'point%d' % number)) for disk in ('vda', 'vdb'))))

        for label, (backup_id, level, shadows) in (('newest', points[-1]), ('first', points[0])):
            dest = os.path.join(workdir, 'restored-' + label)
            step('Role vmbackup.qemu.restore: the %s point (%s, %s) into %s' % (label, level, backup_id, dest))
            run_role(ansible, 'restore', {'qemu_restore_target_dir': repo, 'qemu_restore_vm': 'demo',
                                          'qemu_restore_backup_id': backup_id if label == 'first' else '',
                                          'qemu_restore_dest': dest})
            for disk in ('vda', 'vdb'):
                image = os.path.join(dest, disk + '.qcow2')
                identical, output = qemu.compare(image, shadows[disk], 'qcow2', 'raw')
                assert identical, output
                print('    %s: identical to what the guest had written at that instant' % disk)

        step('The repository')
        for root, _dirs, files in sorted(os.walk(repo)):
            for name in sorted(files):
                path = os.path.join(root, name)
                print('    %-64s %8d KiB on disk' % (os.path.relpath(path, repo), os.stat(path).st_blocks // 2))
        print('\nDemo finished: three backups by the role, two points restored and verified.')
        return 0
    finally:
        vm.kill()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == '__main__':
    sys.exit(main())
