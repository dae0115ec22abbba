#!/usr/bin/env python
# (`python`, not `python3`: the only Python shebang that ansible-test's shebang sanity test allows here)
"""Check that meta/runtime.yml's `qmp` action group lists exactly the right modules.

ansible-test does not check action_groups, so this does:

- every module in plugins/modules/ whose DOCUMENTATION extends the doc fragment
  `<namespace>.<name>.qmp` (i.e. it takes `socket` and talks to a VM) must be in
  the `qmp` group, so that `module_defaults: group/<namespace>.<name>.qmp` reaches it;
- every entry of the group must be an existing module of this collection.

Modules without that fragment (e.g. ones that only read a backup repository)
may stay out of the group.

Usage: .venv/bin/python scripts/check-action-groups.py [COLLECTION_ROOT]   (default: this repo)
       (`make action-groups` runs it)
Exit status: 0 when consistent, 1 when not, 2 when a file cannot be read.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import yaml

GROUP = 'qmp'


def fail(msg: str, status: int = 2) -> None:
    print(f'check-action-groups: error: {msg}', file=sys.stderr)
    sys.exit(status)


def load_yaml(path: Path) -> object:
    try:
        return yaml.safe_load(path.read_text(encoding='utf-8'))
    except (OSError, yaml.YAMLError) as exc:
        fail(f'cannot read {path}: {exc}')
        return None  # not reached


def module_documentation(path: Path) -> dict:
    """Return a module's DOCUMENTATION, parsed without importing the module."""
    tree = ast.parse(path.read_text(encoding='utf-8'), filename=str(path))
    for node in tree.body:
        if (isinstance(node, ast.Assign)
                and any(isinstance(t, ast.Name) and t.id == 'DOCUMENTATION' for t in node.targets)
                and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str)):
            doc = yaml.safe_load(node.value.value)
            if not isinstance(doc, dict):
                raise ValueError('DOCUMENTATION is not a YAML mapping')
            return doc
    raise ValueError('no DOCUMENTATION string found')


def uses_fragment(doc: dict, fragment: str) -> bool:
    """True if DOCUMENTATION extends `fragment` (or one of its sub-fragments, `fragment.X`)."""
    extends = doc.get('extends_documentation_fragment') or []
    if isinstance(extends, str):
        extends = [extends]
    return any(f == fragment or f.startswith(fragment + '.') for f in extends)


def main() -> int:
    root = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parent.parent
    galaxy = load_yaml(root / 'galaxy.yml')
    if not isinstance(galaxy, dict):
        fail(f'{root / "galaxy.yml"} is not a YAML mapping')
    prefix = f'{galaxy["namespace"]}.{galaxy["name"]}.'
    fragment = prefix + GROUP

    # The modules, and which of them need to be in the group.
    modules = {}  # name -> True if it uses the qmp fragment, None if its DOCUMENTATION is unreadable
    problems = []
    for path in sorted((root / 'plugins' / 'modules').glob('*.py')):
        if path.name == '__init__.py':
            continue
        try:
            modules[path.stem] = uses_fragment(module_documentation(path), fragment)
        except (OSError, SyntaxError, ValueError, yaml.YAMLError) as exc:
            modules[path.stem] = None
            problems.append(f'cannot read the DOCUMENTATION of {path.relative_to(root)}: {exc}')

    # The group, as short names. Entries may be short names or FQCNs; the
    # `metadata` mapping (extend_group) is not a module and is skipped.
    runtime_path = root / 'meta' / 'runtime.yml'
    runtime = load_yaml(runtime_path) or {}
    if not isinstance(runtime, dict):
        fail(f'{runtime_path} is not a YAML mapping')
    entries = (runtime.get('action_groups') or {}).get(GROUP) or []
    group = []
    for entry in entries:
        if not isinstance(entry, str):
            continue
        if '.' in entry:
            if not entry.startswith(prefix):
                problems.append(f'action group {GROUP!r} lists {entry!r}, which is not a module of {prefix[:-1]}')
                continue
            entry = entry[len(prefix):]
        group.append(entry)

    duplicates = sorted({m for m in group if group.count(m) > 1})
    extra = sorted(set(group) - set(modules))
    missing = sorted(m for m, needs in modules.items() if needs and m not in group)
    loose = sorted(m for m in set(group) & set(modules) if modules[m] is False)

    if missing:
        problems.append(
            f'missing from action group {GROUP!r} in meta/runtime.yml (they extend the {fragment} doc fragment): '
            + ', '.join(missing))
    if extra:
        problems.append(
            f'listed in action group {GROUP!r} in meta/runtime.yml but no such module in plugins/modules/: '
            + ', '.join(extra))
    if duplicates:
        problems.append(f'listed more than once in action group {GROUP!r}: ' + ', '.join(duplicates))

    if problems:
        for problem in problems:
            print(f'check-action-groups: FAIL: {problem}', file=sys.stderr)
        return 1

    outside = sorted(m for m, needs in modules.items() if needs is False and m not in group)
    print(f'check-action-groups: OK: action group {GROUP!r} lists every module with the {fragment} fragment: '
          f'{", ".join(sorted(set(group))) or "(none)"}')
    if outside:
        print(f'check-action-groups: not in the group (no {fragment} fragment): {", ".join(outside)}')
    if loose:
        print(f'check-action-groups: note: in the group without the {fragment} fragment '
              f'(check that they accept the group\'s module_defaults): {", ".join(loose)}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
