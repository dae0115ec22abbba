#!/usr/bin/env python
# -*- coding: utf-8 -*-
# Copyright: (c) 2026, vmbackup.qemu developers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

"""Ansible's overhead per VM of the backup role (target: at most 1 s per VM
with the role's defaults, 20 small VMs on one host).

Starts ``--vms`` test-bed VMs (no guest OS), each with one 64 MiB qcow2
disk holding a few MiB the "guest" wrote, running. Each of ``--rounds``
rounds runs, for every configuration (``--role`` x ``--variant`` x
``--parallel``), a no-op ansible-playbook and then the role
vmbackup.qemu.backup over all the VMs, with the role's defaults unless told
(round 1: full backups into a fresh repository; later rounds: incrementals
after a small guest write). Every backup the role made is then compared with
its VM's disk (qemu-img compare through the chain); a mismatch fails the run.

    overhead per VM = (wall - no-op run - copy) / VMs

``copy`` is the modules' own work on the critical path: each backup's
``duration`` (what the module measured itself: QMP work and copy), summed
with ``qemu_backup_parallel`` 1, else the longest of each batch, summed.
Everything else is overhead: ansible's tasks, the module runs' start (Python,
imports, QMP connect, repository scan) outside ``duration``, and the time the
role takes to notice a backup ended. The no-op run (ansible-playbook start
and exit, median of the configuration's runs) is what any playbook costs.

A callback plugin (written into the work directory, enabled only for these
runs) timestamps every task: the report says where the time goes per task
(seconds per VM from its start to the next task's start, runs and loop items
per VM) and how many module runs (Python processes on the host) each VM
costs.

Run from the repository root: ``.venv/bin/python bench/role_overhead.py``."""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import runner  # noqa: E402 pylint: disable=wrong-import-position
from runner import BenchError, step  # noqa: E402 pylint: disable=wrong-import-position
from harness.procs import processes_naming  # noqa: E402 pylint: disable=wrong-import-position,import-error
from harness.qemu import DiskSpec  # noqa: E402 pylint: disable=wrong-import-position,import-error

MIB = runner.MIB
TARGET = 1.0                # seconds of overhead per VM, from the issue
DISK = 'vda'
DISK_SIZE = 64 * MIB
# (offset, length) the guest writes on each VM before the full and before each incremental.
FULL_WRITES = ((0, 2 * MIB), (32 * MIB, 2 * MIB))
INCR_WRITES = ((8 * MIB, 256 * 1024),)
PLAY_TIMEOUT = 1800         # seconds an ansible-playbook run may take
# Environment presets for --variant: settings passed to ansible-playbook from outside the role.
VARIANTS = {
    'default': {},
    'pipelining': {'ANSIBLE_PIPELINING': 'True'},
    'forks1': {'ANSIBLE_FORKS': '1'},
}
# Module actions: a task of one of these runs a module per host or loop item (the others run on the controller).
CONTROLLER_ACTIONS = ('set_fact', 'debug', 'include_tasks', 'import_tasks', 'fail', 'set_stats', 'meta', 'assert')

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


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n', maxsplit=1)[0])
    parser.add_argument('--vms', type=int, default=20, help='number of VMs (default: 20)')
    parser.add_argument('--rounds', type=int, default=3,
                        help='role runs per configuration: a full, then incrementals (default: 3)')
    parser.add_argument('--parallel', default='',
                        help='comma-separated qemu_backup_parallel values, one configuration each '
                             '(default: the role\'s default)')
    parser.add_argument('--poll-interval', type=float, default=None,
                        help='qemu_backup_poll_interval, seconds (default: the role\'s default)')
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
        args.parallel = [int(value) for value in args.parallel.split(',') if value.strip()] or [None]
    except ValueError:
        parser.error('--parallel takes integers separated by commas, e.g. 1,4')
    if min(p or 1 for p in args.parallel) < 1 or args.vms < 1 or args.rounds < 1:
        parser.error('--parallel, --vms and --rounds must be at least 1')
    args.variant = args.variant or ['default']
    args.role = args.role or ['vmbackup.qemu.backup']
    return args


def read_events(path):
    events = []
    if os.path.exists(path):
        with open(path, encoding='utf-8') as handle:
            events = [json.loads(line) for line in handle if line.strip()]
    return sorted(events, key=lambda event: event['t'])


