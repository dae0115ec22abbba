#!/usr/bin/env python
# -*- coding: utf-8 -*-
# Copyright: (c) 2026, vmbackup.qemu developers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

"""Ansible overhead per VM of the backup role (target: at most 1 s per VM
beyond the data copy, 20 small VMs on one host).

Starts ``--vms`` test-bed VMs (tests/integration/harness, no guest OS), each
with one 64 MiB qcow2 disk holding a few MiB the "guest" wrote, and running
(``cont``). Then, for each ``--parallel`` value, ansible-playbook runs the
role vmbackup.qemu.backup over all of them twice: full backups into a fresh
repository, then incrementals after a small write. Before each run, a no-op
ansible-playbook run is timed: the fixed cost of starting ansible-playbook.

    overhead per VM = (wall time - no-op run (median) - data copy) / VMs

where "data copy" is what the module itself measured (the summary's
``duration`` per VM: QMP work and copy): the sum with ``qemu_backup_parallel``
1, else the sum over the batches of the longest duration in the batch.

A callback plugin (written into the work directory, enabled only for these
runs) timestamps every task and loop item, so the report also says where the
time goes: per task, and per batch (start the backups, wait for them, the
delay between the last one ending and the role noticing it, the bookkeeping
after) and per VM (the module's own work outside ``duration``).

To measure a change: ``--variant`` runs ansible-playbook with other settings
(e.g. pipelining), ``--role`` (with ``--roles-path``) runs a modified copy of
the role; several of either are interleaved run by run, for fair comparisons
on a busy host.

Exit status: 0 when the benchmark ran (whatever the overhead: it informs, it
does not gate), 2 on any failure.

Run from the repository root: ``.venv/bin/python bench/role_overhead.py``.
See bench/README.md for the options and how to read the result."""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import argparse
import json
import os
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import traceback

REPO = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), '..'))
sys.path.insert(0, os.path.join(REPO, 'tests', 'integration'))

from harness.ansible import AnsibleRunner  # noqa: E402 pylint: disable=wrong-import-position
from harness.qemu import DiskSpec, QemuInstall, TestVM  # noqa: E402 pylint: disable=wrong-import-position

MIB = 1024 * 1024
TARGET = 1.0                # seconds of overhead per VM, from the issue
DISK = 'vda'
DISK_SIZE = 64 * MIB
# (offset, length) the guest writes on each VM before the full and before the incremental.
FULL_WRITES = ((0, 2 * MIB), (32 * MIB, 2 * MIB))
INCR_WRITES = ((8 * MIB, 256 * 1024),)
PLAY_TIMEOUT = 1800         # seconds an ansible-playbook run may take
RETRIES = 2                 # runs again after a backup job was killed from outside

# Environment presets for --variant: settings passed to ansible-playbook from outside the role.
VARIANTS = {
    'default': {},
    'pipelining': {'ANSIBLE_PIPELINING': 'True'},
    'forks1': {'ANSIBLE_FORKS': '1'},
    'forks20': {'ANSIBLE_FORKS': '20'},
}

BACKUP_PLAY = '''
- name: Benchmark
  hosts: localhost
  gather_facts: false
  roles:
    - role: %s
'''

NOOP_PLAY = '''
- name: No-op
  hosts: localhost
  gather_facts: false
  tasks:
    - name: Nothing
      ansible.builtin.meta: noop
'''

