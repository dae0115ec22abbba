# -*- coding: utf-8 -*-
# Copyright: (c) 2026, vmbackup.qemu developers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import os

import pytest

from ansible_collections.vmbackup.qemu.plugins.module_utils.paths import (
    absolute,
    directory_problem,
    is_inside,
    make_absolute,
    vm_name_problem,
)


def test_absolute_joins_the_working_directory_without_normalising(tmp_path, monkeypatch):
    monkeypatch.chdir(str(tmp_path))
    assert absolute('repo') == os.path.join(str(tmp_path), 'repo')
    # 'link/..' is the parent of the link's target for the kernel: kept as is.
    assert absolute('link/../repo') == os.path.join(str(tmp_path), 'link/../repo')
    assert absolute('/backup') == '/backup'
    assert absolute(None) is None


def test_make_absolute_refuses_empty_strings(tmp_path, monkeypatch):
    monkeypatch.chdir(str(tmp_path))
    params = {'target_dir': 'repo', 'dest': '/x', 'fleece_dir': None}
    assert make_absolute(params, ('target_dir', 'dest', 'fleece_dir')) is None
    assert params == {'target_dir': os.path.join(str(tmp_path), 'repo'), 'dest': '/x', 'fleece_dir': None}
    problem = make_absolute({'dest': ''}, ('dest',))
    assert 'dest must not be empty' in problem and 'not unset' in problem


@pytest.mark.parametrize('name', ['web1', 'web-1.example_com', 'A9', 'x.', 'a..b'])
def test_good_vm_names(name):
    assert vm_name_problem(name) is None


@pytest.mark.parametrize('name', ['a/b', '../x', '..', '.', '.hidden', 'web1\n', 'a\nb', '\n', 'sp ace', 'tab\t',
                                  u'caf\u00e9', 'a\x00b', '-\n'])
def test_bad_vm_names(name):
    problem = vm_name_problem(name)
    assert 'letters, digits, dots, dashes and underscores' in problem
    assert repr(name) in problem


def test_empty_vm_name_is_not_unset():
    assert 'must not be empty' in vm_name_problem('')
    assert 'leave vm_name out' in vm_name_problem('')
    assert 'leave vm_name out' not in vm_name_problem('', required=True)


def test_directory_problem(tmp_path):
    assert directory_problem('target_dir', str(tmp_path), 'mount it') is None
    missing = str(tmp_path / 'missing')
    assert directory_problem('target_dir', missing, 'mount it') == 'target_dir %s does not exist: mount it' % missing
    plain = tmp_path / 'plain'
    plain.write_text(u'x')
    problem = directory_problem('fleece_dir', str(plain), 'mount it')
    assert problem.startswith('fleece_dir %s is not a directory' % plain) and 'does not exist' not in problem
    dangling = tmp_path / 'dangling'
    dangling.symlink_to(tmp_path / 'nowhere')
    assert 'does not exist' in directory_problem('target_dir', str(dangling), 'mount it')


def test_is_inside_follows_symlinks(tmp_path):
    repo = tmp_path / 'repo'
    (repo / 'vm' / 'chain').mkdir(parents=True)
    (tmp_path / 'repo2').mkdir()
    (tmp_path / 'link').symlink_to(repo / 'vm')
    root = str(repo)
    assert is_inside(root, root)
    assert is_inside(root + '/', root)
    assert is_inside(str(repo / 'vm' / 'chain' / 'new.qcow2'), root)
    assert is_inside(str(tmp_path / 'link' / 'x.qcow2'), root)
    assert is_inside(str(tmp_path / 'link'), root)
    assert is_inside(str(tmp_path / 'repo2' / '..' / 'repo' / 'x'), root)
    assert is_inside(str(repo / 'vm' / 'x'), str(tmp_path / 'link'))   # the root through a link, too
    assert not is_inside(str(tmp_path / 'repo2' / 'x.qcow2'), root)     # only starts like it
    assert not is_inside(str(tmp_path / 'repo.qcow2'), root)
    assert not is_inside(str(tmp_path), root)
