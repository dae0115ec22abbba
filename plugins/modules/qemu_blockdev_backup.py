#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: (c) 2026, vmbackup.qemu developers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function
__metaclass__ = type

DOCUMENTATION = r'''
---
module: qemu_blockdev_backup
short_description: Push backups of a running QEMU VM into a repository
version_added: 0.1.0
description:
  - Backs up the disks of a running QEMU virtual machine, over QMP, into a repository directory. QEMU copies the data
    itself (C(blockdev-backup)); nothing passes through Ansible.
  - Full, incremental (changes since the last backup) and differential (changes since the chain's full) backups form
    chains of qcow2 images. An incremental's backing file is its predecessor, by a relative path, so C(qemu-img) reads
    any point directly and the repository can be moved.
  - All disks of the VM are backed up at one instant, even while the guest writes to several of them.
  - Every guest write lands in exactly the first backup taken after it. A backup that fails, or a run that is killed,
    loses nothing; the next run cleans what a killed run left behind in QEMU and in the repository.
  - With fleecing (the default where QEMU supports it), the guest never waits for the backup target. Its writes only
    wait for old data to be copied into a fleece image on fast local storage (O(fleece_dir)). If that fails or fills
    up, the backup fails and the guest's writes go on.
  - Dirty bitmaps are kept per repository, so backups of one VM into two repositories never take each other's
    changes.
  - With O(encryption_key_file) or O(encryption_passphrase), every image is a LUKS-encrypted qcow2. An encrypted
    backup does not join an unencrypted chain or one with another key (nor the reverse). O(level=auto) then starts a
    new chain and says why; O(level=incremental) and O(level=differential) fail before anything changes.
  - Refused, before anything changes, while a point-in-time view of the VM made by M(vmbackup.qemu.qemu_fleece)
    exists (remove it with O(vmbackup.qemu.qemu_fleece#module:state=absent) first).
author:
  - vmbackup.qemu developers (@vmbackup-qemu)
extends_documentation_fragment:
  - vmbackup.qemu.qmp
  - vmbackup.qemu.encryption
  - vmbackup.qemu.attributes
  - vmbackup.qemu.attributes.ACTION_GROUP_QMP
attributes:
  check_mode:
    support: full
    details: Reports the level it would take and the bytes it would copy (from the dirty bitmaps), after the same
      checks of options, features and repository as the real run; writes nothing.
  diff_mode:
    support: none
  idempotent:
    support: none
    details: Each run takes a new backup (that is its purpose); O(keep_chains) retention converges.
options:
  target_dir:
    description:
      - The repository root. Each VM gets a directory below it.
      - Must exist and be a directory; it is not created, so that a missing mount is noticed and not filled on the
        local disk.
      - A relative path is taken from the module's working directory (it is made absolute before QEMU sees it).
    type: path
    required: true
  vm_name:
    description:
      - Name of the VM's directory in the repository.
      - Letters, digits, dots, dashes and underscores, not starting with a dot. An empty string is refused; leave the
        option out for the default.
      - Default is the VM's QEMU C(-name), which must follow the same rule.
    type: str
  level:
    description:
      - V(full) starts a new chain.
      - V(incremental) copies what changed since the chain's last backup.
      - V(differential) copies what changed since the chain's full backup.
      - V(copy) is a full backup outside the chains. It starts no chain and does not affect the next incremental.
      - V(auto) takes an incremental when the chain can be trusted, else a full, and says why in RV(reason).
      - An explicit V(incremental) or V(differential) whose chain cannot be trusted (dirty bitmap missing or
        inconsistent, disk resized, disks changed, chain files missing) fails and says that a full backup is needed.
    type: str
    choices: [full, incremental, differential, copy, auto]
    default: auto
  full_every:
    description:
      - With O(level=auto), start a new chain (a full backup) once the current chain holds this many backups.
      - V(0) never forces a full for this reason.
    type: int
    default: 0
  keep_chains:
    description:
      - After a successful backup, remove the oldest chains so that this many chains with a full backup remain.
        Whole chains only, never the chain just written to and never the middle of a chain. Copies
        (O(level=copy)) are not counted and not removed.
      - V(0) keeps every chain.
    type: int
    default: 0
  disks:
    description:
      - Disks to back up, named by guest device id, C(-drive) id or format node-name.
      - Default is every disk that can be backed up; disks without a medium, read-only disks and disks without a
        guest device are left out and listed in RV(skipped_disks).
    type: list
    elements: str
  exclude_disks:
    description:
      - Disks not to back up.
    type: list
    elements: str
  fleecing:
    description:
      - Back up from a frozen point-in-time view (copy-before-write into a fleece image and C(snapshot-access)), so
        that a slow or failing target never slows or fails the guest's writes.
      - Default is true where the running QEMU can do it (QEMU 7.1 or newer); otherwise the backup runs without it
        and warns.
      - Where QEMU has C(discard-source) (9.1 or newer), what the backup has copied is released from the fleece image
        as it goes (RV(discard_source)), so the fleece image stays small while the guest rewrites its disk.
      - With several disks on a running VM, every disk must get its filter at the same instant. Where QEMU's
        C(blockdev-backup) takes C(on-cbw-error) (QEMU 10.1 or newer, read from the QMP schema), the filters are
        those of C(sync=none) jobs started in one transaction, and the vCPUs never stop; such a filter breaks the
        snapshot instead of the guest's write when the fleece image fails, but has no timeout (RV(cbw_timeout) is
        V(null)), so a fleece image that stalls stalls the guest's writes with it. Elsewhere the vCPUs are stopped
        for the few milliseconds it takes to put every disk's filter in place (RV(pause_seconds)). The route taken
        is reported as RV(fleecing_route). One disk, or a VM that is not running, is never paused and keeps the
        timeout.
    type: bool
  fleece_dir:
    description:
      - Directory for the temporary fleece images, on fast local storage (not the backup target). They are sparse and
        grow only by the data the guest overwrites during the backup. Removed afterwards.
      - Must be an existing directory unless O(fleecing=false). A relative path is taken from the module's working
        directory.
    type: path
    default: /var/tmp
  speed:
    description:
      - Limit of the background copy in bytes per second (0 for no limit).
    type: int
    default: 0
  compress:
    description:
      - Write compressed qcow2 clusters.
      - With encryption, compressed clusters are encrypted too.
    type: bool
    default: false
  digests:
    description:
      - Record in the backup's manifest the SHA-256 of each image file it wrote (RV(disks[].digest)), read back
        right after the jobs while the data is still in the page cache, so that
        M(vmbackup.qemu.qemu_backup_info) with O(vmbackup.qemu.qemu_backup_info#module:verify=true) catches any
        changed byte (bit rot) and M(vmbackup.qemu.qemu_backup_restore) refuses a point that reads a changed file.
      - Off by default because of its cost, the time to read each image file back (RV(digest_seconds)). Measured by
        C(bench/digest_cost.py) (QEMU 10.0, 2 cores, 3 rounds), a full backup of a 4 GiB disk with 2 GiB written
        took 5.1 s without and 8.2 s with digests (medians), 1.63 times as long (1.40 to 1.90), 2.5 s of it reading
        the image back (SHA-256 runs at about 1.5 GB/s on one core here); a default may add at most 10%. The read is
        of the image file, so an incremental's cost follows its size.
      - V(false) records no digest; M(vmbackup.qemu.qemu_backup_info) reports such a backup as unverifiable, not as
        broken.
    type: bool
    default: false
  guest_agent_socket:
    description:
      - Path of the UNIX socket of the VM's guest agent (C(qemu-ga)), to freeze the guest's filesystems at the
        backup's instant for a filesystem-consistent backup.
      - A relative path is taken from the module's working directory. An empty string is refused.
    type: path
  freeze:
    description:
      - V(auto) freezes when O(guest_agent_socket) is given and the agent answers, and otherwise backs up
        crash-consistent with a warning.
      - V(required) fails when the guest cannot be frozen.
      - V(off) never freezes.
      - Filesystems are frozen just before the instant and thawed right after it, whatever fails.
    type: str
    choices: [auto, required, 'off']
    default: auto
  job_timeout:
    description:
      - Seconds the backup jobs may take. Past that they are cancelled and the backup fails. Default is no limit.
      - Must be a positive number; V(0) or a negative number is refused.
    type: int
notes:
  - Dirty bitmaps live in the qcow2 images of the VM's disks. After QEMU is killed they are inconsistent, and the
    next backup is a full one (with O(level=auto)). Disks whose format cannot store bitmaps (raw) get a bitmap that
    lasts while QEMU runs.
  - Only one backup of a VM into a repository runs at a time.
seealso:
  - module: vmbackup.qemu.qemu_bitmap
'''

