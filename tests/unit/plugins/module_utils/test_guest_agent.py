# -*- coding: utf-8 -*-
# Copyright: (c) 2026, vmbackup.qemu developers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import json
import os
import shutil
import socket
import tempfile
import threading
import time

import pytest

from ansible_collections.vmbackup.qemu.plugins.module_utils.errors import (
    GuestAgentError,
    GuestAgentUnavailable,
    VMBackupError,
)
from ansible_collections.vmbackup.qemu.plugins.module_utils.guest_agent import GuestAgent
from harness.fake_qga import FakeGuestAgent


@pytest.fixture(name='sockdir')
def sockdir_fixture():
    # UNIX socket paths are limited to ~107 bytes: pytest's tmp_path is too deep.
    path = tempfile.mkdtemp(prefix='qga', dir='/tmp')
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(name='fake')
def fake_fixture(sockdir):
    agent = FakeGuestAgent(os.path.join(sockdir, 'vm.qga'))
    agent.start()
    yield agent
    agent.stop()
    assert not os.path.exists(agent.socket_path)


def connected(fake, timeout=2.0):
    return GuestAgent(fake.socket_path, timeout=timeout).connect()


def test_ping_freeze_thaw_round_trip(fake):
    with GuestAgent(fake.socket_path, timeout=2.0) as agent:
        agent.ping()
        assert agent.fsfreeze_status() == 'thawed'
        assert agent.freeze() == 3
        assert fake.frozen
        assert agent.fsfreeze_status() == 'frozen'
        assert agent.thaw() == 3
        assert not fake.frozen
        assert agent.fsfreeze_status() == 'thawed'
        assert agent.thaw() == 0  # nothing frozen: not an error
    assert fake.commands == ['guest-sync-delimited', 'guest-ping', 'guest-fsfreeze-status',
                             'guest-fsfreeze-freeze', 'guest-fsfreeze-status',
                             'guest-fsfreeze-thaw', 'guest-fsfreeze-status',
                             'guest-fsfreeze-thaw']


def test_sync_uses_a_random_id_and_flushes_the_agent_parser(fake):
    connected(fake).close()
    connected(fake).close()
    ids = [r['arguments']['id'] for r in fake.requests]
    assert len(ids) == 2 and ids[0] != ids[1]
    assert all(isinstance(i, int) and i > 0 for i in ids)


def test_execute_passes_arguments(fake):
    with connected(fake) as agent:
        assert agent.execute('guest-sync', {'id': 42}) == 42
        info = agent.info()
    assert 'guest-fsfreeze-freeze' in [c['name'] for c in info['supported_commands']]
    assert fake.requests[-2] == {'execute': 'guest-sync', 'arguments': {'id': 42}}
    assert fake.requests[-1] == {'execute': 'guest-info'}


def test_stale_replies_in_the_channel_are_skipped(fake):
    # What a previous client may have left unread: whole replies, an old
    # delimited sync reply with another id, and half a reply.
    fake.stale_output = (b'{"return": {}}\n'
                         b'\xff{"return": 12345}\n'
                         b'{"return": 7}\n'
                         b'{"return": {"version": "8.')
    with connected(fake) as agent:
        assert agent.fsfreeze_status() == 'thawed'
        assert agent.freeze() == 3
        assert agent.thaw() == 3


def test_stale_half_request_is_flushed_by_the_leading_0xff(fake):
    fake.stale_input = b'{"execute": "guest-fsfreeze-freeze", "argum'
    with connected(fake) as agent:
        agent.ping()
    assert fake.commands == ['guest-sync-delimited', 'guest-ping']
    assert not fake.frozen


def test_silent_agent_is_unavailable_within_the_timeout(fake):
    fake.mode = 'silent'
    agent = GuestAgent(fake.socket_path, timeout=1.0)
    started = time.monotonic()
    with pytest.raises(GuestAgentUnavailable) as exc_info:
        agent.connect()
    elapsed = time.monotonic() - started
    assert 0.9 <= elapsed < 3
    msg = str(exc_info.value)
    assert fake.socket_path in msg
    assert 'qemu-guest-agent' in msg
    assert exc_info.value.details == {'socket': fake.socket_path}
    assert isinstance(exc_info.value, GuestAgentError)
    assert isinstance(exc_info.value, VMBackupError)
    assert fake.commands == []
    # The agent starts later: a new connection works.
    fake.mode = 'ok'
    with connected(fake) as agent:
        agent.ping()


def test_missing_socket_is_unavailable(sockdir):
    path = os.path.join(sockdir, 'nope.qga')
    with pytest.raises(GuestAgentUnavailable) as exc_info:
        GuestAgent(path, timeout=1.0).connect()
    msg = str(exc_info.value)
    assert path in msg
    assert 'does not exist' in msg
    assert 'org.qemu.guest_agent.0' in msg


def test_stale_socket_is_unavailable(sockdir):
    path = os.path.join(sockdir, 'stale.qga')
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(path)
    sock.close()  # the file stays, nobody listens: a VM that exited
    with pytest.raises(GuestAgentUnavailable) as exc_info:
        GuestAgent(path, timeout=1.0).connect()
    assert path in str(exc_info.value)
    assert 'connection refused' in str(exc_info.value)


