# -*- coding: utf-8 -*-
# Copyright: (c) 2026, vmbackup.qemu developers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

"""Every module's argument handling against generated hostile values: wrong
types, empty, huge and unicode strings with control characters, huge and
negative numbers, paths like '..' and 'a/../b'. Each run ends cleanly - a
result, or a failure whose `msg` says what is wrong - never a traceback, an
"internal error" or "MODULE FAILURE", and writes nothing where it was run.

The modules run in this process (ansible's patch_module_args), from an empty
directory, with relative paths only: no socket, repository or QEMU exists
there, so what is tested is everything before a VM is reached."""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import contextlib
import io
import json
import os
import shutil
import tempfile

import pytest
import yaml

from hypothesis import HealthCheck, given, settings, strategies as st

from ansible.module_utils.testing import patch_module_args

from ansible_collections.vmbackup.qemu.plugins.modules import (
    qemu_backup_info,
    qemu_backup_restore,
    qemu_bitmap,
    qemu_blockdev_backup,
    qemu_fleece,
)

MODULES = [qemu_bitmap, qemu_blockdev_backup, qemu_fleece, qemu_backup_restore, qemu_backup_info]

# Relative only (see above), and hostile.
PATHS = st.one_of(
    st.sampled_from(['', '.', '..', '../..', 'a/../b', 'x\n', ' ', 'nosuch/dir', 'a' * 5000, '\x00', '-', '~']),
    st.text(max_size=40).filter(lambda s: not s.startswith(('/', '~'))),
)
# Any option may get any of these. Not infinities: ansible-core 2.19's own
# check_type_int raises OverflowError on float('inf') given to an int option
# (a YAML `.inf`), before any code of ours runs; float options get them.
VALUES = st.one_of(
    st.none(), st.booleans(),
    st.integers(min_value=-(2 ** 70), max_value=2 ** 70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=200).filter(lambda s: not s.startswith(('/', '~'))),
    st.lists(st.text(max_size=12).filter(lambda s: not s.startswith('/')), max_size=4),
    st.dictionaries(st.text(max_size=6), st.integers(), max_size=2),
)


def options(module):
    """The module's options, {name: spec}: its DOCUMENTATION's and the QMP
    fragment's (``socket`` required)."""
    names = dict(yaml.safe_load(module.DOCUMENTATION).get('options', {}))
    if 'vmbackup.qemu.qmp' in module.DOCUMENTATION:
        names.update({'socket': {'type': 'path', 'required': True}, 'timeout': {'type': 'float'},
                      'lock_timeout': {'type': 'float'}})
    return names


def of_its_type(spec):
    """Values an option's type and choices allow, so that runs get past
    Ansible's own checks and reach the module's."""
    if spec.get('choices'):
        return st.sampled_from(spec['choices'])
    kind = spec.get('type', 'str')
    if kind == 'path':
        return PATHS
    return {
        'bool': st.booleans(),
        'int': st.one_of(st.integers(min_value=-(2 ** 40), max_value=2 ** 40), st.sampled_from([0, -1, 2 ** 63])),
        'float': st.floats(allow_nan=True, allow_infinity=True),
        'list': st.lists(st.text(max_size=12).filter(lambda s: not s.startswith('/')), max_size=4),
    }.get(kind, st.text(max_size=200).filter(lambda s: not s.startswith(('/', '~'))))


def arguments(module):
    """Required options always, the rest sometimes; mostly of their own type
    (else Ansible refuses them before the module's code runs), sometimes anything."""
    names = options(module)

    def values(name):
        typed = of_its_type(names[name])
        return st.one_of(typed, typed, typed, VALUES)

    return st.fixed_dictionaries(
        dict((name, values(name)) for name, spec in names.items() if spec.get('required')),
        optional=dict((name, values(name)) for name, spec in names.items() if not spec.get('required')))


def run(module, args):
    """Run ``module`` with ``args``; its result as the controller would read it."""
    out = io.StringIO()
    with patch_module_args(args), contextlib.redirect_stdout(out):
        with pytest.raises(SystemExit):
            module.main()
    return json.loads(out.getvalue())


@pytest.mark.parametrize('module', MODULES, ids=lambda m: m.__name__.rsplit('.', 1)[-1])
def test_generated_arguments_end_cleanly(module):
    @settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(arguments(module))
    def check(args):
        here = tempfile.mkdtemp(prefix='vb-hostile-')
        old = os.getcwd()
        os.chdir(here)
        try:
            result = run(module, args)
            assert os.listdir(here) == [], 'the module wrote into its directory: %s' % os.listdir(here)
        finally:
            os.chdir(old)
            shutil.rmtree(here)
        assert 'exception' not in result, result
        if result.get('failed'):
            msg = result.get('msg', '')
            assert msg and 'internal error' not in msg and 'Traceback' not in msg, result
            assert 'MODULE FAILURE' not in msg, result

    check()