EXAMPLES = r'''
- name: Nightly backup of web1 (incremental when possible)
  vmbackup.qemu.qemu_blockdev_backup:
    socket: /run/qemu/web1.qmp
    target_dir: /backup

- name: Weekly full backup, filesystem-consistent
  vmbackup.qemu.qemu_blockdev_backup:
    socket: /run/qemu/web1.qmp
    target_dir: /backup
    level: full
    guest_agent_socket: /run/qemu/web1.qga
    freeze: required

- name: What would tonight's backup copy?
  vmbackup.qemu.qemu_blockdev_backup:
    socket: /run/qemu/web1.qmp
    target_dir: /backup
  check_mode: true
  register: plan

- name: Nightly backup, encrypted at rest
  vmbackup.qemu.qemu_blockdev_backup:
    socket: /run/qemu/web1.qmp
    target_dir: /backup
    encryption_key_file: /etc/vmbackup/key

- name: Back up only the system disk, at 100 MB/s at most
  vmbackup.qemu.qemu_blockdev_backup:
    socket: /run/qemu/web1.qmp
    target_dir: /backup
    disks: [vda]
    speed: 100000000
'''

RETURN = r'''
backup_id:
  description: Id of the backup (one for all disks of this run).
  returned: when a backup was taken (not in check mode)
  type: str
  sample: 20261122T010203Z-3f9a
level:
  description: The level taken (or, in check mode, that would be taken).
  returned: success
  type: str
  sample: incremental
reason:
  description: Why this level, for example why O(level=auto) took a full backup.
  returned: success
  type: str
  sample: a new full backup, because the repository has no full backup of this VM yet
chain:
  description: Id of the chain the backup belongs to (the id of its full backup).
  returned: when a backup was taken (not in check mode)
  type: str
parent:
  description: Id of the backup this one builds on (null for a full backup or a copy).
  returned: when a backup was taken (not in check mode)
  type: str
vm:
  description: Name of the VM's directory in the repository.
  returned: success
  type: str
disks:
  description: One item per disk backed up.
  returned: success
  type: list
  elements: dict
  contains:
    disk:
      description: The disk's name.
      type: str
      returned: always
    node:
      description: The disk's format node.
      type: str
      returned: always
    file:
      description: The backup image.
      type: str
      returned: when a backup was taken (not in check mode)
    bytes_written:
      description:
        - Bytes of the disk the backup job went through. For an incremental or differential, the dirty bytes it
          copied; for a full backup or a copy, the whole disk (areas that are unallocated or zero are skipped quickly
          and take no space in the image).
      type: int
      returned: when a backup was taken (not in check mode)
    image_size:
      description: Bytes the backup image takes on disk.
      type: int
      returned: when a backup was taken (not in check mode)
    duration:
      description: Seconds the disk's backup job took.
      type: float
      returned: when a backup was taken (not in check mode)
    digest:
      description: The SHA-256 (hexadecimal) of the backup image file, as its manifest records it.
      type: str
      returned: when a backup was taken with O(digests=true) (not in check mode)
      sample: 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08
bytes_estimated:
  description: In check mode, the bytes the backup would copy (dirty bytes for incrementals).
  returned: check mode
  type: int
frozen:
  description: Whether the guest's filesystems were frozen at the instant, how many, for how long, or why not.
  returned: when a backup was taken (not in check mode)
  type: dict
  sample: {frozen: false, filesystems: 0, seconds: 0.0, reason: no guest_agent_socket given}
fleecing:
  description:
    - Whether the backup was taken from a fleeced point-in-time view. In check mode, whether it would be.
  returned: success
  type: bool
fleecing_route:
  description:
    - How the fleecing view took its instant. V(filter) - copy-before-write filters added and switched in device by
      device (the vCPUs of a running VM with several disks stopped around the switches; has RV(cbw_timeout)).
      V(job) - the filters of C(sync=none) jobs started in one transaction, with no pause and no timeout, taken
      for a running VM with several disks where QEMU's C(blockdev-backup) has C(on-cbw-error) (10.1 or newer).
      V(null) without fleecing.
    - In check mode, the route the run would take (it depends on the VM's run state at that moment).
  returned: success
  type: str
  sample: filter
cbw_timeout:
  description:
    - With fleecing, the seconds a guest write may wait for its old data to be copied into the fleece image before
      the snapshot is broken instead (the backup then fails; the guest write goes on). V(null) without fleecing,
      and on the V(job) RV(fleecing_route), whose filters have no timeout.
    - V(45), or V(4) on QEMU before 9.1, which stores this timeout in 32-bit nanoseconds so that longer values wrap
      to a few seconds (fixed upstream by "block/copy-before-write - use uint64_t for timeout in nanoseconds").
    - In check mode, the timeout the run would use.
  returned: success
  type: int
  sample: 45
discard_source:
  description:
    - With fleecing, whether the backup jobs discard from the fleece image what they have copied (C(discard-source),
      QEMU 9.1 or newer, read from the QMP schema), so that the fleece image holds only what is still to be copied
      and later guest writes to copied areas need no copy-before-write. V(false) without fleecing.
    - In check mode, whether the run would.
  returned: success
  type: bool
pause_seconds:
  description:
    - Seconds the vCPUs were stopped to give every disk the same instant (0 when not needed, and always 0 on the
      V(job) RV(fleecing_route)).
  returned: when a backup was taken (not in check mode)
  type: float
encrypted:
  description: Whether the backup is (in check mode, would be) encrypted.
  returned: success
  type: bool
skipped_disks:
  description: Disks not backed up, and why.
  returned: success
  type: list
  elements: dict
pruned:
  description: Ids of the chains removed by O(keep_chains).
  returned: when O(keep_chains) is set and the backup succeeded
  type: list
  elements: str
cleaned:
  description: What an earlier, interrupted run had left behind and this run removed.
  returned: success
  type: list
  elements: str
duration:
  description: Seconds the whole backup took.
  returned: when a backup was taken (not in check mode)
  type: float
digest_seconds:
  description: Seconds of RV(duration) spent reading the images back to compute their digests (O(digests)).
  returned: when a backup was taken with O(digests=true) (not in check mode)
  type: float
'''

