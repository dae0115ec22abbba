# -*- coding: utf-8 -*-
# Copyright: (c) 2026, vmbackup.qemu developers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

"""Run the collection's modules the way users do: `ansible` ad hoc against
localhost, results read back from the tree callback (`-t DIR`)."""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import json
import os
import signal
import subprocess
import sys
import time

from harness.collection import collections_path
from harness.procs import processes_naming


class AnsibleRunner(object):
    """Runs modules of vmbackup.qemu on localhost and returns their results."""

    def __init__(self, workdir, env=None):
        self.workdir = workdir
        self.count = 0
        self.env = dict(env or os.environ)
        bindir = os.path.dirname(sys.executable)
        self.env.update({
            'ANSIBLE_COLLECTIONS_PATH': collections_path(),
            'ANSIBLE_LOCAL_TEMP': os.path.join(workdir, 'ansible-local'),
            'ANSIBLE_REMOTE_TMP': os.path.join(workdir, 'ansible-remote'),
            'ANSIBLE_NOCOLOR': '1',
            'ANSIBLE_DEPRECATION_WARNINGS': '0',
            'ANSIBLE_PYTHON_INTERPRETER': sys.executable,
            'PATH': bindir + os.pathsep + self.env.get('PATH', ''),
        })
        self.ansible = os.path.join(bindir, 'ansible')
        self.ansible_playbook = os.path.join(bindir, 'ansible-playbook')

    def spawn(self, name, args, check=False, diff=False, cwd=None):
        """Start module vmbackup.qemu.NAME in the background (in directory
        ``cwd``, default the tests' own); see collect()."""
        self.count += 1
        tree = os.path.join(self.workdir, 'tree-%d' % self.count)
        cmd = [self.ansible, 'localhost', '-c', 'local', '-i', 'localhost,',
               '-m', 'vmbackup.qemu.' + name, '-a', json.dumps(args), '-t', tree]
        if check:
            cmd.append('--check')
        if diff:
            # The tree callback keeps `diff` in results only at -vvv.
            cmd += ['--diff', '-vvv']
        proc = subprocess.Popen(cmd, env=self.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                universal_newlines=True, start_new_session=True, cwd=cwd)
        proc.tree = tree
        return proc

    @staticmethod
    def collect(proc, timeout=600):
        """Wait for a spawned module and return its result."""
        output = proc.communicate(timeout=timeout)[0]
        result_file = os.path.join(proc.tree, 'localhost')
        if not os.path.exists(result_file):
            raise AssertionError('ansible gave no result (rc %d): %s' % (proc.returncode, output))
        with open(result_file) as handle:
            result = json.load(handle)
        # The tree callback leaves `failed` out; ad hoc exits 2 on a failed task.
        result.setdefault('failed', proc.returncode == 2)
        result['_output'] = output
        result['_rc'] = proc.returncode
        return result

    def module_pids(self, name):
        """Pids of this runner's running module processes of vmbackup.qemu.NAME
        (their AnsiballZ file lies in this runner's remote tmp; other tests'
        or benchmarks' modules on the host are left alone).

        ansible runs a module in a session of its own, so killing the
        ansible process group does not reach it."""
        return processes_naming('AnsiballZ_%s.py' % name, self.workdir)

    def kill_module(self, proc, name, sig=signal.SIGKILL):
        """SIGKILL a spawned module mid-run, as a crash or an OOM kill would."""
        deadline = time.monotonic() + 30
        while not self.module_pids(name):
            assert time.monotonic() < deadline and proc.poll() is None, 'module %s never ran' % name
            time.sleep(0.01)
        for pid in self.module_pids(name):
            os.kill(pid, sig)
        while self.module_pids(name):
            assert time.monotonic() < deadline, 'module %s survived the signal' % name
            time.sleep(0.01)
        proc.kill()
        proc.communicate()

    def module(self, name, args, check=False, diff=False, timeout=600, cwd=None):
        """Run module vmbackup.qemu.NAME with ``args`` (a dict); return its result."""
        return self.collect(self.spawn(name, args, check=check, diff=diff, cwd=cwd), timeout=timeout)

    def spawn_playbook(self, text, extra_vars=None):
        """Start a playbook given as YAML text against localhost in the
        background; see collect_playbook()."""
        self.count += 1
        path = os.path.join(self.workdir, 'play-%d.yml' % self.count)
        with open(path, 'w') as handle:
            handle.write(text)
        cmd = [self.ansible_playbook, '-i', 'localhost,', '-c', 'local', path]
        if extra_vars:
            cmd += ['-e', json.dumps(extra_vars)]
        env = dict(self.env, ANSIBLE_SHOW_CUSTOM_STATS='1')
        return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                universal_newlines=True, start_new_session=True)

    @staticmethod
    def collect_playbook(proc, timeout=1200):
        """Wait for a spawned playbook: (returncode, output, custom stats from set_stats)."""
        try:
            output = proc.communicate(timeout=timeout)[0]
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            raise AssertionError('the play did not end within %s s: %s' % (timeout, proc.communicate()[0]))
        stats = None
        if 'CUSTOM STATS:' in output:
            text = output.split('CUSTOM STATS:', 1)[1]
            start = text.index('{')
            stats = json.JSONDecoder().raw_decode(text[start:])[0]
        return proc.returncode, output, stats

    def playbook(self, text, extra_vars=None, timeout=1200):
        """Run a playbook given as YAML text against localhost.

        Returns (returncode, output, custom stats from set_stats)."""
        return self.collect_playbook(self.spawn_playbook(text, extra_vars), timeout=timeout)

    def ok(self, name, args, diff=False, **kwargs):
        """Run a module that must succeed."""
        result = self.module(name, args, diff=diff, **kwargs)
        assert not result.get('failed'), 'module %s failed: %s' % (name, result.get('msg', result))
        return result

    def failed(self, name, args, **kwargs):
        """Run a module that must fail cleanly: a msg, no traceback."""
        result = self.module(name, args, **kwargs)
        assert result.get('failed'), 'module %s did not fail: %s' % (name, result)
        assert_clean_failure(result)
        return result

    def converge(self, name, args, diff=True):
        """check -> real -> again (idempotent) -> again in check mode.

        Returns the real run's result. The check run must predict the real
        run's `changed`, and the two repeat runs must change nothing."""
        predicted = self.ok(name, args, check=True, diff=diff)
        real = self.ok(name, args, diff=diff)
        assert predicted['changed'] == real['changed'], (predicted, real)
        again = self.ok(name, args, diff=diff)
        assert again['changed'] is False, 'second run changed something: %s' % again
        again_check = self.ok(name, args, check=True, diff=diff)
        assert again_check['changed'] is False, 'check after convergence: %s' % again_check
        return real


def assert_clean_failure(result):
    msg = result.get('msg', '')
    assert msg, 'failure without msg: %s' % result
    assert 'MODULE FAILURE' not in msg, msg
    assert 'Traceback' not in msg, msg
    assert 'module_stderr' not in result, result
    assert 'exception' not in result, result.get('exception')
