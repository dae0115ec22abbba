# -*- coding: utf-8 -*-
# Copyright: (c) 2026, vmbackup.qemu developers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

"""qemu_fleece: a point-in-time view pulled over NBD holds one instant of the
guest's disks while the guest goes on writing; its bitmap shows exactly what
changed before that instant; removing it leaves the VM as it was."""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import json
import os
import signal
import socket
import stat

import pytest

from ansible_collections.vmbackup.qemu.plugins.module_utils import quirks
from ansible_collections.vmbackup.qemu.plugins.module_utils.names import view_record
from ansible_collections.vmbackup.qemu.plugins.module_utils.vmlock import lock_dir

from harness.checks import backup_args, expected_route, guest_content, refused, small_filesystem
from harness.qemu import DiskSpec
from harness.racing import BLOCK, assert_one_instant, instant_window, race

MIB = 1024 * 1024
KIB = 1024
DISK_SIZE = 256 * MIB
CLUSTER = 64 * KIB     # the bitmaps' granularity


def refused_here(vm):
    """Whether this QEMU is one qemu_fleece refuses (quirks.py: before 8.0)."""
    return quirks.fleece_read_chunk(vm.qmp('query-version')['qemu']) is not None


@pytest.fixture
def pull_vm(make_vm):
    """A running two-disk VM whose QEMU can serve a view (else the test is
    test_refused_before_8_0's)."""
    vm = make_vm(disks=[DiskSpec('vda', size=DISK_SIZE), DiskSpec('vdb', size=DISK_SIZE)], test_monitors=3)
    if refused_here(vm):
        pytest.skip('qemu_fleece is refused on this QEMU (test_refused_before_8_0)')
    vm.qmp('cont')
    return vm


def view_args(vm, **extra):
    args = {'socket': vm.socket, 'fleece_dir': vm.workdir, 'export': 'nbd',
            'nbd_socket': os.path.join(vm.workdir, 'nbd.sock')}
    args.update(extra)
    return args


def pull(vm, uri, path):
    vm.qemu.run_img('convert', '-f', 'raw', '-O', 'raw', uri, path)
    return path


def vm_state(vm):
    """What a view may change in QEMU and beside it, to compare before and after."""
    nodes = vm.qmp('query-named-block-nodes', flat=True)
    return {
        'nodes': sorted(n['node-name'] for n in nodes),
        'devices': sorted((b.get('qdev'), (b.get('inserted') or {}).get('node-name')) for b in vm.qmp('query-block')),
        'bitmaps': sorted((n['node-name'], b['name'], b['recording']) for n in nodes
                          for b in n.get('dirty-bitmaps', []) if b.get('name')),
        'jobs': vm.qmp('query-jobs'), 'exports': vm.qmp('query-block-exports'),
        'files': sorted(f for f in os.listdir(vm.workdir) if f.endswith('.fleece.raw')),
        'nbd_socket': os.path.exists(os.path.join(vm.workdir, 'nbd.sock')),
    }


def dirty_extents(vm, export, bitmap):
    """[(offset, length)] the NBD export reports dirty in qemu:dirty-bitmap:BITMAP
    (qemu-img map reads that context in place of allocation: dirty shows as
    "data": false)."""
    opts = ('driver=nbd,export=%s,server.type=unix,server.path=%s,x-dirty-bitmap=qemu:dirty-bitmap:%s'
            % (export, os.path.join(vm.workdir, 'nbd.sock'), bitmap))
    extents = json.loads(vm.qemu.run_img('map', '--output=json', '--image-opts', opts).stdout)
    dirty = []
    for extent in extents:
        if extent['data']:
            continue
        if dirty and dirty[-1][0] + dirty[-1][1] == extent['start']:
            dirty[-1] = (dirty[-1][0], dirty[-1][1] + extent['length'])
        else:
            dirty.append((extent['start'], extent['length']))
    return dirty


