#!/usr/bin/env python
# -*- coding: utf-8 -*-
# Copyright: (c) 2026, vmbackup.qemu developers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

"""How the cost of a backup grows: with the disk, the dirty data and the disks.

It answers three questions on a running test-bed VM (no guest OS):

* (a) disk size: full and incremental backups of disks of ``--sizes`` (1, 2,
  4, 8 GiB) with half of each allocated (64 MiB pieces every 128 MiB, written
  into the image with ``qemu-io`` before QEMU starts, and the same bytes into
  the harness's shadow), the incremental after ``--dirty`` bytes of scattered
  64 KiB guest writes, the same at every size. Expected: the full grows with
  the data, the incremental not with the disk (target: incremental at the
  largest size / at the smallest <= 1.2x);
* (b) dirty fraction: incrementals of a ``--fraction-disk`` disk (4 GiB, half
  allocated) after ``--fractions`` percent (0.1, 1, 10) of it was dirtied by
  scattered 64 KiB writes, with the straight-line fit of the job's time
  against the dirty bytes;
* (c) disks: the vCPU pause (``pause_seconds``; fleecing more than one disk
  stops the vCPUs while every disk's filter is put in place) of a full
  backup of 1, 2, 4, 8 disks (``--disk-counts``) of one VM.

Times: the whole ad hoc ``ansible`` call ("call"), the module's ``duration``
and the QEMU jobs' ``disks[].duration`` ("job"); medians over ``--rounds``
with their spread. The guest is idle while a backup runs, so its shadow is
the disk at the backup's instant: every backup, full or incremental, is read
through its chain and compared with it (``qemu-img compare``; exit 1 if it
differs).

Run from the repository root: ``.venv/bin/python bench/scaling.py`` (about 5
minutes), quick: ``--sizes 1G,2G --fraction-disk 1G --rounds 3``."""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import argparse
import os
import random
import shutil
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import runner  # noqa: E402 pylint: disable=wrong-import-position
from runner import GIB, MIB, human  # noqa: E402 pylint: disable=wrong-import-position
from harness.checks import backup_args  # noqa: E402 pylint: disable=wrong-import-position
from harness.names import BITMAP_PREFIX  # noqa: E402 pylint: disable=wrong-import-position
from harness.qemu import DiskSpec, TestVM  # noqa: E402 pylint: disable=wrong-import-position

PIECE = 64 * MIB
CLUSTER = 64 * 1024
MODULE = 'qemu_blockdev_backup'
KINDS = ('call', 'module', 'job')
TARGET = 1.2


def size_list(text):
    return [runner.parse_size(item) for item in text.split(',')]


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n', maxsplit=1)[0])
    parser.add_argument('--sizes', type=size_list, default=size_list('1G,2G,4G,8G'),
                        help='disk sizes of (a), half of each allocated')
    parser.add_argument('--dirty', type=runner.parse_size, default=32 * MIB,
                        help='bytes dirtied before each incremental of (a)')
    parser.add_argument('--fraction-disk', type=runner.parse_size, default=4 * GIB, help='disk of (b)')
    parser.add_argument('--fractions', type=lambda t: [float(x) for x in t.split(',')], default=[0.1, 1, 10],
                        help='percent of the disk dirtied before each incremental of (b)')
    parser.add_argument('--disk-counts', type=lambda t: [int(x) for x in t.split(',')], default=[1, 2, 4, 8])
    parser.add_argument('--rounds', type=int, default=3)
    return parser.parse_args(argv)


def half_allocated_vm(bench, size, name):
    """A running VM whose disk ``vda`` holds a 64 MiB piece every 128 MiB,
    written with qemu-io before QEMU starts; the shadow gets the same bytes."""
    vm = TestVM(bench.qemu, bench.workdir, [DiskSpec('vda', size=size)], name=name)
    commands = []
    with open(vm.shadow('vda'), 'r+b') as shadow:
        for number, offset in enumerate(range(0, size, 2 * PIECE)):
            pattern = 0x40 + number % 64
            commands += ['-c', 'write -P 0x%02x %d %d' % (pattern, offset, min(PIECE, size - offset))]
            shadow.seek(offset)
            shadow.write(bytes([pattern]) * min(PIECE, size - offset))
    proc = subprocess.run([bench.qemu.io, '-t', 'writeback', '-f', 'qcow2'] + commands + [vm.image('vda')],
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, universal_newlines=True,
                          env=bench.qemu.env(), check=False)
    if proc.returncode != 0 or 'failed' in proc.stdout:
        raise runner.BenchError('qemu-io could not prepare %s: %s' % (vm.image('vda'), proc.stdout[-2000:]))
    bench.cleanups.append(vm.kill)
    vm.start()
    vm.qmp('cont')
    return vm


