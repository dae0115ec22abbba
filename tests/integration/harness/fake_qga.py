# -*- coding: utf-8 -*-
# Copyright: (c) 2026, vmbackup.qemu developers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

"""A fake QEMU guest agent on a UNIX socket, for tests.

It plays both QEMU's host-side chardev and qemu-ga behind it, in a thread of
the test process: one client at a time (a second one waits in the listen
backlog and hears nothing, as with QEMU), JSON requests one per line, and
qemu-ga's ways that matter to a client:

- a 0xFF byte from the client drops any pending half request and is answered
  with a JSON parse error (QEMU's lexer treats 0xFF as an error and resets);
- guest-sync-delimited's reply starts with a 0xFF byte;
- while frozen, only the commands qemu-ga allows when frozen run; the others
  fail with CommandNotFound "... has been disabled: the agent is in frozen state".

``mode`` is read for every request, so a test may change it between calls:

- ``'ok'``: answer normally;
- ``'silent'``: accept connections, read and never answer (no agent runs in
  the guest); nothing is recorded in ``commands``;
- ``'freeze-fails'``: guest-fsfreeze-freeze fails with GenericError and the
  guest stays thawed (qemu-ga thaws what it froze when a freeze fails);
- ``'thaw-fails-once'``: the next guest-fsfreeze-thaw fails with GenericError
  and the guest stays frozen; then ``mode`` becomes ``'ok'``.

Other knobs: ``stale_output`` (bytes sent to the next client as soon as it
connects, like replies a previous client left unread), ``stale_input`` (bytes
put before the next client's input, like half a request a previous client
left), ``delays`` (command name -> seconds to wait before answering it).
"""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import json
import os
import socket
import threading

SENTINEL = b'\xff'
POLL = 0.05

FILESYSTEMS = ['/', '/boot', '/var/lib/data']

# Commands qemu-ga still runs while the guest is frozen (qga/main.c).
FROZEN_ALLOWED = ('guest-ping', 'guest-info', 'guest-sync', 'guest-sync-delimited',
                  'guest-fsfreeze-status', 'guest-fsfreeze-thaw')

SUPPORTED = ('guest-sync-delimited', 'guest-sync', 'guest-ping', 'guest-info',
             'guest-fsfreeze-status', 'guest-fsfreeze-freeze', 'guest-fsfreeze-thaw')


