'use strict'
// The W2 chart, as hand-written SVG: median wall time of "append one entry, then persist" against
// session size, both axes logarithmic, one line per system; the Redis systems dashed, the floor
// dotted. Where a system has a p99 (the durable appends of issue 21), a hollow mark above its point
// shows it, joined to the median by a thin line.

const COLORS = {
  ours: '#1565c0',
  naive: '#c62828',
  atomic: '#ef6c00',
  'ours-redis': '#00897b',
  ioredis: '#7b1fa2',
  sqlite: '#2e7d32',
  lmdb: '#6d4c41',
  floor: '#424242',
}
const NAMES = {
  ours: 'ours (mia-narrative-session), files',
  naive: 'naive: JSON + fs writeFile',
  atomic: 'atomic: write-file-atomic + JSON',
  'ours-redis': 'ours-redis: the store on Redis',
  ioredis: 'ioredis: SET of the whole JSON',
  sqlite: 'sqlite: better-sqlite3, WAL, FULL',
  lmdb: 'lmdb: lmdb-js, durable commits',
  floor: 'floor: append + fdatasync',
}
const DASH = { 'ours-redis': '7 4', ioredis: '7 4', floor: '2 3' }
/** The systems W2 runs enough times for a p99 (run.js W2_P99). */
const P99_SYSTEMS = new Set(['ours', 'sqlite', 'lmdb', 'floor'])
const ORDER = ['ours', 'floor', 'sqlite', 'lmdb', 'naive', 'atomic', 'ours-redis', 'ioredis']

const esc = (s) => String(s).replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;')

function fmtMs(v) {
  if (v >= 1000) return `${(v / 1000).toPrecision(3)} s`
  if (v >= 100) return `${v.toFixed(0)} ms`
  if (v >= 10) return `${v.toFixed(1)} ms`
  if (v >= 0.1 || v === 0) return `${v.toFixed(2)} ms`
  return `${v.toPrecision(2)} ms`
}

function fmtSize(bytes) {
  if (bytes >= 1e6) return `${+(bytes / 1e6).toPrecision(3)} MB`
  if (bytes >= 1e3) return `${+(bytes / 1e3).toPrecision(3)} KB`
  return `${bytes} B`
}

/**
 * points: [{ bytes, label, rows: [{ system, median: { wallMs }, error }] }], one per session size.
 */
