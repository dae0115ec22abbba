# -*- coding: utf-8 -*-
# Copyright: (c) 2026, vmbackup.qemu developers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

"""A small synchronous client for the QEMU guest agent (qemu-ga).

The host side of the agent's virtio-serial port is a UNIX socket, for example
``-chardev socket,path=/run/qemu/web1.qga,server=on,wait=off,id=qga0
-device virtio-serial -device virtserialport,chardev=qga0,name=org.qemu.guest_agent.0``.

The protocol is JSON, one reply per line, with no greeting. QEMU accepts a
connection on that socket whether or not an agent runs in the guest, and a
previous client may have left unread replies or half a request in the
channel. So :meth:`GuestAgent.connect` synchronises with
``guest-sync-delimited`` before anything else, and silence until the timeout
is how an absent agent shows."""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import errno
import json
import os
import random
import socket
import stat
import time

from ansible_collections.vmbackup.qemu.plugins.module_utils.errors import (
    GuestAgentError,
    GuestAgentUnavailable,
)

DEFAULT_TIMEOUT = 10.0

# Never valid in UTF-8, so it cannot occur inside JSON text: the agent puts it
# before the reply to guest-sync-delimited, and a client sends it to make the
# agent's parser drop whatever half request is pending.
SENTINEL = b'\xff'

CHANNEL_HINT = ('-chardev socket,path=%s,server=on,wait=off,id=qga0 -device virtio-serial '
                '-device virtserialport,chardev=qga0,name=org.qemu.guest_agent.0')

_RANDOM = random.SystemRandom()


def describe_guest_agent_socket_problem(path):
    """Return (error class, message) for a socket path that cannot be used, or None."""
    try:
        st = os.stat(path)
    except OSError as exc:
        if exc.errno == errno.ENOENT:
            return GuestAgentUnavailable, (
                'guest agent socket %s does not exist: is the VM running, and was it started with '
                'a guest agent channel (%s)?' % (path, CHANNEL_HINT % path))
        if exc.errno == errno.EACCES:
            return GuestAgentError, (
                'permission denied looking up guest agent socket %s: run as a user who may reach '
                'it (for example with become: true)' % path)
        return GuestAgentError, 'cannot use guest agent socket %s: %s' % (path, exc.strerror)
    if not stat.S_ISSOCK(st.st_mode):
        return GuestAgentError, (
            '%s is not a UNIX socket: point the guest agent socket at the host side of the VM\'s '
            'org.qemu.guest_agent.0 channel (%s)' % (path, CHANNEL_HINT % path))
    return None


# What to do when the agent refuses one of these commands.
_REFUSAL_HINTS = {
    'guest-fsfreeze-freeze': 'the agent thaws what it froze when a freeze fails; look at its log '
                             'in the guest, or back up without freezing',
    'guest-fsfreeze-thaw': 'filesystems in the guest may still be frozen: retry the thaw, or run '
                           '"fsfreeze -u MOUNTPOINT" in the guest',
}
_NOT_FOUND_HINT = ('the agent in the guest lacks this command or has it disabled (an older '
                   'qemu-ga, --block-rpcs/--allow-rpcs, or the guest is frozen): upgrade or '
                   'reconfigure qemu-ga in the guest')


