'use strict'
// End-to-end: the reference server (server/index.js) and its web client in Debian's Chromium, driven
// by playwright-core. A session survives closing the page, two pages converge, and the page rides out
// dropped sockets and a server restart by itself.
//
// Needs /usr/bin/chromium (apt-get install chromium); set CHROMIUM_PATH to use another binary.

const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')
const { chromium } = require('playwright-core')
const { NarrativeSessionStore } = require('..')
const { createServer } = require('../server')

const CHROMIUM = process.env.CHROMIUM_PATH || '/usr/bin/chromium'
const ARTIFACTS = path.join(__dirname, 'artifacts')
const WORKSPACE = '/demo/browser-test'
const USER = os.userInfo().username
const STEP = 15000 // how long one expectation may take to show up in the page

jest.setTimeout(90000)

let tmp
let running
let browser
let context
const pageErrors = []

async function openPage(workspace = WORKSPACE) {
  const page = await context.newPage()
  page.setDefaultTimeout(STEP)
  page.on('pageerror', (err) => pageErrors.push(`${page.url()}: ${err.message}`))
  page.on('console', (msg) => {
    // A refused socket while the server is down is expected; Chromium logs it as an error.
    if (msg.type() === 'error' && !/WebSocket connection to .* failed/.test(msg.text())) pageErrors.push(`${page.url()}: console: ${msg.text()}`)
  })
  await page.goto(`${running.url}?workspace=${encodeURIComponent(workspace)}`)
  await waitConnected(page)
  return page
}

const byTestId = (page, id) => page.locator(`[data-testid="${id}"]`)

async function waitConnected(page) {
  await page.waitForSelector('[data-testid="connection-status"][data-state="connected"]')
}

async function expectText(locator, text) {
  await locator.filter({ hasText: text }).first().waitFor({ state: 'visible' })
}

async function focusedUniverses(page) {
  return page.$$eval('[data-universe]', (els) =>
    els.filter((e) => e.dataset.focused === 'true').map((e) => e.dataset.universe),
  )
}

async function waitFocus(page, focus) {
  const want = focus === 'all' ? ['engineer', 'ceremony', 'story'] : [focus]
  await page.waitForFunction(
    (w) => {
      const got = [...document.querySelectorAll('[data-universe]')]
        .filter((e) => e.dataset.focused === 'true')
        .map((e) => e.dataset.universe)
      return JSON.stringify(got) === JSON.stringify(w)
    },
    want,
    { timeout: STEP },
  )
  expect(await page.locator('#focus-select').inputValue()).toBe(focus)
}

async function addBeat(page, description, type = 'custom') {
  await page.bringToFront()
  await page.selectOption('#beat-type', type)
  await page.fill('#beat-description', description)
  await page.click('[data-testid="beat-submit"]')
  await expectText(byTestId(page, 'beat'), description)
}

async function addChart(page, { title, desired, reality, firstAction }) {
  await page.bringToFront()
  const details = page.locator('#new-chart')
  if (!(await details.evaluate((d) => d.open))) await page.click('#new-chart > summary')
  await page.fill('#chart-title', title)
  await page.fill('#chart-desired', desired)
  await page.fill('#chart-reality', reality)
  await page.fill('#chart-first-action', firstAction)
  await page.click('[data-testid="chart-submit"]')
  const chart = byTestId(page, 'chart').filter({ hasText: title })
  await chart.waitFor({ state: 'visible' })
  return chart
}

async function addAction(chart, title) {
  await chart.page().bringToFront()
  await chart.locator('[data-testid="add-action-input"]').fill(title)
  await chart.locator('[data-testid="add-action-submit"]').click()
  await expectText(chart.locator('[data-testid="action"]'), title)
}

async function waitPending(page, none = true) {
  await page.waitForFunction((n) => document.getElementById('pending-count').hidden === n, none, { timeout: STEP })
}

async function screenshot(page, name) {
  fs.mkdirSync(ARTIFACTS, { recursive: true })
  await page.evaluate(() => window.scrollTo(0, 0))
  await page.screenshot({ path: path.join(ARTIFACTS, name), fullPage: true })
}

beforeAll(async () => {
  if (!fs.existsSync(CHROMIUM)) {
    throw new Error(`${CHROMIUM} not found: apt-get install -y --no-install-recommends chromium`)
  }
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'mia-browser-'))
  running = await createServer({ dataDir: tmp, port: 0 })
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
      // Two pages are open at once: keep the one in the background from being throttled to ~1 fps.
      '--disable-renderer-backgrounding',
      '--disable-background-timer-throttling',
      '--disable-backgrounding-occluded-windows',
    ],
  })
  context = await browser.newContext({ viewport: { width: 1280, height: 900 } })
})

