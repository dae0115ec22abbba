# -*- coding: utf-8 -*-
# Copyright: (c) 2026, vmbackup.qemu developers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

"""The passphrase as read from a key file, its fingerprint, and what a
chain's encryption allows; the passphrase reaches qemu-img on stdin only."""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import json

import pytest

from ansible_collections.vmbackup.qemu.plugins.module_utils import qemu_img
from ansible_collections.vmbackup.qemu.plugins.module_utils.encryption import (
    chain_key_problem,
    key_matches,
    new_encryption,
    passphrase_from,
    read_key_file,
    restore_key_problem,
)
from ansible_collections.vmbackup.qemu.plugins.module_utils.errors import EncryptionError
from ansible_collections.vmbackup.qemu.plugins.module_utils.names import is_ours, role_of, secret_object


def key_path(tmp_path, data):
    path = tmp_path / 'key'
    path.write_bytes(data)
    return str(path)


@pytest.mark.parametrize('data, passphrase', [
    (b'secret\n', 'secret'),
    (b'secret\r\n', 'secret'),
    (b'secret', 'secret'),
    (b'secret\n\n', 'secret\n'),          # only one newline is the file's
    (b' sp ace \n', ' sp ace '),
    (u'caf\u00e9\n'.encode('utf-8'), u'caf\u00e9'),
])
def test_the_key_file_gives_its_text_without_one_trailing_newline(tmp_path, data, passphrase):
    assert read_key_file(key_path(tmp_path, data)) == passphrase


@pytest.mark.parametrize('data, expect', [(b'', 'is empty'), (b'\n', 'is empty'), (b'\xff\xfe', 'not UTF-8')])
def test_a_key_file_without_a_passphrase_is_refused(tmp_path, data, expect):
    with pytest.raises(EncryptionError) as caught:
        read_key_file(key_path(tmp_path, data))
    assert expect in caught.value.msg


def test_a_missing_key_file_is_named(tmp_path):
    with pytest.raises(EncryptionError) as caught:
        passphrase_from({'encryption_key_file': str(tmp_path / 'nope')})
    assert 'nope' in caught.value.msg and 'encryption_key_file' in caught.value.msg


def test_options_give_the_passphrase_or_none():
    assert passphrase_from({}) is None
    assert passphrase_from({'encryption_passphrase': 'pw'}) == 'pw'
    with pytest.raises(EncryptionError):
        passphrase_from({'encryption_passphrase': ''})


def test_the_fingerprint_is_salted_and_holds_no_passphrase():
    first, second = new_encryption('pass phrase'), new_encryption('pass phrase')
    assert first['format'] == 'luks'
    assert first['fingerprint']['salt'] != second['fingerprint']['salt']
    assert first['fingerprint']['digest'] != second['fingerprint']['digest']
    assert 'pass phrase' not in json.dumps(first)
    assert key_matches('pass phrase', first) and key_matches('pass phrase', second)
    assert not key_matches('pass phrasE', first)
    assert not key_matches('pass phrase', None)
    assert not key_matches('pass phrase', {'fingerprint': {'kdf': 'sha256', 'digest': 'x'}})
    assert not key_matches('pass phrase', {'fingerprint': dict(first['fingerprint'], salt='not hex')})


def test_a_chain_keeps_one_key():
    encrypted = new_encryption('one')
    assert chain_key_problem('C', None, None) is None
    assert chain_key_problem('C', encrypted, 'one') is None
    assert 'not encrypted' in chain_key_problem('C', None, 'one')
    assert 'no key was given' in chain_key_problem('C', encrypted, None)
    assert 'another key' in chain_key_problem('C', encrypted, 'two')


def test_a_restore_needs_the_right_key():
    encrypted = new_encryption('one')
    assert restore_key_problem('B', None, None) is None
    assert restore_key_problem('B', None, 'one') is None
    assert restore_key_problem('B', encrypted, 'one') is None
    assert 'give its key' in restore_key_problem('B', encrypted, None)
    assert restore_key_problem('B', encrypted, 'two').startswith('wrong key')


def test_the_secret_object_is_ours_and_cleaned_up_by_its_name():
    name = secret_object('1a2b3c')
    assert is_ours(name) and role_of(name) == 'sec' and len(name) <= 31


class StdinModule(object):
    def __init__(self):
        self.calls = []

    def get_bin_path(self, name):
        return '/usr/bin/' + name

    def run_command(self, args, umask=None, data=None, binary_data=False):
        self.calls.append((args, data, binary_data))
        return 0, '', ''


def test_qemu_img_gets_the_passphrase_on_stdin_only():
    module = StdinModule()
    qemu_img.bind(module)
    qemu_img.create_qcow2('/r/a.qcow2', 1024, 'p.qcow2', secret='pw-123')
    qemu_img.convert('/r/a.qcow2', '/d/a.raw', 'raw', secret='pw-123', layers=3)
    qemu_img.check('/r/a.qcow2', secret='pw-123')
    for args, data, binary_data in module.calls:
        assert data == 'pw-123' and binary_data is True     # no newline added to it
        assert not any('pw-123' in arg for arg in args)
        assert args[1:4] == [args[1], '--object', 'secret,id=vmb-key,file=/dev/stdin']
    create, convert, check = (c[0] for c in module.calls)
    assert 'encrypt.format=luks,encrypt.key-secret=vmb-key' in create[create.index('-o') + 1]
    layers = json.loads(convert[-2][len('json:'):])
    assert layers['backing']['backing']['encrypt'] == {'key-secret': 'vmb-key'}
    assert 'backing' not in layers['backing']['backing'] and '-f' not in convert
    assert json.loads(check[-1][len('json:'):])['backing'] is None
