// Compiled by `npm run typecheck` (part of `npm test`): the declarations must accept what a host
// writes and reject what it must not. Lines marked @ts-expect-error fail the check if they compile.
import type { IncomingMessage } from 'node:http'
import {
  NarrativeSessionStore,
  mergeSessions,
  defaultDataDir,
  normalizeWorkspaceId,
  type NarrativeSession,
  type SessionUpdate,
  type MergeEvent,
  type CleanupReport,
  type ErrorCode,
} from '../../index'
import { attachNarrativeSession, type NarrativeSocket } from '../../lib/handler'

async function connectUpdateDisconnect(ws: NarrativeSocket, req: IncomingMessage): Promise<void> {
  const store = await NarrativeSessionStore.open({ dataDir: defaultDataDir(), ttlDays: 30 })
  const { session, created, recovered }: { session: NarrativeSession; created: boolean; recovered: boolean } =
    await store.load('alice', normalizeWorkspaceId('/home/alice/proj/'))
  const focus: 'engineer' | 'ceremony' | 'story' | 'all' = session.universeFocus
  const done: number = session.activeCharts[0]?.actions.filter((a) => a.completed).length ?? 0
  const update: SessionUpdate = {
    universeFocus: 'story',
    activeCharts: [{ id: 'c1', actions: [{ id: 'a1', completed: true }] }],
    storyBeats: [{ id: 'b1', description: 'deploy', type: 'deploy' }],
    conversationHistory: [{ id: 'e1', role: 'user', content: 'hi' }],
    memory: { goal: 'ship', scratch: null },
  }
  const { changes }: { changes: string[] } = await store.merge('alice', '/home/alice/proj', update, { origin: 'c1' })
  const off: () => void = store.onMerge((event: MergeEvent) => void event.changes.length)
  off()
  const written: boolean = await store.save('alice', '/home/alice/proj')
  const flushed: number = await store.flush()
  const report: CleanupReport = await store.cleanup({ ttlDays: 1, now: Date.now() })
  const merged: NarrativeSession = mergeSessions(session, session)
  attachNarrativeSession(ws, req, { store, trustedUserHeader: 'x-forwarded-user' })
  try {
    await store.load('', '')
  } catch (err) {
    const code: ErrorCode = (err as { code: ErrorCode }).code
    void code
  }
  // @ts-expect-error: the focus is one of four universes
  await store.merge('alice', '/w', { universeFocus: 'galaxy' })
  // @ts-expect-error: a chart in an update needs its id
  await store.merge('alice', '/w', { activeCharts: [{ title: 'no id' }] })
  // @ts-expect-error: a conversation entry's role is typed
  await store.merge('alice', '/w', { conversationHistory: [{ id: 'e', role: 'robot' }] })
  void [focus, done, created, recovered, changes, written, flushed, report, merged]
  await store.close()
}

void connectUpdateDisconnect
