# -*- coding: utf-8 -*-
# Copyright: (c) 2026, vmbackup.qemu developers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

"""A broken environment gives a msg naming the socket, never a traceback."""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import os
import socket
import threading

from harness.ansible import assert_clean_failure


def test_missing_socket(ansible, workdir):
    path = os.path.join(workdir, 'nosuch.qmp')
    failure = ansible.failed('qemu_bitmap', {'socket': path, 'name': 'b'})
    assert path in failure['msg'] and 'does not exist' in failure['msg']


def test_socket_nobody_listens_on(make_vm, ansible):
    vm = make_vm()
    vm.kill()   # QEMU leaves its socket file behind
    assert os.path.exists(vm.socket)
    failure = ansible.failed('qemu_bitmap', {'socket': vm.socket, 'name': 'b'})
    assert vm.socket in failure['msg'] and 'nothing is listening' in failure['msg']


def test_socket_held_by_another_client(vm, ansible):
    from qemu.qmp.legacy import QEMUMonitorProtocol
    holder = QEMUMonitorProtocol(vm.socket)
    holder.connect()
    try:
        failure = ansible.failed('qemu_bitmap', {'socket': vm.socket, 'name': 'b', 'timeout': 2})
        assert vm.socket in failure['msg'] and 'another client' in failure['msg']
    finally:
        holder.close()
    # Once the other client is gone the monitor serves us again.
    assert ansible.ok('qemu_bitmap', {'socket': vm.socket, 'name': 'b'})['changed'] is True


def test_not_a_qmp_server(ansible, workdir):
    path = os.path.join(workdir, 'other.sock')
    server = socket.socket(socket.AF_UNIX)
    server.bind(path)
    server.listen(1)

    def answer_like_ssh():
        # Every connection: the module's lock probes the socket's peer
        # before its QMP client connects.
        while True:
            try:
                conn = server.accept()[0]
            except OSError:
                return
            try:
                conn.sendall(b'SSH-2.0-OpenSSH_9.2\r\n')
                conn.recv(100)
            except OSError:
                pass
            conn.close()

    thread = threading.Thread(target=answer_like_ssh)
    thread.daemon = True
    thread.start()
    try:
        failure = ansible.failed('qemu_bitmap', {'socket': path, 'name': 'b', 'timeout': 5})
        assert path in failure['msg'] and 'does not speak QMP' in failure['msg']
    finally:
        server.close()


def test_not_a_socket(ansible, workdir):
    path = os.path.join(workdir, 'plain-file')
    with open(path, 'w') as handle:
        handle.write('x')
    failure = ansible.failed('qemu_bitmap', {'socket': path, 'name': 'b'})
    assert path in failure['msg'] and 'not a UNIX socket' in failure['msg']


def test_bad_option_is_a_clean_failure(ansible, vm):
    failure = ansible.module('qemu_bitmap', {'socket': vm.socket, 'name': '', 'timeout': 5})
    assert failure.get('failed')
    assert_clean_failure(failure)
    assert 'name must not be empty' in failure['msg']


def test_ending_a_job_that_concluded_since_it_was_queried(vm, workdir):
    """Two jobs failing on one full target conclude within microseconds of
    each other: a cancel sent to a job seen running a moment before finds it
    concluded, and QEMU refuses the verb. Ending the jobs goes on and
    dismisses it all the same (CI once left two jobs behind this way)."""
    from ansible_collections.vmbackup.qemu.plugins.module_utils.qmp import QMPConnection

    target = os.path.join(workdir, 'target.qcow2')
    vm.qemu.create_image(target, vm.disks['vda'].size)
    vm.qmp('blockdev-add', **{'driver': 'qcow2', 'node-name': 'vmb-test-tgt0',
                              'file': {'driver': 'file', 'filename': target}})
    vm.qmp('blockdev-backup', **{'job-id': 'vmb-test-push0', 'device': 'fmt-vda', 'target': 'vmb-test-tgt0',
                                 'sync': 'full', 'auto-dismiss': False})
    vm.wait_for_job('vmb-test-push0', statuses=('concluded',))
    with QMPConnection(vm.socket) as qmp:
        qmp.cancel_job('vmb-test-push0')          # refused by QEMU: concluded
        assert qmp.end_jobs(['vmb-test-push0']) == ['vmb-test-push0']
        assert qmp.query_jobs() == {}
    vm.qmp('blockdev-del', **{'node-name': 'vmb-test-tgt0'})
    assert vm.leftovers() == []
