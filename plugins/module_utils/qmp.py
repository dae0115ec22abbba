# -*- coding: utf-8 -*-
# Copyright: (c) 2026, vmbackup.qemu developers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

"""The one QMP client layer of the collection.

A small synchronous facade over ``qemu.qmp``'s asyncio ``QMPClient``: connect
with a timeout, execute commands and transactions, wait for events and jobs.
Every failure becomes a :class:`VMBackupError` whose message names the socket
and says what to do."""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import errno
import logging
import os
import socket
import stat
import struct
import time

from ansible_collections.vmbackup.qemu.plugins.module_utils.errors import (
    QMPCommandError,
    QMPConnectError,
    QMPDisconnectedError,
    QMPTimeoutError,
)

try:
    import asyncio
    from qemu.qmp import QMPClient, ConnectError, EventListener, ExecuteError
    from qemu.qmp.error import QMPError, ProtocolError
    HAS_QEMU_QMP = True
    QEMU_QMP_IMPORT_ERROR = None
    # qemu.qmp logs connection failures itself; we report them in `msg`.
    logging.getLogger('qemu.qmp').addHandler(logging.NullHandler())
except ImportError as exc:  # pragma: no cover - depends on the host
    HAS_QEMU_QMP = False
    QEMU_QMP_IMPORT_ERROR = exc
    QMPClient = object


class QuietQMPClient(QMPClient):
    """qemu.qmp's client, formatting a message for its debug log only when
    that log is on: its message hooks call ``str(msg)`` (JSON, indented)
    before the logger decides, which cost a backup ~0.1 s on the
    ``query-qmp-schema`` reply alone. The hooks are there to be overridden."""

    def _cb_outbound(self, msg):
        if self.logger.isEnabledFor(logging.DEBUG):
            return super(QuietQMPClient, self)._cb_outbound(msg)
        return msg

    def _cb_inbound(self, msg):
        if self.logger.isEnabledFor(logging.DEBUG):
            return super(QuietQMPClient, self)._cb_inbound(msg)
        return msg


DEFAULT_TIMEOUT = 10.0

# Job states (QAPI JobStatus), named here only. A job waiting for
# job-finalize is 'pending'; one that ended, well or not, is 'concluded' until
# job-dismiss; 'null' is what we call a job that is gone from query-jobs.
JOB_PENDING = 'pending'
JOB_CONCLUDED = 'concluded'
JOB_GONE = 'null'
JOB_ENDED_STATES = (JOB_CONCLUDED, JOB_GONE)
# States in which a job will not move on without the client.
JOB_SETTLED_STATES = (JOB_PENDING,) + JOB_ENDED_STATES


def describe_qmp_socket_problem(path):
    """Return a message for a socket path that cannot be used, or None."""
    try:
        st = os.stat(path)
    except OSError as exc:
        if exc.errno == errno.ENOENT:
            return ('QMP socket %s does not exist: is the VM running, and was it started with '
                    '-qmp unix:%s,server=on,wait=off?' % (path, path))
        if exc.errno == errno.EACCES:
            return ('permission denied looking up QMP socket %s: run as a user who may reach it '
                    '(for example with become: true)' % path)
        return 'cannot use QMP socket %s: %s' % (path, exc.strerror)
    if not stat.S_ISSOCK(st.st_mode):
        return ('%s is not a UNIX socket: point socket at the VM\'s QMP monitor socket '
                '(-qmp unix:PATH,server=on,wait=off)' % path)
    return None


def connect_error_message(path, cause):
    """The message for a failed connection to the QMP socket ``path``."""
    if isinstance(cause, PermissionError):
        return ('permission denied connecting to QMP socket %s: run as a user who may write '
                'to it (for example with become: true)' % path)
    if isinstance(cause, ConnectionRefusedError):
        return ('nothing is listening on QMP socket %s (connection refused): the VM that '
                'created it has probably exited; start the VM or remove the stale socket' % path)
    if isinstance(cause, (ProtocolError, ValueError)):
        return ('%s does not speak QMP (%s): point socket at the VM\'s QMP monitor (-qmp), '
                'not at a HMP, serial or guest agent socket' % (path, cause))
    if isinstance(cause, EOFError):
        return ('QMP socket %s closed the connection before the QMP greeting: QEMU is '
                'probably shutting down' % path)
    return 'cannot connect to QMP socket %s: %s' % (path, cause)


