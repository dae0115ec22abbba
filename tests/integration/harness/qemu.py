# -*- coding: utf-8 -*-
# Copyright: (c) 2026, vmbackup.qemu developers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

"""A real QEMU without a guest OS, for tests.

`TestVM` starts ``qemu-system-x86_64 -M q35 -S -nodefaults`` with virtio-blk
disks, one QMP monitor for the code under test and one (or more) for the
test. The "guest" writes through its devices with HMP ``qemu-io -d <qdev>``
while the harness keeps a plain raw file per disk (the shadow) holding what
the guest wrote, so any backup can be compared with the truth at an instant.
"""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import json
import os
import shutil
import signal
import socket
import subprocess
import threading
import time

from qemu.qmp.legacy import QEMUMonitorProtocol

from harness.names import NODE_PREFIX, PUSH_JOB_ROLE, role_of

BINDIR_ENV = 'VMBACKUP_QEMU_BINDIR'


class QemuInstall(object):
    """Which QEMU binaries the tests use: $VMBACKUP_QEMU_BINDIR, else PATH."""

    def __init__(self, bindir=None):
        self.bindir = bindir or os.environ.get(BINDIR_ENV) or None
        if self.bindir:
            self.bindir = os.path.abspath(self.bindir)
        self.system = self._tool('qemu-system-x86_64')
        self.img = self._tool('qemu-img')
        self.io = self._tool('qemu-io')
        out = subprocess.run([self.system, '--version'], check=True, stdout=subprocess.PIPE,
                             universal_newlines=True).stdout
        self.version_string = out.split('\n', 1)[0]
        numbers = self.version_string.split('version ', 1)[1].split()[0]
        self.version = tuple(int(x) for x in numbers.split('.')[:3])

    def _tool(self, name):
        if self.bindir:
            path = os.path.join(self.bindir, name)
            if not os.access(path, os.X_OK):
                raise RuntimeError('%s=%s has no executable %s' % (BINDIR_ENV, self.bindir, name))
            return path
        path = shutil.which(name)
        if not path:
            raise RuntimeError('%s not found on PATH: install qemu-system-x86 and qemu-utils' % name)
        return path

    def _unpacked(self, *relative):
        """Path inside an unpacked QEMU (dpkg -x tree around bindir), if it exists."""
        if not self.bindir:
            return None
        path = os.path.normpath(os.path.join(self.bindir, '..', *relative))
        return path if os.path.isdir(path) else None

    def data_dir_args(self):
        """-L for an unpacked QEMU: its own firmware and ROMs before the system's."""
        own = self._unpacked('share', 'qemu')
        return ['-L', own] if own else []

    def env(self):
        """Environment for processes that must use these QEMU binaries.

        An unpacked QEMU must load its own modules: the system directory holds
        another build's, which QEMU refuses (and 10.0 may then abort)."""
        env = dict(os.environ)
        if self.bindir:
            env['PATH'] = self.bindir + os.pathsep + env.get('PATH', '')
            env[BINDIR_ENV] = self.bindir
            modules = self._unpacked('lib', 'x86_64-linux-gnu', 'qemu')
            if modules:
                env['QEMU_MODULE_DIR'] = modules
        return env

    def run_img(self, *args, **kwargs):
        check = kwargs.pop('check', True)
        return subprocess.run([self.img] + list(args), stdout=subprocess.PIPE, env=self.env(),
                              stderr=subprocess.STDOUT, universal_newlines=True, check=check, **kwargs)

    def create_image(self, path, size, fmt='qcow2', options=None):
        args = ['create', '-q', '-f', fmt]
        if options:
            args += ['-o', options]
        self.run_img(*(args + [path, str(size)]))

    def compare(self, image_a, image_b, fmt_a=None, fmt_b=None, force_share=False):
        """Run qemu-img compare; return (identical, output)."""
        args = ['compare']
        if force_share:
            args.append('-U')
        if fmt_a:
            args += ['-f', fmt_a]
        if fmt_b:
            args += ['-F', fmt_b]
        proc = self.run_img(*(args + [image_a, image_b]), check=False)
        if proc.returncode not in (0, 1):
            raise RuntimeError('qemu-img compare failed: %s' % proc.stdout)
        return proc.returncode == 0, proc.stdout

    def info(self, path, force_share=False):
        args = ['info', '--output=json'] + (['-U'] if force_share else []) + [path]
        return json.loads(self.run_img(*args).stdout)


