#!/usr/bin/env python
# -*- coding: utf-8 -*-
# Copyright: (c) 2026, vmbackup.qemu developers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

"""The benchmarks' results as a page: bench/results/README.md with a table of
every figure (median, spread, target, met or not, the QEMU and the machine)
and one PNG per plot, the same plot of every QEMU drawn together.

Reads the JSON files the benchmarks wrote into bench/results/; needs
matplotlib (bench/requirements.txt). ``make bench`` runs it last; alone:
``.venv/bin/python bench/report.py``."""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import glob
import json
import os
import re
import sys

import matplotlib
matplotlib.use('Agg')
import matplotlib.pyplot as plt  # noqa: E402 pylint: disable=wrong-import-position

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'results')
ORDER = ('guest_latency', 'backup_cost', 'digest_cost', 'restore_chain', 'role_overhead', 'scaling', 'fleece_size')


def load():
    """Every result file, in the order of ORDER, then by QEMU."""
    results = []
    for path in glob.glob(os.path.join(RESULTS, '*.json')):
        with open(path) as handle:
            result = json.load(handle)
        result['release'] = release(result['machine']['qemu'])
        results.append(result)
    rank = dict((name, index) for index, name in enumerate(ORDER))
    return sorted(results, key=lambda r: (rank.get(r['benchmark'], len(ORDER)), r['benchmark'], r['release']))


def release(version_string):
    match = re.search(r'version (\d+\.\d+)', version_string)
    return 'QEMU ' + (match.group(1) if match else '?')


def cell(figure):
    value = figure['value']
    shown = '%.4g' % value if isinstance(value, (int, float)) else str(value)
    spread = figure.get('spread')
    if spread:
        shown += ' (%.4g-%.4g, n=%d)' % (spread['min'], spread['max'], spread['n'])
    return '%s %s' % (shown, figure['unit'])


def verdict(figure):
    if figure.get('met') is None:
        return ''
    return 'met' if figure['met'] else '**missed**'


def table(results):
    lines = ['| benchmark | QEMU | figure | median (min-max, rounds) | target | |', '|---|---|---|---|---|---|']
    for result in results:
        for figure in result['figures']:
            lines.append('| %s | %s | %s | %s | %s | %s |' % (
                result['benchmark'], result['release'][5:], figure['label'].replace('|', '/'), cell(figure),
                figure.get('target') or '', verdict(figure)))
    return lines


def plots(results):
    """{(benchmark, title): [(release, series), ...]} over every result."""
    grouped = {}
    for result in results:
        for series in result.get('series', []):
            grouped.setdefault((result['benchmark'], series['title']), []).append((result['release'], series))
    return grouped


def draw(key, entries):
    benchmark, title = key
    figure, axes = plt.subplots(figsize=(8, 4.5))
    first = entries[0][1]
    if first['kind'] == 'bar':
        draw_bars(axes, entries)
    else:
        for qemu, series in entries:
            for label, points in sorted(series['lines'].items()):
                axes.plot([p[0] for p in points], [p[1] for p in points], marker='o', label='%s, %s' % (label, qemu))
    values = [p[1] for _qemu, series in entries for points in series['lines'].values() for p in points if p[1] > 0]
    if values and max(values) > 100 * min(values):
        axes.set_yscale('log')       # e.g. latencies of 2 ms and 1 s side by side
    axes.set_title(title)
    axes.set_xlabel(first['x_label'])
    axes.set_ylabel(first['y_label'])
    axes.grid(True, alpha=0.3)
    axes.legend(fontsize='small')
    figure.tight_layout()
    name = '%s-%s.png' % (benchmark, re.sub(r'[^a-z0-9]+', '-', title.lower()).strip('-')[:40].rstrip('-'))
    figure.savefig(os.path.join(RESULTS, name), dpi=90)
    plt.close(figure)
    return name


def draw_bars(axes, entries):
    """Grouped bars: one group per category, one bar per (QEMU, line)."""
    bars = [('%s, %s' % (label, qemu), points) for qemu, series in entries
            for label, points in sorted(series['lines'].items())]
    categories = []
    for _label, points in bars:
        categories += [p[0] for p in points if p[0] not in categories]
    width = 0.8 / len(bars)
    for number, (label, points) in enumerate(bars):
        values = dict((str(p[0]), p[1]) for p in points)
        axes.bar([i + number * width for i in range(len(categories))],
                 [values.get(str(c), 0) for c in categories], width, label=label)
    axes.set_xticks([i + 0.4 - width / 2 for i in range(len(categories))])
    axes.set_xticklabels([str(c) for c in categories], rotation=20, ha='right', fontsize='small')


def machines(results):
    seen = []
    for result in results:
        machine = result['machine']
        text = '%s, %d cores, %s GiB, kernel %s' % (
            machine['cpu'], machine['cores'], machine['memory_gib'], machine['kernel'])
        if text not in seen:
            seen.append(text)
    return seen


def main():
    results = load()
    if not results:
        print('no results in %s: run `make bench` first' % RESULTS, file=sys.stderr)
        return 2
    for old in glob.glob(os.path.join(RESULTS, '*.png')):
        os.unlink(old)
    images = [draw(key, entries) for key, entries in sorted(plots(results).items())]
    when = sorted(r['when'] for r in results)
    lines = ['# Benchmark results', '',
             'Written by `make bench` (bench/report.py) from the JSON files beside this page, measured %s to %s '
             'on: %s. What each benchmark does and how to read it: [bench/README.md](../README.md).' % (
                 when[0], when[-1], '; '.join(machines(results))), '']
    lines += table(results) + ['']
    lines += ['![%s](%s)' % (image, image) for image in images]
    with open(os.path.join(RESULTS, 'README.md'), 'w') as out:
        out.write('\n'.join(lines) + '\n')
    print('report: bench/results/README.md, %d plots' % len(images))
    return 0


if __name__ == '__main__':
    sys.exit(main())