CALLBACK_NAME = 'vb_bench_timing'
# Written to <workdir>/callback_plugins; one JSON line per event, with time.time(), to $VB_BENCH_TIMING.
CALLBACK = '''# -*- coding: utf-8 -*-
# Written by bench/role_overhead.py for its own runs.
from __future__ import absolute_import, division, print_function
__metaclass__ = type

DOCUMENTATION = """
name: %(name)s
type: aggregate
short_description: timestamps of tasks and loop items, for bench/role_overhead.py
description: One JSON line per event into the file named by VB_BENCH_TIMING.
requirements: [enabled in configuration]
"""

import json
import os
import time

from ansible.plugins.callback import CallbackBase


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = 'aggregate'
    CALLBACK_NAME = '%(name)s'
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self, *args, **kwargs):
        super(CallbackModule, self).__init__(*args, **kwargs)
        self._out = open(os.environ['VB_BENCH_TIMING'], 'a')

    def _emit(self, event, **data):
        data.update(ev=event, t=time.time())
        self._out.write(json.dumps(data, default=str) + '\\n')
        self._out.flush()

    def v2_playbook_on_start(self, playbook):
        self._emit('play_start')

    def v2_playbook_on_task_start(self, task, is_conditional):
        self._emit('task', name=task.name or task.action, action=task.action)

    def v2_playbook_on_include(self, included_file):
        self._emit('include')

    def _item(self, result, status):
        res = result._result
        self._emit('item', task=result._task.name, status=status, label=res.get('_ansible_item_label'),
                   jid=res.get('ansible_job_id'), results_file=res.get('results_file'),
                   finished=res.get('finished'))

    def v2_runner_item_on_ok(self, result):
        self._item(result, 'ok')

    def v2_runner_item_on_failed(self, result):
        self._item(result, 'failed')

    def v2_runner_item_on_skipped(self, result):
        self._item(result, 'skipped')

    def v2_runner_on_ok(self, result):
        self._emit('result', task=result._task.name, status='ok')

    def v2_runner_on_failed(self, result, ignore_errors=False):
        self._emit('result', task=result._task.name, status='failed')

    def v2_runner_on_skipped(self, result):
        self._emit('result', task=result._task.name, status='skipped')

    def v2_playbook_on_stats(self, stats):
        self._emit('stats')
''' % {'name': CALLBACK_NAME}

# Task names of the role, for the per-VM life of a backup.
START_TASK = 'Start the backups'
ROUND_TASK = 'Look again'          # the last task of wait.yml: once per round
VERIFY_TASK = 'Verify the chains just written'
SUMMARY_TASK = 'Summarize the backups of this host'


class BenchError(Exception):
    """The benchmark could not run."""


class JobKilled(BenchError):
    """A backup job was killed from outside the benchmark."""


def parse_args(argv):
    parser = argparse.ArgumentParser(
        description='Time the backup role (vmbackup.qemu.backup) over many small running VMs and print the '
                    'Ansible overhead per VM beyond the data copy (target <= %g s).' % TARGET)
    parser.add_argument('--vms', type=int, default=20, help='number of VMs (default: 20)')
    parser.add_argument('--parallel', default='1,4',
                        help='comma-separated qemu_backup_parallel values, one measurement each (default: 1,4)')
    parser.add_argument('--poll-interval', type=float, default=1,
                        help='qemu_backup_poll_interval, seconds (default: 1)')
    parser.add_argument('--workdir', default=None,
                        help='a fresh vb-bench-* directory is made in it for the VMs and repositories and removed '
                             'afterwards (default: /var/tmp; keep the path short: QMP socket paths must fit '
                             'in 108 bytes)')
    parser.add_argument('--variant', action='append', choices=sorted(VARIANTS), default=None,
                        help='environment preset for ansible-playbook, repeatable: %s (default: default)' % ', '.join(
                            '%s (%s)' % (name, ' '.join('%s=%s' % item for item in sorted(env.items())) or 'as is')
                            for name, env in sorted(VARIANTS.items())))
    parser.add_argument('--role', action='append', default=None,
                        help='role to run, repeatable (default: vmbackup.qemu.backup); e.g. a modified copy of '
                             'roles/backup in --roles-path, to measure a change against the original')
    parser.add_argument('--roles-path', default=None, help='ANSIBLE_ROLES_PATH for --role (default: unset)')
    parser.add_argument('--tasks', action='store_true', help='print the time per task of every run')
    args = parser.parse_args(argv)
    try:
        args.parallel = [int(value) for value in args.parallel.split(',') if value.strip()]
    except ValueError:
        parser.error('--parallel takes integers separated by commas, e.g. 1,4')
    if not args.parallel or min(args.parallel) < 1:
        parser.error('--parallel values must be at least 1')
    if args.vms < 1:
        parser.error('--vms must be at least 1')
    if args.poll_interval < 0:
        parser.error('--poll-interval must not be negative')
    args.variant = args.variant or ['default']
    args.role = args.role or ['vmbackup.qemu.backup']
    return args


