#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: (c) 2026, vmbackup.qemu developers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function
__metaclass__ = type

DOCUMENTATION = r'''
---
module: qemu_bitmap
short_description: Manage dirty bitmaps of a running QEMU VM's disks
version_added: 0.1.0
description:
  - Creates, removes and clears named dirty bitmaps on the disks of a running QEMU virtual machine, over QMP.
  - A dirty bitmap records which areas of a disk the guest wrote since the bitmap was created or cleared. It is what
    incremental backups are built on.
  - The bitmap is put on the disk's format node (for example the qcow2 node), below any filter such as a throttle
    node, so that it tracks every guest write and, when persistent, is stored in the image.
  - All changes, on every selected disk, are made in one QMP transaction, at one instant; if QEMU refuses one, none
    is made. Only O(recreate=true) needs two transactions. The old bitmaps are removed first, since QEMU cannot
    remove and add a bitmap of the same name in one transaction.
  - Idempotent. A second identical run reports no change.
  - Bitmaps that a running block job or an NBD export uses (C(busy)) are never changed; the module fails and says so.
author:
  - vmbackup.qemu developers (@vmbackup-qemu)
extends_documentation_fragment:
  - vmbackup.qemu.qmp
  - vmbackup.qemu.attributes
  - vmbackup.qemu.attributes.ACTION_GROUP_QMP
attributes:
  check_mode:
    support: full
  diff_mode:
    support: full
    details: The bitmaps before and after the change.
  idempotent:
    support: full
options:
  name:
    description:
      - Name of the bitmap.
      - Bitmap names are per disk; the same name is used on every selected disk.
    type: str
    required: true
  disks:
    description:
      - Disks to work on, each named by the id of its guest device (C(vda) for C(-device virtio-blk-pci,id=vda)),
        the id of its C(-drive), or the node-name of its format node.
      - Default is every disk of the VM. Disks that cannot take part (no medium, read-only such as CD-ROMs, or a
        format that cannot store a persistent bitmap when O(persistent=true)) are then left out and listed in
        RV(skipped_disks).
      - A disk named here that cannot take part is an error.
    type: list
    elements: str
  state:
    description:
      - V(present) makes sure the bitmap exists (and records writes, see O(enabled)).
      - V(absent) removes it.
      - V(cleared) makes sure it exists and is empty, so it records only writes from now on.
    type: str
    choices: [present, absent, cleared]
    default: present
  persistent:
    description:
      - Store the bitmap in the disk image so that it survives a clean shutdown and restart of QEMU.
      - Only qcow2 (version 3) images can store bitmaps.
      - If QEMU is killed, persistent bitmaps come back inconsistent and can only be removed (see O(recreate)).
    type: bool
    default: true
  granularity:
    description:
      - Bytes of disk that one bit of the bitmap covers. A power of two, at least 512.
      - Default is QEMU's choice for new bitmaps (the image's cluster size, within 4 KiB to 64 KiB), and any
        granularity for existing ones.
    type: int
  enabled:
    description:
      - Whether the bitmap records guest writes. A disabled bitmap keeps its content unchanged.
    type: bool
    default: true
  recreate:
    description:
      - What to do with an existing bitmap that does not match O(persistent) or O(granularity), or that is
        inconsistent because QEMU was killed.
      - V(false) fails and explains the mismatch.
      - V(true) removes it and creates a new, empty one in the same transaction. The writes the old bitmap tracked
        are forgotten, so the next backup relying on it must be a full one.
    type: bool
    default: false
notes:
  - Changing a bitmap that backups of this collection rely on breaks their chain; the next backup is then a full one.
seealso:
  - name: QEMU dirty bitmaps and incremental backup
    description: QEMU's documentation of dirty bitmaps.
    link: https://www.qemu.org/docs/master/interop/bitmaps.html
'''

