# -*- coding: utf-8 -*-
# Copyright: (c) 2026, vmbackup.qemu developers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

"""What the modules share: failures as clean `msg`s, and for those that talk
to a VM the `socket`/`timeout`/`lock_timeout` options (documented in the
`vmbackup.qemu.qmp` doc fragment), the guarded qemu.qmp import, the lock on
the QEMU process (vmlock) and one connection per run."""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import os
import traceback

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

from ansible_collections.vmbackup.qemu.plugins.module_utils import qemu_img
from ansible_collections.vmbackup.qemu.plugins.module_utils.errors import QMPConnectError, VMBackupError
from ansible_collections.vmbackup.qemu.plugins.module_utils.qmp import (
    DEFAULT_TIMEOUT,
    HAS_QEMU_QMP,
    QEMU_QMP_IMPORT_ERROR,
    QMPConnection,
    describe_qmp_socket_problem,
)
from ansible_collections.vmbackup.qemu.plugins.module_utils.paths import path_problem
from ansible_collections.vmbackup.qemu.plugins.module_utils.vmlock import DEFAULT_LOCK_TIMEOUT, VMLock
from ansible_collections.vmbackup.qemu.plugins.module_utils.vm import VM

QMP_ARGUMENT_SPEC = dict(
    socket=dict(type='path', required=True),
    timeout=dict(type='float', default=DEFAULT_TIMEOUT),
    lock_timeout=dict(type='float', default=DEFAULT_LOCK_TIMEOUT),
)


class QMPModule(object):
    """An AnsibleModule whose `run` gets a connected VM."""

    def __init__(self, argument_spec, **kwargs):
        spec = dict(QMP_ARGUMENT_SPEC)
        spec.update(argument_spec)
        kwargs.setdefault('supports_check_mode', True)
        self.module = AnsibleModule(argument_spec=spec, **kwargs)
        self.params = self.module.params
        if not HAS_QEMU_QMP:
            self.module.fail_json(msg=missing_required_lib('qemu.qmp'),
                                  exception=str(QEMU_QMP_IMPORT_ERROR))
        problem = path_problem('socket', self.params['socket'])
        if problem:
            self.fail(problem)
        # The module's working directory, not QEMU's, is what a relative path means.
        self.params['socket'] = os.path.abspath(self.params['socket'])
        if self.params['timeout'] <= 0:
            self.fail('timeout must be a positive number of seconds, got %s' % self.params['timeout'])
        if self.params['lock_timeout'] < 0:
            self.fail('lock_timeout must be 0 (do not wait) or a positive number of seconds, got %s'
                      % self.params['lock_timeout'])

    @property
    def check_mode(self):
        return self.module.check_mode

    def fail(self, msg, **details):
        self.module.fail_json(msg=msg, **details)

    def run(self, work):
        """Lock the QEMU process, connect, call ``work(vm)`` and exit with the
        dict it returns. Check mode takes the lock too: what it predicts must
        not be changed under it by another run."""
        def connected():
            with self._vm_lock():
                with QMPConnection(self.params['socket'], self.params['timeout']) as connection:
                    return work(VM(connection))
        run_guarded(self.module, connected)

    def _vm_lock(self):
        path = self.params['socket']
        problem = describe_qmp_socket_problem(path)
        if problem:
            raise QMPConnectError(problem, socket=path)
        holder = {'module': 'vmbackup.qemu.%s' % getattr(self.module, '_name', 'module').split('.')[-1],
                  'check_mode': self.check_mode}
        return VMLock(path, holder, timeout=self.params['lock_timeout'],
                      connect_timeout=self.params['timeout'])


def run_guarded(module, work):
    """Call ``work()`` and exit with the dict it returns; every failure ends
    in a clean `msg`, never a traceback."""
    qemu_img.bind(module)
    try:
        result = work()
    except VMBackupError as exc:
        module.fail_json(msg=exc.msg, **exc.details)
    except Exception as exc:  # pylint: disable=broad-except
        # A bug of ours must still end in a readable failure, not "MODULE FAILURE".
        module.fail_json(msg='internal error in vmbackup.qemu (%s: %s); please report it with the '
                         'exception text' % (type(exc).__name__, exc), exception=traceback.format_exc())
    module.exit_json(**result)