def critical_path(durations, parallel):
    """Seconds of copy on the way of the role: batches run one after another,
    the VMs of a batch at the same time."""
    return sum(max(durations[i:i + parallel]) for i in range(0, len(durations), parallel))


def label_of(config):
    role, variant, parallel = config
    parts = [role.split('.')[-1], variant, 'parallel %s' % ('default' if parallel is None else parallel)]
    return ', '.join(parts)


class Run(object):
    """One ansible-playbook run of the role and what it tells."""

    def __init__(self, config, level, wall, started, events, summary):
        self.config, self.level, self.wall, self.events, self.summary = config, level, wall, events, summary
        self.started = started      # time.time() just before ansible-playbook started
        self.startup = None         # set later: median of the configuration's no-op runs
        parallel = config[2] or 1
        self.copy = critical_path([vm['duration'] for vm in summary], parallel)

    def per_vm(self):
        return (self.wall - self.startup - self.copy) / len(self.summary)

    def tasks(self):
        """[(task name, action, times run, loop items, seconds)] in order of first run; a task's
        seconds run from its start to the next task's start (so they include the strategy's work
        after it, e.g. loading an included file)."""
        rows, order, items = {}, [], {}
        for event in self.events:
            if event['ev'] == 'item':
                items[event['task']] = items.get(event['task'], 0) + 1
        marks = [e for e in self.events if e['ev'] in ('task', 'stats')]
        for event, following in zip(marks, marks[1:]):
            if event['ev'] != 'task':
                continue
            if event['name'] not in rows:
                rows[event['name']] = [event['action'], 0, items.get(event['name'], 0), 0.0]
                order.append(event['name'])
            rows[event['name']][1] += 1
            rows[event['name']][3] += following['t'] - event['t']
        return [(name,) + tuple(rows[name]) for name in order]

    def module_runs(self):
        """Module runs (one per host or loop item of a task whose action is a module, skipped ones not)."""
        count = 0
        for name, action, runs, items, _seconds in self.tasks():
            if action.split('.')[-1] not in CONTROLLER_ACTIONS:
                kind = 'item' if items else 'result'
                skipped = sum(1 for e in self.events if e['ev'] == kind and e.get('task') == name
                              and e.get('status') == 'skipped')
                count += (items or runs) - skipped
        return count


def setup(bench, args):
    """The environment of the runs: callback plugin, async job files in the work directory."""
    plugins = os.path.join(bench.workdir, 'callback_plugins')
    os.mkdir(plugins)
    with open(os.path.join(plugins, CALLBACK_NAME + '.py'), 'w', encoding='utf-8') as handle:
        handle.write(CALLBACK)
    env = dict(bench.ansible.env, ANSIBLE_CALLBACK_PLUGINS=plugins, ANSIBLE_CALLBACKS_ENABLED=CALLBACK_NAME,
               ANSIBLE_ASYNC_DIR=os.path.join(bench.workdir, 'async'), ANSIBLE_SHOW_CUSTOM_STATS='1')
    if args.roles_path:
        env['ANSIBLE_ROLES_PATH'] = os.path.abspath(args.roles_path)
    os.mkdir(os.path.join(bench.workdir, 'fleece'))
    return env


def dead_jobs(async_dir, grace=5):
    """Async jobs still marked started, older than ``grace`` seconds, whose async_wrapper is gone:
    no result will ever come, and the role would wait for it until qemu_backup_async_timeout."""
    dead = []
    for name in os.listdir(async_dir) if os.path.isdir(async_dir) else []:
        path = os.path.join(async_dir, name)
        try:
            with open(path, encoding='utf-8') as handle:
                data = json.load(handle)
            old = time.time() - os.stat(path).st_mtime > grace
        except (IOError, OSError, ValueError):
            continue
        if data.get('started') and not data.get('finished') and old and not processes_naming(name.split('.')[0]):
            dead.append(name)
    return dead


