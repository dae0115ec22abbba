# -*- coding: utf-8 -*-
# Copyright: (c) 2026, vmbackup.qemu developers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

"""What every benchmark shares: a work directory removed in every case (also
on Ctrl-C and SIGTERM), the exit status (0 ran, whatever the figures; 1 a
backup or restore held the wrong data; 2 anything else), the machine's
facts, medians with their spread, and the JSON result.

A benchmark is a function ``run(args, bench)`` that records figures with
``bench.figure(...)`` (and curves for the plots with ``bench.series(...)``)
and raises ContentMismatch when a timed backup is wrong: a timing of a wrong
backup is worthless. ``Bench`` also holds what the benchmarks do alike:
start a test-bed VM, run a module through ansible and time it, the floors
(a durable ``qemu-img convert``, ``ansible localhost -m ping``) and the
content check. bench/report.py turns the JSON files into plots and a table."""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import argparse
import json
import os
import platform
import re
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
from harness.procs import kill_processes_naming  # noqa: E402 pylint: disable=wrong-import-position
from harness.qemu import QemuInstall, TestVM  # noqa: E402 pylint: disable=wrong-import-position

RESULTS = os.path.join(REPO, 'bench', 'results')
MIB = 1024 * 1024
GIB = 1024 * MIB
UNITS = {'': 1, 'K': 1024, 'M': MIB, 'G': GIB, 'T': 1024 * GIB}


class BenchError(Exception):
    """The benchmark could not run."""


class ContentMismatch(BenchError):
    """A backup or restore does not hold what it must."""


def parse_size(text):
    """'4G', '512M', '2GiB', '1073741824' -> bytes (binary units); for argparse."""
    match = re.match(r'^\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(?:i?B)?\s*$', text, re.IGNORECASE)
    if not match:
        raise argparse.ArgumentTypeError('not a size: %r (examples: 4G, 512M, 1073741824)' % text)
    size = int(float(match.group(1)) * UNITS[match.group(2).upper()])
    if size <= 0:
        raise argparse.ArgumentTypeError('size must be positive: %r' % text)
    return size


def disk_and_data_args(argv, doc, data_help, extra=None):
    """The options of a benchmark that fills one disk: --disk-size (4G),
    --data (2G, ``data_help``), --rounds (3), and what ``extra(parser)`` adds."""
    parser = argparse.ArgumentParser(description=doc.split('\n\n', maxsplit=1)[0])
    parser.add_argument('--disk-size', type=parse_size, default=parse_size('4G'))
    parser.add_argument('--data', type=parse_size, default=parse_size('2G'), help=data_help)
    parser.add_argument('--rounds', type=int, default=3)
    if extra is not None:
        extra(parser)
    args = parser.parse_args(argv)
    if args.data > args.disk_size or args.rounds < 1:
        parser.error('--data must fit in --disk-size and --rounds be at least 1')
    return args


def human(size):
    for unit, factor in (('GiB', GIB), ('MiB', MIB), ('KiB', 1024)):
        if size >= factor:
            return '%.4g %s' % (size / float(factor), unit)
    return '%d B' % size


def step(text):
    print('==> ' + text, flush=True)


def timed(call, *args, **kwargs):
    """(seconds, result) of ``call(*args, **kwargs)``."""
    start = time.monotonic()
    result = call(*args, **kwargs)
    return time.monotonic() - start, result


def spread(values):
    """Median, min and max of ``values``."""
    values = sorted(values)
    return {'median': statistics.median(values), 'min': values[0], 'max': values[-1], 'n': len(values)}


def percentile(sorted_values, fraction):
    return sorted_values[int(fraction * (len(sorted_values) - 1))]


def machine(qemu):
    """The facts a figure is read against."""
    model = ''
    with open('/proc/cpuinfo') as cpuinfo:
        for line in cpuinfo:
            if line.startswith('model name'):
                model = line.split(':', 1)[1].strip()
                break
    with open('/proc/meminfo') as meminfo:
        memory_kib = int(meminfo.readline().split()[1])
    return {'cpu': model, 'cores': os.cpu_count(), 'memory_gib': round(memory_kib / 1024.0 ** 2, 1),
            'kernel': platform.release(), 'qemu': qemu.version_string}


