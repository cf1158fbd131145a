'use strict'
// The contenders' summary (issue 21): one row per figure where SQLite, LMDB and the floor are
// compared with ours, each with its target and whether this run met it. run.js prints it under the
// table and writes it into latest.json (`contenders`); lib/contenders-svg.js draws it.

/** The columns, in order. */
const SYSTEMS = ['ours', 'sqlite', 'sqlite-group', 'lmdb', 'floor']

const fmtMs = (v) => (v >= 1000 ? `${(v / 1000).toFixed(2)} s` : v >= 100 ? `${v.toFixed(0)} ms` : v >= 10 ? `${v.toFixed(1)} ms` : `${v.toFixed(2)} ms`)
const fmtRate = (v) => `${Math.round(v).toLocaleString('en-US')}/s`
const fmtUs = (v) => `${Math.round(v).toLocaleString('en-US')} µs`
const fmtKiB = (v) => `${(v / 1024).toFixed(1)} KiB`
const fmtTimes = (v) => `${v.toFixed(1)}×`

/** Where each figure comes from: a group (workload, variant test) and a number from a system's row. */
function figureRows(sizeKeys) {
  const median = (key) => (row) => row.median && row.median[key]
  const p99 = (row) => row.p99 && row.p99.wallMs
  const rows = [
    {
      id: 'W1-10MB-cold',
      label: 'W1 cold restore, 10 MB: wall',
      workload: 'W1',
      variant: (v) => v === '10MB cold',
      value: median('wallMs'),
      fmt: fmtMs,
      better: 'lower',
    },
    {
      id: 'W1-10MB-cold-stall',
      label: 'W1 cold restore, 10 MB: main-thread stall',
      workload: 'W1',
      variant: (v) => v === '10MB cold',
      value: median('stallMs'),
      fmt: fmtMs,
      better: 'lower',
    },
  ]
  for (const size of sizeKeys) {
    rows.push(
      { id: `W2-${size}-median`, label: `W2 durable append, ${size}: median`, workload: 'W2', variant: (v) => v === size, value: median('wallMs'), fmt: fmtMs, better: 'lower' },
      { id: `W2-${size}-p99`, label: `W2 durable append, ${size}: p99`, workload: 'W2', variant: (v) => v === size, value: p99, fmt: fmtMs, better: 'lower' },
    )
  }
  rows.push(
    { id: 'W6', label: 'W6 100 sessions × 20 durable appends at once', workload: 'W6', value: median('opsPerSec'), fmt: fmtRate, better: 'higher' },
    { id: 'W7', label: 'W7 create small sessions durably, per session', workload: 'W7', value: median('usPerSession'), fmt: fmtUs, better: 'lower' },
    { id: 'W7-disk-closed', label: 'W7 disk per small session, store closed', workload: 'W7', value: median('diskClosedPerSession'), fmt: fmtKiB, better: 'lower' },
    { id: 'W7-disk-open', label: 'W7 disk per small session, store open', workload: 'W7', value: median('diskOpenPerSession'), fmt: fmtKiB, better: 'lower' },
    { id: 'W8-10000', label: 'W8 list() of 10,000 sessions', workload: 'W8', variant: (v) => v.startsWith('10,000 '), value: median('wallMs'), fmt: fmtMs, better: 'lower' },
    { id: 'W8-100000', label: 'W8 list() of 100,000 sessions', workload: 'W8', variant: (v) => v.startsWith('100,000 '), value: median('wallMs'), fmt: fmtMs, better: 'lower' },
    { id: 'W9', label: 'W9 memory per loaded small session, × its JSON', workload: 'W9', value: median('timesJson'), fmt: fmtTimes, better: 'lower' },
    { id: 'W10', label: "W10 README's first merge(), 10 MB: main-thread busy", workload: 'W10', value: median('busyMs'), fmt: fmtMs, better: 'lower' },
  )
  return rows
}

/**
 * Targets of issue 21, by row id: what it says, the systems it compares ours with (`needs`), and
 * the test on the row's values by system.
 */
const TARGETS = {
  'W1-10MB-cold': { text: 'ahead of SQLite and LMDB', needs: ['sqlite', 'lmdb'], test: (v) => v.ours < Math.min(v.sqlite, v.lmdb) },
  'W1-10MB-cold-stall': { text: 'under 1 ms', needs: [], test: (v) => v.ours < 1 },
  W6: { text: '≥ SQLite group commit and LMDB', needs: ['sqlite-group', 'lmdb'], test: (v) => v.ours >= Math.max(v['sqlite-group'], v.lmdb) },
  W7: { text: '≤ LMDB', needs: ['lmdb'], test: (v) => v.ours <= v.lmdb },
  'W7-disk-closed': { text: '≤ SQLite (the smaller)', needs: ['sqlite'], test: (v) => v.ours <= Math.min(v.sqlite, v['sqlite-group'] ?? Infinity) },
  'W7-disk-open': { text: '≤ SQLite (the smaller)', needs: ['sqlite'], test: (v) => v.ours <= Math.min(v.sqlite, v['sqlite-group'] ?? Infinity) },
  'W8-10000': { text: '≤ SQLite', needs: ['sqlite'], test: (v) => v.ours <= v.sqlite },
  W9: { text: '≤ 4× its JSON', needs: [], test: (v) => v.ours <= 4 },
  W10: { text: 'under 1 ms', needs: [], test: (v) => v.ours < 1 },
}
for (const size of ['10KB', '1MB', '10MB']) {
  TARGETS[`W2-${size}-median`] = { text: '≤ 1.5× the floor', needs: ['floor'], test: (v) => v.ours <= 1.5 * v.floor }
  TARGETS[`W2-${size}-p99`] = { text: '≤ 3× the floor', needs: ['floor'], test: (v) => v.ours <= 3 * v.floor }
}

/**
 * The summary of a run's groups: [{ id, label, values: { system: number }, text: { system: string },
 * better, target, met }] for the rows that have ours; `met` is null when a value it needs is missing.
 */
function summarize(groups, sizeKeys) {
  const out = []
  for (const row of figureRows(sizeKeys)) {
    const group = groups.find((g) => g.workload === row.workload && (!row.variant || row.variant(g.variant)))
    if (!group) continue
    const values = {}
    const text = {}
    for (const r of group.rows) {
      if (!SYSTEMS.includes(r.system) || r.error) continue
      const v = row.value(r)
      if (typeof v !== 'number' || !Number.isFinite(v)) continue
      values[r.system] = v
      text[r.system] = row.fmt(v)
    }
    if (values.ours == null) continue
    const target = TARGETS[row.id]
    const met = target && target.needs.every((s) => values[s] != null) ? target.test(values) : null
    out.push({ id: row.id, label: row.label, variant: group.variant, better: row.better, values, text, target: target ? target.text : null, met })
  }
  return out
}

/** The summary as text, a line per row, systems as columns. */
function summaryTable(summary) {
  const widths = [50, 11, 11, 13, 11, 11, 26]
  const pad = (cells) => cells.map((c, i) => (i === 0 || i === cells.length - 1 ? String(c).padEnd(widths[i]) : String(c).padStart(widths[i]))).join('  ')
  const lines = [pad(['figure', ...SYSTEMS, 'target (ours)'])]
  for (const row of summary) {
    const verdict = row.target ? `${row.target}: ${row.met === null ? 'no figure' : row.met ? 'met' : 'MISSED'}` : ''
    lines.push(pad([row.label, ...SYSTEMS.map((s) => row.text[s] || '—'), verdict]))
  }
  return lines.join('\n')
}

module.exports = { SYSTEMS, summarize, summaryTable }
