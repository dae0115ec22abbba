# -*- coding: utf-8 -*-
# Copyright: (c) 2026, vmbackup.qemu developers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

"""A real, tiny Linux guest for the tests, built from Debian 12 packages only.

``build()`` makes, under ``.cache/test-guest-<key>/`` (the key covers this
file and the packages' versions, so a change of either rebuilds it):

* ``vmlinux``: Debian's kernel (linux-image-amd64), taken out of its bzImage.
  QEMU boots that ELF through its PVH entry, much faster under TCG than the
  compressed image (this machine's KVM cannot boot a normal kernel);
* ``initrd``: busybox-static, the kernel modules a virtio disk, the guest
  agent's channel and ext4 need (in the order their ``depends`` give), the
  real ``qemu-ga`` of qemu-guest-agent with the host's copies of the shared
  libraries it links (Debian 12's, found with ldd), and ``/init``.

``/init`` mounts the ext4 data disk (``/dev/vda``), starts qemu-ga on the
virtio-serial port ``org.qemu.guest_agent.0`` (unless the kernel command line
says ``noagent``) and, until ``/tmp/stop`` exists, rewrites files on it,
recording each file's checksum in ``/data/manifest`` just before the file
takes its new content (guest_files_consistent says what that allows).
Everything it does is logged to the serial console.

Run as a script (``python guest.py``) it builds and prints the paths."""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import fcntl
import hashlib
import json
import lzma
import os
import re
import shutil
import socket
import stat
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
CACHE = os.path.normpath(os.path.join(HERE, '..', '..', '..', '.cache'))
KERNEL_META = 'linux-image-amd64'
PACKAGES = ('busybox-static', 'qemu-guest-agent')
MODULES = ('virtio_pci', 'virtio_blk', 'virtio_console', 'crc32c_generic', 'ext4')
AGENT_PORT = 'org.qemu.guest_agent.0'
XZ_MAGIC = b'\xfd7zXZ\x00'

INIT = r'''#!/bin/busybox sh
/bin/busybox --install -s /bin
mkdir -p /proc /sys /dev /tmp /data /run
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
for module in $(cat /modules.order); do insmod /lib/modules/$module.ko; done
echo "guest: modules loaded"
while [ ! -b /dev/vda ]; do sleep 0.1; done
mount -t ext4 /dev/vda /data || { echo "guest: cannot mount /dev/vda"; poweroff -f; }
echo "guest: data mounted"
if ! grep -qw noagent /proc/cmdline; then
    port=
    while [ -z "$port" ]; do
        for name in /sys/class/virtio-ports/*/name; do
            [ "$(cat $name 2>/dev/null)" = "AGENT_PORT" ] && port=/dev/$(basename $(dirname $name))
        done
        [ -z "$port" ] && sleep 0.1
    done
    mkdir -p /var/run
    qemu-ga -m virtio-serial -p $port -t /run -f /run/qemu-ga.pid -l /dev/console &
    echo "guest: agent on $port"
fi
echo "guest: ready"
i=0
while [ ! -e /tmp/stop ]; do
    i=$((i + 1))
    f=/data/file$((i % 64))
    dd if=/dev/urandom of=$f.new bs=4k count=$((1 + i % 48)) 2>/dev/null
    echo "$(sha256sum < $f.new | cut -d' ' -f1)  $f" >> /data/manifest
    mv $f.new $f
    [ $((i % 50)) = 0 ] && echo "guest: wrote $i"
done
echo "guest: stopped writing"
sync
while true; do sleep 3600; done
'''.replace('AGENT_PORT', AGENT_PORT)


class GuestImage(object):
    def __init__(self, directory):
        self.directory = directory
        self.kernel = os.path.join(directory, 'vmlinux')
        self.initrd = os.path.join(directory, 'initrd')


def run(*args, **kwargs):
    return subprocess.run(list(args), check=True, stdout=subprocess.PIPE, universal_newlines=True, **kwargs).stdout


def kernel_package():
    """The versioned package linux-image-amd64 depends on."""
    for line in run('apt-cache', 'depends', KERNEL_META).splitlines():
        if line.strip().startswith('Depends:'):
            return line.split(':', 1)[1].strip()
    raise RuntimeError('apt-cache names no kernel for %s: run apt-get update' % KERNEL_META)


def candidate(package):
    for line in run('apt-cache', 'policy', package).splitlines():
        if line.strip().startswith('Candidate:') and '(none)' not in line:
            return line.split(':', 1)[1].strip()
    raise RuntimeError('apt-cache knows no %s: run apt-get update' % package)


