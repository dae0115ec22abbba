#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: (c) 2026, vmbackup.qemu developers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function
__metaclass__ = type

DOCUMENTATION = r'''
---
module: qemu_backup_restore
short_description: Restore a VM's disks from a vmbackup.qemu repository at a point in time
version_added: 0.1.0
description:
  - Writes the content a disk had at a backup's instant into a new image, reading the backup's chain (its full backup
    and the incrementals or differential it builds on).
  - Never modifies the repository.
  - Every image of the chain is checked (C(qemu-img check)) before anything is written; a missing or damaged one is
    refused and named.
  - Every image of the chain whose backup recorded a digest (see
    O(vmbackup.qemu.qemu_blockdev_backup#module:digests)) is read whole and its SHA-256 compared with the recorded
    one before anything is written; a file whose bytes differ (bit rot) is refused and named, unless O(force). Images
    of backups without a digest are not compared.
  - The new image is written beside O(dest) under a temporary name, flushed to disk and renamed into place when
    complete (the rename made durable too), so O(dest) is never half-written, not even after a host crash; a failure
    (a full filesystem, a damaged chain) leaves nothing behind.
  - An encrypted backup (made with O(vmbackup.qemu.qemu_blockdev_backup#module:encryption_key_file) or
    O(vmbackup.qemu.qemu_blockdev_backup#module:encryption_passphrase)) is read with its key, given by
    O(encryption_key_file) or O(encryption_passphrase); the restored images are not encrypted (they are created
    readable by their owner only) unless O(encrypt) asks for it. Without the key, or with another one, the restore
    is refused before anything is read, and the message says which.
  - With O(encrypt=true), the restored qcow2 images are LUKS-encrypted with the key given (the chain's key for an
    encrypted chain), written so by C(qemu-img) itself, so that a restore kept on shared storage stays encrypted at
    rest. Open them with that key (QEMU's C(encrypt.key-secret)).
  - Idempotent. A O(dest) that already holds exactly that point, in that format, is left alone.
  - Runs where the repository is mounted; it does not talk to QEMU. To put a restored disk back into a VM, stop the VM
    (or unplug the disk) and point it at the restored image.
author:
  - vmbackup.qemu developers (@vmbackup-qemu)
extends_documentation_fragment:
  - vmbackup.qemu.encryption
  - vmbackup.qemu.attributes
attributes:
  check_mode:
    support: full
    details: Reports which images it would write, after the same checks of the chain and of O(dest); writes nothing.
  diff_mode:
    support: none
  idempotent:
    support: full
    details: An image that already holds exactly that point of that disk is left alone.
options:
  target_dir:
    description:
      - The repository root, as given to M(vmbackup.qemu.qemu_blockdev_backup).
      - A relative path is taken from the module's working directory.
    type: path
    required: true
  vm_name:
    description:
      - The VM's name in the repository.
      - Letters, digits, dots, dashes and underscores, not starting with a dot. An empty string is refused.
    type: str
    required: true
  disk:
    description:
      - The disk to restore. O(dest) is then the image file to write.
      - Default is every disk of the backup; O(dest) is then a directory (created if missing) that gets one image per
        disk, named C(DISK.qcow2) or C(DISK.raw).
      - An empty string is refused (leave the option out for every disk).
      - Mutually exclusive with O(disks).
    type: str
  disks:
    description:
      - Restore only these disks, each into O(dest) (a directory) as C(DISK.qcow2) or C(DISK.raw).
      - An empty list, like leaving the option out, restores every disk of the backup.
      - A disk the backup does not hold is refused before anything is written.
    type: list
    elements: str
  backup_id:
    description: The backup to restore. Default is the newest complete backup of the VM.
    type: str
  dest:
    description:
      - The image file to write (with O(disk)), or else the directory that gets the disks' images.
      - Must lie outside O(target_dir), symlinks followed; a O(dest) inside the repository (equal to it, in a chain
        directory, or reached through a symlink) is refused before anything is written.
      - A relative path is taken from the module's working directory.
    type: path
    required: true
  format:
    description: Format of the restored image. Both are sparse where the data is zero.
    type: str
    choices: [qcow2, raw]
    default: qcow2
  force:
    description:
      - Replace an existing O(dest) image that does not hold exactly this point.
      - Also restore through an image of the chain whose bytes differ from the digest recorded when it was written,
        with a warning naming it. The restored disk is then likely wrong where that image's data was damaged.
    type: bool
    default: false
  encrypt:
    description:
      - Encrypt the restored images (LUKS in qcow2, like the backups) with the key given by O(encryption_key_file) or
        O(encryption_passphrase); needs O(format=qcow2) and a key.
      - An existing O(dest) that holds this point but is not encrypted (or is, with another key) does not count as
        restored; O(force) replaces it.
    type: bool
    default: false
  verify:
    description: Compare the restored image with the backup chain it came from before putting it in place.
    type: bool
    default: true
requirements:
  - C(qemu-img) from QEMU's tools.
seealso:
  - module: vmbackup.qemu.qemu_backup_info
  - module: vmbackup.qemu.qemu_blockdev_backup
'''

