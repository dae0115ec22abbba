# -*- coding: utf-8 -*-
# Copyright: (c) 2026, vmbackup.qemu developers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

"""The VM model: what a running QEMU has (disks, nodes, bitmaps, jobs) and
what it can do (features). Built from QMP queries; names follow the SPEC.

QEMU quirks about naming and the block graph live here and nowhere else."""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

from ansible_collections.vmbackup.qemu.plugins.module_utils.errors import (
    DiskSelectionError,
    FeatureMissingError,
)
from ansible_collections.vmbackup.qemu.plugins.module_utils.schema import Features, QMPSchema

# Drivers that pass I/O through to their `file` child; the disk's bitmaps
# belong to the first non-filter node below them (the format node).
FILTER_DRIVERS = frozenset([
    'blkdebug', 'blklogwrites', 'blkreplay', 'compress', 'copy-before-write',
    'copy-on-read', 'preallocate', 'throttle',
])

# Only qcow2 (version 3, compat 1.1) can store persistent dirty bitmaps.
PERSISTENT_BITMAP_FORMATS = frozenset(['qcow2'])

# Where QEMU puts devices created with an id; the drive property of a
# virtio-blk device lives on its inner virtio-backend.
_PERIPHERAL_PREFIX = '/machine/peripheral/'


class Bitmap(object):
    """One named dirty bitmap on a block node (``BlockDirtyInfo``)."""

    __slots__ = ('node', 'name', 'count', 'granularity', 'recording', 'busy',
                 'persistent', 'inconsistent')

    def __init__(self, node, info):
        self.node = node
        self.name = info['name']
        self.count = info.get('count', 0)
        self.granularity = info.get('granularity')
        self.recording = bool(info.get('recording', False))
        self.busy = bool(info.get('busy', False))
        self.persistent = bool(info.get('persistent', False))
        # QEMU reports the key only when it is true.
        self.inconsistent = bool(info.get('inconsistent', False))

    def as_dict(self):
        return dict((key, getattr(self, key)) for key in self.__slots__)


class Disk(object):
    """A guest disk: a BlockBackend, usually attached to a device."""

    def __init__(self, block_info, nodes, graph_lookup):
        self.qdev = block_info.get('qdev') or None
        self.drive_id = block_info.get('device') or None
        self.device_id = device_id_from_qdev(self.qdev)
        self.removable = bool(block_info.get('removable', False))
        inserted = block_info.get('inserted')
        self.has_media = inserted is not None
        self.root_node = inserted.get('node-name') if inserted else None
        self.read_only = bool(inserted.get('ro', False)) if inserted else True
        self.filters = []
        self.node = None
        self.format = None
        self.virtual_size = None
        self.allocated_size = None
        self.cluster_size = None
        self.image_filename = None
        self.qcow2_compat = None
        self.bitmaps = []
        if inserted:
            self._find_format_node(nodes, graph_lookup)

    def _find_format_node(self, nodes, graph_lookup):
        node = self.root_node
        seen = set()
        while nodes.get(node, {}).get('drv') in FILTER_DRIVERS and node not in seen:
            seen.add(node)
            self.filters.append(node)
            node = graph_lookup(node, 'file')
        info = nodes.get(node, {})
        self.node = node
        self.format = info.get('drv')
        image = info.get('image', {})
        self.virtual_size = image.get('virtual-size')
        self.allocated_size = image.get('actual-size')
        self.cluster_size = image.get('cluster-size')
        self.image_filename = image.get('filename')
        specific = image.get('format-specific', {})
        if specific.get('type') == 'qcow2':
            self.qcow2_compat = specific.get('data', {}).get('compat')
        self.bitmaps = [Bitmap(node, b) for b in info.get('dirty-bitmaps', []) if b.get('name')]

    @property
    def name(self):
        """The disk's name: device id, else -drive id, else format node-name."""
        return self.device_id or self.drive_id or self.node or self.qdev

    @property
    def aliases(self):
        return [alias for alias in (self.device_id, self.drive_id, self.node) if alias]

    def bitmap(self, name):
        for bitmap in self.bitmaps:
            if bitmap.name == name:
                return bitmap
        return None

    def unusable_reason(self, need_persistent_bitmaps=False):
        """Why this disk cannot take part (None when it can)."""
        if not self.has_media:
            return 'no medium inserted'
        if self.read_only:
            return 'read-only (a CD-ROM or a disk opened read-only): nothing to track or back up'
        if not self.qdev:
            return 'not attached to a guest device: the guest cannot write to it'
        if need_persistent_bitmaps:
            return self.persistent_bitmap_problem()
        return None

    def persistent_bitmap_problem(self):
        if self.format not in PERSISTENT_BITMAP_FORMATS:
            return ('its format %s cannot hold persistent dirty bitmaps (only qcow2 can); '
                    'use persistent: false or convert the image to qcow2' % self.format)
        if self.qcow2_compat == '0.10':
            return ('its qcow2 image is version 2 (compat=0.10), which cannot hold persistent '
                    'dirty bitmaps; upgrade it with qemu-img amend -o compat=1.1')
        return None

    def as_dict(self):
        return {
            'disk': self.name,
            'device_id': self.device_id,
            'drive_id': self.drive_id,
            'qdev': self.qdev,
            'node': self.node,
            'root_node': self.root_node,
            'filters': list(self.filters),
            'format': self.format,
            'virtual_size': self.virtual_size,
            'cluster_size': self.cluster_size,
            'filename': self.image_filename,
            'read_only': self.read_only,
            'has_media': self.has_media,
        }


