#!/usr/bin/env python
# -*- coding: utf-8 -*-
# Copyright: (c) 2026, vmbackup.qemu developers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

"""How large the fleece image grows while the guest rewrites its disk.

A test-bed VM (no guest OS) with a qcow2 disk of ``--disk`` holding ``--data``
bytes. A full fleecing backup runs with the module's ``speed`` limit
(``--speed``, so that the guest's rewrite outruns the job), while a writer
thread rewrites the data the whole time: 1 MiB guest writes at random 1 MiB
offsets of the data (HMP ``qemu-io`` on its own monitor). Every ``--interval``
the allocated bytes on the host (``st_blocks``) of the fleece images in the
fleece directory are summed; the figure is the peak over the data size.

Modes, each ``--rounds`` times:

* ``module``: ``vmbackup.qemu.qemu_blockdev_backup``, as a user runs it.
  Where QEMU has ``discard-source`` (9.1 or newer, detected from the schema as
  ``backup_discard_source``) its jobs pass it, so what they copied leaves the
  fleece image (the result's ``discard_source`` says whether they did);
* ``no-discard-source``: the same fleecing view (fleece raw image with
  ``discard: unmap``, copy-before-write, snapshot-access) driven over QMP by
  this benchmark, with a ``blockdev-backup`` without ``discard-source``: the
  fleece image keeps the old copy of every cluster the guest rewrites, as
  the module did before it used the option (and does on older QEMU).

Every backup is read back and compared with the disk at its instant (exit 1
if it differs). Run from the repository root:
``.venv/bin/python bench/fleece_size.py`` (about 2 minutes), or with
``VMBACKUP_QEMU_BINDIR=.cache/qemu-10.0/usr/bin`` for another QEMU."""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import argparse
import os
import random
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import runner  # noqa: E402 pylint: disable=wrong-import-position
from runner import MIB, human  # noqa: E402 pylint: disable=wrong-import-position
from harness.checks import assert_restores_to, backup_args, guest_content  # noqa: E402 pylint: disable=wrong-import-position
from harness.names import FLEECE_SUFFIX  # noqa: E402 pylint: disable=wrong-import-position
from harness.qemu import DiskSpec, TestVM  # noqa: E402 pylint: disable=wrong-import-position

WRITE = MIB


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n', maxsplit=1)[0])
    parser.add_argument('--disk', type=runner.parse_size, default=512 * MIB, help='the VM\'s qcow2 disk')
    parser.add_argument('--data', type=runner.parse_size, default=256 * MIB, help='data written, then rewritten')
    parser.add_argument('--speed', type=runner.parse_size, default=48 * MIB,
                        help='the backup\'s speed limit, bytes/s (QEMU counts the whole virtual disk against it)')
    parser.add_argument('--rounds', type=int, default=3)
    parser.add_argument('--interval', type=float, default=0.05, help='seconds between samples')
    return parser.parse_args(argv)


