#!/usr/bin/env python
"""List functions longer than a limit (docstring excluded): our 60-line rule."""
import ast
import glob
import sys

LIMIT = int(sys.argv[1]) if len(sys.argv) > 1 else 60


def body_length(node):
    body = node.body
    first = body[0]
    if len(body) > 1 and isinstance(first, ast.Expr) and isinstance(getattr(first, 'value', None), ast.Constant) \
            and isinstance(first.value.value, str):
        first = body[1]
    return node.end_lineno - first.lineno + 1


def main():
    found = 0
    for path in sorted(glob.glob('plugins/**/*.py', recursive=True)):
        with open(path) as handle:
            tree = ast.parse(handle.read())
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and body_length(node) > LIMIT:
                print('%s:%d %s: %d lines' % (path, node.lineno, node.name, body_length(node)))
                found += 1
    return 1 if found else 0


if __name__ == '__main__':
    sys.exit(main())