EXAMPLES = r'''
- name: Track writes to every disk of web1
  vmbackup.qemu.qemu_bitmap:
    socket: /run/qemu/web1.qmp
    name: nightly

- name: Start tracking afresh on vda only
  vmbackup.qemu.qemu_bitmap:
    socket: /run/qemu/web1.qmp
    name: nightly
    disks: [vda]
    state: cleared

- name: Replace a bitmap left inconsistent by a killed QEMU
  vmbackup.qemu.qemu_bitmap:
    socket: /run/qemu/web1.qmp
    name: nightly
    recreate: true

- name: Remove the bitmap from every disk
  vmbackup.qemu.qemu_bitmap:
    socket: /run/qemu/web1.qmp
    name: nightly
    state: absent

- name: Set the socket once for every module of the collection
  module_defaults:
    group/vmbackup.qemu.qmp:
      socket: /run/qemu/web1.qmp
      timeout: 30
  block:
    - name: Transient bitmap with a 1 MiB granularity on a raw disk
      vmbackup.qemu.qemu_bitmap:
        name: scratch
        disks: [vdb]
        persistent: false
        granularity: 1048576
'''

RETURN = r'''
bitmaps:
  description:
    - The bitmap O(name) on each selected disk after the run (in check mode, as it would be).
    - Empty for O(state=absent).
  returned: success
  type: list
  elements: dict
  contains:
    disk:
      description: The disk's name.
      type: str
      sample: vda
    node:
      description: The block node that holds the bitmap (the disk's format node).
      type: str
      sample: '#block123'
    name:
      description: The bitmap's name.
      type: str
      sample: nightly
    count:
      description: Bytes of the disk marked dirty.
      type: int
      sample: 65536
    granularity:
      description: Bytes covered by one bit. Null in check mode for a bitmap not created yet without O(granularity).
      type: int
      sample: 65536
    recording:
      description: Whether the bitmap records writes.
      type: bool
      sample: true
    persistent:
      description: Whether the bitmap is stored in the image.
      type: bool
      sample: true
    busy:
      description: Whether a block job or an export uses the bitmap.
      type: bool
      sample: false
    inconsistent:
      description: Whether the bitmap was not saved properly (QEMU killed) and can only be removed.
      type: bool
      sample: false
changes:
  description: What changed (or would change in check mode), one item per change.
  returned: success
  type: list
  elements: dict
  sample: [{disk: vda, change: added}, {disk: vdb, change: cleared}]
skipped_disks:
  description: Disks left out of a selection of every disk, and why.
  returned: success
  type: list
  elements: dict
  sample: [{disk: cd0, reason: 'no medium inserted'}]
'''

from ansible_collections.vmbackup.qemu.plugins.module_utils.bitmaps import (
    plan_bitmaps,
    validate_bitmap_request,
)
from ansible_collections.vmbackup.qemu.plugins.module_utils.module import QMPModule


def main():
    qmp_module = QMPModule(
        argument_spec=dict(
            name=dict(type='str', required=True),
            disks=dict(type='list', elements='str'),
            state=dict(type='str', default='present', choices=['present', 'absent', 'cleared']),
            persistent=dict(type='bool', default=True),
            granularity=dict(type='int'),
            enabled=dict(type='bool', default=True),
            recreate=dict(type='bool', default=False),
        ),
    )
    p = qmp_module.params
    problem = validate_bitmap_request(p['name'], p['granularity'], p['persistent'])
    if problem:
        qmp_module.fail(problem)

    def work(vm):
        # Removing needs no particular format: a transient bitmap may sit on any disk.
        need_persistent = p['persistent'] and p['state'] != 'absent'
        disks, skipped = vm.select_disks(p['disks'], need_persistent_bitmaps=need_persistent)
        plan = plan_bitmaps(disks, p['name'], p['state'], persistent=p['persistent'],
                            granularity=p['granularity'], enabled=p['enabled'],
                            recreate=p['recreate'])
        if plan.changed:
            vm.features.require('bitmap_transactions', 'changing dirty bitmaps in one transaction')
        if plan.changed and not qmp_module.check_mode:
            for actions in plan.transactions():
                vm.qmp.transaction(actions)
            # Report what QEMU now has, not what we expected.
            by_name = dict((d.name, d) for d in vm.disks())
            for disk in disks:
                bitmap = by_name[disk.name].bitmap(p['name']) if disk.name in by_name else None
                plan.after[disk.name] = bitmap.as_dict() if bitmap else None
        result = dict(changed=plan.changed, bitmaps=plan.predicted_bitmaps(),
                      changes=plan.changes, skipped_disks=skipped)
        if qmp_module.module._diff:
            result['diff'] = plan.diff()
        return result

    qmp_module.run(work)


if __name__ == '__main__':
    main()
