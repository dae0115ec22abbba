# -*- coding: utf-8 -*-
# Copyright: (c) 2026, vmbackup.qemu developers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

"""What every benchmark shares: a work directory removed in every case (also
on Ctrl-C and SIGTERM), the exit status (0 ran, whatever the figures; 1 a
backup or restore held the wrong data; 2 anything else), the machine's
facts, medians with their spread, and the JSON result.

A benchmark is a function ``run(args, bench)`` that records figures with
``bench.figure(...)`` and raises ContentMismatch when a timed backup is
wrong: a timing of a wrong backup is worthless."""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import json
import os
import platform
import re
import shutil
import signal
import statistics
import sys
import tempfile
import time
import traceback

REPO = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), '..'))
sys.path.insert(0, os.path.join(REPO, 'tests', 'integration'))

from harness.qemu import QemuInstall  # noqa: E402 pylint: disable=wrong-import-position

RESULTS = os.path.join(REPO, 'bench', 'results')


class ContentMismatch(Exception):
    """A backup or restore does not hold what it must."""


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
        self.cleanups = []

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
                           machine=machine(self.qemu), figures=self.figures, **extra),
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
        print('FAILED: %s' % exc, file=sys.stderr)
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
        shutil.rmtree(workdir, ignore_errors=True)
