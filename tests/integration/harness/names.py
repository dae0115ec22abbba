# -*- coding: utf-8 -*-
# Copyright: (c) 2026, vmbackup.qemu developers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

"""The collection's own names for what it makes in QEMU (module_utils/names.py),
so that the test bed and the benchmarks never spell them again, and its
schema reader, so that they ask a QEMU what it can do as the modules do."""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import sys

from harness.collection import collections_path

if collections_path() not in sys.path:
    sys.path.insert(0, collections_path())

# pylint: disable=wrong-import-position,unused-import
from ansible_collections.vmbackup.qemu.plugins.module_utils.names import (  # noqa: E402,F401
    BITMAP_PREFIX,
    FLEECE_SUFFIX,
    NODE_PREFIX,
    PUSH_JOB_ROLE,
    is_fleece_job,
    role_of,
)
from ansible_collections.vmbackup.qemu.plugins.module_utils.schema import Features, QMPSchema  # noqa: E402,F401
