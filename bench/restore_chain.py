#!/usr/bin/env python
# -*- coding: utf-8 -*-
# Copyright: (c) 2026, vmbackup.qemu developers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

"""Restore of a long incremental chain vs. ``qemu-img convert`` of one image.

Starts a test-bed VM (tests/integration/harness) with one qcow2 disk, lets
the "guest" write about half of it (32 MiB pieces every 64 MiB), takes a full
backup with vmbackup.qemu.qemu_blockdev_backup, then ``--incrementals``
rounds of (the guest writes ~16 MiB, some over earlier data, some in new
areas; incremental backup). A plain qcow2 image holding the same guest
content (made from the harness's shadow file) is the reference.

Then, ``--rounds`` times, alternating:

- ``qemu-img convert -m 8 -W`` of the reference (the same options the restore
  uses: the fair comparison), and plain ``qemu-img convert`` for information;
- vmbackup.qemu.qemu_backup_restore of the newest point through ansible
  (verify: false, and verify: true reported separately);
- the restore's data work run directly: ``qemu-img check`` of every image of
  the chain and ``qemu-img convert`` of the chain's top, as
  plugins/module_utils/restore.py does, so that ansible's fixed start-up cost
  is reported apart from the work that grows with the data;
- a few diagnostic variants that show where the time of the restore goes.

The restored image is compared with what the guest wrote: a benchmark of a
wrong restore is worthless.

Exit status: 0 when the benchmark ran (whatever the ratio: it informs, it
does not gate), 1 when the restore differs from the guest's data, 2 on any
other failure. See bench/README.md."""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import argparse
import os
import random
import re
import resource
import shutil
import signal
import statistics
import sys
import tempfile
import threading
import time
import traceback

REPO = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), '..'))
sys.path.insert(0, os.path.join(REPO, 'tests', 'integration'))

from harness.ansible import AnsibleRunner  # noqa: E402 pylint: disable=wrong-import-position
from harness.qemu import DiskSpec, QemuInstall, TestVM  # noqa: E402 pylint: disable=wrong-import-position

KIB = 1024
MIB = 1024 * KIB
GIB = 1024 * MIB
STRIDE = 64 * MIB          # the full backup's data: one piece every STRIDE bytes ...
PIECE = 32 * MIB           # ... of PIECE bytes (half the disk)
ROUND_DATA = 16 * MIB      # what the guest writes before each incremental
ROUND_PIECES = (8 * MIB, 4 * MIB, 3 * MIB, 1 * MIB)
ALIGN = 64 * KIB
TARGET_RATIO = 1.3
DISK = 'vda'
UNITS = {'': 1, 'K': KIB, 'M': MIB, 'G': GIB, 'T': 1024 * GIB}

# What plugins/module_utils/qemu_img.py runs for a restore to qcow2.
CHECK = ['check', '-U', '--output=human']
CONVERT = ['convert', '-q', '-f', 'qcow2', '-O', 'qcow2']
FAST = ['-m', '8', '-W']
CLUSTER = ['-o', 'cluster_size=65536']

# Row labels, in the order of the table.
REF_FAST = 'qemu-img convert -m 8 -W (reference image)'
REF_PLAIN = 'qemu-img convert (reference image, plain)'
MODULE = 'restore module, ansible wall (verify: false)'
MODULE_VERIFY = 'restore module, ansible wall (verify: true)'
WORK = 'restore data work (checks + convert)'
WORK_CHECKS = '  qemu-img check x N (chain images)'
WORK_CONVERT = '  qemu-img convert -m 8 -W (chain top)'
VERIFY_COMPARE = '  qemu-img compare (verify: true adds)'
OVERHEAD = 'ansible + module overhead (wall - data work)'
DIAG_CHAIN_PLAIN = 'diag: convert chain top, plain'
DIAG_CHAIN_M16 = 'diag: convert chain top, -m 16 -W'
DIAG_FULL_ONLY = 'diag: convert -m 8 -W of the full alone'
DIAG_DEPTH = 'diag: convert -m 8 -W, point at depth %d'
DIAG_SPAWN = 'diag: qemu-img --version x N (start-up)'
DIAG_OVERLAP = 'diag: checks (2 threads) during the convert'
DIAG_CHAIN_INFO = 'diag: qemu-img info --backing-chain (1 call)'
ORDER = [REF_FAST, REF_PLAIN, MODULE, MODULE_VERIFY, WORK, WORK_CHECKS, WORK_CONVERT, VERIFY_COMPARE, OVERHEAD,
         DIAG_CHAIN_PLAIN, DIAG_CHAIN_M16, DIAG_FULL_ONLY, DIAG_SPAWN, DIAG_CHAIN_INFO, DIAG_OVERLAP]
