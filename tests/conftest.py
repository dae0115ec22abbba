# -*- coding: utf-8 -*-
# Copyright: (c) 2026, vmbackup.qemu developers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

"""Lets plain pytest import ansible_collections.vmbackup.qemu from this checkout."""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), 'integration'))

from harness.collection import collections_path  # noqa: E402 pylint: disable=wrong-import-position

sys.path.insert(0, collections_path())
