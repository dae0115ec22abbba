# -*- coding: utf-8 -*-
# Copyright: (c) 2026, vmbackup.qemu developers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

"""One instant for all disks, against writers racing the backup's start.

Each disk has its own writer on its own QMP monitor writing 4 KiB blocks one
after the other, as fast as it can, while a full backup of the running VM
starts. The backup must hold a prefix of each writer's blocks: every block
finished before the vCPUs were stopped, none begun after they ran again.
(Monitor writes are not stopped by a vCPU pause as a guest's are, so a block
that overlaps the STOP..RESUME window may fall on either side.) An
incremental right after must hold all the rest."""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import os
import threading
import time

import pytest

from harness.qemu import DiskSpec

MIB = 1024 * 1024
BLOCK = 4096
DISK_SIZE = 256 * MIB


class Writer(threading.Thread):
    """Writes block after block to one disk through its own monitor."""

    def __init__(self, vm, disk, monitor):
        super(Writer, self).__init__()
        self.vm, self.disk, self.monitor = vm, disk, monitor
        vm.qdev(disk)             # looked up here, on monitor 0, by the main thread
        self.writes = []          # (block, start, end)
        self.stop_flag = threading.Event()
        self.error = None

    def run(self):
        try:
            self.vm.monitor(self.monitor)
            for block in range(DISK_SIZE // BLOCK):
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
    qemu.run_img('convert', '-O', 'raw', image, raw)
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


def pause_window(vm):
    vm.qmp('query-status')      # lets the client read events that came before the reply
    events = vm.monitor().get_events(wait=False)
    stamps = dict((e['event'], e['timestamp']['seconds'] + e['timestamp']['microseconds'] / 1e6)
                  for e in events if e['event'] in ('STOP', 'RESUME'))
    assert 'STOP' in stamps and 'RESUME' in stamps, 'the VM was not paused: %s' % events
    return stamps['STOP'], stamps['RESUME']


@pytest.mark.parametrize('round_', range(3))
def test_racing_writers_get_one_instant(make_vm, ansible, workdir, round_):
    vm = make_vm(disks=[DiskSpec('vda', size=DISK_SIZE), DiskSpec('vdb', size=DISK_SIZE)],
                 name='race%d' % round_, test_monitors=3)
    vm.qmp('cont')
    vm.monitor().clear_events()
    repo = os.path.join(workdir, 'repo')
    os.mkdir(repo)
    writers = [Writer(vm, 'vda', 1), Writer(vm, 'vdb', 2)]
    for writer in writers:
        writer.start()
    try:
        while min(len(w.writes) for w in writers) < 50:
            time.sleep(0.01)
        full = ansible.ok('qemu_blockdev_backup', {'socket': vm.socket, 'target_dir': repo,
                                                   'fleece_dir': workdir, 'level': 'full'})
        time.sleep(0.2)
    finally:
        for writer in writers:
            writer.stop_flag.set()
            writer.join()
    for writer in writers:
        assert writer.error is None, writer.error
    stop, resume = pause_window(vm)
    assert full['pause_seconds'] > 0
    for item in full['disks']:
        writer = [w for w in writers if w.disk == item['disk']][0]
        assert writer.writes[-1][1] > resume, 'the writer stopped before the backup: nothing raced'
        held = blocks_in_backup(item['file'], vm.qemu, workdir, writer.writes)
        # A prefix: no block is held after one that is not.
        assert held == set(range(len(held))), 'backup of %s is not a prefix of the writes' % item['disk']
        for block, start, end in writer.writes:
            if end < stop:
                assert block in held, 'block %d of %s finished before the instant but is missing' % (
                    block, item['disk'])
            if start > resume:
                assert block not in held, 'block %d of %s began after the instant but is in it' % (
                    block, item['disk'])
    # Everything after the instant is in the incremental that follows.
    incremental = ansible.ok('qemu_blockdev_backup', {'socket': vm.socket, 'target_dir': repo,
                                                      'fleece_dir': workdir})
    assert incremental['level'] == 'incremental'
    for item in incremental['disks']:
        identical, output = vm.qemu.compare(item['file'], vm.save_shadow(item['disk'], 'end'), 'qcow2', 'raw')
        assert identical, output
    assert vm.run_state() == 'running'
