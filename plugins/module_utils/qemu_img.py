# -*- coding: utf-8 -*-
# Copyright: (c) 2026, vmbackup.qemu developers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

"""The collection's one way to run qemu-img (from QEMU's tools, on PATH)."""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import json
from concurrent.futures import ThreadPoolExecutor

from ansible_collections.vmbackup.qemu.plugins.module_utils.encryption import ENCRYPTION_FORMAT, LUKS_ITER_TIME_MS
from ansible_collections.vmbackup.qemu.plugins.module_utils.errors import QemuImgError

QEMU_IMG = 'qemu-img'

# qemu-img check exit codes
CHECK_OK, CHECK_CORRUPT, CHECK_LEAKS = 0, 2, 3
# How many checks check_all() runs at a time.
CHECK_JOBS = 4
# The id under which qemu-img knows an encrypted image's passphrase, which
# it reads from its stdin: never from its command line.
SECRET_ID = 'vmb-key'

# What runs qemu-img: the module of this process (module.run_guarded binds
# it), through its get_bin_path and run_command.
_runner = {'module': None, 'path': None}


def bind(module):
    """Run qemu-img through ``module``: an AnsibleModule, or anything with its
    ``get_bin_path(name)`` and ``run_command(args, umask=...)``."""
    _runner.update(module=module, path=None)


def _binary():
    if _runner['module'] is None:
        raise QemuImgError('internal error in vmbackup.qemu: qemu-img used before qemu_img.bind()')
    if _runner['path'] is None:
        _runner['path'] = _runner['module'].get_bin_path(QEMU_IMG)
        if not _runner['path']:
            raise QemuImgError('cannot find %s on PATH: install QEMU\'s tools (Debian: qemu-utils)' % QEMU_IMG)
    return _runner['path']


def run(args, check=True, umask=None, secret=None):
    """Run ``qemu-img ARGS``; return (returncode, stdout, stderr). A
    ``secret`` (passphrase) goes to qemu-img's stdin as the object SECRET_ID."""
    binary = _binary()
    args = list(args)
    options = {'umask': umask}
    if secret is not None:
        args[1:1] = ['--object', 'secret,id=%s,file=/dev/stdin' % SECRET_ID]
        # binary_data: no newline appended, it would be part of the passphrase.
        options.update(data=secret, binary_data=True)
    code, out, err = _runner['module'].run_command([binary] + args, **options)
    if check and code != 0:
        raise QemuImgError('qemu-img %s failed: %s' % (args[0], (err + out).strip()))
    return code, out, err


def _qcow2_options(encrypted):
    """``-o`` of the qcow2 images we write: 64 KiB clusters and, if
    ``encrypted``, LUKS keyed by the secret SECRET_ID."""
    options = 'cluster_size=65536'
    if encrypted:
        options += ',encrypt.format=%s,encrypt.key-secret=%s,encrypt.iter-time=%d' % (
            ENCRYPTION_FORMAT, SECRET_ID, LUKS_ITER_TIME_MS)
    return options


def create_qcow2(path, size, backing=None, secret=None):
    """A qcow2 image readable by its owner only; ``backing`` relative to its
    directory; with a ``secret``, LUKS-encrypted with that passphrase."""
    args = ['create', '-q', '-f', 'qcow2', '-o', _qcow2_options(secret is not None)]
    if backing:
        # -u: the parent need not be opened to create the child.
        args += ['-b', backing, '-F', 'qcow2', '-u']
    run(args + [path, str(size)], umask=0o077, secret=secret)


def encrypted_image(path, layers=None):
    """A json: name of the encrypted qcow2 ``path`` that gives the secret to
    it and to the ``layers - 1`` images below it in its backing chain (each
    layer of a chain has its own LUKS header to open); ``layers`` None opens
    it without its backing file."""
    spec = {'driver': 'qcow2', 'file': {'driver': 'file', 'filename': path}, 'encrypt': {'key-secret': SECRET_ID}}
    if layers is None:
        spec['backing'] = None
    else:
        layer = spec
        for _below in range(layers - 1):
            layer['backing'] = {'encrypt': {'key-secret': SECRET_ID}}
            layer = layer['backing']
    return 'json:' + json.dumps(spec, sort_keys=True)


def info(path, backing_chain=False):
    args = ['info', '--output=json', '-U']
    if backing_chain:
        args.append('--backing-chain')
    return json.loads(run(args + [path])[1])


def encryption_format(image_info):
    """How the image that ``info()`` describes is encrypted ('luks'), or None."""
    return ((image_info.get('format-specific') or {}).get('data') or {}).get('encrypt', {}).get('format')


def check(path, secret=None):
    """Return (returncode, output) of ``qemu-img check`` (read-only). An
    encrypted image cannot be opened without its ``secret``."""
    name = encrypted_image(path) if secret is not None else path
    code, out, err = run(['check', '-U', '--output=human', name], check=False, secret=secret)
    return code, (out + err).strip()


def check_all(paths, jobs=CHECK_JOBS, secret=None):
    """``{path: (returncode, output)}`` of ``qemu-img check`` of every path,
    ``jobs`` at a time. Each check is a process of its own: on a chain of tens
    of small images, starting them costs more than their reading, and a
    repository on a share adds a round trip to each."""
    with ThreadPoolExecutor(max_workers=max(1, min(jobs, len(paths)))) as pool:
        return dict(zip(paths, pool.map(lambda path: check(path, secret), paths)))


def compare(first, second, first_format=None, second_format=None, secret=None, second_layers=1,
            first_encrypted=False):
    """True when the guest-visible content is the same (read-only). With a
    ``secret``, ``second`` is the top of an encrypted chain of
    ``second_layers`` (unless ``second_layers`` is 0: not encrypted), and
    ``first``, if ``first_encrypted``, an encrypted qcow2 of its own."""
    args = ['compare', '-U']
    if first_encrypted:
        first = encrypted_image(first, 1)
    elif first_format:
        args += ['-f', first_format]
    if secret is not None and second_layers:
        second = encrypted_image(second, second_layers)
    elif second_format:
        args += ['-F', second_format]
    code, out, err = run(args + [first, second], check=False, secret=secret)
    if code not in (0, 1):
        raise QemuImgError('qemu-img compare of %s and %s failed: %s' % (first, second, (err + out).strip()))
    return code == 0


def convert(source, dest, dest_format, secret=None, layers=1, encrypt_dest=False):
    """Copy the guest-visible content of ``source`` (through its backing chain)
    into a new sparse image ``dest``, flushed to disk before qemu-img exits
    (``-t writeback``: convert's default cache mode, unsafe, never flushes).
    With a ``secret``, ``source`` is the top of an encrypted chain of
    ``layers`` (unless ``layers`` is 0: not encrypted); ``dest`` (qcow2) is
    encrypted with the same ``secret`` if ``encrypt_dest``."""
    args = ['convert', '-q', '-t', 'writeback', '-O', dest_format, '-m', '8', '-W']
    if dest_format == 'qcow2':
        args += ['-o', _qcow2_options(encrypt_dest)]
    if secret is not None and layers:
        source = encrypted_image(source, layers)
    else:
        args += ['-f', 'qcow2']
    run(args + [source, dest], umask=0o077, secret=secret)
