# -*- coding: utf-8 -*-
# Copyright: (c) 2026, vmbackup.qemu developers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

"""Processes found by their command line: the one /proc scan the test bed
and the benchmarks share (ansible runs a module in a session of its own, so
its process group does not reach it)."""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import os
import signal
import time


def processes_naming(*markers):
    """Pids (other than ours) whose command line contains every one of ``markers`` (str)."""
    wanted = [marker.encode() for marker in markers]
    pids = []
    for entry in os.listdir('/proc'):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open('/proc/%s/cmdline' % entry, 'rb') as handle:
                cmdline = handle.read()
        except (IOError, OSError):
            continue            # gone meanwhile
        if all(marker in cmdline for marker in wanted):
            pids.append(int(entry))
    return pids


def kill_processes_naming(marker, timeout=30):
    """SIGKILL every process whose command line names ``marker`` (e.g. a work
    directory) until none is left; the pids still there after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        pids = processes_naming(marker)
        if not pids or time.monotonic() > deadline:
            return pids
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass            # gone meanwhile
        time.sleep(0.2)