def playbook(bench, env, text, variables, timing):
    """(returncode, output, custom stats, time.time() at the start, wall) of one ansible-playbook run."""
    bench.plays = getattr(bench, 'plays', 0) + 1
    path = os.path.join(bench.workdir, 'play-%d.yml' % bench.plays)
    with open(path, 'w', encoding='utf-8') as handle:
        handle.write(text)
    cmd = [bench.ansible.ansible_playbook, '-i', 'localhost,', '-c', 'local', path]
    if variables:
        cmd += ['-e', json.dumps(variables)]
    with open(path + '.log', 'w+', encoding='utf-8') as out:
        started, begin = time.time(), time.monotonic()
        proc = subprocess.Popen(cmd, env=dict(env, VB_BENCH_TIMING=timing), stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, universal_newlines=True, start_new_session=True)
        bench.cleanups.append(proc.kill)        # runner.main also kills what names the work directory
        while proc.poll() is None:
            time.sleep(0.5)
            dead = dead_jobs(env['ANSIBLE_ASYNC_DIR'])
            if dead or time.monotonic() - begin > PLAY_TIMEOUT:
                raise BenchError('ansible-playbook stopped: %s' % (
                    'backup job(s) %s died without a result' % ', '.join(dead) if dead
                    else 'still running after %d s' % PLAY_TIMEOUT))
        wall = time.monotonic() - begin
        out.seek(0)
        output = out.read()
    stats = None
    if 'CUSTOM STATS:' in output:
        rest = output.split('CUSTOM STATS:', 1)[1]
        stats = json.JSONDecoder().raw_decode(rest[rest.index('{'):])[0]
    return proc.returncode, output, stats, started, wall


def guest_writes(vms, writes, count):
    """Every VM's guest writes ``writes`` with a pattern of its own (``count``: the how-manieth time)."""
    for index, vm in enumerate(vms):
        for offset, length in writes:
            vm.write(DISK, offset, length, 0x20 + (count * 7 + index) % 0xd0)


def check_content(bench, vms, repo, summary, level):
    """ContentMismatch unless every VM has a backup of ``level`` equal to its disk now."""
    by_name = dict((vm['vm'], vm) for vm in summary)
    bad = [vm for vm in summary if not vm.get('ok') or vm.get('level') != level or vm.get('duration') is None]
    if sorted(by_name) != sorted(vm.name for vm in vms) or bad:
        raise BenchError('expected %d %s backups, got %s' % (len(vms), level, bad or summary))
    for vm in vms:
        result = by_name[vm.name]
        image = os.path.join(repo, vm.name, result['chain'], '%s.%s.qcow2' % (result['backup_id'], DISK))
        bench.assert_same(image, vm.shadow(DISK), '%s backup of %s' % (level, vm.name), reference_format='raw')


def run_role(bench, env, vms, config, level, repo):
    """One timed run of the role over every VM, its backups checked."""
    role, variant, parallel = config
    variables = {'qemu_backup_target_dir': repo, 'qemu_backup_fleece_dir': os.path.join(bench.workdir, 'fleece'),
                 'qemu_backup_vms': [{'name': vm.name, 'socket': vm.socket} for vm in vms]}
    if parallel is not None:
        variables['qemu_backup_parallel'] = parallel
    if bench.poll_interval is not None:
        variables['qemu_backup_poll_interval'] = bench.poll_interval
    timing = os.path.join(bench.workdir, 'timing-%d.jsonl' % (getattr(bench, 'plays', 0) + 1))
    os.sync()
    load = os.getloadavg()[0]
    code, output, stats, started, wall = playbook(bench, dict(env, **VARIANTS[variant]), BACKUP_PLAY % role,
                                                  variables, timing)
    if code != 0 or not stats or 'qemu_backup' not in stats:
        raise BenchError('the role failed (%s, rc %d):\n%s' % (label_of(config), code, output[-20000:]))
    summary = stats['qemu_backup']['localhost']
    check_content(bench, vms, repo, summary, level)
    result = Run(config, level, wall, started, read_events(timing), summary)
    step('%s, %s: %.1f s wall, copy %.1f s, %d module runs, load %.1f; every backup equals its disk' % (
        label_of(config), level, wall, result.copy, result.module_runs(), load))
    return result


def noop(bench, env, variant):
    """Seconds of one no-op ansible-playbook run: the fixed cost of any playbook."""
    code, output, _stats, _started, wall = playbook(bench, dict(env, **VARIANTS[variant]), NOOP_PLAY, None,
                                                    os.path.join(bench.workdir, 'timing-noop.jsonl'))
    if code != 0:
        raise BenchError('the no-op play failed (%d):\n%s' % (code, output))
    return wall