function drawW2(points, { quick = false, machine = {} } = {}) {
  const W = 1000
  const H = 480
  // The legend has a column of its own, right of the plot.
  const m = { left: 78, right: 300, top: 64, bottom: 78 }
  const pw = W - m.left - m.right
  const ph = H - m.top - m.bottom

  const series = {}
  for (const p of points) {
    for (const r of p.rows) {
      if (r.error || !r.median || !(r.median.wallMs > 0)) continue
      const p99 = P99_SYSTEMS.has(r.system) && r.p99 && r.p99.wallMs > 0 ? r.p99.wallMs : null
      ;(series[r.system] ||= []).push({ x: p.bytes, y: r.median.wallMs, p99, label: p.label })
    }
  }
  const xs = points.map((p) => p.bytes)
  const ys = Object.values(series)
    .flat()
    .flatMap((p) => (p.p99 ? [p.y, p.p99] : [p.y]))
  if (!xs.length || !ys.length) return `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="80"><text x="10" y="40">no W2 data</text></svg>\n`
  const x0 = Math.log10(Math.min(...xs)) - 0.35
  const x1 = Math.log10(Math.max(...xs)) + 0.35
  const y0 = Math.floor(Math.log10(Math.min(...ys)))
  const y1 = Math.ceil(Math.log10(Math.max(...ys)))
  const sx = (v) => m.left + ((Math.log10(v) - x0) / (x1 - x0)) * pw
  const sy = (v) => m.top + ph - ((Math.log10(v) - y0) / Math.max(1, y1 - y0)) * ph

  const out = []
  out.push(`<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="Helvetica, Arial, sans-serif" font-size="12">`)
  out.push(`<rect width="${W}" height="${H}" fill="#ffffff"/>`)
  out.push(`<text x="${m.left}" y="26" font-size="16" font-weight="bold">W2: append one conversation entry, then persist</text>`)
  const sub = `median wall time per save (hollow marks: p99) against session size, both axes logarithmic${quick ? ' (BENCH_QUICK run)' : ''}`
  out.push(`<text x="${m.left}" y="46" fill="#555">${esc(sub)}</text>`)

  // Grid: decades of time (labelled) with minor ticks; decades of size (light, unlabelled).
  for (let e = y0; e <= y1; e++) {
    const y = sy(10 ** e)
    out.push(`<line x1="${m.left}" y1="${y.toFixed(1)}" x2="${m.left + pw}" y2="${y.toFixed(1)}" stroke="#ddd"/>`)
    out.push(`<text x="${m.left - 8}" y="${(y + 4).toFixed(1)}" text-anchor="end" fill="#333">${esc(e >= 3 ? `${10 ** (e - 3)} s` : `${e >= 0 ? 10 ** e : (10 ** e).toFixed(-e)} ms`)}</text>`)
    if (e < y1) {
      for (let k = 2; k < 10; k++) {
        const yy = sy(k * 10 ** e)
        out.push(`<line x1="${m.left}" y1="${yy.toFixed(1)}" x2="${m.left + 5}" y2="${yy.toFixed(1)}" stroke="#999"/>`)
      }
    }
  }
  for (let e = Math.ceil(x0); e <= Math.floor(x1); e++) {
    const x = sx(10 ** e)
    out.push(`<line x1="${x.toFixed(1)}" y1="${m.top}" x2="${x.toFixed(1)}" y2="${m.top + ph}" stroke="#f0f0f0"/>`)
  }
  // The measured sizes on the x axis.
  for (const p of points) {
    const x = sx(p.bytes)
    out.push(`<line x1="${x.toFixed(1)}" y1="${m.top + ph}" x2="${x.toFixed(1)}" y2="${m.top + ph + 6}" stroke="#333"/>`)
    out.push(`<text x="${x.toFixed(1)}" y="${m.top + ph + 20}" text-anchor="middle" fill="#222" font-weight="bold">${esc(p.label)}</text>`)
    out.push(`<text x="${x.toFixed(1)}" y="${m.top + ph + 34}" text-anchor="middle" fill="#777" font-size="10">${esc(`${fmtSize(p.bytes)} of JSON`)}</text>`)
  }
  out.push(`<rect x="${m.left}" y="${m.top}" width="${pw}" height="${ph}" fill="none" stroke="#333"/>`)
  out.push(`<text x="${m.left + pw / 2}" y="${H - 14}" text-anchor="middle" fill="#333">session size</text>`)
  out.push(`<text transform="translate(20 ${m.top + ph / 2}) rotate(-90)" text-anchor="middle" fill="#333">median wall time per save</text>`)

  // Lines and points.
  const names = [...ORDER, ...Object.keys(series).filter((s) => !COLORS[s])].filter((n) => series[n])
  for (const name of [...names].reverse()) {
    const pts = series[name].sort((a, b) => a.x - b.x)
    const color = COLORS[name] || '#555'
    const dash = DASH[name] ? ` stroke-dasharray="${DASH[name]}"` : ''
    out.push(`<polyline fill="none" stroke="${color}" stroke-width="2.5"${dash} points="${pts.map((p) => `${sx(p.x).toFixed(1)},${sy(p.y).toFixed(1)}`).join(' ')}"/>`)
    for (const p of pts) {
      out.push(`<circle cx="${sx(p.x).toFixed(1)}" cy="${sy(p.y).toFixed(1)}" r="4" fill="${color}"><title>${esc(`${name}, ${p.label}: ${fmtMs(p.y)}`)}</title></circle>`)
      if (p.p99) {
        const [x, y] = [sx(p.x), sy(p.p99)]
        out.push(`<line x1="${x.toFixed(1)}" y1="${sy(p.y).toFixed(1)}" x2="${x.toFixed(1)}" y2="${y.toFixed(1)}" stroke="${color}" stroke-width="1"/>`)
        out.push(`<circle cx="${x.toFixed(1)}" cy="${y.toFixed(1)}" r="3.5" fill="#fff" stroke="${color}" stroke-width="1.5"><title>${esc(`${name}, ${p.label}: p99 ${fmtMs(p.p99)}`)}</title></circle>`)
      }
    }
  }
  // Value labels right of each point, pushed apart where they would overlap.
  for (const p of points) {
    const labels = names
      .map((name) => ({ name, pt: series[name].find((q) => q.x === p.bytes) }))
      .filter((l) => l.pt)
      .map((l) => ({ ...l, y: sy(l.pt.y) + 4 }))
      .sort((a, b) => a.y - b.y)
    for (let i = 1; i < labels.length; i++) labels[i].y = Math.max(labels[i].y, labels[i - 1].y + 13)
    for (const l of labels) {
      out.push(`<text x="${(sx(p.bytes) + 8).toFixed(1)}" y="${l.y.toFixed(1)}" fill="${COLORS[l.name] || '#555'}" font-size="11" stroke="#fff" stroke-width="3" paint-order="stroke">${esc(fmtMs(l.pt.y))}</text>`)
    }
  }

  // Legend, right of the plot.
  const lx = m.left + pw + 34
  let ly = m.top + 18
  out.push(`<rect x="${lx - 8}" y="${ly - 12}" width="262" height="${names.length * 20 + 6}" fill="#fff" fill-opacity="0.9" stroke="#ccc"/>`)
  for (const name of names) {
    const color = COLORS[name] || '#555'
    out.push(`<line x1="${lx}" y1="${ly}" x2="${lx + 22}" y2="${ly}" stroke="${color}" stroke-width="2.5"${DASH[name] ? ` stroke-dasharray="${DASH[name]}"` : ''}/><circle cx="${lx + 11}" cy="${ly}" r="4" fill="${color}"/>`)
    out.push(`<text x="${lx + 30}" y="${ly + 4}" fill="#222">${esc(NAMES[name] || name)}</text>`)
    ly += 20
  }
  const foot = [machine.cpu && `${machine.cpu}, ${machine.cores} cores`, machine.node && `Node ${machine.node}`, machine.tmpFs].filter(Boolean).join(' · ')
  out.push(`<text x="${W - 16}" y="${H - 14}" text-anchor="end" fill="#888" font-size="10">${esc(foot)}</text>`)
  out.push('</svg>')
  return out.join('\n') + '\n'
}

module.exports = { drawW2, COLORS, NAMES, esc }
