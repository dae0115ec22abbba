#!/usr/bin/env python
# -*- coding: utf-8 -*-
# Copyright: (c) 2026, vmbackup.qemu developers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

"""How much the guest feels a backup to a slow target.

A test-bed VM (no guest OS) with a qcow2 disk holding ``--data`` bytes; the
"guest" writes 4 KiB at random offsets over that data, one write at a time
(HMP ``qemu-io``, so each latency includes about 1-2 ms of monitor round
trip, the same in every mode). The target is a share limited to ``--rate``
(tests/integration/harness/slowfs.py: a FUSE folder whose writes block the
writer's thread, as NFS does). Per round, three modes:

* ``baseline``: no backup, for ``--baseline-seconds``;
* ``fleecing``: during a full backup with fleecing;
* ``no-fleecing``: during a full backup without (the guest's writes wait
  for copy-before-write to the target: the case fleecing exists for).

Every backup is restored and compared with the disk at its instant. Figures:
p50, p99 and max of each mode (median over the rounds, with the spread),
fleecing's p50 and p99 against the baseline's (targets 1.2x and 1.5x), and
the backup's time against what the share allows (data / rate).

Run from the repository root: ``.venv/bin/python bench/guest_latency.py``."""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import argparse
import os
import random
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import runner  # noqa: E402 pylint: disable=wrong-import-position
from harness.ansible import AnsibleRunner  # noqa: E402 pylint: disable=wrong-import-position
from harness.checks import assert_restores_to, backup_args, guest_content  # noqa: E402 pylint: disable=wrong-import-position
from harness.qemu import DiskSpec, TestVM  # noqa: E402 pylint: disable=wrong-import-position
from harness.slowfs import SlowShare  # noqa: E402 pylint: disable=wrong-import-position

MIB = 1024 * 1024
MODES = ('baseline', 'fleecing', 'no-fleecing')
TARGETS = {'p50': 1.2, 'p99': 1.5}


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n', maxsplit=1)[0])
    parser.add_argument('--disk-mib', type=int, default=1024)
    parser.add_argument('--data-mib', type=int, default=384)
    parser.add_argument('--rate-mib', type=float, default=8, help='the share\'s write rate, MiB/s')
    parser.add_argument('--rounds', type=int, default=3)
    parser.add_argument('--baseline-seconds', type=float, default=10)
    return parser.parse_args(argv)


class GuestWriter(object):
    """4 KiB writes at random offsets of the VM's written data, timed."""

    def __init__(self, vm, data, seed):
        self.vm, self.data, self.rng = vm, data, random.Random(seed)

    def run(self, until):
        took = []
        while not until():
            start = time.monotonic()
            self.vm.write('vda', self.rng.randrange(self.data // 4096) * 4096, 4096, 0x60 + len(took) % 64)
            took.append(time.monotonic() - start)
        return sorted(took)


def summary(took):
    return {'p50': runner.percentile(took, 0.5) * 1000, 'p99': runner.percentile(took, 0.99) * 1000,
            'max': took[-1] * 1000, 'writes': len(took)}


def backup_round(vm, ansible, share, writer, fleecing, round_number):
    """Writes timed during one full backup into ``share``; the backup's seconds."""
    repo = os.path.join(share, 'repo-%s-%d' % ('f' if fleecing else 'n', round_number))
    os.mkdir(repo)
    at_instant = guest_content(vm, 'instant', disks=('vda',))
    started = time.monotonic()
    proc = ansible.spawn('qemu_blockdev_backup', backup_args(vm, repo, level='full', fleecing=fleecing))
    vm.wait_for_job(timeout=120)
    took = writer.run(lambda: proc.poll() is not None)
    result = ansible.collect(proc, timeout=1800)
    seconds = time.monotonic() - started
    if result.get('failed'):
        raise RuntimeError('the backup failed: %s' % result.get('msg'))
    try:
        assert_restores_to(vm, result, at_instant)
    except AssertionError as exc:
        raise runner.ContentMismatch(str(exc))
    return took, seconds


def run(args, bench):
    data, rate = args.data_mib * MIB, args.rate_mib * MIB
    vm = TestVM(bench.qemu, bench.workdir, [DiskSpec('vda', size=args.disk_mib * MIB)], name='lat')
    bench.cleanups.append(vm.kill)
    vm.start()
    vm.qmp('cont')
    for offset in range(0, data, 32 * MIB):
        vm.write('vda', offset, min(32 * MIB, data - offset), 0x51)
    ansible = AnsibleRunner(bench.workdir, env=bench.qemu.env())
    share = SlowShare(os.path.join(bench.workdir, 'backing'), os.path.join(bench.workdir, 'share'), rate)
    share.__enter__()
    bench.cleanups.append(share.__exit__)
    rounds = dict((mode, []) for mode in MODES)
    backup_seconds = dict((mode, []) for mode in MODES[1:])
    for number in range(args.rounds):
        writer = GuestWriter(vm, data, number)
        deadline = time.monotonic() + args.baseline_seconds
        rounds['baseline'].append(summary(writer.run(lambda: time.monotonic() > deadline)))
        for mode in MODES[1:]:
            took, seconds = backup_round(vm, ansible, share.mountpoint, writer, mode == 'fleecing', number)
            rounds[mode].append(summary(took))
            backup_seconds[mode].append(seconds)
            print('round %d %-12s p50 %.2f ms  p99 %.2f ms  max %.0f ms  (%d writes, backup %.1f s)' % (
                number + 1, mode, rounds[mode][-1]['p50'], rounds[mode][-1]['p99'], rounds[mode][-1]['max'],
                len(took), seconds), flush=True)
    report(bench, rounds, backup_seconds, data / rate)
    return {'rounds': rounds, 'backup_seconds': backup_seconds,
            'options': dict(vars(args)), 'share_floor_seconds': data / rate}


def report(bench, rounds, backup_seconds, floor):
    for mode in MODES:
        for stat in ('p50', 'p99', 'max'):
            values = runner.spread([r[stat] for r in rounds[mode]])
            bench.figure('%s %s' % (mode, stat), values['median'], 'ms', spread=values)
    for stat, target in sorted(TARGETS.items()):
        ratios = [f[stat] / b[stat] for f, b in zip(rounds['fleecing'], rounds['baseline'])]
        values = runner.spread(ratios)
        bench.figure('fleecing %s / baseline %s' % (stat, stat), values['median'], 'x',
                     target='<= %sx' % target, met=values['median'] <= target, spread=values)
    for mode, seconds in sorted(backup_seconds.items()):
        values = runner.spread([s / floor for s in seconds])
        bench.figure('%s backup / share floor (%.0f s)' % (mode, floor), values['median'], 'x', spread=values)
    bench.series('Guest 4 KiB write latency during a backup to a slow share (median of rounds)', 'mode', 'ms',
                 dict((stat, [[mode, runner.spread([r[stat] for r in rounds[mode]])['median']] for mode in MODES])
                      for stat in ('p50', 'p99')), kind='bar')


if __name__ == '__main__':
    sys.exit(runner.main('guest_latency', run, parse_args(sys.argv[1:])))
