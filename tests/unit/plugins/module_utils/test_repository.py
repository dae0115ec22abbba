# -*- coding: utf-8 -*-
# Copyright: (c) 2026, vmbackup.qemu developers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import os
import re
import stat

import pytest

from ansible_collections.vmbackup.qemu.plugins.module_utils import repository
from ansible_collections.vmbackup.qemu.plugins.module_utils.errors import RepositoryError
from ansible_collections.vmbackup.qemu.plugins.module_utils.repository import (
    VMRepository,
    new_backup_id,
    safe_component,
)


def make_backup(repo, chain, backup_id, level, when, parent=None, disks=('vda',)):
    """A published backup whose images are plain files (content is not read here)."""
    repo.chain_dir(chain, create=True)
    for disk in disks:
        with open(repo.partial_image(chain, backup_id, disk), 'w') as handle:
            handle.write('image')
    repo.publish({'id': backup_id, 'chain': chain, 'level': level, 'time': when, 'parent': parent,
                  'disks': [{'disk': d, 'file': repo.image_name(backup_id, d), 'virtual_size': 1} for d in disks]})


@pytest.fixture
def repo(tmp_path):
    repository = VMRepository(str(tmp_path), 'web1')
    repository.ensure()
    return repository


def test_ensure_creates_a_private_repository_once(repo, tmp_path):
    first = repo.repository_id
    assert len(first) == 16
    assert stat.S_IMODE(os.stat(repo.root).st_mode) == 0o700
    assert VMRepository(str(tmp_path), 'web1').ensure()['id'] == first


def test_missing_target_dir_is_not_created(tmp_path):
    with pytest.raises(RepositoryError) as err:
        VMRepository(str(tmp_path / 'not-mounted'), 'web1').ensure()
    assert 'does not exist' in err.value.msg
    assert not (tmp_path / 'not-mounted').exists()


def test_target_dir_that_is_a_file_is_not_a_directory(tmp_path):
    plain = tmp_path / 'plain'
    plain.write_text(u'x')
    with pytest.raises(RepositoryError) as err:
        VMRepository(str(plain), 'web1').ensure()
    assert 'is not a directory' in err.value.msg and 'does not exist' not in err.value.msg


@pytest.mark.parametrize('name', ['', '.', '..', 'a/b', '.hidden', 'web1\n', 'a\nb', 'sp ace'])
def test_bad_vm_names(tmp_path, name):
    with pytest.raises(RepositoryError):
        VMRepository(str(tmp_path), name)


def test_publish_makes_a_backup_visible(repo):
    make_backup(repo, 'c1', 'c1', 'full', 1.0)
    chain = repo.latest_chain()
    assert chain.id == 'c1' and chain.full.id == 'c1'
    assert os.path.isfile(chain.last.image('vda'))
    assert sorted(os.listdir(chain.path)) == ['c1.json', 'c1.vda.qcow2']
    assert stat.S_IMODE(os.stat(os.path.join(chain.path, 'c1.json')).st_mode) == 0o600


def test_lock_is_exclusive(repo):
    repo.lock()
    other = VMRepository(repo.target_dir, 'web1')
    with pytest.raises(RepositoryError) as err:
        other.lock()
    assert 'another backup' in err.value.msg
    repo.unlock()
    other.lock()
    other.unlock()


def test_prune_keeps_newest_chains_and_the_chain_in_use(repo):
    make_backup(repo, 'a', 'a', 'full', 1.0)
    make_backup(repo, 'a', 'a2', 'incremental', 2.0, parent='a')
    make_backup(repo, 'copy1', 'copy1', 'copy', 2.5)
    make_backup(repo, 'b', 'b', 'full', 3.0)
    make_backup(repo, 'c', 'c', 'full', 4.0)
    assert repo.prune(1, in_use='b') == ['a']          # c is newest; b is in use
    assert sorted(c.id for c in repo.chains()) == ['b', 'c', 'copy1']
    assert repo.prune(1, in_use='c') == ['b']
    assert sorted(c.id for c in repo.chains()) == ['c', 'copy1']   # copies are not counted


