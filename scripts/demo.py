#!/usr/bin/env python
# -*- coding: utf-8 -*-
# Copyright: (c) 2026, vmbackup.qemu developers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

"""`make demo`: a throwaway VM, and what the collection does with it so far.

Starts a QEMU with two qcow2 disks (no guest OS: the "guest" writes through
its disks with qemu-io over the monitor), runs the collection's modules
through ansible as a user would, shows the results, and removes everything."""

from __future__ import absolute_import, division, print_function

import os
import shutil
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'tests', 'integration'))

from harness.ansible import AnsibleRunner  # noqa: E402 pylint: disable=wrong-import-position
from harness.qemu import DiskSpec, QemuInstall, TestVM  # noqa: E402 pylint: disable=wrong-import-position

MIB = 1024 * 1024


def step(text):
    print('\n==> ' + text, flush=True)


def show_bitmaps(result):
    for bitmap in result['bitmaps']:
        print('    %-4s bitmap %-6s on node %-8s dirty %5.1f MiB  recording=%s persistent=%s' % (
            bitmap['disk'], bitmap['name'], bitmap['node'], bitmap['count'] / float(MIB),
            bitmap['recording'], bitmap['persistent']))


def backups(vm, ansible, workdir):
    """Full, incremental, and both points restored and compared with the guest."""
    repo = os.path.join(workdir, 'backup')
    os.mkdir(repo, 0o700)
    args = {'socket': vm.socket, 'target_dir': repo, 'fleece_dir': workdir}
    vm.qmp('cont')
    points = []
    for label, writes in (('first', [('vda', 150 * MIB, 4 * MIB, 0xc1), ('vdb', 0, 2 * MIB, 0xc2)]),
                          ('second', [('vda', 0, MIB, 0xd1), ('vdb', 100 * MIB, MIB, 0xd2)])):
        step('The guest writes; ansible -m vmbackup.qemu.qemu_blockdev_backup -a "socket=... target_dir=%s"' % repo)
        for disk, offset, length, pattern in writes:
            vm.write(disk, offset, length, pattern)
        result = ansible.ok('qemu_blockdev_backup', args)
        print('    %s backup %s (%s); vCPUs paused %.1f ms' % (
            result['level'], result['backup_id'], result['reason'], 1000 * result['pause_seconds']))
        for item in result['disks']:
            print('    %-4s %6.1f MiB copied in %.2f s -> %s' % (
                item['disk'], item['bytes_written'] / float(MIB), item['duration'], os.path.relpath(item['file'], repo)))
        points.append((result, dict((d, vm.save_shadow(d, label)) for d in ('vda', 'vdb'))))

    for result, shadows in points:
        dest = os.path.join(workdir, 'restored-' + result['backup_id'])
        step('ansible -m vmbackup.qemu.qemu_backup_restore -a "target_dir=%s vm_name=demo backup_id=%s dest=%s"'
             % (repo, result['backup_id'], dest))
        restored = ansible.ok('qemu_backup_restore', {'target_dir': repo, 'vm_name': 'demo', 'format': 'raw',
                                                      'backup_id': result['backup_id'], 'dest': dest})
        for item in restored['disks']:
            identical, output = vm.qemu.compare(item['dest'], shadows[item['disk']], 'raw', 'raw')
            assert identical, output
            print('    %s %-4s from %d image(s): identical to what the guest had at that instant' % (
                result['level'], item['disk'], len(item['chain'])))
    step('ansible -m vmbackup.qemu.qemu_backup_info -a "target_dir=%s verify=true"' % repo)
    info = ansible.ok('qemu_backup_info', {'target_dir': repo, 'verify': True})
    print('    %d chain(s), newest restorable point %s, problems: %s' % (
        len(info['chains']), info['newest']['demo'], info['problems'] or 'none'))
    step('The repository')
    for root, _dirs, files in sorted(os.walk(repo)):
        for name in sorted(files):
            path = os.path.join(root, name)
            print('    %-70s %8d KiB' % (os.path.relpath(path, repo), os.stat(path).st_blocks // 2))


def main():
    qemu = QemuInstall()
    workdir = tempfile.mkdtemp(prefix='vb-demo-', dir='/tmp')
    vm = TestVM(qemu, workdir, [DiskSpec('vda', size=256 * MIB), DiskSpec('vdb', size=128 * MIB)],
                name='demo')
    ansible = AnsibleRunner(workdir, env=qemu.env())
    try:
        step('Starting a throwaway VM with %s: disks vda (256 MiB) and vdb (128 MiB), QMP at %s'
             % (qemu.version_string, vm.socket))
        vm.start()

        step('ansible localhost -m vmbackup.qemu.qemu_bitmap -a "socket=%s name=demo"' % vm.socket)
        result = ansible.ok('qemu_bitmap', {'socket': vm.socket, 'name': 'demo'})
        print('    changed=%s' % result['changed'])
        show_bitmaps(result)

        step('The guest writes 3 MiB to vda and 1 MiB to vdb')
        vm.write('vda', 0, 2 * MIB, 0xa1)
        vm.write('vda', 100 * MIB, 1 * MIB, 0xa2)
        vm.write('vdb', 64 * MIB, 1 * MIB, 0xb1)

        step('Same task again: nothing to change, and the bitmaps tracked every write')
        result = ansible.ok('qemu_bitmap', {'socket': vm.socket, 'name': 'demo'})
        print('    changed=%s' % result['changed'])
        show_bitmaps(result)
        counts = dict((b['disk'], b['count']) for b in result['bitmaps'])
        assert counts == {'vda': 3 * MIB, 'vdb': 1 * MIB}, counts

        step('QEMU shuts down cleanly and starts again: persistent bitmaps are kept in the images')
        vm.quit()
        vm.start()
        result = ansible.ok('qemu_bitmap', {'socket': vm.socket, 'name': 'demo'})
        show_bitmaps(result)
        assert dict((b['disk'], b['count']) for b in result['bitmaps']) == counts

        step('state=cleared: start tracking afresh (check mode first)')
        check = ansible.ok('qemu_bitmap', {'socket': vm.socket, 'name': 'demo', 'state': 'cleared'}, check=True)
        print('    check mode would change: %s' % ', '.join('%(disk)s %(change)s' % c for c in check['changes']))
        result = ansible.ok('qemu_bitmap', {'socket': vm.socket, 'name': 'demo', 'state': 'cleared'})
        show_bitmaps(result)

        step('Removing the bitmaps')
        result = ansible.ok('qemu_bitmap', {'socket': vm.socket, 'name': 'demo', 'state': 'absent'})
        print('    changed=%s, bitmaps left: %d' % (result['changed'], len(result['bitmaps'])))

        backups(vm, ansible, workdir)
        print('\nDemo finished: every step checked against what the guest wrote.')
        return 0
    finally:
        vm.kill()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == '__main__':
    sys.exit(main())