class DiskSpec(object):
    """A disk of a test VM.

    attach: 'blockdev' (-blockdev + -device id=NAME), 'drive' (-drive id=NAME
    + a device without id), 'anon' (-blockdev node-name=NAME + a device
    without id). throttle puts a throttle filter between device and format.
    media=False gives an empty CD-ROM drive."""

    def __init__(self, name, size=64 * 1024 * 1024, fmt='qcow2', attach='blockdev',
                 throttle=False, media=True, read_only=False, image_options=None, ext4=False):
        self.name = name
        self.size = size
        self.fmt = fmt
        self.attach = attach
        self.throttle = throttle
        self.media = media
        self.read_only = read_only
        self.image_options = image_options
        self.ext4 = ext4            # made with mkfs.ext4 on the host, for a real guest to mount


class TestVM(object):
    """One QEMU process; start/quit/kill it as often as a test needs."""

    def __init__(self, qemu, workdir, disks, name='testvm', test_monitors=1, guest=None, agent_running=True):
        self.qemu = qemu
        self.workdir = workdir
        self.name = name
        self.qemu_name = name        # QEMU's -name; a test may give two VMs the same one
        self.disks = dict((d.name, d) for d in disks)
        self.disk_order = [d.name for d in disks]
        self.socket = os.path.join(workdir, name + '.qmp')
        self.test_sockets = [os.path.join(workdir, '%s.test%d.qmp' % (name, i))
                             for i in range(test_monitors)]
        self.log_path = os.path.join(workdir, name + '.log')
        # A real guest (harness/guest.py): its kernel and initrd, its serial
        # console, and its agent's channel, where qemu-ga answers unless the
        # guest was told not to start it.
        self.guest = guest
        self.agent_running = agent_running
        self.console = os.path.join(workdir, name + '.console')
        self.agent_socket = os.path.join(workdir, name + '.qga')
        self.process = None
        self._monitors = {}
        self._log_offset = 0
        self._log_lock = threading.Lock()
        for disk in disks:
            if disk.media and disk.ext4:
                self._make_ext4(disk)
            elif disk.media:
                self.qemu.create_image(self.image(disk.name), disk.size, disk.fmt, disk.image_options)
                with open(self.shadow(disk.name), 'wb') as shadow:
                    shadow.truncate(disk.size)

    def _make_ext4(self, disk):
        raw = self.image(disk.name) + '.raw'
        with open(raw, 'wb') as handle:
            handle.truncate(disk.size)
        subprocess.run(['mkfs.ext4', '-q', '-F', raw], check=True)
        self.qemu.run_img('convert', '-f', 'raw', '-O', disk.fmt, raw, self.image(disk.name))
        os.unlink(raw)

    # -- files ----------------------------------------------------------------

    def image(self, disk):
        spec = self.disks[disk]
        return os.path.join(self.workdir, '%s-%s.%s' % (self.name, disk, spec.fmt))

    def shadow(self, disk):
        """Raw file holding exactly what the guest wrote to ``disk``."""
        return os.path.join(self.workdir, '%s-%s.shadow.raw' % (self.name, disk))

    def save_shadow(self, disk, label):
        """Copy of the shadow as it is now, e.g. the content at a backup's instant."""
        path = os.path.join(self.workdir, '%s-%s.%s.raw' % (self.name, disk, label))
        shutil.copyfile(self.shadow(disk), path)
        return path

    # -- process --------------------------------------------------------------

    def command_line(self):
        args = [self.qemu.system, '-M', 'q35', '-S', '-nodefaults', '-display', 'none',
                '-name', self.qemu_name] + self.qemu.data_dir_args()
        for path in [self.socket] + self.test_sockets:
            args += ['-qmp', 'unix:%s,server=on,wait=off' % path]
        if any(d.throttle for d in self.disks.values()):
            args += ['-object', 'throttle-group,id=tg0,x-bps-total=0']
        for name in self.disk_order:
            args += self._disk_args(self.disks[name])
        return args + self._guest_args()

    def _guest_args(self):
        if not self.guest:
            return []
        args = ['-accel', 'tcg', '-m', '256', '-kernel', self.guest.kernel, '-initrd', self.guest.initrd,
                '-append', 'console=ttyS0 panic=-1' + ('' if self.agent_running else ' noagent'),
                '-serial', 'file:' + self.console, '-device', 'virtio-serial-pci',
                '-chardev', 'socket,path=%s,server=on,wait=off,id=qga0' % self.agent_socket,
                '-device', 'virtserialport,chardev=qga0,name=org.qemu.guest_agent.0']
        return args

    def console_lines(self):
        """What the guest printed on its serial console so far."""
        try:
            with open(self.console, 'rb') as handle:
                return handle.read().decode('utf-8', 'replace').splitlines()
        except IOError:
            return []

    def wait_console(self, predicate, timeout=120):
        """Wait until a console line satisfies ``predicate``; return it."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in self.console_lines():
                if predicate(line):
                    return line
            if not self.running():
                break
            time.sleep(0.1)
        raise AssertionError('the guest did not print what was awaited within %d s: %s'
                             % (timeout, '\n'.join(self.console_lines()[-20:])))

    def guest_writes(self):
        """How many files the guest's writer has written, as it last said."""
        counts = [int(line.split()[-1]) for line in self.console_lines() if line.startswith('guest: wrote ')]
        return counts[-1] if counts else 0

    def _disk_args(self, spec):
        name = spec.name
        if not spec.media:
            return ['-device', 'ide-cd,id=%s' % name]
        ro = ',read-only=on' if spec.read_only else ''
        if spec.attach == 'drive':
            return ['-drive', 'file=%s,format=%s,if=none,id=%s%s' % (self.image(name), spec.fmt, name, ro),
                    '-device', 'virtio-blk-pci,drive=%s' % name]
        fmt_node = 'fmt-' + name
        args = ['-blockdev', 'driver=file,filename=%s,node-name=file-%s%s' % (self.image(name), name, ro),
                '-blockdev', 'driver=%s,file=file-%s,node-name=%s%s' % (
                    spec.fmt, name, name if spec.attach == 'anon' else fmt_node, ro)]
        top = name if spec.attach == 'anon' else fmt_node
        if spec.throttle:
            args += ['-blockdev', 'driver=throttle,throttle-group=tg0,file=%s,node-name=thr-%s' % (top, name)]
            top = 'thr-' + name
        device = 'virtio-blk-pci,drive=%s' % top
        if spec.attach != 'anon':
            device += ',id=%s' % name
        return args + ['-device', device]

    def start(self):
        assert self.process is None, 'already running'
        for path in [self.socket, self.agent_socket, self.console] + self.test_sockets:
            if os.path.exists(path):
                os.unlink(path)
        self._log = open(self.log_path, 'ab')
        self.process = subprocess.Popen(self.command_line(), stdout=self._log, stderr=subprocess.STDOUT,
                                        stdin=subprocess.DEVNULL, env=self.qemu.env())
        # A socket file exists from bind() on, but QEMU listens a moment
        # later: wait until the last monitor answers (QEMU sets them up in
        # order, so every earlier one answers by then too).
        deadline = time.monotonic() + 30
        last = len(self.test_sockets) - 1
        while True:
            if self.process.poll() is not None:
                raise RuntimeError('QEMU exited at start (%s): %s' % (self.process.returncode, self.log()))
            if time.monotonic() > deadline:
                raise RuntimeError('QEMU did not open its monitors: %s' % self.log())
            if self._answers(self.test_sockets[last]):
                return self
            time.sleep(0.02)

    @staticmethod
    def _answers(path):
        """True when a QMP greeting comes from ``path`` (a plain probe: a
        monitor object would tie itself to this thread's event loop)."""
        probe = socket.socket(socket.AF_UNIX)
        probe.settimeout(5)
        try:
            probe.connect(path)
            return probe.recv(1) == b'{'
        except OSError:
            return False
        finally:
            probe.close()

    def running(self):
        return self.process is not None and self.process.poll() is None

    def monitor(self, index=0):
        """The test's own QMP connection number ``index`` (connected lazily)."""
        if index not in self._monitors:
            mon = QEMUMonitorProtocol(self.test_sockets[index])
            mon.connect()
            self._monitors[index] = mon
        return self._monitors[index]

    def _close_monitors(self):
        for mon in self._monitors.values():
            try:
                mon.close()
            except Exception:  # pylint: disable=broad-except
                pass  # QEMU is gone already
        self._monitors = {}

    def quit(self, timeout=30):
        """Clean shutdown: QEMU writes persistent bitmaps back to the images."""
        if not self.running():
            return self._reap()
        try:
            self.monitor().cmd('quit')
        except Exception:  # pylint: disable=broad-except
            pass  # the monitor may close before the reply arrives
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        return self._reap()

    def kill(self):
        """SIGKILL: no bitmap is saved, as after a host crash."""
        if self.running():
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()
        return self._reap()

    def _reap(self):
        self._close_monitors()
        self.__dict__.pop('_qdev_cache', None)
        code = self.process.returncode if self.process else None
        self.process = None
        if getattr(self, '_log', None):
            self._log.close()
            self._log = None
        return code

    def log(self):
        try:
            with open(self.log_path, 'rb') as log:
                return log.read().decode('utf-8', 'replace')
        except IOError:
            return ''

    # -- QMP and the guest ----------------------------------------------------

    def qmp(self, command, monitor=0, **arguments):
        return self.monitor(monitor).cmd(command, **arguments)

    def hmp(self, command_line, monitor=0):
        return self.qmp('human-monitor-command', monitor=monitor, **{'command-line': command_line})

    def block_info(self, disk):
        """query-block entry of ``disk`` (matched by device id or drive id)."""
        for info in self.qmp('query-block'):
            qdev = info.get('qdev') or ''
            if info.get('device') == disk or qdev == disk or qdev.startswith('/machine/peripheral/%s/' % disk):
                return info
        spec = self.disks[disk]
        if spec.attach == 'anon':
            for info in self.qmp('query-block'):
                if info.get('inserted', {}).get('node-name') in (disk, 'thr-' + disk):
                    return info
        raise KeyError(disk)

    def qdev(self, disk):
        # Cached: a qdev path never changes while QEMU runs, and writers on
        # other monitors should not share monitor 0 for the lookup.
        cache = self.__dict__.setdefault('_qdev_cache', {})
        if disk not in cache:
            cache[disk] = self.block_info(disk)['qdev']
        return cache[disk]

    def guest_io(self, disk, io_command, monitor=0):
        """Run one qemu-io command through the guest device of ``disk``.

        qemu-io prints its errors to QEMU's log, not into the HMP reply, so
        the log is checked after each command."""
        self.hmp('qemu-io -d %s "%s"' % (self.qdev(disk), io_command), monitor=monitor)
        with self._log_lock, open(self.log_path, 'rb') as log:
            log.seek(self._log_offset)
            new = log.read().decode('utf-8', 'replace')
            self._log_offset = log.tell()
        if 'failed:' in new:
            raise AssertionError('guest I/O "%s" on %s failed: %s' % (io_command, disk, new.strip()))

    def write(self, disk, offset, length, pattern, monitor=0):
        """The guest writes ``length`` bytes of byte ``pattern`` at ``offset``."""
        self.guest_io(disk, 'write -P 0x%02x %d %d' % (pattern, offset, length), monitor=monitor)
        self._shadow_write(disk, offset, bytes([pattern]) * length)

    def start_write(self, disk, offset, length, pattern, monitor=0):
        """Like write(), but returns once the guest has issued the write, as
        a real guest's device does: the monitor stays free meanwhile. Returns
        a function that waits (up to ``timeout`` s) until the write is done."""
        with self._log_lock, open(self.log_path, 'rb') as log:
            log.seek(0, os.SEEK_END)
            start = log.tell()
        self.guest_io(disk, 'aio_write -P 0x%02x %d %d' % (pattern, offset, length), monitor=monitor)
        done = 'wrote %d/%d bytes at offset %d' % (length, length, offset)

        def wait(timeout=120):
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                with open(self.log_path, 'rb') as log:
                    log.seek(start)
                    new = log.read().decode('utf-8', 'replace')
                if 'failed:' in new:
                    raise AssertionError('guest write at %d on %s failed: %s' % (offset, disk, new.strip()))
                if done in new:
                    self._shadow_write(disk, offset, bytes([pattern]) * length)
                    return
                time.sleep(0.01)
            raise AssertionError('guest write at %d on %s not done within %d s' % (offset, disk, timeout))
        return wait

    def write_zeroes(self, disk, offset, length, monitor=0):
        self.guest_io(disk, 'write -z %d %d' % (offset, length), monitor=monitor)
        self._shadow_write(disk, offset, bytes(length))

    def _shadow_write(self, disk, offset, data):
        with open(self.shadow(disk), 'r+b') as shadow:
            shadow.seek(offset)
            shadow.write(data)

    def assert_disk_matches_shadow(self, disk):
        if self.running():
            # qcow2 metadata sits in QEMU's cache until flushed.
            self.guest_io(disk, 'flush')
        identical, output = self.qemu.compare(self.image(disk), self.shadow(disk),
                                              fmt_a=self.disks[disk].fmt, fmt_b='raw',
                                              force_share=True)
        assert identical, 'live disk %s differs from what the guest wrote: %s' % (disk, output)

    def wait_for_job(self, job_id=None, statuses=('running',), timeout=60, monitor=0):
        """Wait until job ``job_id`` (default: any push job of ours, the one
        that copies a disk into a backup) is in ``statuses``; return it."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for job in self.qmp('query-jobs', monitor=monitor):
                wanted = job['id'] == job_id if job_id else role_of(job['id']) == PUSH_JOB_ROLE
                if wanted and job['status'] in statuses:
                    return job
            time.sleep(0.02)
        raise AssertionError('no job %s in %s within %d s' % (job_id or 'pushing a backup', statuses, timeout))

    def leftovers(self):
        """Anything of the collection still in QEMU: jobs, nodes, exports, objects."""
        found = ['job ' + j['id'] for j in self.qmp('query-jobs')]
        found += ['node ' + n['node-name'] for n in self.qmp('query-named-block-nodes', flat=True)
                  if n.get('node-name', '').startswith(NODE_PREFIX)]
        found += ['export ' + e['id'] for e in self.qmp('query-block-exports')]
        found += ['object ' + o['name'] for o in self.qmp('qom-list', path='/objects')
                  if o['name'].startswith(NODE_PREFIX)]
        for info in self.qmp('query-block'):
            drv = (info.get('inserted') or {}).get('drv')
            if drv == 'copy-before-write':
                found.append('device %s behind a filter' % info.get('qdev'))
        return found

    def run_state(self):
        return self.qmp('query-status')['status']

    def bitmaps(self, disk):
        """Named bitmaps on the format node of ``disk``, by name (test view)."""
        node = self.format_node(disk)
        for info in self.qmp('query-named-block-nodes', flat=True):
            if info.get('node-name') == node:
                return dict((b['name'], b) for b in info.get('dirty-bitmaps', []) if b.get('name'))
        raise KeyError(node)

    def format_node(self, disk):
        spec = self.disks[disk]
        if spec.attach == 'anon':
            return disk
        if spec.attach == 'blockdev':
            return 'fmt-' + disk
        inserted = self.block_info(disk)['inserted']
        return inserted['node-name']
