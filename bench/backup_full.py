#!/usr/bin/env python
# -*- coding: utf-8 -*-
# Copyright: (c) 2026, vmbackup.qemu developers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

"""Full push backup of a running VM vs. an offline ``qemu-img convert``.

Starts a test-bed VM (tests/integration/harness) with one qcow2 disk, lets
the "guest" write ``--data`` bytes spread over it, resumes the vCPUs, then
alternates ``qemu-img convert`` of the VM's image and a full backup made by
vmbackup.qemu.qemu_blockdev_backup through ansible, ``--rounds`` times each
(after one untimed convert). Prints the times side by side and the ratio;
the target is a backup job that takes at most 1.2x the time of the convert.
Every backup is compared with the VM's disk: a benchmark of a wrong backup
is worthless.

Exit status: 0 when the benchmark ran (whatever the ratio: it informs, it
does not gate), 1 when the backup differs from the disk, 2 on any other
failure.

Run from the repository root: ``.venv/bin/python bench/backup_full.py [--rounds 5]``.
See bench/README.md for the options and how to read the result."""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import argparse
import os
import re
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import traceback

REPO = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), '..'))
sys.path.insert(0, os.path.join(REPO, 'tests', 'integration'))

from harness.ansible import AnsibleRunner  # noqa: E402 pylint: disable=wrong-import-position
from harness.qemu import DiskSpec, QemuInstall, TestVM  # noqa: E402 pylint: disable=wrong-import-position

MIB = 1024 * 1024
GIB = 1024 * MIB
CHUNK = 64 * MIB          # bytes per guest write (one HMP qemu-io command)
TARGET_RATIO = 1.2
DISK = 'vda'
UNITS = {'': 1, 'K': 1024, 'M': MIB, 'G': GIB, 'T': 1024 * GIB}


class BenchError(Exception):
    """The benchmark could not run."""


class ContentMismatch(BenchError):
    """The backup does not hold what the disk holds."""


def parse_size(text):
    """'4G', '512M', '2GiB', '1073741824' -> bytes (binary units)."""
    match = re.match(r'^\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(?:i?B)?\s*$', text, re.IGNORECASE)
    if not match:
        raise argparse.ArgumentTypeError('not a size: %r (examples: 4G, 512M, 1073741824)' % text)
    size = int(float(match.group(1)) * UNITS[match.group(2).upper()])
    if size <= 0:
        raise argparse.ArgumentTypeError('size must be positive: %r' % text)
    return size


def human(size):
    for unit, factor in (('GiB', GIB), ('MiB', MIB), ('KiB', 1024)):
        if size >= factor:
            return '%.4g %s' % (size / float(factor), unit)
    return '%d B' % size


def parse_args(argv):
    parser = argparse.ArgumentParser(
        description='Time a full backup by vmbackup.qemu.qemu_blockdev_backup of a running VM against '
                    'qemu-img convert of the same image, and print the ratio (target <= %.1fx).' % TARGET_RATIO)
    parser.add_argument('--disk-size', type=parse_size, default=parse_size('4G'),
                        help='virtual size of the VM disk (default: 4G)')
    parser.add_argument('--data', type=parse_size, default=parse_size('2G'),
                        help='bytes the guest writes, in 64 MiB pieces spread over the disk (default: 2G)')
    parser.add_argument('--rounds', type=int, default=2,
                        help='rounds of (convert, backup), alternating; best and median are reported (default: 2)')
    parser.add_argument('--workdir', default=None,
                        help='directory for the VM, its image and all outputs; a fresh subdirectory is made in '
                             'it and removed afterwards (default: a temporary directory under /var/tmp)')
    parser.add_argument('--fleecing', choices=['default', 'on', 'off'], default='default',
                        help="the module's fleecing option (default: the module's own default: on where QEMU can)")
    parser.add_argument('--convert-arg', action='append', default=[], metavar='ARG',
                        help='extra argument for qemu-img convert, e.g. --convert-arg=-W (repeatable; default: none, '
                             'the plain command of the target)')
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error('--rounds must be at least 1')
    if args.data > args.disk_size:
        parser.error('--data (%s) is larger than --disk-size (%s)' % (human(args.data), human(args.disk_size)))
    return args


