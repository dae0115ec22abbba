# -*- coding: utf-8 -*-
# Copyright: (c) 2026, vmbackup.qemu developers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

"""Encryption at rest with QEMU's own LUKS: the passphrase, its fingerprint
and what a chain's encryption allows.

The passphrase is only ever held in memory and handed to QEMU over QMP
(``object-add`` of a ``secret``) or to qemu-img on its stdin; never on a
command line, in a log, a result or a manifest. A manifest records a key
fingerprint (PBKDF2 with a random salt, never a plain hash), so that a
backup or restore with another key is refused clearly, before QEMU is asked."""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import binascii
import hashlib
import hmac
import os

from ansible_collections.vmbackup.qemu.plugins.module_utils.errors import EncryptionError

# What images are encrypted with (qcow2's `encrypt.format`).
ENCRYPTION_FORMAT = 'luks'
# LUKS keyslot PBKDF time. QEMU's default (2000 ms) is paid at every open of
# every image: in QEMU's main loop at each backup's blockdev-add (the guest's
# I/O waits), and per layer of the chain at each check and restore.
# 200 ms keeps that a blink; a key file of random bytes (what the docs
# advise) needs no key stretching at all.
LUKS_ITER_TIME_MS = 200
# The fingerprint's PBKDF2: slow enough that it cannot serve as a fast
# oracle for guessing the passphrase, fast enough to check at every run.
FINGERPRINT_KDF = 'pbkdf2-hmac-sha256'
FINGERPRINT_ITERATIONS = 200000
FINGERPRINT_SALT_BYTES = 16
KEY_OPTIONS = 'encryption_key_file or encryption_passphrase'
# The modules' key options, as the vmbackup.qemu.encryption doc fragment documents them.
KEY_ARGUMENT_SPEC = dict(
    encryption_key_file=dict(type='path'),
    encryption_passphrase=dict(type='str', no_log=True),
)
KEY_MUTUALLY_EXCLUSIVE = [('encryption_key_file', 'encryption_passphrase')]


def read_key_file(path):
    """The passphrase held in ``path``: its text (UTF-8) with one trailing
    newline removed (editors and `echo` add one); empty is refused."""
    try:
        with open(path, 'rb') as handle:
            data = handle.read()
    except (IOError, OSError) as exc:
        raise EncryptionError('cannot read encryption_key_file %s (%s): give a readable file holding the '
                              'passphrase' % (path, exc.strerror or exc))
    if data.endswith(b'\r\n'):
        data = data[:-2]
    elif data.endswith(b'\n'):
        data = data[:-1]
    try:
        text = data.decode('utf-8')
    except UnicodeDecodeError:
        raise EncryptionError('encryption_key_file %s is not UTF-8 text: QEMU takes a passphrase as text '
                              '(for example: openssl rand -base64 32 > FILE)' % path)
    if not text:
        raise EncryptionError('encryption_key_file %s is empty: put the passphrase in it' % path)
    return text


def passphrase_from(params):
    """The passphrase the module's options give (None: no encryption)."""
    if params.get('encryption_key_file'):
        return read_key_file(params['encryption_key_file'])
    passphrase = params.get('encryption_passphrase')
    if passphrase is not None and not passphrase:
        raise EncryptionError('encryption_passphrase is empty: give the passphrase, or leave the option out')
    return passphrase or None


def _derive(passphrase, salt_hex, iterations):
    return binascii.hexlify(hashlib.pbkdf2_hmac(
        'sha256', passphrase.encode('utf-8'), binascii.unhexlify(salt_hex), iterations)).decode('ascii')


def new_encryption(passphrase):
    """The manifest's ``encryption`` record of a new chain (or copy)."""
    salt = binascii.hexlify(os.urandom(FINGERPRINT_SALT_BYTES)).decode('ascii')
    return {'format': ENCRYPTION_FORMAT, 'fingerprint': {
        'kdf': FINGERPRINT_KDF, 'iterations': FINGERPRINT_ITERATIONS, 'salt': salt,
        'digest': _derive(passphrase, salt, FINGERPRINT_ITERATIONS)}}


def key_matches(passphrase, encryption):
    """Whether ``passphrase`` is the key of a manifest's ``encryption`` record."""
    fingerprint = (encryption or {}).get('fingerprint') or {}
    if fingerprint.get('kdf') != FINGERPRINT_KDF:
        return False
    try:
        derived = _derive(passphrase, fingerprint['salt'], int(fingerprint['iterations']))
    except (KeyError, TypeError, ValueError, binascii.Error):
        return False
    return hmac.compare_digest(derived, str(fingerprint.get('digest')))


def chain_key_problem(chain_id, encryption, passphrase):
    """Why a backup with ``passphrase`` (None: unencrypted) cannot join
    chain ``chain_id`` whose manifests record ``encryption`` (None if it
    can): a chain is encrypted as a whole, with one key."""
    if encryption is None and passphrase is None:
        return None
    if encryption is None:
        return ('chain %s is not encrypted and this backup is (a chain is encrypted as a whole, with one key)'
                % chain_id)
    if passphrase is None:
        return ('chain %s is encrypted and no key was given (%s; a chain is encrypted as a whole)'
                % (chain_id, KEY_OPTIONS))
    if not key_matches(passphrase, encryption):
        return ('chain %s is encrypted with another key than the one given (its key fingerprint does not match)'
                % chain_id)
    return None


def restore_key_problem(backup_id, encryption, passphrase):
    """Why ``passphrase`` cannot read backup ``backup_id`` (None if it can,
    or if the backup is not encrypted)."""
    if encryption is None:
        return None
    if passphrase is None:
        return ('backup %s is encrypted: give its key (%s)' % (backup_id, KEY_OPTIONS))
    if not key_matches(passphrase, encryption):
        return ('wrong key: the key given is not the one backup %s was encrypted with (its key fingerprint does '
                'not match); give the chain\'s key' % backup_id)
    return None