class GuestAgent(object):
    """A connection to the guest agent of one VM."""

    def __init__(self, socket_path, timeout=DEFAULT_TIMEOUT):
        self.socket_path = socket_path
        self.timeout = float(timeout)
        self._sock = None
        self._buffer = b''
        # A reply we gave up on may still come: resynchronise before the next command.
        self._need_sync = False

    # -- connection ---------------------------------------------------------

    def connect(self):
        """Connect and synchronise; raises GuestAgentUnavailable when no agent answers."""
        if self._sock is not None:
            return self
        problem = describe_guest_agent_socket_problem(self.socket_path)
        if problem:
            error_class, msg = problem
            raise error_class(msg, socket=self.socket_path)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(self.timeout)
            sock.connect(self.socket_path)
        except socket.timeout as exc:
            sock.close()
            raise GuestAgentUnavailable(
                'connecting to guest agent socket %s took longer than %g s: QEMU is hung or '
                'very busy' % (self.socket_path, self.timeout), socket=self.socket_path) from exc
        except OSError as exc:
            sock.close()
            raise self._connect_error(exc) from exc
        self._sock = sock
        self._buffer = b''
        try:
            self._sync(self.timeout)
        except GuestAgentError:
            self.close()
            raise
        return self

    def _connect_error(self, exc):
        path = self.socket_path
        if isinstance(exc, ConnectionRefusedError):
            return GuestAgentUnavailable(
                'nothing is listening on guest agent socket %s (connection refused): the VM that '
                'created it has probably exited; start the VM or remove the stale socket' % path,
                socket=path)
        if isinstance(exc, FileNotFoundError):
            return GuestAgentUnavailable(
                'guest agent socket %s disappeared while connecting: the VM has probably just '
                'exited; start it and retry' % path, socket=path)
        if isinstance(exc, PermissionError):
            return GuestAgentError(
                'permission denied connecting to guest agent socket %s: run as a user who may '
                'write to it (for example with become: true)' % path, socket=path)
        return GuestAgentError('cannot connect to guest agent socket %s: %s' % (path, exc),
                               socket=path)

    def close(self):
        if self._sock is not None:
            try:
                self._sock.close()
            except OSError:
                pass  # closing a broken socket; nothing left to report
        self._sock = None
        self._buffer = b''
        self._need_sync = False

    def __enter__(self):
        return self.connect()

    def __exit__(self, exc_type, exc_value, tb):
        self.close()

    # -- wire ---------------------------------------------------------------

    def _send(self, data, command, lost=GuestAgentError):
        """Send ``data``; ``lost`` is the error class for a broken or stuck channel."""
        self._sock.settimeout(self.timeout)
        try:
            self._sock.sendall(data)
        except socket.timeout as exc:
            self._need_sync = True
            raise lost(
                'could not send %s to the guest agent at %s within %g s: the guest does not read '
                'its agent channel (agent hung?); check qemu-ga in the guest'
                % (command, self.socket_path, self.timeout), command=command,
                socket=self.socket_path) from exc
        except OSError as exc:
            self.close()
            raise lost(
                'lost the connection to the guest agent socket %s while sending %s (%s): the VM '
                'exited or QEMU closed the channel' % (self.socket_path, command, exc),
                command=command, socket=self.socket_path) from exc

    def _read_more(self, deadline, command, lost=GuestAgentError):
        """Append what arrives before ``deadline`` to the buffer; False on timeout.

        ``lost`` is the error class for a broken channel."""
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        self._sock.settimeout(remaining)
        try:
            data = self._sock.recv(65536)
        except socket.timeout:
            return False
        except OSError as exc:
            self.close()
            raise lost(
                'lost the connection to the guest agent socket %s during %s (%s): the VM exited '
                'or QEMU closed the channel' % (self.socket_path, command, exc),
                command=command, socket=self.socket_path) from exc
        if not data:
            self.close()
            raise lost(
                'the guest agent socket %s was closed during %s: the VM exited or QEMU closed '
                'the channel' % (self.socket_path, command), command=command,
                socket=self.socket_path)
        self._buffer += data
        return True

    def _sync(self, timeout):
        """Discard stale data in both directions (see guest-sync-delimited in
        the qemu-ga protocol reference).

        Before the sync answers nothing proves an agent exists, so a channel
        that breaks or stays silent means GuestAgentUnavailable."""
        command = 'guest-sync-delimited'
        sync_id = _RANDOM.randint(1, 2 ** 53 - 1)
        request = json.dumps({'execute': command, 'arguments': {'id': sync_id}})
        deadline = time.monotonic() + timeout
        self._need_sync = True
        self._buffer = b''
        # The leading 0xFF makes the agent drop a half request left by a
        # previous client; the agent answers it with a parse error, which we
        # skip with everything else before the sentinel.
        self._send(SENTINEL + request.encode('utf-8') + b'\n', command, GuestAgentUnavailable)
        seen_sentinel = False
        while True:
            # Only the last sentinel matters: an earlier one may belong to a
            # previous client's sync that nobody read.
            cut = self._buffer.rfind(SENTINEL)
            if cut >= 0:
                self._buffer = self._buffer[cut + 1:]
                seen_sentinel = True
            elif not seen_sentinel:
                if self._buffer.startswith(b'{"QMP":'):
                    raise GuestAgentError(
                        '%s is a QMP monitor socket, not a guest agent socket: point it at the '
                        'host side of the VM\'s org.qemu.guest_agent.0 channel (%s)'
                        % (self.socket_path, CHANNEL_HINT % self.socket_path),
                        command=command, socket=self.socket_path)
                # Keep a partial line (it may be the start of a QMP greeting),
                # but not an endless one.
                self._buffer = self._buffer[self._buffer.rfind(b'\n') + 1:][-4096:]
            while seen_sentinel and b'\n' in self._buffer:
                line, self._buffer = self._buffer.split(b'\n', 1)
                if _parse(line) == {'return': sync_id}:
                    self._need_sync = False
                    return
            if not self._read_more(deadline, command, GuestAgentUnavailable):
                raise GuestAgentUnavailable(
                    'no answer from the guest agent at %s within %g s: qemu-ga is not running in '
                    'the guest (install and start qemu-guest-agent there), the guest is still '
                    'booting or is paused, or another client holds this channel (QEMU serves one '
                    'client at a time)' % (self.socket_path, timeout),
                    command=command, socket=self.socket_path)

    # -- commands -----------------------------------------------------------

    def execute(self, command, arguments=None, timeout=None):
        """Run one guest agent command and return its ``return`` value."""
        if self._sock is None:
            raise GuestAgentError('not connected to the guest agent socket %s: connect first'
                                  % self.socket_path, command=command, socket=self.socket_path)
        timeout = self.timeout if timeout is None else float(timeout)
        if self._need_sync:
            self._sync(timeout)
        request = {'execute': command}
        if arguments is not None:
            request['arguments'] = arguments
        deadline = time.monotonic() + timeout
        self._need_sync = True
        self._send(json.dumps(request).encode('utf-8') + b'\n', command)
        while True:
            while b'\n' in self._buffer:
                line, self._buffer = self._buffer.split(b'\n', 1)
                if not line.strip():
                    continue
                reply = _parse(line)
                if not isinstance(reply, dict) or not ('return' in reply or 'error' in reply):
                    raise GuestAgentError(
                        'the guest agent at %s sent %r in reply to %s, which is not a guest agent '
                        'reply: point the socket at the org.qemu.guest_agent.0 channel'
                        % (self.socket_path, line[:200], command), command=command,
                        socket=self.socket_path)
                self._need_sync = False
                if 'error' in reply:
                    raise self._refusal(command, reply['error'])
                return reply['return']
            if not self._read_more(deadline, command):
                hint = 'raise the timeout if it is just slow'
                if command == 'guest-fsfreeze-freeze':
                    hint = ('the freeze may still complete: thaw the guest (guest-fsfreeze-thaw) '
                            'before giving up')
                raise GuestAgentError(
                    'the guest agent at %s did not answer %s within %g s: the guest may be hung '
                    'or very busy; %s' % (self.socket_path, command, timeout, hint),
                    command=command, socket=self.socket_path)

    def _refusal(self, command, error):
        if not isinstance(error, dict):
            error = {'desc': str(error)}
        error_class = error.get('class')
        desc = error.get('desc', '')
        hint = _REFUSAL_HINTS.get(command)
        if error_class == 'CommandNotFound':
            hint = _NOT_FOUND_HINT
        msg = 'the guest agent at %s refused %s: %s' % (self.socket_path, command, desc)
        if hint:
            msg = '%s; %s' % (msg, hint)
        return GuestAgentError(msg, command=command, error_class=error_class, desc=desc,
                               socket=self.socket_path)

    def ping(self):
        self.execute('guest-ping')

    def info(self):
        """``guest-info``: the agent's version and supported commands."""
        return self.execute('guest-info')

    def fsfreeze_status(self):
        """``"thawed"`` or ``"frozen"``."""
        return self.execute('guest-fsfreeze-status')

    def freeze(self, timeout=None):
        """Freeze the guest's filesystems; returns how many were frozen.

        If this raises on a timeout, the guest may still become frozen: thaw it."""
        return self.execute('guest-fsfreeze-freeze', timeout=timeout)

    def thaw(self, timeout=None):
        """Thaw the guest's filesystems; returns how many were thawed (0 if none was frozen)."""
        return self.execute('guest-fsfreeze-thaw', timeout=timeout)


def _parse(line):
    """The JSON value of one line, or None if it is not JSON."""
    try:
        return json.loads(line.decode('utf-8'))
    except ValueError:  # includes UnicodeDecodeError and JSONDecodeError
        return None
