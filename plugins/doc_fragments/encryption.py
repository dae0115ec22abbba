# -*- coding: utf-8 -*-
# Copyright: (c) 2026, vmbackup.qemu developers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function
__metaclass__ = type


class ModuleDocFragment(object):

    # The key of encrypted backups: qemu_blockdev_backup and qemu_backup_restore.
    DOCUMENTATION = r'''
options:
  encryption_key_file:
    description:
      - Path of a file on the managed host holding the passphrase of the backups, as UTF-8 text. One trailing newline
        is not part of the passphrase; an empty passphrase is refused. Keep the file readable by its owner only; a
        random one is best, for example C(openssl rand -base64 32 > /etc/vmbackup/key).
      - The backup images are LUKS-encrypted qcow2 images, written by QEMU itself. The passphrase is handed to QEMU
        over QMP (a C(secret) object) and to C(qemu-img) on its standard input; it never appears on a command line,
        in a log, a result or a manifest. Manifests record only a fingerprint of the key (PBKDF2-HMAC-SHA256 with a
        random salt), so that another key is refused clearly.
      - A chain is encrypted as a whole, with one key.
      - Lose the passphrase and the backups are lost with it.
    type: path
  encryption_passphrase:
    description:
      - The passphrase itself, for example from Ansible Vault, instead of O(encryption_key_file). Never logged.
    type: str
notes:
  - LUKS key slots are made with an iteration time of 200 ms (QEMU's default is 2000 ms). That is the cost of each
    opening of an image, by QEMU when a backup starts and by C(qemu-img) per layer of a chain on every check and
    restore. A random passphrase needs no key stretching.
'''