class FakeGuestAgent(object):

    def __init__(self, socket_path, mode='ok'):
        self.socket_path = socket_path
        self.mode = mode
        self.commands = []
        self.requests = []
        self.frozen = False
        self.connections = 0
        self.stale_output = b''
        self.stale_input = b''
        self.delays = {}
        self.filesystems = list(FILESYSTEMS)
        self._listener = None
        self._thread = None
        self._stopping = threading.Event()

    # -- lifecycle ----------------------------------------------------------

    def start(self):
        if self._thread is not None:
            raise RuntimeError('FakeGuestAgent on %s is already running' % self.socket_path)
        if os.path.lexists(self.socket_path):
            os.unlink(self.socket_path)
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            listener.bind(self.socket_path)
            listener.listen(4)
            listener.settimeout(POLL)
        except OSError:
            listener.close()
            raise
        self._listener = listener
        self._stopping.clear()
        self._thread = threading.Thread(target=self._serve, name='fake-qga %s' % self.socket_path)
        self._thread.daemon = True  # a failed test must not keep the interpreter alive
        self._thread.start()
        return self

    def stop(self):
        if self._thread is None:
            return
        self._stopping.set()
        self._thread.join(5)
        alive = self._thread.is_alive()
        self._thread = None
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        if os.path.lexists(self.socket_path):
            os.unlink(self.socket_path)
        if alive:
            raise RuntimeError('FakeGuestAgent on %s did not stop within 5 s' % self.socket_path)

    def __enter__(self):
        return self.start()

    def __exit__(self, exc_type, exc_value, tb):
        self.stop()

    # -- serving ------------------------------------------------------------

    def _serve(self):
        while not self._stopping.is_set():
            try:
                conn = self._listener.accept()[0]
            except socket.timeout:
                continue
            except OSError:
                return  # listener closed under us
            self.connections += 1
            try:
                self._serve_client(conn)
            except OSError:
                pass  # the client went away mid-reply; wait for the next one
            finally:
                conn.close()

    def _serve_client(self, conn):
        conn.settimeout(POLL)
        pending, self.stale_input = self.stale_input, b''
        stale, self.stale_output = self.stale_output, b''
        if stale:
            conn.sendall(stale)
        while not self._stopping.is_set():
            try:
                data = conn.recv(65536)
            except socket.timeout:
                continue
            if not data:
                return
            if self.mode == 'silent':
                continue  # nobody in the guest reads the channel
            pending += data
            pending = self._process(conn, pending)

    def _process(self, conn, pending):
        """Handle every complete request in ``pending``; return the rest."""
        while True:
            cut = pending.find(SENTINEL)
            newline = pending.find(b'\n')
            if cut >= 0 and (newline < 0 or cut < newline):
                # Whatever came before the 0xFF is dropped, and qemu-ga reports it.
                pending = pending[cut + 1:]
                self._reply(conn, {'error': {'class': 'GenericError',
                                             'desc': "JSON parse error, stray '\\xff'"}})
                continue
            if newline < 0:
                return pending
            line, pending = pending[:newline], pending[newline + 1:]
            if line.strip():
                self._handle(conn, line)
                if self._stopping.is_set():
                    return b''

    def _handle(self, conn, line):
        try:
            request = json.loads(line.decode('utf-8'))
        except ValueError:
            self._reply(conn, error('GenericError', 'JSON parse error'))
            return
        if not isinstance(request, dict) or not isinstance(request.get('execute'), str):
            self._reply(conn, error('GenericError', "QMP input lacks member 'execute'"))
            return
        command = request['execute']
        self.commands.append(command)
        self.requests.append(request)
        delay = self.delays.get(command)
        if delay and self._stopping.wait(delay):
            return
        reply, prefix = self._dispatch(command, request.get('arguments') or {})
        if 'id' in request:
            reply['id'] = request['id']
        self._reply(conn, reply, prefix)

    def _dispatch(self, command, arguments):
        """Return (reply, bytes to put before it)."""
        if command not in SUPPORTED:
            return error('CommandNotFound', 'The command %s has not been found' % command), b''
        if self.frozen and command not in FROZEN_ALLOWED:
            return error('CommandNotFound', 'Command %s has been disabled: the agent is in '
                         'frozen state' % command), b''
        if command == 'guest-sync-delimited':
            return {'return': arguments.get('id')}, SENTINEL
        if command == 'guest-sync':
            return {'return': arguments.get('id')}, b''
        if command == 'guest-ping':
            return {'return': {}}, b''
        if command == 'guest-info':
            return {'return': {'version': '8.2.2', 'supported_commands': [
                {'name': name, 'enabled': not self.frozen or name in FROZEN_ALLOWED,
                 'success-response': True} for name in SUPPORTED]}}, b''
        if command == 'guest-fsfreeze-status':
            return {'return': 'frozen' if self.frozen else 'thawed'}, b''
        if command == 'guest-fsfreeze-freeze':
            if self.mode == 'freeze-fails':
                return error('GenericError', 'failed to freeze %s: Device or resource busy'
                             % self.filesystems[-1]), b''
            self.frozen = True
            return {'return': len(self.filesystems)}, b''
        # guest-fsfreeze-thaw
        if self.mode == 'thaw-fails-once':
            self.mode = 'ok'
            return error('GenericError', 'failed to thaw %s: Invalid argument'
                         % self.filesystems[0]), b''
        thawed = len(self.filesystems) if self.frozen else 0
        self.frozen = False
        return {'return': thawed}, b''

    @staticmethod
    def _reply(conn, reply, prefix=b''):
        conn.sendall(prefix + json.dumps(reply).encode('utf-8') + b'\n')


def error(error_class, desc):
    return {'error': {'class': error_class, 'desc': desc}}
