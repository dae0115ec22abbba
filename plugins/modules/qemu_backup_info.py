#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: (c) 2026, vmbackup.qemu developers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function
__metaclass__ = type

DOCUMENTATION = r'''
---
module: qemu_backup_info
short_description: List and verify what a vmbackup.qemu repository holds
version_added: 0.1.0
description:
  - Lists the VMs of a repository, their chains and backups (id, level, time, disks, files, sizes) and the newest
    restorable point of each VM.
  - With O(verify=true), checks every image (C(qemu-img check)) and every chain (each backing file present and the one
    its manifest names, manifests consistent, no orphan or incomplete files). Findings are listed in RV(problems), not
    raised, so that a play can report them; the module fails only on bad input.
  - With O(verify=true), also reads every image whole and compares its SHA-256 with the digest its backup recorded
    (O(vmbackup.qemu.qemu_blockdev_backup#module:digests)), so that a changed byte anywhere in the file (bit rot,
    which C(qemu-img check) cannot see inside a data cluster) is found. A file that differs is named as an error with
    the backups that read it, which are then not restorable. Backups without a digest (taken before digests existed,
    or with digests off) are reported as unverifiable (a warning), not as broken.
  - Takes no lock and can run while a backup writes into the repository. The running backup's unfinished images are
    reported as orphan files (warnings) and its backup is not listed until it is complete.
  - Encrypted backups are listed and verified without their key. C(qemu-img check) cannot open an encrypted image
    without it, so their images are checked by what C(qemu-img info) reads without the key (the qcow2 header, the
    LUKS header, the backing file, the size); each must be encrypted exactly when its manifest says so.
  - Never modifies the repository.
author:
  - vmbackup.qemu developers (@vmbackup-qemu)
extends_documentation_fragment:
  - vmbackup.qemu.attributes
  - vmbackup.qemu.attributes.READ_ONLY
options:
  target_dir:
    description:
      - The repository root. A relative path is taken from the module's working directory.
    type: path
    required: true
  vm_name:
    description:
      - Only this VM. Default is every VM of the repository.
      - Letters, digits, dots, dashes and underscores, not starting with a dot. An empty string is refused (leave the
        option out to list every VM).
    type: str
  verify:
    description: Check every image and every chain.
    type: bool
    default: false
requirements:
  - C(qemu-img) from QEMU's tools, for O(verify=true).
seealso:
  - module: vmbackup.qemu.qemu_backup_restore
'''

EXAMPLES = r'''
- name: What does the repository hold?
  vmbackup.qemu.qemu_backup_info:
    target_dir: /backup
  register: repo

- name: Verify web1's backups and fail the play on any problem
  vmbackup.qemu.qemu_backup_info:
    target_dir: /backup
    vm_name: web1
    verify: true
  register: check
  failed_when: check.problems | selectattr('severity', 'equalto', 'error') | list | length > 0
'''

RETURN = r'''
vms:
  description: The VMs listed.
  returned: success
  type: list
  elements: str
  sample: [web1, db1]
chains:
  description: Every chain of the VMs listed, oldest first.
  returned: success
  type: list
  elements: dict
  contains:
    vm:
      description: The VM.
      type: str
    id:
      description: The chain's id (the id of its full backup).
      type: str
    backups:
      description:
        - Its backups, oldest first, each with C(id), C(level), C(time), C(parent), C(encrypted), C(restorable) and
          C(content) (with O(verify=true)) and C(disks) (C(disk), C(file), C(size) in bytes on disk, C(virtual_size)).
        - C(content) says whether every image a restore of the backup reads matches its recorded digest. V(verified)
          all do; V(damaged) one differs (the backup is not restorable); V(unverifiable) one has no digest (a backup
          from before digests, or taken with digests off) or the chain cannot be followed.
      type: list
      elements: dict
newest:
  description: Per VM, the id of the newest backup (with O(verify=true), the newest restorable one).
  returned: success
  type: dict
  sample: {web1: 20261122T010203Z-3f9a}
problems:
  description:
    - With O(verify=true), every finding, each with C(vm), C(chain), C(backup), C(disk), C(file), C(severity)
      (C(error) or C(warning)) and C(problem) in words. Empty when all is well.
    - Among the errors, C(content differs from its digest) names an image whose bytes changed since its backup, with
      the ids of the backups that read it. Among the warnings, C(no digest recorded) names an image whose content
      cannot be verified.
  returned: success
  type: list
  elements: dict
verified:
  description: Whether the images and chains were checked.
  returned: success
  type: bool
'''

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.vmbackup.qemu.plugins.module_utils.catalog import inspect
from ansible_collections.vmbackup.qemu.plugins.module_utils.module import run_guarded
from ansible_collections.vmbackup.qemu.plugins.module_utils.paths import make_absolute, vm_name_problem


def main():
    module = AnsibleModule(
        argument_spec=dict(
            target_dir=dict(type='path', required=True),
            vm_name=dict(type='str'),
            verify=dict(type='bool', default=False),
        ),
        supports_check_mode=True,
    )
    problem = make_absolute(module.params, ('target_dir',))
    if not problem and module.params['vm_name'] is not None:
        problem = vm_name_problem(module.params['vm_name'])
    if problem:
        module.fail_json(msg=problem)
    params = module.params
    run_guarded(module, lambda: inspect(params['target_dir'], params['vm_name'], params['verify']))


if __name__ == '__main__':
    main()