class Rewriter(threading.Thread):
    """The guest rewrites 1 MiB at random offsets of its data until stopped."""

    def __init__(self, vm, data, seed):
        threading.Thread.__init__(self, daemon=True)
        self.vm, self.data, self.rng = vm, data, random.Random(seed)
        self.stop, self.written, self.touched, self.error = threading.Event(), 0, set(), None

    def run(self):
        try:
            while not self.stop.is_set():
                piece = self.rng.randrange(self.data // WRITE)
                self.vm.write('vda', piece * WRITE, WRITE, 0x60 + self.written // WRITE % 64, monitor=1)
                self.written += WRITE
                self.touched.add(piece)
        except Exception as exc:  # pylint: disable=broad-except
            self.error = exc


def fleece_bytes(directory):
    """Bytes the fleece images in ``directory`` take on the host."""
    total = 0
    for entry in os.listdir(directory):
        if entry.endswith(FLEECE_SUFFIX):
            try:
                total += os.stat(os.path.join(directory, entry)).st_blocks * 512
            except OSError:
                pass  # removed between listdir and stat
    return total


def sample_while(running, directory, interval):
    """[(seconds, fleece bytes)] every ``interval`` while ``running()``."""
    start, samples = time.monotonic(), []
    while running():
        samples.append((time.monotonic() - start, fleece_bytes(directory)))
        time.sleep(interval)
    return samples


def module_backup(bench, vm, args, repo, fleece_dir):
    """A running module backup; returns (is it running, its result)."""
    proc = bench.ansible.spawn('qemu_blockdev_backup', backup_args(
        vm, repo, level='full', fleecing=True, fleece_dir=fleece_dir, speed=args.speed))
    vm.wait_for_job(timeout=120)

    def result():
        outcome = bench.ansible.collect(proc, timeout=1800)
        if outcome.get('failed'):
            raise runner.BenchError('the backup failed: %s' % outcome.get('msg'))
        return outcome
    return lambda: proc.poll() is None, result


def qmp_backup(bench, vm, args, repo, fleece_dir):
    """The module's fleecing view by hand, backed up without discard-source."""
    target, fleece = os.path.join(repo, 'vda.qcow2'), os.path.join(fleece_dir, 'fs-vda.fleece.raw')
    bench.qemu.create_image(target, args.disk, options='cluster_size=65536')
    with open(fleece, 'wb') as image:
        image.truncate(args.disk)
    vm.qmp('blockdev-add', driver='raw', **{'node-name': 'fs-fl', 'discard': 'unmap', 'file': {
        'driver': 'file', 'filename': fleece, 'discard': 'unmap'}})
    vm.qmp('blockdev-add', driver='copy-before-write', file=vm.format_node('vda'), target='fs-fl',
           **{'node-name': 'fs-cbw', 'on-cbw-error': 'break-snapshot', 'cbw-timeout': 45})
    vm.qmp('blockdev-add', driver='qcow2', file={'driver': 'file', 'filename': target}, **{'node-name': 'fs-tgt'})
    vm.qmp('qom-set', path=vm.qdev('vda'), property='drive', value='fs-cbw')
    vm.qmp('blockdev-add', driver='snapshot-access', file='fs-cbw', discard='unmap', **{'node-name': 'fs-snap'})
    vm.qmp('blockdev-backup', device='fs-snap', target='fs-tgt', sync='full', speed=args.speed,
           **{'job-id': 'fs-job', 'auto-dismiss': False, 'x-perf': {'max-workers': 8}})
    started = time.monotonic()

    def running():
        return any(j['id'] == 'fs-job' and j['status'] != 'concluded' for j in vm.qmp('query-jobs'))

    def result():
        while running():
            time.sleep(0.05)
        job = [j for j in vm.qmp('query-jobs') if j['id'] == 'fs-job'][0]
        duration = time.monotonic() - started
        vm.qmp('job-dismiss', id='fs-job')
        vm.qmp('blockdev-del', **{'node-name': 'fs-snap'})
        vm.qmp('qom-set', path=vm.qdev('vda'), property='drive', value=vm.format_node('vda'))
        for node in ('fs-cbw', 'fs-fl', 'fs-tgt'):
            vm.qmp('blockdev-del', **{'node-name': node})
        os.unlink(fleece)
        if job.get('error'):
            raise runner.BenchError('the backup without discard-source failed: %s' % job['error'])
        return {'backup_id': 'qmp', 'duration': duration, 'disks': [{'disk': 'vda', 'file': target}]}
    return running, result


def backup_round(bench, vm, args, mode, number):
    """One backup with the guest rewriting its data: peak fleece bytes, samples, seconds."""
    repo, fleece_dir = [os.path.join(bench.workdir, '%s-%s-%d' % (what, mode, number)) for what in ('repo', 'fl')]
    os.mkdir(repo)
    os.mkdir(fleece_dir)
    at_instant = guest_content(vm, 'instant', disks=('vda',))
    start = module_backup if mode == 'module' else qmp_backup
    running, result = start(bench, vm, args, repo, fleece_dir)
    writer = Rewriter(vm, args.data, number)
    writer.start()
    samples = sample_while(running, fleece_dir, args.interval)
    writer.stop.set()
    writer.join()
    outcome = result()
    if writer.error:
        raise runner.BenchError('the guest writer failed: %s' % writer.error)
    try:
        assert_restores_to(vm, outcome, at_instant)
    except AssertionError as exc:
        raise runner.ContentMismatch(str(exc))
    peak = max(s[1] for s in samples) if samples else 0
    print('round %d %-15s peak fleece %s (%.2fx data), backup %.1f s, guest rewrote %s (%.0f%% of the data)' % (
        number + 1, mode, human(peak), peak / float(args.data), outcome['duration'], human(writer.written),
        100.0 * len(writer.touched) * WRITE / args.data), flush=True)
    return {'peak': peak, 'seconds': outcome['duration'], 'rewritten': writer.written,
            'discard_source': outcome.get('discard_source', False),
            'touched': len(writer.touched) * WRITE, 'samples': samples}


def run(args, bench):
    vm = TestVM(bench.qemu, bench.workdir, [DiskSpec('vda', size=args.disk)], name='fl', test_monitors=2)
    bench.cleanups.append(vm.kill)
    vm.start()
    vm.qmp('cont')
    for offset in range(0, args.data, 32 * MIB):
        vm.write('vda', offset, min(32 * MIB, args.data - offset), 0x51)
    modes = ['module', 'no-discard-source']
    rounds = dict((mode, []) for mode in modes)
    for number in range(args.rounds):
        for mode in modes:
            rounds[mode].append(backup_round(bench, vm, args, mode, number))
    for mode in modes:
        peaks = runner.spread([r['peak'] / float(args.data) for r in rounds[mode]])
        bench.figure('%s: peak fleece / data' % mode, peaks['median'], 'x', spread=peaks,
                     peak_bytes=runner.spread([r['peak'] for r in rounds[mode]]), data_bytes=args.data)
        touched = runner.spread([r['touched'] / float(args.data) for r in rounds[mode]])
        bench.figure('%s: data rewritten during the backup / data' % mode, touched['median'], 'x', spread=touched)
        seconds = runner.spread([r['seconds'] for r in rounds[mode]])
        bench.figure('%s: backup seconds' % mode, seconds['median'], 's', spread=seconds)
    bench.ratio_figure('peak fleece: module / no-discard-source', [r['peak'] for r in rounds['module']],
                       [r['peak'] for r in rounds['no-discard-source']])
    bench.series('Fleece image size during a full backup (round 1)', 'seconds', 'fleece allocated (MiB)',
                 dict((mode, [[t, b / float(MIB)] for t, b in rounds[mode][0]['samples']]) for mode in modes))
    return {'options': dict(vars(args)),
            'discard_source_in_module': all(r['discard_source'] for r in rounds['module']),
            'rounds': dict((m, [dict(r, samples=None) for r in rs]) for m, rs in rounds.items())}


if __name__ == '__main__':
    sys.exit(runner.main('fleece_size', run, parse_args(sys.argv[1:])))