from ansible_collections.vmbackup.qemu.plugins.module_utils.backup import BackupRun, LEVELS
from ansible_collections.vmbackup.qemu.plugins.module_utils.encryption import KEY_ARGUMENT_SPEC, KEY_MUTUALLY_EXCLUSIVE
from ansible_collections.vmbackup.qemu.plugins.module_utils.module import QMPModule
from ansible_collections.vmbackup.qemu.plugins.module_utils.paths import (
    directory_problem,
    make_absolute,
    vm_name_problem,
)
from ansible_collections.vmbackup.qemu.plugins.module_utils.repository import TARGET_DIR_MISSING_HINT


def paths_and_names_problem(params):
    """Make the paths absolute (QEMU resolves relative ones against its own
    working directory); return why the paths or names cannot be used, or None."""
    problem = make_absolute(params, ('target_dir', 'fleece_dir', 'guest_agent_socket', 'encryption_key_file'))
    if problem:
        return problem
    problem = vm_name_problem(params['vm_name']) if params['vm_name'] is not None else None
    if problem:
        return problem
    if params['job_timeout'] is not None and params['job_timeout'] <= 0:
        return ('job_timeout must be a positive number of seconds (leave it out for no limit), got %d'
                % params['job_timeout'])
    problem = directory_problem('target_dir', params['target_dir'], TARGET_DIR_MISSING_HINT)
    if problem is None and params['fleecing'] is not False:
        problem = directory_problem('fleece_dir', params['fleece_dir'],
                                    'create it on fast local storage, or set fleecing: false')
    return problem