def step(text):
    print('==> ' + text, flush=True)


def read_events(path):
    events = []
    if os.path.exists(path):
        with open(path, encoding='utf-8') as handle:
            events = [json.loads(line) for line in handle if line.strip()]
    return sorted(events, key=lambda event: event['t'])


def children_cpu_seconds():
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def processes_with(markers):
    """The markers (bytes) found in the command line of some process."""
    found = set()
    for entry in os.listdir('/proc'):
        if not entry.isdigit():
            continue
        try:
            with open('/proc/%s/cmdline' % entry, 'rb') as handle:
                cmdline = handle.read()
        except IOError:
            continue
        found.update(marker for marker in markers if marker in cmdline)
    return found


def stop_process(proc):
    """SIGTERM, then SIGKILL, the process group of ``proc`` (a child started in a session of its own)."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        if proc.poll() is not None:
            return
        try:
            os.killpg(proc.pid, sig)
        except OSError:
            pass
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass


def critical_path(durations, parallel):
    """Seconds of copy on the way of the role: batches run one after another,
    the VMs of a batch at the same time."""
    return sum(max(durations[i:i + parallel]) for i in range(0, len(durations), parallel))


class Run(object):
    """One ansible-playbook run of the role and what it tells."""

    def __init__(self, label, config, parallel, level, wall, started, ended, events, summary):
        self.label = label
        self.config = config        # (role, variant)
        self.parallel = parallel
        self.level = level
        self.wall = wall
        self.started = started      # time.time() just before ansible-playbook was started
        self.ended = ended
        self.events = events
        self.summary = summary
        self.durations = [vm['duration'] for vm in summary]
        self.copy = critical_path(self.durations, parallel)
        self.startup = None         # set by the bench: median of the no-op runs of its variant
        self.repo = None            # set by the bench: the repository
        self.cpu = None             # set by the bench: CPU seconds of ansible-playbook and its children
        self.load = None            # set by the bench: load average at the start
        self.rounds = sum(1 for e in events if e['ev'] == 'task' and e['name'] == ROUND_TASK)
        # When each async module run ended: its result file's last write (async_wrapper renames it in place).
        self.module_ends = {}
        for event in events:
            if event['ev'] == 'item' and event.get('jid') and event.get('results_file'):
                try:
                    self.module_ends[event['jid']] = os.stat(event['results_file']).st_mtime
                except OSError:
                    pass

    def overhead(self):
        return self.wall - self.startup - self.copy

    def per_vm(self):
        return self.overhead() / len(self.summary)

    def tasks(self):
        """[(task name, times run, loop items, seconds)] in order of first run.

        A task's seconds run from its start to the next task's start, so they
        include the strategy's work after it (e.g. loading an included file)."""
        rows, order = {}, []
        marks = [e for e in self.events if e['ev'] in ('task', 'stats')]
        items = {}
        for event in self.events:
            if event['ev'] == 'item':
                items[event['task']] = items.get(event['task'], 0) + 1
        first = self.events[0]['t'] if self.events else self.started
        rows['(ansible-playbook start, parse, load)'] = [1, 0, (marks[0]['t'] if marks else first) - self.started]
        order.append('(ansible-playbook start, parse, load)')
        for event, following in zip(marks, marks[1:]):
            if event['ev'] != 'task':
                continue
            if event['name'] not in rows:
                rows[event['name']] = [0, items.get(event['name'], 0), 0.0]
                order.append(event['name'])
            rows[event['name']][0] += 1
            rows[event['name']][2] += following['t'] - event['t']
        end = marks[-1]['t'] if marks else self.ended
        rows['(stats, exit)'] = [1, 0, self.ended - end]
        order.append('(stats, exit)')
        return [(name,) + tuple(rows[name]) for name in order]

    def life(self):
        """Mean seconds per VM of the phases of the batches (dict), None if the role has no such batches.

        Per batch: start (the async start task), wait (from then until the
        role moves on: every job seen finished), of which noticed (from the
        batch's last module run ending, its result file written, to then),
        and tail (from then to the next batch: verify, record, include).
        module extra: per VM, its module run (async start to result file)
        minus the module's own duration: python, QMP connect, repository
        scan, lock, bitmaps, retention, unlock."""
        totals = {'start': 0.0, 'wait': 0.0, 'noticed': 0.0, 'tail': 0.0}
        extra = []
        starts = [e['t'] for e in self.events if e['ev'] == 'task' and e['name'] == START_TASK]
        ends = [e['t'] for e in self.events if e['ev'] == 'task' and e['name'] == SUMMARY_TASK]
        bounds = starts + [ends[0] if ends else self.ended]
        durations = dict((vm['vm'], vm['duration']) for vm in self.summary)
        for begin, finish in zip(bounds, bounds[1:]):
            inside = [e for e in self.events if begin <= e['t'] < finish]
            started = [e for e in inside if e['ev'] == 'item' and e['task'] == START_TASK]
            if not started:
                continue
            done = [e['t'] for e in inside if e['ev'] == 'result' and e['task'] == START_TASK] or [started[-1]['t']]
            moved_on = [e['t'] for e in inside if e['ev'] == 'task' and e['name'] == VERIFY_TASK] or [finish]
            module_ends = []
            for item in started:
                end = self.module_ends.get(item.get('jid'))
                if end is not None:
                    module_ends.append(end)
                    if item.get('label') in durations:
                        extra.append(end - item['t'] - durations[item['label']])
            totals['start'] += done[0] - begin
            totals['wait'] += moved_on[0] - done[0]
            if module_ends:
                totals['noticed'] += moved_on[0] - max(module_ends)
            totals['tail'] += finish - moved_on[0]
        if not extra and not totals['start']:
            return None         # not the shape of roles/backup (a loop of async starts per batch)
        phases = dict((key, value / len(self.summary)) for key, value in totals.items())
        phases['module extra'] = statistics.mean(extra) if extra else float('nan')
        return phases