class Bench(object):
    """One benchmark's run: its work directory, QEMU and figures."""

    def __init__(self, name, qemu, workdir):
        self.name, self.qemu, self.workdir = name, qemu, workdir
        self.figures = []
        self.curves = []
        self.cleanups = []
        self._ansible = None

    @property
    def ansible(self):
        if self._ansible is None:
            self._ansible = AnsibleRunner(self.workdir, env=self.qemu.env())
        return self._ansible

    def start_vm(self, disks, name='bench', running=True):
        """A test-bed VM (killed at the end) with its vCPUs running unless told."""
        vm = TestVM(self.qemu, self.workdir, disks, name=name)
        self.cleanups.append(vm.kill)
        vm.start()
        if running:
            vm.qmp('cont')
        return vm

    def module(self, name, params, timeout=3600):
        """(seconds, result) of module vmbackup.qemu.NAME run ad hoc, as a user does."""
        seconds, result = timed(self.ansible.module, name, params, timeout=timeout)
        if result.get('failed'):
            raise BenchError('module %s failed: %s' % (name, result.get('msg', result)))
        return seconds, result

    def ansible_floor(self):
        """Seconds of `ansible localhost -m ping`: what any module call costs."""
        command = [self.ansible.ansible, 'localhost', '-c', 'local', '-i', 'localhost,', '-m', 'ping']
        seconds, proc = timed(subprocess.run, command, env=self.ansible.env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, universal_newlines=True, check=False)
        if proc.returncode != 0:
            raise BenchError('ansible localhost -m ping failed: %s' % proc.stdout)
        return seconds

    def durable_copy(self, source, out, source_format='qcow2', options=()):
        """Seconds of the floor for a copy: ``qemu-img convert -t writeback``
        (flushed when it closes the output; plain convert defaults to
        cache=unsafe and leaves the data in the page cache)."""
        command = ['convert', '-U', '-t', 'writeback', '-f', source_format, '-O', 'qcow2'] + list(options)
        seconds, proc = timed(self.qemu.run_img, *(command + [source, out]), check=False)
        if proc.returncode != 0:
            raise BenchError('qemu-img convert failed (%d): %s' % (proc.returncode, proc.stdout.strip()))
        return seconds

    def assert_same(self, image, reference, what, image_format='qcow2', reference_format='qcow2'):
        """ContentMismatch unless ``image`` reads as ``reference`` (qemu-img compare)."""
        identical, output = self.qemu.compare(image, reference, fmt_a=image_format, fmt_b=reference_format,
                                              force_share=True)
        if not identical:
            raise ContentMismatch('%s: %s differs from %s: %s' % (what, image, reference, output.strip()))

    def series(self, title, x_label, y_label, lines, kind='line'):
        """A plot for bench/report.py: ``lines`` maps a legend label to [[x, y], ...]
        (``kind`` 'bar': x are category names)."""
        self.curves.append(dict(title=title, x_label=x_label, y_label=y_label, lines=lines, kind=kind))

    def ratio_figure(self, label, numerators, denominators, target=None, **details):
        """The median of per-round ratios with their spread, against ``target`` (at most)."""
        values = spread([n / d for n, d in zip(numerators, denominators)])
        met = None if target is None else values['median'] <= target
        self.figure(label, values['median'], 'x', target=None if target is None else '<= %sx' % target,
                    met=met, spread=values, **details)

    def figure(self, label, value, unit, target=None, met=None, **details):
        """Record one figure (a ratio, a latency...) with the load it was measured under."""
        entry = dict(label=label, value=value, unit=unit, target=target, met=met,
                     load_before=os.getloadavg()[0], **details)
        self.figures.append(entry)
        shown = '%.4g %s' % (value, unit) if isinstance(value, (int, float)) else value
        verdict = '' if met is None else ('  (target %s: %s)' % (target, 'met' if met else 'MISSED'))
        print('%-48s %s%s' % (label, shown, verdict), flush=True)

    def write(self, extra):
        if not os.path.isdir(RESULTS):
            os.makedirs(RESULTS)
        release = re.search(r'version (\d+\.\d+)', self.qemu.version_string)
        path = os.path.join(RESULTS, '%s-qemu-%s.json' % (self.name, release.group(1) if release else 'unknown'))
        with open(path, 'w') as out:
            json.dump(dict(benchmark=self.name, when=time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime()),
                           machine=machine(self.qemu), figures=self.figures, series=self.curves, **extra),
                      out, indent=2, sort_keys=True)
        print('results: %s' % os.path.relpath(path, REPO))


def main(name, run, args, workdir_parent='/var/tmp'):
    """Run ``run(args, bench)`` and return the exit status."""
    def terminate(signum, frame):  # pylint: disable=unused-argument
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, terminate)
    try:
        qemu = QemuInstall()
    except (RuntimeError, OSError) as exc:
        print('FAILED: %s' % exc, file=sys.stderr)
        return 2
    # UNIX socket paths must stay under 108 bytes: keep the name short.
    workdir = tempfile.mkdtemp(prefix='vb-bench-', dir=workdir_parent)
    bench = Bench(name, qemu, workdir)
    try:
        extra = run(args, bench) or {}
        bench.write(extra)
        return 0
    except ContentMismatch as exc:
        print('FAILED (wrong content): %s' % exc, file=sys.stderr)
        return 1
    except Exception as exc:  # pylint: disable=broad-except
        traceback.print_exc()
        print('FAILED: %s' % exc, file=sys.stderr)
        return 2
    finally:
        for cleanup in reversed(bench.cleanups):
            try:
                cleanup()
            except Exception:  # pylint: disable=broad-except
                traceback.print_exc()
        # An interrupted run can leave ansible, its module and their qemu-img
        # behind, still writing into the work directory.
        kill_processes_naming(workdir)
        shutil.rmtree(workdir, ignore_errors=True)
