# -*- coding: utf-8 -*-
# Copyright: (c) 2026, vmbackup.qemu developers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

"""A slow network share on this machine: a FUSE passthrough of a folder whose
writes, all files together, go no faster than a given rate (and, if asked,
fail with EIO once a number of bytes was written: a failing device).

Why FUSE and not QEMU's own throttle: a write to a slow NFS share blocks the
thread of QEMU's I/O pool that issued it, and the guest's own disk I/O waits
for those threads. A throttle node queues coroutines and holds no thread, so
it cannot show what a user's slow share does to the guest. Writes here block
the caller's thread (FUSE runs one thread per request), as NFS does.

Run as its own process (``python slowfs.py BACKING MOUNTPOINT RATE [FAIL_AFTER]``);
``SlowShare`` does that and unmounts on exit. Needs /dev/fuse and the
``mfusepy`` package (requirements-dev.txt)."""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import errno
import os
import subprocess
import sys
import threading
import time


class RateLimit(object):
    """Writes of all threads together at most ``rate`` bytes per second: each
    write reserves its slot on one shared clock and sleeps until it ends."""

    def __init__(self, rate):
        self.rate = float(rate)
        self._free_at = time.monotonic()
        self._lock = threading.Lock()

    def wait(self, size):
        with self._lock:
            start = max(self._free_at, time.monotonic())
            self._free_at = start + size / self.rate
            done = self._free_at
        delay = done - time.monotonic()
        if delay > 0:
            time.sleep(delay)


class WriteBudget(object):
    """After ``budget`` bytes (all files together) every write fails with
    EIO, as a dying disk or a broken share does; None: never."""

    def __init__(self, budget):
        self.left = budget
        self._lock = threading.Lock()

    def take(self, size):
        if self.left is None:
            return
        with self._lock:
            if self.left < size:
                raise OSError(errno.EIO, os.strerror(errno.EIO))
            self.left -= size


def passthrough(backing, limit, budget=None):
    """The FUSE operations of a passthrough of ``backing`` with ``limit`` on writes."""
    import mfusepy as fuse   # pylint: disable=import-error,import-outside-toplevel

    def real(path):
        return os.path.join(backing, path.lstrip('/'))

    def oserror(call):
        def wrapped(self, *args):
            try:
                return call(self, *args)
            except OSError as exc:
                raise fuse.FuseOSError(exc.errno or errno.EIO)
        return wrapped

    class Passthrough(fuse.Operations):
        use_ns = True

        @oserror
        def getattr(self, path, fh=None):
            st = os.lstat(real(path)) if fh is None else os.fstat(fh)
            keys = ('st_mode', 'st_nlink', 'st_uid', 'st_gid', 'st_size', 'st_blocks',
                    'st_atime_ns', 'st_mtime_ns', 'st_ctime_ns')
            attrs = dict((k, getattr(st, k)) for k in keys)
            for key in ('st_atime', 'st_mtime', 'st_ctime'):
                attrs[key] = attrs.pop(key + '_ns')
            return attrs

        @oserror
        def readdir(self, path, fh):
            return ['.', '..'] + os.listdir(real(path))

        @oserror
        def statfs(self, path):
            st = os.statvfs(real(path))
            return dict((k, getattr(st, k)) for k in (
                'f_bsize', 'f_frsize', 'f_blocks', 'f_bfree', 'f_bavail', 'f_files', 'f_ffree', 'f_namemax'))

        @oserror
        def open(self, path, flags):
            return os.open(real(path), flags & ~os.O_DIRECT)

        @oserror
        def create(self, path, mode, fi=None):
            return os.open(real(path), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)

        @oserror
        def read(self, path, size, offset, fh):
            return os.pread(fh, size, offset)

        @oserror
        def write(self, path, data, offset, fh):
            if budget is not None:
                budget.take(len(data))
            limit.wait(len(data))
            return os.pwrite(fh, data, offset)

        @oserror
        def truncate(self, path, length, fh=None):
            if fh is None:
                os.truncate(real(path), length)
            else:
                os.ftruncate(fh, length)

        @oserror
        def fsync(self, path, datasync, fh):
            os.fsync(fh)

        def flush(self, path, fh):
            return 0

        @oserror
        def release(self, path, fh):
            os.close(fh)

        @oserror
        def unlink(self, path):
            os.unlink(real(path))

        @oserror
        def rename(self, old, new):
            os.rename(real(old), real(new))

        @oserror
        def mkdir(self, path, mode):
            os.mkdir(real(path), mode)

        @oserror
        def rmdir(self, path):
            os.rmdir(real(path))

        @oserror
        def chmod(self, path, mode):
            os.chmod(real(path), mode)

        @oserror
        def chown(self, path, uid, gid):
            os.chown(real(path), uid, gid)

        @oserror
        def utimens(self, path, times=None):
            os.utime(real(path), ns=times)

        @oserror
        def access(self, path, amode):
            if not os.access(real(path), amode):
                raise fuse.FuseOSError(errno.EACCES)

    return fuse, Passthrough()


class SlowShare(object):
    """``with SlowShare(backing, mountpoint, rate):`` a slow share mounted at
    ``mountpoint`` for the block's duration."""

    def __init__(self, backing, mountpoint, rate, fail_after=None):
        self.backing, self.mountpoint, self.rate = backing, mountpoint, rate
        self.fail_after = fail_after      # bytes written before every write fails with EIO
        self.process = None

    def __enter__(self):
        for path in (self.backing, self.mountpoint):
            if not os.path.isdir(path):
                os.makedirs(path)
        self.process = subprocess.Popen([sys.executable, os.path.abspath(__file__), self.backing,
                                         self.mountpoint, str(self.rate)]
                                        + ([str(self.fail_after)] if self.fail_after is not None else []))
        deadline = time.monotonic() + 20
        while not os.path.ismount(self.mountpoint):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.__exit__()
                raise RuntimeError('the slow share did not mount at %s (is /dev/fuse there?)' % self.mountpoint)
            time.sleep(0.05)
        return self

    def __exit__(self, *exc):
        if os.path.ismount(self.mountpoint):
            subprocess.call(['umount', '-l', self.mountpoint])
        if self.process is not None:
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return False


def main(argv):
    backing, mountpoint, rate = argv[1], argv[2], float(argv[3])
    budget = WriteBudget(int(argv[4])) if len(argv) > 4 else None
    fuse, operations = passthrough(os.path.abspath(backing), RateLimit(rate), budget)
    fuse.FUSE(operations, mountpoint, foreground=True, nothreads=False, allow_other=False)


if __name__ == '__main__':
    main(sys.argv)
