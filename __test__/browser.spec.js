'use strict'
// End-to-end: the reference server (server/index.js) and its web client in Debian's Chromium, driven
// by playwright-core. A session survives closing the page, two pages converge, memory and config are
// seen and edited, notices are seen wherever the page is scrolled and go when stale, the page rides out
// dropped sockets and a server restart by itself (showing what was typed offline), and it fits 420 px.
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

async function openPage(workspace = WORKSPACE, inContext = context) {
  const page = await inContext.newPage()
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
  // The form closes once the chart is made.
  expect(await details.evaluate((d) => d.open)).toBe(false)
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

const kvRow = (page, kind, key) => page.locator(`[data-testid="${kind}-entry"][data-key="${key}"]`)

/** Sets a memory or config key with the panel's form, as typed (text or JSON). */
async function setKv(page, kind, key, valueText) {
  await page.fill(`[data-testid="${kind}-key"]`, key)
  await page.fill(`[data-testid="${kind}-value"]`, valueText)
  await page.click(`[data-testid="${kind}-submit"]`)
}

/** Waits until the row for `key` shows exactly `text` and is no longer pending. */
async function waitKv(page, kind, key, text) {
  await page.waitForFunction(
    ({ kind, key, text }) => {
      const row = [...document.querySelectorAll(`[data-testid="${kind}-entry"]`)].find((r) => r.dataset.key === key)
      return row && row.dataset.pending === 'false' && row.querySelector('.kv-value').textContent === text
    },
    { kind, key, text },
    { timeout: STEP },
  )
}

async function waitKvGone(page, kind, key) {
  await page.waitForFunction(
    ({ kind, key }) => ![...document.querySelectorAll(`[data-testid="${kind}-entry"]`)].some((r) => r.dataset.key === key),
    { kind, key },
    { timeout: STEP },
  )
}

async function screenshot(page, name, { fullPage = true } = {}) {
  fs.mkdirSync(ARTIFACTS, { recursive: true })
  if (fullPage) await page.evaluate(() => window.scrollTo(0, 0))
  await page.screenshot({ path: path.join(ARTIFACTS, name), fullPage })
}

/** Where `locator` is in the viewport, and whether it is the topmost thing at its own centre. */
function onScreen(locator) {
  return locator.evaluate((node) => {
    const r = node.getBoundingClientRect()
    const top = document.elementFromPoint(r.left + r.width / 2, r.top + r.height / 2)
    return {
      inViewport: r.width > 0 && r.top >= 0 && r.left >= 0 && r.bottom <= innerHeight && r.right <= innerWidth,
      onTop: !!top && node.contains(top),
      scrollY: window.scrollY,
    }
  })
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
  // Each is closed even when another fails, and a failure fails the run: the server's close() writes
  // the sessions, which is not to be ignored.
  try {
    if (browser) await browser.close()
  } finally {
    try {
      if (running) await running.close()
    } finally {
      if (tmp) fs.rmSync(tmp, { recursive: true, force: true })
    }
  }
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
    // Something is stored now: "nothing stored yet" is gone.
    await notice.waitFor({ state: 'hidden' })

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
    // Both pages come to show what the server holds, none of it still marked pending.
    const { session } = await running.store.load(USER, WORKSPACE)
    const held = session.storyBeats.map((x) => x.id).sort()
    expect(held).toHaveLength(before + 2 * N)
    for (const page of [a, b]) {
      await page.waitForFunction(
        (want) => {
          const beats = [...document.querySelectorAll('[data-testid="beat"]')]
          const shown = beats.map((e) => e.dataset.beatId).sort()
          return JSON.stringify(shown) === JSON.stringify(want) && beats.every((e) => e.dataset.pending === 'false')
        },
        held,
        { timeout: STEP },
      )
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

  test('memory and config: set, edit and remove keys; another page sees each change, and the notice while scrolled', async () => {
    const a = await openPage()
    const b = await openPage()

    // Text, and JSON, in memory; text in config. The server holds each as typed.
    await a.bringToFront()
    await setKv(a, 'memory', 'lastFile', 'src/app.ts')
    await waitKv(a, 'memory', 'lastFile', 'src/app.ts')
    await setKv(a, 'memory', 'layout', '{"tabs": 3, "split": [1, 2]}')
    await waitKv(a, 'memory', 'layout', '{"tabs":3,"split":[1,2]}')
    await setKv(a, 'memory', 'count', '"42"')
    await waitKv(a, 'memory', 'count', '42')
    await setKv(a, 'config', 'theme', 'dark')
    await waitKv(a, 'config', 'theme', 'dark')
    // A key is any text, even one that names a property of every JavaScript object.
    await setKv(a, 'config', '__proto__', '{"polluted": true}')
    await waitKv(a, 'config', '__proto__', '{"polluted":true}')
    await waitPending(a)
    let { session } = await running.store.load(USER, WORKSPACE)
    expect(session.memory).toEqual({ lastFile: 'src/app.ts', layout: { tabs: 3, split: [1, 2] }, count: '42' })
    expect(Object.entries(session.config)).toEqual([['theme', 'dark'], ['__proto__', { polluted: true }]])
    await expectText(byTestId(a, 'kv-count'), '3 in memory · 2 in config')

    // Bad input is refused in the page, with a reason, and nothing is sent.
    await setKv(a, 'memory', 'gone', 'null')
    await expectText(byTestId(a, 'memory-error'), 'use Remove')
    await setKv(a, 'config', '   ', 'x')
    await expectText(byTestId(a, 'config-error'), 'Enter a key')
    expect(await byTestId(a, 'pending-count').isHidden()).toBe(true)
    expect(Object.keys((await running.store.load(USER, WORKSPACE)).session.memory)).not.toContain('gone')

    // Page B, in a short window scrolled to the bottom, far from where the top of the page is, sees
    // A's change in its panel and a notice on screen.
    await waitKv(b, 'memory', 'layout', '{"tabs":3,"split":[1,2]}')
    await b.setViewportSize({ width: 1280, height: 420 })
    if (await byTestId(b, 'merge-notice').isVisible()) await b.click('[data-testid="merge-notice"] .notice-close')
    await byTestId(b, 'merge-notice').waitFor({ state: 'hidden' })
    const scrolledTo = await b.evaluate(() => {
      window.scrollTo(0, document.documentElement.scrollHeight)
      return window.scrollY
    })
    expect(scrolledTo).toBeGreaterThan(420)
    await a.bringToFront()
    await a.locator('[data-testid="memory-entry"][data-key="lastFile"] [data-testid="memory-edit"]').click()
    expect(await a.inputValue('[data-testid="memory-key"]')).toBe('lastFile')
    expect(await a.inputValue('[data-testid="memory-value"]')).toBe('src/app.ts')
    await a.fill('[data-testid="memory-value"]', 'src/lib.rs')
    await a.click('[data-testid="memory-submit"]')
    const notice = byTestId(b, 'merge-notice')
    await expectText(notice, 'Updated from another tab — memory “lastFile”')
    await waitKv(b, 'memory', 'lastFile', 'src/lib.rs')
    expect(await onScreen(notice)).toEqual({ inViewport: true, onTop: true, scrollY: scrolledTo })
    await screenshot(b, 'narrative-session-notice-scrolled.png', { fullPage: false })
    // From the top of the page, "Show" brings the changed panel into view.
    const memoryTop = () => byTestId(b, 'memory-card').evaluate((n) => n.getBoundingClientRect().top / innerHeight)
    await b.evaluate(() => window.scrollTo(0, 0))
    expect(await memoryTop()).toBeGreaterThan(0.5)
    await b.bringToFront()
    await byTestId(b, 'merge-show').click()
    await b.waitForFunction(() => {
      const top = document.querySelector('[data-testid="memory-card"]').getBoundingClientRect().top
      return top >= 0 && top < innerHeight / 2
    })

    // Editing a JSON value starts from its JSON; removing a key removes it everywhere.
    await a.bringToFront()
    await a.locator('[data-testid="memory-entry"][data-key="layout"] [data-testid="memory-edit"]').click()
    expect(JSON.parse(await a.inputValue('[data-testid="memory-value"]'))).toEqual({ tabs: 3, split: [1, 2] })
    expect(await a.inputValue('[data-testid="memory-value"]')).toContain('\n') // pretty, one key a line
    await a.fill('[data-testid="memory-value"]', '{"tabs": 4}')
    await a.press('[data-testid="memory-value"]', 'Control+Enter')
    await waitKv(b, 'memory', 'layout', '{"tabs":4}')
    await a.locator('[data-testid="memory-entry"][data-key="count"] [data-testid="memory-edit"]').click()
    expect(await a.inputValue('[data-testid="memory-value"]')).toBe('"42"') // the text 42, not the number
    for (const key of ['theme', '__proto__']) {
      await a.locator(`[data-testid="config-entry"][data-key="${key}"] [data-testid="config-remove"]`).click()
      await waitKvGone(b, 'config', key)
      await expectText(byTestId(b, 'merge-notice'), `“${key}”`) // one notice sums up both
      await waitKvGone(a, 'config', key)
    }
    await expectText(byTestId(b, 'merge-notice'), 'config “theme”, “__proto__”')
    await waitPending(a)
    ;({ session } = await running.store.load(USER, WORKSPACE))
    expect(session.memory).toEqual({ lastFile: 'src/lib.rs', layout: { tabs: 4 }, count: '42' })
    expect(session.config).toEqual({})
    await a.close()
    await b.close()
  })

  test('dropped sockets: the page shows it is reconnecting and recovers by itself, without the old merge notice', async () => {
    const page = await openPage()
    const other = await openPage()
    await addBeat(other, 'Just before the drop')
    await expectText(byTestId(page, 'merge-notice'), 'Updated from another tab — beats')
    await other.close()
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
    await expect(byTestId(page, 'restore-notice').textContent()).resolves.toContain('Reconnected. Restored your narrative session')
    // The restored session holds the merged beat: its notice is stale, and gone.
    expect(await byTestId(page, 'merge-notice').isHidden()).toBe(true)
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
    // "Restored your narrative session" is no longer true: it went with the connection.
    expect(await byTestId(page, 'restore-notice').isHidden()).toBe(true)

    // A beat, a message and a memory key added while the server is down wait in the page, shown as
    // pending where they belong ...
    await page.fill('#beat-description', 'Written while offline')
    await page.click('[data-testid="beat-submit"]')
    await waitPending(page, false)
    await page.fill('#conversation-content', 'Typed on the train')
    await page.click('[data-testid="conversation-submit"]')
    await setKv(page, 'memory', 'offlineNote', 'tunnel')
    await expectText(byTestId(page, 'pending-count'), '3 changes pending')
    const offline = [
      byTestId(page, 'beat').filter({ hasText: 'Written while offline' }),
      byTestId(page, 'conversation-entry').filter({ hasText: 'Typed on the train' }),
      kvRow(page, 'memory', 'offlineNote'),
    ]
    for (const item of offline) {
      expect(await item.getAttribute('data-pending')).toBe('true')
      await item.locator('[data-testid="pending-tag"]').waitFor({ state: 'visible' })
    }
    await screenshot(page, 'narrative-session-reconnecting.png')

    // ... and is sent when the server comes back on the same port and data dir.
    running = await createServer({ dataDir: tmp, port })
    await waitConnected(page)
    await banner.waitFor({ state: 'hidden' })
    await expectText(byTestId(page, 'restore-notice'), 'Restored your narrative session')
    await expectText(byTestId(page, 'beat'), 'Written while offline')
    await waitPending(page)
    for (const item of offline) {
      await page.waitForFunction((node) => node.dataset.pending === 'false', await item.elementHandle())
      expect(await item.locator('[data-testid="pending-tag"]').isVisible()).toBe(false)
    }
    const { session } = await running.store.load(USER, WORKSPACE)
    expect(session.storyBeats.map((x) => x.description)).toContain('Written while offline')
    expect(session.conversationHistory.map((x) => x.content)).toContain('Typed on the train')
    expect(session.memory.offlineNote).toBe('tunnel')
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

  test('at 420 px nothing overflows, and "Mark resolved" sits in its card looking enabled', async () => {
    const narrow = await browser.newContext({ viewport: { width: 420, height: 860 } })
    try {
      const page = await openPage(WORKSPACE, narrow)
      const chart = await addChart(page, {
        title: 'Fits on a phone',
        desired: 'Every control inside its card',
        reality: 'Buttons spill out at 420 px',
        firstAction: 'Wrap the chart footer',
      })
      await expectText(chart.locator('[data-testid="chart-progress"]'), '0/1 actions')
      await waitPending(page)

      // Every element inside the page's width, and inside the card it belongs to.
      const outside = () =>
        page.evaluate(() => {
          const found = []
          const width = document.documentElement.clientWidth
          if (document.documentElement.scrollWidth > width) found.push(`page scrolls sideways: ${document.documentElement.scrollWidth} > ${width}`)
          const name = (n) => `${n.tagName.toLowerCase()}${n.className && typeof n.className === 'string' ? `.${n.className.trim().split(/\s+/).join('.')}` : ''} "${(n.textContent || '').trim().slice(0, 30)}"`
          for (const box of document.querySelectorAll('.card, .chart, .topbar')) {
            const b = box.getBoundingClientRect()
            for (const n of box.querySelectorAll('*')) {
              const r = n.getBoundingClientRect()
              if (r.width === 0 || r.height === 0) continue
              if (r.left < b.left - 0.5 || r.right > b.right + 0.5) found.push(`${name(n)} leaves ${name(box)}: ${r.left.toFixed(1)}..${r.right.toFixed(1)} not in ${b.left.toFixed(1)}..${b.right.toFixed(1)}`)
            }
          }
          return found
        })
      expect(await outside()).toEqual([])

      // A button that looks enabled: not disabled, not faded, readable text, a visible edge.
      const looks = (button) =>
        button.evaluate((node) => {
          const rgba = (c) => {
            const m = c.match(/rgba?\(([^)]+)\)/)
            const [r, g, b, a = 1] = m[1].split(/[ ,/]+/).filter(Boolean).map(Number)
            return [r, g, b, a]
          }
          const over = (top, under) => top.slice(0, 3).map((v, i) => v * top[3] + under[i] * (1 - top[3])).concat(1)
          let background = [255, 255, 255, 1]
          const chain = []
          for (let n = node; n; n = n.parentElement) chain.unshift(n)
          let opacity = 1
          for (const n of chain) {
            const style = getComputedStyle(n)
            background = over(rgba(style.backgroundColor), background)
            opacity *= Number(style.opacity)
          }
          const lum = (c) => {
            const [r, g, b] = c.slice(0, 3).map((v) => {
              const s = v / 255
              return s <= 0.03928 ? s / 12.92 : ((s + 0.055) / 1.055) ** 2.4
            })
            return 0.2126 * r + 0.7152 * g + 0.0722 * b
          }
          const contrast = (x, y) => (Math.max(lum(x), lum(y)) + 0.05) / (Math.min(lum(x), lum(y)) + 0.05)
          const style = getComputedStyle(node)
          const border = over(rgba(style.borderTopColor), background)
          const card = node.closest('.chart').getBoundingClientRect()
          const r = node.getBoundingClientRect()
          return {
            disabled: node.disabled,
            opacity,
            readable: contrast(over(rgba(style.color), background), background) >= 4.5,
            edge: parseFloat(style.borderTopWidth) > 0 && contrast(border, background) >= 1.3,
            inCard: r.left >= card.left && r.right <= card.right && r.top >= card.top && r.bottom <= card.bottom,
          }
        })
      const enabled = { disabled: false, opacity: 1, readable: true, edge: true, inCard: true }
      const toggle = chart.locator('[data-testid="chart-status-toggle"]')
      await expectText(toggle, 'Mark resolved')
      expect(await looks(toggle)).toEqual(enabled)
      await screenshot(page, 'narrative-session-420.png')

      // Resolved, the chart is dimmed but "Reopen" is not.
      await toggle.click()
      await expectText(chart.locator('[data-testid="chart-status"]'), 'resolved')
      await expectText(toggle, 'Reopen')
      expect(await looks(toggle)).toEqual(enabled)
      await chart.evaluate((node) => node.scrollIntoView({ block: 'center' }))
      await screenshot(page, 'narrative-session-420-resolved.png', { fullPage: false })
      expect(await outside()).toEqual([])
      await toggle.click()
      await expectText(chart.locator('[data-testid="chart-status"]'), 'active')
      await waitPending(page)
      await page.close()
    } finally {
      await narrow.close()
    }
  })
})