EXAMPLES = r'''
- name: Restore vda of web1 as it was at its newest backup
  vmbackup.qemu.qemu_backup_restore:
    target_dir: /backup
    vm_name: web1
    disk: vda
    dest: /var/lib/vms/web1-vda-restored.qcow2

- name: Restore every disk of a given backup as raw images into a directory
  vmbackup.qemu.qemu_backup_restore:
    target_dir: /backup
    vm_name: web1
    backup_id: 20261122T010203Z-3f9a
    dest: /var/lib/vms/web1-restore
    format: raw

- name: Restore vda of an encrypted backup
  vmbackup.qemu.qemu_backup_restore:
    target_dir: /backup
    vm_name: web1
    disk: vda
    dest: /var/lib/vms/web1-vda-restored.qcow2
    encryption_key_file: /etc/vmbackup/key
'''

RETURN = r'''
backup_id:
  description: The backup restored.
  returned: success
  type: str
  sample: 20261122T010203Z-3f9a
level:
  description: Its level.
  returned: success
  type: str
  sample: incremental
dest:
  description: O(dest), made absolute.
  returned: success
  type: str
format:
  description: Format of the restored images.
  returned: success
  type: str
chain:
  description: With O(disk), the images read, full backup first.
  returned: success
  type: list
  elements: str
verified:
  description: Whether the restored images were compared with the backup chain.
  returned: success
  type: bool
encrypted:
  description: Whether the backup restored is encrypted.
  returned: success
  type: bool
dest_encrypted:
  description: Whether the restored images are encrypted (O(encrypt)).
  returned: success
  type: bool
disks:
  description: One item per disk restored (or found already restored).
  returned: success
  type: list
  elements: dict
  contains:
    disk:
      description: The disk.
      type: str
    dest:
      description: The image written.
      type: str
    chain:
      description: The images read, full backup first.
      type: list
      elements: str
    changed:
      description: Whether this image was (or in check mode, would be) written.
      type: bool
    virtual_size:
      description: The disk's size in bytes.
      type: int
'''

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.vmbackup.qemu.plugins.module_utils.encryption import KEY_ARGUMENT_SPEC, KEY_MUTUALLY_EXCLUSIVE
from ansible_collections.vmbackup.qemu.plugins.module_utils.module import run_guarded
from ansible_collections.vmbackup.qemu.plugins.module_utils.paths import make_absolute, vm_name_problem
from ansible_collections.vmbackup.qemu.plugins.module_utils.restore import restore


def main():
    module = AnsibleModule(
        argument_spec=dict(
            target_dir=dict(type='path', required=True),
            vm_name=dict(type='str', required=True),
            disk=dict(type='str'),
            disks=dict(type='list', elements='str'),
            backup_id=dict(type='str'),
            dest=dict(type='path', required=True),
            format=dict(type='str', default='qcow2', choices=['qcow2', 'raw']),
            force=dict(type='bool', default=False),
            verify=dict(type='bool', default=True),
            encrypt=dict(type='bool', default=False),
            **KEY_ARGUMENT_SPEC
        ),
        mutually_exclusive=[('disk', 'disks')] + KEY_MUTUALLY_EXCLUSIVE,
        supports_check_mode=True,
    )
    problem = (make_absolute(module.params, ('target_dir', 'dest', 'encryption_key_file'))
               or vm_name_problem(module.params['vm_name'], required=True))
    if '' in (module.params['disks'] or []):
        problem = 'disks must not hold an empty string: name each disk, or leave disks out to restore every disk'
    if module.params['disk'] == '':
        problem = ('disk must not be empty (an empty string is not unset): name a disk, or leave disk out to '
                   'restore every disk')
    if problem:
        module.fail_json(msg=problem)
    run_guarded(module, lambda: restore(module.params, module.check_mode, module.warn))


if __name__ == '__main__':
    main()
