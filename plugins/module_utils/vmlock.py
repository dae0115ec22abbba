# -*- coding: utf-8 -*-
# Copyright: (c) 2026, vmbackup.qemu developers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

"""One run of the collection per QEMU process at a time.

Two runs on one VM (through two QMP sockets, into two repositories) would
each treat the other's jobs and filters as debris and tear them down, and
both would switch the devices back: QEMU can abort on that. So every module
that changes a VM over QMP first takes a host lock keyed on the QEMU process
itself, not on the socket, the VM's name or the repository:

* the process is the peer of the QMP socket (``SO_PEERCRED`` on a probe
  connection, answered by the kernel before QEMU accepts it), and the key is
  its pid with its start time from /proc, so a reused pid or two VMs with
  the same -name are never confused;
* the lock is ``flock`` on a file named by that key: the kernel drops it when
  the holder dies, even by SIGKILL, so a dead holder never blocks anyone;
* the holder writes who it is into the file, so a waiter that gives up can
  name it. Lock files are not deleted while their QEMU lives (deleting a
  flocked file lets two runs lock two different files); files of QEMU
  processes that are gone are removed by the next run.

Why not an object inside QEMU: docs/design.md ("One run per VM")."""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import errno
import fcntl
import json
import os
import tempfile
import time

from ansible_collections.vmbackup.qemu.plugins.module_utils.errors import QMPConnectError, VMBackupError, VMBusyError
from ansible_collections.vmbackup.qemu.plugins.module_utils.qmp import connect_error_message, peer_pid

LOCK_DIR = '/run/lock/vmbackup.qemu'
DEFAULT_LOCK_TIMEOUT = 30.0
_POLL = 0.2


def start_in_stat(stat_text):
    """The start time (clock ticks since boot) that the text of a
    /proc/PID/stat file holds, or None if it holds none."""
    fields = stat_text.rsplit(')', 1)[-1].split()     # after the command name, which may hold ')'
    return fields[19] if len(fields) > 19 else None   # field 22 of proc(5); fields[0] is field 3


def process_start(pid):
    """The start time of ``pid`` in clock ticks since boot, or None if it is gone."""
    try:
        with open('/proc/%d/stat' % pid) as stat:
            return start_in_stat(stat.read())
    except (IOError, OSError):
        return None


def this_process():
    """Who this process is, in a way a reused pid cannot fake: pid and start time."""
    pid = os.getpid()
    return {'pid': pid, 'pid_start': process_start(pid)}


def qemu_key(socket_path, timeout):
    """A name for the QEMU process behind ``socket_path`` that no other process shares."""
    pid = peer_pid(socket_path, timeout)
    start = process_start(pid) if pid else None
    if start is None:
        # QEMU in another pid namespace: the socket file is the best key left.
        st = os.stat(socket_path)
        return 'socket-%d-%d' % (st.st_dev, st.st_ino), pid
    return 'qemu-%d-%s' % (pid, start), pid


def lock_dir():
    """/run/lock/vmbackup.qemu, or a per-user directory where that cannot be used."""
    for path in (LOCK_DIR, os.path.join(tempfile.gettempdir(), 'vmbackup.qemu-%d' % os.getuid())):
        try:
            os.makedirs(path, 0o755)
        except OSError as exc:
            if exc.errno != errno.EEXIST:
                continue
        if os.access(path, os.W_OK | os.X_OK):
            return path
    raise VMBackupError('cannot create a lock directory in %s or %s: make one of them writable'
                        % (LOCK_DIR, tempfile.gettempdir()))


def _remove_stale(directory):
    """Lock files of QEMU processes that no longer exist."""
    for entry in os.listdir(directory):
        parts = entry[:-len('.lock')].split('-') if entry.endswith('.lock') else []
        if len(parts) == 3 and parts[0] == 'qemu' and parts[1].isdigit() \
                and process_start(int(parts[1])) != parts[2]:
            try:
                os.unlink(os.path.join(directory, entry))
            except OSError:
                pass  # another run removed it first


class VMLock(object):
    """The lock on one QEMU process, held for one module run."""

    def __init__(self, socket_path, holder, timeout=DEFAULT_LOCK_TIMEOUT, connect_timeout=10.0):
        self.socket_path = socket_path
        self.holder = dict(holder)
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self.path = None
        self.qemu_pid = None
        self.waited = 0.0
        self._fd = None

    def acquire(self):
        try:
            key, self.qemu_pid = qemu_key(self.socket_path, self.connect_timeout)
        except (IOError, OSError) as exc:
            raise QMPConnectError(connect_error_message(self.socket_path, exc), socket=self.socket_path)
        directory = lock_dir()
        _remove_stale(directory)
        self.path = os.path.join(directory, key + '.lock')
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except (IOError, OSError) as exc:
            raise VMBackupError('cannot open the lock file %s: %s' % (self.path, exc.strerror))
        started = time.monotonic()
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except (IOError, OSError) as exc:
                if exc.errno not in (errno.EAGAIN, errno.EACCES):
                    os.close(fd)
                    raise
            if time.monotonic() - started >= self.timeout:
                holder = _read_holder(fd)
                os.close(fd)
                raise VMBusyError(self._busy_message(holder), holder=holder, lock_file=self.path)
            time.sleep(_POLL)
        self.waited = round(time.monotonic() - started, 3)
        self._fd = fd
        self._write_holder()
        return self

    def _write_holder(self):
        info = dict(self.holder, pid=os.getpid(), socket=self.socket_path, qemu_pid=self.qemu_pid,
                    since=time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime()))
        data = json.dumps(info, sort_keys=True).encode('utf-8')
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, data, 0)

    def _busy_message(self, holder):
        who = 'another run of vmbackup.qemu'
        if holder:
            who = '%s (pid %s, through QMP socket %s, since %s)' % (
                holder.get('module', 'vmbackup.qemu'), holder.get('pid'), holder.get('socket'),
                holder.get('since'))
        return ('the VM behind %s (QEMU pid %s) is busy: %s holds it, and it was still held after '
                'waiting lock_timeout=%g s. Run again when that run has ended, or raise lock_timeout'
                % (self.socket_path, self.qemu_pid, who, self.timeout))

    def release(self):
        if self._fd is not None:
            os.ftruncate(self._fd, 0)
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self):
        return self.acquire()

    def __exit__(self, exc_type, exc_value, tb):
        self.release()


def _read_holder(fd):
    try:
        data = os.pread(fd, 4096, 0)
        return json.loads(data.decode('utf-8')) if data else None
    except ValueError:
        return None