def scatter(vm, size, dirty, rng, pattern):
    """The guest writes ``dirty`` bytes in 64 KiB pieces at distinct random
    cluster offsets of ``vda``; returns the bytes written."""
    clusters = sorted(rng.sample(range(size // CLUSTER), max(1, dirty // CLUSTER)))
    for cluster in clusters:
        vm.write('vda', cluster * CLUSTER, CLUSTER, pattern)
    return len(clusters) * CLUSTER


def backup(bench, vm, repo, level, **extra):
    """One backup, checked against the guest's shadows (the guest is idle, so
    they hold the disks at the instant); its times and pause. Every backup
    starts with the host's page cache clean (sync, untimed)."""
    if not os.path.isdir(repo):
        os.mkdir(repo)
    os.sync()  # untimed: the host's writeback of the last backup would otherwise slow this one
    seconds, result = bench.module(MODULE, backup_args(vm, repo, level=level, **extra))
    if result['level'] != level:
        raise runner.BenchError('asked for a %s backup, got a %s: %s' % (level, result['level'], result['reason']))
    for item in result['disks']:
        bench.assert_same(item['file'], vm.shadow(item['disk']), '%s backup of %s' % (level, item['disk']),
                          reference_format='raw')
    return {'call': seconds, 'module': result['duration'], 'job': max(d['duration'] for d in result['disks']),
            'pause': result['pause_seconds'], 'bytes': sum(d['bytes_written'] for d in result['disks'])}


def forget(vm, repo):
    """Remove a repository and the bitmaps the module keeps in the VM for it."""
    shutil.rmtree(repo)
    for disk in vm.disk_order:
        for name in vm.bitmaps(disk):
            if name.startswith(BITMAP_PREFIX):
                vm.qmp('block-dirty-bitmap-remove', node=vm.format_node(disk), name=name)


def fit(points):
    """Least-squares line through [(x, y)]: slope, intercept and R^2."""
    n = float(len(points))
    mean_x, mean_y = sum(p[0] for p in points) / n, sum(p[1] for p in points) / n
    sxx = sum((p[0] - mean_x) ** 2 for p in points)
    slope = sum((p[0] - mean_x) * (p[1] - mean_y) for p in points) / sxx if sxx else 0.0
    intercept = mean_y - slope * mean_x
    ss_tot = sum((p[1] - mean_y) ** 2 for p in points)
    ss_res = sum((p[1] - intercept - slope * p[0]) ** 2 for p in points)
    return {'slope': slope, 'intercept': intercept, 'r2': 1 - ss_res / ss_tot if ss_tot else 1.0}


def by_size(args, bench):
    """(a), and (b) on the VM whose size is --fraction-disk if (a) has it."""
    rounds, fractions = {}, None
    for size in args.sizes:
        runner.step('(a) %s disk, %s allocated' % (human(size), human(size // 2)))
        vm = half_allocated_vm(bench, size, 'sc%d' % (size // MIB))
        rng = random.Random(size)
        rounds[size] = {'full': [], 'incremental': []}
        for number in range(args.rounds):
            repo = os.path.join(bench.workdir, 'repo-%d-%d' % (size // MIB, number))
            rounds[size]['full'].append(backup(bench, vm, repo, 'full'))
            scatter(vm, size, args.dirty, rng, 0x20 + number)
            rounds[size]['incremental'].append(backup(bench, vm, repo, 'incremental'))
            forget(vm, repo)
            print('  round %d: full job %.2f s, call %.2f s; incremental job %.3f s, call %.2f s' % (
                number + 1, rounds[size]['full'][-1]['job'], rounds[size]['full'][-1]['call'],
                rounds[size]['incremental'][-1]['job'], rounds[size]['incremental'][-1]['call']), flush=True)
        if size == args.fraction_disk:
            fractions = by_fraction(args, bench, vm)
        vm.kill()
        for path in os.listdir(bench.workdir):
            if path.startswith(vm.name + '-'):
                os.unlink(os.path.join(bench.workdir, path))
    if fractions is None:
        fractions = by_fraction(args, bench, half_allocated_vm(bench, args.fraction_disk, 'frac'))
    return rounds, fractions


def by_fraction(args, bench, vm):
    """(b): {percent: [incremental times]} after that much of the disk was dirtied."""
    size = args.fraction_disk
    runner.step('(b) incrementals of a %s disk after %s%% of it changed' % (
        human(size), ', '.join('%g' % f for f in args.fractions)))
    repo = os.path.join(bench.workdir, 'repo-fractions')
    backup(bench, vm, repo, 'full')
    rng = random.Random(1)
    rounds = dict((percent, []) for percent in args.fractions)
    for number in range(args.rounds):
        for percent in args.fractions:
            dirty = scatter(vm, size, int(size * percent / 100), rng, 0x70 + number)
            rounds[percent].append(dict(backup(bench, vm, repo, 'incremental'), dirty=dirty))
            print('  round %d, %g%% (%s): job %.3f s, call %.2f s' % (
                number + 1, percent, human(dirty), rounds[percent][-1]['job'], rounds[percent][-1]['call']),
                flush=True)
    forget(vm, repo)
    return rounds


def by_disks(args, bench):
    """(c): {count: [times and pause]} of full backups of the first ``count`` disks."""
    names = ['vd' + chr(ord('a') + i) for i in range(max(args.disk_counts))]
    runner.step('(c) pause of a fleecing backup of %s disks' % ', '.join(str(c) for c in args.disk_counts))
    vm = bench.start_vm([DiskSpec(name, size=64 * MIB) for name in names], name='disks')
    for index, name in enumerate(names):
        vm.write(name, 0, 16 * MIB, 0x30 + index)
    rounds = dict((count, []) for count in args.disk_counts)
    for number in range(args.rounds):
        for count in args.disk_counts:
            repo = os.path.join(bench.workdir, 'repo-disks-%d-%d' % (count, number))
            rounds[count].append(backup(bench, vm, repo, 'full', disks=names[:count], fleecing=True))
            forget(vm, repo)
            print('  round %d, %d disks: pause %.1f ms, job %.3f s' % (
                number + 1, count, rounds[count][-1]['pause'] * 1000, rounds[count][-1]['job']), flush=True)
    return rounds


def median(values):
    return runner.spread(values)['median']


def report_sizes(bench, rounds):
    small, large = min(rounds), max(rounds)
    lines = {}
    for level in ('full', 'incremental'):
        for size in sorted(rounds):
            for kind in KINDS:
                values = runner.spread([r[kind] for r in rounds[size][level]])
                bench.figure('%s %s, %s disk' % (level, kind, human(size)), values['median'], 's', spread=values)
                lines.setdefault('%s %s' % (level, kind), []).append([size / float(GIB), values['median']])
        for kind in ('call', 'job'):
            bench.ratio_figure('%s %s: %s disk / %s disk' % (level, kind, human(large), human(small)),
                               [r[kind] for r in rounds[large][level]], [r[kind] for r in rounds[small][level]],
                               target=TARGET if level == 'incremental' else None)
    line = fit([(size / 2.0 / GIB, r['job']) for size in rounds for r in rounds[size]['full']])
    bench.figure('full job: seconds per GiB allocated (fit)', line['slope'], 's/GiB', fit=line)
    bench.series('Backup time against disk size (half allocated)', 'disk size (GiB)', 'seconds', lines)


def report_fractions(bench, rounds):
    lines = {}
    for percent in sorted(rounds):
        for kind in KINDS:
            values = runner.spread([r[kind] for r in rounds[percent]])
            bench.figure('incremental %s, %g%% dirty' % (kind, percent), values['median'], 's', spread=values,
                         dirty_bytes=rounds[percent][0]['dirty'])
            lines.setdefault('incremental ' + kind, []).append(
                [rounds[percent][0]['dirty'] / float(MIB), values['median']])
    for kind in ('job', 'call'):
        line = fit([(r['dirty'] / float(GIB), r[kind]) for values in rounds.values() for r in values])
        bench.figure('incremental %s: seconds per dirty GiB (fit)' % kind, line['slope'], 's/GiB', fit=line)
        bench.figure('incremental %s: fixed cost (fit)' % kind, line['intercept'], 's', fit=line)
    bench.series('Incremental time against dirty data', 'dirty data (MiB)', 'seconds', lines)


def report_disks(bench, rounds):
    for count in sorted(rounds):
        values = runner.spread([r['pause'] * 1000 for r in rounds[count]])
        bench.figure('pause, %d disk%s' % (count, 's' if count > 1 else ''), values['median'], 'ms', spread=values)
    bench.series('vCPU pause against the number of disks', 'disks', 'pause (ms)',
                 {'pause': [[str(count), median([r['pause'] * 1000 for r in rounds[count]])] for count in sorted(rounds)]},
                 kind='bar')


def run(args, bench):
    sizes, fractions = by_size(args, bench)
    disks = by_disks(args, bench)
    report_sizes(bench, sizes)
    report_fractions(bench, fractions)
    report_disks(bench, disks)
    return {'options': dict(vars(args)),
            'rounds': {'sizes': dict((str(s), r) for s, r in sizes.items()),
                       'fractions': dict(('%g' % p, r) for p, r in fractions.items()),
                       'disks': dict((str(c), r) for c, r in disks.items())}}


if __name__ == '__main__':
    sys.exit(runner.main('scaling', run, parse_args(sys.argv[1:])))
