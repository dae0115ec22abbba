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
        print('\nDemo finished: every step checked against what the guest wrote.')
        return 0
    finally:
        vm.kill()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == '__main__':
    sys.exit(main())