afterAll(async () => {
  if (browser) await browser.close().catch(() => {})
  if (running) await running.close().catch(() => {})
  if (tmp) fs.rmSync(tmp, { recursive: true, force: true })
})

afterEach(() => {
  // Script errors in the page fail the test that caused them.
  const errors = pageErrors.splice(0)
  expect(errors).toEqual([])
})

describe('narrative session web client', () => {
  test('serves only the client files', async () => {
    const get = (p) => fetch(new URL(p, running.url)).then((r) => [r.status, r.headers.get('content-type')])
    expect(await get('/')).toEqual([200, 'text/html; charset=utf-8'])
    expect(await get('/app.js')).toEqual([200, 'text/javascript; charset=utf-8'])
    expect(await get('/style.css')).toEqual([200, 'text/css; charset=utf-8'])
    expect((await get('/%2e%2e/package.json'))[0]).toBe(404)
    expect((await get('/server/index.js'))[0]).toBe(404)
    expect((await get('/nope'))[0]).toBe(404)

    // Upgrades: only /api/ws/narrative, and not from a page on another site.
    const WebSocket = require('ws')
    const base = running.url.replace(/^http/, 'ws')
    const outcome = (url, opts) =>
      new Promise((resolve) => {
        const ws = new WebSocket(url, opts)
        ws.on('message', (d) => {
          resolve(`message ${JSON.parse(d).payload.event}`)
          ws.close()
        })
        ws.on('unexpected-response', (_req, res) => {
          resolve(`http ${res.statusCode}`)
          ws.terminate()
        })
        ws.on('error', (err) => resolve(`error ${err.message}`))
      })
    expect(await outcome(`${base}api/ws/other`)).toMatch(/^error/)
    expect(await outcome(`${base}api/ws/narrative?workspace=/x`, { origin: 'http://evil.example' })).toBe('http 403')
    expect(await outcome(`${base}api/ws/narrative?workspace=/x`, { origin: running.url.slice(0, -1) })).toBe('message restored')
  })

  test('a new session: change the focus, add a beat, a chart and a conversation entry', async () => {
    const page = await openPage()
    const notice = byTestId(page, 'restore-notice')
    await expect(notice.textContent()).resolves.toContain('New narrative session')
    expect(await notice.getAttribute('data-created')).toBe('true')
    expect(await page.textContent('[data-testid="workspace-id"]')).toBe(WORKSPACE)

    await page.selectOption('#focus-select', 'ceremony')
    await waitFocus(page, 'ceremony')

    await addBeat(page, 'Kick-off: sessions should survive reconnects', 'review')
    const chart = await addChart(page, {
      title: 'Sessions survive reconnects',
      desired: 'Reopening the page resumes the narrative where it was',
      reality: 'Everything is lost when the socket drops',
      firstAction: 'Persist the session on disconnect',
    })
    await expectText(chart.locator('[data-testid="chart-progress"]'), '0/1 actions')
    expect(await chart.locator('[data-testid="chart-progress-bar"]').getAttribute('data-level')).toBe('low')

    await page.selectOption('#conversation-role', 'user')
    await page.fill('#conversation-content', 'Where were we?')
    await page.click('[data-testid="conversation-submit"]')
    await expectText(byTestId(page, 'conversation-entry'), 'Where were we?')
    await waitPending(page)

    // The server holds it.
    const { session } = await running.store.load(USER, WORKSPACE)
    expect(session.universeFocus).toBe('ceremony')
    expect(session.storyBeats.map((b) => b.description)).toContain('Kick-off: sessions should survive reconnects')
    expect(session.activeCharts).toHaveLength(1)
    await page.close()
  })

  test('a new page restores the session: focus, beats, chart', async () => {
    const page = await openPage()
    const notice = byTestId(page, 'restore-notice')
    await expect(notice.textContent()).resolves.toContain('Restored your narrative session')
    expect(await notice.getAttribute('data-created')).toBe('false')
    await waitFocus(page, 'ceremony')
    expect(await focusedUniverses(page)).toEqual(['ceremony'])
    await expectText(byTestId(page, 'beat'), 'Kick-off: sessions should survive reconnects')
    expect(await byTestId(page, 'beat').first().getAttribute('data-type')).toBe('review')
    await expectText(byTestId(page, 'chart'), 'Sessions survive reconnects')
    await expectText(byTestId(page, 'conversation-entry'), 'Where were we?')

    // Another workspace is another session.
    const other = await openPage('/demo/elsewhere')
    await expect(byTestId(other, 'restore-notice').textContent()).resolves.toContain('New narrative session')
    expect(await byTestId(other, 'beat').count()).toBe(0)
    await other.close()
    await page.close()
  })

  test('two pages: a change in one appears in the other, with the merge notice', async () => {
    const a = await openPage()
    const b = await openPage()
    await expect(byTestId(b, 'merge-notice').isHidden()).resolves.toBe(true)

    // A beat from page A shows up in page B.
    await addBeat(a, 'Second tab joined', 'analysis')
    await expectText(byTestId(b, 'beat'), 'Second tab joined')
    await expectText(byTestId(b, 'merge-notice'), 'Updated from another tab')

    // An action added in A is completed in B; A sees the progress.
    const chartA = byTestId(a, 'chart').filter({ hasText: 'Sessions survive reconnects' })
    await addAction(chartA, 'Restore it on connect')
    await addAction(chartA, 'Show the restored notice')
    const chartB = byTestId(b, 'chart').filter({ hasText: 'Sessions survive reconnects' })
    await expectText(chartB.locator('[data-testid="action"]'), 'Show the restored notice')
    await expectText(chartB.locator('[data-testid="chart-progress"]'), '0/3 actions')

    await b.bringToFront()
    await chartB.locator('[data-testid="action"]', { hasText: 'Persist the session on disconnect' }).locator('input').check()
    await expectText(chartA.locator('[data-testid="chart-progress"]'), '1/3 actions')
    await expectText(byTestId(a, 'merge-notice'), 'Updated from another tab')
    await a.waitForFunction(() => {
      const bar = document.querySelector('[data-testid="chart"] [data-testid="chart-progress-bar"]')
      return bar && bar.dataset.level === 'mid'
    })
    expect(
      await chartA
        .locator('[data-testid="action"]', { hasText: 'Persist the session on disconnect' })
        .getAttribute('data-completed'),
    ).toBe('true')

    // The focus follows too.
    await b.selectOption('#focus-select', 'all')
    await waitFocus(a, 'all')

    // The protocol's completion message, as the brief spells it, also lands.
    const { session } = await running.store.load(USER, WORKSPACE)
    const action = session.activeCharts[0].actions.find((x) => x.title === 'Persist the session on disconnect')
    expect(action.completed).toBe(true)
    expect(typeof action.completedAt).toBe('string')
    await a.close()
    await b.close()
  })

  test('two pages adding beats at the same time converge, and neither ever shows fewer beats', async () => {
    const a = await openPage()
    const b = await openPage()
    const before = await byTestId(a, 'beat').count()
    const N = 15
    const watch = (page) =>
      page.evaluate(() => {
        window.__beatCounts = []
        const list = document.getElementById('beats')
        new MutationObserver(() => window.__beatCounts.push(list.children.length)).observe(list, { childList: true })
      })
    await watch(a)
    await watch(b)
    const burst = (page, tag) =>
      page.evaluate(
        ({ tag, n }) => {
          const input = document.getElementById('beat-description')
          const form = document.getElementById('beat-form')
          for (let i = 0; i < n; i++) {
            input.value = `burst ${tag} ${i}`
            form.requestSubmit()
          }
        },
        { tag, n: N },
      )
    await Promise.all([burst(a, 'A'), burst(b, 'B')])
    for (const page of [a, b]) {
      await page.waitForFunction((want) => document.querySelectorAll('[data-testid="beat"]').length === want, before + 2 * N, {
        timeout: STEP,
      })
      await waitPending(page)
    }
    // Let the last events land, then both pages show what the server holds.
    await new Promise((r) => setTimeout(r, 300))
    const { session } = await running.store.load(USER, WORKSPACE)
    for (const page of [a, b]) {
      const shown = await page.$$eval('[data-testid="beat"]', (els) => els.map((e) => e.dataset.beatId).sort())
      expect(shown).toEqual(session.storyBeats.map((x) => x.id).sort())
      const counts = await page.evaluate(() => window.__beatCounts)
      const drops = counts.filter((c, i) => i > 0 && c < counts[i - 1])
      expect({ counts, drops }).toEqual(expect.objectContaining({ drops: [] }))
    }
    await a.close()
    await b.close()
  })

  test('a change written by another process shows up as such', async () => {
    const page = await openPage()
    const other = await NarrativeSessionStore.open({ dataDir: tmp, autosaveIntervalMs: 0, cleanupIntervalMs: 0 })
    try {
      await other.merge(USER, WORKSPACE, {
        storyBeats: [{ id: `b-ext-${Date.now()}`, description: 'Written by a CLI', type: 'commit' }],
      })
      await other.save(USER, WORKSPACE)
    } finally {
      await other.close()
    }
    await expectText(byTestId(page, 'beat'), 'Written by a CLI')
    await expectText(byTestId(page, 'merge-notice'), 'Updated by another process')
    await page.close()
  })

  test('dropped sockets: the page shows it is reconnecting and recovers by itself', async () => {
    const page = await openPage()
    await page.evaluate(() => {
      window.__states = []
      new MutationObserver(() => window.__states.push(document.body.dataset.connection)).observe(document.body, {
        attributes: true,
        attributeFilter: ['data-connection'],
      })
    })
    for (const ws of running.wss.clients) ws.terminate()
    await page.waitForFunction(() => window.__states.includes('reconnecting'))
    await waitConnected(page)
    await expect(byTestId(page, 'restore-notice').textContent()).resolves.toContain('Restored your narrative session')
    // Still works after the reconnect.
    await addBeat(page, 'Back after a dropped socket')
    await page.close()
  })

  test('server restart: "Reconnecting…" while down, changes made offline are sent after', async () => {
    const page = await openPage()
    const port = running.port
    await running.close()
    running = undefined

    const banner = byTestId(page, 'reconnecting')
    await banner.waitFor({ state: 'visible' })
    await expectText(banner, 'Reconnecting…')
    expect(await page.getAttribute('[data-testid="connection-status"]', 'data-state')).toBe('reconnecting')
    await screenshot(page, 'narrative-session-reconnecting.png')

    // A beat added while the server is down waits in the page ...
    await page.fill('#beat-description', 'Written while offline')
    await page.click('[data-testid="beat-submit"]')
    await waitPending(page, false)

    // ... and is sent when the server comes back on the same port and data dir.
    running = await createServer({ dataDir: tmp, port })
    await waitConnected(page)
    await banner.waitFor({ state: 'hidden' })
    await expectText(byTestId(page, 'restore-notice'), 'Restored your narrative session')
    await expectText(byTestId(page, 'beat'), 'Written while offline')
    await waitPending(page)
    const { session } = await running.store.load(USER, WORKSPACE)
    expect(session.storyBeats.map((x) => x.description)).toContain('Written while offline')
    await page.close()
  })

  test('screenshot of a lived-in session', async () => {
    const page = await openPage()
    await page.selectOption('#focus-select', 'story')
    await waitFocus(page, 'story')
    await page.locator('details.edit', { has: page.locator('#position-form') }).locator('summary').click()
    await page.fill('#position-arc-input', 'Persistence')
    await page.fill('#position-beat-input', '4')
    await page.fill('#position-phase-input', 'rising action')
    await page.click('#position-form button[type="submit"]')
    await expectText(byTestId(page, 'position-arc'), 'Persistence')
    await page.locator('details.edit', { has: page.locator('#position-form') }).locator('summary').click()

    const chart = await addChart(page, {
      title: 'A web client people can use',
      desired: 'Panels, charts and the timeline read at a glance',
      reality: 'A bare page that prints JSON',
      firstAction: 'Lay out the panels',
    })
    await addAction(chart, 'Colour the progress bars')
    await chart.locator('[data-testid="action"]', { hasText: 'Lay out the panels' }).locator('input').check()
    await expectText(chart.locator('[data-testid="chart-progress"]'), '1/2 actions')
    await chart.locator('[data-testid="action"]', { hasText: 'Colour the progress bars' }).locator('input').check()
    await expectText(chart.locator('[data-testid="chart-progress"]'), '2/2 actions')
    expect(await chart.locator('[data-testid="chart-progress-bar"]').getAttribute('data-level')).toBe('done')

    await page.selectOption('#conversation-role', 'assistant')
    await page.fill('#conversation-content', 'We were persisting sessions; the restore notice is next.')
    await page.click('[data-testid="conversation-submit"]')
    await expectText(byTestId(page, 'conversation-entry'), 'the restore notice is next')
    await addBeat(page, 'First deploy of the reference server', 'deploy')
    await waitPending(page)
    await page.evaluate(() => document.querySelectorAll('details.edit').forEach((d) => (d.open = false)))
    await screenshot(page, 'narrative-session.png')
    await page.close()
  })
})
