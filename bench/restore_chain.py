#!/usr/bin/env python
# -*- coding: utf-8 -*-
# Copyright: (c) 2026, vmbackup.qemu developers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

"""Restore of a long incremental chain vs ``qemu-img convert`` of one image.

A test-bed VM (no guest OS) with one qcow2 disk; the "guest" writes half of
it (32 MiB every 64 MiB), then a full backup and ``--incrementals`` rounds
of (~16 MiB of guest writes, half over old data, half in new areas;
incremental backup). The reference is one plain qcow2 image holding the same
guest data (made from the harness's shadow file).

Per round (``--rounds``), every input read into the page cache before each
step is timed:

* ``qemu-img convert -m 8 -W`` of the reference (the restore's own options):
  the target's floor; and the durable floor (the same convert with
  ``-t writeback``, flushed on close);
* vmbackup.qemu.qemu_backup_restore of the newest point through ansible ad
  hoc, the whole call, with verify false and with verify true;
* where the restore's time goes, each part run on its own: ansible's fixed
  start (``ansible -m ping``), the chain check the module runs
  (plugins/module_utils/restore.py, in this process) and the convert of the
  chain's top;
* diagnostics (``--no-diagnostics`` skips them): one ``qemu-img check`` after
  the other (the module's check before issue 9), bare ``qemu-img`` start-up
  x images, the convert of the full alone (the cost of the chain's depth).

Every restore timed is compared with what the guest wrote (exit 1 if it
differs). Target: the restore (verify false) at most 1.3x the convert.

Run from the repository root: ``.venv/bin/python bench/restore_chain.py``."""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import argparse
import json
import os
import random
import statistics
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import runner  # noqa: E402 pylint: disable=wrong-import-position
from harness.checks import backup_args  # noqa: E402 pylint: disable=wrong-import-position
from harness.collection import collections_path  # noqa: E402 pylint: disable=wrong-import-position
from harness.qemu import DiskSpec  # noqa: E402 pylint: disable=wrong-import-position

sys.path.insert(0, collections_path())
from ansible_collections.vmbackup.qemu.plugins.module_utils import qemu_img  # noqa: E402 pylint: disable=wrong-import-position
from ansible_collections.vmbackup.qemu.plugins.module_utils import restore  # noqa: E402 pylint: disable=wrong-import-position

MIB = runner.MIB
STRIDE = 64 * MIB          # the full backup's data: one piece every STRIDE bytes ...
PIECE = 32 * MIB           # ... of PIECE bytes (half the disk)
ROUND_PIECES = (8 * MIB, 4 * MIB, 3 * MIB, 1 * MIB)     # one incremental round's writes
ALIGN = 64 * 1024
TARGET = 1.3
DISK = 'vda'
FAST = ['-m', '8', '-W', '-o', 'cluster_size=65536']    # what qemu_img.convert() gives qemu-img convert

# What is timed, per round: label -> seconds.
CONVERT = 'qemu-img convert (reference)'
DURABLE = 'durable copy (reference, -t writeback)'
RESTORE = 'restore, whole call (verify: false)'
RESTORE_VERIFY = 'restore, whole call (verify: true)'
ANSIBLE = 'restore: ansible and module start'
CHECK = 'restore: chain check'
CHAIN_CONVERT = 'restore: convert of the chain top'
REST = 'restore: the rest of its work'
PING = 'ansible -m ping (fixed start of any call)'
SERIAL_CHECKS = 'diag: qemu-img check x images, one after another'
SPAWNS = 'diag: qemu-img --version x images'
FULL_ALONE = 'diag: convert of the full alone'
SPLIT = (ANSIBLE, CHECK, CHAIN_CONVERT, REST)


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n', maxsplit=1)[0])
    parser.add_argument('--disk-size', type=runner.parse_size, default=runner.parse_size('2G'),
                        help='virtual size of the VM disk, a multiple of 64M; the full backup holds half of it')
    parser.add_argument('--incrementals', type=int, default=30, help='incremental backups after the full')
    parser.add_argument('--rounds', type=int, default=3)
    parser.add_argument('--no-diagnostics', action='store_true', help='skip the diagnostic steps')
    parser.add_argument('--seed', type=int, default=1, help='seed of the incremental rounds\' write offsets')
    parser.add_argument('--workdir', default='/var/tmp', help='where the (removed afterwards) work directory goes')
    args = parser.parse_args(argv)
    if args.rounds < 3:
        parser.error('--rounds must be at least 3 (medians with their spread)')
    if args.incrementals < 0:
        parser.error('--incrementals must not be negative')
    if args.disk_size < 2 * STRIDE or args.disk_size % STRIDE:
        parser.error('--disk-size must be a multiple of 64 MiB, at least 128 MiB')
    return args


