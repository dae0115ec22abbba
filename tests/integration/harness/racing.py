# -*- coding: utf-8 -*-
# Copyright: (c) 2026, vmbackup.qemu developers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

"""Writers racing the instant of a backup or a view, and what tells whether
the result holds one instant.

Each disk has its own writer on its own QMP monitor writing 4 KiB blocks one
after the other, as fast as it can. A point-in-time copy must hold a prefix
of each writer's blocks: every block finished before the instant was taken,
none begun after. With explicit filters the instant is the window in which
the vCPUs were stopped; on QEMU 10.1+ (the job route) it is one transaction
and the vCPUs never stop. (Monitor writes are not stopped by a vCPU pause as
a guest's are, so a block that overlaps the window may fall on either side.)"""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import os
import threading
import time

from harness.names import is_fleece_job

BLOCK = 4096


class Writer(threading.Thread):
    """Writes block after block to one disk through its own monitor."""

    def __init__(self, vm, disk, monitor, blocks):
        super(Writer, self).__init__()
        self.vm, self.disk, self.monitor, self.blocks = vm, disk, monitor, blocks
        vm.qdev(disk)             # looked up here, on monitor 0, by the main thread
        self.writes = []          # (block, start, end)
        self.stop_flag = threading.Event()
        self.error = None

    def run(self):
        try:
            self.vm.monitor(self.monitor)
            for block in range(self.blocks):
                if self.stop_flag.is_set():
                    return
                start = time.time()
                self.vm.write(self.disk, block * BLOCK, BLOCK, pattern(block), monitor=self.monitor)
                self.writes.append((block, start, time.time()))
        except Exception as exc:  # pylint: disable=broad-except
            self.error = exc


def pattern(block):
    return block % 251 + 1


def blocks_in_backup(image, qemu, workdir, writes):
    """The blocks of ``writes`` whose data the backup image holds."""
    raw = os.path.join(workdir, 'restored.raw')
    source_format = ['-f', 'raw'] if image.startswith('nbd') else []   # an NBD URI of a view
    qemu.run_img(*(['convert'] + source_format + ['-O', 'raw', image, raw]))
    held = set()
    with open(raw, 'rb') as handle:
        for block, _start, _end in writes:
            handle.seek(block * BLOCK)
            data = handle.read(BLOCK)
            if data == bytes([pattern(block)]) * BLOCK:
                held.add(block)
            else:
                assert data == bytes(BLOCK), 'block %d holds neither old nor new data' % block
    os.unlink(raw)
    return held


def stamp(event):
    return event['timestamp']['seconds'] + event['timestamp']['microseconds'] / 1e6


def instant_window(vm, route):
    """When the instant was taken, from QEMU's own events: with explicit
    filters, between the vCPUs' STOP and RESUME; on the job route, the
    transaction that created and started the fleecing jobs (QEMU drains all
    I/O around it), with the vCPUs never stopped."""
    vm.qmp('query-status')      # lets the client read events that came before the reply
    events = vm.monitor().get_events(wait=False)
    pauses = [e for e in events if e['event'] in ('STOP', 'RESUME')]
    if route == 'job':
        assert pauses == [], 'the VM was paused on the job route: %s' % pauses
        return transaction_window(events)
    stamps = dict((e['event'], stamp(e)) for e in pauses)
    assert 'STOP' in stamps and 'RESUME' in stamps, 'the VM was not paused: %s' % events
    return stamps['STOP'], stamps['RESUME']


def transaction_window(events):
    """From the fleecing jobs' creation to the end of the transaction that
    made them. Inside it each job is started and at once paused by the drain
    around the transaction; the drain's end resumes it: its second
    'running'. (Later commands drain, pause and resume them again.)"""
    changes = [e for e in events if e['event'] == 'JOB_STATUS_CHANGE' and is_fleece_job(e['data']['id'])]
    created = [stamp(e) for e in changes if e['data']['status'] == 'created']
    assert len(created) == 2, 'expected two fleecing jobs: %s' % changes
    resumed = []
    for job in set(e['data']['id'] for e in changes):
        running = [stamp(e) for e in changes if e['data']['id'] == job and e['data']['status'] == 'running']
        assert running, 'fleecing job %s never ran: %s' % (job, changes)
        resumed.append(running[1] if len(running) > 1 else running[0])
    return min(created), max(resumed)


def assert_one_instant(images, writers, window, route, qemu, workdir):
    """``images`` ({disk: image or NBD URI}) hold one instant of what
    ``writers`` wrote; ``window`` is (start, end) of the instant. Returns
    how many blocks each disk's image holds."""
    start_of, end_of = window
    last_held_start, first_missing_end = 0.0, float('inf')
    counts = {}
    for writer in writers:
        assert writer.error is None, writer.error
        assert writer.writes[-1][1] > end_of, 'the writer stopped before the instant: nothing raced'
        held = blocks_in_backup(images[writer.disk], qemu, workdir, writer.writes)
        # A prefix: no block is held after one that is not.
        assert held == set(range(len(held))), 'the copy of %s is not a prefix of the writes' % writer.disk
        for block, start, end in writer.writes:
            if end < start_of:
                assert block in held, 'block %d of %s finished before the instant but is missing' % (
                    block, writer.disk)
            if start > end_of:
                assert block not in held, 'block %d of %s began after the instant but is in it' % (
                    block, writer.disk)
        counts[writer.disk] = len(held)
        last_held_start = max([last_held_start] + [w[1] for w in writer.writes if w[0] in held])
        first_missing_end = min([first_missing_end] + [w[2] for w in writer.writes if w[0] not in held])
    if route == 'job':
        # QEMU serves the monitors one command at a time, and no pause hides
        # anything: one instant means one moment that every held block, on
        # either disk, began before and every missing one ended after.
        assert last_held_start < first_missing_end, 'the disks have different instants'
    return counts


def race(vm, disks, blocks, action):
    """Run ``action()`` while a writer per disk (on monitors 1, 2, ...) writes
    as fast as it can; go on writing a little after it. Returns the writers
    and what ``action`` returned."""
    writers = [Writer(vm, disk, index + 1, blocks) for index, disk in enumerate(disks)]
    for writer in writers:
        writer.start()
    try:
        while min(len(w.writes) for w in writers) < 50:
            if any(w.error for w in writers):
                break
            time.sleep(0.01)
        outcome = action()
        time.sleep(0.2)
    finally:
        for writer in writers:
            writer.stop_flag.set()
            writer.join()
    return writers, outcome
