# -*- coding: utf-8 -*-
# Copyright: (c) 2026, vmbackup.qemu developers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function
__metaclass__ = type


class ModuleDocFragment(object):

    # What every module says about check mode, diff mode and idempotence; each
    # module adds its own support level and details.
    DOCUMENTATION = r'''
attributes:
  check_mode:
    description: Can run in check mode and predicts what the real run would do, changing nothing.
  diff_mode:
    description: Returns what changes (or would change in check mode) as a diff.
  idempotent:
    description: A second run with the same arguments, on a VM and repository nobody changed in between, changes
      nothing and reports no change.
'''

    # Modules that read only (the repository or nothing at all).
    READ_ONLY = r'''
attributes:
  check_mode:
    support: full
    details: It only reads, so it runs the same in check mode.
  diff_mode:
    support: none
  idempotent:
    support: full
'''

    # Modules in the action group of the QMP modules (meta/runtime.yml).
    ACTION_GROUP_QMP = r'''
attributes:
  action_group:
    description: Use C(group/vmbackup.qemu.qmp) in C(module_defaults) to set defaults for this module.
    support: full
    membership:
      - vmbackup.qemu.qmp
'''
