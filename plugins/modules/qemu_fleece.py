#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: (c) 2026, vmbackup.qemu developers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function
__metaclass__ = type

DOCUMENTATION = r'''
---
module: qemu_fleece
short_description: A frozen point-in-time view of a running QEMU VM's disks, exported over NBD for pull backups
version_added: 0.1.0
description:
  - Gives the disks of a running QEMU virtual machine a read-only view of their content at one instant, while the
    guest goes on writing (image fleecing, over QMP). Third-party tools read the view, for example a pull backup
    with C(qemu-img convert) from its NBD URI.
  - The view is taken as C(vmbackup.qemu.qemu_blockdev_backup) takes its own, with the same code - one instant for
    all disks; on QEMU 10.1 or newer a running VM with several disks is not even paused for it (RV(fleecing_route)).
    What the guest overwrites is first copied into a sparse fleece image per disk in O(fleece_dir); when that image
    fails or fills up, the view breaks, never the guest's writes - every later read of the view fails (with
    C(Permission denied) in QEMU, which NBD carries to its clients as C(Invalid argument)); remove the view and make
    a new one with more room.
  - With O(export=nbd), QEMU's built-in NBD server serves one read-only export per disk, named after the disk, on
    the UNIX socket O(nbd_socket). With O(bitmap), that dirty bitmap, frozen at the same instant, is offered on each
    export as C(qemu:dirty-bitmap:NAME), so that a client can read only what changed (an incremental pull).
  - The view stays until O(state=absent) removes it. It does not survive a restart of QEMU; the next run says so.
  - While a view exists, C(vmbackup.qemu.qemu_blockdev_backup) refuses to run on the VM.
  - Refused on QEMU before 8.0, whose point-in-time reads can return newer data to readers that read more than one
    cluster at a time (fixed upstream by commit a4d5224c2cb6).
extends_documentation_fragment:
  - vmbackup.qemu.qmp
  - vmbackup.qemu.attributes
  - vmbackup.qemu.attributes.ACTION_GROUP_QMP
author:
  - vmbackup.qemu developers (@vmbackup-qemu)
attributes:
  check_mode:
    support: full
    details: Predicts the view (its disks, nodes, files, exports and URIs) or what O(state=absent) would remove,
      after the same checks as the real run, and changes nothing.
  diff_mode:
    support: full
    details: The view before and after.
  idempotent:
    support: full
    details: O(state=present) with the same options, while the view exists, changes nothing and returns the same
      URIs; other options fail until the view is removed. O(state=absent) without a view changes nothing.
options:
  state:
    description:
      - V(present) makes sure the view exists, as asked.
      - V(absent) removes every export, node, job, bitmap copy and file of the view (and the NBD server, if the
        view started it), and puts the devices back; also after a O(state=present) that died half-way.
    type: str
    choices: [present, absent]
    default: present
  disks:
    description:
      - Disks to view, each named by the id of its guest device, the id of its C(-drive), or the node-name of its
        format node.
      - Default is every disk that can be viewed; disks without a medium, read-only ones and those without a guest
        device are left out and listed in RV(skipped_disks).
    type: list
    elements: str
  fleece_dir:
    description:
      - Directory for the fleece images, on fast local storage. They are sparse and grow by what the guest
        overwrites while the view exists. A relative path is taken from the module's working directory.
    type: path
    default: /var/tmp
  export:
    description:
      - V(nbd) exports each disk's view read-only over QEMU's NBD server on O(nbd_socket).
      - V(none) makes the view only (its C(snapshot_node)s can be read by tools that speak QMP).
    type: str
    choices: [none, nbd]
    default: none
  nbd_socket:
    description:
      - The UNIX socket of the NBD server, required with O(export=nbd). The module starts QEMU's NBD server there
        (mode 0600) unless this QEMU already listens on it; a server the module started is stopped by
        O(state=absent).
    type: path
  bitmap:
    description:
      - A dirty bitmap of the disks (see M(vmbackup.qemu.qemu_bitmap)) to offer on the exports as
        C(qemu:dirty-bitmap:NAME), as it was at the view's instant; writes after it do not show. The bitmap itself
        keeps recording.
    type: str
notes:
  - "A full pull: C(qemu-img convert -f raw -O qcow2 'nbd+unix:///vda?socket=/run/vm1-nbd.sock' vda.qcow2)."
  - "The extents of the bitmap: C(nbdinfo --map=qemu:dirty-bitmap:NAME 'nbd+unix:///vda?socket=...') (Debian's
    C(libnbd-bin)), or C(qemu-img map --output=json --image-opts
    driver=nbd,export=vda,server.type=unix,server.path=...,x-dirty-bitmap=qemu:dirty-bitmap:NAME), which reports the
    dirty extents as C(\"data\": false)."
seealso:
  - module: vmbackup.qemu.qemu_bitmap
  - module: vmbackup.qemu.qemu_blockdev_backup
'''

