# -*- coding: utf-8 -*-
# Copyright: (c) 2026, vmbackup.qemu developers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

"""Errors of the collection: each carries a message that names the thing and
says what to do, so modules can hand it to fail_json unchanged."""

from __future__ import absolute_import, division, print_function
__metaclass__ = type


class VMBackupError(Exception):
    """Base of every error the collection raises on purpose.

    ``msg`` is the user-facing message; ``details`` is merged into the
    module's failure result (for example the disks that exist)."""

    def __init__(self, msg, **details):
        super(VMBackupError, self).__init__(msg)
        self.msg = msg
        self.details = details

    def __str__(self):
        return self.msg


class QMPConnectError(VMBackupError):
    """The QMP socket could not be reached or did not speak QMP."""


class QMPDisconnectedError(VMBackupError):
    """The connection broke while a command was running (QEMU exited?)."""


class QMPTimeoutError(VMBackupError):
    """QEMU did not answer in time."""


class CommandError(VMBackupError):
    """A command to QEMU or its guest agent failed.

    ``command``, ``error_class`` and ``desc`` describe the error reply, when
    there was one."""

    def __init__(self, msg, command=None, error_class=None, desc=None, **details):
        super(CommandError, self).__init__(msg, **details)
        self.command = command
        self.error_class = error_class
        self.desc = desc


class QMPCommandError(CommandError):
    """QEMU answered a command with an error."""


class FeatureMissingError(VMBackupError):
    """The running QEMU lacks something the requested operation needs."""


class DiskSelectionError(VMBackupError):
    """A disk name does not exist or cannot be used as asked."""


class BitmapStateError(VMBackupError):
    """A bitmap cannot be changed as asked (busy, inconsistent, mismatched)."""


class BackupError(VMBackupError):
    """The backup failed; nothing of this run was kept."""


class ViewError(VMBackupError):
    """A point-in-time view (qemu_fleece) cannot be made or used as asked."""


class RepositoryError(VMBackupError):
    """The repository cannot be used as asked."""


class RestoreError(VMBackupError):
    """A restore cannot be done as asked."""


class EncryptionError(VMBackupError):
    """An encryption key that cannot be read, or does not fit the backups."""


class VMBusyError(VMBackupError):
    """Another run of the collection holds the VM."""


class QemuImgError(VMBackupError):
    """qemu-img failed or is missing."""


class GuestAgentError(CommandError):
    """The guest agent refused a command, did not answer it, or went away."""


class GuestAgentUnavailable(GuestAgentError):
    """No guest agent can be reached: the socket is missing or refuses
    connections (VM not running), or nothing answered guest-sync-delimited
    in time (qemu-ga not running in the guest, or another client holds the
    channel)."""