def device_id_from_qdev(qdev):
    """The id the user gave the guest device, from query-block's ``qdev``.

    ``qdev`` is the device id itself for most devices (``sda``), a QOM path
    below /machine/peripheral/<id>/ for virtio devices, and a path below
    peripheral-anon or unattached for devices without an id."""
    if not qdev:
        return None
    if not qdev.startswith('/'):
        return qdev
    if qdev.startswith(_PERIPHERAL_PREFIX):
        return qdev[len(_PERIPHERAL_PREFIX):].split('/', 1)[0] or None
    return None


class VM(object):
    """A running QEMU as seen through one QMP connection."""

    def __init__(self, connection):
        self.qmp = connection
        self._features = None
        self._version = None
        self._edges = []
        self._edges_of = None       # the named_nodes() reply self._edges was read for

    # -- what QEMU can do ---------------------------------------------------

    @property
    def features(self):
        if self._features is None:
            self._features = Features(QMPSchema(self.qmp.execute('query-qmp-schema')))
        return self._features

    @property
    def version(self):
        if self._version is None:
            info = self.qmp.execute('query-version')
            q = info['qemu']
            self._version = {
                'major': q['major'], 'minor': q['minor'], 'micro': q['micro'],
                'string': '%d.%d.%d' % (q['major'], q['minor'], q['micro']),
                'package': info.get('package', '').strip(),
            }
        return self._version

    def name(self):
        """The QEMU -name of the VM, or None."""
        return self.qmp.execute('query-name').get('name') or None

    def status(self):
        return self.qmp.execute('query-status')

    # -- block graph --------------------------------------------------------

    def named_nodes(self):
        return dict((node['node-name'], node)
                    for node in self.qmp.execute('query-named-block-nodes', {'flat': True})
                    if node.get('node-name'))

    def block_edges(self, nodes):
        """[(parent, role, child)]: the edges between the block nodes of
        ``nodes`` (a named_nodes() reply), from their children (QEMU 10.1+)
        or x-debug-query-block-graph, read once per reply. Devices and jobs
        that use a node are not edges here."""
        if any('children' in node for node in nodes.values()):  # QEMU 10.1+
            return [(name, child.get('child'), child.get('node-name'))
                    for name, node in nodes.items() for child in node.get('children', [])]
        if self._edges_of is not nodes:
            if not self.features.has('block_graph_debug'):
                raise FeatureMissingError(
                    'reading the block graph needs node children (QEMU 10.1+) or x-debug-query-block-graph, '
                    'and this QEMU offers neither')
            graph = self.qmp.execute('x-debug-query-block-graph')
            by_id = dict((n['id'], n) for n in graph['nodes'])
            self._edges = [(by_id[e['parent']].get('name'), e['name'], by_id[e['child']].get('name'))
                           for e in graph['edges']
                           if by_id[e['parent']].get('type') == by_id[e['child']].get('type') == 'block-driver']
            self._edges_of = nodes
        return self._edges

    def child_node(self, nodes, parent, child_role):
        """Name of ``parent``'s child in role ``child_role`` (e.g. 'file')."""
        for name, role, child in self.block_edges(nodes):
            if name == parent and role == child_role:
                return child
        return None

    def parent_nodes(self, nodes):
        """{node: names of the block nodes with an edge to it}: only nodes
        that have parents."""
        parents = {}
        for name, _role, child in self.block_edges(nodes):
            parents.setdefault(child, []).append(name)
        return parents

    def switch_drive(self, qdev, node):
        """Make the device ``qdev`` write through ``node``; False if it already does.

        ``qom-set drive`` to the node a device already uses aborts QEMU
        (bdrv_replace_child_noperm: Assertion 'old_bs != new_bs'), so the
        current node is checked first, on every QEMU."""
        for info in self.qmp.execute('query-block'):
            if info.get('qdev') == qdev:
                if (info.get('inserted') or {}).get('node-name') == node:
                    return False
                self.qmp.execute('qom-set', {'path': qdev, 'property': 'drive', 'value': node})
                return True
        raise DiskSelectionError('device %s is gone from the VM: it cannot be switched to node %s'
                                 % (qdev, node), device=qdev)

    def disks(self):
        """Every disk of the VM, in QEMU's order."""
        nodes = self.named_nodes()
        blocks = self.qmp.execute('query-block')
        return [Disk(info, nodes, lambda parent, role: self.child_node(nodes, parent, role))
                for info in blocks]

    def select_disks(self, names=None, exclude=None, need_persistent_bitmaps=False):
        """Choose disks by name (any of their aliases).

        Returns (selected, skipped): ``skipped`` lists {disk, reason} for disks
        left out of an "every disk" selection. A disk named explicitly that
        cannot be used is an error, not a skip."""
        disks = self.disks()
        by_alias = {}
        for disk in disks:
            for alias in disk.aliases:
                by_alias.setdefault(alias, disk)
        for name in list(names or []) + list(exclude or []):
            if name not in by_alias:
                raise DiskSelectionError(
                    'the VM has no disk named %s; its disks are: %s' % (
                        name, ', '.join(d.name for d in disks) or 'none'),
                    disks=[d.name for d in disks])
        excluded = set(id(by_alias[name]) for name in exclude or [])
        selected, skipped = [], []
        if names:
            for name in names:
                disk = by_alias[name]
                if id(disk) in excluded or disk in selected:
                    continue
                reason = disk.unusable_reason(need_persistent_bitmaps)
                if reason:
                    raise DiskSelectionError('disk %s cannot be used: %s' % (disk.name, reason),
                                             disk=disk.name)
                selected.append(disk)
            return selected, skipped
        for disk in disks:
            if id(disk) in excluded:
                skipped.append({'disk': disk.name, 'reason': 'excluded'})
                continue
            reason = disk.unusable_reason(need_persistent_bitmaps)
            if reason:
                skipped.append({'disk': disk.name, 'reason': reason})
            else:
                selected.append(disk)
        return selected, skipped


class VMRun(object):
    """What one module run on a VM starts from: the VM, the module's
    parameters, how to warn the user, and whether it only predicts."""

    def __init__(self, vm, params, warn=None, check_mode=False):
        self.vm = vm
        self.params = params
        self.warn = warn or (lambda msg: None)
        self.check_mode = check_mode
