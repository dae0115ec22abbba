# -*- coding: utf-8 -*-
# Copyright: (c) 2026, vmbackup.qemu developers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import pytest

from ansible_collections.vmbackup.qemu.plugins.module_utils.quirks import (
    CBW_TIMEOUT_LARGEST_SAFE,
    CBW_TIMEOUT_WANTED,
    FLEECE_SAFE_READ_CHUNK,
    cbw_timeout,
    fleece_read_chunk,
)


def version(major, minor, micro=0):
    return {'major': major, 'minor': minor, 'micro': micro, 'string': '%d.%d.%d' % (major, minor, micro)}


@pytest.mark.parametrize('release', [(7, 1), (7, 2, 22), (8, 2, 9), (9, 0, 4)])
def test_before_9_1_the_timeout_fits_32_bit_nanoseconds(release):
    seconds = cbw_timeout(version(*release))
    assert seconds == CBW_TIMEOUT_LARGEST_SAFE
    assert seconds * 10 ** 9 < 2 ** 32 <= (seconds + 1) * 10 ** 9


@pytest.mark.parametrize('release', [(9, 1), (10, 0, 7), (11, 1, 3)])
def test_from_9_1_the_timeout_asked_for(release):
    assert cbw_timeout(version(*release)) == CBW_TIMEOUT_WANTED == 45


@pytest.mark.parametrize('release', [(7, 1), (7, 2, 22)])
def test_before_8_0_fleecing_jobs_read_one_cluster_at_a_time(release):
    assert fleece_read_chunk(version(*release)) == FLEECE_SAFE_READ_CHUNK == 65536


@pytest.mark.parametrize('release', [(8, 0), (9, 2, 1), (10, 0, 7), (11, 1, 3)])
def test_from_8_0_fleecing_jobs_read_any_length(release):
    assert fleece_read_chunk(version(*release)) is None
