'use strict'
// The contenders chart (bench/results/contenders.svg), hand-written SVG: one panel per figure of
// the contenders' summary (lib/contenders-summary.js), a bar per system on a logarithmic scale of
// its own, each labelled with its value and its ratio to ours, and the panel's target with whether
// this run met it.

const { COLORS, esc } = require('./svg')
const { SYSTEMS } = require('./contenders-summary')

const COLOR = { ...COLORS, 'sqlite-group': '#81c784' }
const NAME = { ours: 'ours', sqlite: 'sqlite', 'sqlite-group': 'sqlite group', lmdb: 'lmdb', floor: 'floor' }

const fmtRatio = (r) => (r >= 100 ? r.toFixed(0) : r >= 10 ? r.toFixed(1) : r.toFixed(2))

/** summary: lib/contenders-summary.js summarize()'s rows. */
function drawContenders(summary, { quick = false, machine = {} } = {}) {
  const W = 900
  const left = 24
  const barX = 140
  const barW = 440
  const rowH = 19
  const out = []
  let y = 64
  const body = []
  for (const row of summary) {
    const systems = SYSTEMS.filter((s) => row.values[s] != null)
    const vals = systems.map((s) => row.values[s])
    const lo = Math.log10(Math.min(...vals) / 3)
    const hi = Math.log10(Math.max(...vals) * 1.1)
    const len = (v) => Math.max(2, ((Math.log10(v) - lo) / Math.max(1e-9, hi - lo)) * barW)
    const verdict = row.target ? `target: ${row.target}${row.met === null ? '' : row.met ? ' — met' : ' — missed'}` : ''
    const better = row.better === 'higher' ? 'higher is better' : 'lower is better'
    body.push(`<text x="${left}" y="${y}" font-weight="bold" fill="#222">${esc(row.label)}</text>`)
    body.push(`<text x="${W - 24}" y="${y}" text-anchor="end" fill="${row.met === false ? '#c62828' : row.met ? '#2e7d32' : '#777'}">${esc(verdict)}</text>`)
    y += 8
    for (const s of systems) {
      const v = row.values[s]
      const ratio = s === 'ours' ? '' : `  (${fmtRatio(v / row.values.ours)}× ours)`
      body.push(`<text x="${barX - 8}" y="${y + 13}" text-anchor="end" fill="#333">${esc(NAME[s])}</text>`)
      body.push(`<rect x="${barX}" y="${y + 2}" width="${len(v).toFixed(1)}" height="${rowH - 6}" fill="${COLOR[s] || '#555'}"${s === 'ours' ? '' : ' fill-opacity="0.85"'}><title>${esc(`${s}: ${row.text[s]}`)}</title></rect>`)
      body.push(`<text x="${(barX + len(v) + 6).toFixed(1)}" y="${y + 13}" fill="#222">${esc(row.text[s] + ratio)}</text>`)
      y += rowH
    }
    body.push(`<text x="${barX}" y="${y + 10}" fill="#999" font-size="10">${esc(`logarithmic; ${better}`)}</text>`)
    y += 34
  }
  const H = y + 10
  out.push(`<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="Helvetica, Arial, sans-serif" font-size="12">`)
  out.push(`<rect width="${W}" height="${H}" fill="#ffffff"/>`)
  out.push(`<text x="${left}" y="26" font-size="16" font-weight="bold">Ours against SQLite, LMDB and the floor</text>`)
  const foot = [machine.cpu && `${machine.cpu}, ${machine.cores} cores`, machine.node && `Node ${machine.node}`, machine.tmpFs].filter(Boolean).join(' · ')
  out.push(`<text x="${left}" y="46" fill="#555">${esc(`medians of one run, every system in the same run${quick ? ' (BENCH_QUICK run)' : ''}; ${foot}`)}</text>`)
  out.push(...body)
  out.push('</svg>')
  return out.join('\n') + '\n'
}

module.exports = { drawContenders }