def peer_pid(socket_path, timeout):
    """The pid of the process listening on the UNIX socket ``socket_path``
    (0 if not visible); OSError as connect raises it. The kernel answers
    before the listener accepts, so a busy one answers too."""
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.settimeout(timeout)
        probe.connect(socket_path)
        creds = probe.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize('3i'))
    finally:
        probe.close()
    return struct.unpack('3i', creds)[0]


def qemu_is_gone(path):
    """Whether nothing listens on the QMP socket ``path`` any more (QEMU
    exited: the socket file is gone or refuses connections)."""
    try:
        peer_pid(path, 1.0)
        return False
    except (FileNotFoundError, ConnectionRefusedError):
        return True
    except OSError:
        return False   # busy or unknown: alive as far as we can tell


def ignore_missing(call, *args, **kwargs):
    """Run a teardown step; a thing that is already gone is success.
    Returns whether it was there."""
    try:
        call(*args, **kwargs)
        return True
    except QMPCommandError as exc:
        desc = (exc.desc or '').lower()
        if exc.error_class in ('DeviceNotFound',) or 'not found' in desc or 'cannot find' in desc:
            return False
        raise


class QMPConnection(object):
    """A connected QMP monitor of one QEMU process."""

    def __init__(self, socket_path, timeout=DEFAULT_TIMEOUT):
        self.socket_path = socket_path
        self.timeout = float(timeout)
        self._loop = None
        self._client = None
        self._listeners = {}
        self.greeting = None

    # -- connection ---------------------------------------------------------

    def _run(self, coro, timeout):
        return self._loop.run_until_complete(asyncio.wait_for(coro, timeout))

    def connect(self):
        problem = describe_qmp_socket_problem(self.socket_path)
        if problem:
            raise QMPConnectError(problem, socket=self.socket_path)
        self._loop = asyncio.new_event_loop()
        self._client = QuietQMPClient(os.path.basename(self.socket_path))
        try:
            self._run(self._client.connect(self.socket_path), self.timeout)
        except asyncio.TimeoutError:
            self._abandon()
            raise QMPConnectError(
                'no QMP greeting from %s within %g s: another client probably holds this monitor '
                '(QEMU serves one client at a time per QMP socket: stop the other client, or give '
                'the VM a second -qmp socket for backups), or the socket is not a QEMU monitor'
                % (self.socket_path, self.timeout), socket=self.socket_path)
        except ConnectError as exc:
            self._abandon()
            raise QMPConnectError(self._connect_error_message(exc.exc), socket=self.socket_path)
        except (OSError, EOFError) as exc:
            self._abandon()
            raise QMPConnectError(self._connect_error_message(exc), socket=self.socket_path)
        greeting = self._client.greeting
        self.greeting = greeting._asdict() if greeting is not None else None
        return self

    def _connect_error_message(self, cause):
        return connect_error_message(self.socket_path, cause)

    def _abandon(self):
        if self._client is not None:
            try:
                self._run(self._client.disconnect(), 5)
            except Exception:  # pylint: disable=broad-except
                pass  # already broken; we are reporting the original failure
        if self._loop is not None:
            self._loop.close()
        self._client = None
        self._listeners = {}
        self._loop = None

    def close(self):
        self._abandon()

    def __enter__(self):
        if self._client is None:
            self.connect()
        return self

    def __exit__(self, exc_type, exc_value, tb):
        self.close()

    # -- commands -----------------------------------------------------------

    def execute(self, command, arguments=None, timeout=None):
        """Run one QMP command and return its ``return`` value."""
        if self._client is None:
            raise QMPDisconnectedError('not connected to QMP socket %s' % self.socket_path,
                                       socket=self.socket_path)
        timeout = self.timeout if timeout is None else timeout
        try:
            return self._run(self._client.execute(command, arguments or None), timeout)
        except ExecuteError as exc:
            raise QMPCommandError(
                'QEMU at %s refused %s: %s' % (self.socket_path, command, exc),
                command=command, error_class=exc.error_class, desc=str(exc),
                socket=self.socket_path)
        except asyncio.TimeoutError:
            raise QMPTimeoutError(
                'QEMU at %s did not answer %s within %g s: the VM may be hung or very busy; '
                'raise timeout if it is just slow' % (self.socket_path, command, timeout),
                socket=self.socket_path)
        except (QMPError, EOFError, OSError) as exc:
            self._abandon()
            raise QMPDisconnectedError(
                'lost the QMP connection to %s during %s (%s): QEMU exited or closed the '
                'monitor' % (self.socket_path, command, type(exc).__name__),
                socket=self.socket_path)

    def transaction(self, actions, completion_mode=None):
        """Run ``actions`` (a list of (type, data) pairs) as one QMP transaction.

        QEMU drains all I/O before it prepares the actions, so they take effect
        at one instant for every disk; if one fails, none takes effect."""
        if not actions:
            return None
        arguments = {'actions': [{'type': kind, 'data': data} for kind, data in actions]}
        if completion_mode:
            arguments['properties'] = {'completion-mode': completion_mode}
        return self.execute('transaction', arguments)

    # -- events and jobs ----------------------------------------------------

    def wait_event(self, names, timeout):
        """Wait up to ``timeout`` seconds for one of the events ``names``.

        Returns the event, or None when none came in time. The first wait for
        ``names`` registers a qemu.qmp EventListener for them, which then
        queues those events for every later wait on this connection."""
        if self._client is None:
            raise QMPDisconnectedError('not connected to QMP socket %s' % self.socket_path,
                                       socket=self.socket_path)
        names = tuple(sorted(names))
        if names not in self._listeners:
            self._listeners[names] = EventListener(names)
            self._client.register_listener(self._listeners[names])
        try:
            return dict(self._run(self._listeners[names].get(), max(timeout, 0)))
        except asyncio.TimeoutError:
            return None
        except (QMPError, EOFError, OSError):
            self._abandon()
            raise QMPDisconnectedError(
                'lost the QMP connection to %s while waiting for %s: QEMU exited or closed '
                'the monitor' % (self.socket_path, '/'.join(names)), socket=self.socket_path)

    def query_jobs(self, job_ids=None):
        jobs = self.execute('query-jobs')
        if job_ids is None:
            return dict((job['id'], job) for job in jobs)
        return dict((job['id'], job) for job in jobs if job['id'] in job_ids)

    def end_jobs(self, job_ids, timeout=60):
        """Cancel those of ``job_ids`` that have not concluded, wait until
        they have and dismiss them all: none is left in QEMU afterwards.
        (QEMU takes job-cancel only before a job concludes, job-dismiss only
        after.) Returns the ids of the jobs that were there."""
        jobs = self.query_jobs(job_ids)
        for job_id, job in jobs.items():
            if job['status'] != JOB_CONCLUDED:
                self.cancel_job(job_id)
        if jobs:
            self.wait_jobs(jobs, settled_states=JOB_ENDED_STATES, timeout=timeout)
            for job_id in jobs:
                ignore_missing(self.execute, 'job-dismiss', {'id': job_id})
        return sorted(jobs)

    def cancel_job(self, job_id):
        """job-cancel, where a job that concluded (or went) since it was
        queried is no failure: QEMU refuses cancel only in those states, and
        two jobs failing on one full target conclude within microseconds."""
        try:
            ignore_missing(self.execute, 'job-cancel', {'id': job_id})
        except QMPCommandError:
            job = self.query_jobs([job_id]).get(job_id, {'status': JOB_GONE})
            if job['status'] not in JOB_ENDED_STATES:
                raise

    def wait_jobs(self, job_ids, settled_states=JOB_SETTLED_STATES, timeout=None,
                  progress=None, poll_interval=1.0, stop_when=None):
        """Wait until every job in ``job_ids`` is in one of ``settled_states``
        (or until ``stop_when(jobs)`` is true, e.g. once one job failed).

        ``query-jobs`` is the truth (events are not queued for a client that was
        away); JOB_STATUS_CHANGE events only wake us early. ``progress`` is
        called with the jobs' current state on every round. Returns the jobs
        by id; a job that vanished is returned with status ``null``."""
        job_ids = list(job_ids)
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            jobs = self.query_jobs(job_ids)
            for job_id in job_ids:
                jobs.setdefault(job_id, {'id': job_id, 'status': JOB_GONE})
            if progress is not None:
                progress(jobs)
            if all(job['status'] in settled_states for job in jobs.values()):
                return jobs
            if stop_when is not None and stop_when(jobs):
                return jobs
            wait = poll_interval
            if deadline is not None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise QMPTimeoutError(
                        'jobs %s on %s did not finish within %g s (states: %s)' % (
                            ', '.join(job_ids), self.socket_path, timeout,
                            ', '.join('%s=%s' % (j['id'], j['status']) for j in jobs.values())),
                        socket=self.socket_path)
                wait = min(wait, remaining)
            self.wait_event(('JOB_STATUS_CHANGE',), wait)