class Bench(object):
    """The VMs, the runs, the report."""

    def __init__(self, args, qemu, workdir):
        self.args = args
        self.qemu = qemu
        self.workdir = workdir
        self.fleece_dir = os.path.join(workdir, 'fleece')
        os.mkdir(self.fleece_dir)
        plugins = os.path.join(workdir, 'callback_plugins')
        os.mkdir(plugins)
        with open(os.path.join(plugins, CALLBACK_NAME + '.py'), 'w', encoding='utf-8') as handle:
            handle.write(CALLBACK)
        self.vms = []
        self.ansible = AnsibleRunner(workdir, env=qemu.env())
        self.base_env = dict(self.ansible.env)
        self.base_env.update({
            'ANSIBLE_CALLBACK_PLUGINS': plugins,
            'ANSIBLE_CALLBACKS_ENABLED': CALLBACK_NAME,
            # The async job files, in the work directory (removed with it) rather than ~/.ansible_async.
            'ANSIBLE_ASYNC_DIR': os.path.join(workdir, 'async'),
        })
        if args.roles_path:
            self.base_env['ANSIBLE_ROLES_PATH'] = os.path.abspath(args.roles_path)
        self.count = 0
        self.plays = 0
        self.last_cpu = 0.0
        self.startup = {}           # variant -> walls of the no-op runs
        self.runs = []
        self.notes = {}

    # -- the VMs --------------------------------------------------------------

    def start_vms(self):
        step('%s: starting %d VMs, one %d MiB qcow2 disk each, in %s' % (
            self.qemu.version_string, self.args.vms, DISK_SIZE // MIB, self.workdir))
        for number in range(1, self.args.vms + 1):
            vm = TestVM(self.qemu, self.workdir, [DiskSpec(DISK, size=DISK_SIZE)], name='vm%02d' % number)
            self.vms.append(vm)
            vm.start()
        for vm in self.vms:
            self._wait_for_monitor(vm)
            vm.qmp('cont')
            state = vm.run_state()
            if state != 'running':
                raise BenchError('%s is %s after cont, not running' % (vm.name, state))

    @staticmethod
    def _wait_for_monitor(vm, timeout=10):
        """QEMU creates its socket files (bind) a moment before it listens on
        them: a connection made in between is refused. Retry until it is not."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                vm.monitor()
                return
            except Exception:  # pylint: disable=broad-except
                if time.monotonic() > deadline or not vm.running():
                    raise
                time.sleep(0.05)

    def guest_writes(self, writes):
        self.count += 1
        for index, vm in enumerate(self.vms):
            for offset, length in writes:
                vm.guest_io(DISK, 'write -P 0x%02x %d %d' % (0x20 + (self.count * 7 + index) % 0xd0, offset, length))

    def stop(self):
        for vm in self.vms:
            vm.kill()
        self._wait_for_modules()

    def _wait_for_modules(self, timeout=30):
        """After the VMs are gone: module runs left by an interrupted playbook
        (async, so in a session of their own) fail and exit; wait for them, by
        pid, so that nothing writes into the work directory after it is removed."""
        deadline = time.monotonic() + timeout
        while True:
            pids = self._our_module_pids()
            if not pids:
                return
            if time.monotonic() > deadline:
                for pid in pids:
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except OSError:
                        pass
                return
            time.sleep(0.2)

    def _our_module_pids(self):
        marker = self.workdir.encode()
        pids = []
        for entry in os.listdir('/proc'):
            if not entry.isdigit() or int(entry) == os.getpid():
                continue
            try:
                with open('/proc/%s/cmdline' % entry, 'rb') as handle:
                    cmdline = handle.read()
            except IOError:
                continue
            if marker in cmdline and b'AnsiballZ_' in cmdline:
                pids.append(int(entry))
        return pids

    # -- ansible-playbook -----------------------------------------------------

    def _playbook(self, text, variables, variant, timing):
        """ansible-playbook on localhost, as AnsibleRunner.playbook runs it, but watched: a backup job
        whose async_wrapper dies without writing a result would keep the role polling for
        qemu_backup_async_timeout, so such a run is stopped with an error.

        Returns (returncode, output, custom stats, time.time() at the start and at the end, wall)."""
        self.plays += 1
        path = os.path.join(self.workdir, 'play-%d.yml' % self.plays)
        with open(path, 'w', encoding='utf-8') as handle:
            handle.write(text)
        cmd = [self.ansible.ansible_playbook, '-i', 'localhost,', '-c', 'local', path]
        if variables:
            cmd += ['-e', json.dumps(variables)]
        env = dict(self.base_env, ANSIBLE_SHOW_CUSTOM_STATS='1', VB_BENCH_TIMING=timing, **VARIANTS[variant])
        with open(path + '.log', 'w+', encoding='utf-8') as out:
            started = time.time()
            begin = time.monotonic()
            cpu = children_cpu_seconds()
            proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    universal_newlines=True, start_new_session=True)
            try:
                while True:
                    try:
                        proc.wait(timeout=1)
                        break
                    except subprocess.TimeoutExpired:
                        pass
                    if time.monotonic() - begin > PLAY_TIMEOUT:
                        raise BenchError('ansible-playbook still runs after %d s' % PLAY_TIMEOUT)
                    dead = self._dead_jobs(timing)
                    if dead:
                        raise JobKilled(
                            'backup job(s) %s died without a result (the role would wait for them until '
                            'qemu_backup_async_timeout): something killed the module and its async_wrapper, e.g. '
                            'the integration tests (harness/ansible.py kill_module kills every '
                            'AnsiballZ_qemu_blockdev_backup process on the host)'
                            % ', '.join(dead))
            except BaseException:
                stop_process(proc)
                raise
            wall = time.monotonic() - begin
            self.last_cpu = children_cpu_seconds() - cpu
            out.seek(0)
            output = out.read()
        stats = None
        if 'CUSTOM STATS:' in output:
            rest = output.split('CUSTOM STATS:', 1)[1]
            stats = json.JSONDecoder().raw_decode(rest[rest.index('{'):])[0]
        return proc.returncode, output, stats, started, started + wall, wall

    def _dead_jobs(self, timing, grace=5):
        """Async jobs (of this work directory) still marked started, older than ``grace`` seconds,
        without a process: their async_wrapper is gone and no result will ever come."""
        directory = self.base_env['ANSIBLE_ASYNC_DIR']
        suspects = []
        for name in os.listdir(directory) if os.path.isdir(directory) else []:
            path = os.path.join(directory, name)
            if self._job_running(path) and time.time() - os.stat(path).st_mtime > grace:
                suspects.append(name)
        if not suspects:
            return []
        alive = processes_with([name.split('.')[0].encode() for name in suspects])
        dead = [name for name in suspects if name.split('.')[0].encode() not in alive
                and self._job_running(os.path.join(directory, name))]
        labels = dict((e['jid'], e['label']) for e in read_events(timing) if e['ev'] == 'item' and e.get('jid'))
        return ['%s (%s)' % (name, labels.get(name, '?')) for name in dead]

    @staticmethod
    def _job_running(path):
        try:
            with open(path, encoding='utf-8') as handle:
                data = json.load(handle)
        except (IOError, OSError, ValueError):
            return False
        return bool(data.get('started')) and not data.get('finished')

    def noop(self, variant):
        """One no-op run: the fixed cost of an ansible-playbook run."""
        timing = os.path.join(self.workdir, 'timing-noop-%d.jsonl' % (self.plays + 1))
        code, output, stats, started, ended, wall = self._playbook(NOOP_PLAY, None, variant, timing)
        del stats, started, ended
        if code != 0:
            raise BenchError('the no-op play failed (%d):\n%s' % (code, output))
        self.startup.setdefault(variant, []).append(wall)
        return wall

    def label(self, config, parallel, level):
        role, variant = config
        parts = ['parallel %d' % parallel, level]
        if len(self.args.role) > 1:
            parts.append(role.split('.')[-1])
        if variant != 'default':
            parts.append(variant)
        return ', '.join(parts)

    def run_role(self, config, parallel, level):
        role, variant = config
        label = self.label(config, parallel, level)
        repo = os.path.join(self.workdir, 'repo-%d' % len(self.runs))
        if level != 'full':
            # The repository of the same configuration's full.
            repo = [run.repo for run in self.runs if run.config == config and run.parallel == parallel][-1]
        else:
            os.mkdir(repo)
        variables = {
            'qemu_backup_target_dir': repo,
            'qemu_backup_fleece_dir': self.fleece_dir,
            'qemu_backup_vms': [{'name': vm.name, 'socket': vm.socket} for vm in self.vms],
            'qemu_backup_parallel': parallel,
            'qemu_backup_poll_interval': self.args.poll_interval,
        }
        for attempt in range(1, RETRIES + 2):
            timing = os.path.join(self.workdir, 'timing-%d.jsonl' % (self.plays + 1))
            os.sync()
            load = os.getloadavg()[0]
            try:
                code, output, stats, started, ended, wall = self._playbook(BACKUP_PLAY % role, variables, variant,
                                                                           timing)
                break
            except JobKilled as exc:
                if attempt > RETRIES:
                    raise
                step('%s: %s; again (%d of %d)' % (label, exc, attempt, RETRIES))
                self._wait_for_modules(timeout=600)
        if code != 0 or not stats or 'qemu_backup' not in stats:
            raise BenchError('the role failed (%s, rc %d):\n%s' % (label, code, output[-20000:]))
        summary = stats['qemu_backup']['localhost']
        bad = [vm for vm in summary if not vm.get('ok') or vm.get('level') != level or vm.get('duration') is None]
        if len(summary) != len(self.vms) or bad:
            raise BenchError('%s: expected %d %s backups, got %s' % (label, len(self.vms), level, bad or summary))
        run = Run(label, config, parallel, level, wall, started, ended, read_events(timing), summary)
        run.repo = repo
        run.cpu = self.last_cpu
        run.load = load
        self.runs.append(run)
        step('%s: %.1f s wall, copy %.1f s, %d rounds of wait.yml, %.1f MiB (job total), load %.1f' % (
            label, wall, run.copy, run.rounds, sum(vm['bytes'] for vm in summary) / float(MIB), load))
        return run

    def run_all(self):
        """Configurations (role x variant) interleaved, each preceded by a no-op run: on a busy
        host, they then share the same conditions as far as possible."""
        configs = [(role, variant) for role in self.args.role for variant in self.args.variant]
        for parallel in self.args.parallel:
            for level, writes in (('full', FULL_WRITES), ('incremental', INCR_WRITES)):
                self.guest_writes(writes)
                for config in configs:
                    step('no-op ansible-playbook%s: %.2f s' % (
                        '' if config[1] == 'default' else ' (%s)' % config[1], self.noop(config[1])))
                    self.run_role(config, parallel, level)
        for run in self.runs:
            run.startup = statistics.median(self.startup[run.config[1]])
        order = dict((config, index) for index, config in enumerate(configs))
        self.runs.sort(key=lambda run: (order[run.config], self.args.parallel.index(run.parallel), run.level))

    # -- the report -----------------------------------------------------------

    def report(self):
        args = self.args
        vms = len(self.vms)
        print()
        print('Backup role %s over %d VMs (one %d MiB qcow2 disk each), qemu_backup_poll_interval %g, %s' % (
            ', '.join(args.role), vms, DISK_SIZE // MIB, args.poll_interval, self.qemu.version_string))
        for variant, walls in sorted(self.startup.items()):
            print('no-op ansible-playbook runs%s: %s s, median %.2f s' % (
                '' if variant == 'default' else ' (%s)' % variant, ' '.join('%.2f' % wall for wall in walls),
                statistics.median(walls)))
        print('load average now %.2f %.2f %.2f (%d CPUs)' % (os.getloadavg() + (os.cpu_count(),)))
        print()
        width = self.label_width()
        print('%-*s %8s %8s %8s %9s %8s %7s %8s %6s' % (
            width, 'run', 'wall s', 'no-op s', 'copy s', 'overhd s', 'per VM', 'rounds', 'job MiB', 'load'))
        for run in self.runs:
            print('%-*s %8.1f %8.2f %8.2f %9.1f %8.2f %7d %8.1f %6.1f' % (
                width, run.label, run.wall, run.startup, run.copy, run.overhead(), run.per_vm(), run.rounds,
                sum(vm['bytes'] for vm in run.summary) / float(MIB), run.load))
        print()
        print('  copy = the module\'s own duration per VM: summed (parallel 1) or the longest of each batch, summed')
        print('  overhd = wall - no-op - copy; per VM = overhd / %d; rounds = rounds of wait.yml' % vms)
        print('  job MiB = the summary\'s bytes (the jobs\' total: a full covers the whole virtual disk, a')
        print('  sparse part quickly); load = 1-minute load average when the run started')
        print()
        self.report_life()
        if args.tasks:
            for run in self.runs:
                self.report_tasks(run)
        else:
            self.report_tasks_summary()
        print()
        configs = []
        for run in self.runs:
            if run.config not in configs:
                configs.append(run.config)
        for config in configs[1:] + configs[:1]:
            runs = [run for run in self.runs if run.config == config]
            worst = max(runs, key=lambda run: run.per_vm())
            best = min(runs, key=lambda run: run.per_vm())
            name = '' if config == configs[0] else ' [%s]' % ', '.join(
                part for part in (config[0] if len(args.role) > 1 else '', config[1] if config[1] != 'default' else '')
                if part)
            print('ansible overhead per VM%s: %.2f s (target <= %g s): %s (worst of %d runs: %s; best %.2f s: %s)' % (
                name, worst.per_vm(), TARGET, 'met' if worst.per_vm() <= TARGET else 'MISSED', len(runs), worst.label,
                best.per_vm(), best.label))

    def report_life(self):
        print('Where the time goes, seconds per VM (module extra: mean per VM; the others: per batch / VMs):')
        keys = ('start', 'wait', 'noticed', 'tail', 'module extra')
        width = self.label_width()
        print('%-*s %7s %7s %7s %8s %7s %13s %8s' % ((width, 'run', 'copy') + keys + ('CPU s',)))
        for run in self.runs:
            phases = run.life()
            cells = ['%.2f' % phases[key] if phases else '-' for key in keys]
            print('%-*s %7.2f %7s %7s %8s %7s %13s %8.2f' % (
                (width, run.label, run.copy / len(run.summary)) + tuple(cells) + (run.cpu / len(run.summary),)))
        print('  start: the task "%s" (async: each VM\'s module copied and forked off, in turn)' % START_TASK)
        print('  wait: from then until every backup of the batch was seen finished (wait.yml rounds; includes')
        print('    the copy and the module extra), of which noticed: from the last module run of the batch ending')
        print('    (its async result file written) until then')
        print('  tail: from then to the next batch (verify, record the results, the include)')
        print('  module extra: module run (async start to result file) minus its duration: python start, QMP')
        print('    connect, repository scan, lock, bitmaps, retention; the backups of a batch overlap in it')
        print('  CPU s: user + system CPU of ansible-playbook and the modules it waited for (not the async')
        print('    backup modules, which are daemons)')
        print()

    @staticmethod
    def report_tasks(run):
        vms = len(run.summary)
        print('Tasks of run "%s" (%.1f s wall): seconds from a task\'s start to the next task\'s' % (run.label, run.wall))
        print('%-46s %6s %6s %9s %8s %9s' % ('task', 'runs', 'items', 'total s', 'per VM', 'per item'))
        for name, runs, items, seconds in run.tasks():
            print('%-46s %6d %6d %9.2f %8.3f %9s' % (name[:46], runs, items, seconds, seconds / vms,
                                                     '%.3f' % (seconds / items) if items else '-'))
        print()

    def label_width(self):
        return max([len(run.label) for run in self.runs] + [24])

    def report_tasks_summary(self):
        """Seconds per VM by task, one column per run (R1, R2...)."""
        names, table = [], {}
        for number, run in enumerate(self.runs):
            for name, runs, items, seconds in run.tasks():
                if name not in table:
                    names.append(name)
                    table[name] = {}
                table[name][number] = (runs, items, seconds / len(run.summary))
        print('Seconds per VM by task (task start to next task start; [runs/loop items] of R1):')
        for number, run in enumerate(self.runs):
            print('  R%d: %s' % (number + 1, run.label))
        print('%-46s' % 'task' + ''.join('%7s' % ('R%d' % (number + 1)) for number in range(len(self.runs))))
        for name in names:
            cells = ['%7s' % ('%.3f' % table[name][number][2] if number in table[name] else '-')
                     for number in range(len(self.runs))]
            first = table[name].get(0)
            note = ' [%d/%d]' % first[:2] if first else ''
            print('%-46s' % (name[:45 - len(note)] + note) + ''.join(cells))
        print('  (--tasks prints each run\'s table with totals and seconds per loop item)')


def main(argv=None):
    args = parse_args(argv)

    def terminate(signum, frame):  # pylint: disable=unused-argument
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, terminate)
    try:
        qemu = QemuInstall()
    except (RuntimeError, OSError) as exc:
        print('FAILED: %s' % exc, file=sys.stderr)
        return 2
    parent = args.workdir or '/var/tmp'
    if not os.path.isdir(parent):
        print('--workdir %s is not a directory' % parent, file=sys.stderr)
        return 2
    # UNIX socket paths must stay under 108 bytes: keep the name short.
    workdir = tempfile.mkdtemp(prefix='vb-bench-', dir=parent)
    if len(os.path.join(workdir, 'vm%02d.test0.qmp' % args.vms)) >= 108:
        shutil.rmtree(workdir, ignore_errors=True)
        print('--workdir %s is too long for QMP socket paths (108 bytes)' % parent, file=sys.stderr)
        return 2
    bench = None
    try:
        bench = Bench(args, qemu, workdir)
        bench.start_vms()
        bench.run_all()
        bench.report()
        return 0
    except BenchError as exc:
        print('FAILED: %s' % exc, file=sys.stderr)
        return 2
    except Exception as exc:  # pylint: disable=broad-except
        traceback.print_exc()
        print('FAILED: %s' % exc, file=sys.stderr)
        return 2
    finally:
        if bench is not None:
            bench.stop()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == '__main__':
    sys.exit(main())
