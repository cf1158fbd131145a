'use strict'
// The commands that keep a store in shape: gc (the TTL sweep) and doctor (check and repair).

const { table, bytes, age, when, oneLine } = require('./format')
const { startProgress } = require('./progress')
const { INTERRUPTED, watchInterrupt } = require('./interrupt')
const { withStore } = require('./views')

/** Exit code of a doctor that found damage it did not repair. */
const DAMAGE_LEFT = 3

async function gc(context, options) {
  const { io } = context
  const ttl = { ttlDays: options.ttlDays }
  const redis = context.where.kind === 'redis'
  const interrupt = watchInterrupt(io.err)
  let removed = []
  let expired = []
  try {
    await withStore(context, async (store) => {
      expired = await store.expiredSessions(ttl)
      if (options.dryRun) return
      const progress = startProgress('gc', expired.length, { enabled: context.progress })
      try {
        for (const s of expired) {
          if (interrupt.stopped()) break
          if (await store.removeIfExpired(s.userId, s.workspaceId, ttl)) removed.push(s)
          progress.increment()
        }
      } finally {
        progress.stop()
      }
    })
  } finally {
    interrupt.dispose()
  }
  const brief = ({ userId, workspaceId, bytes: size, updatedAt }) => ({ userId, workspaceId, bytes: size, updatedAt })
  if (options.json) {
    const report = options.dryRun
      ? { dryRun: true, ttlDays: options.ttlDays, wouldRemove: expired.map(brief) }
      : { dryRun: false, ttlDays: options.ttlDays, removed: removed.map(brief), kept: expired.length - removed.length }
    io.out.write(`${JSON.stringify(report, null, 2)}\n`)
  } else {
    const shown = options.dryRun ? expired : removed
    if (shown.length > 0) {
      io.out.write(
        `${table(['USER', 'WORKSPACE', 'SIZE', 'UPDATED', 'AGE'], shown.map((s) => [oneLine(s.userId, 32), oneLine(s.workspaceId, 48), bytes(s.bytes), when(s.updatedAt), age(s.updatedAt)]))}\n`,
      )
    }
    const which = redis ? `not updated for ${options.ttlDays} day(s) and without an expiry (Redis expires the others itself)` : `not updated for ${options.ttlDays} day(s)`
    io.out.write(
      options.dryRun
        ? `would remove ${expired.length} session(s) ${which}\n`
        : `removed ${removed.length} session(s) ${which}` +
            (expired.length > removed.length && !interrupt.stopped() ? `; ${expired.length - removed.length} kept (written meanwhile)` : '') +
            '\n',
    )
  }
  if (interrupt.stopped()) {
    io.err.write(`mia-sessions: gc interrupted after removing ${removed.length} of ${expired.length}\n`)
    return INTERRUPTED
  }
  return 0
}

async function doctor(context, options) {
  const { io } = context
  const interrupt = watchInterrupt(io.err)
  let report
  const repairs = []
  try {
    await withStore(context, async (store) => {
      let progress
      report = await store.check(({ done, total }) => {
        progress ??= startProgress('check', total, { enabled: context.progress })
        progress.update(done)
      })
      progress?.stop()
      if (!options.json) printCheck(io.out, report)
      const repairable = report.damaged.filter((d) => d.repairable)
      if (!options.repair || repairable.length === 0) return
      if (!options.json) io.out.write(`\nrepairing ${repairable.length} session(s):\n`)
      const bar = startProgress('repair', repairable.length, { enabled: context.progress })
      try {
        for (const damaged of repairable) {
          if (interrupt.stopped()) break
          const outcome = await store.repair(damaged.userId, damaged.workspaceId)
          repairs.push({ stem: damaged.stem, userId: damaged.userId, workspaceId: damaged.workspaceId, ...outcome })
          bar.increment()
        }
      } finally {
        bar.stop()
      }
      if (!options.json) {
        for (const r of repairs) {
          io.out.write(`  ${r.userId}  ${r.workspaceId}\n`)
          for (const action of r.actions) io.out.write(`    ${action}\n`)
        }
      }
    })
  } finally {
    interrupt.dispose()
  }
  if (options.json) io.out.write(`${JSON.stringify({ ...report, repairs }, null, 2)}\n`)
  if (interrupt.stopped()) {
    io.err.write(`mia-sessions: doctor interrupted after repairing ${repairs.length} session(s)\n`)
    return INTERRUPTED
  }
  const left = report.damaged.length - repairs.filter((r) => r.restored).length
  if (!options.json && options.repair) io.out.write(left === 0 ? 'every damaged session repaired\n' : `${left} session(s) could not be repaired\n`)
  return left > 0 ? DAMAGE_LEFT : 0
}

function printCheck(out, report) {
  const lines = [`checked ${report.sessions} session(s): ${report.damaged.length === 0 ? 'no damage found' : `${report.damaged.length} need(s) repair`}`]
  for (const d of report.damaged) {
    lines.push('', `${d.userId ?? '(unknown user)'}  ${d.workspaceId ?? '(unknown workspace)'}  (files ${d.stem}.*)`)
    for (const problem of d.problems) lines.push(`  problem: ${problem}`)
    for (const step of d.repair) lines.push(`  --repair would: ${step}`)
  }
  if (report.quarantined.length > 0) {
    lines.push('', `copies kept aside (${report.quarantined.length}; never deleted, doctor --repair takes what they hold that a session lacks):`)
    lines.push(table(['NAME', 'KIND', 'SIZE', 'MOVED'], report.quarantined.map((q) => [q.name, q.kind, bytes(q.bytes), q.movedAt ? when(new Date(q.movedAt).toISOString()) : ''])))
  }
  if (report.tempFiles.length > 0) {
    lines.push('', `leftover temp files of interrupted writes: ${report.tempFiles.length} (the TTL sweep removes those older than an hour)`)
  }
  out.write(`${lines.join('\n')}\n`)
}

module.exports = { gc, doctor }