DEPTH_ROWS_AFTER = DIAG_FULL_ONLY
# Rows that handle all the guest data of the newest point (MiB/s is shown for them).
RATE_ROWS = (REF_FAST, REF_PLAIN, MODULE, MODULE_VERIFY, WORK, WORK_CONVERT, VERIFY_COMPARE, DIAG_CHAIN_PLAIN,
             DIAG_CHAIN_M16, DIAG_OVERLAP)


class BenchError(Exception):
    """The benchmark could not run."""


class ContentMismatch(BenchError):
    """The restore does not hold what the guest wrote."""


def parse_size(text):
    """'4G', '512M', '2GiB', '1073741824' -> bytes (binary units)."""
    match = re.match(r'^\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(?:i?B)?\s*$', text, re.IGNORECASE)
    if not match:
        raise argparse.ArgumentTypeError('not a size: %r (examples: 2G, 512M, 1073741824)' % text)
    size = int(float(match.group(1)) * UNITS[match.group(2).upper()])
    if size <= 0:
        raise argparse.ArgumentTypeError('size must be positive: %r' % text)
    return size


def human(size):
    for unit, factor in (('GiB', GIB), ('MiB', MIB), ('KiB', KIB)):
        if size >= factor:
            return '%.4g %s' % (size / float(factor), unit)
    return '%d B' % size


def parse_args(argv):
    parser = argparse.ArgumentParser(
        description='Time vmbackup.qemu.qemu_backup_restore of the newest point of a chain (one full + N '
                    'incrementals) against qemu-img convert of one plain qcow2 image holding the same data, '
                    'and print the ratio (target <= %.1fx).' % TARGET_RATIO)
    parser.add_argument('--disk-size', type=parse_size, default=parse_size('2G'),
                        help='virtual size of the VM disk; the full backup holds half of it (default: 2G)')
    parser.add_argument('--incrementals', type=int, default=30,
                        help='incremental backups after the full, ~16 MiB of new guest data each (default: 30)')
    parser.add_argument('--rounds', type=int, default=2,
                        help='rounds of (convert, restore), alternating; best and median are reported (default: 2)')
    parser.add_argument('--workdir', default=None,
                        help='directory for the VM, the repository and all outputs; a fresh subdirectory is made '
                             'in it and removed afterwards (default: a temporary directory under /var/tmp)')
    parser.add_argument('--no-diagnostics', action='store_true',
                        help='skip the diagnostic variants (plain convert of the chain, -m 16, the full alone, ...)')
    parser.add_argument('--seed', type=int, default=1,
                        help='seed of the incremental rounds\' write offsets (default: 1)')
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error('--rounds must be at least 1')
    if args.incrementals < 0:
        parser.error('--incrementals must not be negative')
    if args.disk_size < 2 * STRIDE or args.disk_size % STRIDE:
        parser.error('--disk-size must be a multiple of %s, at least %s' % (human(STRIDE), human(2 * STRIDE)))
    return args


def full_layout(disk_size):
    """(offset, length) of the writes before the full backup."""
    return [(start, PIECE) for start in range(0, disk_size, STRIDE)]