def package_versions():
    """The packages of the guest with their versions; apt's lists are
    fetched first where this machine never did (as root)."""
    try:
        packages = (kernel_package(),) + PACKAGES
        return packages, [candidate(p) for p in packages]
    except RuntimeError:
        if os.geteuid() != 0:
            raise
    run('apt-get', '-q', 'update')
    packages = (kernel_package(),) + PACKAGES
    return packages, [candidate(p) for p in packages]


def build_key(packages, versions):
    with open(__file__, 'rb') as handle:
        digest = hashlib.sha256(handle.read())
    for package, version in zip(packages, versions):
        digest.update(('%s=%s\n' % (package, version)).encode())
    return digest.hexdigest()[:12]


def build(cache=CACHE):
    """The guest's kernel and initrd, built once per key. Test runs of
    several QEMUs at once share the cache: one builds, the others wait."""
    packages, versions = package_versions()
    image = GuestImage(os.path.join(cache, 'test-guest-' + build_key(packages, versions)))
    os.makedirs(cache, exist_ok=True)
    with open(os.path.join(cache, 'test-guest.lock'), 'w') as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not os.path.exists(os.path.join(image.directory, 'ready')):
            _build_into(image, packages, cache)
    return image


def _build_into(image, packages, cache):
    """Build the guest into ``image`` (under the build lock)."""
    work = tempfile.mkdtemp(prefix='test-guest-build-', dir=cache)
    os.chmod(work, 0o755)    # apt-get download fetches as its own user where it can
    try:
        root = os.path.join(work, 'root')
        run('apt-get', 'download', *packages, cwd=work)
        for deb in sorted(f for f in os.listdir(work) if f.endswith('.deb')):
            run('dpkg-deb', '-x', os.path.join(work, deb), root)
        tree = os.path.join(work, 'initrd')
        make_tree(root, tree)
        os.makedirs(image.directory, exist_ok=True)
        write_cpio(tree, image.initrd)
        extract_vmlinux(root, image.kernel)
        open(os.path.join(image.directory, 'ready'), 'w').close()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    for entry in os.listdir(cache):     # builds of older inputs
        if entry.startswith('test-guest-') and os.path.join(cache, entry) != image.directory:
            shutil.rmtree(os.path.join(cache, entry), ignore_errors=True)


def extract_vmlinux(root, dest):
    """The ELF kernel inside Debian's XZ-compressed bzImage."""
    boot = os.path.join(root, 'boot')
    vmlinuz = [f for f in os.listdir(boot) if f.startswith('vmlinuz-')][0]
    with open(os.path.join(boot, vmlinuz), 'rb') as handle:
        data = handle.read()
    start = data.find(XZ_MAGIC)
    elf = lzma.LZMADecompressor().decompress(data[start:]) if start >= 0 else b''
    if not elf.startswith(b'\x7fELF'):
        raise RuntimeError('no XZ-compressed ELF kernel found in %s' % vmlinuz)
    with open(dest, 'wb') as handle:
        handle.write(elf)


def module_depends(path):
    """The modules a .ko needs, from its .modinfo ``depends=``."""
    with open(path, 'rb') as handle:
        found = re.search(rb'depends=([^\x00]*)\x00', handle.read())
    return [name for name in found.group(1).decode().split(',') if name] if found else []


def modules_in_order(root):
    """[(name, path)] of MODULES and what they depend on, dependencies first."""
    base = os.path.join(root, 'lib', 'modules')
    paths = {}
    for top, _dirs, files in os.walk(base):
        for name in files:
            if name.endswith('.ko'):
                paths[name[:-3].replace('-', '_')] = os.path.join(top, name)
    ordered = []

    def visit(name):
        name = name.replace('-', '_')
        if name in (n for n, _p in ordered):
            return
        for dependency in module_depends(paths[name]):
            visit(dependency)
        ordered.append((name, paths[name]))

    for name in MODULES:
        visit(name)
    return ordered


def make_tree(root, tree):
    """The initrd's files: busybox, modules, qemu-ga and its libraries, /init."""
    for sub in ('bin', 'lib/modules', 'usr/bin'):
        os.makedirs(os.path.join(tree, sub))
    shutil.copy2(os.path.join(root, 'bin', 'busybox'), os.path.join(tree, 'bin', 'busybox'))
    order = []
    for name, path in modules_in_order(root):
        shutil.copy2(path, os.path.join(tree, 'lib', 'modules', name + '.ko'))
        order.append(name)
    with open(os.path.join(tree, 'modules.order'), 'w') as handle:
        handle.write('\n'.join(order) + '\n')
    agent = os.path.join(root, 'usr', 'sbin', 'qemu-ga')
    shutil.copy2(agent, os.path.join(tree, 'usr', 'bin', 'qemu-ga'))
    for library in linked_libraries(agent):
        dest = os.path.join(tree, library.lstrip('/'))
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        shutil.copy2(os.path.realpath(library), dest)
    with open(os.path.join(tree, 'init'), 'w') as handle:
        handle.write(INIT)
    os.chmod(os.path.join(tree, 'init'), 0o755)


