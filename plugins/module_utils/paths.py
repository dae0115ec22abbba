# -*- coding: utf-8 -*-
# Copyright: (c) 2026, vmbackup.qemu developers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

"""Paths and names the user gives, checked before anything is written.

QEMU and qemu-img resolve a relative path against their own working
directory, not the module's: every path is made absolute first. A VM's name
becomes a directory of the repository: only a safe set of characters."""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import os
import re

# \Z, not $: '$' also matches before a trailing newline.
_VM_NAME = re.compile(r'[A-Za-z0-9._-]+\Z')
VM_NAME_RULE = 'letters, digits, dots, dashes and underscores, not starting with a dot'


def absolute(path):
    """``path`` as an absolute path, taken from the current directory.

    Not normalised: 'link/../x' must mean what the kernel makes of it (the
    parent of the link's target), not what string handling would."""
    if path is None or os.path.isabs(path):
        return path
    return os.path.join(os.getcwd(), path)


def make_absolute(params, names):
    """Make the path options ``names`` of ``params`` absolute, in place.
    Returns why one cannot be used (an empty string is not unset), or None."""
    for name in names:
        problem = path_problem(name, params.get(name))
        if problem:
            return problem
        params[name] = absolute(params.get(name))
    return None


def path_problem(name, path):
    """Why the path option ``name`` cannot be used as given (None if it can, or is unset)."""
    if path == '':
        return '%s must not be empty (an empty string is not unset): give a path' % name
    if path is not None and '\x00' in path:
        return '%s %r contains a NUL byte, which no path can hold' % (name, path)
    return None


def vm_name_problem(name, required=False):
    """Why ``name`` cannot name a VM's directory in a repository, or None."""
    if not name:
        return 'vm_name must not be empty (an empty string is not unset): %s' % (
            'give the name of the VM in the repository' if required else 'give a name, or leave vm_name out')
    if not _VM_NAME.match(name) or name.startswith('.'):
        return 'vm_name %r cannot name a directory: use %s' % (name, VM_NAME_RULE)
    return None


def directory_problem(option, path, missing_hint):
    """Why ``path``, the value of ``option``, is not an existing directory,
    or None. ``missing_hint`` says what to do when it does not exist."""
    if os.path.isdir(path):
        return None
    if os.path.exists(path):
        return '%s %s is not a directory: give the path of a directory' % (option, path)
    return '%s %s does not exist: %s' % (option, path, missing_hint)


def is_inside(path, root):
    """Whether ``path`` is ``root`` or lies below it, symlinks followed
    (as far as they exist) on both."""
    real = os.path.realpath(path)
    real_root = os.path.realpath(root)
    return real == real_root or real.startswith(real_root.rstrip(os.sep) + os.sep)


def fsync_directory(path):
    """Make the names in directory ``path`` durable (after a create or rename)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
