#!/usr/bin/env python
# -*- coding: utf-8 -*-
# Copyright: (c) 2026, vmbackup.qemu developers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

"""What digests cost a full backup: the same full backup with and without them.

A test-bed VM (no guest OS, vCPUs running) with one qcow2 disk of
``--disk-size``; the "guest" writes ``--data`` in 64 MiB pieces spread over
it. Then ``--rounds`` rounds, each a full backup by
``vmbackup.qemu.qemu_blockdev_backup`` (run ad hoc, as a user does) with
``digests: true`` and one with ``digests: false``, into a fresh repository
each, the order alternating from round to round so that neither always runs
on a warmer cache. Every backup is compared with the disk (nothing writes to
it meanwhile), and each digest recorded is checked against the file.

Target (issue 14): digests on by default if they add at most 10% to the full
backup's time (the whole call, median of the per-round ratios).

Run from the repository root: ``.venv/bin/python bench/digest_cost.py``."""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import hashlib
import os
import shutil
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import runner  # noqa: E402 pylint: disable=wrong-import-position
from backup_cost import write_data  # noqa: E402 pylint: disable=wrong-import-position
from harness.checks import backup_args  # noqa: E402 pylint: disable=wrong-import-position
from harness.qemu import DiskSpec  # noqa: E402 pylint: disable=wrong-import-position

TARGET = 1.10


def parse_args(argv):
    return runner.disk_and_data_args(argv, __doc__, 'what the guest writes before the full backups')


def sha256(path):
    digest = hashlib.sha256()
    with open(path, 'rb') as handle:
        for block in iter(lambda: handle.read(1024 * 1024), b''):
            digest.update(block)
    return digest.hexdigest()


def full_backup(bench, vm, digests, what):
    """(call seconds, result) of a full backup into a fresh repository, checked."""
    repo = os.path.join(bench.workdir, 'repo')
    shutil.rmtree(repo, ignore_errors=True)     # the last backup's: --data each
    os.mkdir(repo)
    seconds, result = bench.module('qemu_blockdev_backup', backup_args(vm, repo, level='full', digests=digests))
    vm.guest_io('vda', 'flush')
    image = result['disks'][0]['file']
    bench.assert_same(image, vm.image('vda'), what)
    if digests and result['disks'][0].get('digest') != sha256(image):
        raise runner.ContentMismatch('%s: the digest recorded is not the SHA-256 of %s' % (what, image))
    if not digests and 'digest' in result['disks'][0]:
        raise runner.BenchError('%s: digests: false still recorded a digest' % what)
    return seconds, result


def one_round(bench, vm, number):
    times = {}
    order = (True, False) if number % 2 else (False, True)
    for digests in order:
        name = 'with' if digests else 'without'
        seconds, result = full_backup(bench, vm, digests, 'round %d, full %s digests' % (number, name))
        times['call ' + name] = seconds
        times['module ' + name] = result['duration']
        times['job ' + name] = result['disks'][0]['duration']
        if digests:
            times['digest'] = result['digest_seconds']
    runner.step('round %d: %s' % (number, ', '.join('%s %.2f s' % item for item in sorted(times.items()))))
    return times


def report(bench, rounds, args):
    column = dict((key, [r[key] for r in rounds]) for key in rounds[0])
    size = '%s disk, %s written' % (runner.human(args.disk_size), runner.human(args.data))
    bench.ratio_figure('full call with / without digests (%s)' % size, column['call with'],
                       column['call without'], target=TARGET)
    bench.ratio_figure('full module work with / without digests', column['module with'],
                       column['module without'])
    for key, label in (('call without', 'full call without digests'), ('call with', 'full call with digests'),
                       ('digest', 'digest_seconds (reading the image back)')):
        values = runner.spread(column[key])
        bench.figure(label, values['median'], 's', spread=values)
    bench.series('Full backup with and without digests (median seconds, %s)' % size, 'what', 'seconds',
                 {'without digests': [[k, runner.spread(column[k + ' without'])['median']]
                                      for k in ('job', 'module', 'call')],
                  'with digests': [[k, runner.spread(column[k + ' with'])['median']]
                                   for k in ('job', 'module', 'call')]}, kind='bar')


def run(args, bench):
    vm = bench.start_vm([DiskSpec('vda', size=args.disk_size)], name='digest')
    runner.step('%s: the guest writes %s over a %s disk' % (
        bench.qemu.version_string, runner.human(args.data), runner.human(args.disk_size)))
    write_data(vm, args.disk_size, args.data)
    vm.guest_io('vda', 'flush')
    full_backup(bench, vm, False, 'warm-up full')      # untimed: the disk's file in the page cache, as later
    rounds = [one_round(bench, vm, number) for number in range(1, args.rounds + 1)]
    report(bench, rounds, args)
    return {'rounds': rounds, 'options': dict(vars(args))}


if __name__ == '__main__':
    sys.exit(runner.main('digest_cost', run, parse_args(sys.argv[1:])))