def round_layout(disk_size, rng):
    """(offset, length) of one incremental round's writes: ROUND_DATA bytes,
    half over data of the full backup, half in areas the full left empty."""
    pieces = list(ROUND_PIECES)
    rng.shuffle(pieces)
    writes = []
    for index, length in enumerate(pieces):
        area = rng.randrange(disk_size // STRIDE) * STRIDE
        if index % 2:
            area += PIECE          # the empty half of the stride: new data
        offset = area + rng.randrange((PIECE - length) // ALIGN + 1) * ALIGN
        writes.append((offset, length))
    return writes


def step(text):
    print('==> ' + text, flush=True)


class Cpu(object):
    """User and system CPU seconds."""

    def __init__(self, user=0.0, system=0.0):
        self.user = user
        self.system = system

    def __add__(self, other):
        return Cpu(self.user + other.user, self.system + other.system)

    def __sub__(self, other):
        return Cpu(self.user - other.user, self.system - other.system)

    @property
    def total(self):
        return self.user + self.system


def children_cpu():
    """CPU used so far by the child processes waited for (and their waited-for children)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return Cpu(usage.ru_utime, usage.ru_stime)


def timed(call, *args, **kwargs):
    """(wall seconds, Cpu of the child processes meanwhile, result)."""
    cpu = children_cpu()
    start = time.monotonic()
    result = call(*args, **kwargs)
    return time.monotonic() - start, children_cpu() - cpu, result


def prime(paths):
    """Read ``paths`` (into the page cache). This machine's page cache does not keep
    data for long (balloon / free page reporting), so each side reads its inputs
    right before it is timed: both start warm, neither is charged for the disk."""
    buf = bytearray(8 * MIB)
    for path in paths:
        with open(path, 'rb', buffering=0) as handle:
            while handle.readinto(buf):
                pass


def stop_processes_using(workdir, timeout=30):
    """SIGKILL the processes (by pid) whose command line names ``workdir``: an interrupted run can leave
    ansible, its module (a session of its own) and their qemu-img behind, still writing into it."""
    mark = workdir.encode()
    deadline = time.monotonic() + timeout
    while True:
        pids = []
        for entry in os.listdir('/proc'):
            if not entry.isdigit() or int(entry) == os.getpid():
                continue
            try:
                with open('/proc/%s/cmdline' % entry, 'rb') as handle:
                    if mark in handle.read():
                        pids.append(int(entry))
            except (IOError, OSError):
                continue            # gone meanwhile
        if not pids or time.monotonic() > deadline:
            return pids
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        time.sleep(0.2)


def unlink(path):
    if os.path.lexists(path):
        os.unlink(path)


class Bench(object):
    """One benchmark run: the VM, its chain, the reference, the rounds, the check."""

    def __init__(self, args, qemu, workdir):
        self.args = args
        self.qemu = qemu
        self.workdir = workdir
        self.out_dir = os.path.join(workdir, 'out')        # repository and outputs: one filesystem
        self.repo = os.path.join(self.out_dir, 'repo')
        self.fleece_dir = os.path.join(workdir, 'fleece')
        for path in (self.out_dir, self.repo, self.fleece_dir):
            os.mkdir(path)
        self.reference = os.path.join(self.out_dir, 'reference.qcow2')
        self.vm = TestVM(qemu, workdir, [DiskSpec(DISK, size=args.disk_size, fmt='qcow2')], name='bench')
        self.ansible = AnsibleRunner(workdir, env=qemu.env())
        self.rows = {}           # label -> list of wall seconds, one per round
        self.cpu = {}            # label -> list of Cpu (of the processes run)
        self.notes = {}
        self.chain = []          # image files, full first
        self.top = None
        self.guest_bytes = 0

    def record(self, label, seconds, cpu=None):
        self.rows.setdefault(label, []).append(seconds)
        if cpu is not None:
            self.cpu.setdefault(label, []).append(cpu)

    def img(self, args, what, codes=(0,)):
        """Run qemu-img ARGS (the benchmark's QEMU); return (seconds, Cpu, output); fail on error."""
        seconds, cpu, proc = timed(self.qemu.run_img, *args, check=False)
        if proc.returncode not in codes:
            raise BenchError('%s failed (%d): %s' % (what, proc.returncode, proc.stdout.strip()))
        return seconds, cpu, proc.stdout

    def out(self, name, sources=()):
        """A fresh output path; before it is used, the previous run's write-back is done and ``sources``
        are read into the page cache, so every timed step starts from the same state."""
        path = os.path.join(self.out_dir, name)
        unlink(path)
        os.sync()            # write-back of the previous run must not land in this one
        prime(sources)
        return path

    # -- set-up ---------------------------------------------------------------

    def prepare(self):
        vm, args = self.vm, self.args
        step('%s: VM with one %s qcow2 disk (%s)' % (self.qemu.version_string, human(args.disk_size),
                                                     vm.image(DISK)))
        vm.start()
        vm.qmp('cont')
        writes = full_layout(args.disk_size)
        step('guest writes %s in %d pieces of %s, one every %s; full backup' % (
            human(len(writes) * PIECE), len(writes), human(PIECE), human(STRIDE)))
        for index, (offset, length) in enumerate(writes):
            vm.write(DISK, offset, length, 0x01 + index % 0xfe)
        self.backup('full')
        rng = random.Random(self.args.seed)
        for number in range(1, args.incrementals + 1):
            for index, (offset, length) in enumerate(round_layout(args.disk_size, rng)):
                vm.write(DISK, offset, length, 0x80 + (number * 4 + index) % 0x7f)
            self.backup('incremental')
            if number % 10 == 0 or number == args.incrementals:
                step('%d/%d incremental backups' % (number, args.incrementals))
        self.notes['chain'] = '%d images, %s allocated in all, each qcow2 cluster_size %s' % (
            len(self.chain), human(sum(self.allocated(path) for path in self.chain)),
            ', '.join(sorted(set(human(self.qemu.info(p)['cluster-size']) for p in self.chain))))
        self.notes['chain top'] = os.path.relpath(self.top, self.out_dir)
        info = self.qemu.info(self.top)
        self.notes['virtual size'] = human(info['virtual-size'])

        step('reference: qemu-img convert of the guest\'s data (shadow file) into one plain qcow2')
        self.img(['convert', '-q', '-f', 'raw', '-O', 'qcow2'] + CLUSTER + [vm.shadow(DISK), self.reference],
                 'qemu-img convert of the shadow file')
        self.guest_bytes, extents = self.data_extents(self.reference)
        self.notes['data extents (qemu-img map)'] = '%d in the reference, %d through the chain top' % (
            extents, self.data_extents(self.top)[1])
        self.notes['guest data at the newest point'] = '%s (reference image: %s allocated)' % (
            human(self.guest_bytes), human(self.allocated(self.reference)))
        self.notes['load average before'] = '%.2f %.2f %.2f (%d CPUs)' % (os.getloadavg() + (os.cpu_count(),))

    def backup(self, level):
        result = self.ansible.ok('qemu_blockdev_backup', {'socket': self.vm.socket, 'target_dir': self.repo,
                                                          'fleece_dir': self.fleece_dir})
        if result.get('level') != level or len(result.get('disks', [])) != 1:
            raise BenchError('expected a %s backup of one disk, got %s' % (level, result))
        self.top = result['disks'][0]['file']
        self.chain.append(self.top)
        self.record('setup: %s backup (module duration)' % level, result['duration'])

    def allocated(self, path):
        return os.stat(path).st_blocks * 512

    def data_extents(self, path):
        """(bytes, extents) the guest sees as data (not zero/unallocated), through the chain."""
        output = self.img(['map', '--output=json', '-U', path], 'qemu-img map')[2]
        lengths = [int(match.group(1)) for match in re.finditer(r'"length":\s*(\d+),[^}]*"data":\s*true', output)]
        return sum(lengths), len(lengths)

    # -- the two sides --------------------------------------------------------

    def convert(self, source, label, options):
        """Time one qemu-img convert of ``source`` (its backing chain read into the cache first)."""
        sources = self.chain[:self.chain.index(source) + 1] if source in self.chain else [source]
        dest = self.out('convert.qcow2', sources)
        seconds, cpu = self.img(CONVERT + options + CLUSTER + [source, dest], label)[:2]
        self.record(label, seconds, cpu)
        if 'convert output allocated' not in self.notes:
            self.notes['convert output allocated'] = human(self.allocated(dest))
        unlink(dest)
        return seconds

    def module(self, number, verify):
        label = MODULE_VERIFY if verify else MODULE
        dest = self.out('restored.qcow2', self.chain)
        params = {'target_dir': self.repo, 'vm_name': self.vm.name, 'disk': DISK, 'dest': dest,
                  'format': 'qcow2', 'verify': verify}
        wall, cpu, result = timed(self.ansible.ok, 'qemu_backup_restore', params)
        self.record(label, wall, cpu)
        if [os.path.realpath(p) for p in result.get('chain') or []] != [os.path.realpath(p) for p in self.chain] \
                or not result.get('changed'):
            raise BenchError('round %d: the restore did not read the expected chain of %d images: %s' % (
                number, len(self.chain), result))
        if number == 1 and not verify:
            self.check(dest)
        unlink(dest)
        return wall

    def checks(self):
        """``qemu-img check`` of every image of the chain, one after the other: (seconds, Cpu)."""
        seconds, cpu = 0.0, Cpu()
        for path in self.chain:
            wall, used = self.img(CHECK + [path], 'qemu-img check of %s' % path, codes=(0, 3))[:2]
            seconds += wall
            cpu = cpu + used
        return seconds, cpu

    def data_work(self):
        """What restore.py runs for the newest point, without ansible around it."""
        os.sync()
        prime(self.chain)
        checks, checks_cpu = self.checks()
        tmp = self.out('.restored.qcow2.partial')
        convert, convert_cpu = self.img(CONVERT + FAST + CLUSTER + [self.top, tmp],
                                        'qemu-img convert of the chain top')[:2]
        restored = os.path.join(self.out_dir, 'restored-direct.qcow2')
        os.rename(tmp, restored)
        self.record(WORK_CHECKS, checks, checks_cpu)
        self.record(WORK_CONVERT, convert, convert_cpu)
        self.record(WORK, checks + convert, checks_cpu + convert_cpu)
        self.record(VERIFY_COMPARE, *self.img(['compare', '-U', '-f', 'qcow2', '-F', 'qcow2', restored, self.top],
                                              'qemu-img compare')[:2])
        unlink(restored)
        return checks, convert

    def overlapped(self):
        """A candidate fix: the same checks, 2 at a time, while the convert runs; the result is only
        renamed into place once every check passed."""
        dest = self.out('diag.qcow2', self.chain)
        failures = []

        def check_all(paths):
            for path in paths:
                code = self.qemu.run_img(*(CHECK + [path]), check=False).returncode
                if code not in (0, 3):
                    failures.append(path)

        threads = [threading.Thread(target=check_all, args=(self.chain[index::2],)) for index in range(2)]
        cpu = children_cpu()
        start = time.monotonic()
        for thread in threads:
            thread.start()
        proc = self.qemu.run_img(*(CONVERT + FAST + CLUSTER + [self.top, dest]), check=False)
        for thread in threads:
            thread.join()
        self.record(DIAG_OVERLAP, time.monotonic() - start, children_cpu() - cpu)
        unlink(dest)
        if proc.returncode != 0 or failures:
            raise BenchError('checks during the convert failed: %s %s' % (failures, proc.stdout.strip()))

    def depths(self):
        """Chain depths between the full (1) and the top for the diagnostic sweep."""
        top = len(self.chain)
        return sorted(set(depth for depth in (top // 3 + 1, 2 * top // 3 + 1) if 1 < depth < top))

    def diagnostics(self):
        self.convert(self.top, DIAG_CHAIN_PLAIN, [])
        self.convert(self.top, DIAG_CHAIN_M16, ['-m', '16', '-W'])
        self.convert(self.chain[0], DIAG_FULL_ONLY, FAST)
        for depth in self.depths():
            self.convert(self.chain[depth - 1], DIAG_DEPTH % depth, FAST)
        seconds, cpu = 0.0, Cpu()
        for count in range(len(self.chain)):
            wall, used = self.img(['--version'], 'qemu-img --version #%d' % count)[:2]
            seconds += wall
            cpu = cpu + used
        self.record(DIAG_SPAWN, seconds, cpu)
        self.record(DIAG_CHAIN_INFO, *self.img(['info', '-U', '--backing-chain', self.top], 'qemu-img info')[:2])
        self.overlapped()

    def warm_up(self):
        """One untimed pass over both sides (binaries and inputs loaded once)."""
        step('warm-up (untimed): qemu-img convert of the reference and of the chain top')
        for source, sources in ((self.reference, [self.reference]), (self.top, self.chain)):
            dest = self.out('warm-up.qcow2', sources)
            self.img(CONVERT + FAST + CLUSTER + [source, dest], 'qemu-img convert (warm-up)')
            unlink(dest)

    def run_rounds(self):
        rounds = self.args.rounds
        self.warm_up()
        for number in range(1, rounds + 1):
            ref = self.convert(self.reference, REF_FAST, FAST)
            wall = self.module(number, verify=False)
            checks, convert = self.data_work()
            self.record(OVERHEAD, wall - checks - convert)
            step('round %d/%d: convert -m 8 -W %.2f s | restore module %.2f s = checks %.2f s + convert %.2f s '
                 '+ %.2f s ansible' % (number, rounds, ref, wall, checks, convert, wall - checks - convert))
            plain = self.convert(self.reference, REF_PLAIN, [])
            wall = self.module(number, verify=True)
            step('round %d/%d: plain convert %.2f s | restore module with verify %.2f s' % (
                number, rounds, plain, wall))
            if not self.args.no_diagnostics:
                self.diagnostics()

    # -- the check ------------------------------------------------------------

    def check(self, restored):
        step('checking the restored image against what the guest wrote (shadow file) and the reference')
        info = self.qemu.info(restored)
        if info.get('backing-filename') or info.get('format') != 'qcow2':
            raise ContentMismatch('the restore %s is not a standalone qcow2: %s' % (restored, info))
        for other, fmt in ((self.vm.shadow(DISK), 'raw'), (self.reference, 'qcow2')):
            identical, output = self.qemu.compare(restored, other, 'qcow2', fmt)
            if not identical:
                raise ContentMismatch('the restored image differs from %s: %s' % (other, output.strip()))
        self.notes['restore output allocated'] = human(self.allocated(restored))
        self.notes['correctness'] = 'restored image identical to the guest data (qemu-img compare)'

    # -- the report -----------------------------------------------------------

    def table(self, title, rows, labels, rate=True):
        names = ['round %d' % (i + 1) for i in range(self.args.rounds)] + ['best', 'median']
        if rate:
            names.append('MiB/s best')
        width = max(len(label) for label in labels) + 2
        print(title.ljust(width) + ''.join('%11s' % name for name in names))
        for label in labels:
            values = rows[label]
            cells = ['%10.2fs' % value for value in values]
            cells += ['%10.2fs' % min(values), '%10.2fs' % statistics.median(values)]
            if rate:
                if label not in RATE_ROWS or min(values) <= 0:
                    cells.append('%11s' % '-')
                else:
                    cells.append('%11.0f' % (self.guest_bytes / MIB / min(values)))
            print(label.ljust(width) + ''.join(cells))

    def labels(self, rows):
        order = list(ORDER)
        index = order.index(DEPTH_ROWS_AFTER) + 1
        order[index:index] = [DIAG_DEPTH % depth for depth in self.depths()]
        return [label for label in order if label in rows]

    def totals(self, field='total'):
        return dict((label, [getattr(cpu, field) for cpu in values]) for label, values in self.cpu.items())

    def ratio(self, numerator, denominator, rows=None):
        """(best / best, median / median)."""
        rows = rows or self.rows
        return (min(rows[numerator]) / min(rows[denominator]),
                statistics.median(rows[numerator]) / statistics.median(rows[denominator]))

    def report(self):
        args = self.args
        self.notes['load average after'] = '%.2f %.2f %.2f' % os.getloadavg()
        print()
        print('Restore of the newest point of a chain (1 full + %d incrementals) vs qemu-img convert of one image:' % (
            args.incrementals))
        print('%s disk, %s of guest data, %s; each step\'s inputs read into the page cache before it is timed' % (
            human(args.disk_size), human(self.guest_bytes), self.qemu.version_string))
        print()
        self.table('wall time', self.rows, self.labels(self.rows))
        print()
        labels = self.labels(self.cpu)
        self.table('CPU time (user + sys)', self.totals(), labels, rate=False)
        print()
        self.table('user CPU time (sys: page cache copies)', self.totals('user'), labels, rate=False)
        print()
        for label in sorted(k for k in self.rows if k.startswith('setup:')):
            values = self.rows[label]
            print('  %s: %d x, median %.2f s' % (label[len('setup: '):], len(values), statistics.median(values)))
        for key, value in self.notes.items():
            print('  %s: %s' % (key, value))
        print()
        print('CPU ratio (restore data work / qemu-img convert of one image): %.2fx best, %.2fx median' %
              self.ratio(WORK, REF_FAST, self.totals()))
        print('user CPU ratio (restore convert alone / qemu-img convert of one image): %.2fx best, %.2fx median' %
              self.ratio(WORK_CONVERT, REF_FAST, self.totals('user')))
        print('ratio (restore convert alone / qemu-img convert of one image): %.2fx best, %.2fx median' %
              self.ratio(WORK_CONVERT, REF_FAST))
        if DIAG_OVERLAP in self.rows:
            print('ratio (checks during the convert, a candidate fix / qemu-img convert of one image): %.2fx best, '
                  '%.2fx median' % self.ratio(DIAG_OVERLAP, REF_FAST))
            self.rows['one-call chain check + convert'] = [info + convert for info, convert in zip(
                self.rows[DIAG_CHAIN_INFO], self.rows[WORK_CONVERT])]
            print('ratio (info --backing-chain + convert, a candidate fix / qemu-img convert of one image): %.2fx best, '
                  '%.2fx median' % self.ratio('one-call chain check + convert', REF_FAST))
        print('ratio (restore data work / plain qemu-img convert of one image): %.2fx best, %.2fx median' %
              self.ratio(WORK, REF_PLAIN))
        best, median = self.ratio(WORK, REF_FAST)
        print('ratio (restore data work / qemu-img convert of one image): %.2fx  (target <= %.1fx: %s; median '
              '%.2fx)' % (best, TARGET_RATIO, 'met' if best <= TARGET_RATIO else 'MISSED', median))
        print('ratio incl. ansible (module wall time / qemu-img convert of one image): %.2fx best, %.2fx median' %
              self.ratio(MODULE, REF_FAST))
        print('ratio incl. ansible, verify: true: %.2fx best, %.2fx median' % self.ratio(MODULE_VERIFY, REF_FAST))


def main(argv=None):
    args = parse_args(argv)

    def terminate(signum, frame):  # pylint: disable=unused-argument
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, terminate)
    qemu = QemuInstall()
    parent = args.workdir or '/var/tmp'
    if not os.path.isdir(parent):
        print('--workdir %s is not a directory' % parent, file=sys.stderr)
        return 2
    # UNIX socket paths must stay under 108 bytes: keep the name short.
    workdir = tempfile.mkdtemp(prefix='vb-rbench-', dir=parent)
    bench = None
    try:
        bench = Bench(args, qemu, workdir)
        bench.prepare()
        bench.run_rounds()
        bench.report()
        return 0
    except ContentMismatch as exc:
        print('FAILED: %s' % exc, file=sys.stderr)
        return 1
    except Exception as exc:  # pylint: disable=broad-except
        traceback.print_exc()
        print('FAILED: %s' % exc, file=sys.stderr)
        if bench is not None and bench.vm.running():
            print('QEMU log:\n%s' % bench.vm.log(), file=sys.stderr)
        return 2
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)     # clean up completely, even if told twice
        if bench is not None:
            bench.vm.kill()
        left = stop_processes_using(workdir)
        shutil.rmtree(workdir, ignore_errors=True)
        if left or os.path.exists(workdir):
            print('could not clean up everything: processes %s, %s' % (left, workdir), file=sys.stderr)


if __name__ == '__main__':
    sys.exit(main())