EXAMPLES = r'''
- name: A frozen view of web1's disks, exported over NBD with the changes since the last pull
  vmbackup.qemu.qemu_fleece:
    socket: /run/qemu/web1.qmp
    fleece_dir: /var/tmp
    export: nbd
    nbd_socket: /run/qemu/web1-nbd.sock
    bitmap: pull-since-last
  register: view

- name: Pull every disk in full
  ansible.builtin.command:
    argv: [qemu-img, convert, -O, qcow2, "{{ item.uri }}", "/backup/web1/{{ item.disk }}.qcow2"]
  loop: "{{ view.disks }}"
  changed_when: true

- name: Remove the view
  vmbackup.qemu.qemu_fleece:
    socket: /run/qemu/web1.qmp
    state: absent
'''

RETURN = r'''
disks:
  description: The view's disks (with O(state=present); in check mode, as they would be).
  returned: success
  type: list
  elements: dict
  contains:
    disk:
      description: The name of the viewed disk (see O(disks)).
      type: str
    snapshot_node:
      description: The read-only C(snapshot-access) node that holds the disk's view.
      type: str
    fleece_image:
      description: The disk's fleece image.
      type: str
    export:
      description: The NBD export name (the disk's name), or V(null) without O(export=nbd).
      type: str
    uri:
      description: The NBD URI of the export, like C(nbd+unix:///vda?socket=/run/x.sock), or V(null).
      type: str
    bitmap_context:
      description: The NBD metadata context of O(bitmap), like C(qemu:dirty-bitmap:NAME), or V(null).
      type: str
  sample:
    - {disk: vda, snapshot_node: vmb-view-snap0, fleece_image: /var/tmp/vmb-1a2b3c4d-view-0.fleece.raw,
       export: vda, uri: "nbd+unix:///vda?socket=/run/qemu/web1-nbd.sock",
       bitmap_context: "qemu:dirty-bitmap:pull-since-last"}
skipped_disks:
  description: Disks left out of the default selection, and why.
  returned: with O(state=present)
  type: list
  elements: dict
nbd_socket:
  description: The NBD server's socket, or V(null) without O(export=nbd).
  returned: with O(state=present)
  type: str
nbd_server_started:
  description: Whether the view started QEMU's NBD server (and O(state=absent) will stop it).
  returned: when a view exists after the run (not in check mode)
  type: bool
fleecing_route:
  description:
    - How the view took its instant, V(filter) or V(job); see RV(vmbackup.qemu.qemu_blockdev_backup#module:fleecing_route).
  returned: with O(state=present)
  type: str
pause_seconds:
  description: Seconds the vCPUs were stopped to give every disk the same instant.
  returned: when a view was made (not in check mode)
  type: float
cbw_timeout:
  description: Seconds a guest write may wait for the fleece image before the view breaks instead; V(null) on the
    V(job) route, which has no timeout.
  returned: when a view was made (not in check mode)
  type: int
removed:
  description: What the run removed (with O(state=absent), or a half-made view before making a new one); in check
    mode, what O(state=absent) would remove.
  returned: success
  type: list
  elements: str
lost_view:
  description: Set when an earlier view of this VM was lost because QEMU was restarted.
  returned: when that happened
  type: str
'''

from ansible_collections.vmbackup.qemu.plugins.module_utils.module import QMPModule
from ansible_collections.vmbackup.qemu.plugins.module_utils.paths import directory_problem, make_absolute
from ansible_collections.vmbackup.qemu.plugins.module_utils.view import PullView


def main():
    qmp_module = QMPModule(
        argument_spec=dict(
            state=dict(type='str', default='present', choices=['present', 'absent']),
            disks=dict(type='list', elements='str'),
            fleece_dir=dict(type='path', default='/var/tmp'),
            export=dict(type='str', default='none', choices=['none', 'nbd']),
            nbd_socket=dict(type='path'),
            bitmap=dict(type='str'),
        ),
        required_if=[('export', 'nbd', ('nbd_socket',))],
    )
    params = qmp_module.params
    problem = make_absolute(params, ('fleece_dir', 'nbd_socket'))
    if problem is None and params['export'] == 'nbd' and not params['nbd_socket']:
        problem = 'export=nbd needs nbd_socket: the path of the UNIX socket for QEMU\'s NBD server'
    if problem is None and params['state'] == 'present':
        problem = directory_problem('fleece_dir', params['fleece_dir'], 'create it on fast local storage')
    if problem is None and params['bitmap'] is not None and not params['bitmap'].strip():
        problem = 'bitmap must not be empty: name a dirty bitmap of the disks, or leave it out'
    if problem:
        qmp_module.fail(problem)

    def work(vm):
        view = PullView(vm, params, warn=qmp_module.module.warn, check_mode=qmp_module.check_mode)
        result = view.present() if params['state'] == 'present' else view.absent()
        if not qmp_module.module._diff:
            result.pop('diff', None)
        return result

    qmp_module.run(work)


if __name__ == '__main__':
    main()
