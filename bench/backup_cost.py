#!/usr/bin/env python
# -*- coding: utf-8 -*-
# Copyright: (c) 2026, vmbackup.qemu developers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

"""What an ad hoc backup call costs: full and incremental against their floors.

A test-bed VM (no guest OS, vCPUs running) with one qcow2 disk of
``--disk-size``; the "guest" writes ``--data`` in 64 MiB pieces spread over
it. Then ``--rounds`` rounds of, side by side:

* the floors: ``ansible localhost -m ping`` (what any module call costs) and
  a durable ``qemu-img convert -t writeback`` of the disk (what copying the
  data costs);
* a full backup by ``vmbackup.qemu.qemu_blockdev_backup``, run ad hoc as a
  user does;
* the guest dirties ``--dirty`` of the disk in 64 KiB writes scattered over
  it, and an incremental backup;
* the same incremental once more, its AnsiballZ payload run directly (kept
  with ANSIBLE_KEEP_REMOTE_FILES), to split the call into Ansible's part,
  the module process's start and the module's own work.

Every backup is compared with the disk (nothing writes to it meanwhile).
Targets: the full's job at most 1.0x the durable copy, and its whole call at
most copy + ping + 0.5 s; the incremental's whole call at most ping + 0.5 s
and 5% of the full's.

Run from the repository root: ``.venv/bin/python bench/backup_cost.py``."""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import glob
import json
import os
import random
import shutil
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import runner  # noqa: E402 pylint: disable=wrong-import-position
from harness.checks import backup_args  # noqa: E402 pylint: disable=wrong-import-position
from harness.qemu import DiskSpec  # noqa: E402 pylint: disable=wrong-import-position

MIB = runner.MIB
PIECE = 64 * MIB
DIRTY_WRITE = 64 * 1024
ALLOWANCE = 0.5         # seconds a call may cost beyond its floors
INCREMENTAL_SHARE = 0.05


def parse_args(argv):
    def dirty(parser):
        parser.add_argument('--dirty', type=float, default=1.0, help='percent of the disk dirtied per incremental')
    return runner.disk_and_data_args(argv, __doc__, 'what the guest writes before the full backups', dirty)


