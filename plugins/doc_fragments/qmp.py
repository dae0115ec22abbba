# -*- coding: utf-8 -*-
# Copyright: (c) 2026, vmbackup.qemu developers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function
__metaclass__ = type


class ModuleDocFragment(object):

    # Options of every module that talks to a running VM over QMP.
    DOCUMENTATION = r'''
options:
  socket:
    description:
      - Path of the VM's QMP UNIX socket, as given to QEMU with C(-qmp unix:PATH,server=on,wait=off).
      - QEMU serves one client at a time per QMP socket. If another tool stays connected, give the VM
        a second C(-qmp) socket for backups.
      - Can be set once for every module that talks to a VM (those of the action group
        C(group/vmbackup.qemu.qmp)) with C(module_defaults).
    type: path
    required: true
  timeout:
    description:
      - Seconds to wait for QMP to connect and for QEMU to answer each command.
    type: float
    default: 10
  lock_timeout:
    description:
      - Seconds to wait for another run of this collection on the same QEMU process to end.
      - Only one run of C(vmbackup.qemu.qemu_blockdev_backup), C(vmbackup.qemu.qemu_bitmap) or
        C(vmbackup.qemu.qemu_fleece) works on one QEMU process at a time, whichever QMP socket, repository or
        playbook it comes through; check mode waits too. The lock is the QEMU process's, found through the socket, and a killed run never holds it.
      - When the time is up the module fails, naming the module, process and socket that hold the VM.
      - C(0) fails at once if the VM is busy.
    type: float
    default: 30
requirements:
  - Python 3.9 or newer on the hypervisor.
  - The C(qemu.qmp) Python package on the hypervisor.
  - A running QEMU 7.2 or newer with a QMP UNIX socket.
'''
