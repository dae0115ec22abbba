# -*- coding: utf-8 -*-
# Copyright: (c) 2026, vmbackup.qemu developers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

"""Make this checkout importable and runnable as the collection vmbackup.qemu."""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import os

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), '..', '..', '..'))


def collections_path():
    """A collections tree whose vmbackup/qemu is this checkout (a symlink is
    fine for python imports, ansible and ansible-playbook)."""
    root = os.path.join(REPO, 'build', 'collections')
    link = os.path.join(root, 'ansible_collections', 'vmbackup', 'qemu')
    if os.path.realpath(link) != REPO:
        os.makedirs(os.path.dirname(link), exist_ok=True)
        if os.path.lexists(link):
            os.unlink(link)
        os.symlink(REPO, link)
    return root