def test_racing_writers_pull_one_instant_while_the_guest_writes_on(pull_vm, ansible, workdir):
    vm = pull_vm
    ansible.ok('qemu_bitmap', {'socket': vm.socket, 'name': 'pull'})
    vm.monitor().clear_events()

    def present_and_pull():
        view = ansible.ok('qemu_fleece', view_args(vm, bitmap='pull'))
        # Pulled while the writers go on.
        return view, dict((d['disk'], pull(vm, d['uri'], os.path.join(workdir, d['disk'] + '.pulled')))
                          for d in view['disks'])

    writers, (view, pulled) = race(vm, ['vda', 'vdb'], DISK_SIZE // BLOCK, present_and_pull)
    route = expected_route(vm)
    assert view['fleecing_route'] == route and view['changed'] is True
    assert stat.S_IMODE(os.stat(view['nbd_socket']).st_mode) == 0o600
    held = assert_one_instant(pulled, writers, instant_window(vm, route), route, vm.qemu, workdir)
    # Each writer wrote its blocks in order from the start of its disk: the
    # bitmap, frozen at the same instant, covers the clusters of the held
    # blocks, and on the job route not one more. (With explicit filters it is
    # frozen right after the last switch while the vCPUs are stopped: exact
    # for a guest, whose I/O a stopped VM has drained, but these writers
    # write through the monitor, which a pause does not stop.)
    for disk, count in held.items():
        needed = -(-count * BLOCK // CLUSTER) * CLUSTER
        extents = dirty_extents(vm, disk, 'pull')
        assert len(extents) == 1 and extents[0][0] == 0, (disk, extents)
        if route == 'job':
            assert extents[0][1] == needed, (disk, extents, needed)
        else:
            assert extents[0][1] >= needed, (disk, extents, needed)
    ansible.ok('qemu_fleece', view_args(vm, state='absent'))
    assert vm.leftovers() == []


def test_the_bitmap_shows_exactly_the_changes_before_the_instant(pull_vm, ansible, workdir):
    vm = pull_vm
    ansible.ok('qemu_bitmap', {'socket': vm.socket, 'name': 'pull'})
    vm.write('vda', 0, 4 * KIB, 0x21)                     # one 64 KiB cluster
    vm.write('vda', MIB + 60 * KIB, 8 * KIB, 0x22)        # across a cluster boundary: two
    vm.write('vda', 10 * MIB, 200 * KIB, 0x23)            # four clusters
    vm.write('vdb', 5 * MIB, 4 * KIB, 0x24)
    view = ansible.ok('qemu_fleece', view_args(vm, bitmap='pull'))
    at_instant = guest_content(vm, 'instant')
    vm.write('vda', 20 * MIB, MIB, 0x25)                  # after the instant: not in the view, nor its bitmap
    vm.write('vdb', 0, 4 * KIB, 0x26)
    assert [d['bitmap_context'] for d in view['disks']] == ['qemu:dirty-bitmap:pull'] * 2
    assert dirty_extents(vm, 'vda', 'pull') == [(0, 64 * KIB), (MIB, 128 * KIB), (10 * MIB, 256 * KIB)]
    assert dirty_extents(vm, 'vdb', 'pull') == [(5 * MIB, 64 * KIB)]
    for item in view['disks']:
        identical, output = vm.qemu.compare(pull(vm, item['uri'], os.path.join(workdir, item['disk'])),
                                            at_instant[item['disk']], 'raw', 'raw')
        assert identical, output
    # The user's bitmap went on recording, the later writes too.
    assert vm.bitmaps('vda')['pull']['recording'] and vm.bitmaps('vda')['pull']['count'] == 7 * 64 * KIB + MIB
    ansible.ok('qemu_fleece', view_args(vm, state='absent'))
    assert set(vm.bitmaps('vda')) == {'pull'} and vm.leftovers() == []


def test_present_and_absent_converge_and_leave_the_vm_as_it_was(pull_vm, ansible, workdir):
    vm = pull_vm
    ansible.ok('qemu_bitmap', {'socket': vm.socket, 'name': 'pull'})
    before = vm_state(vm)
    args = view_args(vm, bitmap='pull')
    predicted = ansible.ok('qemu_fleece', args, check=True)
    assert predicted['changed'] is True and vm_state(vm) == before
    view = ansible.converge('qemu_fleece', args)
    assert predicted['disks'] == view['disks'] and view['nbd_server_started'] is True
    assert ansible.ok('qemu_fleece', args)['disks'] == view['disks']
    other = ansible.failed('qemu_fleece', view_args(vm, disks=['vda']))
    assert 'already exists' in other['msg'] and 'state=absent' in other['msg'], other['msg']
    refused = ansible.failed('qemu_blockdev_backup', backup_args(vm, os.path.join(workdir)))
    assert 'qemu_fleece view' in refused['msg'] and 'state=absent' in refused['msg'], refused['msg']
    gone = ansible.converge('qemu_fleece', view_args(vm, state='absent'))
    assert gone['changed'] is True and any(r.startswith('NBD server') for r in gone['removed'])
    assert vm_state(vm) == before and vm.leftovers() == []


def test_absent_cleans_a_view_whose_present_died_half_way(pull_vm, ansible):
    vm = pull_vm
    before = vm_state(vm)
    ansible.ok('qemu_fleece', view_args(vm))
    # What a present killed while it exported leaves: one export made, the
    # record not yet complete.
    vm.qmp('block-export-del', id='vmb-view-exp1')
    record = view_record(lock_dir(), vm.socket)
    with open(record) as handle:
        data = json.load(handle)
    data['complete'] = False
    with open(record, 'w') as handle:
        json.dump(data, handle)
    again = ansible.ok('qemu_fleece', view_args(vm))
    assert again['changed'] is True and again['removed'], again
    assert len(vm.qmp('query-block-exports')) == 2
    ansible.ok('qemu_fleece', view_args(vm, state='absent'))
    assert vm_state(vm) == before and vm.leftovers() == [] and not os.path.exists(record)


def _kill_present_half_way(vm, ansible, args):
    """SIGKILL a qemu_fleece present as soon as QEMU holds the first node of
    its view; True if the kill landed before the view was complete."""
    proc = ansible.spawn('qemu_fleece', args)
    pids = []
    while not pids:
        assert proc.poll() is None, 'qemu_fleece ended before it ran: %s' % proc.communicate()[0]
        pids = ansible.module_pids('qemu_fleece')
    while not any(n['node-name'].startswith('vmb-view') for n in vm.qmp('query-named-block-nodes', flat=True)):
        if proc.poll() is not None:
            return False
    for pid in ansible.module_pids('qemu_fleece'):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass            # ended meanwhile
    proc.communicate()
    try:
        with open(view_record(lock_dir(), vm.socket)) as handle:
            return not json.load(handle).get('complete')
    except IOError:
        return True         # killed before it wrote the record


def test_a_present_sigkilled_half_way_is_cleaned_by_the_next_run(pull_vm, ansible):
    vm = pull_vm
    vm.write('vda', 3 * MIB, MIB, 0x5a)
    before = vm_state(vm)
    args = view_args(vm)
    for _attempt in range(5):
        if _kill_present_half_way(vm, ansible, args):
            break
        ansible.ok('qemu_fleece', view_args(vm, state='absent'))   # it finished first: again
    else:
        pytest.fail('five kills all landed after qemu_fleece present had finished')
    assert vm.leftovers(), 'the kill left nothing half-made'
    again = ansible.ok('qemu_fleece', args)
    assert again['changed'] is True and len(vm.qmp('query-block-exports')) == 2
    pulled = pull(vm, again['disks'][0]['uri'], os.path.join(vm.workdir, 'pulled.raw'))
    identical, text = vm.qemu.compare(pulled, vm.shadow('vda'), 'raw', 'raw')
    assert identical, text
    ansible.ok('qemu_fleece', view_args(vm, state='absent'))
    assert vm_state(vm) == before and vm.leftovers() == []
    assert not os.path.exists(view_record(lock_dir(), vm.socket))


def test_a_full_fleece_store_breaks_the_view_never_the_guest(pull_vm, ansible, workdir):
    vm = pull_vm
    vm.write('vda', 0, 8 * MIB, 0x31)
    with small_filesystem(os.path.join(workdir, 'fleece'), '1m') as fleece_dir:
        view = ansible.ok('qemu_fleece', view_args(vm, fleece_dir=fleece_dir, disks=['vda']))
        vm.write('vda', 0, 8 * MIB, 0x32)     # 8 MiB of old data do not fit in 1 MiB
        vm.assert_disk_matches_shadow('vda')  # every guest write landed
        broken = vm.qemu.run_img('convert', '-f', 'raw', '-O', 'raw', view['disks'][0]['uri'],
                                 os.path.join(workdir, 'broken.raw'), check=False)
        # QEMU fails the view's reads with EACCES, which NBD carries as EINVAL.
        assert broken.returncode != 0 and 'Invalid argument' in broken.stdout, broken.stdout
        ansible.ok('qemu_fleece', view_args(vm, fleece_dir=fleece_dir, state='absent'))
        assert os.listdir(fleece_dir) == []
    assert vm.leftovers() == [] and vm.run_state() == 'running'


def test_a_view_lost_in_a_restart_is_reported_and_replaced(pull_vm, ansible, workdir):
    vm = pull_vm
    first = ansible.ok('qemu_fleece', view_args(vm))
    vm.kill()
    vm.start()
    vm.qmp('cont')
    assert not [f for f in os.listdir(workdir) if f.endswith('.fleece.raw')] or \
        all(os.path.exists(d['fleece_image']) for d in first['disks'])
    second = ansible.ok('qemu_fleece', view_args(vm))
    assert second['changed'] is True and 'QEMU was restarted' in second['lost_view']
    assert 'QEMU was restarted' in second['_output']
    at_instant = guest_content(vm, 'now')
    for item in second['disks']:
        identical, output = vm.qemu.compare(pull(vm, item['uri'], os.path.join(workdir, item['disk'])),
                                            at_instant[item['disk']], 'raw', 'raw')
        assert identical, output
    ansible.ok('qemu_fleece', view_args(vm, state='absent'))
    assert not [f for f in os.listdir(workdir) if f.endswith('.fleece.raw')] and vm.leftovers() == []


def test_refused_before_8_0(make_vm, ansible):
    vm = make_vm()
    if not refused_here(vm):
        pytest.skip('this QEMU serves views (the other tests of this file)')
    before = vm_state(vm)
    failure = ansible.failed('qemu_fleece', view_args(vm))
    assert 'QEMU 8.0 or newer' in failure['msg'] and 'a4d5224c2cb6' in failure['msg']
    assert ansible.failed('qemu_fleece', view_args(vm), check=True)['msg'] == failure['msg']
    assert vm_state(vm) == before


def test_hostile_input_is_refused_and_changes_nothing(pull_vm, ansible, workdir):
    vm = pull_vm
    ansible.ok('qemu_bitmap', {'socket': vm.socket, 'name': 'pull'})
    plain = os.path.join(workdir, 'plain-file')
    with open(plain, 'w') as handle:
        handle.write('x')
    cases = [
        (view_args(vm, fleece_dir=''), 'fleece_dir must not be empty'),
        (view_args(vm, fleece_dir=os.path.join(workdir, 'nosuch')), 'does not exist'),
        (view_args(vm, fleece_dir=plain), 'is not a directory'),
        (dict(view_args(vm), nbd_socket=None), 'nbd_socket'),
        (view_args(vm, nbd_socket=plain), 'is not a socket'),
        (view_args(vm, bitmap=''), 'bitmap must not be empty'),
        (view_args(vm, bitmap='nosuch'), 'has no dirty bitmap nosuch'),
        (view_args(vm, disks=['nosuch']), 'has no disk named nosuch'),
        (view_args(vm, state='gone'), 'value of state must be one of'),
        # Found only once the view is made: the half-made view is removed again.
        (view_args(vm, nbd_socket=os.path.join(workdir, 'nosuch', 'nbd.sock')), 'could not start its NBD server'),
    ]
    for args, expect in cases:
        refused(ansible, workdir, vm, 'qemu_fleece', args, expect)
    assert vm.leftovers() == [] and not os.path.exists(view_record(lock_dir(), vm.socket))


def test_relative_paths_are_the_module_directorys(pull_vm, ansible, workdir):
    vm = pull_vm
    here = os.path.join(workdir, 'here')
    os.makedirs(os.path.join(here, 'fleece'))
    view = ansible.ok('qemu_fleece', {'socket': vm.socket, 'fleece_dir': 'fleece', 'export': 'nbd',
                                      'nbd_socket': 'nbd.sock'}, cwd=here)
    assert view['nbd_socket'] == os.path.join(here, 'nbd.sock') and os.path.exists(view['nbd_socket'])
    assert all(d['fleece_image'].startswith(os.path.join(here, 'fleece') + os.sep) for d in view['disks'])
    assert sorted(os.listdir(os.path.join(here, 'fleece'))) == sorted(
        os.path.basename(d['fleece_image']) for d in view['disks'])
    ansible.ok('qemu_fleece', {'socket': vm.socket, 'state': 'absent'}, cwd=here)
    assert os.listdir(here) == ['fleece'] and os.listdir(os.path.join(here, 'fleece')) == []


def test_a_busy_listener_on_nbd_socket_is_never_replaced(pull_vm, ansible, workdir):
    """A process that listens on nbd_socket but accepts nobody now (its
    backlog full) is alive: its socket must not be taken for a stale one,
    which QEMU would unlink and replace."""
    vm = pull_vm
    nbd = os.path.join(workdir, 'busy.sock')
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(nbd)
    listener.listen(0)
    filler = socket.socket(socket.AF_UNIX)
    filler.connect(nbd)                      # the one connection a backlog of 0 queues
    try:
        inode = os.stat(nbd).st_ino
        failure = refused(ansible, workdir, vm, 'qemu_fleece', view_args(vm, nbd_socket=nbd), nbd)
        assert 'cannot tell who listens' in failure['msg'], failure['msg']
        assert os.stat(nbd).st_ino == inode
    finally:
        filler.close()
        listener.close()
    assert vm.leftovers() == [] and not os.path.exists(view_record(lock_dir(), vm.socket))