def test_not_a_socket_is_an_error_but_not_unavailable(sockdir):
    path = os.path.join(sockdir, 'file.qga')
    with open(path, 'w', encoding='utf-8'):
        pass
    with pytest.raises(GuestAgentError) as exc_info:
        GuestAgent(path, timeout=1.0).connect()
    assert not isinstance(exc_info.value, GuestAgentUnavailable)
    assert path in str(exc_info.value)


def test_qmp_socket_given_by_mistake_is_named(sockdir):
    path = os.path.join(sockdir, 'qmp.sock')
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(1)

    def greet():
        conn = listener.accept()[0]
        conn.sendall(b'{"QMP": {"version": {}, "capabilities": []}}\r\n')
        conn.recv(4096)
        conn.close()

    thread = threading.Thread(target=greet)
    thread.start()
    try:
        with pytest.raises(GuestAgentError) as exc_info:
            GuestAgent(path, timeout=2.0).connect()
    finally:
        thread.join(5)
        listener.close()
    assert not isinstance(exc_info.value, GuestAgentUnavailable)
    assert 'QMP monitor socket' in str(exc_info.value)


def test_freeze_error_reply(fake):
    fake.mode = 'freeze-fails'
    with connected(fake) as agent:
        with pytest.raises(GuestAgentError) as exc_info:
            agent.freeze()
        err = exc_info.value
        assert err.command == 'guest-fsfreeze-freeze'
        assert err.error_class == 'GenericError'
        assert err.desc == 'failed to freeze /var/lib/data: Device or resource busy'
        assert err.desc in str(err)
        assert fake.socket_path in str(err)
        assert not isinstance(err, GuestAgentUnavailable)
        # The connection stays usable after an error reply.
        assert agent.fsfreeze_status() == 'thawed'
    assert not fake.frozen


def test_thaw_fails_once_then_succeeds(fake):
    fake.mode = 'thaw-fails-once'
    with connected(fake) as agent:
        assert agent.freeze() == 3
        with pytest.raises(GuestAgentError) as exc_info:
            agent.thaw()
        assert 'failed to thaw' in exc_info.value.desc
        assert 'still be frozen' in str(exc_info.value)
        assert fake.frozen
        assert agent.thaw() == 3
    assert not fake.frozen


def test_frozen_agent_refuses_other_commands(fake):
    with connected(fake) as agent:
        agent.freeze()
        with pytest.raises(GuestAgentError) as exc_info:
            agent.freeze()
        assert exc_info.value.error_class == 'CommandNotFound'
        assert 'frozen state' in exc_info.value.desc
        agent.ping()
        agent.thaw()


def test_unknown_command(fake):
    with connected(fake) as agent:
        with pytest.raises(GuestAgentError) as exc_info:
            agent.execute('guest-no-such-thing')
        assert exc_info.value.error_class == 'CommandNotFound'
        assert 'guest-no-such-thing' in str(exc_info.value)
        agent.ping()


def test_late_reply_after_timeout_is_discarded(fake):
    fake.delays['guest-fsfreeze-freeze'] = 1.0
    with connected(fake, timeout=3.0) as agent:
        with pytest.raises(GuestAgentError) as exc_info:
            agent.freeze(timeout=0.3)
        assert 'did not answer guest-fsfreeze-freeze' in str(exc_info.value)
        assert 'thaw' in str(exc_info.value)
        # The freeze reply (3) arrives late; the next command resyncs first
        # instead of taking it for its own answer.
        assert agent.fsfreeze_status() == 'frozen'
        assert agent.thaw() == 3
    assert fake.commands == ['guest-sync-delimited', 'guest-fsfreeze-freeze',
                             'guest-sync-delimited', 'guest-fsfreeze-status',
                             'guest-fsfreeze-thaw']


def test_clients_in_sequence(fake):
    for dummy in range(3):
        with connected(fake) as agent:
            agent.ping()
    assert fake.connections == 3
    assert fake.commands == ['guest-sync-delimited', 'guest-ping'] * 3


def test_second_client_while_the_first_holds_the_channel(fake):
    with connected(fake) as first:
        with pytest.raises(GuestAgentUnavailable) as exc_info:
            GuestAgent(fake.socket_path, timeout=0.5).connect()
        assert 'another client' in str(exc_info.value)
        first.ping()


def test_agent_going_away_mid_session(sockdir):
    fake = FakeGuestAgent(os.path.join(sockdir, 'vm.qga')).start()
    try:
        agent = connected(fake)
        fake.stop()  # the VM exits
        with pytest.raises(GuestAgentError) as exc_info:
            agent.ping()
        assert fake.socket_path in str(exc_info.value)
        assert 'closed' in str(exc_info.value)
        with pytest.raises(GuestAgentError, match='not connected'):
            agent.ping()
    finally:
        fake.stop()


def test_execute_without_connect(fake):
    with pytest.raises(GuestAgentError, match='not connected'):
        GuestAgent(fake.socket_path).ping()


def test_fake_stops_cleanly_with_a_client_connected(sockdir):
    before = set(threading.enumerate())
    fake = FakeGuestAgent(os.path.join(sockdir, 'vm.qga'), mode='silent').start()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(fake.socket_path)
    sock.sendall(json.dumps({'execute': 'guest-ping'}).encode() + b'\n')
    started = time.monotonic()
    fake.stop()
    assert time.monotonic() - started < 2
    sock.close()
    assert set(threading.enumerate()) <= before
    assert not os.path.exists(fake.socket_path)