def linked_libraries(binary):
    """Absolute paths of the shared libraries ``binary`` links, as this host resolves them."""
    libraries = []
    for line in run('ldd', binary).splitlines():
        if 'not found' in line:
            raise RuntimeError('%s needs %s, which this host lacks: install it' % (binary, line.split()[0]))
        path = line.split('=>')[-1].split('(')[0].strip()
        if path.startswith('/'):
            libraries.append(path)
    return libraries


def write_cpio(tree, dest):
    """An uncompressed newc cpio archive of ``tree`` (what the kernel unpacks as initramfs)."""
    inode = [0]

    def entry(out, name, mode, data=b''):
        inode[0] += 1
        header = '070701' + ''.join('%08x' % v for v in (
            inode[0], mode, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(name) + 1, 0))
        out.write(header.encode() + name.encode() + b'\x00')
        out.write(b'\x00' * ((4 - (110 + len(name) + 1) % 4) % 4))
        out.write(data)
        out.write(b'\x00' * ((4 - len(data) % 4) % 4))

    with open(dest, 'wb') as out:
        for top, dirs, files in os.walk(tree):
            dirs.sort()
            rel = os.path.relpath(top, tree)
            if rel != '.':
                entry(out, rel, stat.S_IFDIR | 0o755)
            for name in sorted(files):
                path = os.path.join(top, name)
                with open(path, 'rb') as handle:
                    data = handle.read()
                mode = stat.S_IFREG | (os.stat(path).st_mode & 0o777)
                entry(out, os.path.normpath(os.path.join(rel, name)), mode, data)
        entry(out, 'TRAILER!!!', 0)


def restored_tree(qemu, image, workdir, label):
    """The files of the ext4 filesystem in backup ``image`` (read through its
    chain), and what the filesystem says of itself: (raw, files directory)."""
    raw = os.path.join(workdir, label + '.raw')
    qemu.run_img('convert', '-O', 'raw', image, raw)
    tree = os.path.join(workdir, label + '.files')
    os.mkdir(tree)
    subprocess.run(['debugfs', '-R', 'rdump / %s' % tree, raw], check=True,
                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    return raw, tree


def needs_recovery(raw):
    """Whether the filesystem's journal must be replayed before it is consistent."""
    out = run('dumpe2fs', '-h', raw, stderr=subprocess.DEVNULL)
    features = [line for line in out.splitlines() if line.startswith('Filesystem features:')]
    return 'needs_recovery' in features[0].split()


def fsck(raw):
    """(clean, output) of a read-only full check."""
    proc = subprocess.run(['e2fsck', '-fn', raw], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          universal_newlines=True, check=False)
    return proc.returncode == 0, proc.stdout


def manifest_problems(tree):
    """Files whose content the manifest does not vouch for, and how many
    lines it has. The writer records a file's checksum, then renames the
    file into place: each file must match its last line, but for the file of
    the very last line, which may still hold what its line before said."""
    with open(os.path.join(tree, 'manifest')) as handle:
        lines = handle.read().splitlines()
    last, before, problems = {}, {}, []
    for number, line in enumerate(lines, 1):
        fields = line.split()
        if len(fields) != 2 or not re.match('^[0-9a-f]{64}$', fields[0]):
            problems.append('manifest line %d is torn: %r' % (number, line))
            continue
        before[fields[1]], last[fields[1]] = last.get(fields[1]), fields[0]
    in_flight = lines[-1].split()[-1] if lines else None
    for path, digest in sorted(last.items()):
        local = os.path.join(tree, os.path.basename(path))
        actual = hashlib.sha256(open(local, 'rb').read()).hexdigest() if os.path.exists(local) else None
        if actual != digest and not (path == in_flight and actual == before[path]):
            problems.append('%s holds %s, the manifest says %s' % (path, actual, digest))
    return problems, len(lines)


def agent_command(socket_path, command):
    """One command to the guest agent on ``socket_path``; its reply."""
    client = socket.socket(socket.AF_UNIX)
    client.settimeout(30)
    client.connect(socket_path)
    try:
        client.sendall(json.dumps(command).encode() + b'\n')
        data = b''
        while not data.endswith(b'\n'):
            data += client.recv(4096)
        return json.loads(data.decode())
    finally:
        client.close()


if __name__ == '__main__':
    built = build(sys.argv[1] if len(sys.argv) > 1 else CACHE)
    print(built.kernel)
    print(built.initrd)