def round_layout(disk_size, rng):
    """(offset, length) of one incremental round's writes: half over data of
    the full backup, half in areas the full left empty."""
    pieces = list(ROUND_PIECES)
    rng.shuffle(pieces)
    writes = []
    for index, length in enumerate(pieces):
        area = rng.randrange(disk_size // STRIDE) * STRIDE + (PIECE if index % 2 else 0)
        writes.append((area + rng.randrange((PIECE - length) // ALIGN + 1) * ALIGN, length))
    return writes


def prime(paths):
    """Read ``paths`` into the page cache (and let earlier write-back finish):
    every timed step starts warm, none is charged for the disk."""
    os.sync()
    buf = bytearray(8 * MIB)
    for path in paths:
        with open(path, 'rb', buffering=0) as handle:
            while handle.readinto(buf):
                pass


def unlink(path):
    if os.path.lexists(path):
        os.unlink(path)


def img(bench, *args):
    """Seconds of ``qemu-img ARGS`` (the benchmark's QEMU); BenchError when it fails
    (for check: finds more than leaked clusters)."""
    seconds, proc = runner.timed(bench.qemu.run_img, *args, check=False)
    if proc.returncode not in ((qemu_img.CHECK_OK, qemu_img.CHECK_LEAKS) if args[0] == 'check' else (0,)):
        raise runner.BenchError('qemu-img %s failed (%d): %s' % (args[0], proc.returncode, proc.stdout.strip()))
    return seconds


class Chain(object):
    """The VM, its repository of one full + N incrementals, and the reference image."""

    def __init__(self, bench, args):
        self.bench, self.args = bench, args
        self.out = os.path.join(bench.workdir, 'out')      # repository and outputs: one filesystem
        self.repo = os.path.join(self.out, 'repo')
        os.makedirs(self.repo)
        self.vm = bench.start_vm([DiskSpec(DISK, size=args.disk_size)])
        self.shadow = self.vm.shadow(DISK)
        self.reference = os.path.join(self.out, 'reference.qcow2')
        self.files = []          # the chain's images, full first
        self.backup_seconds = []

    def backup(self, level):
        seconds, result = self.bench.module('qemu_blockdev_backup', backup_args(self.vm, self.repo))
        if result.get('level') != level or len(result.get('disks', [])) != 1:
            raise runner.BenchError('expected a %s backup of one disk, got %s' % (level, result))
        self.files.append(result['disks'][0]['file'])
        self.backup_seconds.append(seconds)

    def build(self):
        size = self.args.disk_size
        runner.step('%s: guest writes %s (%s every %s); full backup' % (
            self.bench.qemu.version_string, runner.human(size // 2), runner.human(PIECE), runner.human(STRIDE)))
        for index, offset in enumerate(range(0, size, STRIDE)):
            self.vm.write(DISK, offset, PIECE, 0x01 + index % 0xfe)
        self.backup('full')
        rng = random.Random(self.args.seed)
        for number in range(1, self.args.incrementals + 1):
            for index, (offset, length) in enumerate(round_layout(size, rng)):
                self.vm.write(DISK, offset, length, 0x80 + (number * 4 + index) % 0x7f)
            self.backup('incremental')
            if number % 10 == 0 or number == self.args.incrementals:
                runner.step('%d/%d incremental backups' % (number, self.args.incrementals))
        img(self.bench, 'convert', '-q', '-f', 'raw', '-O', 'qcow2', '-o', 'cluster_size=65536',
            self.shadow, self.reference)

    def facts(self):
        """What the chain and the reference hold, for the JSON file."""
        def extents(path):
            mapped = self.bench.qemu.run_img('map', '--output=json', '-U', path).stdout
            data = [e for e in json.loads(mapped) if e['data']]
            return sum(e['length'] for e in data), len(data)
        guest_bytes, reference_extents = extents(self.reference)
        return {'images': len(self.files), 'guest_data_bytes': guest_bytes,
                'extents_reference': reference_extents, 'extents_chain_top': extents(self.files[-1])[1],
                'chain_allocated_bytes': sum(os.stat(p).st_blocks * 512 for p in self.files),
                'backup_seconds': runner.spread(self.backup_seconds)}


class Rounds(object):
    """The timed steps; ``self.times`` maps a label to its seconds, one per round."""

    def __init__(self, bench, chain):
        self.bench, self.chain = bench, chain
        self.times = {}

    def record(self, label, seconds):
        self.times.setdefault(label, []).append(seconds)

    def output(self, name, sources):
        path = os.path.join(self.chain.out, name)
        unlink(path)
        prime(sources)
        return path

    def floors(self):
        ref = self.chain.reference
        dest = self.output('convert.qcow2', [ref])
        self.record(CONVERT, img(self.bench, 'convert', '-q', '-f', 'qcow2', '-O', 'qcow2', *(FAST + [ref, dest])))
        self.bench.assert_same(dest, self.chain.shadow, 'qemu-img convert of the reference', reference_format='raw')
        dest = self.output('durable.qcow2', [ref])
        self.record(DURABLE, self.bench.durable_copy(ref, dest, options=FAST))
        unlink(dest)

    def module(self, number, verify):
        chain = self.chain
        dest = self.output('restored.qcow2', chain.files)
        params = {'target_dir': chain.repo, 'vm_name': chain.vm.name, 'disk': DISK, 'dest': dest,
                  'format': 'qcow2', 'verify': verify}
        seconds, result = self.bench.module('qemu_backup_restore', params)
        if [os.path.realpath(p) for p in result.get('chain') or []] != [os.path.realpath(p) for p in chain.files]:
            raise runner.BenchError('round %d: the restore read %s, not the chain of %d images' % (
                number, result.get('chain'), len(chain.files)))
        self.bench.assert_same(dest, chain.shadow, 'round %d restore (verify: %s)' % (number, verify),
                               reference_format='raw')
        unlink(dest)
        self.record(RESTORE_VERIFY if verify else RESTORE, seconds)

    def split(self, number):
        """The restore's work run again in this process (restore.restore()), its chain check and
        convert timed apart; the whole call minus that is ansible's (and the module's start)."""
        chain, parts = self.chain, {}

        def timing(label, call):
            def wrapper(*args):
                seconds, result = runner.timed(call, *args)
                parts[label] = parts.get(label, 0) + seconds
                return result
            return wrapper

        dest = self.output('direct.qcow2', chain.files)
        params = {'target_dir': chain.repo, 'vm_name': chain.vm.name, 'disk': DISK, 'dest': dest,
                  'format': 'qcow2', 'verify': False, 'backup_id': None, 'force': False}
        originals = restore.check_chain, qemu_img.convert
        restore.check_chain, qemu_img.convert = timing(CHECK, originals[0]), timing(CHAIN_CONVERT, originals[1])
        try:
            seconds, result = runner.timed(restore.restore, params, False)
        finally:
            restore.check_chain, qemu_img.convert = originals
        if result['chain'] != chain.files:
            raise runner.BenchError('round %d: restore.restore() read %s' % (number, result['chain']))
        self.bench.assert_same(dest, chain.shadow, 'round %d restore.restore()' % number, reference_format='raw')
        unlink(dest)
        self.record(ANSIBLE, self.times[RESTORE][-1] - seconds)
        self.record(CHECK, parts[CHECK])
        self.record(CHAIN_CONVERT, parts[CHAIN_CONVERT])
        self.record(REST, seconds - parts[CHECK] - parts[CHAIN_CONVERT])
        self.record(PING, self.bench.ansible_floor())

    def diagnostics(self):
        files = self.chain.files
        prime(files)
        self.record(SERIAL_CHECKS, sum(img(self.bench, 'check', '-U', '--output=human', path) for path in files))
        self.record(SPAWNS, sum(img(self.bench, '--version') for _path in files))
        dest = self.output('full.qcow2', files[:1])
        self.record(FULL_ALONE, img(self.bench, 'convert', '-q', '-f', 'qcow2', '-O', 'qcow2',
                                    *(FAST + [files[0], dest])))
        unlink(dest)

    def run(self, rounds, diagnostics):
        for number in range(1, rounds + 1):
            self.floors()
            self.module(number, verify=False)
            self.split(number)
            self.module(number, verify=True)
            if diagnostics:
                self.diagnostics()
            runner.step('round %d/%d: convert %.2f s, durable %.2f s | restore %.2f s = ansible %.2f + check '
                        '%.2f + convert %.2f + rest %.2f | verify: true %.2f s' % (
                            (number, rounds) + tuple(self.times[label][-1] for label in (
                                CONVERT, DURABLE, RESTORE) + SPLIT + (RESTORE_VERIFY,))))


def report(bench, times, facts):
    for label in sorted(times, key=list(times).index):
        values = runner.spread(times[label])
        bench.figure(label, values['median'], 's', spread=values)
    bench.ratio_figure('restore / qemu-img convert', times[RESTORE], times[CONVERT], target=TARGET,
                       images=facts['images'], guest_data_bytes=facts['guest_data_bytes'])
    bench.ratio_figure('restore / durable copy', times[RESTORE], times[DURABLE])
    bench.ratio_figure('restore (verify: true) / qemu-img convert', times[RESTORE_VERIFY], times[CONVERT])
    bench.ratio_figure('convert of the chain top / qemu-img convert', times[CHAIN_CONVERT], times[CONVERT])
    bench.ratio_figure('restore without ansible / qemu-img convert',
                       [r - a for r, a in zip(times[RESTORE], times[ANSIBLE])], times[CONVERT])
    median = dict((label, statistics.median(values)) for label, values in times.items())
    bench.series('Where the restore of %d images goes (%s of guest data), medians' % (
        facts['images'], runner.human(facts['guest_data_bytes'])), '', 'seconds', {
            'restore (verify: false)': [[label, median[label]] for label in SPLIT],
            'floors': [[label, median[label]] for label in (CONVERT, DURABLE)]}, kind='bar')


class QemuImgRunner(object):
    """What qemu_img.bind() needs of an AnsibleModule, for restore.py run in
    this process with the benchmark's qemu-img."""

    def __init__(self, path):
        self.path = path

    def get_bin_path(self, name):
        return self.path if name == 'qemu-img' else None

    def run_command(self, args, umask=None):
        proc = subprocess.run(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True,
                              check=False, preexec_fn=(lambda: os.umask(umask)) if umask is not None else None)
        return proc.returncode, proc.stdout, proc.stderr


def run(args, bench):
    # restore.py's checks, run in this process, must use the benchmark's qemu-img.
    os.environ.update(bench.qemu.env())
    qemu_img.bind(QemuImgRunner(bench.qemu.img))
    chain = Chain(bench, args)
    chain.build()
    facts = chain.facts()
    runner.step('chain of %d images, %s of guest data (%d extents through the top, %d in the reference)' % (
        facts['images'], runner.human(facts['guest_data_bytes']), facts['extents_chain_top'],
        facts['extents_reference']))
    rounds = Rounds(bench, chain)
    rounds.run(args.rounds, not args.no_diagnostics)
    report(bench, rounds.times, facts)
    return {'options': dict(vars(args)), 'chain': facts, 'times': rounds.times}


if __name__ == '__main__':
    ARGS = parse_args(sys.argv[1:])
    sys.exit(runner.main('restore_chain', run, ARGS, workdir_parent=ARGS.workdir))
