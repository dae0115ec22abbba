#!/usr/bin/env python
# -*- coding: utf-8 -*-
# Copyright: (c) 2026, vmbackup.qemu developers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

"""What encryption at rest costs a full backup: the same full backup with and
without ``encryption_key_file``, side by side.

A test-bed VM (no guest OS, vCPUs running) with one qcow2 disk of
``--disk-size``; the "guest" writes ``--data`` in 64 MiB pieces spread over
it (as in backup_cost.py). Then ``--rounds`` rounds of a plain full backup
and an encrypted one (LUKS, aes-256-xts, by QEMU), in alternating order.
Every backup is compared with the disk, the encrypted one through its key.
Reported: the ratio encrypted / plain of the backup job and of the whole
call, and the seconds the encrypted call costs beyond the plain one (the
LUKS key slot made by qemu-img, opened by QEMU). Target: the encrypted job
at most 1.3x the plain one.

Run from the repository root: ``.venv/bin/python bench/encryption_cost.py``."""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import json
import os
import shutil
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import runner  # noqa: E402 pylint: disable=wrong-import-position
from backup_cost import seconds_figure, write_data  # noqa: E402 pylint: disable=wrong-import-position
from harness.checks import backup_args  # noqa: E402 pylint: disable=wrong-import-position
from harness.qemu import DiskSpec  # noqa: E402 pylint: disable=wrong-import-position

JOB_TARGET = 1.3


def parse_args(argv):
    return runner.disk_and_data_args(argv, __doc__, 'what the guest writes before the backups')


def assert_encrypted_same(bench, image, reference, key, what):
    """ContentMismatch unless the encrypted ``image`` reads as ``reference``."""
    spec = {'driver': 'qcow2', 'file': {'driver': 'file', 'filename': image}, 'encrypt': {'key-secret': 'k'}}
    proc = bench.qemu.run_img('compare', '-U', '--object', 'secret,id=k,file=%s' % key, '-F', 'qcow2',
                              'json:' + json.dumps(spec), reference, check=False)
    if proc.returncode != 0:
        raise runner.ContentMismatch('%s: %s differs from %s: %s' % (what, image, reference, proc.stdout.strip()))


def full_backup(bench, vm, key, encrypted, what):
    """(call seconds, job seconds) of one checked full backup into a new repository."""
    repo = os.path.join(bench.workdir, 'repo')
    shutil.rmtree(repo, ignore_errors=True)
    os.mkdir(repo)
    extra = {'encryption_key_file': key} if encrypted else {}
    seconds, result = bench.module('qemu_blockdev_backup', backup_args(vm, repo, level='full', **extra))
    image = result['disks'][0]['file']
    if encrypted:
        assert_encrypted_same(bench, image, vm.image('vda'), key, what)
    else:
        bench.assert_same(image, vm.image('vda'), what)
    if vm.leftovers():
        raise runner.BenchError('%s left things in QEMU: %s' % (what, ', '.join(vm.leftovers())))
    return seconds, result['disks'][0]['duration']


def run(args, bench):
    vm = bench.start_vm([DiskSpec('vda', size=args.disk_size)], name='enc')
    key = os.path.join(bench.workdir, 'key')
    with open(key, 'w') as handle:
        handle.write(os.urandom(24).hex())
    runner.step('%s: the guest writes %s over a %s disk' % (
        bench.qemu.version_string, runner.human(args.data), runner.human(args.disk_size)))
    write_data(vm, args.disk_size, args.data)
    vm.guest_io('vda', 'flush')
    rounds = []
    for number in range(1, args.rounds + 1):
        times = {}
        # Alternate which goes first, so that neither always gets a warm cache.
        for encrypted in ((False, True) if number % 2 else (True, False)):
            name = 'encrypted' if encrypted else 'plain'
            times[name + ' call'], times[name + ' job'] = full_backup(
                bench, vm, key, encrypted, 'round %d %s full' % (number, name))
        runner.step('round %d: %s' % (number, ', '.join('%s %.2f s' % item for item in sorted(times.items()))))
        rounds.append(times)
    column = dict((name, [r[name] for r in rounds]) for name in rounds[0])
    bench.ratio_figure('full: encrypted job / plain job', column['encrypted job'], column['plain job'],
                       target=JOB_TARGET)
    bench.ratio_figure('full: encrypted call / plain call', column['encrypted call'], column['plain call'])
    seconds_figure(bench, 'full: encrypted call - plain call',
                   [r['encrypted call'] - r['plain call'] for r in rounds])
    return {'rounds': rounds, 'options': dict(vars(args))}


if __name__ == '__main__':
    sys.exit(runner.main('encryption_cost', run, parse_args(sys.argv[1:])))