def main():
    qmp_module = QMPModule(
        argument_spec=dict(
            target_dir=dict(type='path', required=True),
            vm_name=dict(type='str'),
            level=dict(type='str', default='auto', choices=list(LEVELS)),
            disks=dict(type='list', elements='str'),
            exclude_disks=dict(type='list', elements='str'),
            fleecing=dict(type='bool'),
            fleece_dir=dict(type='path', default='/var/tmp'),
            speed=dict(type='int', default=0),
            compress=dict(type='bool', default=False),
            digests=dict(type='bool', default=False),
            guest_agent_socket=dict(type='path'),
            freeze=dict(type='str', default='auto', choices=['auto', 'required', 'off']),
            job_timeout=dict(type='int'),
            full_every=dict(type='int', default=0),
            keep_chains=dict(type='int', default=0),
            **KEY_ARGUMENT_SPEC
        ),
        mutually_exclusive=KEY_MUTUALLY_EXCLUSIVE,
    )
    for option in ('speed', 'full_every', 'keep_chains'):
        if qmp_module.params[option] < 0:
            qmp_module.fail('%s must be 0 or a positive number, got %d' % (option, qmp_module.params[option]))
    problem = paths_and_names_problem(qmp_module.params)
    if problem:
        qmp_module.fail(problem)

    def work(vm):
        run = BackupRun(vm, qmp_module.params, warn=qmp_module.module.warn,
                        check_mode=qmp_module.check_mode)
        return run.run()

    qmp_module.run(work)


if __name__ == '__main__':
    main()