def write_data(vm, disk_size, data):
    """``data`` bytes in 64 MiB pieces spread evenly over the disk."""
    pieces = -(-data // PIECE)
    stride = max(PIECE, (disk_size // pieces) // PIECE * PIECE)
    for index in range(pieces):
        length = min(PIECE, data - index * PIECE)
        vm.guest_io('vda', 'write -P 0x%02x %d %d' % (0x41 + index % 0x3f, index * stride, length))


def dirty(vm, disk_size, percent, rng, pattern):
    """64 KiB writes at random places, ``percent`` of the disk in all."""
    slots = disk_size // DIRTY_WRITE
    for slot in rng.sample(range(slots), max(1, int(slots * percent / 100.0))):
        vm.guest_io('vda', 'write -P 0x%02x %d %d' % (pattern, slot * DIRTY_WRITE, DIRTY_WRITE))


class Round(object):
    """One round's backups, all checked against the disk."""

    def __init__(self, bench, vm, repo):
        self.bench, self.vm, self.repo = bench, vm, repo

    def backup(self, level, what):
        seconds, result = self.bench.module('qemu_blockdev_backup', backup_args(self.vm, self.repo, level=level))
        self.check(result, what)
        return seconds, result

    def check(self, result, what):
        self.vm.guest_io('vda', 'flush')
        self.bench.assert_same(result['disks'][0]['file'], self.vm.image('vda'), what)
        if self.vm.leftovers():
            raise runner.BenchError('%s left things in QEMU: %s' % (what, ', '.join(self.vm.leftovers())))

    def direct_payload(self, what):
        """(process seconds, result) of the last call's payload run again without Ansible."""
        seconds, result = run_payload(self.bench, 'qemu_blockdev_backup')
        if result.get('failed'):
            raise runner.BenchError('%s failed: %s' % (what, result.get('msg')))
        self.check(result, what)
        return seconds, result


def run_payload(bench, module):
    """(seconds, result) of the newest kept AnsiballZ payload of ``module`` run as its own process."""
    payloads = glob.glob(os.path.join(bench.workdir, 'ansible-remote', '*', 'AnsiballZ_%s.py' % module))
    payload = max(payloads, key=os.path.getmtime)
    seconds, proc = runner.timed(subprocess.run, [sys.executable, payload], stdout=subprocess.PIPE,
                                 universal_newlines=True, env=bench.ansible.env, check=False)
    return seconds, json.loads(proc.stdout)


def one_round(bench, vm, args, number, rng):
    """The figures of one round, in seconds."""
    out = os.path.join(bench.workdir, 'copy.qcow2')
    times = {'ping': bench.ansible_floor(), 'ping process': run_payload(bench, 'ping')[0],
             'copy': bench.durable_copy(vm.image('vda'), out)}
    os.unlink(out)
    repo = os.path.join(bench.workdir, 'repo')
    shutil.rmtree(repo, ignore_errors=True)     # the last round's: 2 GiB each
    os.mkdir(repo)
    backups = Round(bench, vm, repo)
    times['full call'], full = backups.backup('full', 'round %d full' % number)
    times['full job'], times['full module'] = full['disks'][0]['duration'], full['duration']
    dirty(vm, args.disk_size, args.dirty, rng, 0x60 + number)
    times['incremental call'], inc = backups.backup('incremental', 'round %d incremental' % number)
    times['incremental module'] = inc['duration']
    dirty(vm, args.disk_size, args.dirty, rng, 0x70 + number)
    times['incremental process'], direct = backups.direct_payload('round %d direct incremental' % number)
    times['incremental direct module'] = direct['duration']
    runner.step('round %d: %s' % (number, ', '.join('%s %.2f s' % item for item in sorted(times.items()))))
    return times


def report(bench, rounds):
    column = dict((key, [r[key] for r in rounds]) for key in rounds[0])
    bench.ratio_figure('full: backup job / durable copy', column['full job'], column['copy'], target=1.0)
    beyond = [r['full call'] - r['copy'] - r['ping'] for r in rounds]
    seconds_figure(bench, 'full: call - (durable copy + ping)', beyond, ALLOWANCE)
    seconds_figure(bench, 'incremental: call - ping', [r['incremental call'] - r['ping'] for r in rounds],
                   ALLOWANCE)
    bench.ratio_figure('incremental call / full call', column['incremental call'], column['full call'],
                       target=INCREMENTAL_SHARE)
    bench.ratio_figure('incremental module work / full module work', column['incremental module'],
                       column['full module'], target=INCREMENTAL_SHARE)
    parts = breakdown(rounds)
    for label, values in parts:
        seconds_figure(bench, 'incremental call split: ' + label, values)
    bench.series('Where an incremental call\'s time goes (median seconds)', 'part', 'seconds',
                 {'incremental call': [[label, runner.spread(values)['median']] for label, values in parts]},
                 kind='bar')
    bench.series('Full backup vs its floors (median seconds)', 'what', 'seconds',
                 {'full': [[key, runner.spread(column[key])['median']]
                           for key in ('copy', 'full job', 'full module', 'full call', 'ping')]}, kind='bar')


def breakdown(rounds):
    """The incremental call as Ansible's controller side, the module process's
    start and the module's work, each beside the same part of a ping."""
    def column(part):
        return [part(r) for r in rounds]
    return [('controller (ansible start, payload, result)',
             column(lambda r: r['incremental call'] - r['incremental process'])),
            ('  the same for ping', column(lambda r: r['ping'] - r['ping process'])),
            ('module process start and imports',
             column(lambda r: r['incremental process'] - r['incremental direct module'])),
            ('  the same for ping (its whole process)', column(lambda r: r['ping process'])),
            ('module work', column(lambda r: r['incremental direct module']))]


def seconds_figure(bench, label, values, target=None):
    values = runner.spread(values)
    bench.figure(label, values['median'], 's', target=None if target is None else '<= %s s' % target,
                 met=None if target is None else values['median'] <= target, spread=values)


def run(args, bench):
    vm = bench.start_vm([DiskSpec('vda', size=args.disk_size)], name='cost')
    bench.ansible.env['ANSIBLE_KEEP_REMOTE_FILES'] = '1'
    runner.step('%s: the guest writes %s over a %s disk' % (
        bench.qemu.version_string, runner.human(args.data), runner.human(args.disk_size)))
    write_data(vm, args.disk_size, args.data)
    vm.guest_io('vda', 'flush')
    rng = random.Random(1)
    bench.durable_copy(vm.image('vda'), os.path.join(bench.workdir, 'warm.qcow2'))
    os.unlink(os.path.join(bench.workdir, 'warm.qcow2'))
    rounds = [one_round(bench, vm, args, number, rng) for number in range(1, args.rounds + 1)]
    report(bench, rounds)
    return {'rounds': rounds, 'options': dict(vars(args))}


if __name__ == '__main__':
    sys.exit(runner.main('backup_cost', run, parse_args(sys.argv[1:])))