def layout(disk_size, data):
    """(offset, length) of each guest write: CHUNK-sized pieces spread evenly."""
    pieces = -(-data // CHUNK)
    stride = (disk_size // pieces) // CHUNK * CHUNK if pieces > 1 else 0
    stride = max(stride, CHUNK)
    writes, left = [], data
    for index in range(pieces):
        length = min(CHUNK, left)
        writes.append((index * stride, length))
        left -= length
    return writes


def step(text):
    print('==> ' + text, flush=True)


def timed(call, *args, **kwargs):
    start = time.monotonic()
    result = call(*args, **kwargs)
    return time.monotonic() - start, result


def fsync_file(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def process_cpu_seconds(pid):
    """User + system CPU seconds of process ``pid`` so far (/proc/PID/stat)."""
    with open('/proc/%d/stat' % pid, encoding='ascii') as handle:
        fields = handle.read().rsplit(')', 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / float(os.sysconf('SC_CLK_TCK'))


def children_cpu_seconds():
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def allocated(qemu, path, force_share=False):
    """Bytes of the file on the host (qemu-img info actual-size)."""
    return qemu.info(path, force_share=force_share).get('actual-size', 0)


class Bench(object):
    """One benchmark run: the VM, its data, the rounds, the check."""

    def __init__(self, args, qemu, workdir):
        self.args = args
        self.qemu = qemu
        self.workdir = workdir
        self.out_dir = os.path.join(workdir, 'out')        # convert outputs and the repository: one filesystem
        self.repo = os.path.join(self.out_dir, 'repo')
        self.fleece_dir = os.path.join(workdir, 'fleece')
        for path in (self.out_dir, self.repo, self.fleece_dir):
            os.mkdir(path)
        self.vm = TestVM(qemu, workdir, [DiskSpec(DISK, size=args.disk_size, fmt='qcow2')], name='bench')
        self.ansible = AnsibleRunner(workdir, env=qemu.env())
        self.rows = {}           # label -> list of seconds, one per round
        self.notes = {}
        self.last_backup = None
        self.ansible_proc = None
        self.previous_output = None     # the other side's output, removed just before a measurement

    def record(self, label, seconds):
        self.rows.setdefault(label, []).append(seconds)

    # -- set-up ---------------------------------------------------------------

    def prepare(self):
        vm, args = self.vm, self.args
        step('%s: VM with one %s qcow2 disk (%s)' % (self.qemu.version_string, human(args.disk_size),
                                                     vm.image(DISK)))
        vm.start()
        self._wait_for_monitor()
        writes = layout(args.disk_size, args.data)
        step('guest writes %s in %d pieces of up to %s, %s apart' % (
            human(args.data), len(writes), human(CHUNK),
            human(writes[1][0] if len(writes) > 1 else 0)))
        seconds, _result = timed(self._write, writes)
        self.notes['guest write'] = '%.1f s (%.0f MiB/s)' % (seconds, args.data / MIB / seconds)
        vm.guest_io(DISK, 'flush')
        vm.qmp('cont')
        state = vm.run_state()
        if state != 'running':
            raise BenchError('the VM is %s after cont, not running' % state)
        self.notes['source allocated'] = human(allocated(self.qemu, vm.image(DISK), force_share=True))
        self.notes['load average before'] = '%.2f %.2f %.2f (%d CPUs)' % (os.getloadavg() + (os.cpu_count(),))

    def _wait_for_monitor(self, timeout=10):
        """QEMU creates its socket files (bind) a moment before it listens on
        them: a connection made in between is refused. Retry until it is not."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.vm.monitor()
                return
            except Exception:  # pylint: disable=broad-except
                if time.monotonic() > deadline or not self.vm.running():
                    raise
                time.sleep(0.05)

    def _write(self, writes):
        # Straight through the guest device, without the harness's shadow file:
        # the check compares the backup with the disk image itself.
        for index, (offset, length) in enumerate(writes):
            self.vm.guest_io(DISK, 'write -P 0x%02x %d %d' % (0x41 + index % 0x3f, offset, length))

    # -- the two sides --------------------------------------------------------

    def remove_previous_output(self):
        """Both sides start alike: right after a same-sized output was removed.

        Writing into the page cache costs much more with memory the kernel
        has not freed just before (on a VM with free page reporting, such
        memory was handed back to the host and faults on first touch). Without
        this, a convert that follows a backup kept for the check ran 3x slower
        than one that follows a removed file."""
        path, self.previous_output = self.previous_output, None
        if path is None:
            return
        if os.path.isdir(path):
            shutil.rmtree(path)
        else:
            os.unlink(path)

    def warm_up(self):
        """An untimed convert, so that round 1 starts like the others."""
        step('warm-up: an untimed qemu-img convert')
        self.convert(0, record=False)

    def convert(self, number, record=True):
        out = os.path.join(self.out_dir, 'convert-%d.qcow2' % number)
        self.remove_previous_output()
        os.sync()
        # -U: the VM holds the image; it was flushed and nothing writes to it.
        command = ['convert', '-U', '-f', 'qcow2', '-O', 'qcow2', '-o', 'cluster_size=65536'] + self.args.convert_arg
        cpu = children_cpu_seconds()
        seconds, proc = timed(self.qemu.run_img, *(command + [self.vm.image(DISK), out]), check=False)
        cpu = children_cpu_seconds() - cpu
        if proc.returncode != 0:
            raise BenchError('qemu-img convert failed (%d): %s' % (proc.returncode, proc.stdout.strip()))
        sync_seconds, _result = timed(fsync_file, out)
        self.previous_output = out
        if record:
            self.record('qemu-img convert', seconds)
            self.record('qemu-img convert + fsync', seconds + sync_seconds)
            self.record('cpu: qemu-img convert', cpu)
            self.notes['convert output allocated'] = human(allocated(self.qemu, out))
        return seconds

    def backup(self, number):
        params = {'socket': self.vm.socket, 'target_dir': self.repo, 'fleece_dir': self.fleece_dir,
                  'level': 'full'}
        if self.args.fleecing != 'default':
            params['fleecing'] = self.args.fleecing == 'on'
        self.remove_previous_output()
        os.sync()
        cpu = process_cpu_seconds(self.vm.process.pid)
        wall, result = timed(self._run_module, 'qemu_blockdev_backup', params)
        cpu = process_cpu_seconds(self.vm.process.pid) - cpu
        if result.get('level') != 'full' or len(result.get('disks', [])) != 1:
            raise BenchError('round %d: expected a full backup of one disk, got %s' % (number, result))
        disk = result['disks'][0]
        self.record('backup job (%s)' % disk['disk'], disk['duration'])
        self.record('backup module (duration)', result['duration'])
        self.record('ansible wall time', wall)
        self.record('cpu: QEMU during the backup', cpu)
        self.notes['fleecing'] = result.get('fleecing')
        self.notes['backup job bytes_written'] = human(disk['bytes_written'])
        self.notes['backup image allocated'] = human(allocated(self.qemu, disk['file']))
        self.last_backup = result
        self.check(number)
        # The whole chain directory: the module made it for this full backup.
        self.previous_output = os.path.dirname(disk['file'])
        return disk['duration']

    def _run_module(self, name, params):
        # As AnsibleRunner.ok, but the process is known to stop_ansible() if we are interrupted.
        self.ansible_proc = self.ansible.spawn(name, params)
        result = self.ansible.collect(self.ansible_proc)
        self.ansible_proc = None
        if result.get('failed'):
            raise BenchError('module %s failed: %s' % (name, result.get('msg', result)))
        return result

    def stop_ansible(self):
        """After the VM is gone: let an interrupted module run fail and exit, so
        that nothing writes into the work directory after it is removed."""
        proc, self.ansible_proc = self.ansible_proc, None
        if proc is None or proc.poll() is not None:
            return
        try:
            proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()

    def run_rounds(self):
        self.warm_up()
        for number in range(1, self.args.rounds + 1):
            seconds = self.convert(number)
            step('round %d/%d: qemu-img convert %.2f s' % (number, self.args.rounds, seconds))
            seconds = self.backup(number)
            step('round %d/%d: backup job %.2f s (module %.2f s, ansible %.2f s)' % (
                number, self.args.rounds, seconds, self.rows['backup module (duration)'][-1],
                self.rows['ansible wall time'][-1]))

    # -- the check ------------------------------------------------------------

    def check(self, number):
        """The backup must equal the disk (nothing writes to it), and the
        module must leave nothing behind in QEMU. Untimed."""
        image = self.last_backup['disks'][0]['file']
        self.vm.guest_io(DISK, 'flush')
        identical, output = self.qemu.compare(image, self.vm.image(DISK), fmt_a='qcow2', fmt_b='qcow2',
                                              force_share=True)
        if not identical:
            raise ContentMismatch('round %d: the backup %s differs from the disk: %s' % (number, image, output.strip()))
        if self.vm.leftovers():
            raise BenchError('round %d: the module left things in QEMU: %s' % (number, ', '.join(self.vm.leftovers())))
        self.notes['backup content'] = 'every backup equals the disk (qemu-img compare)'

    # -- the report -----------------------------------------------------------

    def report(self):
        args = self.args
        self.notes['load average after'] = '%.2f %.2f %.2f' % os.getloadavg()
        names = ['round %d' % (i + 1) for i in range(args.rounds)] + ['best', 'median', 'MiB/s (best)']
        width = max(len(label) for label in self.rows) + 2
        print()
        print('Full backup of a running VM vs qemu-img convert%s: %s disk, %s written, %s' % (
            ''.join(' ' + arg for arg in args.convert_arg), human(args.disk_size), human(args.data),
            self.qemu.version_string))
        print(' ' * width + ''.join('%14s' % name for name in names))
        for label, values in sorted(self.rows.items(), key=lambda item: item[0].startswith('cpu:')):
            cells = ['%13.2fs' % value for value in values]
            cells += ['%13.2fs' % min(values), '%13.2fs' % statistics.median(values)]
            cells.append('%14s' % '-' if label.startswith('cpu:') else '%14.0f' % (args.data / MIB / min(values)))
            print(label.ljust(width) + ''.join(cells))
        print()
        for key, value in self.notes.items():
            print('  %s: %s' % (key, value))
        print('  (MiB/s = guest data written / time; the job itself copies the whole virtual disk)')
        print()
        job = [v for k, v in self.rows.items() if k.startswith('backup job')][0]
        convert = self.rows['qemu-img convert']
        synced = self.rows['qemu-img convert + fsync']

        def ratio(numerator, denominator):
            return '%.2fx best, %.2fx median' % (min(numerator) / min(denominator),
                                                 statistics.median(numerator) / statistics.median(denominator))

        print('ratio (ansible wall time / qemu-img convert): %s' % ratio(self.rows['ansible wall time'], convert))
        print('ratio (backup module duration / qemu-img convert + fsync): %s' % ratio(
            self.rows['backup module (duration)'], synced))
        print('ratio (backup job / qemu-img convert + fsync): %s' % ratio(job, synced))
        best = min(job) / min(convert)
        print('ratio (backup job / qemu-img convert): %.2fx  (target <= %.1fx: %s; median %.2fx)' % (
            best, TARGET_RATIO, 'met' if best <= TARGET_RATIO else 'MISSED',
            statistics.median(job) / statistics.median(convert)))


def main(argv=None):
    args = parse_args(argv)

    def terminate(signum, frame):  # pylint: disable=unused-argument
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, terminate)
    try:
        qemu = QemuInstall()
    except (RuntimeError, OSError) as exc:
        print('FAILED: %s' % exc, file=sys.stderr)
        return 2
    parent = args.workdir or '/var/tmp'
    if not os.path.isdir(parent):
        print('--workdir %s is not a directory' % parent, file=sys.stderr)
        return 2
    # UNIX socket paths must stay under 108 bytes: keep the name short.
    workdir = tempfile.mkdtemp(prefix='vb-bench-', dir=parent)
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
        if bench is not None:
            bench.vm.kill()
            bench.stop_ansible()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == '__main__':
    sys.exit(main())
