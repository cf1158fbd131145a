'use strict'
// The narrative session web client: plain JS, no build step. It renders only what the server sends
// (`restored`, `ack` and `merged` events carry the whole session) and sends `session-update`
// envelopes (docs/protocol.md). Updates are merges by id, so resending one is harmless: unacked
// updates are kept, shown as pending, and sent again after a reconnect.
;(() => {
  const UNIVERSES = ['engineer', 'ceremony', 'story']
  const FOCUS_VALUES = [...UNIVERSES, 'all']
  const RECONNECT_BASE_MS = 250
  const RECONNECT_CAP_MS = 5000
  const MERGE_NOTICE_MS = 10000
  const RESTORE_NOTICE_MS = 8000
  const MAX_OUTBOX = 500

  const $ = (id) => document.getElementById(id)
  const params = new URLSearchParams(location.search)
  const workspace = params.get('workspace') || params.get('folder') || '/demo'

  const state = {
    session: null,
    ws: null,
    connected: false,
    everConnected: false,
    attempt: 0,
    reconnectTimer: null,
    outbox: new Map(), // traceId -> envelope, until acked or refused
    settling: [], // acked payloads whose new list items no session from the server has shown yet
    view: null, // the session as shown: the server's, with the outbox laid over it (viewOf)
    seq: 0,
  }

  // ---------------------------------------------------------------- helpers

  const newId = (prefix) => `${prefix}-${Date.now()}-${Math.random().toString(36).slice(2, 8)}`
  const nowIso = () => new Date().toISOString()
  const asArray = (v) => (Array.isArray(v) ? v : [])
  const isObject = (v) => v !== null && typeof v === 'object' && !Array.isArray(v)

  /** Plays a CSS animation again, even when the class is already on. */
  function replay(node, className) {
    node.classList.remove(className)
    void node.offsetWidth // a reflow, so that the class comes back as new
    node.classList.add(className)
  }

  function el(tag, props = {}, ...children) {
    const node = document.createElement(tag)
    for (const [k, v] of Object.entries(props)) {
      if (v === undefined || v === null) continue
      if (k === 'className') node.className = v
      else if (k === 'text') node.textContent = v
      else if (k === 'dataset') Object.assign(node.dataset, v)
      else node.setAttribute(k, v)
    }
    for (const child of children) if (child != null) node.append(child)
    return node
  }

  function formatTime(iso) {
    const t = Date.parse(iso)
    if (Number.isNaN(t)) return ''
    const d = new Date(t)
    const sameDay = d.toDateString() === new Date().toDateString()
    const time = d.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit', second: '2-digit' })
    return sameDay ? time : `${d.toLocaleDateString([], { month: 'short', day: 'numeric' })} ${time}`
  }

  const byTimeThenId = (timeKey) => (a, b) => {
    const ta = Date.parse(a[timeKey]) || 0
    const tb = Date.parse(b[timeKey]) || 0
    if (ta !== tb) return ta - tb
    return String(a.id) < String(b.id) ? -1 : String(a.id) > String(b.id) ? 1 : 0
  }

  function sortedActions(chart) {
    const actions = Array.isArray(chart.actions) ? [...chart.actions] : []
    return actions.sort((a, b) => {
      const oa = typeof a.order === 'number' ? a.order : Infinity
      const ob = typeof b.order === 'number' ? b.order : Infinity
      if (oa !== ob) return oa - ob
      return String(a.id) < String(b.id) ? -1 : String(a.id) > String(b.id) ? 1 : 0
    })
  }

  function progressOf(chart) {
    const actions = Array.isArray(chart.actions) ? chart.actions : []
    const done = actions.filter((a) => a.completed).length
    const total = actions.length
    const ratio = total === 0 ? 0 : done / total
    let level = 'none'
    if (total > 0) level = done === total ? 'done' : ratio < 1 / 3 ? 'low' : 'mid'
    return { done, total, ratio, level }
  }

  // ---------------------------------------------------------------- notices

  // Notices are toasts (style.css), and each goes when it stops being true: "restored" after a few
  // seconds, "new session, nothing stored yet" once something is stored, a merge notice after a few
  // seconds or at a reconnect (the restored session already holds the change), a recovery warning
  // and errors only when dismissed.
  const timers = { restore: null, merge: null }
  let mergeSummary = null // what the merge notice on screen sums up: { sources, heads, keys }

  function hideNotice(id) {
    $(id).hidden = true
    if (id === 'merge-notice') {
      clearTimeout(timers.merge)
      mergeSummary = null
    }
    if (id === 'restore-notice') clearTimeout(timers.restore)
  }

  function showRestoreNotice(payload, reconnected) {
    const n = $('restore-notice')
    let text
    if (payload.created) text = 'New narrative session — nothing stored yet for this workspace.'
    else text = `${reconnected ? 'Reconnected. ' : ''}Restored your narrative session.`
    if (payload.recovered) {
      text += ' The stored file was unusable; the previous good version was recovered (the bad file was kept aside).'
    }
    $('restore-text').textContent = text
    n.dataset.created = String(!!payload.created)
    n.dataset.recovered = String(!!payload.recovered)
    n.classList.toggle('notice-warn', !!payload.recovered)
    n.hidden = false
    clearTimeout(timers.restore)
    if (!payload.created && !payload.recovered) timers.restore = setTimeout(() => hideNotice('restore-notice'), RESTORE_NOTICE_MS)
  }

  /** Something is stored now: "nothing stored yet" is no longer true. */
  function somethingStored() {
    const n = $('restore-notice')
    if (!n.hidden && n.dataset.created === 'true' && n.dataset.recovered !== 'true') hideNotice('restore-notice')
  }

  // Each top-level field: the section of the page it is shown in, and its name in a notice.
  const SECTION_OF = new Map([
    ['universeFocus', '.universes'],
    ['storyPosition', '.position'],
    ['activeCharts', '.charts'],
    ['storyBeats', '.beats'],
    ['conversationHistory', '.conversation'],
    ['memory', '.memory'],
    ['config', '.memory'],
  ])
  const LABEL_OF = new Map([
    ['universeFocus', 'focus'],
    ['storyPosition', 'story position'],
    ['activeCharts', 'charts'],
    ['storyBeats', 'beats'],
    ['conversationHistory', 'conversation'],
  ])
  const KV_KINDS = ['memory', 'config']

  // A change path is "<field>" or "<field>.<rest>"; a memory or config key may itself hold dots.
  function splitChange(change) {
    const text = String(change)
    const dot = text.indexOf('.')
    return dot === -1 ? [text, ''] : [text.slice(0, dot), text.slice(dot + 1)]
  }

  function showMergeNotice(payload) {
    const n = $('merge-notice')
    if (n.hidden || !mergeSummary) mergeSummary = { sources: new Set(), heads: [], keys: new Map(KV_KINDS.map((k) => [k, []])) }
    const external = payload.origin === 'external'
    mergeSummary.sources.add(external ? 'external' : 'tab')
    for (const change of asArray(payload.changes)) {
      const [head, rest] = splitChange(change)
      if (!mergeSummary.heads.includes(head)) mergeSummary.heads.push(head)
      const keys = mergeSummary.keys.get(head)
      if (keys && rest && !keys.includes(rest)) keys.push(rest)
    }
    const from = [...mergeSummary.sources].map((s) => (s === 'external' ? 'by another process' : 'from another tab')).join(' and ')
    const what = describeChanges(mergeSummary)
    $('merge-text').textContent = `Updated ${from}${what ? ` — ${what}` : ''}`
    n.dataset.origin = external ? 'external' : 'tab'
    $('merge-show').hidden = !mergeSummary.heads.some((h) => SECTION_OF.has(h))
    n.hidden = false
    replay(n, 'flash')
    clearTimeout(timers.merge)
    timers.merge = setTimeout(() => hideNotice('merge-notice'), MERGE_NOTICE_MS)
  }

  function describeChanges(summary) {
    const quote = (keys) => {
      const shown = keys.slice(0, 3).map((k) => `“${k.length > 40 ? `${k.slice(0, 39)}…` : k}”`)
      return keys.length > 3 ? `${shown.join(', ')} and ${keys.length - 3} more` : shown.join(', ')
    }
    const parts = []
    for (const head of summary.heads) {
      const label = LABEL_OF.get(head) || head
      const keys = summary.keys.get(head)
      parts.push(keys && keys.length ? `${label} ${quote(keys)}` : label)
    }
    return parts.join(', ')
  }

  /** Scrolls to the first section the merge notice names, and rings it. */
  function showMergedSection() {
    const head = mergeSummary && mergeSummary.heads.find((h) => SECTION_OF.has(h))
    if (!head) return
    const section = document.querySelector(SECTION_OF.get(head))
    section.scrollIntoView({ behavior: 'smooth', block: 'start' })
    replay(section, 'changed')
  }

  /** Rings each section (and memory or config row) that another tab or process changed. */
  function markChanged(changes) {
    const sections = new Set()
    for (const change of asArray(changes)) {
      const [head, rest] = splitChange(change)
      if (SECTION_OF.has(head)) sections.add(SECTION_OF.get(head))
      const row = KV_KINDS.includes(head) && kvRows[head].get(rest)
      if (row) replay(row, 'flash')
    }
    for (const selector of sections) replay(document.querySelector(selector), 'changed')
  }

  function showError(code, message) {
    $('error-text').textContent = `${code ? `${code}: ` : ''}${message || 'something went wrong'}`
    $('error-notice').dataset.code = code || ''
    $('error-notice').hidden = false
  }

  // Errors about reaching the server, which a successful connection makes stale.
  const CONNECTION_ERRORS = ['EAUTH', 'ECONNECT']

  // ---------------------------------------------------------------- connection

  function setConnState(kind) {
    const pill = $('conn-status')
    pill.dataset.state = kind
    pill.className = `pill pill-${kind}`
    pill.textContent = { connecting: 'Connecting…', connected: 'Connected', reconnecting: 'Reconnecting…' }[kind]
    $('reconnecting-banner').hidden = kind !== 'reconnecting'
    document.body.dataset.connection = kind
    $('focus-select').disabled = state.session === null
  }

  function updatePending() {
    const n = state.outbox.size
    const p = $('pending-count')
    p.hidden = n === 0
    p.textContent = n === 1 ? '1 change pending' : `${n} changes pending`
  }

  function socketUrl() {
    const proto = location.protocol === 'https:' ? 'wss:' : 'ws:'
    return `${proto}//${location.host}/api/ws/narrative?workspace=${encodeURIComponent(workspace)}`
  }

  function connect() {
    clearTimeout(state.reconnectTimer)
    state.reconnectTimer = null
    let ws
    try {
      ws = new WebSocket(socketUrl())
    } catch (err) {
      showError('ECONNECT', String(err && err.message))
      scheduleReconnect()
      return
    }
    state.ws = ws
    ws.addEventListener('message', (ev) => {
      if (state.ws !== ws) return
      let msg
      try {
        msg = JSON.parse(ev.data)
      } catch {
        return
      }
      handleMessage(msg)
    })
    ws.addEventListener('close', (ev) => {
      if (state.ws !== ws) return
      state.ws = null
      state.connected = false
      // "Restored" is stale once the connection is gone; a recovery warning stays until dismissed.
      if ($('restore-notice').dataset.recovered !== 'true') hideNotice('restore-notice')
      if (ev.code === 4401) showError('EAUTH', ev.reason || 'the server refused this connection (no user identity)')
      scheduleReconnect()
    })
    // 'error' is always followed by 'close'.
  }

  function scheduleReconnect() {
    setConnState(state.everConnected ? 'reconnecting' : 'connecting')
    const exp = Math.min(RECONNECT_CAP_MS, RECONNECT_BASE_MS * 2 ** state.attempt)
    const delay = Math.round(exp / 2 + Math.random() * (exp / 2))
    state.attempt = Math.min(state.attempt + 1, 10)
    const text = $('reconnecting-text')
    text.textContent = `Reconnecting… (next try in ${(delay / 1000).toFixed(1)} s)`
    clearTimeout(state.reconnectTimer)
    state.reconnectTimer = setTimeout(connect, delay)
  }

  function send(payload) {
    const traceId = `u-${Date.now().toString(36)}-${++state.seq}`
    const envelope = { type: 'session-update', traceId, timestamp: nowIso(), payload }
    if (state.outbox.size >= MAX_OUTBOX) {
      showError('EQUEUE', 'too many changes waiting for the server; reconnect first')
      return
    }
    state.outbox.set(traceId, envelope)
    updatePending()
    if (state.session) render()
    if (state.connected && state.ws && state.ws.readyState === WebSocket.OPEN) {
      state.ws.send(JSON.stringify(envelope))
    }
  }

  function flushOutbox() {
    if (!state.ws || state.ws.readyState !== WebSocket.OPEN) return
    for (const envelope of state.outbox.values()) state.ws.send(JSON.stringify(envelope))
  }

  function handleMessage(msg) {
    if (!msg || typeof msg !== 'object') return
    if (msg.type === 'error') {
      const p = msg.payload || {}
      if (msg.traceId) state.outbox.delete(msg.traceId)
      updatePending()
      if (state.session) render()
      showError(p.code, p.message)
      return
    }
    if (msg.type !== 'session-event') return
    const p = msg.payload || {}
    switch (p.event) {
      case 'restored': {
        const reconnected = state.everConnected
        state.connected = true
        state.everConnected = true
        state.attempt = 0
        applySession(p.session, true)
        setConnState('connected')
        hideNotice('merge-notice') // the restored session holds whatever it announced
        if (CONNECTION_ERRORS.includes($('error-notice').dataset.code)) hideNotice('error-notice')
        showRestoreNotice(p, reconnected)
        flushOutbox()
        break
      }
      case 'ack': {
        const envelope = msg.traceId ? state.outbox.get(msg.traceId) : undefined
        if (envelope) {
          state.outbox.delete(msg.traceId)
          if (hasListItems(envelope.payload)) state.settling.push(envelope.payload)
          if (state.settling.length > MAX_OUTBOX) state.settling.shift()
        }
        updatePending()
        applySession(p.session, false)
        if (asArray(p.changes).length) somethingStored()
        break
      }
      case 'merged':
        applySession(p.session, false)
        showMergeNotice(p)
        markChanged(p.changes)
        if (asArray(p.changes).length) somethingStored()
        break
      default:
        break
    }
  }

  // ---------------------------------------------------------------- rendering

  function applySession(session, force) {
    if (!session || typeof session !== 'object') return
    // Events on one socket can arrive out of order (the handler loads the session for a `merged`
    // broadcast after the merge, so an `ack` sent later can carry an older snapshot): never step back.
    if (!force && state.session && isOlder(session, state.session)) {
      render() // the outbox may have changed
      return
    }
    state.session = session
    render()
  }

  // Hybrid-logical-clock strings "<millis>-<counter>-<node>".
  function compareClock(a, b) {
    const [am, ac, ...an] = String(a).split('-')
    const [bm, bc, ...bn] = String(b).split('-')
    return Number(am) - Number(bm) || Number(ac) - Number(bc) || (an.join('-') < bn.join('-') ? -1 : an.join('-') > bn.join('-') ? 1 : 0)
  }

  // Is `next` a snapshot taken before `prev`? Lists only ever grow and clocks only move forward.
  function isOlder(next, prev) {
    const n = Date.parse(next.updatedAt)
    const p = Date.parse(prev.updatedAt)
    if (!Number.isNaN(n) && !Number.isNaN(p) && n < p) return true
    const ids = (list) => new Set((Array.isArray(list) ? list : []).map((e) => e && e.id))
    for (const key of ['activeCharts', 'storyBeats', 'conversationHistory']) {
      const have = ids(next[key])
      if ((prev[key] || []).some((e) => e && !have.has(e.id))) return true
    }
    const nextCharts = new Map((next.activeCharts || []).map((c) => [c.id, c]))
    for (const chart of prev.activeCharts || []) {
      const have = ids((nextCharts.get(chart.id) || {}).actions)
      if ((chart.actions || []).some((a) => a && !have.has(a.id))) return true
    }
    const nv = next.versions || {}
    const pv = prev.versions || {}
    for (const [path, clock] of Object.entries(pv)) {
      if (typeof nv[path] === 'string' && typeof clock === 'string' && compareClock(nv[path], clock) < 0) return true
    }
    return false
  }

  // ---------------------------------------------------------------- what the page shows

  // The page shows the server's session with the updates it has not acknowledged yet laid over it,
  // marked pending: a message typed offline is seen at once, as a message. A new chart, action,
  // beat or entry stays shown after its ack until a session from the server holds it, since an
  // ack's session may be older than one the page already has (applySession keeps the newer).
  const PENDING = Symbol('pending')
  const LISTS = ['storyBeats', 'conversationHistory']

  function hasListItems(payload) {
    return LISTS.some((k) => asArray(payload[k]).length > 0) || asArray(payload.activeCharts).length > 0
  }

  // Objects without a prototype, so that a key such as "__proto__" is a key like any other.
  const keyedCopy = (v) => Object.assign(Object.create(null), isObject(v) ? v : {})

  function viewOf(session) {
    const view = {
      ...session,
      memory: keyedCopy(session.memory),
      config: keyedCopy(session.config),
      activeCharts: asArray(session.activeCharts).map((c) => ({ ...c, actions: asArray(c.actions).slice() })),
      storyBeats: asArray(session.storyBeats).slice(),
      conversationHistory: asArray(session.conversationHistory).slice(),
      kvPending: { memory: new Map(), config: new Map() }, // key -> 'set' | 'delete'
    }
    // What the view holds, by id: a chart's `actionIds` beside it.
    const known = {
      storyBeats: new Set(view.storyBeats.map((x) => x && x.id)),
      conversationHistory: new Set(view.conversationHistory.map((x) => x && x.id)),
      charts: new Map(view.activeCharts.map((c) => [c.id, { chart: c, actionIds: new Set(c.actions.map((a) => a && a.id)) }])),
    }
    state.settling = state.settling.filter((payload) => !holdsItems(known, payload))
    for (const payload of state.settling) overlay(view, known, payload, false)
    for (const envelope of state.outbox.values()) overlay(view, known, envelope.payload, true)
    return view
  }

  /** Does the view (`known`, before any overlay) hold every chart, action, beat and entry `payload` adds? */
  function holdsItems(known, payload) {
    for (const key of LISTS) {
      for (const item of asArray(payload[key])) if (!known[key].has(item.id)) return false
    }
    for (const update of asArray(payload.activeCharts)) {
      const entry = known.charts.get(update.id)
      if (!entry) return false
      for (const action of asArray(update.actions)) if (!entry.actionIds.has(action.id)) return false
    }
    return true
  }

  // Lays one update over the view as the server would merge it. Acked updates (pending false) only
  // add the list items the view lacks; their values may since have been overwritten elsewhere.
  function overlay(view, known, payload, pending) {
    const mark = (item) => (pending ? { ...item, [PENDING]: true } : { ...item })
    for (const key of LISTS) {
      for (const item of asArray(payload[key])) {
        if (known[key].has(item.id)) continue
        view[key].push(mark(item))
        known[key].add(item.id)
      }
    }
    for (const update of asArray(payload.activeCharts)) {
      const { actions, ...fields } = update
      let entry = known.charts.get(update.id)
      if (!entry) {
        entry = { chart: { status: 'active', ...mark(fields), actions: [] }, actionIds: new Set() }
        view.activeCharts.push(entry.chart)
        known.charts.set(update.id, entry)
      } else if (pending && Object.keys(fields).length > 1) {
        Object.assign(entry.chart, fields, { [PENDING]: true })
      }
      const chart = entry.chart
      for (const action of asArray(actions)) {
        if (!entry.actionIds.has(action.id)) {
          chart.actions.push(mark(action))
          entry.actionIds.add(action.id)
        } else if (pending) {
          const i = chart.actions.findIndex((a) => a && a.id === action.id)
          chart.actions[i] = { ...chart.actions[i], ...action, [PENDING]: true }
        }
      }
    }
    if (!pending) return
    if (typeof payload.universeFocus === 'string') view.universeFocus = payload.universeFocus
    if (isObject(payload.storyPosition)) view.storyPosition = { ...view.storyPosition, ...payload.storyPosition }
    for (const kind of KV_KINDS) {
      if (!isObject(payload[kind])) continue
      for (const [key, value] of Object.entries(payload[kind])) {
        if (value === null) {
          view.kvPending[kind].set(key, 'delete') // still shown, struck through, until the server drops it
        } else {
          view[kind][key] = value
          view.kvPending[kind].set(key, 'set')
        }
      }
    }
  }

  function pendingTag() {
    return el('span', {
      className: 'pending-tag',
      text: 'pending',
      title: 'Not on the server yet: sent as soon as the page is connected',
      dataset: { testid: 'pending-tag' },
    })
  }

  function render() {
    const s = viewOf(state.session)
    state.view = s
    document.body.dataset.focus = s.universeFocus
    $('workspace-id').textContent = s.workspaceId || workspace
    document.title = `Narrative · ${s.workspaceId || workspace}`
    renderUniverses(s)
    renderPosition(s)
    renderCharts(s)
    renderBeats(s)
    renderConversation(s)
    for (const kind of KV_KINDS) renderKv(kind, s)
    const count = (kind) => Object.keys(s[kind]).length
    $('kv-count').textContent = `${count('memory')} in memory · ${count('config')} in config`
    $('session-meta').textContent =
      `user ${s.userId} · session ${String(s.id).slice(0, 12)} · created ${formatTime(s.createdAt)} · last update ${formatTime(s.updatedAt)}`
  }

  function renderUniverses(s) {
    const focus = FOCUS_VALUES.includes(s.universeFocus) ? s.universeFocus : 'all'
    const select = $('focus-select')
    select.disabled = false
    if (document.activeElement !== select || select.value !== focus) select.value = focus
    const charts = s.activeCharts || []
    const actions = charts.flatMap((c) => c.actions || [])
    const beats = [...(s.storyBeats || [])].sort(byTimeThenId('createdAt'))
    const convo = s.conversationHistory || []
    const plural = (n, one, many) => `${n} ${n === 1 ? one : many}`
    const activeCharts = charts.filter((c) => c.status === 'active').length
    const reviews = beats.filter((b) => b.type === 'review').length
    const stats = {
      engineer: `${plural(activeCharts, 'active chart', 'active charts')} · ${actions.filter((a) => a.completed).length}/${actions.length} actions done`,
      ceremony: `${plural(convo.length, 'conversation entry', 'conversation entries')} · ${plural(reviews, 'review', 'reviews')}`,
      story: `${plural(beats.length, 'beat', 'beats')}${s.storyPosition && s.storyPosition.arc ? ` · arc “${s.storyPosition.arc}”` : ''}`,
    }
    for (const u of UNIVERSES) {
      const panel = $(`universe-${u}`)
      const focused = focus === 'all' || focus === u
      panel.classList.toggle('is-focused', focused)
      panel.dataset.focused = String(focused)
      panel.setAttribute('aria-pressed', String(focus === u))
      $(`u-stat-${u}`).textContent = stats[u]
      const annotated = beats.filter((b) => b.universeAnnotations && typeof b.universeAnnotations[u] === 'string')
      const last = annotated[annotated.length - 1]
      $(`u-note-${u}`).textContent = last ? `“${last.universeAnnotations[u]}”` : ''
    }
  }

  function renderPosition(s) {
    const pos = s.storyPosition || { arc: '', beat: 0, phase: '' }
    $('position-arc').textContent = pos.arc || '—'
    $('position-beat').textContent = String(pos.beat ?? 0)
    $('position-phase').textContent = pos.phase || '—'
    const form = $('position-form')
    if (!form.contains(document.activeElement)) {
      $('position-arc-input').value = pos.arc || ''
      $('position-beat-input').value = String(pos.beat ?? 0)
      $('position-phase-input').value = pos.phase || ''
    }
  }

  // Chart cards are kept by id so a re-render never wipes what someone is typing in them.
  const chartCards = new Map()

  function renderCharts(s) {
    const charts = [...(s.activeCharts || [])].sort(byTimeThenId('createdAt'))
    const list = $('charts')
    const seen = new Set()
    charts.forEach((chart, index) => {
      seen.add(chart.id)
      let card = chartCards.get(chart.id)
      if (!card) {
        card = createChartCard(chart.id)
        chartCards.set(chart.id, card)
      }
      updateChartCard(card, chart)
      if (list.children[index] !== card) list.insertBefore(card, list.children[index] || null)
    })
    for (const [id, card] of chartCards) {
      if (!seen.has(id)) {
        card.remove()
        chartCards.delete(id)
      }
    }
    $('charts-empty').hidden = charts.length > 0
    const active = charts.filter((c) => c.status === 'active').length
    $('charts-count').textContent = charts.length ? `${active} active · ${charts.length} total` : ''
  }

  function createChartCard(chartId) {
    const card = $('chart-template').content.firstElementChild.cloneNode(true)
    card.dataset.chartId = chartId
    const form = card.querySelector('.add-action')
    form.addEventListener('submit', (ev) => {
      ev.preventDefault()
      const input = form.elements.title
      const title = input.value.trim()
      if (!title) return
      const chart = state.view.activeCharts.find((c) => c.id === chartId)
      const orders = (chart && chart.actions ? chart.actions : []).map((a) => (typeof a.order === 'number' ? a.order : -1))
      const order = orders.length ? Math.max(...orders) + 1 : 0
      send({ activeCharts: [{ id: chartId, actions: [{ id: newId('a'), title, completed: false, order }] }] })
      input.value = ''
    })
    card.querySelector('.chart-status-toggle').addEventListener('click', () => {
      const chart = state.view.activeCharts.find((c) => c.id === chartId)
      if (!chart) return
      send({ activeCharts: [{ id: chartId, status: chart.status === 'active' ? 'resolved' : 'active' }] })
    })
    card.querySelector('.actions').addEventListener('change', (ev) => {
      const box = ev.target
      if (!box || box.type !== 'checkbox') return
      const actionId = box.dataset.actionId
      const action = box.checked
        ? { id: actionId, completed: true, completedAt: nowIso() }
        : { id: actionId, completed: false, completedAt: null } // null clears the time
      send({ activeCharts: [{ id: chartId, actions: [action] }] })
    })
    return card
  }

  function updateChartCard(card, chart) {
    const q = (sel) => card.querySelector(sel)
    q('.chart-title').textContent = chart.title || '(untitled chart)'
    const status = chart.status || 'active'
    const badge = q('.chart-status')
    badge.textContent = status
    badge.className = `badge chart-status status-${status}`
    card.dataset.status = status
    const pending = !!chart[PENDING]
    card.classList.toggle('is-pending', pending)
    card.dataset.pending = String(pending)
    q('.pending-tag').hidden = !pending
    const { done, total, ratio, level } = progressOf(chart)
    const fill = q('.progress-fill')
    fill.style.width = `${Math.round(ratio * 100)}%`
    const bar = q('.progress')
    bar.dataset.level = level
    bar.setAttribute('role', 'progressbar')
    bar.setAttribute('aria-valuemin', '0')
    bar.setAttribute('aria-valuemax', String(total))
    bar.setAttribute('aria-valuenow', String(done))
    card.dataset.progress = level
    const label = q('.progress-label')
    label.textContent = `${done}/${total} actions${total > 0 && done === total ? ' — all done' : ''}`
    label.dataset.level = level
    q('.chart-desired-text').textContent = chart.desiredOutcome || '—'
    q('.chart-reality-text').textContent = chart.currentReality || '—'
    q('.chart-status-toggle').textContent = status === 'active' ? 'Mark resolved' : 'Reopen'

    // Action rows are kept by id too: a checkbox being clicked (or keyboard focus on it) survives.
    const list = q('.actions')
    const existing = new Map([...list.children].map((li) => [li.dataset.actionId, li]))
    const rows = sortedActions(chart).map((action) => {
      let li = existing.get(action.id)
      if (!li) {
        const boxId = `cb-${chart.id}-${action.id}`.replace(/[^A-Za-z0-9_-]/g, '_')
        li = el(
          'li',
          { className: 'action', dataset: { actionId: action.id, testid: 'action' } },
          el('input', { type: 'checkbox', id: boxId, dataset: { actionId: action.id, testid: 'action-checkbox' } }),
          el('label', { for: boxId, className: 'action-title' }),
          el('span', { className: 'action-when' }),
        )
      }
      const done = !!action.completed
      li.classList.toggle('is-done', done)
      li.classList.toggle('is-pending', !!action[PENDING])
      li.dataset.pending = String(!!action[PENDING])
      li.dataset.completed = String(done)
      li.querySelector('input').checked = done
      li.querySelector('.action-title').textContent = action.title || '(untitled action)'
      li.querySelector('.action-when').textContent =
        done && action.completedAt ? `done ${formatTime(action.completedAt)}` : ''
      return li
    })
    rows.forEach((li, i) => {
      if (list.children[i] !== li) list.insertBefore(li, list.children[i] || null)
    })
    while (list.children.length > rows.length) list.lastElementChild.remove()
  }

  function renderBeats(s) {
    const beats = [...(s.storyBeats || [])].sort(byTimeThenId('createdAt'))
    const items = beats.map((beat, i) => {
      const annotations = beat.universeAnnotations && typeof beat.universeAnnotations === 'object'
        ? UNIVERSES.filter((u) => typeof beat.universeAnnotations[u] === 'string').map((u) =>
            el('span', {
              className: `annotation u-${u}`,
              text: beat.universeAnnotations[u] === beat.description ? u : `${u}: ${beat.universeAnnotations[u]}`,
            }),
          )
        : []
      const pending = !!beat[PENDING]
      return el(
        'li',
        {
          className: `beat${pending ? ' is-pending' : ''}`,
          dataset: { beatId: beat.id, testid: 'beat', type: beat.type || '', pending: String(pending) },
        },
        el('span', { className: 'beat-dot', 'aria-hidden': 'true' }),
        el(
          'div',
          { className: 'beat-body' },
          el(
            'div',
            { className: 'beat-head' },
            el('span', { className: 'beat-num', text: `#${i + 1}` }),
            el('span', { className: `badge beat-type type-${String(beat.type || 'custom').replace(/[^a-z-]/gi, '')}`, text: beat.type || 'custom', dataset: { testid: 'beat-type-text' } }),
            pending ? pendingTag() : null,
            el('time', { className: 'beat-time', datetime: beat.createdAt, text: formatTime(beat.createdAt) }),
          ),
          el('div', { className: 'beat-description', text: beat.description || '', dataset: { testid: 'beat-description-text' } }),
          annotations.length ? el('div', { className: 'annotations' }, ...annotations) : null,
        ),
      )
    })
    const list = $('beats')
    const atEnd = list.scrollTop + list.clientHeight >= list.scrollHeight - 4
    list.replaceChildren(...items)
    if (atEnd) list.scrollTop = list.scrollHeight
    $('beats-empty').hidden = beats.length > 0
    $('beats-count').textContent = beats.length ? `${beats.length} ${beats.length === 1 ? 'beat' : 'beats'}` : ''
  }

  function renderConversation(s) {
    const entries = [...(s.conversationHistory || [])].sort(byTimeThenId('timestamp'))
    const items = entries.map((entry) => {
      const pending = !!entry[PENDING]
      return el(
        'li',
        {
          className: `entry role-${String(entry.role).replace(/[^a-z]/gi, '')}${pending ? ' is-pending' : ''}`,
          dataset: { entryId: entry.id, testid: 'conversation-entry', role: entry.role, pending: String(pending) },
        },
        el(
          'div',
          { className: 'entry-head' },
          el('span', { className: 'entry-role', text: entry.role }),
          entry.universe ? el('span', { className: `badge u-${entry.universe}`, text: entry.universe }) : null,
          pending ? pendingTag() : null,
          el('time', { className: 'entry-time', datetime: entry.timestamp, text: formatTime(entry.timestamp) }),
        ),
        el('div', { className: 'entry-content', text: entry.content || '' }),
      )
    })
    const list = $('conversation')
    const atEnd = list.scrollTop + list.clientHeight >= list.scrollHeight - 4
    list.replaceChildren(...items)
    if (atEnd) list.scrollTop = list.scrollHeight
    $('conversation-empty').hidden = entries.length > 0
    $('conversation-count').textContent = entries.length ? `${entries.length}` : ''
  }

  // ---------------------------------------------------------------- memory and config

  // Rows are kept by key, in the session's key order, so a re-render never loses a row's flash.
  const kvRows = { memory: new Map(), config: new Map() }
  const kvPanels = {} // kind -> { list, empty, form, error }, made by buildKvPanel

  const KV_PANEL_TEXT = {
    memory: { title: 'Memory', empty: 'Nothing remembered yet.', key: 'e.g. lastFile', value: 'e.g. src/app.ts' },
    config: { title: 'Config', empty: 'No settings yet.', key: 'e.g. theme', value: 'e.g. dark' },
  }

  /** Makes the panel of one kind from kv-template; its parts are named `<kind>-…` for tests. */
  function buildKvPanel(kind) {
    const text = KV_PANEL_TEXT[kind]
    const panel = $('kv-template').content.firstElementChild.cloneNode(true)
    const part = (selector, testid) => {
      const node = panel.querySelector(selector)
      node.dataset.testid = `${kind}-${testid}`
      return node
    }
    panel.dataset.kind = kind
    panel.dataset.testid = `${kind}-panel`
    panel.querySelector('.kv-title').textContent = text.title
    const parts = {
      list: part('.kv-list', 'list'),
      empty: panel.querySelector('.kv-empty'),
      form: part('.kv-form', 'form'),
      error: part('.kv-error', 'error'),
    }
    parts.empty.textContent = text.empty
    Object.assign(part('input[name="key"]', 'key'), { placeholder: text.key })
    Object.assign(part('textarea[name="value"]', 'value'), { placeholder: text.value })
    part('button[type="submit"]', 'submit')
    kvPanels[kind] = parts
    $('kv-columns').append(panel)
    return parts
  }

  // What the value field holds: JSON when it parses as JSON, else the text itself. So `42` is a
  // number and `"42"` the text 42; `null` is refused, since a null value removes the key.
  function parseKvValue(text) {
    const trimmed = text.trim()
    if (trimmed === '') return { error: 'Enter a value.' }
    let value
    try {
      value = JSON.parse(trimmed)
    } catch {
      return { value: trimmed }
    }
    if (value === null) return { error: 'null would remove the key: use Remove for that.' }
    return { value }
  }

  // The text that parseKvValue turns back into `value`.
  function editableKvValue(value) {
    if (typeof value === 'string' && value !== '' && value.trim() === value) {
      try {
        JSON.parse(value)
      } catch {
        return value
      }
    }
    return JSON.stringify(value, null, 2)
  }

  function renderKv(kind, view) {
    const values = view[kind]
    const pending = view.kvPending[kind]
    const rows = kvRows[kind]
    const { list, empty } = kvPanels[kind]
    const keys = Object.keys(values)
    keys.forEach((key, i) => {
      let row = rows.get(key)
      if (!row) {
        row = createKvRow(kind, key)
        rows.set(key, row)
      }
      const value = values[key]
      const text = row.querySelector('.kv-value')
      text.textContent = typeof value === 'string' ? value : JSON.stringify(value)
      text.classList.toggle('is-json', typeof value !== 'string')
      const mark = pending.get(key) // 'set', 'delete' or undefined
      row.classList.toggle('is-pending', mark !== undefined)
      row.classList.toggle('is-deleting', mark === 'delete')
      row.dataset.pending = String(mark !== undefined)
      row.querySelector('.pending-tag').hidden = mark === undefined
      if (list.children[i] !== row) list.insertBefore(row, list.children[i] || null)
    })
    for (const [key, row] of rows) {
      if (!Object.prototype.hasOwnProperty.call(values, key)) {
        row.remove()
        rows.delete(key)
      }
    }
    empty.hidden = keys.length > 0
  }

  function createKvRow(kind, key) {
    const tag = pendingTag()
    tag.hidden = true
    const edit = el('button', { type: 'button', className: 'btn btn-small', text: 'Edit', dataset: { testid: `${kind}-edit` } })
    const remove = el('button', { type: 'button', className: 'btn btn-small btn-danger', text: 'Remove', dataset: { testid: `${kind}-remove` } })
    edit.setAttribute('aria-label', `Edit ${key}`)
    remove.setAttribute('aria-label', `Remove ${key}`)
    edit.addEventListener('click', () => {
      const { form } = kvPanels[kind]
      form.elements.key.value = key
      form.elements.value.value = editableKvValue(state.view[kind][key])
      showKvError(kind, '')
      form.scrollIntoView({ block: 'nearest' })
      form.elements.value.focus()
      form.elements.value.select()
    })
    remove.addEventListener('click', () => send({ [kind]: { [key]: null } }))
    return el(
      'li',
      { className: 'kv-row', dataset: { key, testid: `${kind}-entry` } },
      el('div', { className: 'kv-head' }, el('code', { className: 'kv-key', text: key, dataset: { testid: `${kind}-key-text` } }), tag),
      el('div', { className: 'kv-value', dataset: { testid: `${kind}-value-text` } }),
      el('div', { className: 'kv-actions' }, edit, remove),
    )
  }

  function showKvError(kind, message) {
    const { error } = kvPanels[kind]
    error.textContent = message
    error.hidden = !message
  }

  function wireKv(kind) {
    const { form } = buildKvPanel(kind)
    // Enter in the value is a new line (JSON may take several); Ctrl+Enter or ⌘+Enter saves.
    form.elements.value.addEventListener('keydown', (ev) => {
      if (ev.key === 'Enter' && (ev.ctrlKey || ev.metaKey)) {
        ev.preventDefault()
        form.requestSubmit()
      }
    })
    form.addEventListener('submit', (ev) => {
      ev.preventDefault()
      const key = form.elements.key.value.trim()
      if (!key) return showKvError(kind, 'Enter a key.')
      const parsed = parseKvValue(form.elements.value.value)
      if (parsed.error) return showKvError(kind, parsed.error)
      showKvError(kind, '')
      send({ [kind]: { [key]: parsed.value } })
      form.reset()
      form.elements.key.focus()
    })
  }

  // ---------------------------------------------------------------- controls

  function wire() {
    $('workspace-id').textContent = workspace
    $('focus-select').addEventListener('change', (ev) => {
      send({ universeFocus: ev.target.value })
    })
    for (const u of UNIVERSES) {
      $(`universe-${u}`).addEventListener('click', () => {
        if (!state.view) return
        // Clicking the only focused universe widens the focus to all of them.
        const next = state.view.universeFocus === u ? 'all' : u
        send({ universeFocus: next })
      })
    }

    $('position-form').addEventListener('submit', (ev) => {
      ev.preventDefault()
      const beat = Number.parseInt($('position-beat-input').value, 10)
      send({
        storyPosition: {
          arc: $('position-arc-input').value.trim(),
          beat: Number.isFinite(beat) && beat >= 0 ? beat : 0,
          phase: $('position-phase-input').value.trim(),
        },
      })
      document.activeElement && document.activeElement.blur()
    })

    $('chart-form').addEventListener('submit', (ev) => {
      ev.preventDefault()
      const f = ev.target.elements
      const title = f.title.value.trim()
      const firstAction = f.firstAction.value.trim()
      if (!title || !firstAction) return
      send({
        activeCharts: [
          {
            id: newId('c'),
            title,
            createdAt: nowIso(),
            desiredOutcome: f.desiredOutcome.value.trim(),
            currentReality: f.currentReality.value.trim(),
            status: 'active',
            actions: [{ id: newId('a'), title: firstAction, completed: false, order: 0 }],
          },
        ],
      })
      ev.target.reset()
      $('new-chart').open = false
      document.activeElement && document.activeElement.blur()
    })

    $('beat-form').addEventListener('submit', (ev) => {
      ev.preventDefault()
      const description = $('beat-description').value.trim()
      if (!description) return
      const beat = { id: newId('b'), description, type: $('beat-type').value, createdAt: nowIso() }
      const focus = state.view && state.view.universeFocus
      if (focus && focus !== 'all') beat.universeAnnotations = { [focus]: description }
      send({ storyBeats: [beat] })
      $('beat-description').value = ''
    })

    $('conversation-form').addEventListener('submit', (ev) => {
      ev.preventDefault()
      const content = $('conversation-content').value.trim()
      if (!content) return
      const entry = { id: newId('m'), role: $('conversation-role').value, content, timestamp: nowIso() }
      const focus = state.view && state.view.universeFocus
      if (focus && focus !== 'all') entry.universe = focus
      send({ conversationHistory: [entry] })
      $('conversation-content').value = ''
    })

    for (const button of document.querySelectorAll('[data-dismiss]')) {
      button.addEventListener('click', () => hideNotice(button.dataset.dismiss))
    }
    $('merge-show').addEventListener('click', showMergedSection)
    for (const kind of KV_KINDS) wireKv(kind)
  }

  // Background tabs throttle timers: retry at once when the tab comes back or the network does.
  const retryNow = () => {
    if (!state.ws && state.reconnectTimer !== null && document.visibilityState === 'visible') connect()
  }
  document.addEventListener('visibilitychange', retryNow)
  window.addEventListener('online', retryNow)

  wire()
  setConnState('connecting')
  connect()
})()