def run(args, bench):
    env = setup(bench, args)
    bench.poll_interval = args.poll_interval
    step('%s: starting %d VMs, one %d MiB qcow2 disk each' % (bench.qemu.version_string, args.vms, DISK_SIZE // MIB))
    vms = [bench.start_vm([DiskSpec(DISK, size=DISK_SIZE)], name='vm%02d' % number)
           for number in range(1, args.vms + 1)]
    configs = [(role, variant, parallel) for parallel in args.parallel for role in args.role
               for variant in args.variant]
    repos = dict((config, os.path.join(bench.workdir, 'repo-%d' % index)) for index, config in enumerate(configs))
    for repo in repos.values():
        os.mkdir(repo)
    runs, noops = [], dict((config, []) for config in configs)
    for number in range(args.rounds):
        level = 'full' if number == 0 else 'incremental'
        guest_writes(vms, FULL_WRITES if number == 0 else INCR_WRITES, number)
        # Configurations interleaved, each right after its no-op run: on a busy host they share the conditions.
        for config in configs:
            noops[config].append(noop(bench, env, config[1]))
            runs.append(run_role(bench, env, vms, config, level, repos[config]))
    for one in runs:
        one.startup = statistics.median(noops[one.config])
    report(bench, args, configs, runs, noops)
    return {'options': dict(vars(args)), 'vms': args.vms, 'disk_mib': DISK_SIZE // MIB,
            'runs': [{'config': label_of(one.config), 'level': one.level, 'wall': one.wall, 'startup': one.startup,
                      'copy': one.copy, 'overhead_per_vm': one.per_vm(), 'module_runs': one.module_runs(),
                      'tasks': one.tasks()} for one in runs]}


def report(bench, args, configs, runs, noops):
    vms = len(runs[0].summary)
    print()
    print('%-40s %-11s %7s %6s %6s %7s %7s %7s' % (
        'run', 'level', 'wall s', 'no-op', 'copy', 'per VM', 'tasks', 'modules'))
    for one in runs:
        tasks = sum(row[2] for row in one.tasks())
        print('%-40s %-11s %7.1f %6.2f %6.2f %7.2f %7.1f %7.1f' % (
            label_of(one.config), one.level, one.wall, one.startup, one.copy, one.per_vm(), tasks / float(vms),
            one.module_runs() / float(vms)))
    print('  per VM = (wall - no-op - copy) / %d VMs; tasks, modules: task runs and module runs per VM' % vms)
    print()
    lines = {'overhead': [], 'module runs': []}
    for config in configs:
        mine = [one for one in runs if one.config == config]
        values = runner.spread([one.per_vm() for one in mine])
        bench.figure('overhead per VM (%s)' % label_of(config), values['median'], 's', target='<= %g s' % TARGET,
                     met=values['median'] <= TARGET, spread=values, no_op=runner.spread(noops[config]))
        bench.ratio_figure('wall / (no-op + copy) (%s)' % label_of(config), [one.wall for one in mine],
                           [one.startup + one.copy for one in mine])
        modules = statistics.median(one.module_runs() / float(vms) for one in mine)
        bench.figure('module runs per VM (%s)' % label_of(config), modules, 'runs')
        lines['overhead'].append([label_of(config), values['median']])
        lines['module runs'].append([label_of(config), modules])
        report_tasks(config, mine, verbose=args.tasks)
    bench.series('Ansible overhead of the backup role per VM (%d VMs, median of %d runs)' % (vms, args.rounds),
                 'configuration', 's per VM', lines, kind='bar')


def report_tasks(config, runs, verbose=False):
    """Seconds per VM by task (median over the runs), with runs and loop items per VM."""
    vms = float(len(runs[0].summary))
    table, order = {}, []
    for one in runs:
        for name, _action, times, items, seconds in one.tasks():
            if name not in table:
                table[name] = []
                order.append(name)
            table[name].append((times / vms, items / vms, seconds / vms))
    print('Where the time goes (%s): seconds per VM from a task\'s start to the next\'s, median of %d runs' % (
        label_of(config), len(runs)))
    print('%-46s %8s %8s %8s' % ('task', 'runs/VM', 'items/VM', 's/VM'))
    for name in order:
        rows = table[name]
        print('%-46s %8.2f %8.2f %8.3f' % (name[:46], statistics.median(r[0] for r in rows),
                                           statistics.median(r[1] for r in rows),
                                           statistics.median(r[2] for r in rows)))
    if verbose:
        for number, one in enumerate(runs):
            print('  run %d (%s): %s' % (number + 1, one.level, ', '.join(
                '%s %.2f' % (name[:30], seconds) for name, _a, _t, _i, seconds in one.tasks())))
    print()


if __name__ == '__main__':
    sys.exit(runner.main('role_overhead', run, parse_args(sys.argv[1:])))
