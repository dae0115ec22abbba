# -*- coding: utf-8 -*-
# Copyright: (c) 2026, vmbackup.qemu developers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

"""Our names are told from anyone else's, and by role, from the name alone."""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

from ansible_collections.vmbackup.qemu.plugins.module_utils.names import (
    FLEECE_JOB_ROLE,
    PUSH_JOB_ROLE,
    fleece_job,
    is_fleece_job,
    node_name,
    push_job,
    role_of,
)


def test_roles_are_read_back_from_the_names():
    assert role_of(push_job('1a2b3c', 0)) == PUSH_JOB_ROLE
    assert role_of(fleece_job('1a2b3c', 12)) == FLEECE_JOB_ROLE
    assert role_of(node_name('1a2b3c', 'snap', 1)) == 'snap'


def test_only_our_fleecing_jobs_are_fleecing_jobs():
    assert is_fleece_job(fleece_job('1a2b3c', 0))
    assert not is_fleece_job(push_job('1a2b3c', 0))
    assert not is_fleece_job('backup-flc0') and not is_fleece_job('') and not is_fleece_job(None)
    assert role_of('vmb-') is None and role_of('other-push0') is None
