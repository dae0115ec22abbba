# -*- coding: utf-8 -*-
# Copyright: (c) 2026, vmbackup.qemu developers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

"""The fleecing view's pure decisions: which route takes the instant, and
what a broken snapshot means."""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import pytest

from ansible_collections.vmbackup.qemu.plugins.module_utils.fleece import (
    FILTER_ROUTE,
    JOB_ROUTE,
    broken_snapshot_hint,
    fleece_route,
)


class Has(object):
    def __init__(self, *names):
        self.names = set(names)

    def has(self, name):
        return name in self.names


NEW_QEMU = Has('backup_on_cbw_error')
OLD_QEMU = Has()


@pytest.mark.parametrize('features, disks, state, route', [
    (NEW_QEMU, 2, 'running', JOB_ROUTE),          # the only case where the filters would pause
    (NEW_QEMU, 8, 'running', JOB_ROUTE),
    (NEW_QEMU, 1, 'running', FILTER_ROUTE),       # one switch is one instant: keep the cbw-timeout
    (NEW_QEMU, 2, 'prelaunch', FILTER_ROUTE),     # nothing runs, nothing to pause
    (NEW_QEMU, 2, 'paused', FILTER_ROUTE),
    (OLD_QEMU, 2, 'running', FILTER_ROUTE),       # before 10.1 a job's filter cannot break the snapshot
])
def test_the_job_route_is_taken_where_the_filters_would_pause_the_vm(features, disks, state, route):
    assert fleece_route(features, disks, state) == route


def test_a_broken_snapshot_is_explained_with_the_timeout_in_force():
    hint = broken_snapshot_hint('vda: Permission denied', '/var/fleece', 45)
    assert '/var/fleece' in hint and 'cbw_timeout of 45 s' in hint
    hint = broken_snapshot_hint('vda: Permission denied', '/var/fleece', None)
    assert '/var/fleece' in hint and 'failed or filled up' in hint and 'cbw_timeout' not in hint
    assert broken_snapshot_hint('vda: No space left on device', '/var/fleece', 45) is None