def test_remove_unpublished(repo):
    make_backup(repo, 'a', 'a', 'full', 1.0)
    chain_dir = repo.chain_dir('a')
    leftovers = [repo.partial_image('a', new_backup_id(), 'vda'),
                 os.path.join(chain_dir, repo.image_name(new_backup_id(), 'vda'))]   # renamed, no manifest
    for path in leftovers:
        with open(path, 'w') as handle:
            handle.write('x')
    hidden = os.path.join(repo.root, '.old.deleting')
    os.mkdir(hidden)
    empty = repo.chain_dir('empty', create=True)
    removed = repo.remove_unpublished()
    assert sorted(removed) == sorted(leftovers + [hidden, empty])
    assert repo.latest_chain().last.id == 'a' and os.path.isfile(repo.latest_chain().last.image('vda'))


def test_unreadable_manifest_is_not_a_base(repo):
    make_backup(repo, 'a', 'a', 'full', 1.0)
    with open(os.path.join(repo.chain_dir('a'), 'a.json'), 'w') as handle:
        handle.write('{not json')
    assert repo.chains() == []


def test_names():
    assert safe_component('#block123') == '_block123'
    assert re.match(r'^19700101T000000Z-[0-9a-f]{4}$', new_backup_id(0))


def test_an_unreadable_manifest_keeps_its_images_and_is_reported_once(repo):
    backup_id = new_backup_id()
    make_backup(repo, 'a', backup_id, 'full', 1.0)
    manifest = os.path.join(repo.chain_dir('a'), backup_id + '.json')
    with open(manifest, 'w') as handle:
        handle.write('{"id": "a newer format?"')
    stray = os.path.join(repo.chain_dir('a'), repo.image_name(new_backup_id(), 'vda'))
    with open(stray, 'w') as handle:
        handle.write('x')
    chain_dir = repo.chain_dirs()['a']
    assert [entry for entry, _cause in chain_dir.unreadable] == [backup_id + '.json']
    assert chain_dir.backups == [] and repo.chains() == []
    assert repo.image_name(backup_id, 'vda') in chain_dir.named() and os.path.basename(stray) not in chain_dir.named()
    assert repo.remove_unpublished() == [stray]
    assert os.path.isfile(os.path.join(repo.chain_dir('a'), repo.image_name(backup_id, 'vda')))


def test_manifests_are_read_once_until_the_repository_changes(repo, monkeypatch):
    make_backup(repo, 'a', 'a', 'full', 1.0)
    reads = []
    original = repository.read_manifest
    monkeypatch.setattr(repository, 'read_manifest', lambda path: reads.append(path) or original(path))
    for _round in range(3):
        assert repo.latest_chain().last.id == 'a'
    assert len(reads) == 1
    make_backup(repo, 'a', 'b', 'incremental', 2.0, parent='a')
    assert repo.latest_chain().last.id == 'b' and len(reads) == 3


def test_a_chain_or_manifest_removed_while_listed_is_skipped(repo, monkeypatch):
    """A verify lists the chains while a backup cleans up or prunes: what
    vanished between the listing and the read is not there, not damage."""
    make_backup(repo, 'c1', '20260101T000000Z-0001', 'full', 1)
    make_backup(repo, 'c2', '20260102T000000Z-0002', 'full', 2)
    make_backup(repo, 'c2', '20260103T000000Z-0003', 'incremental', 3, parent='20260102T000000Z-0002')
    real_listdir, real_open = os.listdir, open

    def listdir(path):
        if os.path.basename(path) == 'c1':
            raise OSError(2, 'No such file or directory', path)
        return real_listdir(path)

    def vanishing_open(path, *args, **kwargs):
        if str(path).endswith('-0003.json'):
            raise IOError(2, 'No such file or directory', path)
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(os, 'listdir', listdir)
    monkeypatch.setattr(os.path, 'exists', lambda path: not str(path).endswith('-0003.json'))
    monkeypatch.setattr('builtins.open', vanishing_open)
    repo._changed()
    dirs = repo.chain_dirs()
    assert sorted(dirs) == ['c2']
    assert [b.id for b in dirs['c2'].backups] == ['20260102T000000Z-0002'] and dirs['c2'].unreadable == []


def test_a_chain_directory_that_cannot_be_listed_for_another_reason_is_an_error(repo, monkeypatch):
    make_backup(repo, 'c1', '20260101T000000Z-0001', 'full', 1)
    real_listdir = os.listdir

    def listdir(path):
        if os.path.basename(path) == 'c1':
            raise OSError(13, 'Permission denied', path)
        return real_listdir(path)

    monkeypatch.setattr(os, 'listdir', listdir)
    repo._changed()
    with pytest.raises(OSError):
        repo.chain_dirs()
